# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Tests of the Zuul stand-in, with the launcher played by hand.

A second ZooKeeper connection uses nodepool's own stores the way a pool
worker would (lock request, accept, create ready nodes, fulfil or
decline) so that the client's side of the protocol can be checked on the
wire before a real launcher exists.
"""

import json
import re
import threading
import time

import pytest

from nodepool.exceptions import LockError
from nodepool.zk import locks
from nodepool.zk.models import Node, NodeRequest, NodeState, RequestState
from nodepool.zk.nodes import NodeStore
from nodepool.zk.paths import node_lock_path, request_lock_path, request_path
from nodepool.zk.requests import RequestStore
from tests.fixtures.waits import wait_for
from tests.fixtures.zuul import (
    NodeAcceptError,
    NodeRequestFailed,
    WaitTimeout,
    ZuulClient,
    ZuulClientError,
)

ZUUL_REQUEST_KEYS = {
    "node_types", "requestor", "requestor_data", "created_time", "provider",
    "state", "state_time", "relative_priority", "event_id", "tenant_name",
}
REQUESTOR_DATA_KEYS = {
    "build_set_uuid", "tenant_name", "pipeline_name", "job_uuid",
    "job_name", "span_info",
}
POOL_ID = "launcher.example.com-PoolWorker.fake-provider-main-0123abcd"


class HandLauncher:
    """Just enough of a pool worker, using nodepool's own stores."""

    def __init__(self, zk_client):
        self.zk_client = zk_client
        self.kazoo = zk_client.kazoo
        self.requests = RequestStore(zk_client)
        self.nodes = NodeStore(zk_client)

    def raw_request(self, request_id):
        data, stat = self.kazoo.get(request_path(request_id))
        return json.loads(data.decode("utf8")), stat

    def raw_node(self, node_id):
        data, _ = self.kazoo.get("/nodepool/nodes/%s" % node_id)
        return json.loads(data.decode("utf8"))

    def make_node(self, label, allocated_to, state=NodeState.READY):
        node = Node()
        node.state = state
        node.provider = "fake-provider"
        node.pool = "main"
        node.cloud = "fake"
        node.type = [label]
        node.allocated_to = allocated_to
        node.interface_ip = "192.0.2.10"
        node.launcher = POOL_ID
        node.resources = {"cores": 4, "instances": 1, "ram": 8192}
        self.nodes.store_node(node)
        return node

    def lock(self, request_id):
        request = self.requests.get_request(request_id)
        self.requests.lock_request(request, blocking=False)
        return request

    def fulfil(self, request_id, allocate_to=None, state=NodeState.READY):
        request = self.lock(request_id)
        self.requests.accept_request(request)
        node_ids = [self.make_node(label, allocate_to or request.id,
                                   state=state).id
                    for label in request.node_types]
        self.requests.fulfill_request(request, node_ids)
        self.requests.unlock_request(request)
        return node_ids

    def decline(self, request_id, registered=(POOL_ID,)):
        request = self.lock(request_id)
        self.requests.decline_request(request, POOL_ID, registered)
        self.requests.unlock_request(request)


@pytest.fixture
def zuul(zk_client):
    client = ZuulClient(zk_client, hostname="zuul01.example.com")
    yield client
    client.close()


@pytest.fixture
def launcher(zk_factory):
    return HandLauncher(zk_factory())


def in_thread(target, *args):
    errors = []

    def run():
        try:
            target(*args)
        except BaseException as e:  # reported by join_thread
            errors.append(e)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.errors = errors
    return thread


def join_thread(thread):
    thread.join(30)
    assert not thread.is_alive()
    if thread.errors:
        raise thread.errors[0]


# Submitting --------------------------------------------------------------

def test_submit_wire_format(zuul, launcher):
    before = time.time()
    request = zuul.submit(["small", "large"], provider="fake-provider",
                          tenant_name="tenant-one", relative_priority=3,
                          job_name="tox-py311")
    assert re.fullmatch(r"200-\d{10}", request.id)
    data, stat = launcher.raw_request(request.id)
    assert set(data) == ZUUL_REQUEST_KEYS
    assert data["node_types"] == ["small", "large"]
    assert data["requestor"] == "zuul01.example.com"
    assert data["provider"] == "fake-provider"
    assert data["tenant_name"] == "tenant-one"
    assert data["relative_priority"] == 3
    assert data["state"] == "requested"
    assert re.fullmatch(r"[0-9a-f]{32}", data["event_id"])
    assert before <= data["state_time"] <= data["created_time"] <= time.time()
    rdata = data["requestor_data"]
    assert set(rdata) == REQUESTOR_DATA_KEYS
    assert rdata["tenant_name"] == "tenant-one"
    assert rdata["job_name"] == "tox-py311"
    assert rdata["pipeline_name"] == "check"
    assert re.fullmatch(r"[0-9a-f]{32}", rdata["build_set_uuid"])
    assert re.fullmatch(r"[0-9a-f]{32}", rdata["job_uuid"])
    assert isinstance(rdata["span_info"], dict)
    # Persistent, as current Zuul creates it.
    assert stat.ephemeralOwner == 0
    # Nodepool's own reader understands it, defaults included.
    read = launcher.requests.get_request(request.id)
    assert read.state == RequestState.REQUESTED
    assert read.reuse is True
    assert read.declined_by == [] and read.nodes == []
    assert read.priority == ("200", 3, request.id.split("-")[1])
    assert request == read


def test_submit_defaults_and_options(zuul, zk_client, launcher):
    request = zuul.submit(["small"])
    data, _ = launcher.raw_request(request.id)
    assert set(data) == ZUUL_REQUEST_KEYS
    assert data["provider"] is None and data["tenant_name"] is None
    assert data["relative_priority"] == 0
    assert data["requestor_data"]["tenant_name"] is None

    other = zuul.submit(["small"], priority="100", reuse=False,
                        requestor="zuul02", event_id="ev1",
                        requestor_data={"custom": [1, 2]}, ephemeral=True)
    assert other.id.startswith("100-")
    data, stat = launcher.raw_request(other.id)
    assert set(data) == ZUUL_REQUEST_KEYS | {"reuse"}
    assert data["reuse"] is False
    assert data["requestor"] == "zuul02"
    assert data["event_id"] == "ev1"
    assert data["requestor_data"] == {"custom": [1, 2]}
    assert stat.ephemeralOwner == zk_client.session_id
    # Sorted the way pool workers process them: prefix first.
    ordered = sorted(launcher.requests.iter_requests(cached=False),
                     key=lambda r: r.priority)
    assert [r.id for r in ordered] == [other.id, request.id]


# Full cycle ----------------------------------------------------------------

def test_fulfil_accept_return(zuul, launcher):
    request = zuul.submit(["small", "large"])
    node_ids = launcher.fulfil(request.id)
    done = zuul.wait_for_request(request)
    assert done.state == RequestState.FULFILLED
    assert done.nodes == node_ids

    nodes = zuul.accept_nodes(done)
    assert [n.id for n in nodes] == node_ids
    assert [n.type for n in nodes] == [["small"], ["large"]]
    for node in nodes:
        assert node.state == NodeState.IN_USE
        assert node.is_locked
        # The launcher sees Zuul's lock contender and cannot lock it.
        contenders = locks.lock_contenders(launcher.kazoo,
                                           node_lock_path(node.id))
        assert contenders == [node.lock.node]
        with pytest.raises(LockError):
            launcher.nodes.lock_node(Node(node.id), blocking=False)
        raw = launcher.raw_node(node.id)
        assert raw["state"] == "in-use"
        assert raw["id"] == node.id     # current Zuul writes the id too
        assert raw["allocated_to"] == request.id
        assert raw["launcher"] == POOL_ID
        assert raw["resources"] == {"cores": 4, "instances": 1, "ram": 8192}
        seen = launcher.nodes.get_node(node.id)
        assert seen.state == NodeState.IN_USE
        assert seen.provider == "fake-provider"
    assert zuul.held_nodes == nodes
    # The request is gone; its lock dir is left for the launcher cleanup.
    assert launcher.requests.get_request(request.id) is None
    assert launcher.kazoo.exists(request_lock_path(request.id)) is not None

    zuul.finish(nodes)
    for node in nodes:
        assert not node.is_locked
        assert node.state == NodeState.USED
        assert launcher.raw_node(node.id)["state"] == "used"
        assert launcher.nodes.node_lock_contenders(node.id) == []
    assert zuul.held_nodes == []


def test_wait_is_woken_by_the_launcher(zuul, zk_client, launcher):
    request = zuul.submit(["small"])
    # Kazoo keys its watcher table by the path including the chroot.
    path = zk_client.kazoo.chroot + request_path(request.id)
    progress = []

    def launcher_side():
        # Act only once the client's data watch is registered (kazoo's
        # watcher table), so the wait sees "requested" first and must be
        # woken by the changes.
        wait_for(lambda: zk_client.kazoo._data_watchers.get(path))
        locked = launcher.lock(request.id)
        launcher.requests.accept_request(locked)
        progress.append("pending")
        node = launcher.make_node("small", request.id)
        launcher.requests.fulfill_request(locked, [node.id])
        launcher.requests.unlock_request(locked)

    thread = in_thread(launcher_side)
    done = zuul.wait_for_request(request, timeout=30)
    join_thread(thread)
    assert done.state == RequestState.FULFILLED
    assert progress == ["pending"]
    nodes = zuul.accept_nodes(done)
    zuul.finish(nodes)


def test_run_job_and_finish(zuul, launcher):
    def launcher_side():
        request_id = wait_for(lambda: launcher.requests.get_request_ids())[0]
        launcher.fulfil(request_id)

    thread = in_thread(launcher_side)
    nodes = zuul.run_job(["small"], tenant_name="tenant-one", timeout=30)
    join_thread(thread)
    assert len(nodes) == 1
    assert nodes[0].state == NodeState.IN_USE and nodes[0].is_locked
    assert launcher.requests.get_request_ids() == []
    zuul.finish(nodes)
    assert launcher.raw_node(nodes[0].id)["state"] == "used"
    assert launcher.nodes.node_lock_contenders(nodes[0].id) == []


# Failures ------------------------------------------------------------------

def test_failed_request(zuul, launcher):
    request = zuul.submit(["unknown-label"])
    launcher.decline(request.id)
    done = zuul.wait_for_request(request)
    assert done.state == RequestState.FAILED
    assert done.declined_by == [POOL_ID]
    with pytest.raises(NodeAcceptError, match="not fulfilled"):
        zuul.accept_nodes(done, delete_on_error=False)
    assert zuul.get_request(request) is not None
    assert zuul.delete_request(done) is True
    assert zuul.get_request(request) is None


def test_run_job_failed(zuul, launcher):
    def launcher_side():
        request_id = wait_for(lambda: launcher.requests.get_request_ids())[0]
        launcher.decline(request_id)

    thread = in_thread(launcher_side)
    with pytest.raises(NodeRequestFailed) as info:
        zuul.run_job(["unknown-label"])
    join_thread(thread)
    assert isinstance(info.value, AssertionError)
    assert info.value.request.declined_by == [POOL_ID]
    # Zuul deletes failed requests.
    assert launcher.requests.get_request_ids() == []


def test_decline_by_one_of_two_pools_keeps_waiting(zuul, launcher):
    request = zuul.submit(["small"])
    launcher.decline(request.id, registered=(POOL_ID, "other-pool"))
    with pytest.raises(WaitTimeout, match="last state requested"):
        zuul.wait_for_request(request, timeout=0.5)
    assert zuul.get_request(request).declined_by == [POOL_ID]


def test_wait_for_deleted_request(zuul, launcher):
    request = zuul.submit(["small"])

    def launcher_side():
        launcher.requests.delete_request(NodeRequest(request.id))

    thread = in_thread(launcher_side)
    with pytest.raises(ZuulClientError, match="deleted"):
        zuul.wait_for_request(request, timeout=30)
    join_thread(thread)
    with pytest.raises(ZuulClientError, match="deleted"):
        zuul.wait_for_request(request.id, timeout=30)


def test_accept_refuses_node_of_another_request(zuul, launcher):
    request = zuul.submit(["small", "large"])
    node_ids = launcher.fulfil(request.id, allocate_to="200-0000009999")
    done = zuul.wait_for_request(request)
    with pytest.raises(NodeAcceptError, match="200-0000009999"):
        zuul.accept_nodes(done)
    for node_id in node_ids:
        assert launcher.nodes.node_lock_contenders(node_id) == []
        assert launcher.raw_node(node_id)["state"] == "ready"
    # Zuul deletes the request even when it cannot use the nodes.
    assert launcher.requests.get_request(request.id) is None
    assert zuul.held_nodes == []


def test_accept_refuses_partly_misallocated(zuul, launcher):
    request = zuul.submit(["small", "large"])
    node_ids = launcher.fulfil(request.id)
    # Nodepool re-allocates the second node before Zuul gets to it.
    moved = launcher.nodes.get_node(node_ids[1])
    launcher.nodes.lock_node(moved)
    moved.allocated_to = "200-0000009999"
    launcher.nodes.store_node(moved)
    launcher.nodes.unlock_node(moved)
    with pytest.raises(NodeAcceptError, match="not to request %s" % request.id):
        zuul.accept_nodes(request, delete_on_error=False)
    # The first node was locked and is released again, untouched.
    for node_id in node_ids:
        assert launcher.nodes.node_lock_contenders(node_id) == []
        assert launcher.raw_node(node_id)["state"] == "ready"
    assert zuul.get_request(request) is not None


def test_accept_missing_node(zuul, launcher):
    request = zuul.submit(["small"])
    locked = launcher.lock(request.id)
    launcher.requests.accept_request(locked)
    launcher.requests.fulfill_request(locked, ["0000000099"])
    launcher.requests.unlock_request(locked)
    with pytest.raises(NodeAcceptError, match="does not exist"):
        zuul.accept_nodes(request)
    assert launcher.kazoo.exists("/nodepool/nodes/0000000099") is None


def test_accept_node_not_ready(zuul, launcher):
    request = zuul.submit(["small"])
    node_ids = launcher.fulfil(request.id, state=NodeState.BUILDING)
    with pytest.raises(NodeAcceptError, match="not ready"):
        zuul.accept_nodes(request)
    assert launcher.nodes.node_lock_contenders(node_ids[0]) == []


def test_accept_times_out_on_a_locked_node(zuul, launcher):
    request = zuul.submit(["small"])
    node_ids = launcher.fulfil(request.id)
    busy = launcher.nodes.get_node(node_ids[0])
    launcher.nodes.lock_node(busy)
    with pytest.raises(NodeAcceptError, match="timed out"):
        zuul.accept_nodes(request, timeout=0.5, delete_on_error=False)
    # Only the launcher's contender is left.
    assert launcher.nodes.node_lock_contenders(busy.id) == [busy.lock.node]
    launcher.nodes.unlock_node(busy)
    nodes = zuul.accept_nodes(request)
    assert [n.id for n in nodes] == node_ids
    zuul.finish(nodes)


def test_accept_waits_for_launcher_to_unlock(zuul, launcher):
    request = zuul.submit(["small"])
    node_ids = launcher.fulfil(request.id)
    busy = launcher.nodes.get_node(node_ids[0])
    launcher.nodes.lock_node(busy)

    def launcher_side():
        # Release once Zuul queues behind us on the lock.
        wait_for(lambda: len(launcher.nodes.node_lock_contenders(
            busy.id)) == 2)
        launcher.nodes.unlock_node(busy)

    thread = in_thread(launcher_side)
    nodes = zuul.accept_nodes(request, timeout=30)
    join_thread(thread)
    assert nodes[0].state == NodeState.IN_USE
    zuul.finish(nodes)


# Relative priority -----------------------------------------------------------

def test_revise_relative_priority(zuul, launcher):
    request = zuul.submit(["small"], relative_priority=5)
    # A decline by one of two pools leaves it requested with declined_by.
    launcher.decline(request.id, registered=(POOL_ID, "other-pool"))
    before, _ = launcher.raw_request(request.id)
    assert zuul.revise_relative_priority(request, 1) is True
    after, _ = launcher.raw_request(request.id)
    assert after["relative_priority"] == 1
    assert after["declined_by"] == [POOL_ID]
    del before["relative_priority"], after["relative_priority"]
    assert before == after
    # Zuul's attempt leaves no contender behind.
    assert locks.lock_contenders(launcher.kazoo,
                                 request_lock_path(request.id)) == []


def test_revise_refused_while_launcher_holds_lock(zuul, launcher):
    request = zuul.submit(["small"], relative_priority=5)
    locked = launcher.lock(request.id)
    assert zuul.revise_relative_priority(request, 1) is False
    assert launcher.raw_request(request.id)[0]["relative_priority"] == 5
    assert locks.lock_contenders(launcher.kazoo,
                                 request_lock_path(request.id)) == [
        locked.lock.node]
    # Once pending it stays untouched even without the lock.
    launcher.requests.accept_request(locked)
    launcher.requests.unlock_request(locked)
    assert zuul.revise_relative_priority(request, 1) is False
    data, _ = launcher.raw_request(request.id)
    assert data["relative_priority"] == 5 and data["state"] == "pending"


def test_revise_gone_request(zuul):
    request = zuul.submit(["small"])
    zuul.cancel(request)
    assert zuul.revise_relative_priority(request, 1) is False


# Hold, cancel, close -----------------------------------------------------------

def test_hold_nodes(zuul, launcher):
    request = zuul.submit(["small"])
    launcher.fulfil(request.id)
    nodes = zuul.accept_nodes(request)
    zuul.hold_nodes(nodes, hold_job="tenant-one project job .*",
                    comment="debugging", hold_expiration=3600)
    node = nodes[0]
    assert not node.is_locked
    raw = launcher.raw_node(node.id)
    assert raw["state"] == "hold"
    assert raw["hold_job"] == "tenant-one project job .*"
    assert raw["comment"] == "debugging"
    assert raw["hold_expiration"] == 3600
    assert launcher.nodes.node_lock_contenders(node.id) == []
    seen = launcher.nodes.get_node(node.id)
    assert seen.state == NodeState.HOLD and seen.hold_expiration == 3600
    # Returning a held node (no longer locked) is refused.
    with pytest.raises(ZuulClientError, match="not locked"):
        zuul.return_nodes(nodes)


def test_return_keeps_non_in_use_state(zuul, launcher):
    request = zuul.submit(["small"])
    launcher.fulfil(request.id)
    nodes = zuul.lock_nodes(request)
    assert nodes[0].state == NodeState.READY
    zuul.return_nodes(nodes)
    assert launcher.raw_node(nodes[0].id)["state"] == "ready"
    assert launcher.nodes.node_lock_contenders(nodes[0].id) == []


def test_cancel(zuul, launcher):
    request = zuul.submit(["small"])
    assert zuul.revise_relative_priority(request, 2) is True
    assert zuul.cancel(request) is True
    assert launcher.requests.get_request(request.id) is None
    # Like Zuul, the lock dir is left for the launcher's cleanup.
    assert launcher.kazoo.exists(request_lock_path(request.id)) is not None
    assert zuul.cancel(request) is False

    other = zuul.submit(["small"])
    locked = launcher.lock(other.id)
    assert zuul.cancel(other, delete_lock=True) is True
    # Held by the launcher: the lock dir survives.
    assert launcher.kazoo.exists(request_lock_path(other.id)) is not None
    launcher.requests.unlock_request(locked)
    assert zuul.cancel(other, delete_lock=True) is False
    assert launcher.kazoo.exists(request_lock_path(other.id)) is None


def test_close_releases_locks(zk_factory, launcher):
    zuul = ZuulClient(zk_factory())
    request = zuul.submit(["small"])
    node_ids = launcher.fulfil(request.id)
    nodes = zuul.accept_nodes(request)
    zuul.close()
    assert not nodes[0].is_locked
    assert launcher.nodes.node_lock_contenders(node_ids[0]) == []
    # The node stays in-use: an unlocked in-use node is a dead consumer's.
    assert launcher.raw_node(node_ids[0])["state"] == "in-use"
    with pytest.raises(ZuulClientError, match="closed"):
        zuul.submit(["small"])


def test_crashed_zuul_loses_locks_keeps_requests(zk_factory, launcher):
    session = zk_factory()
    zuul = ZuulClient(session)
    request = zuul.submit(["small"])
    pending = zuul.submit(["large"])
    node_ids = launcher.fulfil(request.id)
    zuul.lock_nodes(request)
    assert launcher.nodes.node_lock_contenders(node_ids[0]) != []
    session.disconnect()
    assert launcher.nodes.node_lock_contenders(node_ids[0]) == []
    assert launcher.requests.get_request(pending.id) is not None
