# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
import json
import logging
import re

import pytest
from kazoo.exceptions import NoNodeError
from kazoo.recipe.lock import Lock

from nodepool.exceptions import LockError, TimeoutException
from nodepool.zk import paths
from nodepool.zk.cache import NodeCache
from nodepool.zk.models import Node, NodeState
from nodepool.zk.nodes import NodeStore
from tests.fakes.record_cache import StaticCache
from tests.fixtures.waits import wait_for


def make_node(state=NodeState.BUILDING, labels=("small",), provider="p1",
              **attrs):
    node = Node()
    node.state = state
    node.provider = provider
    node.pool = "main"
    node.type = list(labels)
    for key, value in attrs.items():
        setattr(node, key, value)
    return node


@pytest.fixture
def store(zk_client):
    return NodeStore(zk_client)


@pytest.fixture
def other_store(zk_factory):
    """A second connection, playing Zuul or another launcher."""
    return NodeStore(zk_factory())


def test_create_read_update_delete(store, zk_client):
    first = make_node()
    store.store_node(first)
    second = make_node()
    store.store_node(second)
    assert first.id == "0000000000"
    assert re.match(r"^\d{10}$", second.id) and second.id > first.id
    assert first.stat is not None
    assert first.created_time == first.state_time

    read = store.get_node(first.id)
    assert read == first
    assert read.stat.mzxid == first.stat.mzxid
    assert store.get_node_ids() == [first.id, second.id]

    read.state = NodeState.READY
    read.external_id = {"instance": "i-123"}
    store.store_node(read)
    again = store.get_node(first.id, cached=False)
    assert again.state == NodeState.READY
    assert again.external_id == {"instance": "i-123"}
    assert again.stat.version == 1

    store.delete_node(again)
    assert store.get_node(first.id) is None
    assert zk_client.kazoo.exists("/nodepool/nodes/" + first.id) is None
    assert [n.id for n in store.iter_nodes()] == [second.id]
    # Deleting twice is harmless.
    store.delete_node(again)
    store.delete_raw_node(first.id)


def test_store_vanished_node_raises(store):
    node = make_node()
    store.store_node(node)
    store.delete_raw_node(node.id)
    with pytest.raises(NoNodeError):
        store.store_node(node)


def test_exact_json_on_the_wire(store, zk_client):
    node = make_node(
        state=NodeState.READY, labels=("small", "fedora"), cloud="mycloud",
        allocated_to="100-0000000003", az="az1", region="r1",
        public_ipv4="203.0.113.5", private_ipv4="10.0.0.5", public_ipv6="",
        host_id="hv1", interface_ip="203.0.113.5", connection_port=2222,
        connection_type="ssh", shell_type="bash",
        image_id="/nodepool/images/fedora/builds/ab/providers/p1/images/"
                 "0000000001",
        launcher="host-PoolWorker.p1-main-abc", external_id="srv-1",
        host_keys=["ssh-ed25519 AAAA"], username="zuul", resources={
            "cores": 2, "instances": 1, "ram": 2048},
        attributes={"key": "value"}, tenant_name="tenant",
        requestor="zuul01", node_properties={"spot": False})
    node.state_time = 1700000000.5
    node.created_time = 1700000000.0
    store.store_node(node)
    raw, _ = zk_client.kazoo.get("/nodepool/nodes/" + node.id)
    assert json.loads(raw.decode("utf-8")) == {
        "state": "ready", "state_time": 1700000000.5, "cloud": "mycloud",
        "provider": "p1", "pool": "main", "type": ["small", "fedora"],
        "allocated_to": "100-0000000003", "az": "az1", "region": "r1",
        "public_ipv4": "203.0.113.5", "private_ipv4": "10.0.0.5",
        "public_ipv6": "", "host_id": "hv1", "interface_ip": "203.0.113.5",
        "connection_port": 2222, "ssh_port": 2222, "connection_type": "ssh",
        "shell_type": "bash",
        "image_id": "/nodepool/images/fedora/builds/ab/providers/p1/images/"
                    "0000000001",
        "launcher": "host-PoolWorker.p1-main-abc",
        "created_time": 1700000000.0, "external_id": "srv-1",
        "hostname": None, "comment": None, "user_data": None,
        "hold_job": None, "host_keys": ["ssh-ed25519 AAAA"],
        "username": "zuul", "hold_expiration": None,
        "resources": {"cores": 2, "instances": 1, "ram": 2048},
        "slot": None, "attributes": {"key": "value"}, "python_path": None,
        "tenant_name": "tenant", "driver_data": None, "requestor": "zuul01",
        "node_properties": {"spot": False},
    }


def test_reads_record_written_by_another_implementation(store, zk_client):
    # A minimal record as an older writer may leave it.
    zk_client.kazoo.create("/nodepool/nodes/0000000042", json.dumps({
        "state": "hold", "type": "small", "ssh_port": 2022,
        "hold_expiration": "soon"}).encode(), makepath=True)
    node = store.get_node("0000000042")
    assert node.state == NodeState.HOLD
    assert node.type == ["small"]
    assert node.connection_port == 2022
    assert node.hold_expiration == 0
    assert node.username == "zuul"


def test_lock_rereads_fresh_data(store, other_store):
    node = make_node(state=NodeState.READY)
    store.store_node(node)
    stale = store.get_node(node.id)
    theirs = other_store.get_node(node.id)
    other_store.lock_node(theirs)
    theirs.state = NodeState.HOLD
    theirs.comment = "held for debugging"
    other_store.store_node(theirs)
    with pytest.raises(LockError):
        store.lock_node(stale, blocking=False)
    assert stale.lock is None
    other_store.unlock_node(theirs)
    assert theirs.lock is None

    store.lock_node(stale)
    assert stale.is_locked
    assert stale.state == NodeState.HOLD
    assert stale.comment == "held for debugging"
    assert stale.stat.mzxid == theirs.stat.mzxid
    assert store.node_lock_contenders(node.id) == [stale.lock.node]
    store.unlock_node(stale)
    assert not stale.is_locked
    assert store.node_lock_contenders(node.id) == []
    with pytest.raises(LockError):
        store.unlock_node(stale)


def test_lock_timeout(store, other_store):
    node = make_node()
    store.store_node(node)
    theirs = other_store.get_node(node.id)
    other_store.lock_node(theirs)
    with pytest.raises(TimeoutException):
        store.lock_node(node, timeout=0.5)
    assert node.lock is None
    assert store.node_lock_contenders(node.id) == [theirs.lock.node]
    other_store.unlock_node(theirs)


def test_lock_vanished_node(store, zk_client):
    node = make_node()
    store.store_node(node)
    copy = store.get_node(node.id)
    store.delete_raw_node(node.id)
    with pytest.raises(LockError):
        store.lock_node(copy)
    assert copy.lock is None
    # The lock attempt must not leave an empty node znode behind.
    assert zk_client.kazoo.exists("/nodepool/nodes/" + node.id) is None
    assert store.empty_node_ids() == []


def test_lock_vanished_node_never_recreates_it(store, zk_client):
    """Readers never see the deleted node come back, not even briefly."""
    node = make_node()
    store.store_node(node)
    copy = store.get_node(node.id)
    store.delete_raw_node(node.id)
    # The parent's child version counts every child created or deleted.
    _, before = zk_client.kazoo.get("/nodepool/nodes")
    with pytest.raises(LockError, match="was deleted"):
        store.lock_node(copy, blocking=False)
    with pytest.raises(LockError, match="was deleted"):
        store.lock_node(copy, timeout=1)
    _, after = zk_client.kazoo.get("/nodepool/nodes")
    assert after.cversion == before.cversion


def test_lock_by_zuul_with_plain_kazoo(store, zk_factory):
    node = make_node(state=NodeState.READY)
    store.store_node(node)
    zuul = zk_factory()
    zuul_lock = Lock(zuul.kazoo, "/nodepool/nodes/%s/lock" % node.id)
    assert zuul_lock.acquire(blocking=False)
    with pytest.raises(LockError):
        store.lock_node(node, blocking=False)
    zuul_lock.release()
    store.lock_node(node, blocking=False)
    assert not zuul_lock.acquire(blocking=False)
    store.unlock_node(node)


def test_delete_removes_lock_children(store, other_store, zk_client):
    node = make_node(state=NodeState.USED)
    store.store_node(node)
    store.lock_node(node)
    # A stale non-ephemeral contender, e.g. from a consumer that crashed.
    zk_client.kazoo.create("/nodepool/nodes/%s/lock/%s__lock__9999999999"
                           % (node.id, "0" * 32))
    assert len(store.node_lock_contenders(node.id)) == 2
    store.delete_node(node)
    assert zk_client.kazoo.exists("/nodepool/nodes/" + node.id) is None
    assert other_store.get_node(node.id) is None
    # Unlocking a node deleted together with its lock must not fail.
    store.unlock_node(node)


class TombstoneOnlyStore(NodeStore):
    """Writes the tombstone but only notes the removal it would make."""

    def __init__(self, zk_client):
        super().__init__(zk_client)
        self.removed = []

    def delete_raw_node(self, node_id):
        self.removed.append(node_id)


def test_delete_writes_tombstone_first(zk_client):
    store = TombstoneOnlyStore(zk_client)
    removed = store.removed
    node = make_node(state=NodeState.USED)
    store.store_node(node)
    store.delete_node(node)
    raw, _ = zk_client.kazoo.get("/nodepool/nodes/" + node.id)
    assert json.loads(raw)["state"] == "deleted"
    assert removed == [node.id]


def test_invalid_payload_tolerated(store, zk_client, caplog):
    good = make_node()
    store.store_node(good)
    kz = zk_client.kazoo
    kz.create("/nodepool/nodes/0000000100", b"{not json")
    kz.create("/nodepool/nodes/0000000101", b'{"state": "bogus"}')
    with caplog.at_level(logging.WARNING, logger="nodepool.zk.nodes"):
        assert store.get_node("0000000100") is None
        assert store.get_node("0000000101") is None
        assert [n.id for n in store.iter_nodes(cached=False)] == [good.id]
    assert "0000000100" in caplog.text and "0000000101" in caplog.text
    with pytest.raises(LockError):
        store.lock_node(Node("0000000100"), blocking=False)
    assert store.node_lock_contenders("0000000100") == []


def test_empty_nodes_listed(store, zk_client):
    node = make_node()
    store.store_node(node)
    zk_client.kazoo.create("/nodepool/nodes/0000000200")
    # An empty node left behind by a lock directory with a live contender.
    lock = Lock(zk_client.kazoo, "/nodepool/nodes/0000000201/lock")
    assert lock.acquire(blocking=False)
    assert store.empty_node_ids() == ["0000000200", "0000000201"]
    assert store.get_node("0000000200") is None
    assert [n.id for n in store.iter_nodes(cached=False)] == [node.id]
    store.delete_raw_node("0000000200")
    store.delete_raw_node("0000000201")
    assert store.empty_node_ids() == []
    assert store.get_node_ids() == [node.id]


def test_empty_nodes_found_through_the_cache(zk_client):
    """With a ready cache, only the znodes it saw without data are read
    again, not every node (a 10,000-node tree was read in full on every
    cleanup pass)."""
    cache = NodeCache(zk_client).start()
    try:
        assert cache.ensure_ready(30)
        store = NodeStore(zk_client, cache=cache)
        nodes = [make_node() for _ in range(3)]
        for node in nodes:
            store.store_node(node)
        zk_client.kazoo.create("/nodepool/nodes/0000000300")
        zk_client.kazoo.create("/nodepool/nodes/0000000301", b"{bad")
        wait_for(lambda: cache.keys_without_record() == [("0000000300",)]
                 and cache.invalid())
        assert store.empty_node_ids() == ["0000000300"]
        # A candidate that got data since is confirmed not empty.
        zk_client.kazoo.set("/nodepool/nodes/0000000300", b"{}")
        assert store.empty_node_ids() == []
    finally:
        cache.stop()


def test_get_ready_nodes_of_types(store):
    a = make_node(state=NodeState.READY, labels=("small",))
    b = make_node(state=NodeState.READY, labels=("small", "large"))
    c = make_node(state=NodeState.READY, labels=("large",),
                  allocated_to="100-0000000000")
    d = make_node(state=NodeState.BUILDING, labels=("small",))
    e = make_node(state=NodeState.READY, labels=("other",))
    for node in (a, b, c, d, e):
        store.store_node(node)
    ready = store.get_ready_nodes_of_types(["small", "large", "missing"],
                                           cached=False)
    assert {label: [n.id for n in nodes]
            for label, nodes in ready.items()} == {
        "small": [a.id, b.id], "large": [b.id]}


def test_reads_through_cache(zk_client):
    plain = NodeStore(zk_client)
    node = make_node()
    plain.store_node(node)
    cached_copy = make_node(state=NodeState.READY)
    cached_copy.id = node.id
    cache = StaticCache([cached_copy])
    store = NodeStore(zk_client, cache=cache)
    assert store.get_node(node.id) is cached_copy
    assert store.get_node(node.id, cached=False).state == NodeState.BUILDING
    assert list(store.iter_nodes()) == [cached_copy]
    assert [n.state for n in store.iter_nodes(cached=False)] == [
        NodeState.BUILDING]
    # A cache miss falls back to ZooKeeper.
    cache.records.clear()
    assert store.get_node(node.id).state == NodeState.BUILDING
    assert store.get_ready_nodes_of_types(["small"]) == {}


def test_ready_nodes_of_types_multilabel(zk_client):
    store = NodeStore(zk_client)
    multi = make_node(state=NodeState.READY, labels=("label1", "label2"))
    single = make_node(state=NodeState.READY, labels=("label2",))
    held = make_node(state=NodeState.HOLD, labels=("label1", "label2"))
    for node in (multi, single, held):
        store.store_node(node)
    ready = store.get_ready_nodes_of_types(["label1"], cached=False)
    assert {k: [n.id for n in v] for k, v in ready.items()} == {
        "label1": [multi.id]}
    ready = store.get_ready_nodes_of_types(["label1", "label2"],
                                           cached=False)
    assert {k: [n.id for n in v] for k, v in ready.items()} == {
        "label1": [multi.id], "label2": [multi.id, single.id]}


def test_connection_port_default_and_custom_on_the_wire(zk_client):
    store = NodeStore(zk_client)
    default = make_node(state=NodeState.READY)
    custom = make_node(state=NodeState.READY, connection_port=2222)
    for node in (default, custom):
        store.store_node(node)
    for node, port in ((default, 22), (custom, 2222)):
        data = json.loads(zk_client.kazoo.get(
            paths.node_path(node.id))[0])
        assert (data["connection_port"], data["ssh_port"]) == (port, port)
        assert "id" not in data
        assert store.get_node(node.id, cached=False).connection_port == port
