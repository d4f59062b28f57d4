# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The Azure driver in the launcher: the launcher in-process with an azure
provider on the loopback fake ARM (tests/fakes/azure.py; real credential
and SDK clients over HTTPS), a real ZooKeeper and a Zuul-like client."""

import json

import pytest

from nodepool.zk.models import NodeState, RequestState
from tests.fixtures.waits import wait_for
from tests.functional.conftest import node_ids, read_nodes

CONFIG = """
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


@pytest.fixture
def launcher_factory(azure_fake, launcher_factory):
    """Launchers whose factory depends on the fake ARM, so that it is set
    up before and torn down after every launcher of the test (against a
    stopped fake, the launchers' teardown waits in azure-core retries)."""
    return launcher_factory


@pytest.fixture
def fake(azure_fake):
    """The fake ARM with its virtual network ``np-net``."""
    return azure_fake


@pytest.fixture
def start(fake, launcher_factory, tmp_path):
    auth_path = tmp_path / "azure.json"
    auth_path.write_text(json.dumps(fake.auth_data()))

    def start(**params):
        return launcher_factory(CONFIG, auth_path=auth_path, **params)
    return start


def test_request_served_and_resources_deleted(start, fake, zuul):
    start()
    request = zuul.submit(["small", "small"])
    done = zuul.wait_for_request(request, timeout=30)
    assert done.state == RequestState.FULFILLED
    nodes = zuul.accept_nodes(done)
    assert sorted(fake.names("virtualMachines")) == sorted(
        n.external_id for n in nodes)
    for node in nodes:
        assert node.state == NodeState.IN_USE
        assert node.provider == "azure" and node.cloud == "Azure"
        assert node.region == "centralus"
        assert node.external_id == "np" + node.id
        pip = fake.get("publicIPAddresses", node.external_id + "-pip-v4")
        assert node.interface_ip == node.public_ipv4 == \
            pip["properties"]["ipAddress"]
        assert node.private_ipv4.startswith("10.0.")
        assert node.resources == {"cores": 1, "instances": 1, "ram": 512,
                                  "standardBSFamily": 1}
        assert node.username == "zuul" and node.host_keys == []
        tags = fake.get("virtualMachines", node.external_id)["tags"]
        assert tags == {"owner": "ci", "team": "label",
                        "nodepool_node_id": node.id,
                        "nodepool_pool_name": "main",
                        "nodepool_provider_name": "azure"}
    assert fake.counts["PUT virtualMachines"] == 2
    zuul.return_nodes(nodes)
    wait_for(lambda: not node_ids(zuul.kazoo), timeout=30)
    # Everything of the nodes is gone: VMs, disks, NICs and public IPs.
    assert fake.all_names() == {}


def test_failed_provisioning_retried_without_leak(start, fake, zuul):
    fake.fail_provisioning("virtualMachines", "AllocationFailed",
                           "Allocation failed")
    start()
    done = zuul.wait_for_request(zuul.submit(["small"]), timeout=30)
    assert done.state == RequestState.FULFILLED
    assert fake.counts["PUT virtualMachines"] == 2
    [node] = zuul.accept_nodes(done)
    # The failed attempt's VM, disk, NIC and IP were deleted before the
    # retry made them again under the same names.
    assert fake.names("virtualMachines") == [node.external_id]
    assert fake.counts["DELETE virtualMachines"] == 1
    zuul.return_nodes([node])
    wait_for(lambda: not fake.all_names() and not node_ids(zuul.kazoo),
             timeout=30)


def test_quota_refusal_pauses_then_launches(start, fake, zuul):
    # The fake enforces its cores limit: one B1ls fits.
    fake.limits["cores"] = 1
    launcher = start()
    first = zuul.wait_for_request(zuul.submit(["small"]), timeout=30)
    assert first.state == RequestState.FULFILLED
    [node] = zuul.accept_nodes(first)
    second = zuul.submit(["small"])
    # Provider quota (limits from the usages) keeps the launcher from
    # trying: the request waits while the pool is paused.
    worker = launcher.pool_workers[("azure", "main")]
    wait_for(lambda: worker.paused, timeout=30)
    assert fake.counts["PUT virtualMachines"] == 1
    zuul.return_nodes([node])
    done = zuul.wait_for_request(second, timeout=30)
    assert done.state == RequestState.FULFILLED
    [node] = zuul.accept_nodes(done)
    zuul.return_nodes([node])
    wait_for(lambda: not fake.all_names() and not node_ids(zuul.kazoo),
             timeout=30)


def test_leaked_resources_cleaned_up(start, fake, zuul):
    tags = {"nodepool_provider_name": "azure", "nodepool_node_id": "0999"}
    fake.add_resource("networkInterfaces", "np0999-nic", tags=tags)
    fake.add_resource("publicIPAddresses", "np0999-pip-v4", tags=tags)
    fake.add_resource("publicIPAddresses", "not-ours")
    start()
    wait_for(lambda: fake.names("networkInterfaces") == [] and
             fake.names("publicIPAddresses") == ["not-ours"], timeout=30)
    assert not read_nodes(zuul.kazoo)
