# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The min-ready pass follows its requests through the request cache: a
request waiting for capacity costs no ZooKeeper read per pass."""

import types

import pytest

from nodepool.launcher.min_ready import MinReadyManager
from nodepool.launcher.request_handler import MIN_READY_REQUESTOR
from nodepool.zk.cache import NodeCache, RequestCache
from nodepool.zk.models import NodeRequest, RequestState
from nodepool.zk.nodes import NodeStore
from nodepool.zk.requests import RequestStore
from tests.fixtures.waits import wait_for


class CountingStore(RequestStore):
    """Counts the requests read from ZooKeeper (not from the cache)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads = 0

    def _read_request(self, request_id):
        self.reads += 1
        return super()._read_request(request_id)


@pytest.fixture
def caches(zk_client):
    started = [RequestCache(zk_client).start(), NodeCache(zk_client).start()]
    for cache in started:
        assert cache.ensure_ready(30)
    yield started
    for cache in started:
        cache.stop()


def manager_for(zk_client, request_cache, node_cache):
    store = CountingStore(zk_client, cache=request_cache)
    services = types.SimpleNamespace(
        requests=store, request_cache=request_cache,
        nodes=NodeStore(zk_client, cache=node_cache), node_cache=node_cache)
    # No provider serves anything: the passes submit nothing new.
    view = types.SimpleNamespace(
        providers={}, config=types.SimpleNamespace(labels={}))
    return MinReadyManager(view, services), store


def submit(store, manager):
    request = NodeRequest.new(["small"], requestor=MIN_READY_REQUESTOR,
                              reuse=False)
    request_id = store.submit_request(request)
    manager.submitted[request_id] = "small"
    return request_id


def test_waiting_request_costs_no_read(zk_client, caches):
    request_cache, node_cache = caches
    manager, store = manager_for(zk_client, request_cache, node_cache)
    request_id = submit(store, manager)
    wait_for(lambda: request_cache.get(request_id) is not None)
    for _ in range(5):
        manager.run()
    assert store.reads == 0
    assert manager.submitted == {request_id: "small"}

    # Failed: the cache shows it, the pass deletes it.
    request = store.get_request(request_id, cached=False)
    store.lock_request(request)
    request.state = RequestState.FAILED
    store.store_request(request)
    store.unlock_request(request)
    wait_for(lambda: request_cache.get(request_id).state
             == RequestState.FAILED)
    manager.run()
    assert manager.submitted == {}
    assert store.get_request(request_id, cached=False) is None


def test_request_the_cache_has_not_seen_is_kept(zk_client, caches):
    """Before the cache saw the new request, ZooKeeper is asked: it is
    not taken for gone (which would submit another)."""
    _, node_cache = caches
    unstarted = RequestCache(zk_client)
    manager, store = manager_for(zk_client, unstarted, node_cache)
    request_id = submit(store, manager)
    manager.run()
    assert manager.submitted == {request_id: "small"}
    assert store.reads == 1
