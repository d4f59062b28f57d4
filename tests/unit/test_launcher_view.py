# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The launcher's read-only view, and workers built from a view and the
ZooKeeper services alone (no launcher)."""

import time
from types import SimpleNamespace

import pytest

from nodepool.driver.base import ProviderServices
from nodepool.launcher.cleanup import CleanupWorker
from nodepool.launcher.view import LauncherView, RunningSet
from nodepool.zk.cache import NodeCache
from nodepool.zk.images import ImageStore
from nodepool.zk.models import Node, NodeState
from nodepool.zk.nodes import NodeStore
from nodepool.zk.requests import RequestStore
from tests.fixtures.waits import wait_for


def worker(launcher_id, *request_ids):
    """A stand-in pool worker: its id and the requests of its handlers."""
    return SimpleNamespace(
        launcher_id=launcher_id,
        handlers=[SimpleNamespace(request=SimpleNamespace(id=request_id))
                  for request_id in request_ids])


def test_view_follows_the_running_set():
    running = RunningSet()
    view = LauncherView(running)
    assert view.config is None
    assert dict(view.providers) == {}
    assert view.pool_launcher_id("p", "main") is None
    assert view.handled_request_ids() == set()

    config = SimpleNamespace(name="first")
    running.config = config
    running.providers = {"p": "provider p"}
    running.pool_workers = {("p", "main"): worker("id-1", "100", "101"),
                            ("p", "other"): worker("id-2", "102")}
    assert view.config is config
    assert dict(view.providers) == {"p": "provider p"}
    assert view.pool_launcher_id("p", "main") == "id-1"
    assert view.pool_launcher_id("p", "gone") is None
    assert view.handled_request_ids() == {"100", "101", "102"}

    # The owner replaces a map; a reader's earlier snapshot stays as it was.
    before = view.providers
    running.providers = {}
    running.pool_workers = {}
    assert dict(before) == {"p": "provider p"}
    assert dict(view.providers) == {}
    assert view.handled_request_ids() == set()


def test_view_cannot_change_the_providers():
    running = RunningSet()
    running.providers = {"p": "provider p"}
    view = LauncherView(running)
    with pytest.raises(TypeError):
        view.providers["q"] = "provider q"
    with pytest.raises(AttributeError):
        view.config = SimpleNamespace()
    assert running.providers == {"p": "provider p"}


@pytest.fixture
def services(zk_client):
    cache = NodeCache(zk_client)
    cache.start()
    assert cache.ensure_ready(30)
    yield ProviderServices(zk_client, NodeStore(zk_client, cache=cache),
                           RequestStore(zk_client), ImageStore(zk_client),
                           node_cache=cache)
    cache.stop()


def held_node(store, age: float) -> Node:
    node = Node()
    node.state = NodeState.HOLD
    node.provider = "p"
    node.pool = "main"
    node.type = ["small"]
    node.state_time = time.time() - age
    store.store_node(node)
    return node


def test_cleanup_worker_reads_the_current_config(services):
    running = RunningSet()
    running.config = SimpleNamespace(max_hold_age=3600, labels={})
    worker = CleanupWorker(LauncherView(running), services, interval=60)
    old = held_node(services.nodes, age=600)
    young = held_node(services.nodes, age=10)
    wait_for(lambda: {old.id, young.id} <= set(services.node_cache.ids()))

    worker.cleanup_max_hold_age()
    assert services.nodes.get_node(old.id, cached=False).state == \
        NodeState.HOLD

    # A reload the worker was not told about: it sees the new limit.
    running.config = SimpleNamespace(max_hold_age=300, labels={})
    worker.cleanup_max_hold_age()
    assert services.nodes.get_node(old.id, cached=False).state == \
        NodeState.DELETING
    assert services.nodes.get_node(young.id, cached=False).state == \
        NodeState.HOLD
