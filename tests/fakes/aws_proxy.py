# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""moto_server on loopback, behind a proxy that plays a slow, faulty AWS.

:class:`MotoServer` runs ``moto_server`` as a child process.
:class:`AwsProxy` sits in front of it: it counts calls by action, delays
them (RunInstances takes over a second on real EC2) and answers the
Service Quotas calls moto does not implement from a
:class:`FakeServiceQuotas`.  A launcher in another process reaches it
through ``AWS_ENDPOINT_URL``; one in the test process through
:class:`ProxiedAwsDriver`.

moto reports a new instance running at once; with ``boot_delay`` the
proxy lists it as pending for that long, as EC2 does while an instance
boots; :meth:`AwsProxy.hold` keeps calls of an action waiting until
released.

Faults, per action and for the next N calls: an AWS error instead of the
call (:meth:`AwsProxy.fail`: throttling, capacity, 5xx), and a call that
reaches moto but whose answer is lost (:meth:`AwsProxy.lose_answer`: the
connection is dropped, a 500 comes back, or the answer is held past the
client's read timeout).  :meth:`AwsProxy.refuse` answers every
RunInstances of one instance type in one zone with a capacity error (the
(type, zone) of each RunInstances is in :attr:`AwsProxy.runs`).
:meth:`AwsProxy.throttle` plays an account's
request limit (a token bucket over all EC2 calls).  Like EC2 and unlike moto, the proxy honours
RunInstances' ``ClientToken``: a repeated token gets the first call's
answer instead of a second instance.
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
from typing import Optional

import boto3
import botocore.config

from nodepool import driver
from nodepool.driver.aws import AwsDriver
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
        if not self.headers.get("X-Amz-Target", "").startswith(
                QUOTAS_TARGET):
            # Over the account's limit: refused at once, as EC2 does.
            refused = proxy.take_token(action)
            if refused is not None:
                self._answer(*refused)
                return
        proxy.wait_gate(action)
        delay = proxy.delays.get(action, proxy.default_delay)
        if delay:
            time.sleep(delay)  # the simulated service latency
        target = self.headers.get("X-Amz-Target", "")
        started = time.monotonic()
        refusal = proxy.take_refusal(action, body)  # notes every run
        failure = proxy.take_failure(action) or refusal
        loss = None
        if failure is not None:
            status, headers, payload = failure
        elif target.startswith(QUOTAS_TARGET):
            status, headers, payload = proxy.answer_quotas(target, body)
        else:
            token = proxy.client_token(action, body)
            status, headers, payload = proxy.forward_once(
                token, self.command, self.path, self.headers, body)
            if status == 200:
                payload = proxy.boot(action, payload)
            loss = proxy.take_loss(action)
        proxy.record_backend(action, time.monotonic() - started)
        if loss is not None:
            if self._lose(loss):
                return
            status, headers, payload = loss[1]
        self._answer(status, headers, payload)

    def _lose(self, loss) -> bool:
        """Lose the answer of a call moto has carried out; True when
        nothing is to be sent."""
        how, _ = loss
        if how == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return True
        if how == "hold":
            # The client times out meanwhile; what is written after that
            # goes nowhere.
            self.server.proxy.released.wait()
            self.close_connection = True
            return True
        return False

    def _answer(self, status, headers, payload) -> None:
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
        except OSError:
            # The client gave up, or died meanwhile (a killed launcher):
            # the call still took effect in moto, as it would on EC2.
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
        # throttle(): [rate, burst, tokens, time]; calls refused by action.
        self._bucket = None
        self.throttled = collections.Counter()
        # Calls forwarded to moto whose answer the client never gets.
        self.losses = collections.defaultdict(list)
        # Set by stop(): held answers are let go.
        self.released = threading.Event()
        # RunInstances answers by ClientToken (EC2's idempotency).
        self._tokens = {}
        self._token_locks = collections.defaultdict(threading.Lock)
        # Seconds a new instance is listed as pending; when each was run.
        self.boot_delay = 0.0
        self._run_at = {}
        self._gates = {}  # action -> Event; calls wait until it is set
        # refuse(): (instance type, zone) -> error code; RunInstances
        # calls as (instance type, zone or None), refused or not.
        self.refusals = {}
        self.runs: list = []
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
        self.released.set()
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
        AWS error instead of forwarding them (``RequestLimitExceeded``
        with 503 is a throttling burst, ``InsufficientInstanceCapacity``
        a capacity error, ``InternalError`` with 500 a server error)."""
        with self._lock:
            self.failures[action].extend([(code, status)] * times)

    def lose_answer(self, action: str, how: str = "drop",
                    times: int = 1) -> None:
        """Forward the next ``times`` calls of ``action`` to moto, then
        lose the answer: ``drop`` closes the connection, ``error``
        answers 500 InternalError, ``hold`` keeps the client waiting
        until it times out (until :meth:`stop` at the latest)."""
        if how not in ("drop", "error", "hold"):
            raise ValueError("unknown way to lose an answer: %s" % how)
        with self._lock:
            self.losses[action].extend([how] * times)

    def refuse(self, instance_type: str, zone: str,
               code: str = "InsufficientInstanceCapacity") -> None:
        """Answer every RunInstances of ``instance_type`` placed in
        ``zone`` (``Placement.AvailabilityZone``) with ``code`` (HTTP
        500, as EC2 sends capacity errors) until :meth:`refuse_none`."""
        with self._lock:
            self.refusals[(instance_type, zone)] = code

    def refuse_none(self) -> None:
        with self._lock:
            self.refusals.clear()

    def take_refusal(self, action: str, body: bytes):
        """Note a RunInstances call in :attr:`runs`; the capacity error
        for it when :meth:`refuse` covers it, else None."""
        if action != "RunInstances":
            return None
        form = urllib.parse.parse_qs(body.decode(errors="replace"))
        run = ((form.get("InstanceType") or [None])[0],
               (form.get("Placement.AvailabilityZone") or [None])[0])
        with self._lock:
            self.runs.append(run)
            code = self.refusals.get(run)
        return None if code is None else self._error(code, 500)

    def throttle(self, rate: Optional[float], burst: int = 1) -> None:
        """Play an account's EC2 request limit: a token bucket of
        ``burst`` tokens (full now) refilled at ``rate`` per second; a
        call that finds it empty is answered ``RequestLimitExceeded``
        (counted in :attr:`throttled` by action).  Service Quotas calls
        are exempt.  ``rate`` None lifts the limit."""
        with self._lock:
            self._bucket = None if rate is None else [
                float(rate), float(burst), float(burst), time.monotonic()]

    def take_token(self, action: str):
        """None when the call may go on, else the throttling answer."""
        with self._lock:
            if self._bucket is None:
                return None
            rate, burst, tokens, then = self._bucket
            now = time.monotonic()
            tokens = min(burst, tokens + (now - then) * rate)
            if tokens >= 1.0:
                self._bucket[2:] = [tokens - 1.0, now]
                return None
            self._bucket[2:] = [tokens, now]
            self.throttled[action] += 1
        return self._error("RequestLimitExceeded", 503)

    def take_failure(self, action: str):
        with self._lock:
            if not self.failures[action]:
                return None
            code, status = self.failures[action].pop(0)
        return self._error(code, status)

    def take_loss(self, action: str):
        """``(how, substitute answer)`` for a call to lose, else None."""
        with self._lock:
            if not self.losses[action]:
                return None
            how = self.losses[action].pop(0)
        return how, self._error("InternalError", 500)

    @staticmethod
    def _error(code: str, status: int):
        payload = (
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors>"
            "<Error><Code>%s</Code><Message>injected %s</Message></Error>"
            "</Errors><RequestID>fake</RequestID></Response>" % (code, code))
        return status, [("Content-Type", "text/xml")], payload.encode()

    @staticmethod
    def client_token(action: str, body: bytes) -> Optional[str]:
        """The ClientToken of a RunInstances call (None for others)."""
        if action != "RunInstances":
            return None
        form = urllib.parse.parse_qs(body.decode(errors="replace"))
        return (form.get("ClientToken") or [None])[0]

    def forward_once(self, token, method, path, headers, body):
        """:meth:`forward`, except that a call repeating an earlier
        successful call's ``token`` gets that call's answer (EC2 does so
        for RunInstances; moto would start another instance)."""
        if token is None:
            return self.forward(method, path, headers, body)
        with self._lock:
            token_lock = self._token_locks[token]
        with token_lock:
            with self._lock:
                known = self._tokens.get(token)
            if known is not None:
                return known
            answer = self.forward(method, path, headers, body)
            if answer[0] == 200:
                with self._lock:
                    self._tokens[token] = answer
            return answer

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
            self.throttled.clear()
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


class ProxiedAwsDriver(AwsDriver):
    """``driver: aws`` for a launcher in the test process: its clients
    talk to :attr:`endpoint` (an :class:`AwsProxy`) with a read timeout
    of :attr:`read_timeout` seconds, so that a held answer times out in
    a test's time.

    :func:`use_proxied_aws` registers it in place of the real driver;
    :func:`restore_aws` puts the real one back.
    """

    endpoint: Optional[str] = None
    read_timeout: float = 60.0
    # Seconds between the adapter's instance listings (its default).
    listing_interval: float = 1.0

    def get_adapter(self, provider_config, warm: bool = True):
        from nodepool.driver.aws.adapter import AwsAdapter, AwsClients
        config = botocore.config.Config(
            max_pool_connections=20, read_timeout=self.read_timeout,
            connect_timeout=5,
            retries={"total_max_attempts": 1, "mode": "standard"})
        session = boto3.Session(
            region_name=provider_config.region_name,
            aws_access_key_id="testing", aws_secret_access_key="testing")
        clients = AwsClients(*(
            session.client(service, endpoint_url=self.endpoint,
                           config=config)
            for service in ("ec2", "s3", "ebs", "service-quotas")))
        return AwsAdapter(provider_config, clients=clients, warm=warm,
                          listing_interval=self.listing_interval)


def use_proxied_aws(endpoint: str, read_timeout: float = 60.0,
                    listing_interval: float = 1.0) -> None:
    """Make ``driver: aws`` providers of in-process launchers use
    ``endpoint`` (and list instances every ``listing_interval``
    seconds)."""
    ProxiedAwsDriver.endpoint = endpoint
    ProxiedAwsDriver.read_timeout = read_timeout
    ProxiedAwsDriver.listing_interval = listing_interval
    driver.register_driver("aws", "tests.fakes.aws_proxy:ProxiedAwsDriver")


def restore_aws() -> None:
    driver.register_driver("aws", "nodepool.driver.aws:AwsDriver")
