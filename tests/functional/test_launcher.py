# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The launcher end to end: real ZooKeeper, the launcher in-process with the
test driver, and a client that behaves like Zuul."""

import json
import os
import time
from dataclasses import replace

from nodepool.zk.models import NodeState, RequestState
from tests.fakes.test_driver import FakeCloud
from tests.fixtures.waits import wait_for
from tests.functional.conftest import FAST, read_nodes


def test_request_fulfilled_in_node_type_order(launcher_factory, zuul):
    launcher_factory()
    request = zuul.submit(["large", "small", "small"])
    done = zuul.wait_for_request(request, timeout=30)
    assert done.state == RequestState.FULFILLED
    assert len(done.nodes) == 3
    nodes = zuul.accept_nodes(done)
    assert [n.type for n in nodes] == [["large"], ["small"], ["small"]]
    for node in nodes:
        assert node.state == NodeState.IN_USE
        assert node.provider == "fake" and node.pool == "main"
        assert node.allocated_to == done.id
        assert node.external_id.startswith("i-")
        assert node.interface_ip.startswith("fake-")
        assert node.host_keys == []
        assert node.launcher.endswith(
            "PoolWorker.fake-main-" + node.launcher.rsplit("-", 1)[1])
    assert nodes[0].resources == {"cores": 4, "instances": 1, "ram": 1024}
    assert nodes[1].requestor == zuul.hostname
    zuul.return_nodes(nodes)
    cloud = FakeCloud.get("fake")
    wait_for(lambda: not cloud.list() and not zuul_nodes(zuul))
    assert cloud.deleted == 3


def zuul_nodes(zuul):
    if not zuul.kazoo.exists("/nodepool/nodes"):
        return []
    return zuul.kazoo.get_children("/nodepool/nodes")


def test_unknown_label_fails_request(launcher_factory, zuul):
    launcher = launcher_factory()
    request = zuul.submit(["no-such-label"])
    done = zuul.wait_for_request(request, timeout=30)
    assert done.state == RequestState.FAILED
    worker = launcher.pool_workers[("fake", "main")]
    assert done.declined_by == [worker.launcher_id]


def test_ready_node_reused(launcher_factory, zuul):
    launcher_factory(min_ready=1)
    cloud = FakeCloud.get("fake")
    wait_for(lambda: any(
        n.state == NodeState.READY and not n.allocated_to
        for n in launcher_nodes(zuul)), timeout=30)
    created = cloud.created
    request = zuul.submit(["small"])
    done = zuul.wait_for_request(request)
    assert done.state == RequestState.FULFILLED
    # The warm node was handed out; a new one is then made for min-ready.
    nodes = zuul.accept_nodes(done)
    assert int(nodes[0].external_id.split("-")[1]) <= created
    wait_for(lambda: cloud.created == created + 1)
    zuul.return_nodes(nodes)


def launcher_nodes(zuul):
    """Every readable node record, as a Zuul-side observer sees them."""
    return read_nodes(zuul.kazoo)


def test_min_ready_nodes_launched(launcher_factory, zuul):
    launcher_factory(min_ready=2)
    wait_for(lambda: sum(
        1 for n in launcher_nodes(zuul)
        if n.state == NodeState.READY and n.type == ["small"]
        and not n.allocated_to) == 2, timeout=30)
    # min-ready requests are cleaned up once served.
    wait_for(lambda: not zuul.kazoo.get_children("/nodepool/requests"))


def test_quota_pause_then_serve(launcher_factory, zuul):
    launcher = launcher_factory(max_servers=1)
    first = zuul.wait_for_request(zuul.submit(["small"]))
    nodes = zuul.accept_nodes(first)
    second = zuul.submit(["small"])
    worker = launcher.pool_workers[("fake", "main")]
    wait_for(lambda: worker.paused)
    assert zuul.get_request(second).state == RequestState.PENDING
    zuul.return_nodes(nodes)
    done = zuul.wait_for_request(second)
    assert done.state == RequestState.FULFILLED
    assert not worker.paused


def test_request_larger_than_pool_declined(launcher_factory, zuul):
    launcher_factory(max_servers=2)
    done = zuul.wait_for_request(zuul.submit(["small"] * 3))
    assert done.state == RequestState.FAILED


def test_malformed_request_does_not_stop_launcher(launcher_factory, zuul):
    launcher_factory()
    zuul.kazoo.create("/nodepool/requests/200-", b"{junk",
                      sequence=True, makepath=True)
    zuul.kazoo.create("/nodepool/requests/200-", json.dumps(
        {"state": "requested"}).encode(), sequence=True)
    done = zuul.wait_for_request(zuul.submit(["small"]))
    assert done.state == RequestState.FULFILLED


def test_two_launchers_share_requests(launcher_factory, zuul):
    launcher_factory()
    launcher_factory()
    requests = [zuul.submit(["small"]) for _ in range(10)]
    results = [zuul.wait_for_request(r) for r in requests]
    assert all(r.state == RequestState.FULFILLED for r in results)
    node_ids = [n for r in results for n in r.nodes]
    assert len(set(node_ids)) == 10
    assert FakeCloud.get("fake").created == 10


def test_used_nodes_deleted_and_unlocked_in_use_nodes_too(
        launcher_factory, zuul):
    launcher_factory()
    done = zuul.wait_for_request(zuul.submit(["small", "small"]))
    nodes = zuul.accept_nodes(done)
    # One returned normally, the other abandoned while in-use (Zuul died).
    zuul.return_nodes(nodes[:1])
    zuul.return_nodes(nodes[1:], state="in-use")
    wait_for(lambda: not zuul_nodes(zuul))
    assert not FakeCloud.get("fake").list()


def test_config_reload_adds_label(launcher_factory, zuul, tmp_path):
    launcher = launcher_factory()
    path = launcher.watcher.path
    text = open(path).read().replace(
        "  - name: large\n", "  - name: large\n  - name: extra\n", 1)
    text = text.replace("          - name: small\n",
                        "          - name: small\n          - name: extra\n")
    with open(path, "w") as f:
        f.write(text)
    os.utime(path, (time.time() + 5, time.time() + 5))

    def reloaded():
        worker = launcher.pool_workers.get(("fake", "main"))
        return worker is not None and "extra" in worker.pool.labels
    wait_for(reloaded)
    done = zuul.wait_for_request(zuul.submit(["extra"]), timeout=30)
    assert done.state == RequestState.FULFILLED


def test_used_node_deleted_when_released_not_at_next_tick(launcher_factory,
                                                          zuul):
    # The deleted-node worker's own tick is an hour away: only the node's
    # unlock (after Zuul marked it used) can start the deletion.
    launcher_factory(intervals=replace(FAST, deleted_nodes=3600))
    cloud = FakeCloud.get("fake")
    nodes = zuul.run_job(["small"])
    zuul.finish(nodes)
    wait_for(lambda: not read_nodes(zuul.kazoo) and not cloud.list(),
             timeout=20, message="used node not deleted on release")
