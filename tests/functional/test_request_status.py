# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Why is my request waiting?  The launcher's request journal as the web
app (``/request-status``), the pool component records (``waiting``) and
``nodepool request-list --detail`` show it (doc/source/request-status.rst).
"""

import http.client
import json

import pytest

from nodepool.cmd import nodepoolcmd
from nodepool.web.app import WebApp
from nodepool.zk.models import NodeRequest, RequestState
from nodepool.zk.requests import RequestStore
from tests.fixtures import zkserver
from tests.fixtures.waits import wait_for

REQUEST_TITLES = ["Request ID", "Priority", "State", "Requestor",
                  "Node Types", "Nodes", "Declined By", "Event ID"]


@pytest.fixture
def web(launcher_factory):
    apps = []

    def start(launcher):
        app = WebApp(launcher, "127.0.0.1", 0)
        app.start()
        apps.append(app)
        return app
    yield start
    for app in apps:
        app.stop()


def get(app, path):
    """``(status, decoded JSON or text)``."""
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.headers["Content-Type"] == "application/json":
            return response.status, json.loads(body)
        return response.status, body.decode("utf-8")
    finally:
        conn.close()


def status_of(app, request_id):
    code, body = get(app, "/request-status/%s" % request_id)
    assert code == 200, body
    return body


def reason_of(app, request_id):
    """The request's reason; None while the launcher does not know it."""
    code, body = get(app, "/request-status/%s" % request_id)
    return body["reason"] if code == 200 else None


@pytest.fixture
def cli(tmp_path, zk_server, zk_chroot, capsys):
    """``nodepool request-list`` on the test's chroot: its table rows."""
    path = tmp_path / "cli.yaml"
    path.write_text(zkserver.client_config(
        zk_server.host, zk_server.secure_port, zk_chroot, zk_server.certs)
        + "labels: []\nproviders: []\n")

    def run(*args):
        capsys.readouterr()
        assert nodepoolcmd.main(["-c", str(path), "request-list"]
                                + list(args)) == 0
        out = capsys.readouterr().out
        return [[c.strip() for c in line.strip("|").split("|")]
                for line in out.splitlines() if line.startswith("|")]
    return run


def row_of(rows, request_id):
    return dict(zip(rows[0], [r for r in rows if r[0] == request_id][0]))


def test_paused_on_max_servers(launcher_factory, zuul, web, cli):
    launcher = launcher_factory(max_servers=1)
    app = web(launcher)
    worker = launcher.pool_workers[("fake", "main")]
    first = zuul.run_job(["small"])
    waiting = zuul.submit(["small"])
    wait_for(lambda: worker.paused, message="pool never paused")
    behind = zuul.submit(["small"])

    held = status_of(app, waiting.id)
    assert held["state"] == "pending"
    assert held["reason"] == "paused-quota"
    assert held["pool"] == "fake/main"
    assert held["detail"].startswith("max-servers (no room for small)")
    events = [e["event"] for e in held["timeline"]]
    assert events[0].startswith("accepted: by ")
    assert any(e.startswith("paused-quota: max-servers") for e in events)

    # The next request waits because the pool is paused.
    wait_for(lambda: reason_of(app, behind.id) == "paused-quota")
    assert "serving %s" % waiting.id in status_of(app, behind.id)["detail"]

    code, pending = get(app, "/request-status")
    assert code == 200
    by_id = {row["id"]: row for row in pending}
    assert set(by_id) == {waiting.id, behind.id}
    assert by_id[waiting.id]["reason"] == "paused-quota"
    assert by_id[waiting.id]["node_types"] == ["small"]

    # The pool record carries it (within a few seconds) for the CLI.
    rows = wait_for(lambda: (lambda r: len(r[0]) == 9 and all(
        row_of(r, rid)["Reason"] for rid in (waiting.id, behind.id))
        and r)(cli("--detail")), timeout=30, interval=0.5)
    assert rows[0] == REQUEST_TITLES + ["Reason"]
    reason = row_of(rows, waiting.id)["Reason"]
    assert reason.startswith("paused-quota: max-servers (no room for small)")
    assert reason.endswith("(pool fake/main)")
    assert row_of(rows, behind.id)["Reason"].startswith("paused-quota: ")
    # Without --detail: the columns of nodepool 11.
    assert cli()[0] == REQUEST_TITLES

    # Room again: served, and the timeline stays after Zuul took the nodes
    # and deleted the request.
    zuul.finish(first)
    done = zuul.wait_for_request(waiting)
    assert done.state == RequestState.FULFILLED
    nodes = zuul.accept_nodes(done)
    wait_for(lambda: launcher.services.request_cache.get(waiting.id) is None)
    served = status_of(app, waiting.id)
    assert served["state"] is None
    assert served["reason"] == "fulfilled"
    assert served["detail"] == "nodes %s" % nodes[0].id
    events = [e["event"] for e in served["timeline"]]
    assert "unpaused: room for every node" in events
    assert any(e.startswith("node %s: ready" % nodes[0].id)
               for e in events)
    assert any("Node %s is ready" % nodes[0].id in e for e in events), \
        "the launch's own log lines are in the timeline"
    zuul.finish(nodes)
    zuul.finish(zuul.accept_nodes(zuul.wait_for_request(behind)))


def test_label_nobody_serves(launcher_factory, zuul, web):
    launcher = launcher_factory()
    app = web(launcher)
    request = zuul.submit(["no-such-label"])
    done = zuul.wait_for_request(request)
    assert done.state == RequestState.FAILED
    wait_for(lambda: reason_of(app, request.id) == "failed")
    described = status_of(app, request.id)
    assert described["pools"]["fake/main"]["detail"] == \
        "declined by every pool"
    events = [e["event"] for e in described["timeline"]]
    assert events == [
        "label-not-served: node type(s) ['no-such-label'] not available",
        "failed: declined by every pool"]
    assert get(app, "/request-status/200-9999999999")[0] == 404
    assert get(app, "/request-status/a/b/c")[0] == 404


def test_cli_names_labels_no_pool_serves(zk_client, cli):
    requests = RequestStore(zk_client)
    request = NodeRequest.new(["gpu"], "zuul01")
    requests.submit_request(request, priority="200")
    rows = cli("--detail")
    assert row_of(rows, request.id)["Reason"] == \
        "label-not-served: no registered pool serves gpu"


def test_waiting_field_written_only_when_changed(launcher_factory, zuul):
    launcher = launcher_factory(max_servers=1)
    worker = launcher.pool_workers[("fake", "main")]
    kazoo = zuul.kazoo

    def record():
        data, stat = kazoo.get(worker.component.path)
        return json.loads(data), stat.version

    wait_for(lambda: worker.component.registered
             and record()[0]["state"] == "running")
    content, idle_version = record()
    assert "waiting" not in content  # as nodepool 11 writes it when idle
    passes = worker.passes
    wait_for(lambda: worker.passes >= passes + 10)
    assert record()[1] == idle_version

    first = zuul.run_job(["small"])
    waiting = zuul.submit(["small"])
    wait_for(lambda: waiting.id in record()[0].get("waiting", {}),
             timeout=30)
    # Steady now: paused, one request waiting.  A whole publishing
    # interval of passes later the record is unchanged.
    content, version = record()
    assert content["paused"] is True
    assert content["waiting"][waiting.id].startswith("paused-quota: ")
    wait_for(lambda: worker.publisher.due(), timeout=30)
    passes = worker.passes
    wait_for(lambda: worker.passes >= passes + 10)
    assert record()[1] == version
    # A handful of writes for all that, not one per pass or request.
    assert version - idle_version <= 4
    zuul.finish(first)
    zuul.finish(zuul.accept_nodes(zuul.wait_for_request(waiting)))
    # Nothing waits any more: the field goes again.
    wait_for(lambda: "waiting" not in record()[0], timeout=30)


def test_pools_say_why_they_leave_a_request(launcher_factory, zuul):
    from tests.functional.test_launcher_providers import two_providers
    # "second" has the better priority (50) but no "large".
    launcher = two_providers(launcher_factory)
    first = launcher.pool_workers[("first", "main")]
    second = launcher.pool_workers[("second", "main")]
    pools = launcher.services.registry.pools()
    small = zuul.submit(["small"])
    large = zuul.submit(["large"])
    hinted = zuul.submit(["small"], provider="first")
    assert first._skip_reason(small, set(first.pool.labels), pools) == (
        "yielded", "pool second/main has a higher priority")
    labels = set(second.pool.labels)
    assert second._skip_reason(small, labels, pools) is None
    assert second._skip_reason(large, labels, pools) == (
        "label-not-served", "['large'] not in this pool; left to 1 other "
        "pool(s)")
    assert second._skip_reason(hinted, labels, pools) == (
        "yielded", "it asks for provider first")
    for request in (small, large, hinted):
        zuul.finish(zuul.accept_nodes(zuul.wait_for_request(request)))
