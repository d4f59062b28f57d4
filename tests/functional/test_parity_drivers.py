# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Cloud driver behaviours that must match nodepool 11, on real parts:
moto in-process for AWS, the loopback fakes for Azure and OpenStack, a
real ZooKeeper for the node records.

* ``use-internal-ip``: the node's ``interface_ip`` is the private address
  even when the instance has a public one (AWS, Azure);
* fleet labels: launch templates carry base64 user data, and the ones
  this provider made that no label uses are deleted when a provider
  starts (and after a reconfiguration, which starts it anew);
* dynamic tags and instance properties: every driver's templates see the
  same request attributes, and a failing template is logged and skipped.
"""

import base64
import json
import logging
import types

import pytest

from nodepool.driver.aws import errors as aws_errors
from nodepool.driver.aws.adapter import AwsAdapter
from nodepool.driver.azure.adapter import AzureAdapter
from nodepool.driver.openstack.adapter import OpenStackAdapter
from nodepool.driver.statemachine.launcher import NodeLauncher
from nodepool.driver.statemachine.provider import StateMachineProvider
from nodepool.zk.models import Node, NodeRequest, NodeState
from nodepool.zk.nodes import NodeStore
from tests.fakes.aws import REGION, CallRecorder, moto_clients
from tests.fakes.openstack import IMAGE_ID
from tests.fixtures.adapters import AdapterEnv, label_of
from tests.fixtures.statemachines import run_to_completion
from tests.fixtures.waits import wait_for

moto = pytest.importorskip("moto")

LOG = logging.getLogger("tests.parity_drivers")

# The same templates for every driver: each request attribute once, and
# one that cannot be formatted.
DYNAMIC = """
              id: "{request.id}"
              labels: "{request.labels}"
              requestor: "{request.requestor}"
              job: "{request.requestor_data[job_name]}"
              priority: "{request.relative_priority}"
              event: "{request.event_id}"
              created: "{request.created_time}"
              tenant: "{request.tenant_name}"
              broken: "{request.nothing}"
"""

EXPECTED_DYNAMIC = {
    "id": "200-0000000042", "labels": "['small']", "requestor": "zuul-01",
    "job": "tox-py311", "priority": "3", "event": "ev-77",
    "created": "1700000000.5", "tenant": "tenant-one"}


def zuul_request():
    """A node request as Zuul writes it."""
    request = NodeRequest.new(
        ["small"], "zuul-01", relative_priority=3, tenant_name="tenant-one",
        event_id="ev-77", created_time=1700000000.5,
        requestor_data={"job_name": "tox-py311", "build_set_uuid": "bs1"})
    request.id = "200-0000000042"
    return request


def assert_dynamic(values: dict, caplog) -> None:
    """``values`` hold every formatted template; the broken one was
    logged with its template and the reason, and left out."""
    for key, value in EXPECTED_DYNAMIC.items():
        assert values.get(key) == value, key
    assert "broken" not in values
    [record] = [r for r in caplog.records if "broken" in r.getMessage()]
    message = record.getMessage()
    assert "{request.nothing}" in message
    assert "AttributeError" in message and "nothing" in message


def launch_node(zk_client, adapter, pool_name: str, label_name: str):
    """Launch one node of the label as the launcher does (its create
    runner steps a NodeLauncher); returns the stored node record."""
    nodes = NodeStore(zk_client)
    services = types.SimpleNamespace(
        nodes=nodes, zk_client=zk_client, stats=None, scanner=None,
        image_cache=None, node_cache=None)
    provider = StateMachineProvider(adapter.provider, adapter, services)
    pool = adapter.provider.pools[pool_name]
    node = Node()
    node.state = NodeState.BUILDING
    node.provider = adapter.provider.name
    node.pool = pool_name
    node.type = [label_name]
    nodes.store_node(node)
    launcher = NodeLauncher(provider, node, pool.labels[label_name], pool,
                            zuul_request(), LOG)

    def step():
        launcher.step()
        return launcher.complete
    wait_for(step, timeout=60, interval=0.05)
    assert launcher.result_key == "ready"
    return nodes.get_node(node.id, cached=False)


# AWS ---------------------------------------------------------------------

AWS_CONFIG = """
labels:
  - name: small
  - name: fleet
  - name: fleet-b
providers:
  - name: ec2
    driver: aws
    region-name: us-west-2
    rate: {rate}
    cloud-images:
      - name: base
        username: ubuntu
        image-id: ami-03cf127a
    pools:
      - name: public
        host-key-checking: false
        labels:
          - name: small
            cloud-image: base
            instance-type: t3.medium
            key-name: np-key
            dynamic-tags:{dynamic}
      - name: internal
        use-internal-ip: true
        host-key-checking: false
        labels:
          - name: small
            cloud-image: base
            instance-type: t3.medium
            key-name: np-key
          - name: fleet
            cloud-image: base
            key-name: np-key
            userdata: "{userdata}"
            fleet:
              instance-types: [t3.small, t3a.small]
              allocation-strategy: lowest-price
{fleet_b}"""

FLEET_B = """\
          - name: fleet-b
            cloud-image: base
            key-name: other-key
            fleet:
              instance-types: [t3.small]
              allocation-strategy: lowest-price
"""


class AwsEnv(AdapterEnv):
    provider = "ec2"

    def __init__(self, tmp_path):
        super().__init__(tmp_path, AWS_CONFIG)
        self.recorder = CallRecorder()
        self.clients = moto_clients(self.recorder)
        self.ec2 = self.clients.ec2
        self.userdata = "#!/bin/sh\\necho hello"
        self.fleet_b = FLEET_B

    def values(self):
        return dict(dynamic=DYNAMIC, userdata=self.userdata,
                    fleet_b=self.fleet_b)

    def make_adapter(self, provider, **kwargs):
        kwargs.setdefault("retrier", aws_errors.make_retrier(
            LOG, sleep=lambda s: None))
        return AwsAdapter(provider, clients=self.clients, **kwargs)

    def templates(self) -> dict:
        """Name -> tags of every launch template in the account."""
        found = self.ec2.describe_launch_templates()["LaunchTemplates"]
        return {t["LaunchTemplateName"]: {x["Key"]: x["Value"]
                                          for x in t.get("Tags") or ()}
                for t in found}

    def template_userdata(self, name: str) -> str:
        [version] = self.ec2.describe_launch_template_versions(
            LaunchTemplateName=name, Versions=["$Latest"])[
                "LaunchTemplateVersions"]
        return version["LaunchTemplateData"]["UserData"]

    def create_template(self, name: str, **tags) -> None:
        args = dict(LaunchTemplateName=name,
                    LaunchTemplateData={"KeyName": "np-key"})
        if tags:
            args["TagSpecifications"] = [{
                "ResourceType": "launch-template",
                "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        self.ec2.create_launch_template(**args)


@pytest.fixture
def aws(tmp_path, monkeypatch):
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"),
                       ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_DEFAULT_REGION", REGION)):
        monkeypatch.setenv(key, value)
    with moto.mock_aws():
        env = AwsEnv(tmp_path)
        yield env
        env.close()


def test_aws_use_internal_ip_beats_the_public_address(aws, zk_client):
    adapter = aws.adapter()
    public = launch_node(zk_client, adapter, "public", "small")
    assert public.public_ipv4 and public.private_ipv4
    assert public.interface_ip == public.public_ipv4
    internal = launch_node(zk_client, adapter, "internal", "small")
    # The instance has a public address, yet Zuul must use the private.
    assert internal.public_ipv4
    assert internal.interface_ip == internal.private_ipv4


def test_aws_fleet_template_userdata_is_base64(aws):
    adapter = aws.adapter()
    sm = adapter.get_create_state_machine(
        "np1", label_of(adapter, "fleet", "internal"), None,
        {"nodepool_node_id": "1", "nodepool_pool_name": "internal",
         "nodepool_provider_name": "ec2"}, zuul_request(), None, LOG)
    [instance] = run_to_completion([sm])
    assert instance.node_properties["fleet"]
    [sent] = aws.recorder.args["CreateLaunchTemplate"]
    userdata = sent["LaunchTemplateData"]["UserData"]
    assert base64.b64decode(userdata).decode() == "#!/bin/sh\necho hello"
    assert base64.b64decode(aws.template_userdata(
        sent["LaunchTemplateName"])).decode() == "#!/bin/sh\necho hello"
    # The image goes into the fleet's overrides, not the template.
    [fleet] = aws.recorder.args["CreateFleet"]
    overrides = fleet["LaunchTemplateConfigs"][0]["Overrides"]
    assert {o["ImageId"] for o in overrides} == {"ami-03cf127a"}
    assert "ImageId" not in sent["LaunchTemplateData"]


def test_aws_unused_launch_templates_deleted_on_start(aws):
    prefix = "nodepool-launch-template-"
    aws.create_template(prefix + "0" * 64, nodepool_managed="true",
                        nodepool_provider_name="ec2")
    aws.create_template(prefix + "1" * 64, nodepool_managed="true",
                        nodepool_provider_name="other")
    aws.create_template(prefix + "handmade", team="ci")
    aws.create_template("web-servers")
    foreign = {prefix + "1" * 64, prefix + "handmade", "web-servers"}

    def ours_when(done):
        """This provider's templates once ``done(names)`` holds."""
        def check():
            names = {name for name, tags in aws.templates().items()
                     if tags.get("nodepool_provider_name") == "ec2"}
            return names if done(names) else None
        return wait_for(check)

    # A starting provider (the launcher's adapters warm up) makes the
    # templates of both fleet labels and deletes the stale one.
    aws.adapter(warm=True)
    first = ours_when(lambda names: len(names) == 2
                      and prefix + "0" * 64 not in names)
    assert foreign <= set(aws.templates())
    for name in first:
        assert aws.templates()[name]["nodepool_managed"] == "true"

    # Reconfigured: fleet-b is gone and fleet's userdata changed.  The
    # new provider makes fleet's new template and deletes both old ones.
    aws.userdata = "#!/bin/sh\\necho changed"
    aws.fleet_b = ""
    aws.adapter(warm=True)
    [second] = ours_when(lambda names: len(names) == 1
                         and not names & first)
    assert base64.b64decode(aws.template_userdata(second)).decode() == \
        "#!/bin/sh\necho changed"
    assert foreign <= set(aws.templates())


def test_aws_dynamic_tags_see_every_request_attribute(aws, caplog):
    adapter = aws.adapter()
    sm = adapter.get_create_state_machine(
        "np7", label_of(adapter, "small", "public"), None,
        {"nodepool_node_id": "7", "nodepool_pool_name": "public",
         "nodepool_provider_name": "ec2"}, zuul_request(), None, LOG)
    with caplog.at_level(logging.WARNING):
        [instance] = run_to_completion([sm])
    [reservation] = aws.ec2.describe_instances(
        InstanceIds=[instance.external_id])["Reservations"]
    tags = {t["Key"]: t["Value"]
            for t in reservation["Instances"][0]["Tags"]}
    assert_dynamic(tags, caplog)
    assert tags["Name"] == "np7" and tags["nodepool_node_id"] == "7"


# Azure -------------------------------------------------------------------

AZURE_CONFIG = """
labels:
  - name: small
providers:
  - name: azure
    driver: azure
    location: centralus
    resource-group: nodepool
    resource-group-location: centralus
    auth-path: {auth_path}
    network: np-net
    rate: {rate}
    cloud-images:
      - name: ubuntu
        username: zuul
        key: ssh-rsa AAAAkey
        image-reference:
          sku: 22_04-lts
          publisher: Canonical
          version: latest
          offer: ubuntu
    pools:
      - name: public
        host-key-checking: false
        labels:
          - name: small
            cloud-image: ubuntu
            hardware-profile:
              vm-size: Standard_B1ls
            dynamic-tags:{dynamic}
      - name: internal
        use-internal-ip: true
        host-key-checking: false
        labels:
          - name: small
            cloud-image: ubuntu
            hardware-profile:
              vm-size: Standard_B1ls
"""


class AzureEnv(AdapterEnv):
    provider = "azure"
    rate = 1000
    adapter_defaults = dict(AdapterEnv.adapter_defaults, listing_gap=0.02)

    def __init__(self, fake, tmp_path):
        super().__init__(tmp_path, AZURE_CONFIG)
        self.fake = fake
        self.auth_path = tmp_path / "azure.json"
        self.auth_path.write_text(json.dumps(fake.auth_data()))

    def values(self):
        return dict(auth_path=self.auth_path, dynamic=DYNAMIC)

    def make_adapter(self, provider, **kwargs):
        return AzureAdapter(provider, **kwargs)


@pytest.fixture
def azure(azure_fake, tmp_path):
    env = AzureEnv(azure_fake, tmp_path)
    yield env
    env.close()


def test_azure_use_internal_ip_beats_the_public_address(azure, zk_client):
    adapter = azure.adapter()
    public = launch_node(zk_client, adapter, "public", "small")
    assert public.interface_ip == public.public_ipv4
    internal = launch_node(zk_client, adapter, "internal", "small")
    assert internal.public_ipv4 and internal.private_ipv4
    assert internal.interface_ip == internal.private_ipv4


def test_azure_dynamic_tags_see_every_request_attribute(azure, caplog):
    adapter = azure.adapter()
    sm = adapter.get_create_state_machine(
        "np7", label_of(adapter, "small", "public"), None,
        {"nodepool_node_id": "7", "nodepool_pool_name": "public",
         "nodepool_provider_name": "azure"}, zuul_request(), None, LOG)
    with caplog.at_level(logging.WARNING):
        run_to_completion([sm])
    tags = azure.fake.get("virtualMachines", "np7")["tags"]
    assert_dynamic(tags, caplog)
    assert tags["nodepool_node_id"] == "7"


# OpenStack ---------------------------------------------------------------

OPENSTACK_CONFIG = """
labels:
  - name: small
providers:
  - name: os
    driver: openstack
    cloud: fake
    region-name: RegionOne
    rate: {rate}
    cloud-images:
      - name: base
        image-id: {image_id}
    pools:
      - name: main
        labels:
          - name: small
            cloud-image: base
            flavor-name: m1.small
            dynamic-instance-properties:{dynamic}
"""


class OpenStackEnv(AdapterEnv):
    provider = "os"
    rate = 0

    def __init__(self, tmp_path):
        super().__init__(tmp_path, OPENSTACK_CONFIG)

    def values(self):
        return dict(image_id=IMAGE_ID, dynamic=DYNAMIC)

    def make_adapter(self, provider, **kwargs):
        return OpenStackAdapter(provider, **kwargs)


def test_openstack_dynamic_properties_see_the_same_attributes(
        openstack_cloud, tmp_path, caplog):
    env = OpenStackEnv(tmp_path)
    try:
        adapter = env.adapter()
        sm = adapter.get_create_state_machine(
            "np7", label_of(adapter, "small"), None,
            {"nodepool_node_id": "7", "nodepool_pool_name": "main",
             "nodepool_provider_name": "os"}, zuul_request(), None, LOG)
        with caplog.at_level(logging.WARNING):
            run_to_completion([sm])
    finally:
        env.close()
    [body] = openstack_cloud.create_bodies
    assert_dynamic(body["metadata"], caplog)
