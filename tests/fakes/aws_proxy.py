# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""moto_server on loopback, behind a proxy that plays a slow AWS.

:class:`MotoServer` runs ``moto_server`` as a child process.
:class:`AwsProxy` sits in front of it: it counts calls by action, delays
them (RunInstances takes over a second on real EC2) and answers the
Service Quotas calls moto does not implement from a
:class:`FakeServiceQuotas`.  moto reports a new instance running at once;
with ``boot_delay`` the proxy lists it as pending for that long, as EC2
does while an instance boots; :meth:`AwsProxy.hold` keeps calls of an
action waiting until released.  A launcher in another process reaches it
through ``AWS_ENDPOINT_URL``.
"""

import collections
import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET

from tests.fakes.aws import FakeServiceQuotas

QUOTAS_TARGET = "ServiceQuotasV20190624."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """``moto_server -H 127.0.0.1 -p PORT`` as a child process."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.proc = None

    def start(self, timeout: float = 60.0) -> "MotoServer":
        binary = os.path.join(os.path.dirname(sys.executable),
                              "moto_server")
        env = dict(os.environ)
        # Keep the server quiet and the AMI set small (see tests.fakes.aws).
        self.proc = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                  timeout=1)
                conn.request("GET", "/moto-api/")
                if conn.getresponse().status == 200:
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("moto_server exited")
            time.sleep(0.1)
        raise RuntimeError("moto_server did not start")

    def reset(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("POST", "/moto-api/reset")
        conn.getresponse().read()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element, name):
    for child in element:
        if _local(child.tag) == name:
            return child
    return None


def _instance_items(root):
    """The ``item`` elements describing instances in an EC2 answer."""
    for element in root.iter():
        if _local(element.tag) == "instancesSet":
            for item in element:
                if _child(item, "instanceId") is not None:
                    yield item


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self):
        proxy = self.server.proxy
        body = self._body()
        action = proxy.action_of(self.command, self.path, self.headers,
                                 body)
        proxy.record(action)
        proxy.wait_gate(action)
        delay = proxy.delays.get(action, proxy.default_delay)
        if delay:
            time.sleep(delay)  # the simulated service latency
        target = self.headers.get("X-Amz-Target", "")
        started = time.monotonic()
        failure = proxy.take_failure(action)
        if failure is not None:
            status, headers, payload = failure
        elif target.startswith(QUOTAS_TARGET):
            status, headers, payload = proxy.answer_quotas(target, body)
        else:
            status, headers, payload = proxy.forward(
                self.command, self.path, self.headers, body)
            if status == 200:
                payload = proxy.boot(action, payload)
        proxy.record_backend(action, time.monotonic() - started)
        try:
            self.send_response(status)
            for key, value in headers:
                if key.lower() in ("transfer-encoding", "connection",
                                   "content-length"):
                    continue
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # The caller died meanwhile (a killed launcher): the call
            # still took effect in moto, as it would on EC2.
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class AwsProxy:
    """A counting, delaying HTTP proxy in front of moto_server.

    ``delays[action]`` seconds per call (``default_delay`` otherwise);
    ``counts`` is a Counter by action (EC2 ``Action=`` names, Service
    Quotas targets, ``S3:<METHOD>``).
    """

    def __init__(self, backend_port: int, delays=None,
                 default_delay: float = 0.0, quotas=None):
        self.backend_port = backend_port
        self.delays = dict(delays or {})
        self.default_delay = default_delay
        self.quotas = quotas or FakeServiceQuotas(page=100)
        self.counts = collections.Counter()
        self.times = collections.defaultdict(list)
        # Seconds the backend (moto) took per call, by action.
        self.backend = collections.defaultdict(list)
        self.failures = collections.defaultdict(list)
        # Seconds a new instance is listed as pending; when each was run.
        self.boot_delay = 0.0
        self._run_at = {}
        self._gates = {}  # action -> Event; calls wait until it is set
        self._lock = threading.Lock()
        self._local = threading.local()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.proxy = self
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        name="aws-proxy", daemon=True)

    def start(self) -> "AwsProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        for action in list(self._gates):
            self.release(action)
        self.server.shutdown()
        self.server.server_close()

    def record(self, action: str) -> None:
        with self._lock:
            self.counts[action] += 1
            self.times[action].append(time.monotonic())

    def hold(self, action: str) -> None:
        """Make calls of ``action`` wait (counted, not yet forwarded)
        until :meth:`release`."""
        with self._lock:
            self._gates.setdefault(action, threading.Event())

    def release(self, action: str) -> None:
        """Let the held calls of ``action`` (and later ones) through."""
        with self._lock:
            gate = self._gates.pop(action, None)
        if gate is not None:
            gate.set()

    def wait_gate(self, action: str) -> None:
        with self._lock:
            gate = self._gates.get(action)
        if gate is not None:
            gate.wait()

    def fail(self, action: str, code: str, status: int = 400,
             times: int = 1) -> None:
        """Answer the next ``times`` calls of an EC2 ``action`` with an
        AWS error instead of forwarding them."""
        with self._lock:
            self.failures[action].extend([(code, status)] * times)

    def take_failure(self, action: str):
        with self._lock:
            if not self.failures[action]:
                return None
            code, status = self.failures[action].pop(0)
        payload = (
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors>"
            "<Error><Code>%s</Code><Message>injected %s</Message></Error>"
            "</Errors><RequestID>fake</RequestID></Response>" % (code, code))
        return status, [("Content-Type", "text/xml")], payload.encode()

    def boot(self, action: str, payload: bytes) -> bytes:
        """Note the instances RunInstances made; in DescribeInstances
        answers, show those younger than ``boot_delay`` as pending."""
        if action == "RunInstances":
            now = time.monotonic()
            with self._lock:
                for item in _instance_items(ET.fromstring(payload)):
                    self._run_at[_child(item, "instanceId").text] = now
            return payload
        if action != "DescribeInstances" or not self.boot_delay:
            return payload
        root = ET.fromstring(payload)
        now = time.monotonic()
        with self._lock:
            booting = {i for i, at in self._run_at.items()
                       if now - at < self.boot_delay}
        for item in _instance_items(root):
            state = _child(item, "instanceState")
            if (_child(item, "instanceId").text in booting
                    and _child(state, "name").text == "running"):
                _child(state, "code").text = "0"
                _child(state, "name").text = "pending"
        if root.tag.startswith("{"):
            ET.register_namespace("", root.tag[1:].split("}")[0])
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)

    def record_backend(self, action: str, seconds: float) -> None:
        with self._lock:
            self.backend[action].append(seconds)

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.times.clear()
            self.backend.clear()

    @staticmethod
    def action_of(method, path, headers, body) -> str:
        target = headers.get("X-Amz-Target")
        if target:
            return target.rsplit(".", 1)[-1]
        if body[:7] == b"Action=" or b"&Action=" in body:
            form = urllib.parse.parse_qs(body.decode(errors="replace"))
            return form.get("Action", ["?"])[0]
        query = urllib.parse.urlparse(path).query
        form = urllib.parse.parse_qs(query)
        if "Action" in form:
            return form["Action"][0]
        return "HTTP:%s" % method

    def answer_quotas(self, target, body):
        operation = target[len(QUOTAS_TARGET):]
        args = json.loads(body or b"{}")
        if operation == "ListServiceQuotas":
            payload = self.quotas.list_service_quotas(
                args["ServiceCode"], args.get("NextToken"),
                args.get("MaxResults", 100))
            return 200, [("Content-Type", "application/x-amz-json-1.1")], \
                json.dumps(payload).encode()
        error = {"__type": "NoSuchResourceException",
                 "message": "%s is not faked" % operation}
        return 400, [("Content-Type", "application/x-amz-json-1.1")], \
            json.dumps(error).encode()

    def forward(self, method, path, headers, body):
        conn = getattr(self._local, "conn", None)
        for attempt in (1, 2):
            if conn is None:
                conn = http.client.HTTPConnection(
                    "127.0.0.1", self.backend_port, timeout=60)
                self._local.conn = conn
            try:
                forwarded = {k: v for k, v in headers.items()
                             if k.lower() not in ("connection",)}
                conn.request(method, path, body=body, headers=forwarded)
                response = conn.getresponse()
                payload = response.read()
                return response.status, response.getheaders(), payload
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = self._local.conn = None
                if attempt == 2:
                    raise
