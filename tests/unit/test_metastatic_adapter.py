# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The metastatic driver's pieces: its config, the slot book, and the
adapter against a real ZooKeeper with a hand-played backing provider and
a clock the test moves (grace-time, min-retention-time, max-age)."""

import json
import logging
import textwrap

import pytest

from nodepool import exceptions
from nodepool.config.loader import load_config
from nodepool.driver.base import ProviderServices
from nodepool.driver.metastatic.adapter import MetastaticAdapter
from nodepool.driver.metastatic.slots import (
    BackingRecord, SlotBook)
from nodepool.zk import paths
from nodepool.zk.models import Node, NodeState, RequestState
from nodepool.zk.nodes import NodeStore
from nodepool.zk.requests import RequestStore
from tests.fixtures.waits import wait_for

LOG = logging.getLogger("test")
OWNER = "NodePool:metastatic:meta"

CONFIG = """
labels:
  - name: user-label
  - name: other-label
providers:
  - name: meta
    driver: metastatic
    pools:
      - name: main
        host-key-checking: true
        node-attributes:
          pool: yes
          shared: pool
        labels:
          - name: user-label
            backing-label: big
            max-parallel-jobs: 2
            grace-time: 10
            min-retention-time: 20
            max-age: 100
          - name: other-label
            backing-label: small
            host-key-checking: false
"""


def provider_config(tmp_path, text=CONFIG):
    path = tmp_path / "nodepool.yaml"
    path.write_text(textwrap.dedent(text))
    return load_config(str(path)).providers["meta"]


# Config ---------------------------------------------------------------------

def test_config_defaults_and_host_key_checking(tmp_path):
    provider = provider_config(tmp_path)
    assert (provider.boot_timeout, provider.launch_timeout,
            provider.launch_retries) == (120, 3600, 3)
    pool = provider.pools["main"]
    assert pool.host_key_checking is True
    user, other = pool.labels["user-label"], pool.labels["other-label"]
    assert (user.backing_label, user.max_parallel_jobs, user.grace_time,
            user.min_retention_time, user.max_age) == ("big", 2, 10, 20, 100)
    assert user.host_key_checking is True   # from the pool
    assert (other.max_parallel_jobs, other.grace_time,
            other.min_retention_time, other.max_age) == (1, 60, 0, None)
    assert other.host_key_checking is False
    assert provider.labels == {"user-label": user, "other-label": other}


def test_pool_host_key_checking_defaults_off(tmp_path):
    provider = provider_config(tmp_path, CONFIG.replace(
        "        host-key-checking: true\n", ""))
    assert provider.pools["main"].labels["user-label"].host_key_checking \
        is False


# Slot book ------------------------------------------------------------------

def record(label="user-label", slots=2, **kw):
    return BackingRecord(label_name=label, slot_count=slots, launched=0.0,
                         last_used=0.0, **kw)


def test_book_fills_lowest_free_slot_and_skips_failed_and_old():
    book = SlotBook()
    failed, full, old, usable = (record(failed=True), record(),
                                 record(node_id="3"), record())
    for r in (failed, full, old, usable):
        book.add(r)
    full.allocated = ["a", "b"]
    assert book.usable("user-label", lambda r: r is old) is usable
    assert book.usable("other-label") is None
    assert book.assign(usable, "n1") == 0
    assert book.assign(usable, "n2") == 1
    with pytest.raises(ValueError):
        book.assign(usable, "n3")
    assert book.holding("n2") == (usable, 1)
    assert book.free("n1", 42.0) is usable
    assert usable.allocated == [None, "n2"] and usable.last_used == 42.0
    assert book.free("nobody", 43.0) is None
    assert book.assign(usable, "n3") == 0
    book.drop(usable)
    assert book.holding("n3") == (None, None)


@pytest.mark.parametrize("raw", [
    None, 7, "not json", "[]",
    json.dumps({"owner": "someone else", "label": "x", "slots": 1,
                "launched": 1.0}),
    json.dumps({"owner": OWNER, "label": "x", "slots": 0, "launched": 1.0}),
    json.dumps({"owner": OWNER, "label": "x", "slots": True,
                "launched": 1.0}),
    json.dumps({"owner": OWNER, "label": 5, "slots": 1, "launched": 1.0}),
    json.dumps({"owner": OWNER, "label": "x", "slots": 1}),
])
def test_user_data_that_is_not_ours_is_ignored(raw):
    assert BackingRecord.from_user_data(raw, OWNER, "1", 5.0) is None


def test_user_data_round_trip():
    original = record(slots=3, failed=True, node_id="7")
    original.launched = 12.5
    again = BackingRecord.from_user_data(original.user_data(OWNER), OWNER,
                                         "7", 99.0)
    assert (again.label_name, again.slot_count, again.failed,
            again.launched, again.last_used, again.node_id) == (
        "user-label", 3, True, 12.5, 99.0, "7")
    assert again.allocated == [None, None, None]


# Adapter against ZooKeeper ----------------------------------------------------

class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


class Bed:
    """A metastatic adapter, its stores, and a backing provider played by
    hand (fulfilling the adapter's requests with ready nodes)."""

    def __init__(self, tmp_path, zk_client, text=CONFIG):
        self.nodes = NodeStore(zk_client)
        self.requests = RequestStore(zk_client)
        self.services = ProviderServices(zk_client, self.nodes,
                                         self.requests, None)
        self.config = provider_config(tmp_path, text)
        self.clock = Clock()
        self.adapter = self.new_adapter()
        self.ids = {}

    def nid(self, name):
        """The id of the slot node called ``name`` in the test (a
        ``building`` record of the provider, stored on first use); a real
        node id stays as it is."""
        if name.isdigit():
            return name
        if name not in self.ids:
            node = Node()
            node.state = NodeState.BUILDING
            node.provider = "meta"
            node.pool = "main"
            self.nodes.store_node(node)
            self.ids[name] = node.id
        return self.ids[name]

    def new_adapter(self, wait=True):
        """Another adapter of the provider (sharing the book with the
        running ones, as a reconfigured provider's does)."""
        adapter = MetastaticAdapter(self.config, self.services,
                                    clock=self.clock)
        if wait:
            wait_for(adapter.ready)
        return adapter

    def restart(self, wait=True):
        """The launcher restarted: the adapter stops, a new one starts and
        rebuilds the book from ZooKeeper."""
        self.adapter.stop()
        self.adapter = self.new_adapter(wait)
        return self.adapter

    def label(self, name="user-label"):
        return self.config.pools["main"].labels[name]

    def create(self, name, label="user-label"):
        node_id = self.nid(name)
        metadata = {"nodepool_node_id": node_id,
                    "nodepool_pool_name": "main",
                    "nodepool_provider_name": "meta"}
        return self.adapter.get_create_state_machine(
            "np" + node_id, self.label(label), None, metadata, None, None,
            LOG)

    def pending_requests(self):
        return [r for r in self.requests.iter_requests()
                if r.requestor == OWNER]

    def fulfil(self, request, ip="192.0.2.7", attributes=None):
        node = Node()
        node.state = NodeState.READY
        node.provider = "cloud"
        node.pool = "main"
        node.type = list(request.node_types)
        node.allocated_to = request.id
        node.interface_ip = node.public_ipv4 = ip
        node.private_ipv4 = "10.1.1.1"
        node.cloud, node.region, node.az = "c", "r", "z"
        node.username, node.python_path = "ubuntu", "/usr/bin/python3"
        node.connection_port, node.connection_type = 2222, "ssh"
        node.host_keys = ["ssh-ed25519 BACKING"]
        node.attributes = attributes
        self.nodes.store_node(node)
        request.state = RequestState.FULFILLED
        request.nodes = [node.id]
        self.requests.store_request(request)
        return node

    def launch(self, name, label="user-label"):
        """A create machine for node ``name`` run to completion,
        fulfilling a backing request if it makes one."""
        sm = self.create(name, label)
        assert sm.advance() is None
        for request in self.pending_requests():
            if request.state == RequestState.REQUESTED:
                self.fulfil(request)
        return wait_for(sm.advance)

    def backing(self, node_id):
        return self.nodes.get_node(node_id, cached=False)

    def delete(self, name):
        sm = self.adapter.get_delete_state_machine(self.nid(name), LOG)
        sm.advance()
        assert sm.complete


@pytest.fixture
def bed(tmp_path, zk_client):
    return Bed(tmp_path, zk_client)


def test_instance_copies_the_backing_node(bed):
    sm = bed.create("a")
    node_id = bed.nid("a")
    assert sm.advance() is None
    assert sm.external_id == node_id
    [request] = bed.pending_requests()
    assert request.node_types == ["big"] and request.id.startswith("100-")
    assert request.tenant_name is None
    # Still waiting for the backing provider.
    assert sm.advance() is None and not sm.complete
    backing = bed.fulfil(request, attributes={"shared": "backing",
                                              "cloudy": 1})
    instance = sm.advance()
    assert sm.complete
    assert (instance.interface_ip, instance.public_ipv4,
            instance.private_ipv4) == ("192.0.2.7", "192.0.2.7", "10.1.1.1")
    assert (instance.cloud, instance.region, instance.az) == ("c", "r", "z")
    assert (instance.username, instance.python_path,
            instance.connection_port) == ("ubuntu", "/usr/bin/python3", 2222)
    assert instance.host_keys == ["ssh-ed25519 BACKING"]
    assert instance.attributes == {"shared": "pool", "cloudy": 1,
                                   "pool": True}
    assert instance.slot == 0
    assert instance.driver_data == {
        "metadata": {"nodepool_node_id": node_id,
                     "nodepool_pool_name": "main",
                     "nodepool_provider_name": "meta"},
        "backing_node": backing.id, "slot": 0, "node": node_id}
    # The backing node is taken over and its request is gone.
    taken = bed.backing(backing.id)
    assert taken.state == NodeState.IN_USE
    assert json.loads(taken.user_data) == {
        "owner": OWNER, "label": "user-label", "slots": 2, "failed": False,
        "launched": 1000.0}
    assert bed.adapter.backing.holds(backing.id)
    assert bed.pending_requests() == []


def test_nodes_wait_on_one_backing_request(bed):
    first, second, third = (bed.create(n) for n in ("a", "b", "c"))
    for sm in (first, second, third):
        assert sm.advance() is None
    # Two slots: the first two share one request, the third makes another.
    assert len(bed.pending_requests()) == 2


def test_backing_node_locked_elsewhere_is_waited_for(bed, zk_factory):
    sm = bed.create("a")
    sm.advance()
    [request] = bed.pending_requests()
    backing = bed.fulfil(request)
    # The launcher that fulfilled the request still holds the node.
    other = NodeStore(zk_factory())
    held = Node(backing.id)
    other.lock_node(held)
    assert sm.advance() is None
    other.unlock_node(held)
    assert wait_for(sm.advance).external_id == bed.nid("a")


def test_failed_backing_request_fails_every_waiting_node(bed):
    first, second = bed.create("a"), bed.create("b")
    first.advance()
    second.advance()
    [request] = bed.pending_requests()
    request.state = RequestState.FAILED
    bed.requests.store_request(request)
    for sm in (first, second):
        with pytest.raises(exceptions.LaunchStatusException):
            sm.advance()
    assert bed.pending_requests() == []
    # The retry (after the launcher freed the slots) asks anew.
    bed.delete("a")
    bed.delete("b")
    retry = bed.create("a")
    retry.advance()
    assert len(bed.pending_requests()) == 1


def test_vanished_backing_request_fails_the_node(bed):
    sm = bed.create("a")
    sm.advance()
    [request] = bed.pending_requests()
    bed.requests.delete_request(request)
    with pytest.raises(exceptions.LaunchStatusException):
        sm.advance()


def test_grace_time_and_min_retention(bed):
    bed.launch("a")
    [backing_id] = {r.node_id for r in bed.adapter.book.records()}
    bed.clock.now += 15
    bed.delete("a")
    # Idle, but younger than min-retention-time (20 s).
    bed.clock.now += 6
    assert bed.adapter.release_idle() == 0
    # Old enough, but idle for less than grace-time (10 s).
    bed.clock.now += 3.5
    assert bed.adapter.release_idle() == 0
    assert bed.backing(backing_id).state == NodeState.IN_USE
    bed.clock.now += 1
    assert bed.adapter.release_idle() == 1
    released = bed.backing(backing_id)
    assert released.state == NodeState.USED
    assert bed.nodes.node_lock_contenders(backing_id) == []
    assert list(bed.adapter.book.records()) == []


def test_max_age_stops_new_slots_then_releases(bed):
    bed.launch("a")
    [old] = list(bed.adapter.book.records())
    bed.clock.now += 101
    # Past max-age: the next node gets another backing node.
    sm = bed.create("b")
    sm.advance()
    assert len(bed.pending_requests()) == 1
    # The old one goes as soon as its last node does, grace or not.
    assert bed.adapter.release_idle() == 0
    bed.delete("a")
    assert bed.adapter.release_idle() == 1
    assert bed.backing(old.node_id).state == NodeState.USED


def test_nodescan_failure_marks_the_backing_node_failed(bed):
    bed.launch("a")
    [record] = list(bed.adapter.book.records())
    bed.adapter.notify_nodescan_failure(bed.label(), bed.nid("a"))
    assert json.loads(bed.backing(record.node_id).user_data)["failed"]
    # No new slot there; released at once when empty.
    sm = bed.create("b")
    sm.advance()
    assert len(bed.pending_requests()) == 1
    bed.delete("a")
    assert bed.adapter.release_idle() == 1


def store_slot_node(bed, instance):
    """The node record the launcher writes for a completed slot."""
    slot_node = Node()
    slot_node.state = NodeState.IN_USE
    slot_node.provider = "meta"
    slot_node.pool = "main"
    bed.nodes.store_node(slot_node)
    slot_node.driver_data = dict(instance.driver_data, node=slot_node.id)
    slot_node.slot = instance.slot
    bed.nodes.store_node(slot_node)
    return slot_node


def test_recovery_rebuilds_slots_from_zookeeper(bed):
    instance = bed.launch("a")
    [record] = list(bed.adapter.book.records())
    slot_node = store_slot_node(bed, instance)
    # A foreign node claiming a slot too: another provider's, ignored.
    foreign = Node()
    foreign.state = NodeState.IN_USE
    foreign.provider = "elsewhere"
    foreign.driver_data = {"backing_node": record.node_id, "slot": 1}
    bed.nodes.store_node(foreign)
    fresh = bed.restart()
    [again] = list(fresh.book.records())
    assert (again.node_id, again.label_name, again.slot_count,
            again.launched) == (record.node_id, "user-label", 2, 1000.0)
    assert again.allocated == [slot_node.id, None]


def test_recovery_needs_our_lock(bed):
    bed.launch("a")
    [record] = list(bed.adapter.book.records())
    bed.adapter.backing.unlock(record.node_id)
    assert list(bed.restart().book.records()) == []


def test_delete_waits_for_recovery(bed):
    slot_node = store_slot_node(bed, bed.launch("a"))
    # A restarted adapter is asked to delete the node before it rebuilt
    # its book: the slot must end up free, not re-occupied by recovery.
    adapter = bed.restart(wait=False)
    sm = adapter.get_delete_state_machine(slot_node.id, LOG)
    wait_for(lambda: sm.advance() is None and sm.complete)
    [record] = list(adapter.book.records())
    assert record.allocated == [None, None]


def test_stop_withdraws_pending_requests(bed):
    sm = bed.create("a")
    sm.advance()
    assert bed.pending_requests()
    bed.adapter.stop()
    assert bed.pending_requests() == []


def test_dead_backing_node_evicts_ready_slot_nodes(bed):
    bed.launch("a")
    [record] = list(bed.adapter.book.records())
    ready = Node()
    ready.state = NodeState.READY
    ready.provider = "meta"
    ready.allocated_to = "200-0000000001"
    bed.nodes.store_node(ready)
    # Move "a"'s slot to the ready node for the test's sake.
    bed.delete("a")
    bed.adapter.book.assign(record, ready.id)
    bed.nodes.kazoo.delete(paths.node_path(record.node_id), recursive=True)
    assert bed.adapter.release_idle() == 0
    assert record.failed
    evicted = bed.nodes.get_node(ready.id, cached=False)
    assert (evicted.state, evicted.allocated_to) == (NodeState.DELETING,
                                                     None)
    # Its slot freed (the deleter does that), the record is dropped.
    bed.delete(ready.id)
    assert bed.adapter.release_idle() == 0
    assert list(bed.adapter.book.records()) == []


def test_slot_of_a_vanished_node_is_freed(bed):
    bed.launch("a")
    [record] = list(bed.adapter.book.records())
    # Deleted by another process (nodepool delete --now): our delete
    # machine never ran.
    bed.nodes.kazoo.delete(paths.node_path(bed.nid("a")), recursive=True)
    assert bed.adapter.release_idle() == 0
    assert record.allocated == [None, None]
    bed.clock.now += 21
    assert bed.adapter.release_idle() == 1


def test_adapters_of_one_provider_share_the_book(bed):
    # A reconfiguration starts the new adapter while the old one drains.
    old = bed.adapter
    waiting = bed.create("a")
    waiting.advance()
    [request] = bed.pending_requests()
    new = bed.new_adapter(wait=False)
    assert new.ready()
    bed.adapter = new
    # The new adapter's node waits on the old one's request.
    joining = bed.create("b")
    joining.advance()
    assert bed.pending_requests() == [request]
    # The old adapter leaves the request to the new one...
    old.stop()
    old.stop()   # twice: still one user fewer only
    assert bed.pending_requests() == [request]
    bed.fulfil(request)
    assert wait_for(waiting.advance).slot == 0
    assert wait_for(joining.advance).slot == 1
    # ... and the last one to stop forgets the book: the next starts
    # from ZooKeeper.
    again = bed.restart(wait=False)
    assert not again.ready()
    wait_for(again.ready)
    [record] = list(again.book.records())
    assert record.allocated == [None, None]  # no slot node records


def test_last_adapter_withdraws_pending_requests(bed):
    second = bed.new_adapter()
    bed.create("a").advance()
    bed.adapter.stop()
    assert bed.pending_requests()
    second.stop()
    assert bed.pending_requests() == []
