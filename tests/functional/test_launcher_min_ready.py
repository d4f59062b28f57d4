# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""min-ready: no nodes for labels without it, one set of nodes for several
launchers, and its requests declined at capacity."""

from nodepool.launcher.request_handler import MIN_READY_REQUESTOR
from nodepool.zk.models import Node, NodeState, RequestState
from nodepool.zk.nodes import NodeStore
from tests.fakes.test_driver import FakeCloud
from tests.fixtures.waits import wait_for
from tests.functional.conftest import idle_ready, node_ids, nodes_of


def test_label_without_min_ready_gets_no_nodes(launcher_factory, zuul):
    launcher = launcher_factory(min_ready=0)
    # Each main-loop pass (connected to ZooKeeper) runs min-ready.
    wait_for(lambda: launcher.main_loop.passes >= 5)
    assert not zuul.kazoo.exists("/nodepool/requests") or \
        not zuul.kazoo.get_children("/nodepool/requests")
    assert not node_ids(zuul.kazoo)
    assert FakeCloud.get("fake").created == 0


LAUNCHER_ONE = """
labels:
  - name: small
    min-ready: 1
providers:
  - name: {provider}
    driver: test
    pools:
      - name: main
        labels:
          - name: small
"""


def test_two_launchers_share_min_ready(launcher_factory, zuul):
    one = launcher_factory(LAUNCHER_ONE, provider="alpha")
    two = launcher_factory(LAUNCHER_ONE, provider="beta")
    (node,) = wait_for(lambda: idle_ready(zuul) or None, timeout=30)
    assert node.provider in ("alpha", "beta")
    assert node.type == ["small"]
    # Each launcher's min-ready pass (one per main-loop pass) sees the
    # node; no second one is made.
    start = {launcher: launcher.main_loop.passes for launcher in (one, two)}
    wait_for(lambda: all(
        launcher.main_loop.passes - passes >= 3
        for launcher, passes in start.items()) and not any(
        launcher.min_ready.submitted for launcher in (one, two)),
        timeout=30)
    assert len(nodes_of(zuul, label="small")) == 1


def test_ready_node_of_a_vanished_request_counts_for_min_ready(
        launcher_factory, zuul, zk_factory):
    """A ready node still allocated to a request that is gone is about to
    be released (another launcher fulfilled its min-ready request and
    deleted it; our node cache may show the release later than our
    request cache shows the delete): min-ready counts it rather than
    asking for a second node."""
    store = NodeStore(zk_factory())
    node = Node()
    node.state = NodeState.READY
    node.provider, node.pool, node.type = "fake", "main", ["small"]
    node.external_id = "gone-request-node"
    node.allocated_to = "100-0000099999"  # no such request
    store.store_node(node)
    # Held here, so that cleanup cannot free it during the test.
    store.lock_node(node, blocking=True, timeout=10)
    try:
        launcher = launcher_factory(min_ready=1)
        passes = launcher.main_loop.passes
        wait_for(lambda: launcher.main_loop.passes >= passes + 5)
        assert not launcher.min_ready.submitted
        assert FakeCloud.get("fake").created == 0
    finally:
        store.unlock_node(node)


def test_min_ready_request_at_capacity_is_declined(launcher_factory, zuul):
    launcher_factory(max_servers=1)
    nodes = zuul.run_job(["small"])
    request = zuul.submit(["small"], requestor=MIN_READY_REQUESTOR,
                          reuse=False)
    done = zuul.wait_for_request(request)
    assert done.state == RequestState.FAILED
    assert done.declined_by
    assert FakeCloud.get("fake").created == 1
    zuul.delete_request(done)
    zuul.finish(nodes)
