# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""More of the operator's launcher checklist: failing deletions, request
order, provider hints and priorities, labels served by some providers
only, several launchers, zone changes, min-ready at capacity and
registration of config changes."""

import json
import os
import time

from kazoo.exceptions import KazooException

from nodepool.launcher.min_ready import MinReadyManager
from nodepool.launcher.request_handler import MIN_READY_REQUESTOR
from nodepool.zk.models import NodeState, RequestState
from nodepool.zk.nodes import NodeStore
from tests.fakes.openstack import IMAGE_ID
from tests.fakes.test_driver import FakeCloud, FakeDriver
from tests.fixtures.waits import wait_for
from tests.functional.conftest import node_ids, read_nodes

# ``first`` serves small and large, ``second`` small only.
TWO_PROVIDERS = """
labels:
  - name: small
    min-ready: {min_ready}
  - name: large
    min-ready: {large_min_ready}
providers:
  - name: first
    driver: test
    priority: {first_priority}
    pools:
      - name: main
        max-servers: {first_max}
        labels:
          - name: small
          - name: large
            cores: 4
  - name: second
    driver: test
    priority: 50
    pools:
      - name: main
        labels:
          - name: small
"""


def two_providers(launcher_factory, **params):
    values = dict(min_ready=0, large_min_ready=0, first_priority=100,
                  first_max=10)
    values.update(params)
    launcher = launcher_factory(TWO_PROVIDERS, **values)
    # Yielding to the better pool needs both pools registered.
    wait_for(lambda: len(launcher.services.registry.pools()) == 2)
    return launcher


def nodes_of(zuul, state=None, label=None, provider=None):
    return [n for n in read_nodes(zuul.kazoo)
            if (state is None or n.state == state)
            and (label is None or label in (n.type or ()))
            and (provider is None or n.provider == provider)]


def idle_ready(zuul, label="small"):
    return [n for n in nodes_of(zuul, NodeState.READY, label)
            if not n.allocated_to]


def set_state(launcher, node_id, state):
    """Write a node's state under its lock, as an operator tool does."""
    store = NodeStore(launcher.services.zk_client)
    node = store.get_node(node_id, cached=False)
    store.lock_node(node, blocking=True, timeout=10)
    try:
        node.state = state
        store.store_node(node)
    finally:
        store.unlock_node(node)


def served_by(zuul, request, timeout=30):
    done = zuul.wait_for_request(request, timeout=timeout)
    assert done.state == RequestState.FULFILLED, done.declined_by
    nodes = zuul.accept_nodes(done)
    return done, nodes


# Deletion failures ---------------------------------------------------------

def test_failing_cloud_delete_keeps_node_deleting_and_replaces_it(
        launcher_factory, zuul):
    launcher = launcher_factory(min_ready=1)
    cloud = FakeCloud.get("fake")
    (node,) = wait_for(lambda: idle_ready(zuul) or None)
    cloud.fail_deletes = 10 ** 6
    set_state(launcher, node.id, NodeState.DELETING)
    # min-ready replaces it although the old instance cannot be deleted.
    wait_for(lambda: [n for n in idle_ready(zuul) if n.id != node.id],
             message="no replacement for the undeletable node")
    # Several attempts failed; the record stays, still deleting, and so
    # does the instance.
    wait_for(lambda: cloud.fail_deletes <= 10 ** 6 - 3)
    (old,) = [n for n in read_nodes(zuul.kazoo) if n.id == node.id]
    assert old.state == NodeState.DELETING
    assert node.external_id in {i.external_id for i in cloud.list()}
    # Once the cloud deletes again, the node goes.
    cloud.fail_deletes = 0
    wait_for(lambda: node.id not in node_ids(zuul.kazoo)
             and node.external_id not in
             {i.external_id for i in cloud.list()})


def test_failure_removing_the_record_is_retried(launcher_factory, zuul,
                                                monkeypatch):
    # deleteRawNode_exception: the instance is gone but removing the
    # record fails once; a later pass removes it.
    launcher_factory()
    cloud = FakeCloud.get("fake")
    calls = []
    original = NodeStore.delete_node

    def failing_once(self, node):
        calls.append(node.id)
        if len(calls) == 1:
            raise KazooException("fake ZooKeeper failure")
        return original(self, node)
    monkeypatch.setattr(NodeStore, "delete_node", failing_once)
    (node,) = zuul.run_job(["small"])
    zuul.finish([node])
    wait_for(lambda: node.id not in node_ids(zuul.kazoo), timeout=30)
    assert len(calls) >= 2 and set(calls) == {node.id}
    assert not cloud.list()
    # Nothing is wedged.
    zuul.finish(zuul.run_job(["small"]))


# Request order -------------------------------------------------------------

def test_relative_priority_orders_requests(launcher_factory, zuul):
    # Both wait before any launcher runs; with room for one node the one
    # with the lower relative priority is served first.
    later = zuul.submit(["small"], relative_priority=2)
    sooner = zuul.submit(["small"], relative_priority=1)
    launcher_factory(max_servers=1)
    done, nodes = served_by(zuul, sooner)
    assert zuul.get_request(later).state != RequestState.FULFILLED
    zuul.finish(nodes)
    done_later, nodes = served_by(zuul, later)
    assert done.state_time < done_later.state_time
    zuul.finish(nodes)


def test_servable_requests_not_held_up_by_unservable_ones(
        launcher_factory, zuul):
    bad = [zuul.submit(["no-such-label"]) for _ in range(3)]
    good = zuul.submit(["small"])
    launcher_factory()
    for request in bad:
        assert zuul.wait_for_request(request).state == RequestState.FAILED
    done, nodes = served_by(zuul, good)
    zuul.finish(nodes)


# Provider hints, priorities and label placement -----------------------------

def test_unknown_provider_hint_still_fulfilled(launcher_factory, zuul):
    two_providers(launcher_factory)
    done, nodes = served_by(zuul, zuul.submit(["small"],
                                              provider="no-such-provider"))
    assert nodes[0].provider in ("first", "second")
    zuul.finish(nodes)


def test_hinted_provider_without_the_label_leaves_it_to_others(
        launcher_factory, zuul):
    two_providers(launcher_factory)
    done, nodes = served_by(zuul, zuul.submit(["large"], provider="second"))
    assert [n.provider for n in nodes] == ["first"]
    zuul.finish(nodes)


def test_priority_provider_used_until_paused(launcher_factory, zuul):
    # "first" has the better priority but room for one node only.
    launcher = two_providers(launcher_factory, first_priority=1,
                             first_max=1)
    done, first_nodes = served_by(zuul, zuul.submit(["small"]))
    assert [n.provider for n in first_nodes] == ["first"]
    # The next request pauses "first"; only then may "second" take the
    # requests after it.
    waiting = zuul.submit(["small"])
    worker = launcher.pool_workers[("first", "main")]
    wait_for(lambda: worker.paused, message="first pool never paused")
    wait_for(lambda: any(p.paused for p in launcher.services.registry.pools()
                         if p.provider_name == "first"))
    done, nodes = served_by(zuul, zuul.submit(["small"]))
    assert [n.provider for n in nodes] == ["second"]
    zuul.finish(nodes)
    zuul.finish(first_nodes)
    done, nodes = served_by(zuul, waiting)
    assert [n.provider for n in nodes] == ["first"]
    zuul.finish(nodes)


def test_only_providers_defining_a_label_serve_it(launcher_factory, zuul):
    # "second" has the better priority but no "large": min-ready comes
    # from "first", and so do requests.
    two_providers(launcher_factory, large_min_ready=1)
    (node,) = wait_for(lambda: idle_ready(zuul, "large") or None)
    assert node.provider == "first"
    assert FakeCloud.get("second").created == 0
    for _ in range(2):
        done, nodes = served_by(zuul, zuul.submit(["large", "large"]))
        assert {n.provider for n in nodes} == {"first"}
        zuul.finish(nodes)
    assert FakeCloud.get("second").created == 0


def test_label_without_min_ready_gets_no_nodes(launcher_factory, zuul,
                                               monkeypatch):
    passes = []
    original = MinReadyManager.run

    def counting(self):
        original(self)
        passes.append(1)
    monkeypatch.setattr(MinReadyManager, "run", counting)
    launcher_factory(min_ready=0)
    wait_for(lambda: len(passes) >= 5)
    assert not zuul.kazoo.exists("/nodepool/requests") or \
        not zuul.kazoo.get_children("/nodepool/requests")
    assert not node_ids(zuul.kazoo)
    assert FakeCloud.get("fake").created == 0


# Several launchers ---------------------------------------------------------

LAUNCHER_ONE = """
labels:
  - name: small
    min-ready: 1
providers:
  - name: {provider}
    driver: test
    pools:
      - name: main
        labels:
          - name: small
"""


def test_two_launchers_share_min_ready(launcher_factory, zuul):
    one = launcher_factory(LAUNCHER_ONE, provider="alpha")
    two = launcher_factory(LAUNCHER_ONE, provider="beta")
    (node,) = wait_for(lambda: idle_ready(zuul) or None, timeout=30)
    assert node.provider in ("alpha", "beta")
    assert node.type == ["small"]
    # Each launcher's min-ready pass sees the node; no second one is made.
    passes = {id(one): 0, id(two): 0}
    for launcher in (one, two):
        original = launcher.min_ready.run

        def counting(original=original, key=id(launcher)):
            original()
            passes[key] += 1
        launcher.min_ready.run = counting
    wait_for(lambda: min(passes.values()) >= 3 and not any(
        launcher.min_ready.submitted for launcher in (one, two)),
        timeout=30)
    assert len(nodes_of(zuul, label="small")) == 1


# Clouds changing under the launcher ----------------------------------------

def test_zone_change_in_the_cloud_is_followed(launcher_factory, zuul):
    cloud = FakeCloud.get("fake")
    cloud.azs = ["old-a", "old-b"]
    launcher_factory()
    done, nodes = served_by(zuul, zuul.submit(["small"]))
    assert nodes[0].az in ("old-a", "old-b")
    zuul.finish(nodes)
    cloud.azs = ["new-a", "new-b"]
    # Upstream tolerates one failed request here; we recover at once.
    for _ in range(3):
        done, nodes = served_by(zuul, zuul.submit(["small", "small"]))
        assert {n.az for n in nodes} <= {"new-a", "new-b"}
        zuul.finish(nodes)


# Capacity ------------------------------------------------------------------

def test_min_ready_request_at_capacity_is_declined(launcher_factory, zuul):
    launcher_factory(max_servers=1)
    nodes = zuul.run_job(["small"])
    request = zuul.submit(["small"], requestor=MIN_READY_REQUESTOR,
                          reuse=False)
    done = zuul.wait_for_request(request)
    assert done.state == RequestState.FAILED
    assert done.declined_by
    assert FakeCloud.get("fake").created == 1
    zuul.delete_request(done)
    zuul.finish(nodes)


# Node records --------------------------------------------------------------

def test_empty_node_record_removed(launcher_factory, zuul):
    zuul.kazoo.create("/nodepool/nodes/9000000010", b"", makepath=True)
    launcher_factory()
    wait_for(lambda: "9000000010" not in node_ids(zuul.kazoo), timeout=30)
    done, nodes = served_by(zuul, zuul.submit(["small"]))
    zuul.finish(nodes)


def test_records_without_type_or_pool_do_not_break_launching(
        launcher_factory, zuul):
    kazoo = zuul.kazoo
    kazoo.create("/nodepool/nodes/9000000020", json.dumps({
        "state": "ready", "provider": "fake", "pool": "main",
        "external_id": "i-none"}).encode(), makepath=True)
    kazoo.create("/nodepool/nodes/9000000021", json.dumps({
        "state": "ready", "provider": "fake", "type": ["small"],
        "external_id": "i-none"}).encode(), makepath=True)
    launcher_factory()
    for _ in range(2):
        done, nodes = served_by(zuul, zuul.submit(["small"]))
        assert nodes[0].id not in ("9000000020", "9000000021")
        zuul.finish(nodes)


# Config changes ------------------------------------------------------------

def test_config_change_updates_registered_labels(launcher_factory, zuul,
                                                 tmp_path):
    launcher = launcher_factory()
    registry = launcher.services.registry

    def labels():
        return [sorted(p.supported_labels or ()) for p in registry.pools()
                if p.provider_name == "fake"]
    wait_for(lambda: labels() == [["large", "small"]])
    path = tmp_path / "nodepool-0.yaml"
    text = path.read_text()
    text = text.replace("  - name: large\n",
                        "  - name: large\n  - name: extra\n", 1)
    text = text.replace("          - name: small\n",
                        "          - name: small\n          - name: extra\n")
    path.write_text(text)
    os.utime(path, (time.time() + 5, time.time() + 5))
    wait_for(lambda: labels() == [["extra", "large", "small"]], timeout=30,
             message="pool component still lists the old labels")


def test_paused_request_declined_when_max_servers_shrinks(
        launcher_factory, zuul, tmp_path):
    launcher = launcher_factory(max_servers=2)
    first = zuul.run_job(["small", "small"])
    waiting = zuul.submit(["small", "small"])
    worker = launcher.pool_workers[("fake", "main")]
    wait_for(lambda: worker.paused, message="pool never paused")
    assert zuul.get_request(waiting).state == RequestState.PENDING
    # Two nodes at once no longer fit the pool: the request fails instead
    # of waiting for capacity that will never be there.
    path = tmp_path / "nodepool-0.yaml"
    path.write_text(path.read_text().replace("max-servers: 2",
                                             "max-servers: 1"))
    os.utime(path, (time.time() + 5, time.time() + 5))
    done = zuul.wait_for_request(waiting, timeout=30)
    assert done.state == RequestState.FAILED
    assert done.declined_by
    zuul.finish(first)
    assert FakeCloud.get("fake").created == 2


def test_paused_request_served_when_max_servers_grows(
        launcher_factory, zuul, tmp_path):
    launcher = launcher_factory(max_servers=1)
    first = zuul.run_job(["small"])
    waiting = zuul.submit(["small"])
    worker = launcher.pool_workers[("fake", "main")]
    wait_for(lambda: worker.paused, message="pool never paused")
    path = tmp_path / "nodepool-0.yaml"
    path.write_text(path.read_text().replace("max-servers: 1",
                                             "max-servers: 2"))
    os.utime(path, (time.time() + 5, time.time() + 5))
    done, nodes = served_by(zuul, waiting)
    assert done.declined_by  # the old pool gave it up
    zuul.finish(nodes + first)


# OpenStack ------------------------------------------------------------------

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


# Paused requests -------------------------------------------------------------

def test_error_while_paused_fails_the_request_and_unpauses(
        launcher_factory, zuul, monkeypatch):
    launcher = launcher_factory(max_servers=1)
    first = zuul.run_job(["small"])
    waiting = zuul.submit(["small"])
    worker = launcher.pool_workers[("fake", "main")]
    wait_for(lambda: worker.paused, message="pool never paused")
    provider = launcher.providers["fake"]

    def broken(label_name, pool):
        raise RuntimeError("fake failure while paused")
    monkeypatch.setattr(provider, "reserve_quota", broken)
    done = zuul.wait_for_request(waiting)
    assert done.state == RequestState.FAILED
    assert done.declined_by == [worker.launcher_id]
    wait_for(lambda: not worker.handlers and not worker.paused)
    monkeypatch.undo()
    zuul.finish(first)
    zuul.finish(zuul.run_job(["small"]))


# Held nodes ------------------------------------------------------------------

HOLD_AGE = """
labels:
  - name: small
max-hold-age: {max_hold_age}
providers:
  - name: fake
    driver: test
    pools:
      - name: main
        labels:
          - name: small
"""


def test_hold_expiration_shorter_than_max_hold_age(launcher_factory, zuul):
    launcher_factory(HOLD_AGE, max_hold_age=3600)
    short, default, text = zuul.run_job(["small", "small", "small"])
    zuul.hold_nodes([short], hold_job="t p j", hold_expiration=1)
    zuul.hold_nodes([default], hold_job="t p j")
    # A string is read as a number of seconds.
    zuul.hold_nodes([text], hold_job="t p j", hold_expiration="1")
    wait_for(lambda: not {short.id, text.id} & set(node_ids(zuul.kazoo)),
             timeout=30, message="expired holds not deleted")
    (kept,) = read_nodes(zuul.kazoo)
    assert kept.id == default.id and kept.state == NodeState.HOLD


def test_hold_expiration_capped_by_max_hold_age(launcher_factory, zuul):
    launcher_factory(HOLD_AGE, max_hold_age=1)
    (node,) = zuul.run_job(["small"])
    zuul.hold_nodes([node], hold_job="t p j", hold_expiration=3600)
    wait_for(lambda: node.id not in node_ids(zuul.kazoo), timeout=30,
             message="max-hold-age did not cap the hold")
    assert not FakeCloud.get("fake").list()


def test_unreadable_hold_expiration_reads_as_none(launcher_factory, zuul):
    launcher_factory(HOLD_AGE, max_hold_age=3600)
    (node,) = zuul.run_job(["small"])
    zuul.hold_nodes([node], hold_job="t p j",
                    hold_expiration="notanumber")
    (held,) = read_nodes(zuul.kazoo)
    assert held.state == NodeState.HOLD and held.hold_expiration == 0


# Leaked instances --------------------------------------------------------------

def test_leaked_instance_whose_delete_fails_is_retried(launcher_factory,
                                                       zuul):
    # node_delete_error: the record is gone while the cloud will not
    # delete the server; the leak cleanup keeps trying until it can.
    launcher = launcher_factory()
    cloud = FakeCloud.get("fake")
    (node,) = zuul.run_job(["small"])
    cloud.fail_deletes = 10 ** 6
    zuul.return_nodes([node])
    store = NodeStore(launcher.services.zk_client)
    wait_for(lambda: cloud.fail_deletes < 10 ** 6)
    # The record goes (an operator removed it, say); the server stays.
    record = store.get_node(node.id, cached=False)
    store.lock_node(record, blocking=True, timeout=10)
    zuul.kazoo.delete("/nodepool/nodes/%s" % node.id, recursive=True)
    failed = cloud.fail_deletes
    wait_for(lambda: cloud.fail_deletes <= failed - 2, timeout=30,
             message="leak cleanup did not retry")
    assert node.external_id in {i.external_id for i in cloud.list()}
    cloud.fail_deletes = 0
    wait_for(lambda: not cloud.list(), timeout=30)


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


BROKEN_AND_HEALTHY = """
labels:
  - name: small
  - name: large
providers:
  - name: broken
    driver: test
    pools:
      - name: main
        labels:
          - name: large
  - name: healthy
    driver: test
    pools:
      - name: main
        labels:
          - name: small
"""


def test_provider_that_cannot_start_fails_only_its_labels(
        launcher_factory, zuul, monkeypatch):
    original = FakeDriver.get_adapter

    def get_adapter(self, provider_config, warm=True):
        if provider_config.name == "broken":
            raise RuntimeError("fake: cannot reach this cloud")
        return original(self, provider_config, warm)
    monkeypatch.setattr(FakeDriver, "get_adapter", get_adapter)
    launcher = launcher_factory(BROKEN_AND_HEALTHY)
    assert sorted(launcher.providers) == ["healthy"]
    done = zuul.wait_for_request(zuul.submit(["large"]))
    assert done.state == RequestState.FAILED
    done, nodes = served_by(zuul, zuul.submit(["small"]))
    assert nodes[0].provider == "healthy"
    zuul.finish(nodes)
