# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Locks taken, records written and locks given up in one ZooKeeper
transaction, and the cache's skipping of reads for our own writes, against
a real ZooKeeper.  Each test counts the requests the client sends."""

import collections
import json
import uuid

import pytest
from kazoo.exceptions import NoNodeError
from kazoo.recipe.lock import Lock

from nodepool.exceptions import LockError, TimeoutException
from nodepool.zk import locks, paths, request_locks
from nodepool.zk.models import Node, NodeRequest, NodeState, RequestState
from nodepool.zk.nodes import NodeStore
from nodepool.zk.requests import RequestStore
from tests.fixtures.waits import wait_for

LOCK_DIR = "/nodepool/requests-lock/100-0000000000"


def count_requests(client) -> collections.Counter:
    """Count, by type, the requests ``client`` sends from now on."""
    counts = collections.Counter()
    send = client.kazoo._call

    def counted(request, async_object):
        counts[type(request).__name__] += 1
        return send(request, async_object)
    client.kazoo._call = counted
    return counts


@pytest.fixture
def other(zk_factory):
    """A second client: Zuul, or another launcher."""
    return zk_factory(tls=False)


def new_node(store, state=NodeState.INIT):
    node = Node()
    node.state = state
    node.type = ["small"]
    node.provider = "fake"
    node.pool = "main"
    store.store_node(node)
    return node


# lock_at_once --------------------------------------------------------------

def test_new_dir_lock_is_held_after_one_request(zk_client, other):
    zk_client.kazoo.ensure_path("/nodepool/requests-lock")
    counts = count_requests(zk_client)
    lock = locks.new_lock(zk_client.kazoo, LOCK_DIR)
    assert locks.lock_at_once(lock, new_dir=True) is not None
    assert counts == {"Transaction": 1}
    assert lock.is_acquired
    assert locks.lock_contenders(other.kazoo, LOCK_DIR) == [lock.node]
    # It is kazoo's recipe's lock: others see it held, then free.
    with pytest.raises(LockError):
        locks.acquire_lock(other.kazoo, LOCK_DIR, blocking=False)
    locks.release_lock(lock)
    locks.release_lock(locks.acquire_lock(other.kazoo, LOCK_DIR,
                                          blocking=False))


def test_existing_dir_free_then_busy(zk_client, other):
    locks.release_lock(locks.acquire_lock(other.kazoo, LOCK_DIR))
    lock = locks.new_lock(zk_client.kazoo, LOCK_DIR)
    assert locks.lock_at_once(lock, new_dir=True) is not None
    busy = locks.new_lock(other.kazoo, LOCK_DIR)
    counts = count_requests(other)
    with pytest.raises(LockError):
        locks.lock_at_once(busy, new_dir=True)
    # A held lock is seen before contending: no contender made and removed.
    assert counts == {"Transaction": 1, "GetChildren": 1}
    # The loser's contender is gone again; the holder's stays.
    assert locks.lock_contenders(other.kazoo, LOCK_DIR) == [lock.node]
    assert not busy.is_acquired
    locks.release_lock(lock)
    assert locks.lock_contenders(other.kazoo, LOCK_DIR) == []


def test_failed_check_makes_nothing(zk_client, other):
    other.kazoo.create("/nodepool/requests/100-0000000000", b"{}",
                       makepath=True)
    other.kazoo.set("/nodepool/requests/100-0000000000", b"{}")
    other.kazoo.ensure_path("/nodepool/requests-lock")
    lock = locks.new_lock(zk_client.kazoo, LOCK_DIR)
    with pytest.raises(locks.StaleRecord):
        locks.lock_at_once(lock, new_dir=True,
                           check=("/nodepool/requests/100-0000000000", 0))
    assert other.kazoo.exists(LOCK_DIR) is None
    assert not lock.is_acquired and not lock.create_tried
    # The same lock object then takes the ordinary way.
    locks.acquire_lock(zk_client.kazoo, LOCK_DIR, lock=lock)
    assert locks.is_lock_holder(lock)
    locks.release_lock(lock)


def test_write_needs_a_new_dir(zk_client):
    lock = locks.new_lock(zk_client.kazoo, LOCK_DIR)
    with pytest.raises(ValueError):
        locks.lock_at_once(lock, then_set=("/x", b"", 0))


# Nodes ---------------------------------------------------------------------

def test_new_node_locked_and_stored_in_one_request(zk_client, other):
    store = NodeStore(zk_client)
    node = new_node(store)
    counts = count_requests(zk_client)
    store.lock_new_node(node, NodeState.BUILDING)
    assert counts == {"Transaction": 1}
    data, stat = other.kazoo.get(paths.node_path(node.id))
    assert json.loads(data)["state"] == NodeState.BUILDING
    assert node.stat == stat and node.state == NodeState.BUILDING
    assert locks.lock_contenders(other.kazoo, paths.node_lock_path(
        node.id)) == [node.lock.node]
    store.unlock_node(node)


def test_new_node_locked_by_somebody_else_first(zk_client, other):
    store = NodeStore(zk_client)
    node = new_node(store)
    held = locks.acquire_lock(other.kazoo, paths.node_lock_path(node.id))
    with pytest.raises(TimeoutException):
        store.lock_new_node(node, NodeState.BUILDING, timeout=0.5)
    assert node.state == NodeState.INIT and node.lock is None
    data, _ = other.kazoo.get(paths.node_path(node.id))
    assert json.loads(data)["state"] == NodeState.INIT
    locks.release_lock(held)


def test_new_node_taken_over_meanwhile_is_not_ours(zk_client, other):
    store = NodeStore(zk_client)
    node = new_node(store)
    # The cleanup of a stale "init" node got there first and gave up.
    theirs = NodeStore(other)
    taken = theirs.get_node(node.id, cached=False)
    theirs.lock_node(taken)
    taken.state = NodeState.DELETING
    theirs.store_node(taken)
    theirs.unlock_node(taken)
    with pytest.raises(LockError, match="changed before we locked it"):
        store.lock_new_node(node, NodeState.BUILDING)
    assert node.lock is None
    data, _ = other.kazoo.get(paths.node_path(node.id))
    assert json.loads(data)["state"] == NodeState.DELETING
    assert locks.lock_contenders(other.kazoo,
                                 paths.node_lock_path(node.id)) == []


def test_lock_of_a_current_node_needs_no_reread(zk_client):
    store = NodeStore(zk_client)
    node = new_node(store, NodeState.READY)
    store.lock_node(node)  # makes the lock directory
    store.unlock_node(node)
    counts = count_requests(zk_client)
    store.lock_node(node, blocking=False)
    assert counts == {"Transaction": 1, "GetChildren": 1}
    assert locks.is_lock_holder(node.lock)
    store.unlock_node(node)


def test_lock_of_a_stale_node_reads_it_again(zk_client, other):
    store = NodeStore(zk_client)
    node = new_node(store, NodeState.READY)
    theirs = NodeStore(other)
    changed = theirs.get_node(node.id, cached=False)
    theirs.lock_node(changed)
    changed.comment = "held by an admin"
    theirs.store_node(changed)
    theirs.unlock_node(changed)
    # Our copy is out of date (somebody had it meanwhile): while they
    # hold it, that is seen without making a contender.
    held = locks.acquire_lock(other.kazoo, paths.node_lock_path(node.id))
    counts = count_requests(zk_client)
    with pytest.raises(LockError):
        store.lock_node(node, blocking=False)
    assert counts == {"Transaction": 1, "GetChildren": 1}
    assert node.lock is None
    locks.release_lock(held)
    # Free, it is locked the ordinary way, which reads it again.
    store.lock_node(node, blocking=False)
    assert node.comment == "held by an admin"
    assert node.stat.version == changed.stat.version
    store.unlock_node(node)


def test_delete_in_one_request_without_tombstone(zk_client, other):
    store = NodeStore(zk_client)
    node = new_node(store, NodeState.USED)
    store.lock_node(node)
    counts = count_requests(zk_client)
    store.delete_node(node)
    assert counts == {"Transaction": 1}
    assert other.kazoo.exists(paths.node_path(node.id)) is None
    assert not node.lock.is_acquired
    store.unlock_node(node)  # harmless
    assert counts == {"Transaction": 1}


def test_delete_with_a_queued_contender_writes_the_tombstone(
        zk_client, other):
    store = NodeStore(zk_client)
    node = new_node(store, NodeState.USED)
    store.lock_node(node)
    # Somebody queued on the lock (a contender the transaction would
    # leave behind): the recursive way, with the tombstone first.
    other.kazoo.create(paths.node_lock_path(node.id) + "/%s__lock__"
                       % uuid.uuid4().hex, ephemeral=True, sequence=True)
    counts = count_requests(zk_client)
    store.delete_node(node)
    assert counts["Transaction"] == 1 and counts["SetData"] == 1
    assert other.kazoo.exists(paths.node_path(node.id)) is None


# Requests ------------------------------------------------------------------

def submit(store):
    request = NodeRequest()
    request.node_types = ["small"]
    request.requestor = "zuul"
    store.submit_request(request)
    return store.get_request(request.id, cached=False)


def test_request_lock_in_one_request(zk_client, other):
    requests = RequestStore(zk_client)
    request = submit(RequestStore(other))
    other.kazoo.ensure_path("/nodepool/requests-lock")
    counts = count_requests(zk_client)
    requests.lock_request(request, blocking=False)
    assert counts == {"Transaction": 1}
    assert requests.holds_lock(request)
    with pytest.raises(LockError):
        RequestStore(other).lock_request(
            RequestStore(other).get_request(request.id, cached=False),
            blocking=False)
    requests.unlock_request(request)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_contended_request_lock_lost_costs_one_request(zk_client, other):
    """Launchers that see a new request at the same moment: the ones that
    find it locked before give up after the one failed transaction, and
    ask ZooKeeper nothing more until the record changes or some time has
    passed.  Then the lock directory is known to exist."""
    winner = RequestStore(other)
    request = submit(winner)
    other.kazoo.ensure_path("/nodepool/requests-lock")
    winner.lock_request(request, blocking=False, contended=True)
    loser = RequestStore(zk_client)
    loser._given_up = request_locks.GivenUp(clock=Clock())
    mine = loser.get_request(request.id, cached=False)
    counts = count_requests(zk_client)
    for _ in range(3):
        with pytest.raises(LockError):
            loser.lock_request(mine, blocking=False, contended=True)
    assert counts == {"Transaction": 1}
    # The winner lets go without a change (paused, say): the loser tries
    # again only after a while, then in the directory there is.
    winner.unlock_request(request)
    loser._given_up._clock.now += request_locks.GIVE_UP_TIME
    counts.clear()
    loser.lock_request(mine, blocking=False, contended=True)
    assert counts == {"Transaction": 1, "GetChildren": 1}
    assert loser.holds_lock(mine)
    loser.unlock_request(mine)


def test_contended_request_lock_on_a_stale_copy(zk_client, other):
    """A copy older than the record (the cache has not brought the change
    yet) costs the failed check only; the newer copy is tried at once."""
    requests = RequestStore(zk_client)
    request = submit(RequestStore(other))
    other.kazoo.ensure_path("/nodepool/requests-lock")
    stale = requests.get_request(request.id, cached=False)
    request.declined_by.append("launcher-1")
    RequestStore(other).store_request(request)
    counts = count_requests(zk_client)
    with pytest.raises(locks.StaleRecord):
        requests.lock_request(stale, blocking=False, contended=True)
    with pytest.raises(LockError):  # given up on: nothing asked
        requests.lock_request(stale, blocking=False, contended=True)
    assert counts == {"Transaction": 1}
    fresh = requests.get_request(request.id, cached=False)
    counts.clear()
    requests.lock_request(fresh, blocking=False, contended=True)
    # Turned down once, so the directory was guessed to exist; it did not
    # (a test's decline, without a lock), and the second guess made it.
    assert counts == {"Transaction": 2}
    assert requests.holds_lock(fresh)
    requests.unlock_request(fresh)


def locked_request_and_node(zk_client, other):
    """Stores on ``zk_client``, and a request (submitted by ``other``) and
    a ``ready`` node, both locked through them."""
    requests, nodes = RequestStore(zk_client), NodeStore(zk_client)
    request = submit(RequestStore(other))
    requests.lock_request(request, blocking=False)
    node = new_node(nodes)
    nodes.lock_new_node(node, NodeState.READY)
    return requests, nodes, request, node


def test_fulfil_and_unlock_in_one_request(zk_client, other):
    requests, nodes, request, node = locked_request_and_node(zk_client,
                                                             other)
    counts = count_requests(zk_client)
    assert requests.fulfill_and_unlock(request, [node])
    assert counts == {"Transaction": 1}
    stored = RequestStore(other).get_request(request.id, cached=False)
    assert stored.state == RequestState.FULFILLED
    assert stored.nodes == [node.id]
    assert node.lock is None and request.lock is None
    assert locks.lock_contenders(other.kazoo,
                                 paths.node_lock_path(node.id)) == []
    # Nobody locks a fulfilled request: its lock directory went too.
    assert other.kazoo.exists(paths.request_lock_path(request.id)) is None


def test_fulfil_with_somebody_queued_on_the_request_is_left_to_the_caller(
        zk_client, other):
    requests, nodes, request, node = locked_request_and_node(zk_client,
                                                             other)
    other.kazoo.create(paths.request_lock_path(request.id) + "/%s__lock__"
                       % uuid.uuid4().hex, ephemeral=True, sequence=True)
    assert not requests.fulfill_and_unlock(request, [node])
    stored = RequestStore(other).get_request(request.id, cached=False)
    assert stored.state == RequestState.REQUESTED
    assert locks.is_lock_holder(node.lock) and requests.holds_lock(request)


def test_fulfil_of_a_vanished_request_changes_nothing(zk_client, other):
    requests, nodes, request, node = locked_request_and_node(zk_client,
                                                             other)
    other.kazoo.delete(paths.request_path(request.id))
    with pytest.raises(NoNodeError):
        requests.fulfill_and_unlock(request, [node])
    assert locks.is_lock_holder(node.lock)
    assert requests.holds_lock(request)
    nodes.unlock_node(node)
    requests.unlock_request(request)


def test_fulfil_without_a_held_lock_is_left_to_the_caller(zk_client, other):
    requests, nodes = RequestStore(zk_client), NodeStore(zk_client)
    request = submit(RequestStore(other))
    requests.lock_request(request, blocking=False)
    node = new_node(nodes)  # not locked
    counts = count_requests(zk_client)
    assert not requests.fulfill_and_unlock(request, [node])
    assert counts == {}
    requests.unlock_request(request)


# The cache and our own writes ----------------------------------------------

def test_own_write_is_not_read_back_but_heard(zk_client, node_cache):
    store = NodeStore(zk_client, cache=node_cache)
    node = new_node(store, NodeState.READY)
    heard = []
    node_cache.add_listener(lambda key, obj, etype: heard.append(
        (key, obj.comment if obj is not None else None)))
    # The create's event is read (the id is not known before).
    wait_for(lambda: node_cache.fetch_count >= 1)
    reads = node_cache.fetch_count
    for comment in ("one", "two"):
        node.comment = comment
        store.store_node(node)
    # The changes are heard, with the object as the writer left it.
    wait_for(lambda: heard and heard[-1] == ((node.id,), "two"))
    assert node_cache.fetch_count == reads
    assert node_cache.get(node.id).comment == "two"


@pytest.mark.parametrize("failure", ["not-applied", "exception"])
def test_failed_own_write_has_the_record_read(zk_client, node_cache, other,
                                              failure):
    store = NodeStore(zk_client, cache=node_cache)
    node = new_node(store, NodeState.READY)
    path = paths.node_path(node.id)
    wait_for(lambda: node_cache.get(node.id) is not None)
    with pytest.raises(RuntimeError) if failure == "exception" \
            else _no_error():
        with node_cache.own_change(path) as change:
            # Somebody else's write comes first and takes our place.
            other.kazoo.set(path, json.dumps(
                {"state": "ready", "type": ["small"], "provider": "fake",
                 "pool": "main", "comment": "theirs"}).encode())
            wait_for(lambda: not node_cache._own_changes)
            if failure == "exception":
                raise RuntimeError("our write failed")
            change.applied = False
    wait_for(lambda: node_cache.get(node.id).comment == "theirs")


class _no_error:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_lock_recipe_contenders_unchanged(zk_client, other):
    """A lock taken at once is one plain kazoo recipe contenders queue
    behind: kazoo's own blocking Lock gets it once we let go."""
    zk_client.kazoo.ensure_path("/nodepool/requests-lock")
    lock = locks.new_lock(zk_client.kazoo, LOCK_DIR)
    locks.lock_at_once(lock, new_dir=True)
    theirs = Lock(other.kazoo, LOCK_DIR)
    assert not theirs.acquire(blocking=False)
    locks.release_lock(lock)
    assert theirs.acquire(timeout=10)
    theirs.release()
