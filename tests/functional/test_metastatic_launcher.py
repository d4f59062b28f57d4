# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The metastatic driver end to end on top of the test driver: a real
ZooKeeper, the launcher in-process, and the Zuul-like client asking for
nodes.  The metastatic provider asks the same launcher's ``fake``
provider for backing nodes through ZooKeeper, as Zuul would."""

import collections
import json
import os
import time

import pytest

from nodepool.zk import paths
from nodepool.zk.models import NodeState, RequestState
from tests.fakes.scanner import FAKE_HOST_KEY
from tests.fakes.test_driver import FakeCloud
from tests.functional.conftest import nodes_of, read_nodes, served_by
from tests.fixtures.waits import wait_for

OWNER = "NodePool:metastatic:meta"

CONFIG = """
labels:
  - name: backing-label
  - name: user-label
providers:
  - name: fake
    driver: test
    launch-retries: {backing_retries}
    pools:
      - name: main
        max-servers: 10
        node-attributes:
          backattr: back
          testattr: backing
        labels:
          - name: backing-label
  - name: meta
    driver: metastatic
    launch-retries: {retries}
    boot-timeout: {boot_timeout}
    pools:
      - name: main
        max-servers: 10
        priority: 1
        host-key-checking: true
        node-attributes:
          metaattr: meta
          testattr: metastatic
        labels:
          - name: user-label
            backing-label: backing-label
            max-parallel-jobs: 2
            grace-time: {grace}
            min-retention-time: {retention}
            max-age: {max_age}
      - name: second
        max-servers: 10
        labels:
          - name: user-label
            backing-label: backing-label
            max-parallel-jobs: 2
            grace-time: {grace}
            min-retention-time: {retention}
            max-age: {max_age}
            host-key-checking: true
"""

DEFAULTS = dict(grace=1, retention=0, max_age="null", boot_timeout=2,
                backing_retries=3)


@pytest.fixture
def start(launcher_factory):
    def start(**params):
        launcher = launcher_factory(CONFIG, **dict(DEFAULTS, **params))
        # Pool "second" yields to "main" (priority 1) only once it sees
        # main registered: before, it may serve a request itself, without
        # main's node-attributes.
        wanted = {("meta", "main"), ("meta", "second"), ("fake", "main")}
        wait_for(lambda: wanted <= {
            (record["provider_name"], record["name"]) for record in (
                p.to_dict() for p in launcher.services.registry.pools())})
        return launcher
    return start


def backing_nodes(zuul, state=None):
    return nodes_of(zuul, state, label="backing-label", provider="fake")


def node(zuul, node_id):
    return {n.id: n for n in read_nodes(zuul.kazoo)}.get(node_id)


def run(zuul, count=1):
    """One request per node for ``user-label``; their accepted nodes."""
    requests = [zuul.submit(["user-label"]) for _ in range(count)]
    return [served_by(zuul, r)[1][0] for r in requests]


def placement(node):
    return node.driver_data["backing_node"], node.slot


def lock_owners(zuul, node_id):
    path = paths.node_lock_path(node_id)
    try:
        names = sorted(zuul.kazoo.get_children(path),
                       key=lambda n: n.rsplit("__", 1)[1])
    except Exception:
        return []
    return [zuul.kazoo.get(path + "/" + n)[0].decode() for n in names]


def drop_lock(zuul, node_id):
    """Remove every lock contender of the node (as if its holder's lock
    had been lost)."""
    path = paths.node_lock_path(node_id)
    for name in zuul.kazoo.get_children(path):
        zuul.kazoo.delete(path + "/" + name)


def released(zuul, backing_id):
    """The backing node is gone, instance and record."""
    return node(zuul, backing_id) is None and not any(
        i.metadata.get("nodepool_node_id") == backing_id
        for i in FakeCloud.get("fake").list())


def test_slots_shared_copied_reused_and_released(start, zuul):
    start()
    served = run(zuul, 3)
    assert len(backing_nodes(zuul, NodeState.IN_USE)) == 2
    # Which launch gets which slot is a race: name the nodes by place,
    # bn1 being the backing node with two of them.
    shared = collections.defaultdict(list)
    for slot_node in served:
        shared[placement(slot_node)[0]].append(slot_node)
    [(bn1_id, pair), (bn2_id, [third])] = sorted(
        shared.items(), key=lambda item: -len(item[1]))
    first, second = sorted(pair, key=placement)
    bn1, bn2 = node(zuul, bn1_id), node(zuul, bn2_id)
    # Two slots per backing node, lowest free slot first.
    assert sorted(placement(n) for n in (first, second, third)) == [
        (bn1.id, 0), (bn1.id, 1), (bn2.id, 0)]
    for slot_node in (first, second, third):
        backing = bn1 if slot_node.driver_data["backing_node"] == bn1.id \
            else bn2
        assert slot_node.provider == "meta"
        assert slot_node.external_id == slot_node.id
        assert slot_node.driver_data["node"] == slot_node.id
        assert slot_node.interface_ip == backing.interface_ip
        assert slot_node.public_ipv4 == backing.public_ipv4
        assert slot_node.private_ipv4 == backing.private_ipv4
        assert (slot_node.cloud, slot_node.region, slot_node.az) == (
            backing.cloud, backing.region, backing.az)
        assert slot_node.python_path == backing.python_path
        assert slot_node.username == backing.username
        # Scanned for the slot (the backing label does not check keys).
        assert backing.host_keys == []
        assert slot_node.host_keys == [FAKE_HOST_KEY]
        assert slot_node.attributes == {
            "backattr": "back", "metaattr": "meta", "testattr": "metastatic"}
        assert slot_node.resources == {"cores": 0, "instances": 1, "ram": 0}
    # The backing nodes are held by the provider.
    for backing in (bn1, bn2):
        data = json.loads(backing.user_data)
        assert data["owner"] == OWNER and data["label"] == "user-label"
        assert data["slots"] == 2 and data["failed"] is False
        assert lock_owners(zuul, backing.id) == [OWNER]
    # Their requests are gone.
    assert not [r for r in zuul.kazoo.get_children("/nodepool/requests")
                if r.startswith("100-")]
    # A freed slot is reused: no third backing node.
    zuul.finish([first])
    wait_for(lambda: node(zuul, first.id) is None)
    [fourth] = run(zuul)
    assert placement(fourth) == placement(first)
    assert len(backing_nodes(zuul)) == 2
    # Empty backing nodes go once their grace time has passed.
    zuul.finish([second, fourth])
    wait_for(lambda: released(zuul, bn1.id), timeout=30)
    assert node(zuul, bn2.id).state == NodeState.IN_USE
    zuul.finish([third])
    wait_for(lambda: released(zuul, bn2.id), timeout=30)
    wait_for(lambda: not read_nodes(zuul.kazoo))


def test_two_requests_race_for_the_last_slot(start, zuul):
    start()
    [first] = run(zuul)
    # Both pools take one of these at once; one slot is left on bn1.
    requests = [zuul.submit(["user-label"]) for _ in range(2)]
    racers = [served_by(zuul, r)[1][0] for r in requests]
    places = [placement(n) for n in [first] + racers]
    assert len(set(places)) == 3, places
    per_backing = {}
    for backing_id, _ in places:
        per_backing[backing_id] = per_backing.get(backing_id, 0) + 1
    assert sorted(per_backing.values()) == [1, 2]
    assert per_backing[placement(first)[0]] == 2
    zuul.finish([first] + racers)
    wait_for(lambda: not read_nodes(zuul.kazoo), timeout=30)


def test_many_requests_never_share_a_slot(start, zuul):
    start(grace=60)
    requests = [zuul.submit(["user-label"]) for _ in range(7)]
    nodes = [served_by(zuul, r)[1][0] for r in requests]
    places = [placement(n) for n in nodes]
    assert len(set(places)) == 7
    assert len(backing_nodes(zuul, NodeState.IN_USE)) == 4
    zuul.finish(nodes)


def test_backing_node_dies_while_slots_are_in_use(start, zuul):
    start(grace=60)
    [busy] = run(zuul)
    # A second slot node is fulfilled but not yet accepted by Zuul.
    waiting = zuul.wait_for_request(zuul.submit(["user-label"]))
    assert waiting.state == RequestState.FULFILLED
    [waiting_id] = waiting.nodes
    dead_id = busy.driver_data["backing_node"]
    assert node(zuul, waiting_id).driver_data["backing_node"] == dead_id
    # The backing node dies: the provider's hold on it (its lock) is
    # lost, and an unlocked in-use node is garbage the backing provider
    # deletes.
    drop_lock(zuul, dead_id)
    # The ready slot node is taken back and replaced elsewhere (Zuul would
    # ask again); the one in use stays with its job.
    wait_for(lambda: node(zuul, waiting_id) is None, timeout=30)
    assert node(zuul, busy.id).state == NodeState.IN_USE
    [fresh] = run(zuul)
    assert fresh.driver_data["backing_node"] != dead_id
    zuul.finish([busy])
    wait_for(lambda: node(zuul, busy.id) is None)
    # Nothing is left on the dead host; the healthy one carries on.
    assert [n.id for n in nodes_of(zuul, provider="meta")] == [fresh.id]
    [another] = run(zuul)
    assert placement(another) == (fresh.driver_data["backing_node"], 1)
    zuul.finish([fresh, another])


def test_restart_recovers_slots_from_zookeeper(start, zuul):
    first_launcher = start(grace=60)
    [kept] = run(zuul)
    bn1 = kept.driver_data["backing_node"]
    first_launcher.stop()
    first_launcher.join()
    start(grace=1)
    # bn1's free slot is reused, its taken one is known to be taken.
    # The two requests may be served in either order.
    pair = run(zuul, 2)
    [second] = [n for n in pair if placement(n) == (bn1, 1)]
    [third] = [n for n in pair if n is not second]
    bn2 = third.driver_data["backing_node"]
    assert bn2 != bn1 and third.slot == 0
    # A slot freed after the restart counts: bn1 empties and goes.
    zuul.finish([kept, second])
    wait_for(lambda: released(zuul, bn1), timeout=30)
    zuul.finish([third])
    wait_for(lambda: not read_nodes(zuul.kazoo), timeout=30)


def test_failed_host_key_scan_fails_the_backing_node(start, zuul):
    cloud = FakeCloud.get("fake")
    # Backing nodes get an address where nothing answers...
    cloud.address = ("127.0.0.3", 29)
    start(grace=60)
    request = zuul.submit(["user-label"])
    [bn1] = wait_for(lambda: backing_nodes(zuul, NodeState.IN_USE))
    # ... but only the first one.
    cloud.address = None
    done, [slot_node] = served_by(zuul, request, timeout=60)
    assert slot_node.driver_data["backing_node"] != bn1.id
    # bn1 is failed for good and released at once, grace time or not.
    wait_for(lambda: released(zuul, bn1.id), timeout=30)
    zuul.finish([slot_node])


def test_failed_backing_request_fails_the_launch(start, zuul):
    cloud = FakeCloud.get("fake")
    cloud.fail_creates = 1000
    start(retries=2, backing_retries=1)
    request = zuul.submit(["user-label"])
    done = zuul.wait_for_request(request, timeout=60)
    assert done.state == RequestState.FAILED
    # Both pools try (the first declines after its two attempts), each
    # attempt with a backing request of its own; nothing is left.
    assert cloud.create_calls == 4
    wait_for(lambda: not nodes_of(zuul, provider="meta"), timeout=30)
    wait_for(lambda: not [r for r in zuul.kazoo.get_children(
        "/nodepool/requests") if r.startswith("100-")], timeout=30)


def test_max_age_stops_new_slots(start, zuul):
    start(max_age=2, grace=60)
    [old] = run(zuul)
    bn1 = old.driver_data["backing_node"]
    launched = json.loads(node(zuul, bn1).user_data)["launched"]
    wait_for(lambda: time.time() - launched > 2.5, timeout=10)
    [young] = run(zuul)
    assert young.driver_data["backing_node"] != bn1
    # Past max-age and empty: released without waiting for grace-time.
    zuul.finish([old])
    wait_for(lambda: released(zuul, bn1), timeout=30)
    zuul.finish([young])


def test_min_retention_keeps_an_idle_backing_node(start, zuul):
    start(grace=0, retention=4)
    [only] = run(zuul)
    bn1 = only.driver_data["backing_node"]
    launched = json.loads(node(zuul, bn1).user_data)["launched"]
    zuul.finish([only])
    wait_for(lambda: node(zuul, only.id) is None)
    gone_at = []

    def gone():
        backing = node(zuul, bn1)  # read once: it may go between reads
        if backing is None or backing.state != NodeState.IN_USE:
            gone_at.append(time.time())
            return True
        return False
    wait_for(gone, timeout=30, interval=0.05)
    # Kept while younger than min-retention-time though idle.
    assert gone_at[0] >= launched + 4


def test_backing_node_of_a_removed_label_goes_once_empty(start, zuul):
    first_launcher = start(grace=60)
    [only] = run(zuul)
    bn1 = only.driver_data["backing_node"]
    first_launcher.stop()
    first_launcher.join()
    # The label of the backing node is no longer configured when the
    # launcher comes back (user_data says what the book is rebuilt from).
    record = node(zuul, bn1)
    data = json.loads(record.user_data)
    data["label"] = "removed-label"
    record.user_data = json.dumps(data)
    zuul.kazoo.set(paths.node_path(bn1), record.serialize())
    start(grace=60)
    # Kept while its slot is in use, released right after (no grace).
    [other] = run(zuul)
    assert other.driver_data["backing_node"] != bn1
    assert node(zuul, bn1).state == NodeState.IN_USE
    zuul.finish([only])
    wait_for(lambda: released(zuul, bn1), timeout=30)
    zuul.finish([other])


def test_reconfiguration_while_a_backing_node_is_awaited(start, zuul):
    launcher = start(grace=60)
    cloud = FakeCloud.get("fake")
    cloud.paused.set()   # the backing node is not ready for a while
    first = zuul.submit(["user-label"])
    wait_for(lambda: backing_nodes(zuul) and nodes_of(zuul, provider="meta"))
    old = launcher.providers["meta"]
    # A change of the metastatic provider restarts it; the old one drains.
    path = launcher.watcher.path
    with open(path) as f:
        text = f.read().replace("metaattr: meta", "metaattr: changed")
    with open(path, "w") as f:
        f.write(text)
    os.utime(path, (time.time() + 5, time.time() + 5))
    wait_for(lambda: launcher.providers.get("meta") not in (None, old),
             timeout=30)
    second = zuul.submit(["user-label"])
    wait_for(lambda: len(nodes_of(zuul, provider="meta")) == 2)
    cloud.paused.clear()
    nodes = [served_by(zuul, r, timeout=60)[1][0] for r in (first, second)]
    # The new provider's node waited on the old one's backing request
    # rather than asking for a backing node of its own.
    assert len(backing_nodes(zuul)) == 1
    assert sorted(placement(n) for n in nodes) == [
        (backing_nodes(zuul)[0].id, 0), (backing_nodes(zuul)[0].id, 1)]
    assert nodes[1].attributes["metaattr"] == "changed"
    zuul.finish(nodes)
