# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The OpenStack driver end to end: the launcher in-process with an
openstack provider on the loopback fake cloud (real openstacksdk, real
HTTP, clouds.yaml through ``OS_CLIENT_CONFIG_FILE``), a real ZooKeeper
and a Zuul-like client.

What every driver does (launch, delete, retry, quota, leaked servers) is
in the contract suite, tests/contract; here only what is OpenStack's
own: pools, zones, security groups, volumes and addresses, provider
quota (ignored or shrinking), unmanaged images and cleanup of failed
boots."""

import pytest

from nodepool.zk.models import NodeState, RequestState
from tests.fakes.openstack import IMAGE_ID
from tests.fixtures.waits import wait_for
from tests.functional.conftest import node_ids, served_by

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


OPENSTACK = """
labels:
  - name: small
  - name: bfv
  - name: v6
  - name: nofip
providers:
  - name: os
    driver: openstack
    cloud: fake
    region-name: RegionOne
    rate: 0
    cloud-images:
      - name: base
        image-name: Fake Image
        username: zuul
    pools:
      - name: one
        availability-zones: [az1]
        security-groups: [sg-a]
        host-key-checking: false
        networks: [private]
        labels:
          - name: small
            cloud-image: base
            flavor-name: m1.small
          - name: bfv
            cloud-image: base
            flavor-name: m1.small
            boot-from-volume: true
            volume-size: 20
          - name: v6
            cloud-image: base
            flavor-name: m1.small
            networks: [ipv6]
      - name: two
        availability-zones: [az2]
        auto-floating-ip: false
        host-key-checking: false
        networks: [private]
        labels:
          - name: nofip
            cloud-image: base
            flavor-name: m1.small
"""


def test_openstack_pools_zones_groups_volumes_and_addresses(
        launcher_factory, zuul, openstack_cloud):
    cloud = openstack_cloud
    launcher_factory(OPENSTACK)
    nodes = zuul.run_job(["small", "bfv", "v6"], timeout=60)
    servers = cloud.live_servers()
    fips = {f["floating_ip_address"]: f for f in cloud.floating_ips.values()}
    for node in nodes:
        assert node.pool == "one" and node.az == "az1"
        server = servers[node.external_id]
        assert server["OS-EXT-AZ:availability_zone"] == "az1"
        assert server["security_groups"] == [{"name": "sg-a"}]
    small, bfv, v6 = nodes
    # Floating IP by default, used to reach the node.
    assert small.public_ipv4 in fips
    assert small.interface_ip == small.public_ipv4
    # Boot from volume: no image, a volume the size asked for.
    body = next(b for b in cloud.create_bodies
                if b["metadata"]["nodepool_node_id"] == bfv.id)
    assert "imageRef" not in body
    assert body["block_device_mapping_v2"][0]["volume_size"] == 20
    assert servers[bfv.external_id]["os-extended-volumes:volumes_attached"]
    assert bfv.resources["volumes"] == 1
    # A v6-only network: reached over IPv6, no floating IP.
    assert v6.public_ipv6.startswith("2001:db8::")
    assert v6.interface_ip == v6.public_ipv6
    assert not v6.public_ipv4
    assert len(fips) == 2

    (nofip,) = zuul.run_job(["nofip"], timeout=60)
    server = cloud.live_servers()[nofip.external_id]
    assert nofip.pool == "two" and nofip.az == "az2"
    assert server["OS-EXT-AZ:availability_zone"] == "az2"
    assert server["security_groups"] == []
    # auto-floating-ip false: no public address, the private one is used.
    assert not nofip.public_ipv4
    assert nofip.interface_ip == nofip.private_ipv4
    assert nofip.private_ipv4.startswith("10.0.0.")
    assert len(cloud.floating_ips) == 2
    zuul.finish(nodes + [nofip])
    wait_for(lambda: not cloud.live_servers() and not cloud.floating_ips,
             timeout=60)


IGNORE_QUOTA = """
labels:
  - name: small
providers:
  - name: os
    driver: openstack
    cloud: fake
    region-name: RegionOne
    rate: 0
    launch-retries: 1
    cloud-images:
      - name: base
        image-name: Fake Image
    pools:
      - name: main
        max-servers: 1
        ignore-provider-quota: {ignore}
        host-key-checking: false
        networks: [private]
        labels:
          - name: small
            cloud-image: base
            flavor-name: m1.small
"""


def test_openstack_provider_quota_declines_unless_ignored(
        launcher_factory, zuul, openstack_cloud):
    openstack_cloud.limits["cores"] = 0
    launcher_factory(IGNORE_QUOTA, ignore="false")
    done = zuul.wait_for_request(zuul.submit(["small"]), timeout=60)
    assert done.state == RequestState.FAILED
    assert openstack_cloud.counts["POST servers"] == 0


def test_openstack_ignored_provider_quota(launcher_factory, zuul,
                                          openstack_cloud, statsd):
    cloud = openstack_cloud
    cloud.limits["cores"] = 0
    launcher = launcher_factory(IGNORE_QUOTA, ignore="true")
    # More than max-servers at once can never be served.
    too_big = zuul.wait_for_request(zuul.submit(["small", "small"]),
                                    timeout=60)
    assert too_big.state == RequestState.FAILED
    # One node is tried although the cloud says there is no room; Nova
    # refuses, the node is aborted and the request waits.
    request = zuul.submit(["small"])
    wait_for(lambda: cloud.counts["POST servers"] >= 1, timeout=60)
    worker = launcher.pool_workers[("os", "main")]
    wait_for(lambda: worker.paused, timeout=60)
    assert zuul.get_request(request).state == RequestState.PENDING
    statsd.wait_for_metric("nodepool.launch.provider.os.error.quota", "c")
    # Once the cloud has room the request is served.
    cloud.limits["cores"] = 100
    done = zuul.wait_for_request(request, timeout=60)
    assert done.state == RequestState.FULFILLED
    zuul.finish(zuul.accept_nodes(done))
    wait_for(lambda: not cloud.live_servers(), timeout=60)


def test_openstack_failed_cleanup_of_a_failed_boot_is_retried(
        launcher_factory, zuul, openstack_cloud):
    # launchNode_delete_error: the first boot ends in ERROR and deleting
    # that server fails too; the delete is retried, the next boot serves.
    cloud = openstack_cloud
    cloud.error_faults = ["No valid host was found"]
    cloud.delete_errors = [(500, "fake delete failure")] * 2
    launcher_factory(OPENSTACK)
    (node,) = zuul.run_job(["small"], timeout=60)
    assert cloud.counts["POST servers"] == 2
    wait_for(lambda: list(cloud.live_servers()) == [node.external_id],
             timeout=60, message="the failed server was not deleted")
    assert not cloud.delete_errors
    zuul.finish([node])
    wait_for(lambda: not cloud.live_servers(), timeout=60)


UNMANAGED = """
labels:
  - name: plain
  - name: win
  - name: win-port
  - name: by-id
providers:
  - name: os
    driver: openstack
    cloud: fake
    region-name: RegionOne
    rate: 0
    cloud-images:
      - name: plain
        image-name: Fake Image
      - name: windows
        image-name: Fake Image
        username: zuul
        connection-type: winrm
        shell-type: cmd
        python-path: /usr/bin/python3
      - name: windows-port
        image-name: Fake Image
        username: zuul
        connection-type: winrm
        connection-port: 1234
      - name: by-id
        image-id: {image_id}
    pools:
      - name: main
        host-key-checking: false
        networks: [private]
        labels:
          - name: plain
            cloud-image: plain
            flavor-name: m1.small
          - name: win
            cloud-image: windows
            flavor-name: m1.small
          - name: win-port
            cloud-image: windows-port
            flavor-name: m1.small
          - name: by-id
            cloud-image: by-id
            flavor-name: m1.small
"""


def test_openstack_unmanaged_images(launcher_factory, zuul, openstack_cloud):
    launcher_factory(UNMANAGED, image_id=IMAGE_ID)
    plain, win, win_port, by_id = zuul.run_job(
        ["plain", "win", "win-port", "by-id"], timeout=60)
    assert {b["imageRef"] for b in openstack_cloud.create_bodies} == \
        {IMAGE_ID}
    assert plain.username is None
    assert plain.connection_type == "ssh" and plain.connection_port == 22
    assert (win.username, win.connection_type, win.connection_port) == \
        ("zuul", "winrm", 5986)
    assert win.shell_type == "cmd"
    assert win.python_path == "/usr/bin/python3"
    assert (win_port.connection_type, win_port.connection_port) == \
        ("winrm", 1234)
    assert by_id.image_id == "by-id"
    for node in (plain, win, win_port, by_id):
        assert node.host_keys == []
    zuul.finish([plain, win, win_port, by_id])


def test_openstack_quota_shrinking_unexpectedly(launcher_factory, zuul,
                                                openstack_cloud):
    cloud = openstack_cloud
    cloud.limits["instances"] = 2
    launcher = launcher_factory(OPENSTACK)
    (first,) = zuul.run_job(["small"], timeout=60)
    # The cloud now allows one server; the launcher's cached quota still
    # says two: Nova refuses, the request waits instead of failing.
    cloud.limits["instances"] = 1
    waiting = zuul.submit(["small"])
    worker = launcher.pool_workers[("os", "one")]
    wait_for(lambda: cloud.counts["POST servers"] >= 2, timeout=60)
    wait_for(lambda: worker.paused, timeout=60)
    assert zuul.get_request(waiting).state == RequestState.PENDING
    zuul.finish([first])
    done, nodes = served_by(zuul, waiting, timeout=60)
    assert list(cloud.live_servers()) == [nodes[0].external_id]
    zuul.finish(nodes)
