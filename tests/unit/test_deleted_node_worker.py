# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""DeletedNodeWorker on its own: which nodes a pass looks at.

A pass over every node runs every ``interval`` seconds and on a plain
wake(); a node whose record or lock changed (``node_changed``) is looked at
right away, without a pass over the others.  The threads are not started:
the tests call ``run_once`` as the loop would, with a clock they move.
"""

from types import SimpleNamespace

from nodepool.launcher.cleanup import DeletedNodeWorker
from nodepool.zk.models import Node, NodeState


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Cache:
    """The node cache's reading side over a dict, counting full reads."""

    def __init__(self):
        self.nodes: dict = {}
        self.full_reads = 0

    def values(self):
        self.full_reads += 1
        return list(self.nodes.values())

    def get(self, node_id):
        return self.nodes.get(node_id)


class Store:
    """Node locking as the node store does it, without ZooKeeper."""

    def lock_node(self, node, blocking=True):
        node.lock = object()

    def unlock_node(self, node):
        node.lock = None


class Provider:
    def __init__(self):
        self.cleaned: list = []
        self.delete_runner = SimpleNamespace(items=lambda: [])

    def launching(self, node_id):
        return False

    def start_node_cleanup(self, node):
        self.cleaned.append(node.id)


def make_worker():
    cache, provider, clock = Cache(), Provider(), Clock()
    services = SimpleNamespace(
        node_cache=cache, nodes=Store(), registry=None,
        zk_client=SimpleNamespace(connected=True))
    view = SimpleNamespace(providers={"p1": provider})
    worker = DeletedNodeWorker(view, services, 5.0, clock=clock)
    return worker, cache, provider, clock


def add_node(cache, node_id, state, provider="p1"):
    node = Node(node_id)
    node.provider = provider
    node.state = state
    cache.nodes[node_id] = node
    return node


def test_changed_nodes_are_looked_at_without_a_full_pass():
    worker, cache, provider, clock = make_worker()
    add_node(cache, "1", NodeState.READY)
    # The first pass looks at every node.
    assert worker.run_once() == 5.0
    assert (worker.full_passes, cache.full_reads) == (1, 1)
    add_node(cache, "2", NodeState.USED)
    add_node(cache, "3", NodeState.USED)
    add_node(cache, "4", NodeState.USED, provider="elsewhere")
    clock.now += 1
    worker.node_changed(cache.nodes["2"])
    worker.node_changed(cache.nodes["4"])
    worker.node_changed(Node("gone"))  # removed meanwhile: skipped
    # Only node 2 is started; node 3 waits for the next full pass, which
    # stays due at its time.
    assert worker.run_once() == 4.0
    assert provider.cleaned == ["2"]
    assert (worker.full_passes, cache.full_reads) == (1, 1)
    # A wake-up with nothing changed looks at nothing.
    assert worker.run_once() == 4.0
    assert provider.cleaned == ["2"]
    clock.now += 4
    assert worker.run_once() == 5.0
    assert provider.cleaned == ["2", "3"]
    assert worker.full_passes == 2


def test_plain_wake_runs_a_full_pass():
    worker, cache, provider, clock = make_worker()
    worker.run_once()
    add_node(cache, "1", NodeState.FAILED)
    worker.wake()
    assert worker.run_once() == 5.0
    assert provider.cleaned == ["1"] and worker.full_passes == 2


def test_changed_node_still_checked_like_in_a_full_pass():
    worker, cache, provider, clock = make_worker()
    worker.run_once()
    held = add_node(cache, "1", NodeState.USED)
    held.lock_contenders.add("zuul")
    add_node(cache, "2", NodeState.READY)
    worker.node_changed(cache.nodes["2"])
    worker.run_once()
    assert provider.cleaned == []
    # Ignored while the lock is held: the lock's release is a change too.
    worker.node_changed(held)
    held.lock_contenders.clear()
    worker.run_once()
    assert provider.cleaned == []
    # Zuul lets go: the lock change brings the node in.
    worker.node_changed(held)
    worker.run_once()
    assert provider.cleaned == ["1"]
    assert worker.full_passes == 1


def test_no_pass_while_disconnected():
    worker, cache, provider, clock = make_worker()
    worker.services.zk_client.connected = False
    worker.node_changed(add_node(cache, "1", NodeState.USED))
    assert worker.run_once() is None
    assert provider.cleaned == [] and cache.full_reads == 0
    worker.services.zk_client.connected = True
    worker.run_once()
    assert provider.cleaned == ["1"]


def test_node_of_a_shared_provider_left_to_its_launcher_for_a_while():
    """Several launchers serve provider p1: a used node is deleted by the
    one that launched it; the others step in once it is gone from the
    registry or the node has waited LAUNCHER_DELETE_GRACE seconds."""
    import time

    from nodepool.launcher import cleanup
    worker, cache, provider, clock = make_worker()
    registered = [SimpleNamespace(id="other-main", provider_name="p1"),
                  SimpleNamespace(id="ours-main", provider_name="p1"),
                  SimpleNamespace(id="third-main", provider_name="p2")]
    worker.services.registry = SimpleNamespace(pools=lambda: registered)
    worker.view.pool_launcher_id = lambda provider, pool: "ours-main"
    nodes = {}
    for node_id, launcher in (("theirs", "other-main"), ("ours", "ours-main"),
                              ("gone", "departed-main"),
                              ("odd", "third-main"), ("old", None)):
        nodes[node_id] = add_node(cache, node_id, NodeState.USED)
        nodes[node_id].launcher = launcher
        nodes[node_id].state_time = time.time()
    worker.run_once()
    assert sorted(provider.cleaned) == ["gone", "odd", "old", "ours"]
    nodes["theirs"].state_time -= cleanup.LAUNCHER_DELETE_GRACE + 1
    worker.node_changed(nodes["theirs"])
    clock.now += 1
    worker.run_once()
    assert provider.cleaned[-1] == "theirs"
