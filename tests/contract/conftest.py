# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The one fixture of the driver contract suite: ``driver_bed``.

Each parameter (``test``, ``aws``, ``openstack``, ``azure``, ``static``,
``metastatic``, ``kubernetes``, ``gce``, ``ibmvpc``) is a :class:`DriverBed`: a provider named
:attr:`DriverBed.provider` with
one pool ``main`` serving label ``small``, on the driver's cloud
stand-in, and the handles the contract tests drive it with.  Adding a
driver to the suite means writing one more bed here and listing it in
:data:`BEDS`; the tests in this directory do not change.
"""

import json
import textwrap
import types

import pytest

from nodepool import driver
from nodepool.config.loader import load_config
from nodepool.driver.azure import AzureDriver
from nodepool.driver.ibmvpc import IbmVpcDriver
from nodepool.driver.ibmvpc.statemachines import node_metadata
from nodepool.driver.openstack import OpenStackDriver
from nodepool.driver.quota import QuotaInformation
from nodepool.zk.models import NodeState
from tests.fakes.openstack import IMAGE_ID
from tests.fakes.test_driver import FakeAdapter, FakeCloud
from tests.functional.conftest import (  # noqa: F401
    FAST, fake_driver, launcher_factory, read_nodes, zuul)

#: What a bed can do besides launching and releasing a node.
CREATE = "create"      # launches instances (creates can fail, retry)
LISTING = "listing"    # its adapter lists the instances it launched
QUOTA = "quota"        # the cloud's limits can be set
LEAKS = "leaks"        # an instance can be planted and must be removed
IMAGES = "images"      # upload_image/list_images/delete_image

CLOUD = frozenset({CREATE, LISTING, QUOTA, LEAKS, IMAGES})

#: Seconds between the cloud drivers' instance listings in the suite
#: (1 s in production): a launch or delete is seen that much sooner, which
#: keeps each case fast.
LISTING_INTERVAL = 0.1

#: The node id in the tags of a planted leak: no such node exists.
LEAKED_NODE_ID = "9999999999"

#: Metadata the builder gives an upload.
UPLOAD_METADATA = {"nodepool_build_id": "0000000001",
                   "nodepool_upload_id": "0000000002"}


class DriverBed:
    """A provider on one driver's cloud stand-in, for the contract suite.

    Subclasses fill in the class attributes and the methods their
    :attr:`capabilities` name; a test that needs a capability a bed lacks
    is skipped with the bed's :attr:`missing` reason.
    """

    #: The provider's name in :attr:`config`.
    provider = None
    #: A subset of :data:`CLOUD`.
    capabilities = frozenset()
    #: capability -> why this driver has none of it.
    missing = {}
    #: The config template, filled by the launcher factory from its
    #: defaults (``retries``, ``max_servers``, ``min_ready``...) and
    #: :meth:`values`.
    config = None
    #: Node fields every launched node has with this value.
    node_fields = {}

    def __init__(self, request, tmp_path):
        self.request = request
        self.tmp_path = tmp_path

    def require(self, capability):
        """Skip the test unless the driver has ``capability``."""
        if capability not in self.capabilities:
            pytest.skip("%s driver: %s" % (
                self.request.node.callspec.id,
                self.missing.get(capability, "no " + capability)))

    def values(self):
        """Fields of :attr:`config` besides the launcher factory's."""
        return {}

    def start(self, **params):
        """Start an in-process launcher on :attr:`config`."""
        factory = self.request.getfixturevalue("launcher_factory")
        params.setdefault("intervals", FAST)
        return factory(self.config, **dict(self.values(), **params))

    def provider_config(self):
        """The provider's config object, loaded from :attr:`config`."""
        path = self.tmp_path / "contract-provider.yaml"
        values = dict(min_ready=0, retries=3, max_servers=10,
                      launch_timeout=60, **self.values())
        path.write_text(textwrap.dedent(self.config).format(**values))
        return load_config(str(path)).providers[self.provider]

    def check_node(self, node):
        """Driver-specific checks of a node the launcher made ready and
        Zuul accepted."""

    def released(self, kazoo, node):
        """True once the node Zuul returned is gone with its instance
        (node records read with ``kazoo``)."""
        gone = node.id not in {n.id for n in read_nodes(kazoo)}
        return gone and node.external_id not in self.instances()

    # -- create ----------------------------------------------------------

    def instances(self):
        """``{external id: nodepool_node_id tag or None}`` of the live
        instances in the cloud, nodepool's and anybody else's."""
        raise NotImplementedError

    def create_calls(self):
        """How many creates reached the cloud (failed ones included)."""
        raise NotImplementedError

    def fail_creates(self, count=1):
        """Make the next ``count`` creates fail (retryably)."""
        raise NotImplementedError

    # -- quota -----------------------------------------------------------

    def limit_to_one_node(self):
        """Set the cloud's limits so that exactly one ``small`` node
        fits (before the launcher starts)."""
        raise NotImplementedError

    # -- leaks -----------------------------------------------------------

    def plant_instances(self):
        """Put two instances nodepool did not launch into the cloud: one
        tagged for this provider with a node id that does not exist, one
        tagged for another provider.  Returns their external ids."""
        raise NotImplementedError

    # -- images ----------------------------------------------------------

    def image_adapter(self):
        """``(adapter, provider image, file path, format)`` to upload a
        small image with; the adapter is stopped at teardown."""
        raise NotImplementedError


def _instance_label():
    """A label-like object for planting test-driver instances."""
    return types.SimpleNamespace(cores=1, ram=1, name="small")


def use_driver(request, name, target):
    """Register ``target`` as driver ``name`` for the test, the real
    driver again afterwards."""
    real = {"openstack": "nodepool.driver.openstack:OpenStackDriver",
            "azure": "nodepool.driver.azure:AzureDriver"}[name]
    driver.register_driver(name, target)
    request.addfinalizer(lambda: driver.register_driver(name, real))


class QuickOpenStackDriver(OpenStackDriver):
    """``driver: openstack`` listing servers every LISTING_INTERVAL."""

    def get_adapter(self, provider_config, warm=True):
        from nodepool.driver.openstack.adapter import OpenStackAdapter
        return OpenStackAdapter(provider_config, warm=warm,
                                listing_interval=LISTING_INTERVAL)


class QuickAzureDriver(AzureDriver):
    """``driver: azure`` listing resources every LISTING_INTERVAL."""

    def get_adapter(self, provider_config, warm=True):
        from nodepool.driver.azure.adapter import AzureAdapter
        return AzureAdapter(provider_config, warm=warm,
                            listing_interval=LISTING_INTERVAL,
                            listing_gap=LISTING_INTERVAL / 5)


# The labels and diskimages every cloud bed's config starts with (each
# adds its one provider below "providers:").
CLOUD_HEADER = """
        labels:
          - name: small
            min-ready: {min_ready}
        diskimages:
          - name: contract-image
        providers:
"""


class FakeDriverBed(DriverBed):
    """``driver: test``: the in-memory :class:`FakeCloud`."""

    provider = "fake"
    capabilities = CLOUD
    config = CLOUD_HEADER + """\
          - name: fake
            driver: test
            launch-retries: {retries}
            diskimages:
              - name: contract-image
            pools:
              - name: main
                max-servers: {max_servers}
                labels:
                  - name: small
        """
    node_fields = dict(cloud="fake-cloud", region="fake-region",
                       resources={"cores": 1, "instances": 1, "ram": 1024})

    @property
    def cloud(self):
        return FakeCloud.get(self.provider)

    def instances(self):
        return {i.external_id: i.metadata.get("nodepool_node_id")
                for i in self.cloud.list()}

    def create_calls(self):
        return self.cloud.create_calls

    def fail_creates(self, count=1):
        self.cloud.fail_creates = count

    def limit_to_one_node(self):
        self.cloud.limits = QuotaInformation(cores=1, default=float("inf"))

    def plant_instances(self):
        leaked = self.cloud.create(_instance_label(), {
            "nodepool_provider_name": self.provider,
            "nodepool_node_id": LEAKED_NODE_ID})
        other = self.cloud.create(_instance_label(), {
            "nodepool_provider_name": "other", "nodepool_node_id": "1"})
        return leaked.external_id, other.external_id

    def image_adapter(self):
        provider = self.provider_config()
        adapter = FakeAdapter(provider)
        path = self.tmp_path / "image.raw"
        path.write_bytes(b"\0" * 4096)
        self.request.addfinalizer(adapter.stop)
        return (adapter, provider.diskimages["contract-image"], str(path),
                "raw")


class AwsBed(DriverBed):
    """``driver: aws``: moto_server behind :class:`AwsProxy` (which also
    answers Service Quotas); the launcher's clients go through the
    proxy, the bed's own calls straight to moto."""

    provider = "ec2"
    capabilities = CLOUD
    config = CLOUD_HEADER + """\
          - name: ec2
            driver: aws
            region-name: us-west-2
            rate: 20
            launch-retries: {retries}
            object-storage:
              bucket-name: np-images
            cloud-images:
              - name: base
                username: ubuntu
                image-id: ami-03cf127a
            diskimages:
              - name: contract-image
                username: ubuntu
            pools:
              - name: main
                max-servers: {max_servers}
                host-key-checking: false
                labels:
                  - name: small
                    cloud-image: base
                    instance-type: t3.medium
                    key-name: np
                    tags:
                      team: ci
        """
    node_fields = dict(cloud="AWS", region="us-west-2", username="ubuntu",
                       resources={"cores": 2, "instances": 1, "ram": 4096,
                                  "L-1216C47A": 2})

    def __init__(self, request, tmp_path):
        super().__init__(request, tmp_path)
        import boto3
        from tests.fakes.aws_proxy import (
            AwsProxy, restore_aws, use_proxied_aws)
        self.moto = request.getfixturevalue("moto_server")
        self.moto.reset()
        self.proxy = AwsProxy(self.moto.port).start()
        request.addfinalizer(self.proxy.stop)
        use_proxied_aws(self.proxy.url, read_timeout=10,
                        listing_interval=LISTING_INTERVAL)
        request.addfinalizer(restore_aws)
        self.ec2, s3 = (boto3.client(
            service, endpoint_url=self.moto.url, region_name="us-west-2",
            aws_access_key_id="testing", aws_secret_access_key="testing")
            for service in ("ec2", "s3"))
        # The object-storage bucket of the config (image uploads stage
        # there; leak cleanup lists it).
        s3.create_bucket(Bucket="np-images", CreateBucketConfiguration={
            "LocationConstraint": "us-west-2"})

    def check_node(self, node):
        [reservation] = self.ec2.describe_instances(
            InstanceIds=[node.external_id])["Reservations"]
        tags = {t["Key"]: t["Value"]
                for t in reservation["Instances"][0].get("Tags", [])}
        assert tags["Name"] == "np" + node.id and tags["team"] == "ci"

    def instances(self):
        found = {}
        for reservation in self.ec2.describe_instances()["Reservations"]:
            for instance in reservation["Instances"]:
                if instance["State"]["Name"] != "terminated":
                    tags = {t["Key"]: t["Value"]
                            for t in instance.get("Tags", [])}
                    found[instance["InstanceId"]] = tags.get(
                        "nodepool_node_id")
        return found

    def create_calls(self):
        return self.proxy.counts["RunInstances"]

    def fail_creates(self, count=1):
        self.proxy.fail("RunInstances", "InsufficientInstanceCapacity", 500,
                        times=count)

    def limit_to_one_node(self):
        from tests.fakes.aws import DEFAULT_QUOTAS, FakeServiceQuotas
        quotas = {service: dict(codes)
                  for service, codes in DEFAULT_QUOTAS.items()}
        name, _ = quotas["ec2"]["L-1216C47A"]
        # vCPUs: one t3.medium (2) fits.
        quotas["ec2"]["L-1216C47A"] = (name, 2.0)
        self.proxy.quotas = FakeServiceQuotas(quotas, page=100)

    def _plant(self, provider, node_id):
        reservation = self.ec2.run_instances(
            ImageId="ami-03cf127a", MinCount=1, MaxCount=1,
            InstanceType="t3.medium", TagSpecifications=[{
                "ResourceType": "instance", "Tags": [
                    {"Key": "nodepool_provider_name", "Value": provider},
                    {"Key": "nodepool_node_id", "Value": node_id}]}])
        return reservation["Instances"][0]["InstanceId"]

    def plant_instances(self):
        return (self._plant(self.provider, LEAKED_NODE_ID),
                self._plant("other", "1"))

    def image_adapter(self):
        from nodepool.driver.aws.adapter import AwsAdapter
        from tests.fakes.aws import moto_clients
        clients = moto_clients(endpoint_url=self.moto.url)
        provider = self.provider_config()
        adapter = AwsAdapter(provider, clients=clients, warm=False,
                             image_poll_interval=0.01)
        path = self.tmp_path / "image.raw"
        path.write_bytes(b"\1" * 512 * 1024)
        self.request.addfinalizer(adapter.stop)
        return (adapter, provider.diskimages["contract-image"], str(path),
                "raw")


class OpenStackBed(DriverBed):
    """``driver: openstack``: the loopback fake OpenStack, through the
    real openstacksdk."""

    provider = "os"
    capabilities = CLOUD
    config = CLOUD_HEADER + """\
          - name: os
            driver: openstack
            cloud: fake
            region-name: RegionOne
            rate: 0
            launch-retries: {retries}
            cloud-images:
              - name: base
                image-name: Fake Image
                username: zuul
            diskimages:
              - name: contract-image
            pools:
              - name: main
                max-servers: {max_servers}
                host-key-checking: false
                networks: [private]
                labels:
                  - name: small
                    cloud-image: base
                    min-ram: 2048
        """
    node_fields = dict(cloud="fake", region="RegionOne", username="zuul",
                       image_id="base",
                       resources={"cores": 2, "instances": 1, "ram": 2048})

    def __init__(self, request, tmp_path):
        super().__init__(request, tmp_path)
        self.cloud = request.getfixturevalue("openstack_cloud")
        use_driver(request, "openstack",
                   "tests.contract.conftest:QuickOpenStackDriver")

    def check_node(self, node):
        meta = self.cloud.live_servers()[node.external_id]["metadata"]
        assert meta["nodepool_pool_name"] == "main"

    def instances(self):
        return {server_id: server["metadata"].get("nodepool_node_id")
                for server_id, server in self.cloud.live_servers().items()}

    def create_calls(self):
        return self.cloud.counts["POST servers"]

    def fail_creates(self, count=1):
        self.cloud.error_faults = ["No valid host was found"] * count

    def limit_to_one_node(self):
        # 4 cores, 2 of them used by a server nodepool does not manage:
        # one node (2 cores) fits.
        self.cloud.limits["cores"] = 4
        self._create("someone-elses", {})

    def _create(self, name, metadata):
        with self.cloud.lock:
            status, body = self.cloud.create_server({"server": {
                "name": name, "flavorRef": "f-small", "imageRef": IMAGE_ID,
                "metadata": metadata}})
        return body["server"]["id"]

    def plant_instances(self):
        leaked = self._create("np" + LEAKED_NODE_ID, {
            "nodepool_provider_name": self.provider,
            "nodepool_node_id": LEAKED_NODE_ID,
            "nodepool_pool_name": "main"})
        other = self._create("np0000000001", {
            "nodepool_provider_name": "other", "nodepool_node_id": "1"})
        return leaked, other

    def image_adapter(self):
        from nodepool.driver.openstack.adapter import OpenStackAdapter
        provider = self.provider_config()
        adapter = OpenStackAdapter(provider, warm=False)
        path = self.tmp_path / "image.qcow2"
        path.write_bytes(b"\0" * 4096)
        self.request.addfinalizer(adapter.stop)
        return (adapter, provider.diskimages["contract-image"], str(path),
                "qcow2")


class AzureBed(DriverBed):
    """``driver: azure``: the loopback fake ARM, through the real
    credential and SDK clients over HTTPS."""

    provider = "azure"
    capabilities = CLOUD
    config = CLOUD_HEADER + """\
          - name: azure
            driver: azure
            location: centralus
            resource-group: nodepool
            resource-group-location: centralus
            auth-path: {auth_path}
            network: np-net
            rate: 200
            launch-retries: {retries}
            tags:
              owner: ci
            cloud-images:
              - name: ubuntu
                username: zuul
                key: ssh-rsa AAAAkey
                image-reference:
                  sku: 22_04-lts
                  publisher: Canonical
                  version: latest
                  offer: ubuntu
            diskimages:
              - name: contract-image
                username: zuul
            pools:
              - name: main
                max-servers: {max_servers}
                host-key-checking: false
                labels:
                  - name: small
                    cloud-image: ubuntu
                    hardware-profile:
                      vm-size: Standard_B1ls
                    tags:
                      team: label
        """
    node_fields = dict(cloud="Azure", region="centralus", username="zuul",
                       host_keys=[],
                       resources={"cores": 1, "instances": 1, "ram": 512,
                                  "standardBSFamily": 1})

    def __init__(self, request, tmp_path):
        super().__init__(request, tmp_path)
        self.fake = request.getfixturevalue("azure_fake")
        use_driver(request, "azure", "tests.contract.conftest:QuickAzureDriver")
        self.auth_path = tmp_path / "azure.json"
        self.auth_path.write_text(json.dumps(self.fake.auth_data()))

    def values(self):
        return dict(auth_path=self.auth_path)

    def check_node(self, node):
        assert node.external_id == "np" + node.id
        pip = self.fake.get("publicIPAddresses", node.external_id + "-pip-v4")
        assert node.interface_ip == node.public_ipv4 == \
            pip["properties"]["ipAddress"]
        assert node.private_ipv4.startswith("10.0.")
        tags = self.fake.get("virtualMachines", node.external_id)["tags"]
        assert tags == {"owner": "ci", "team": "label",
                        "nodepool_node_id": node.id,
                        "nodepool_pool_name": "main",
                        "nodepool_provider_name": "azure"}

    def released(self, kazoo, node):
        # Everything of the node goes: VM, disk, NIC and public IPs.
        gone = node.id not in {n.id for n in read_nodes(kazoo)}
        return gone and not self.fake.all_names()

    def instances(self):
        found = {}
        for name in self.fake.names("virtualMachines"):
            vm = self.fake.get("virtualMachines", name)
            if vm is None:
                continue
            state = vm["properties"].get("provisioningState")
            if state != "Deleting":
                found[name] = (vm.get("tags") or {}).get("nodepool_node_id")
        return found

    def create_calls(self):
        return self.fake.counts["PUT virtualMachines"]

    def fail_creates(self, count=1):
        self.fake.fail_provisioning("virtualMachines", "AllocationFailed",
                                    "Allocation failed", count=count)

    def limit_to_one_node(self):
        # The fake enforces its cores limit: one B1ls fits.
        self.fake.limits["cores"] = 1

    def plant_instances(self):
        leaked = "np" + LEAKED_NODE_ID
        self.fake.add_resource("virtualMachines", leaked, tags={
            "nodepool_provider_name": self.provider,
            "nodepool_node_id": LEAKED_NODE_ID})
        self.fake.add_resource("virtualMachines", "someone-elses", tags={
            "nodepool_provider_name": "other", "nodepool_node_id": "1"})
        return leaked, "someone-elses"

    def image_adapter(self):
        from nodepool.driver.azure.adapter import AzureAdapter
        provider = self.provider_config()
        adapter = AzureAdapter(provider, warm=False, poll_interval=0.01)
        path = self.tmp_path / "image.vhd"
        path.write_bytes(b"\1" * 512 * 8)
        self.request.addfinalizer(adapter.stop)
        return (adapter, provider.diskimages["contract-image"], str(path),
                "vhd")


class StaticBed(DriverBed):
    """``driver: static``: one configured host with one slot; nothing is
    launched, a released node's slot comes back as a new ready node."""

    provider = "static"
    missing = {
        CREATE: "hosts are configured, never created",
        LISTING: "lists no cloud instances (every node is a host slot)",
        QUOTA: "has no cloud limits (a host's slots are its capacity)",
        LEAKS: "launches nothing that could leak",
        IMAGES: "has no images",
    }
    # No host-key checking and a configured key: the host is not scanned,
    # so it needs no sshd.
    config = """
        labels:
          - name: small
            min-ready: {min_ready}
        providers:
          - name: static
            driver: static
            pools:
              - name: main
                nodes:
                  - name: 127.0.0.2
                    labels: [small]
                    host-key-checking: false
                    host-key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIContract
        """
    node_fields = dict(external_id="127.0.0.2", interface_ip="127.0.0.2",
                       launcher="static driver", username="zuul",
                       host_keys=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"
                                  "Contract"])

    def released(self, kazoo, node):
        # The host's slot is registered again under a new node id.
        nodes = read_nodes(kazoo)
        return node.id not in {n.id for n in nodes} and any(
            n.state == NodeState.READY and n.hostname == node.hostname
            for n in nodes)


class MetastaticBed(DriverBed):
    """``driver: metastatic``: slots on backing nodes that a ``driver:
    test`` provider of the same launcher launches; nothing is launched in
    a cloud by the metastatic provider itself."""

    provider = "meta"
    missing = {
        CREATE: "creates slots on backing nodes (their provider's bed "
                "covers creates)",
        LISTING: "lists no cloud instances (a slot uses none)",
        QUOTA: "has no cloud limits (its backing provider has)",
        LEAKS: "launches nothing that could leak",
        IMAGES: "has no images",
    }
    config = """
        labels:
          - name: small
            min-ready: {min_ready}
          - name: backing
        providers:
          - name: fake
            driver: test
            pools:
              - name: main
                labels:
                  - name: backing
          - name: meta
            driver: metastatic
            launch-retries: {retries}
            pools:
              - name: main
                max-servers: {max_servers}
                labels:
                  - name: small
                    backing-label: backing
                    max-parallel-jobs: 2
                    grace-time: 0
        """
    node_fields = dict(cloud="fake-cloud", region="fake-region", slot=0,
                       resources={"cores": 0, "instances": 1, "ram": 0})

    def check_node(self, node):
        backing = {n.id: n for n in read_nodes(self.kazoo)}[
            node.driver_data["backing_node"]]
        assert backing.state == NodeState.IN_USE
        assert node.interface_ip == backing.interface_ip

    def start(self, **params):
        self.kazoo = self.request.getfixturevalue("zuul").kazoo
        return super().start(**params)

    def released(self, kazoo, node):
        # The node goes, and with no slot left in use its backing node.
        return not read_nodes(kazoo)


class KubernetesBed(DriverBed):
    """``driver: kubernetes``: the loopback fake API server, through the
    real client and a kubeconfig; a node is a pod in its own namespace
    (the namespace is the instance)."""

    provider = "kubespray"
    capabilities = frozenset({CREATE, LISTING, LEAKS})
    missing = {
        QUOTA: "reads no cluster limits (the pools' max-* keys limit it; "
               "a ResourceQuota refusal aborts the launch)",
        IMAGES: "runs container images it does not upload",
    }
    config = """
        labels:
          - name: small
            min-ready: {min_ready}
        providers:
          - name: kubespray
            driver: kubernetes
            context: admin-cluster.local
            launch-retries: {retries}
            pools:
              - name: main
                max-servers: {max_servers}
                labels:
                  - name: small
                    type: pod
                    image: docker.io/fedora:28
        """
    node_fields = dict(cloud="admin-cluster.local", connection_type="kubectl",
                       interface_ip="small", host_id="fake-node-1",
                       resources={"cores": 0, "instances": 1, "ram": 0})

    def __init__(self, request, tmp_path):
        super().__init__(request, tmp_path)
        self.fake = request.getfixturevalue("k8s_fake")

    def check_node(self, node):
        assert node.external_id == "main-" + node.id
        assert node.connection_port["pod"] == "small"
        assert node.connection_port["namespace"] == node.external_id
        pod = self.fake.get("pods", node.external_id, "small")
        assert pod["status"]["phase"] == "Running"

    def instances(self):
        found = {}
        for name in self.fake.namespaces():
            ns = self.fake.get("namespaces", "", name)
            if ns is not None and ns["status"]["phase"] != "Terminating":
                found[name] = ns["metadata"].get("labels", {}).get(
                    "nodepool_node_id")
        return found

    def create_calls(self):
        return self.fake.counts["POST namespaces"]

    def fail_creates(self, count=1):
        self.fake.http_faults.fail("POST namespaces", 500, {
            "kind": "Status", "code": 500, "message": "injected"},
            times=count)

    def plant_instances(self):
        leaked, other = "main-" + LEAKED_NODE_ID, "main-0000000001"
        self.fake.add_namespace(leaked, {
            "nodepool_provider_name": self.provider,
            "nodepool_node_id": LEAKED_NODE_ID})
        self.fake.add_namespace(other, {
            "nodepool_provider_name": "other", "nodepool_node_id": "1"})
        return leaked, other


class GceBed(DriverBed):
    """``driver: gce``: the loopback fake Compute API, through the real
    google-cloud-compute clients (anonymous credentials, its endpoint)."""

    provider = "gce"
    capabilities = frozenset({CREATE, LISTING, QUOTA, LEAKS})
    missing = {IMAGES: "nodepool 11 uploads no images to GCE"}
    config = """
        labels:
          - name: small
            min-ready: {min_ready}
        providers:
          - name: gce
            driver: gce
            project: nodepool-project
            region: us-central1
            zone: us-central1-a
            rate: 200
            launch-retries: {retries}
            cloud-images:
              - name: debian
                image-project: debian-cloud
                image-family: debian-12
                username: zuul
            pools:
              - name: main
                max-servers: {max_servers}
                host-key-checking: false
                labels:
                  - name: small
                    cloud-image: debian
                    instance-type: e2-small
        """
    node_fields = dict(cloud="Google", region="us-central1",
                       az="us-central1-a", username="zuul",
                       resources={"cores": 2, "instances": 1, "ram": 2048})

    def __init__(self, request, tmp_path):
        super().__init__(request, tmp_path)
        self.fake = request.getfixturevalue("gce_fake")

    def check_node(self, node):
        assert node.external_id == "np" + node.id
        assert node.interface_ip == node.public_ipv4
        assert self.fake.metadata(node.external_id) == {
            "nodepool_node_id": node.id, "nodepool_pool_name": "main",
            "nodepool_provider_name": "gce"}

    def instances(self):
        return {name: self.fake.metadata(name).get("nodepool_node_id")
                for name in self.fake.names()
                if self.fake.instance(name)["status"] != "STOPPING"}

    def create_calls(self):
        return self.fake.counts["POST instances"]

    def fail_creates(self, count=1):
        self.fake.fail_operations("ZONE_RESOURCE_POOL_EXHAUSTED",
                                  count=count)

    def limit_to_one_node(self):
        # The region's quota: one instance.
        self.fake.quotas["INSTANCES"] = 1.0

    def plant_instances(self):
        leaked = "np" + LEAKED_NODE_ID
        self.fake.add_instance(leaked, {
            "nodepool_provider_name": self.provider,
            "nodepool_node_id": LEAKED_NODE_ID})
        self.fake.add_instance("someone-elses", {
            "nodepool_provider_name": "other", "nodepool_node_id": "1"})
        return leaked, "someone-elses"


class QuickIbmVpcDriver(IbmVpcDriver):
    """``driver: ibmvpc`` listing every LISTING_INTERVAL."""

    def get_adapter(self, provider_config, warm=True):
        from nodepool.driver.ibmvpc.adapter import IbmVpcAdapter
        return IbmVpcAdapter(provider_config, warm=warm,
                             listing_interval=LISTING_INTERVAL,
                             listing_gap=LISTING_INTERVAL / 5)


class IbmVpcBed(DriverBed):
    """``driver: ibmvpc``: the loopback fake IBM Cloud (IAM, resource
    manager, VPC) through the real SDKs; ownership is by names."""

    provider = "ibmvpc"
    capabilities = CLOUD
    config = CLOUD_HEADER + """\
          - name: ibmvpc
            driver: ibmvpc
            vpc: np-vpc
            region: us-south
            zone: us-south-1
            subnet: sn-nodepool
            credentials-file: {credentials}
            rate: 200
            launch-retries: {retries}
            quota:
              instances: {quota_instances}
            object-storage:
              instance-name: np-cos
              endpoint: {cos_endpoint}
              bucket-name: np-images
            cloud-images:
              - name: debian
                username: zuul
                image-name: ibm-debian-12
            diskimages:
              - name: contract-image
                operating-system: debian-12-amd64
            pools:
              - name: main
                max-servers: {max_servers}
                public-ipv4: true
                host-key-checking: false
                labels:
                  - name: small
                    cloud-image: debian
                    profile: cx2-2x4
        """
    node_fields = dict(cloud="IBM", region="us-south", az="us-south-1",
                       username="zuul", host_keys=[],
                       resources={"cores": 2, "instances": 1, "ram": 4096})

    def __init__(self, request, tmp_path):
        super().__init__(request, tmp_path)
        self.fake = request.getfixturevalue("ibmvpc_fake")
        driver.register_driver(
            "ibmvpc", "tests.contract.conftest:QuickIbmVpcDriver")
        request.addfinalizer(lambda: driver.register_driver(
            "ibmvpc", "nodepool.driver.ibmvpc:IbmVpcDriver"))
        self.quota_instances = 100

    def values(self):
        return dict(credentials=self.fake.credentials,
                    cos_endpoint=self.fake.cos.url,
                    quota_instances=self.quota_instances)

    def check_node(self, node):
        assert node.external_id == "np" + node.id
        fip = self.fake.by_name("floating_ips", node.external_id)
        assert node.interface_ip == node.public_ipv4 == fip["address"]
        vm = self.fake.by_name("instances", node.external_id)
        assert fip["target"]["id"] == vm["primary_network_interface"]["id"]
        assert vm["resource_group"]["name"] == "np_ibmvpc_main"

    def released(self, kazoo, node):
        gone = node.id not in {n.id for n in read_nodes(kazoo)}
        return gone and not self.fake.names("instances") and \
            not self.fake.names("floating_ips")

    def instances(self):
        found = {}
        for name in self.fake.names("instances"):
            vm = self.fake.by_name("instances", name)
            if vm is not None and vm["status"] != "deleting":
                group = vm["resource_group"]["name"]
                found[name] = node_metadata(name, group).get(
                    "nodepool_node_id")
        return found

    def create_calls(self):
        return self.fake.counts["POST instances"]

    def fail_creates(self, count=1):
        self.fake.fail_instances(count, code="cannot_start_capacity")

    def limit_to_one_node(self):
        # The API has no account limits: the provider's quota key.
        self.quota_instances = 1

    def plant_instances(self):
        leaked = "np" + LEAKED_NODE_ID
        self.fake.plant_instance(leaked, "np_ibmvpc_main")
        self.fake.plant_instance("np0000000001", "np_other_main")
        return leaked, "np0000000001"

    def image_adapter(self):
        from nodepool.driver.ibmvpc.adapter import IbmVpcAdapter
        provider = self.provider_config()
        adapter = IbmVpcAdapter(provider, warm=False, poll_interval=0.05)
        path = self.tmp_path / "image.qcow2"
        path.write_bytes(b"QFI\xfb" + b"\0" * 508)
        self.request.addfinalizer(adapter.stop)
        return (adapter, provider.diskimages["contract-image"], str(path),
                "qcow2")


BEDS = {"test": FakeDriverBed, "aws": AwsBed, "openstack": OpenStackBed,
        "azure": AzureBed, "static": StaticBed, "metastatic": MetastaticBed,
        "kubernetes": KubernetesBed, "gce": GceBed, "ibmvpc": IbmVpcBed}


@pytest.fixture(scope="session")
def moto_server():
    """moto_server as a child process, shared by the session (each bed
    resets it)."""
    pytest.importorskip("moto")
    from tests.fakes.aws_proxy import MotoServer
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture(params=list(BEDS))
def driver_bed(request, tmp_path):
    """A :class:`DriverBed` per driver.  The cloud stand-in is set up
    before (and so torn down after) any launcher the test starts."""
    return BEDS[request.param](request, tmp_path)
