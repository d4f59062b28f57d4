# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
import json
import logging
import re
import time

import pytest
from kazoo.recipe.lock import Lock

from nodepool.exceptions import LockError, TimeoutException
from nodepool.zk import locks
from nodepool.zk.models import NodeRequest, RequestState
from nodepool.zk.requests import RequestStore
from tests.fakes.record_cache import StaticCache
from tests.fixtures.waits import wait_for

LOCK_ROOT = "/nodepool/requests-lock"


def make_request(labels=("small",), **attrs):
    request = NodeRequest()
    request.node_types = list(labels)
    request.requestor = "zuul01"
    for key, value in attrs.items():
        setattr(request, key, value)
    return request


def by_priority(requests):
    """Requests in the order pool workers process them (the ``priority``
    sort key: prefix, then relative priority, then sequence)."""
    return sorted(requests, key=lambda r: r.priority)


@pytest.fixture
def store(zk_client):
    return RequestStore(zk_client)


@pytest.fixture
def other_store(zk_factory):
    """A second connection, playing Zuul or another launcher."""
    return RequestStore(zk_factory())


def test_submit_fills_defaults(store, zk_client):
    request = make_request()
    request_id = store.submit_request(request)
    assert re.match(r"^100-\d{10}$", request_id)
    assert request.id == request_id
    assert request.stat is not None
    assert request.state == RequestState.REQUESTED
    assert re.match(r"^[0-9a-f]{32}$", request.event_id)
    read = store.get_request(request_id)
    assert read == request
    assert read.event_id == request.event_id

    given = make_request(event_id="evt-1")
    given.state = RequestState.PENDING
    store.submit_request(given, priority=900)
    assert given.id.startswith("900-")
    assert store.get_request(given.id).event_id == "evt-1"
    assert store.get_request(given.id).state == RequestState.PENDING
    with pytest.raises(ValueError):
        store.submit_request(given)


def test_exact_json_on_the_wire(store, zk_client):
    request = make_request(
        labels=("small", "small", "large"), provider="p1",
        relative_priority=3, event_id="e1", tenant_name="t1", reuse=False,
        requestor_data={"build_set_uuid": "abc", "job_name": "j"},
        created_time=1700000000.25)
    request.state = RequestState.REQUESTED
    request.state_time = 1700000001.5
    store.submit_request(request, priority="200", ephemeral=False)
    raw, _ = zk_client.kazoo.get("/nodepool/requests/" + request.id)
    assert json.loads(raw.decode("utf-8")) == {
        "state": "requested", "state_time": 1700000001.5,
        "declined_by": [], "node_types": ["small", "small", "large"],
        "nodes": [], "reuse": False, "requestor": "zuul01",
        "requestor_data": {"build_set_uuid": "abc", "job_name": "j"},
        "provider": "p1", "relative_priority": 3, "event_id": "e1",
        "created_time": 1700000000.25, "tenant_name": "t1",
    }


def test_sorted_by_priority_relative_priority_sequence(store):
    normal = make_request(relative_priority=0)
    store.submit_request(normal, priority="200")
    high_late = make_request(relative_priority=5)
    store.submit_request(high_late, priority="100")
    high_1 = make_request(relative_priority=0)
    store.submit_request(high_1, priority="100")
    high_2 = make_request(relative_priority=0)
    store.submit_request(high_2, priority="100")
    min_ready = make_request()
    store.submit_request(min_ready, priority="900")
    # Sequence numbers are shared across prefixes and grow.
    assert high_1.id.split("-")[1] < high_2.id.split("-")[1]
    expected = [high_1.id, high_2.id, high_late.id, normal.id, min_ready.id]
    assert [r.id for r in by_priority(store.iter_requests())] == expected
    assert sorted(store.get_request_ids()) == sorted(expected)


def test_ephemeral_and_persistent(store, zk_factory):
    submitter = RequestStore(zk_factory())
    ephemeral = make_request()
    submitter.submit_request(ephemeral)
    persistent = make_request()
    submitter.submit_request(persistent, ephemeral=False)
    assert ephemeral.stat.ephemeralOwner != 0
    assert persistent.stat.ephemeralOwner == 0
    submitter.zk_client.disconnect()
    wait_for(lambda: store.get_request(ephemeral.id) is None, timeout=30)
    assert store.get_request(persistent.id) is not None


def test_store_and_delete(store):
    request = make_request()
    store.submit_request(request)
    request.relative_priority = 7
    store.store_request(request)
    assert store.get_request(request.id, cached=False).relative_priority == 7
    store.delete_request(request)
    assert store.get_request(request.id) is None
    store.delete_request(request)  # already gone: no error
    with pytest.raises(ValueError):
        store.store_request(make_request())


def test_lock_path_survives_request_deletion(store, zk_client):
    request = make_request()
    store.submit_request(request)
    store.lock_request(request)
    assert request.is_locked
    assert zk_client.kazoo.get_children(LOCK_ROOT) == [request.id]
    assert locks.lock_contenders(zk_client.kazoo,
                                 "%s/%s" % (LOCK_ROOT, request.id)) == [
        request.lock.node]
    # Nothing is created below the request itself.
    assert zk_client.kazoo.get_children(
        "/nodepool/requests/" + request.id) == []
    store.delete_request(request)
    assert locks.lock_is_held(zk_client.kazoo,
                              "%s/%s" % (LOCK_ROOT, request.id))
    assert store.is_request_locked(request.id)
    store.unlock_request(request)
    assert not store.is_request_locked(request.id)
    assert not request.is_locked
    assert store.get_request_lock_ids() == [request.id]
    with pytest.raises(LockError):
        store.unlock_request(request)


def test_lock_rereads_request(store, other_store):
    request = make_request()
    store.submit_request(request, ephemeral=False)
    stale = store.get_request(request.id)
    # Zuul revises the priority under the lock, as reviseRequest does.
    theirs = other_store.get_request(request.id)
    other_store.lock_request(theirs)
    theirs.relative_priority = 42
    other_store.store_request(theirs)
    with pytest.raises(LockError):
        store.lock_request(stale, blocking=False)
    with pytest.raises(TimeoutException):
        store.lock_request(stale, timeout=0.5)
    assert stale.lock is None
    other_store.unlock_request(theirs)
    store.lock_request(stale, blocking=False)
    assert stale.relative_priority == 42
    assert stale.stat.mzxid == theirs.stat.mzxid
    store.unlock_request(stale)


def test_lock_vanished_request(store, zk_client):
    request = make_request()
    store.submit_request(request)
    copy = store.get_request(request.id)
    store.delete_request(request)
    with pytest.raises(LockError):
        store.lock_request(copy)
    assert copy.lock is None
    # Our contender is gone and so is the lock directory we recreated.
    assert store.get_request_lock_ids() == []


def test_invalid_payload_tolerated(store, zk_client, caplog):
    good = make_request()
    store.submit_request(good)
    zk_client.kazoo.create("/nodepool/requests/100-0000000099", b"[1, 2]")
    with caplog.at_level(logging.WARNING, logger="nodepool.zk.requests"):
        assert store.get_request("100-0000000099") is None
        assert [r.id for r in store.iter_requests(cached=False)] == [good.id]
    assert "100-0000000099" in caplog.text


def test_decline_rules(store):
    request = make_request()
    store.submit_request(request)
    store.lock_request(request)
    assert store.decline_request(request, "pool-a",
                                 ["pool-a", "pool-b"]) == \
        RequestState.REQUESTED
    read = store.get_request(request.id, cached=False)
    assert read.state == RequestState.REQUESTED
    assert read.declined_by == ["pool-a"]
    # Declining twice does not duplicate the id.
    store.decline_request(request, "pool-a", ["pool-a", "pool-b"])
    assert store.get_request(request.id).declined_by == ["pool-a"]
    # The last registered pool declines: the request fails.  Pools that
    # declined but have gone away do not matter.
    assert store.decline_request(request, "pool-b", ["pool-b"]) == \
        RequestState.FAILED
    read = store.get_request(request.id)
    assert read.state == RequestState.FAILED
    assert read.declined_by == ["pool-a", "pool-b"]
    store.unlock_request(request)


def test_decline_with_unregistered_decliner_and_no_pools(store):
    request = make_request()
    store.submit_request(request)
    store.lock_request(request)
    assert store.decline_request(request, "gone", ["pool-a"]) == \
        RequestState.REQUESTED
    assert store.decline_request(request, "pool-a", []) == \
        RequestState.FAILED
    store.unlock_request(request)


def test_accept_fulfill_requeue(store):
    request = make_request(labels=("small", "large"))
    store.submit_request(request)
    store.lock_request(request)
    store.accept_request(request)
    assert store.get_request(request.id).state == RequestState.PENDING
    with pytest.raises(ValueError):
        store.accept_request(request)
    with pytest.raises(ValueError):
        store.fulfill_request(request, ["0000000001"])
    store.requeue_request(request)
    read = store.get_request(request.id)
    assert read.state == RequestState.REQUESTED
    assert read.nodes == []
    store.accept_request(request)
    store.fulfill_request(request, ["0000000004", "0000000002"])
    read = store.get_request(request.id)
    assert read.state == RequestState.FULFILLED
    assert read.nodes == ["0000000004", "0000000002"]
    store.unlock_request(request)


def test_orphan_lock_cleanup_spares_held_locks(store, other_store, zk_client):
    orphan = make_request()
    store.submit_request(orphan)
    store.lock_request(orphan)
    store.unlock_request(orphan)
    store.delete_request(orphan)

    held = make_request()
    store.submit_request(held)
    theirs = other_store.get_request(held.id)
    other_store.lock_request(theirs)
    store.delete_request(held)
    # A waiter (non-ephemeral, as a stale consumer might leave) also
    # keeps the directory alive.
    waited = make_request()
    store.submit_request(waited)
    zk_client.kazoo.create("%s/%s/%s__lock__0000000000"
                           % (LOCK_ROOT, waited.id, "f" * 32), makepath=True)

    assert sorted(store.get_request_lock_ids()) == sorted(
        [orphan.id, held.id, waited.id])
    mtime = store.request_lock_mtime(orphan.id)
    assert abs(mtime - time.time()) < 60
    assert store.delete_request_lock(held.id) is False
    assert store.delete_request_lock(waited.id) is False
    assert store.delete_request_lock(orphan.id) is True
    assert store.delete_request_lock(orphan.id) is True
    assert store.request_lock_mtime(orphan.id) is None
    assert sorted(store.get_request_lock_ids()) == sorted(
        [held.id, waited.id])
    assert locks.lock_contenders(zk_client.kazoo, "%s/%s" % (
        LOCK_ROOT, held.id)) == [theirs.lock.node]
    other_store.unlock_request(theirs)


def test_zuul_lock_with_plain_kazoo(store, zk_factory):
    request = make_request()
    store.submit_request(request)
    zuul = zk_factory()
    zuul_lock = Lock(zuul.kazoo, "%s/%s" % (LOCK_ROOT, request.id))
    assert zuul_lock.acquire(blocking=False)
    with pytest.raises(LockError):
        store.lock_request(request, blocking=False)
    zuul_lock.release()
    store.lock_request(request, blocking=False)
    store.unlock_request(request)


def test_reads_through_cache(zk_client):
    plain = RequestStore(zk_client)
    a = make_request()
    plain.submit_request(a, priority="200")
    b = make_request()
    plain.submit_request(b, priority="100")
    cached_a = plain.get_request(a.id)
    cached_a.relative_priority = 9
    cache = StaticCache([cached_a])
    store = RequestStore(zk_client, cache=cache)
    assert store.get_request(a.id) is cached_a
    assert store.get_request(a.id, cached=False).relative_priority == 0
    assert store.get_request(b.id).id == b.id  # miss falls back
    assert list(store.iter_requests()) == [cached_a]
    assert [r.id for r in by_priority(store.iter_requests(cached=False))] \
        == [b.id, a.id]


def test_request_exists_asks_zookeeper(store, other_store):
    request = make_request()
    store.submit_request(request, priority="100")
    # A cache that still lists the request does not count.
    cached = RequestStore(store.zk_client, cache=StaticCache(
        [store.get_request(request.id)]))
    assert cached.request_exists(request.id)
    other_store.delete_request(other_store.get_request(request.id))
    assert cached.get_request(request.id) is not None
    assert not cached.request_exists(request.id)
    assert not store.request_exists("100-0000000999")


def test_relock_after_lost_session(store, other_store, zk_client):
    """After a lost session a request's dead lock is taken anew; a lock
    that an attempt in flight at the loss acquired in the new session is
    kept (taking it again would fail: kazoo locks are not re-entrant)."""
    import threading
    from tests.fixtures import zkserver
    request = make_request()
    other_store.submit_request(request)  # ephemeral: a session of its own
    store.lock_request(request)
    lost = threading.Event()
    zk_client.add_session_listener(lost.set)
    zkserver.expire_session(zk_client.kazoo)
    assert lost.wait(30)
    assert not locks.is_lock_holder(request.lock)
    fresh = store.relock_request(request)
    assert fresh.id == request.id
    assert locks.is_lock_holder(request.lock)
    held = request.lock
    # Still held in this session: kept as it is.
    fresh = store.relock_request(request)
    assert request.lock is held and locks.is_lock_holder(held)
    assert store.is_request_locked(request.id)
    store.unlock_request(request)
    assert not store.is_request_locked(request.id)
