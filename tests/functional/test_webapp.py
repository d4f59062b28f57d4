# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The launcher's status web app over real HTTP, with a real launcher (test
driver, real ZooKeeper) behind it.

Every web app here runs on a fake clock so that the 1 s result cache
expires exactly when a test says so.
"""

import email.utils
import http.client
import json
import logging
import re
import socket
import textwrap
import threading
import time
import types

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nodepool.config.errors import ConfigValidationError
from nodepool.config.loader import load_config
from nodepool.launcher.server import NodePoolLauncher
from nodepool.web.app import MAX_HEADER_BYTES, MAX_REQUEST_LINE, WebApp
from nodepool.zk.images import ImageStore
from nodepool.zk.models import (BuildState, ImageBuild, ImageUpload,
                                UploadState)
from tests.fakes.scanner import FakeScanner
from tests.fixtures.waits import wait_for
from tests.functional.conftest import (BASE_CONFIG, BASE_DEFAULTS, FAST,
                                       base_config)

NODE_KEYS = [
    "id", "provider", "label", "server_id", "public_ipv4", "ipv6", "state",
    "age", "locked", "pool", "hostname", "private_ipv4", "AZ", "username",
    "connection_port", "launcher", "allocated_to", "hold_job", "comment",
    "user_data", "driver_data"]
NODE_TITLES = [
    "ID", "Provider", "Label", "Server ID", "Public IPv4", "IPv6", "State",
    "Age", "Locked", "Pool", "Hostname", "Private IPv4", "AZ", "Username",
    "Port", "Launcher", "Allocated To", "Hold Job", "Comment", "User Data",
    "Driver Data"]
REQUEST_KEYS = ["id", "relative_priority", "state", "requestor",
                "node_types", "nodes", "declined_by", "event_id"]
REQUEST_TITLES = ["Request ID", "Priority", "State", "Requestor",
                  "Node Types", "Nodes", "Declined By", "Event ID"]
IMAGE_KEYS = ["id", "upload_id", "provider", "image", "external_name",
              "external_id", "state", "age"]
IMAGE_TITLES = ["Build ID", "Upload ID", "Provider", "Image",
                "Provider Image Name", "Provider Image ID", "State", "Age"]
BUILD_KEYS = ["id", "image", "builder", "formats", "state", "age"]
BUILD_TITLES = ["ID", "Image", "Builder", "Formats", "State", "Age"]
STATUS_KEYS = ["image", "paused", "build_request", "build_request_age"]
STATUS_TITLES = ["Image", "Paused", "Build Request", "Build Request Age"]

LISTINGS = ["/node-list", "/request-list", "/label-list", "/image-list",
            "/dib-image-list", "/image-status"]
TEXT = "text/plain; charset=UTF-8"
AGE = re.compile(r"^\d\d:\d\d:\d\d:\d\d$")


class Clock:
    """A clock that moves only when told to."""

    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> None:
        self.now += seconds


@pytest.fixture
def serve():
    """``serve(launcher)`` starts a web app on a free loopback port."""
    apps = []

    def factory(launcher):
        app = WebApp(launcher, "127.0.0.1", 0, clock=Clock())
        app.start()
        apps.append(app)
        return app
    yield factory
    for app in apps:
        app.stop()


def registered(launcher):
    """``launcher`` once its registry shows its pool with its labels (for
    label-list: a pool record is written first, its labels right after)."""
    wait_for(lambda: any(p.supported_labels
                         for p in launcher.services.registry.pools()))
    return launcher


def fetch(app, path, accept=None, method="GET", headers=None):
    """``(status, headers, body)`` of one request on a fresh connection."""
    headers = dict(headers or {})
    if accept is not None:
        headers["Accept"] = accept
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def get_json(app, path):
    status, headers, body = fetch(app, path, "application/json")
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    return json.loads(body)


def get_text(app, path):
    status, headers, body = fetch(app, path)
    assert status == 200, body
    assert headers["Content-Type"] == TEXT
    return body.decode("utf-8")


def fresh_json(app, path):
    """The listing with the result cache expired first."""
    app.clock.advance(1.0)
    return get_json(app, path)


def table(text):
    """``(titles, rows)`` of a PrettyTable; cells stripped."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")]
             for line in lines]
    return cells[0], cells[1:]


def http_time(value):
    return email.utils.parsedate_to_datetime(value).timestamp()


def metrics(app):
    status, headers, body = fetch(app, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=")
    values = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            key = (sample.name,) + tuple(sorted(sample.labels.items()))
            values[key] = sample.value
    return values


# -- listings -----------------------------------------------------------------

def test_node_list(launcher_factory, zuul, serve):
    launcher = launcher_factory()
    app = serve(launcher)
    done = zuul.wait_for_request(zuul.submit(["small"]))
    node = zuul.accept_nodes(done)[0]

    def row():
        rows = [r for r in fresh_json(app, "/node-list")
                if r["id"] == node.id]
        return rows and rows[0]["state"] == "in-use" and rows[0]
    row = wait_for(row)
    assert list(row) == NODE_KEYS
    assert row["provider"] == "fake" and row["pool"] == "main"
    assert row["label"] == ["small"]
    assert row["server_id"] == node.external_id
    assert row["locked"] == "locked"  # Zuul holds the lock while in use
    assert row["allocated_to"] == done.id
    assert row["connection_port"] == 22 and row["username"] == "zuul"
    assert AGE.match(row["age"])

    # One node by id; an unknown id is an empty result.
    assert get_json(app, "/node-list?node_id=" + node.id) == [row]
    assert get_json(app, "/node-list?node_id=0000099999") == []
    # fields only shapes the text table.
    assert get_json(app, "/node-list?fields=id,state") == \
        get_json(app, "/node-list")

    titles, rows = table(get_text(app, "/node-list"))
    assert titles == NODE_TITLES
    assert [node.id, "fake", "small", node.external_id] == rows[0][:4]
    titles, rows = table(get_text(
        app, "/node-list?node_id=%s&fields=id,state" % node.id))
    assert titles == ["ID", "State"]
    assert rows == [[node.id, "in-use"]]
    titles, rows = table(get_text(app, "/node-list?node_id=0000099999"))
    assert titles == NODE_TITLES and rows == []
    zuul.return_nodes([node])


def test_request_label_and_image_listings(launcher_factory, zuul, serve):
    launcher = registered(launcher_factory())
    app = serve(launcher)
    request = zuul.submit(["large"])
    done = zuul.wait_for_request(request)

    images = launcher.services.images
    build = ImageBuild()
    build.builder = "builder-1"
    build.formats = ["qcow2", "raw"]
    build.state = BuildState.READY
    build_id = images.store_build("debian", build)
    upload = ImageUpload()
    upload.external_id = "img-123"
    upload.external_name = "debian-1700000000"
    upload.state = UploadState.READY
    upload_id = images.store_upload("debian", build_id, "fake", upload)
    images.pause_image("debian")
    images.submit_build_request("ubuntu")

    requests = wait_for(lambda: [
        r for r in fresh_json(app, "/request-list")
        if r["id"] == done.id and r["state"] == "fulfilled"])
    assert list(requests[0]) == REQUEST_KEYS
    assert requests[0]["node_types"] == ["large"]
    assert requests[0]["requestor"] == zuul.hostname
    assert len(requests[0]["nodes"]) == 1
    titles, rows = table(get_text(app, "/request-list"))
    assert titles == REQUEST_TITLES
    assert rows[0][0] == done.id

    assert get_json(app, "/label-list") == [{"label": "large"},
                                            {"label": "small"}]
    assert table(get_text(app, "/label-list")) == (
        ["Label"], [["large"], ["small"]])

    uploads = wait_for(lambda: fresh_json(app, "/image-list"))
    assert uploads == [{
        "id": build_id, "upload_id": upload_id, "provider": "fake",
        "image": "debian", "external_name": "debian-1700000000",
        "external_id": "img-123", "state": "ready",
        "age": int(upload.state_time)}]
    titles, rows = table(get_text(app, "/image-list"))
    assert titles == IMAGE_TITLES
    assert rows[0][:7] == [build_id, upload_id, "fake", "debian",
                           "debian-1700000000", "img-123", "ready"]
    assert AGE.match(rows[0][7])

    builds = wait_for(lambda: [b for b in fresh_json(app, "/dib-image-list")
                               if b["state"] == "paused"])
    assert builds == [{
        "id": "debian-" + build_id, "image": "debian",
        "builder": "builder-1", "formats": ["qcow2", "raw"],
        "state": "paused", "age": int(build.state_time)}]
    assert list(builds[0]) == BUILD_KEYS
    titles, rows = table(get_text(app, "/dib-image-list?fields=id,formats"))
    assert titles == ["ID", "Formats"]
    assert rows == [["debian-" + build_id, "qcow2,raw"]]
    assert table(get_text(app, "/dib-image-list"))[0] == BUILD_TITLES

    statuses = get_json(app, "/image-status")
    assert [list(s) for s in statuses] == [STATUS_KEYS, STATUS_KEYS]
    by_image = {s["image"]: s for s in statuses}
    assert by_image["debian"]["paused"] is True
    assert by_image["debian"]["build_request"] is None
    assert by_image["ubuntu"]["paused"] is False
    assert by_image["ubuntu"]["build_request"] == "pending"
    assert isinstance(by_image["ubuntu"]["build_request_age"], int)
    titles, rows = table(get_text(app, "/image-status"))
    assert titles == STATUS_TITLES
    assert rows[0][:2] == ["debian", "True"]


# -- HTTP behaviour -----------------------------------------------------------

def test_content_negotiation_and_headers(launcher_factory, serve):
    app = serve(registered(launcher_factory()))
    cases = [
        (None, TEXT), ("text/plain", TEXT), ("text/html", TEXT),
        ("*/*", TEXT), ("application/json", "application/json"),
        ("application/json;q=0.5, text/plain;q=0.9", TEXT),
        ("text/html;q=0.1, application/json", "application/json"),
    ]
    for accept, content_type in cases:
        status, headers, body = fetch(app, "/label-list", accept)
        assert status == 200
        assert headers["Content-Type"] == content_type, accept
        if content_type == TEXT:
            assert body.startswith(b"+-------+\n| Label |")
        else:
            assert json.loads(body)[0] == {"label": "large"}
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert headers["Cache-Control"] == "public, max-age=1"
        last_modified = http_time(headers["Last-Modified"])
        assert last_modified == int(app.clock.now)
        assert http_time(headers["Expires"]) == last_modified + 1
        assert headers["ETag"]

    status, _, body = fetch(app, "/label-list", "image/png")
    assert status == 406
    for path in LISTINGS:
        status, headers, body = fetch(app, path, method="HEAD")
        assert (status, body) == (200, b"")
        assert headers["Content-Type"] == TEXT


def test_not_found_and_read_only(launcher_factory, serve):
    app = serve(launcher_factory())
    for path in ["/", "/nope", "/node_list", "/node-list/x", "/ready/x",
                 "/node-list.json", "/metrics/x"]:
        status, headers, body = fetch(app, path)
        assert status == 404, path
        assert body == b"Not found\n"
    for method in ["POST", "PUT", "DELETE"]:
        status, headers, _ = fetch(app, "/node-list", method=method)
        assert status == 405
        assert headers["Allow"] == "GET, HEAD"


def test_results_cached_per_path_params_and_format(launcher_factory, zuul,
                                                   serve):
    launcher = launcher_factory()
    app = serve(launcher)
    before_json = fetch(app, "/request-list", "application/json")
    assert json.loads(before_json[2]) == []
    before_text = fetch(app, "/request-list?fields=id")

    request = zuul.submit(["small"])
    wait_for(lambda: launcher.services.request_cache.get(request.id))
    # Same key, same second: the stored result, byte for byte.
    app.clock.advance(0.99)
    again = fetch(app, "/request-list", "application/json")
    assert again[2] == before_json[2]
    assert again[1]["Last-Modified"] == before_json[1]["Last-Modified"]
    assert fetch(app, "/request-list?fields=id")[2] == before_text[2]
    # Another format or other parameters are other keys.
    assert request.id in get_text(app, "/request-list")
    assert request.id in get_text(app, "/request-list?fields=id,state")
    # After a second the result is rendered anew.
    app.clock.advance(0.01)
    status, headers, body = fetch(app, "/request-list", "application/json")
    assert [r["id"] for r in json.loads(body)] == [request.id]
    assert http_time(headers["Last-Modified"]) == int(app.clock.now)
    assert request.id in fetch(app, "/request-list?fields=id")[2].decode()


def test_conditional_get(launcher_factory, zuul, serve):
    app = serve(launcher_factory())
    _, headers, body = fetch(app, "/request-list", "application/json")
    last_modified, etag = headers["Last-Modified"], headers["ETag"]

    for condition in [{"If-Modified-Since": last_modified},
                      {"If-None-Match": etag}]:
        status, headers, body = fetch(app, "/request-list",
                                      "application/json", headers=condition)
        assert (status, body) == (304, b""), condition
        assert headers["ETag"] == etag
        assert headers["Cache-Control"] == "public, max-age=1"
    status, _, _ = fetch(app, "/request-list", "application/json",
                         headers={"If-None-Match": '"other"'})
    assert status == 200
    # The text rendering is another entity.
    status, _, _ = fetch(app, "/request-list",
                         headers={"If-None-Match": etag})
    assert status == 200

    # Rendered again with the same content: same ETag, new date.
    app.clock.advance(1.0)
    status, headers, _ = fetch(app, "/request-list", "application/json",
                               headers={"If-None-Match": etag})
    assert status == 304
    status, headers, _ = fetch(app, "/request-list", "application/json",
                               headers={"If-Modified-Since": last_modified})
    assert status == 200 and headers["Last-Modified"] != last_modified

    # Changed content: the old ETag no longer matches.
    zuul.submit(["small"])
    wait_for(lambda: json.loads(fetch(app, "/request-list",
                                      "application/json")[2])
             or app.clock.advance(1.0))
    status, headers, body = fetch(app, "/request-list", "application/json",
                                  headers={"If-None-Match": etag})
    assert status == 200 and headers["ETag"] != etag


def test_ready(tmp_path, zk_factory, serve):
    path = tmp_path / "nodepool.yaml"
    path.write_text(base_config())
    launcher = NodePoolLauncher(str(path), zk_client=zk_factory(),
                                intervals=FAST, scanner=FakeScanner())
    app = serve(launcher)
    try:
        status, headers, body = fetch(app, "/ready")
        assert (status, body) == (503, b"Not ready")
        assert headers["Content-Type"] == TEXT
        status, _, _ = fetch(app, "/node-list")
        assert status == 503
        status, _, body = fetch(app, "/metrics")
        assert status == 200 and b"nodepool_nodes" not in body

        launcher.start()
        assert launcher.ready.wait(30)
        status, headers, body = fetch(app, "/ready")
        assert (status, body) == (200, b"OK")
        assert headers["Content-Type"] == TEXT
        assert "Cache-Control" not in headers
    finally:
        launcher.stop()
        launcher.join()


# -- metrics ------------------------------------------------------------------

def test_metrics(launcher_factory, zuul, serve):
    launcher = launcher_factory()
    app = serve(launcher)
    node = zuul.accept_nodes(zuul.wait_for_request(zuul.submit(["small"])))[0]
    zuul.wait_for_request(zuul.submit(["large"]))  # kept: addressable

    expected = {
        ("nodepool_nodes", ("state", "in-use")): 1,
        ("nodepool_nodes", ("state", "ready")): 1,
        ("nodepool_nodes", ("state", "deleted")): 0,
        ("nodepool_provider_nodes", ("provider", "fake"),
         ("state", "in-use")): 1,
        ("nodepool_label_nodes", ("label", "small"), ("state", "in-use")): 1,
        ("nodepool_label_nodes", ("label", "large"), ("state", "ready")): 1,
        ("nodepool_label_nodes", ("label", "large"), ("state", "used")): 0,
        ("nodepool_provider_pool_addressable_requests",
         ("pool", "main"), ("provider", "fake")): 1,
        ("nodepool_provider_max_servers", ("provider", "fake")): 10,
    }

    # The node and request caches catch up independently: wait until the
    # scrape shows all of it.
    def settled():
        values = metrics(app)
        return values if all(values.get(key) == value
                             for key, value in expected.items()) else None
    values = wait_for(settled, message="metrics never matched %s" % (
        expected,))
    # Every node state is reported, as with statsd.
    states = {dict(key[1:])["state"] for key in values
              if key[0] == "nodepool_nodes"}
    assert states == {"building", "testing", "ready", "in-use", "used",
                      "hold", "deleting", "failed", "init", "aborted",
                      "deleted"}
    zuul.return_nodes([node])


# -- isolation and secrets ----------------------------------------------------

SECRET_CONFIG = BASE_CONFIG + """
diskimages:
  - name: debian
    env-vars:
      DIB_PASSWORD: hunter2-secret-value
"""


def test_no_secret_served(launcher_factory, zuul, serve):
    launcher = launcher_factory(SECRET_CONFIG)
    assert launcher.config.diskimages["debian"].env_vars[
        "DIB_PASSWORD"] == "hunter2-secret-value"
    app = serve(launcher)
    zuul.wait_for_request(zuul.submit(["small"]))
    launcher.services.images.submit_build_request("debian")
    bodies = []
    for path in LISTINGS + ["/metrics", "/ready", "/nope"]:
        for accept in [None, "application/json"]:
            bodies.append(fetch(app, path, accept)[2])
    assert not [b for b in bodies if b"hunter2" in b]


def test_two_web_apps_side_by_side(launcher_factory, serve):
    first = serve(registered(launcher_factory()))
    second = serve(registered(launcher_factory()))
    assert first.port != second.port
    assert get_json(first, "/label-list") == get_json(second, "/label-list")
    port = first.port
    first.stop()
    first.stop()  # idempotent
    assert first.port == port
    with pytest.raises(OSError):
        fetch(first, "/ready")
    assert fetch(second, "/ready")[0] == 200


def test_launcher_owns_its_web_app(tmp_path, zk_factory):
    path = tmp_path / "nodepool.yaml"
    path.write_text(base_config() + textwrap.dedent("""
        webapp:
          listen_address: 127.0.0.1
          port: 0
        """))
    launcher = NodePoolLauncher(str(path), zk_client=zk_factory(),
                                intervals=FAST, scanner=FakeScanner(),
                                webapp=True)
    launcher.start()
    try:
        assert launcher.ready.wait(30)
        registered(launcher)
        app = launcher.webapp
        assert app.port > 0
        assert fetch(app, "/ready")[:3:2] == (200, b"OK")
        assert get_json(app, "/label-list") == [{"label": "large"},
                                                {"label": "small"}]
    finally:
        launcher.stop()
        launcher.join()
    with pytest.raises(OSError):
        fetch(app, "/ready")


class _BrokenCache:
    def values(self):
        raise RuntimeError("cache exploded at /secret/path")


def test_errors_show_no_traceback(serve):
    services = types.SimpleNamespace(node_cache=_BrokenCache(),
                                     request_cache=_BrokenCache())
    launcher = types.SimpleNamespace(services=services,
                                     ready=threading.Event(),
                                     providers={}, config=None)
    app = serve(launcher)
    status, headers, body = fetch(app, "/request-list", "application/json")
    assert status == 500
    assert headers["Content-Type"] == TEXT
    assert b"Traceback" not in body and b"exploded" not in body


# -- hardening ----------------------------------------------------------------

def raw_exchange(app, data: bytes) -> bytes:
    """Send ``data`` as is and return everything the server answers."""
    with socket.create_connection(("127.0.0.1", app.port),
                                  timeout=10) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading it all
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_request_size_limits(launcher_factory, serve):
    app = serve(registered(launcher_factory()))
    # Up to the limits: served.
    padding = "x" * (MAX_REQUEST_LINE - 100)
    status, _, _ = fetch(app, "/label-list?pad=" + padding)
    assert status == 200
    headers = {"X-Pad-%d" % i: "y" * 1000 for i in range(50)}
    assert fetch(app, "/label-list", headers=headers)[0] == 200

    # A long URL: 414.
    answer = raw_exchange(app, b"GET /label-list?pad=" + b"x" *
                          MAX_REQUEST_LINE + b" HTTP/1.1\r\n"
                          b"Host: x\r\n\r\n")
    assert answer.split(b"\r\n", 1)[0].endswith(b" 414 Request-URI Too Long")
    # Too many header bytes, a bit more or megabytes more: 431, and the
    # server goes on serving.
    for size in (MAX_HEADER_BYTES + 1000, 5 * 1024 * 1024):
        lines = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"y" * 1000)
                         for i in range(size // 1000))
        answer = raw_exchange(app, b"GET /label-list HTTP/1.1\r\nHost: x\r\n"
                              + lines + b"\r\n")
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line == (b"HTTP/1.1 431 Request Header Fields "
                               b"Too Large"), answer[:200]
    assert fetch(app, "/ready")[0] == 200


def test_unknown_fields_answered_400(launcher_factory, serve, caplog):
    app = serve(registered(launcher_factory()))
    caplog.set_level(logging.DEBUG, logger="nodepool.web")
    for query, unknown in [("fields=nope", b"nope"),
                           ("fields=zz,label,aa", b"aa, zz")]:
        status, headers, body = fetch(app, "/label-list?" + query)
        assert status == 400, body
        assert headers["Content-Type"] == TEXT
        assert body == b"Unknown fields: %s (known: label)\n" % unknown
    status, _, body = fetch(app, "/node-list?fields=id,stat")
    assert status == 400
    assert body.startswith(b"Unknown fields: stat (known: id, provider,")
    assert "Traceback" not in caplog.text
    # Known names, in any order, repeated or split over several
    # parameters: the columns in table order.
    text = get_text(app, "/node-list?fields=state,id&fields=id")
    assert table(text)[0] == ["ID", "State"]
    # JSON carries every key whatever fields says, so it is not checked.
    assert get_json(app, "/label-list?fields=nope") == [{"label": "large"},
                                                        {"label": "small"}]


def test_cache_keyed_on_known_parameters(launcher_factory, zuul, serve):
    launcher = launcher_factory()
    app = serve(launcher)
    text = get_text(app, "/request-list?fields=id,state")
    data = get_json(app, "/request-list")
    assert data == []
    request = zuul.submit(["small"])
    wait_for(lambda: launcher.services.request_cache.get(request.id))
    # Within the cache second, parameters that change nothing get the
    # stored result: unknown ones, the order or repetition of fields, and
    # fields at all for JSON.
    for path in ["/request-list?fields=id,state&x=1",
                 "/request-list?fields=state,id&_=%d" % time.time(),
                 "/request-list?fields=id&fields=state,id"]:
        assert get_text(app, path) == text, path
    for path in ["/request-list?random=1", "/request-list?fields=id"]:
        assert get_json(app, path) == data, path
    # Known parameters with other values are other results.
    assert request.id in get_text(app, "/request-list?fields=id")
    app.clock.advance(1.0)
    assert request.id in get_text(app, "/request-list?fields=id,state&y=2")


CORS_CONFIG = BASE_CONFIG + """
webapp:
  cors-origin: {origin}
"""


@pytest.mark.parametrize("origin, header", [
    ("https://zuul.example.com", "https://zuul.example.com"),
    ("null", None),
    ("'*'", "*"),
])
def test_cors_origin_setting(launcher_factory, serve, origin, header):
    app = serve(registered(launcher_factory(CORS_CONFIG, origin=origin)))
    for accept in [None, "application/json"]:
        status, headers, _ = fetch(app, "/label-list", accept)
        assert status == 200
        assert headers.get("Access-Control-Allow-Origin") == header


@pytest.mark.parametrize("origin", [
    "https://zuul.example.com/path", "zuul.example.com",
    "'https://a.example.com, https://b.example.com'",
    '"https://zuul.example.com\\r\\nSet-Cookie: a=b"', "5"])
def test_cors_origin_validated(tmp_path, origin):
    path = tmp_path / "nodepool.yaml"
    path.write_text(CORS_CONFIG.format(origin=origin, **BASE_DEFAULTS))
    with pytest.raises(ConfigValidationError) as excinfo:
        load_config(str(path))
    assert "webapp.cors-origin: expected '*', an origin such as " \
        "'https://zuul.example.com' or null" in str(excinfo.value)


@pytest.fixture
def web_app(launcher_factory):
    """A web app (on a free port) of a launcher on BASE_CONFIG."""
    app = WebApp(launcher_factory(), "127.0.0.1", 0, clock=Clock())
    app.start()
    yield app
    app.stop()


def test_web_image_status_pending_then_building(web_app, zk_client,
                                                zk_factory):
    """image_status: null, then pending after a build request, building
    while the image build lock is held for an existing build."""
    app = web_app
    images = ImageStore(zk_client)
    images.pause_image("ubuntu")
    images.unpause_image("ubuntu")   # leaves the image znode

    def status_of(image):
        rows = [r for r in fresh_json(app, "/image-status")
                if r["image"] == image]
        return rows[0] if rows else None
    assert status_of("ubuntu") == {"image": "ubuntu", "paused": False,
                                   "build_request": None,
                                   "build_request_age": None}
    images.submit_build_request("ubuntu")
    row = status_of("ubuntu")
    assert row["build_request"] == "pending"
    assert isinstance(row["build_request_age"], int)
    builder = ImageStore(zk_factory())
    lock = builder.acquire_image_build_lock("ubuntu", blocking=False)
    try:
        build = ImageBuild()
        build.state = BuildState.BUILDING
        build.builder = "builder01"
        build.formats = ["qcow2"]
        images.store_build("ubuntu", build)
        assert status_of("ubuntu")["build_request"] == "building"
    finally:
        builder.release_lock(lock)
    assert status_of("ubuntu")["build_request"] == "pending"
    images.remove_build_request("ubuntu")
    assert status_of("ubuntu")["build_request"] is None
