# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The node usage index: on its own, and kept by the node cache against a
real ZooKeeper (another client's writes, our write-through, deletions,
damaged records, a resync after the session was lost)."""

import collections
import json
import threading
import time
from types import SimpleNamespace


from nodepool.zk.cache import NodeCache
from nodepool.zk.models import Node, NodeState
from nodepool.zk.nodes import NodeStore
from nodepool.zk.usage import NodeUsageIndex, UsageGroup
from tests.fixtures import zkserver
from tests.fixtures.waits import wait_for

SMALL = {"cores": 2, "instances": 1, "ram": 2048}
LARGE = {"cores": 8, "instances": 1, "ram": 8192}


def node(node_id, provider="p1", pool="main", labels=("small",),
         resources=None):
    return SimpleNamespace(id=node_id, provider=provider, pool=pool,
                           type=list(labels), resources=resources)


def test_groups_by_pool_and_what_the_nodes_use():
    index = NodeUsageIndex()
    index.update("1", node("1", resources=SMALL))
    index.update("2", node("2", resources=dict(SMALL), labels=("other",)))
    index.update("3", node("3", resources=LARGE))
    index.update("4", node("4", pool="second", resources=SMALL))
    index.update("5", node("5"))
    index.update("6", node("6", provider="p2", resources=SMALL))
    assert index.groups("p1") == [
        UsageGroup("main", SMALL, ("small",), 2),
        UsageGroup("main", LARGE, ("small",), 1),
        UsageGroup("second", SMALL, ("small",), 1),
        UsageGroup("main", None, ("small",), 1)]
    assert index.groups("p2") == [UsageGroup("main", SMALL, ("small",), 1)]
    assert index.groups("p3") == []


def test_a_node_moves_between_groups_and_leaves():
    index = NodeUsageIndex()
    n = node("1")
    index.update("1", n)
    index.update("1", n)  # unchanged: still counted once
    assert index.groups("p1") == [UsageGroup("main", None, ("small",), 1)]
    n.resources = dict(LARGE)
    index.update("1", n)
    assert index.groups("p1") == [UsageGroup("main", LARGE, ("small",), 1)]
    # The index keeps its own copy: a later change counts at its update.
    n.resources["cores"] = 16
    assert index.groups("p1")[0].resources["cores"] == 8
    n.provider = "p2"
    index.update("1", n)
    assert index.groups("p1") == []
    assert index.groups("p2")[0].resources["cores"] == 16
    index.update("1", None)
    index.update("1", None)
    index.update("unknown", None)
    assert index.groups("p2") == []


def test_resources_that_are_not_numbers_keep_their_own_group():
    index = NodeUsageIndex()
    bad = {"cores": [1], "instances": 1}
    index.update("1", node("1", resources=bad))
    index.update("2", node("2", resources=dict(bad)))
    assert [g.count for g in index.groups("p1")] == [1, 1]
    changed = node("1", resources={"cores": [2], "instances": 1})
    index.update("1", changed)
    assert {g.resources["cores"][0] for g in index.groups("p1")} == {1, 2}


def test_concurrent_updates_keep_counts_right():
    index = NodeUsageIndex()

    def churn(offset):
        for i in range(300):
            node_id = "%d-%d" % (offset, i)
            index.update(node_id, node(node_id, resources=SMALL))
            if i % 3:
                index.update(node_id, None)
    threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert index.groups("p1") == [
        UsageGroup("main", SMALL, ("small",), 4 * 100)]


# Kept by the node cache ---------------------------------------------------

def direct_usage(cache, provider="fake"):
    """The usage computed from the cached nodes one by one."""
    return collections.Counter(
        (n.pool, json.dumps(n.resources, sort_keys=True),
         () if n.resources else tuple(n.type))
        for n in cache.values() if n.provider == provider)


def indexed_usage(cache, provider="fake"):
    return collections.Counter({
        (g.pool, json.dumps(g.resources, sort_keys=True),
         () if g.resources else g.labels): g.count
        for g in cache.usage(provider)})


def index_matches(cache, provider="fake"):
    return indexed_usage(cache, provider) == direct_usage(cache, provider)


def node_json(resources=None, pool="main", state="ready"):
    return json.dumps({"state": state, "state_time": time.time(),
                       "type": ["label1"], "provider": "fake", "pool": pool,
                       "resources": resources}).encode()


def make_node(kazoo, **kwargs):
    path = kazoo.create("/nodepool/nodes/", node_json(**kwargs),
                        sequence=True, makepath=True)
    return path.rsplit("/", 1)[1]


def test_index_follows_other_clients_writes(node_cache, writer):
    ids = [make_node(writer, resources=SMALL) for _ in range(3)]
    ids.append(make_node(writer))
    ids.append(make_node(writer, resources=SMALL, pool="second"))
    wait_for(lambda: len(node_cache.values()) == 5)
    assert indexed_usage(node_cache) == collections.Counter({
        ("main", json.dumps(SMALL, sort_keys=True), ()): 3,
        ("main", "null", ("label1",)): 1,
        ("second", json.dumps(SMALL, sort_keys=True), ()): 1})
    writer.set("/nodepool/nodes/" + ids[3], node_json(resources=LARGE))
    writer.delete("/nodepool/nodes/" + ids[0])
    wait_for(lambda: node_cache.get(ids[3]).resources == LARGE
             and node_cache.get(ids[0]) is None)
    assert index_matches(node_cache)
    # A damaged record is no node: it leaves the index.
    writer.set("/nodepool/nodes/" + ids[1], b"{not json")
    wait_for(lambda: node_cache.get(ids[1]) is None)
    assert index_matches(node_cache)
    assert sum(indexed_usage(node_cache).values()) == 3


def test_index_follows_our_write_through(node_cache, zk_client):
    # Watch events wait until the gate opens: what the index shows
    # meanwhile comes from the write-through alone.
    gate = threading.Event()
    node_cache.add_listener(lambda *args: gate.wait(30))
    store = NodeStore(zk_client, cache=node_cache)
    new = Node()
    try:
        new.state = NodeState.BUILDING
        new.provider, new.pool, new.type = "fake", "main", ["label1"]
        store.store_node(new)
        # Counted the moment the record exists, before its watch event.
        assert indexed_usage(node_cache) == collections.Counter(
            {("main", "null", ("label1",)): 1})
        new.resources = dict(LARGE)
        store.store_node(new)
        assert indexed_usage(node_cache) == collections.Counter(
            {("main", json.dumps(LARGE, sort_keys=True), ()): 1})
        store.delete_node(new)
        assert indexed_usage(node_cache) == collections.Counter()
    finally:
        gate.set()
    # Its late events do not bring it back.
    marker = Node()
    marker.state = NodeState.READY
    marker.provider, marker.pool = "other", "main"
    store.store_node(marker)
    wait_for(lambda: marker.stat is not None and node_cache.get(marker.id))
    assert indexed_usage(node_cache) == collections.Counter()
    assert indexed_usage(node_cache, "other") == collections.Counter(
        {("main", "null", ()): 1})


def test_index_right_after_resync(zk_client, writer):
    keep = make_node(writer, resources=SMALL)
    gone = make_node(writer, resources=LARGE)
    cache = NodeCache(zk_client).start()
    try:
        assert cache.ensure_ready(30)
        assert index_matches(cache) and len(cache.usage("fake")) == 2
        lost = threading.Event()
        zk_client.add_session_listener(lost.set)
        zkserver.expire_session(zk_client.kazoo)
        # Changed while the cache's client is between sessions.
        writer.delete("/nodepool/nodes/" + gone)
        writer.set("/nodepool/nodes/" + keep, node_json(resources=LARGE))
        new = make_node(writer)
        assert lost.wait(30)
        wait_for(lambda: cache.ready and cache.get(new)
                 and cache.get(gone) is None
                 and cache.get(keep).resources == LARGE)
        assert index_matches(cache)
        assert indexed_usage(cache) == collections.Counter({
            ("main", json.dumps(LARGE, sort_keys=True), ()): 1,
            ("main", "null", ("label1",)): 1})
    finally:
        cache.stop()
