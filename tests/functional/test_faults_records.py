# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Fault scenario: garbage in ZooKeeper records (issue 10, scenario 5).

The in-process launcher on the loopback OpenStack fake and a real
ZooKeeper; a second client writes malformed znodes the way a buggy or
hostile party would.  Each time the launcher must log the path once, keep
serving everybody else, fail a malformed request (state ``failed``, a valid
record its requestor can read and delete) instead of leaving it
``requested`` forever, never treat the server of an unreadable node record
as leaked, and leave nothing behind once the good nodes are released.  The
CLI listings and the web app must survive the same garbage.
"""

import http.client
import json
import logging
import subprocess

import pytest
from kazoo.exceptions import NoNodeError

from nodepool.driver.statemachine.adapter import Resource
from nodepool.web.app import WebApp
from nodepool.zk import paths
from nodepool.zk.models import NodeRequest, NodeState, RequestState
from tests.fakes.openstack import IMAGE_ID
from tests.fakes.test_driver import FakeCloud
from tests.fixtures import processes
from tests.fixtures.waits import wait_for
from tests.functional.conftest import node_ids, read_nodes

CONFIG = """
labels:
  - name: small
providers:
  - name: os
    driver: openstack
    cloud: fake
    region-name: RegionOne
    rate: 0
    cloud-images:
      - name: base
        image-name: Fake Image
        username: zuul
    pools:
      - name: main
        max-servers: 10
        host-key-checking: false
        networks: [private]
        labels:
          - name: small
            cloud-image: base
            min-ram: 2048
"""

# Zuul-ish request fields a salvaged record should keep.
SCRIPT = processes.console_script("nodepool")

REQUESTOR_DATA = {"build_set_uuid": "b5", "tenant_name": "t1",
                  "job_name": "linters"}


def request_json(**fields):
    data = {"state": "requested", "state_time": 1.0,
            "node_types": ["small"], "requestor": "zuul-bad",
            "requestor_data": REQUESTOR_DATA, "relative_priority": 0,
            "event_id": "e-1", "provider": None, "tenant_name": None,
            "created_time": 1.0}
    for key, value in fields.items():
        if value is KeyError:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data).encode("utf-8")


# name -> (payload, whether the requestor fields survive the failing)
BAD_REQUESTS = {
    "truncated-json": (b'{"state": "requested", "node_types": ["sm', False),
    "json-list": (b"[]", False),
    "json-string": (b'"x"', False),
    "json-null": (b"null", False),
    "binary": (b"\x00\xff\xfe\x80garbage\xc3\x28", False),
    "empty": (b"", False),
    "node-types-string": (request_json(node_types="small"), True),
    "no-node-types": (request_json(node_types=KeyError), True),
    "node-types-null": (request_json(node_types=None), True),
    "unknown-state": (request_json(state="bogus"), True),
    "wrong-types": (request_json(relative_priority="high",
                                 tenant_name=["t"]), True),
    "huge": (request_json(node_types="small",
                          junk="x" * 600_000), True),
}


@pytest.fixture
def cloud(openstack_cloud):
    return openstack_cloud


@pytest.fixture
def cli(tmp_path, zk_server, zk_chroot):
    """Run the ``nodepool`` console script: (status, stdout, stderr).

    A real process, so that its log lines and any traceback land on its
    stderr as an operator would see them.
    """
    path = processes.write_config(tmp_path / "cli.yaml", zk_server,
                                  zk_chroot)

    def run(*args):
        result = subprocess.run([SCRIPT, "-c", str(path)] + list(args),
                                capture_output=True, text=True, timeout=120)
        return result.returncode, result.stdout, result.stderr
    return run


def create(kazoo, prefix, payload):
    """Create a sequential znode; return its full path."""
    return kazoo.create(prefix, payload, sequence=True, makepath=True)


def raw(kazoo, path):
    try:
        return kazoo.get(path)[0]
    except NoNodeError:
        return None


def warnings_about(caplog, path):
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and path in r.getMessage()]


def serve_and_release(zuul, cloud, labels=("small",)):
    """One job end to end; returns once its nodes are back."""
    done = zuul.wait_for_request(zuul.submit(list(labels)), timeout=60)
    assert done.state == RequestState.FULFILLED
    nodes = zuul.accept_nodes(done)
    assert all(n.state == NodeState.IN_USE for n in nodes)
    zuul.return_nodes(nodes)
    return nodes


def test_malformed_requests_failed_others_served(launcher_factory, zuul,
                                                 cloud, caplog):
    caplog.set_level(logging.INFO)
    kazoo = zuul.kazoo
    prefix = paths.request_prefix("200")
    bad = {}
    # Half exist before the launcher starts (its cache's first walk), half
    # arrive later (the watch).
    names = sorted(BAD_REQUESTS)
    for name in names[::2]:
        bad[name] = create(kazoo, prefix, BAD_REQUESTS[name][0])
    launcher = launcher_factory(CONFIG)
    first = zuul.submit(["small"])
    for name in names[1::2]:
        bad[name] = create(kazoo, prefix, BAD_REQUESTS[name][0])
    # A big but valid request is served like any other.
    big = zuul.submit(["small"], requestor_data={"blob": "y" * 500_000})
    for request in (first, big):
        assert zuul.wait_for_request(request, timeout=60).state == \
            RequestState.FULFILLED

    def failed(path):
        data = raw(kazoo, path)
        if not data:
            return None
        try:
            request = NodeRequest.from_bytes(data, id=path.rsplit("/", 1)[1])
        except ValueError:
            return None
        return request if request.state == RequestState.FAILED else None

    for name, path in bad.items():
        request = wait_for(lambda: failed(path), timeout=30,
                           message="%s (%s) not failed" % (name, path))
        assert request.node_types is not None
        assert request.declined_by, name
        if BAD_REQUESTS[name][1]:
            assert request.requestor == "zuul-bad", name
            assert request.requestor_data == REQUESTOR_DATA, name
            assert request.event_id == "e-1", name

    # More passes go by: another job is served, the nodes are released.
    nodes = zuul.accept_nodes(zuul.get_request(first)) + \
        zuul.accept_nodes(zuul.get_request(big))
    zuul.return_nodes(nodes)
    serve_and_release(zuul, cloud)
    for name, path in bad.items():
        messages = warnings_about(caplog, path)
        ignored = [m for m in messages if "Ignoring invalid" in m]
        failing = [m for m in messages if "Failed malformed request" in m]
        assert len(ignored) == 1, (name, messages)
        assert len(failing) == 1, (name, messages)
        assert len(messages) == 2, (name, messages)

    # The requestor deletes its failed requests, as Zuul does; nothing
    # brings them back and the launcher keeps serving.
    for path in bad.values():
        assert zuul.delete_request(path.rsplit("/", 1)[1])
    serve_and_release(zuul, cloud)
    assert kazoo.get_children(paths.REQUEST_ROOT) == []
    wait_for(lambda: not node_ids(kazoo) and not cloud.live_servers(),
             timeout=60)
    assert launcher.services.request_cache.invalid() == {}


def test_request_for_unknown_label_fails(launcher_factory, zuul, cloud):
    launcher = launcher_factory(CONFIG)
    done = zuul.wait_for_request(zuul.submit(["small", "nonexistent"]),
                                 timeout=60)
    assert done.state == RequestState.FAILED
    worker = launcher.pool_workers[("os", "main")]
    assert done.declined_by == [worker.launcher_id]
    assert zuul.delete_request(done)
    serve_and_release(zuul, cloud)
    wait_for(lambda: not node_ids(zuul.kazoo) and not cloud.live_servers(),
             timeout=60)


def leak_server(cloud, node_id):
    """A server tagged as node ``node_id`` of provider ``os``."""
    with cloud.lock:
        status, body = cloud.create_server({"server": {
            "name": "np" + node_id, "flavorRef": "f-small",
            "imageRef": IMAGE_ID,
            "metadata": {"nodepool_provider_name": "os",
                         "nodepool_node_id": node_id,
                         "nodepool_pool_name": "main"}}})
    return body["server"]["id"]


BAD_NODES = {
    "truncated-json": b'{"state": "ready", "provider": "os", "ty',
    "binary": b"\x00\xff\xfe\x80garbage",
    "json-list": b"[1, 2]",
    "no-state": json.dumps({"provider": "os", "pool": "main",
                            "type": ["small"]}).encode(),
    "wrong-types": json.dumps({"state": "ready", "provider": ["os"],
                               "type": 5}).encode(),
    "huge": json.dumps({"state": "ready", "provider": "os",
                        "type": {"x": "y" * 600_000}}).encode(),
}
# Readable but with most fields missing: the launcher must cope.
SPARSE_NODES = {
    "ready-bare": {"state": "ready"},
    "ready-our-provider": {"state": "ready", "provider": "os"},
    "hold-our-provider": {"state": "hold", "provider": "os",
                          "state_time": 1.0},
}


def test_garbage_node_records(launcher_factory, zuul, cloud, caplog, cli):
    caplog.set_level(logging.INFO)
    kazoo = zuul.kazoo
    bad = {name: create(kazoo, paths.NODE_ROOT + "/", payload)
           for name, payload in BAD_NODES.items()}
    sparse = {name: create(kazoo, paths.NODE_ROOT + "/",
                           json.dumps(data).encode())
              for name, data in SPARSE_NODES.items()}
    # The server of an unreadable node record is somebody's node, not a
    # leak; a server whose node record does not exist at all is one.
    kept = leak_server(cloud, bad["truncated-json"].rsplit("/", 1)[1])
    leaked = leak_server(cloud, "9999999999")
    launcher = launcher_factory(CONFIG)
    nodes = serve_and_release(zuul, cloud)
    # Two leak-cleanup passes at least (a leak is deleted on its second).
    wait_for(lambda: leaked not in cloud.live_servers(), timeout=60)
    assert kept in cloud.live_servers()
    wait_for(lambda: not any(n.external_id in cloud.live_servers()
                             for n in nodes), timeout=60)
    serve_and_release(zuul, cloud)

    for name, path in bad.items():
        messages = warnings_about(caplog, path)
        assert len(messages) == 1, (name, messages)
        assert raw(kazoo, path) == BAD_NODES[name]  # left for the operator
    for name, path in sparse.items():
        assert raw(kazoo, path) is not None, name
        assert warnings_about(caplog, path) == [], name
    assert set(k[0] for k in launcher.services.node_cache.invalid()) == \
        {p.rsplit("/", 1)[1] for p in bad.values()}

    status, out, err = cli("list")
    assert status == 0, err
    assert "Traceback" not in err
    for path in bad.values():
        assert path in err  # named, once per record
        assert err.count(path) == 1
    for path in sparse.values():
        assert path.rsplit("/", 1)[1] in out
    status, out, err = cli("list", "--detail")
    assert status == 0 and "Traceback" not in err

    # Once the operator removes the garbage, the server is a leak.
    for path in bad.values():
        kazoo.delete(path)
    wait_for(lambda: kept not in cloud.live_servers(), timeout=60)
    wait_for(lambda: launcher.services.node_cache.invalid() == {})


BAD_COMPONENTS = {
    "labels-string": {"kind": "pool", "id": "evil-1", "name": "main",
                      "provider_name": "x", "supported_labels": "small",
                      "priority": 1, "paused": False, "state": "running"},
    "labels-number": {"kind": "pool", "id": "evil-2", "name": "main",
                      "provider_name": "x", "supported_labels": 5,
                      "priority": 1, "paused": False, "state": "running"},
    "id-list": {"kind": "pool", "id": ["evil-3"], "name": "main",
                "provider_name": "x", "supported_labels": ["small"],
                "priority": 1, "paused": False, "state": "running"},
    "priority-string": {"kind": "pool", "id": "evil-4", "name": "main",
                        "provider_name": "x",
                        "supported_labels": ["small"],
                        "priority": "first", "paused": False,
                        "state": "running"},
}


def test_garbage_component_records(launcher_factory, zuul, cloud, caplog):
    caplog.set_level(logging.INFO)
    kazoo = zuul.kazoo
    bad = []
    for kind in ("pool", "launcher", "builder"):
        prefix = paths.component_kind_path(kind) + "/evil"
        bad.append(create(kazoo, prefix, b"{not json"))
        bad.append(create(kazoo, prefix, b"\xff\xfe\x00"))
        bad.append(create(kazoo, prefix, b"[]"))
    for data in BAD_COMPONENTS.values():
        bad.append(create(kazoo, paths.component_kind_path("pool") + "/evil",
                          json.dumps(data).encode()))
    launcher = launcher_factory(CONFIG)
    serve_and_release(zuul, cloud)
    # A pool record that cannot be read is no pool: a request for a label
    # only it claims to serve fails rather than waiting for it.
    done = zuul.wait_for_request(zuul.submit(["nonexistent"]), timeout=60)
    assert done.state == RequestState.FAILED
    pools = launcher.services.registry.pools()
    assert [p.provider_name for p in pools] == ["os"]
    for path in bad:
        assert len(warnings_about(caplog, path)) == 1, path
    wait_for(lambda: not node_ids(zuul.kazoo) and not cloud.live_servers(),
             timeout=60)


def test_garbage_image_records(launcher_factory, zuul, cloud, caplog, cli):
    caplog.set_level(logging.INFO)
    kazoo = zuul.kazoo
    good_build = paths.build_path("ubuntu", "a" * 32)
    kazoo.create(good_build, json.dumps(
        {"state": "ready", "state_time": 1.0, "builder": "b1",
         "formats": "qcow2"}).encode(), makepath=True)
    uploads = paths.uploads_path("ubuntu", "a" * 32, "os") + "/"
    good_upload = create(kazoo, uploads, json.dumps(
        {"state": "ready", "state_time": 1.0, "external_id": "img-1",
         "external_name": "ubuntu-1", "format": "qcow2"}).encode())
    bad = []
    for n, payload in enumerate([b"{not json", b"\xff\x00", b"[]",
                                 b'{"state": "bogus"}',
                                 b'{"state": "ready", "formats": 5}']):
        path = paths.build_path("ubuntu", "%032d" % n)
        kazoo.create(path, payload, makepath=True)
        bad.append(path)
    for payload in (b"{not json", b'"x"', b'{"state": "building"}'):
        bad.append(create(kazoo, uploads, payload))
    launcher = launcher_factory(CONFIG)
    serve_and_release(zuul, cloud)
    cache = launcher.services.image_cache
    wait_for(lambda: len(cache.invalid()) == len(bad))
    assert [b.id for b in cache.builds()] == ["a" * 32]
    assert len(cache.uploads()) == 1
    for path in bad:
        assert len(warnings_about(caplog, path)) == 1, path

    for command in ("image-list", "dib-image-list"):
        status, out, err = cli(command)
        assert status == 0, err
        assert "Traceback" not in err
        assert "a" * 32 in out, command
        for path in bad:
            assert path not in out
    status, out, err = cli("dib-image-list")
    for path in bad[:5]:
        assert err.count(path) == 1, (path, err)
    status, out, err = cli("image-list")
    assert good_upload.rsplit("/", 1)[1] in out


def test_cli_and_web_app_survive_garbage(launcher_factory, zuul, cloud,
                                         cli):
    kazoo = zuul.kazoo
    launcher = launcher_factory(CONFIG)
    node_bad = create(kazoo, paths.NODE_ROOT + "/", b"\xff\xfe{")
    node_sparse = create(kazoo, paths.NODE_ROOT + "/", b'{"state": "ready"}')
    request_bad = create(kazoo, paths.request_prefix("200"), b"[]")
    done = zuul.wait_for_request(zuul.submit(["small"]), timeout=60)
    wait_for(lambda: launcher.services.node_cache.get(
        node_sparse.rsplit("/", 1)[1]))
    for args in (["list"], ["list", "--detail"], ["request-list"],
                 ["image-list"], ["dib-image-list"], ["image-status"]):
        status, out, err = cli(*args)
        assert status == 0, (args, err)
        assert "Traceback" not in err, args
    status, out, err = cli("request-list")
    assert done.id in out
    status, out, err = cli("list")
    assert node_bad in err
    assert node_sparse.rsplit("/", 1)[1] in out

    app = WebApp(launcher, "127.0.0.1", 0)
    app.start()
    try:
        for path in ("/node-list", "/request-list", "/label-list",
                     "/image-list", "/dib-image-list", "/image-status"):
            for accept in ("text/plain", "application/json"):
                conn = http.client.HTTPConnection("127.0.0.1", app.port,
                                                  timeout=10)
                try:
                    conn.request("GET", path, headers={"Accept": accept})
                    response = conn.getresponse()
                    body = response.read()
                finally:
                    conn.close()
                assert response.status == 200, (path, body)
                assert b"Traceback" not in body
    finally:
        app.stop()
    wait_for(lambda: json.loads(raw(kazoo, request_bad))["state"]
             == "failed")
    zuul.return_nodes(zuul.accept_nodes(done))
    kazoo.delete(node_bad)
    kazoo.delete(node_sparse)
    wait_for(lambda: not node_ids(kazoo) and not cloud.live_servers(),
             timeout=60)
    assert read_nodes(kazoo) == []


def test_unreadable_upload_record_keeps_its_image(launcher_factory, zuul):
    """Leak cleanup deletes an image whose upload record is gone, never
    one whose record exists but cannot be read (it may be repaired)."""
    kazoo = zuul.kazoo
    uploads = paths.uploads_path("ubuntu", "b" * 32, "fake") + "/"
    garbled = create(kazoo, uploads, b"{not json")
    upload_id = garbled.rsplit("/", 1)[1]
    cloud = FakeCloud.get("fake")

    def image(upload):
        return Resource({"nodepool_provider_name": "fake",
                         "nodepool_build_id": "b" * 32,
                         "nodepool_upload_id": upload}, "image",
                        "img-" + upload)
    kept, leaked = image(upload_id), image("9999999999")
    cloud.resources.extend([kept, leaked])
    launcher_factory()
    wait_for(lambda: leaked not in cloud.resources, timeout=30)
    # Both were listed by the same passes: the pass that deleted one
    # judged the other too.
    assert kept in cloud.resources
