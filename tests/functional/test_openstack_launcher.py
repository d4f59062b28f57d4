# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The OpenStack driver end to end: the launcher in-process with an
openstack provider on the loopback fake cloud (real openstacksdk, real
HTTP, clouds.yaml through ``OS_CLIENT_CONFIG_FILE``), a real ZooKeeper
and a Zuul-like client.

What every driver does (launch, delete, retry, quota, leaked servers) is
in the contract suite, tests/contract; here only what is OpenStack's
own."""

import pytest

from nodepool.zk.models import NodeState, RequestState
from tests.fakes.openstack import IMAGE_ID
from tests.fixtures.waits import wait_for
from tests.functional.conftest import node_ids

CONFIG = """
labels:
  - name: small
    min-ready: {min_ready}
  - name: big
providers:
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
    pools:
      - name: main
        max-servers: {max_servers}
        host-key-checking: false
        networks: [private]
        labels:
          - name: small
            cloud-image: base
            min-ram: 2048
            instance-properties:
              team: ci
          - name: big
            cloud-image: base
            flavor-name: m1.large
"""


@pytest.fixture
def cloud(openstack_cloud):
    """The fake OpenStack, ``fake`` in the clouds.yaml of the test."""
    return openstack_cloud


def test_request_served_and_servers_deleted(launcher_factory, zuul, cloud):
    launcher_factory(CONFIG)
    done = zuul.wait_for_request(zuul.submit(["small", "big"]), timeout=60)
    assert done.state == RequestState.FULFILLED
    nodes = zuul.accept_nodes(done)
    servers = cloud.live_servers()
    assert sorted(servers) == sorted(n.external_id for n in nodes)
    fips = {f["floating_ip_address"] for f in cloud.floating_ips.values()}
    for node in nodes:
        assert node.state == NodeState.IN_USE
        assert node.provider == "os" and node.pool == "main"
        assert node.cloud == "fake" and node.region == "RegionOne"
        assert node.az in ("az1", "az2")
        assert node.username == "zuul"
        assert node.image_id == "base"
        assert node.public_ipv4 in fips
        assert node.interface_ip == node.public_ipv4
        assert node.private_ipv4.startswith("10.0.0.")
        assert node.host_keys == []
        meta = servers[node.external_id]["metadata"]
        assert meta["nodepool_node_id"] == node.id
        assert meta["nodepool_provider_name"] == "os"
        assert meta["nodepool_pool_name"] == "main"
        assert servers[node.external_id]["name"] == "np" + node.id
    small, big = nodes
    assert small.resources == {"cores": 2, "instances": 1, "ram": 2048}
    assert big.resources == {"cores": 8, "instances": 1, "ram": 16384}
    assert servers[small.external_id]["metadata"]["team"] == "ci"
    assert {b["imageRef"] for b in cloud.create_bodies} == {IMAGE_ID}
    assert cloud.counts["POST servers"] == 2
    assert cloud.counts["GET server"] == 0

    zuul.return_nodes(nodes)
    wait_for(lambda: not node_ids(zuul.kazoo) and not cloud.live_servers(),
             timeout=60)
    # Nothing left behind: floating IPs and ports went with the servers.
    wait_for(lambda: not cloud.floating_ips and not cloud.ports, timeout=30)
    assert cloud.unknown == []


def test_down_ports_and_loose_floating_ips_cleaned(launcher_factory, zuul,
                                                   cloud):
    down = [cloud.add_port(), cloud.add_port(device_owner="compute:az1")]
    dhcp = cloud.add_port(device_owner="network:dhcp")
    loose = cloud.add_floating_ip()
    launcher_factory(CONFIG.replace(
        "    rate: 0\n",
        "    rate: 0\n    clean-floating-ips: true\n"
        "    port-cleanup-interval: 1\n"))
    # A node in use keeps its port and floating IP.
    done = zuul.wait_for_request(zuul.submit(["small"]), timeout=60)
    [node] = zuul.accept_nodes(done)
    wait_for(lambda: loose not in cloud.floating_ips, timeout=60)
    wait_for(lambda: not set(down) & set(cloud.ports), timeout=60)
    assert dhcp in cloud.ports
    assert node.public_ipv4 in {f["floating_ip_address"]
                                for f in cloud.floating_ips.values()}
    assert [p for p in cloud.ports.values()
            if p["device_id"] == node.external_id]
    zuul.return_nodes([node])
    wait_for(lambda: not cloud.live_servers(), timeout=60)
