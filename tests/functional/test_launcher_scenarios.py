# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Launcher scenarios from the operator's checklist: wedging at
max-servers, stray allocations, timeouts, failing and disabled providers,
paused pools, provider removal and broken node records."""

import json
import logging

from nodepool.zk.models import Node, NodeState, RequestState
from nodepool.zk.nodes import NodeStore
from tests.fakes.test_driver import FakeCloud
from tests.fixtures.zkserver import free_port
from tests.fixtures.waits import wait_for
from tests.functional.conftest import read_nodes

TWO_PROVIDERS = """
labels:
  - name: small
providers:
  - name: broken
    driver: test
    priority: 1
    launch-retries: 1
    pools:
      - name: main
        labels:
          - name: small
  - name: healthy
    driver: test
    priority: 50
    pools:
      - name: main
        labels:
          - name: small
"""


def one_server(launcher_factory, **params):
    return launcher_factory(**dict(dict(max_servers=1), **params))


def nodes_of(zuul, state=None, label=None):
    return [n for n in read_nodes(zuul.kazoo)
            if (state is None or n.state == state)
            and (label is None or label in (n.type or ()))]


def test_idle_ready_node_does_not_wedge_a_full_pool(launcher_factory, zuul):
    # One server allowed, taken by an idle min-ready node of another
    # label: the launcher deletes it to serve the request.
    one_server(launcher_factory, min_ready=1)
    (idle,) = wait_for(lambda: nodes_of(zuul, NodeState.READY, "small")
                       or None)
    done = zuul.wait_for_request(zuul.submit(["large"]), timeout=60)
    assert done.state == RequestState.FULFILLED
    nodes = zuul.accept_nodes(done)
    assert [n.type for n in nodes] == [["large"]]
    assert idle.id not in [n.id for n in read_nodes(zuul.kazoo)
                           if n.state != NodeState.DELETING]
    zuul.finish(nodes)


def test_ready_node_allocated_to_a_vanished_request_is_freed(
        launcher_factory, zuul):
    launcher = one_server(launcher_factory, min_ready=1)
    (node,) = wait_for(lambda: nodes_of(zuul, NodeState.READY) or None)
    store = NodeStore(launcher.services.zk_client)
    record = store.get_node(node.id, cached=False)
    record.allocated_to = "200-9999999999"
    store.lock_node(record, timeout=10)
    try:
        store.store_node(record)
    finally:
        store.unlock_node(record)
    wait_for(lambda: zuul._read_raw_node(node.id)[0].get(
        "allocated_to") is None, message="allocation not cleared")
    # The freed node serves the next request.
    done = zuul.wait_for_request(zuul.submit(["small"]))
    assert done.nodes == [node.id]
    zuul.finish(zuul.accept_nodes(done))


def test_launch_timeout_fails_the_request(launcher_factory, zuul):
    one_server(launcher_factory, launch_timeout=1, retries=1)
    cloud = FakeCloud.get("fake")
    cloud.paused.set()  # creates never finish
    done = zuul.wait_for_request(zuul.submit(["small"]), timeout=60)
    assert done.state == RequestState.FAILED
    assert done.declined_by
    cloud.paused.clear()
    # The timed-out instance is deleted, not leaked.
    wait_for(lambda: not cloud.list(), message="instance leaked")


def test_pool_with_no_servers_fails_requests(launcher_factory, zuul):
    one_server(launcher_factory, max_servers=0)
    done = zuul.wait_for_request(zuul.submit(["small"]))
    assert done.state == RequestState.FAILED
    assert FakeCloud.get("fake").created == 0


def test_failing_provider_hands_request_to_the_next(launcher_factory, zuul):
    FakeCloud.get("broken").fail_creates = 100
    launcher = launcher_factory(TWO_PROVIDERS)
    # Until both pools are registered the lower-priority one does not
    # know it should leave the request to the other.
    wait_for(lambda: len(launcher.services.registry.pools()) == 2)
    done = zuul.wait_for_request(zuul.submit(["small"]), timeout=60)
    assert done.state == RequestState.FULFILLED
    assert any(d.startswith("broken") or "broken" in d
               for d in done.declined_by), done.declined_by
    (node,) = zuul.accept_nodes(done)
    assert node.provider == "healthy"
    zuul.finish([node])


def test_paused_pool_still_fails_impossible_requests_and_serves_in_order(
        launcher_factory, zuul):
    one_server(launcher_factory)
    first = zuul.run_job(["small"])  # the pool is now full
    waiting = [zuul.submit(["small"]), zuul.submit(["small"])]
    wait_for(lambda: zuul.get_request(waiting[0]).state
             == RequestState.PENDING, message="first waiting request")
    # Paused for quota, the pool still declines what it can never serve.
    bad = zuul.wait_for_request(zuul.submit(["missing-label"]))
    assert bad.state == RequestState.FAILED
    # Released nodes let the waiting requests through, in order.
    zuul.finish(first)
    done = zuul.wait_for_request(waiting[0], timeout=60)
    assert done.state == RequestState.FULFILLED
    assert zuul.get_request(waiting[1]).state in (RequestState.REQUESTED,
                                                  RequestState.PENDING)
    zuul.finish(zuul.accept_nodes(done))
    done = zuul.wait_for_request(waiting[1], timeout=60)
    assert done.state == RequestState.FULFILLED
    zuul.finish(zuul.accept_nodes(done))


def test_removed_provider_stops_its_pool(launcher_factory, zuul, tmp_path):
    launcher = launcher_factory(TWO_PROVIDERS)
    registry = launcher.services.registry

    def pools():
        return sorted(p.to_dict().get("provider_name")
                      for p in registry.pools())
    wait_for(lambda: pools() == ["broken", "healthy"])
    config = tmp_path / "nodepool-0.yaml"
    text = config.read_text()
    config.write_text(text[:text.index("  - name: healthy")])
    wait_for(lambda: pools() == ["broken"], timeout=30,
             message="removed provider's pool still registered")
    assert "healthy" not in launcher.providers


def test_pool_records_are_complete_from_their_first_write(
        launcher_factory, zuul):
    """A pool record is created with its provider, labels and priority:
    another launcher or Zuul reading it never sees it half filled in."""
    launcher_factory(TWO_PROVIDERS)
    kazoo = zuul.kazoo
    root = "/nodepool/components/pool"
    wait_for(lambda: kazoo.exists(root)
             and len(kazoo.get_children(root)) == 2)
    for child in kazoo.get_children(root):
        data, stat = kazoo.get(root + "/" + child)
        record = json.loads(data)
        # Version 0: the content was never rewritten after the create.
        assert stat.version == 0, record
        assert record["provider_name"] in ("broken", "healthy")
        assert record["supported_labels"] == ["small"]


def test_broken_node_records_do_not_stop_launching(launcher_factory, zuul):
    one_server(launcher_factory, max_servers=5)
    kazoo = zuul.kazoo
    # A record without type or pool, one with junk JSON, an empty one.
    kazoo.create("/nodepool/nodes/9000000001",
                 json.dumps({"state": "ready"}).encode(), makepath=True)
    kazoo.create("/nodepool/nodes/9000000002", b"{not json",
                 makepath=True)
    kazoo.create("/nodepool/nodes/9000000003", b"", makepath=True)
    for _ in range(2):
        done = zuul.wait_for_request(zuul.submit(["small"]))
        assert done.state == RequestState.FULFILLED
        (node,) = zuul.accept_nodes(done)
        assert isinstance(node, Node) and node.type == ["small"]
        zuul.finish([node])


def test_nodes_of_a_request_share_one_zone(launcher_factory, zuul):
    cloud = FakeCloud.get("fake")
    cloud.azs = ["zone-a", "zone-b", "zone-c"]
    one_server(launcher_factory, max_servers=10)
    seen = set()
    for _ in range(4):
        done = zuul.wait_for_request(zuul.submit(["small", "small",
                                                  "large"]))
        nodes = zuul.accept_nodes(done)
        zones = {n.az for n in nodes}
        assert len(zones) == 1 and zones <= set(cloud.azs), zones
        seen |= zones
        zuul.finish(nodes)
    # The pool has no zones of its own: they come from the cloud.
    assert seen <= set(cloud.azs)


SCANNED_WITH_CONSOLE = """
labels:
  - name: small
providers:
  - name: fake
    driver: test
    boot-timeout: 1
    launch-retries: 2
    pools:
      - name: main
        labels:
          - name: small
            host-key-checking: true
            console-log: true
"""


def test_console_log_fetched_after_failed_scan(launcher_factory, zuul,
                                               caplog):
    caplog.set_level(logging.INFO, logger="nodepool")
    cloud = FakeCloud.get("fake")
    cloud.address = ("127.0.0.1", free_port())  # nothing listens
    launcher_factory(SCANNED_WITH_CONSOLE)
    done = zuul.wait_for_request(zuul.submit(["small"]), timeout=60)
    assert done.state == RequestState.FAILED
    # One console fetch per failed attempt, logged with the node's id.
    wait_for(lambda: len(cloud.console_requests) == 2)
    wait_for(lambda: sum("Console log of" in r.getMessage()
                         and "login:" in r.getMessage()
                         for r in caplog.records) == 2)
