# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The orphan request lock cleanup: removes what it must, and asks
ZooKeeper nothing on a pass where nothing could have changed."""

import collections

import pytest

from nodepool.launcher.request_locks import OrphanRequestLocks
from nodepool.zk.cache import RequestCache
from nodepool.zk.models import NodeRequest
from nodepool.zk.paths import request_lock_path
from nodepool.zk.requests import RequestStore
from tests.fixtures.waits import wait_for


class CountingStore(RequestStore):
    """A request store counting the lock-directory calls the cleanup
    makes (each is one ZooKeeper request)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = collections.Counter()

    def get_request_lock_ids(self):
        self.calls["list"] += 1
        return super().get_request_lock_ids()

    def request_lock_mtime(self, request_id):
        self.calls["mtime"] += 1
        return super().request_lock_mtime(request_id)

    def delete_request_lock(self, request_id):
        self.calls["delete"] += 1
        return super().delete_request_lock(request_id)

    def get_request_ids(self):
        self.calls["requests"] += 1
        return super().get_request_ids()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def cache(zk_client):
    cache = RequestCache(zk_client).start()
    assert cache.ensure_ready(30)
    yield cache
    cache.stop()


@pytest.fixture
def store(zk_client, cache):
    return CountingStore(zk_client, cache=cache)


def locked_once(store):
    """A request that was locked and unlocked: its lock directory stays,
    empty, after the request is deleted."""
    request = NodeRequest()
    request.node_types = ["small"]
    request.requestor = "zuul01"
    store.submit_request(request)
    store.lock_request(request)
    store.unlock_request(request)
    return request


def delete(store, cache, request):
    store.delete_request(request)
    wait_for(lambda: cache.get(request.id) is None)


def lock_exists(zk_client, request_id):
    return zk_client.kazoo.exists(request_lock_path(request_id)) is not None


def test_orphan_of_a_deleted_request_is_removed_without_waiting(
        zk_client, cache, store):
    """A request going away makes the next pass list the lock root, even
    long before the periodic listing is due."""
    clock = Clock()
    janitor = OrphanRequestLocks(store, cache, max_age=0,
                                 relist_interval=3600, clock=clock)
    request = locked_once(store)
    wait_for(lambda: cache.get(request.id) is not None)
    janitor.run()
    assert lock_exists(zk_client, request.id)  # its request exists

    delete(store, cache, request)
    janitor.run()
    assert not lock_exists(zk_client, request.id)
    assert janitor.orphans == {}


def test_idle_pass_asks_zookeeper_nothing(zk_client, cache, store):
    clock = Clock()
    janitor = OrphanRequestLocks(store, cache, max_age=3600,
                                 relist_interval=600, clock=clock)
    young = locked_once(store)
    delete(store, cache, young)
    janitor.run()
    assert store.calls == {"list": 1, "mtime": 1}
    assert set(janitor.orphans) == {young.id}

    for _ in range(3):
        janitor.run()
    assert store.calls == {"list": 1, "mtime": 1}
    assert lock_exists(zk_client, young.id)  # not old enough

    # Another request goes: one listing, one read for the new orphan
    # only (the known one's age is remembered).
    other = locked_once(store)
    delete(store, cache, other)
    janitor.run()
    assert store.calls == {"list": 2, "mtime": 2}
    assert set(janitor.orphans) == {young.id, other.id}
    # The request cache answers which requests exist.
    assert store.calls["requests"] == 0


def test_unannounced_orphan_found_by_the_periodic_listing(
        zk_client, cache, store):
    """A lock directory no request event announces (a client locked a
    request that was already gone) is found at the next periodic
    listing."""
    clock = Clock()
    janitor = OrphanRequestLocks(store, cache, max_age=0,
                                 relist_interval=600, clock=clock)
    janitor.run()
    zk_client.kazoo.create(request_lock_path("100-0000000042"),
                           makepath=True)
    clock.now += 599
    janitor.run()
    assert lock_exists(zk_client, "100-0000000042")
    clock.now += 1
    janitor.run()
    assert not lock_exists(zk_client, "100-0000000042")


def test_held_orphan_is_kept_and_removed_once_released(
        zk_client, zk_factory, cache, store):
    clock = Clock()
    janitor = OrphanRequestLocks(store, cache, max_age=0,
                                 relist_interval=3600, clock=clock)
    request = locked_once(store)
    other = RequestStore(zk_factory())
    theirs = other.get_request(request.id)
    other.lock_request(theirs)
    delete(store, cache, request)
    janitor.run()
    assert lock_exists(zk_client, request.id)
    assert set(janitor.orphans) == {request.id}

    other.unlock_request(theirs)
    janitor.run()  # no listing due: retried from what it remembered
    assert not lock_exists(zk_client, request.id)
    assert store.calls["list"] == 1


def test_lock_of_an_existing_request_is_never_removed(
        zk_client, cache, store):
    clock = Clock()
    janitor = OrphanRequestLocks(store, cache, max_age=0,
                                 relist_interval=0, clock=clock)
    request = locked_once(store)
    wait_for(lambda: cache.get(request.id) is not None)
    for _ in range(2):
        janitor.run()
    assert lock_exists(zk_client, request.id)
    assert janitor.orphans == {}


def test_without_a_ready_cache_zookeeper_says_which_requests_exist(
        zk_client, store):
    unstarted = RequestCache(zk_client)
    janitor = OrphanRequestLocks(store, unstarted, max_age=0)
    request = locked_once(store)
    janitor.run()
    assert lock_exists(zk_client, request.id)
    assert store.calls["requests"] == 1


def test_without_a_cache_every_pass_lists(zk_client, store):
    janitor = OrphanRequestLocks(store, None, max_age=0)
    janitor.run()
    request = locked_once(store)
    store.delete_request(request)
    janitor.run()
    assert not lock_exists(zk_client, request.id)
    assert store.calls["list"] == 2
