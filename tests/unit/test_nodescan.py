# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Host-key scans against a real sshd and in-process test servers."""

import io
import logging
import socket
import threading
import time

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from nodepool import hostkeys
from nodepool.nodescan import (ConnectionTimeoutException,
                               LaunchKeyscanException, NodeScanner,
                               ScanCancelledException, scan_host_keys)
from tests.fixtures.sshd import (ParamikoSshServer, sshd,  # noqa: F401
                                 sshd_factory)
from tests.fixtures.waits import wait_for


@pytest.fixture(autouse=True)
def quiet_paramiko():
    # Key-type probes and servers hung up on make paramiko log tracebacks.
    logger = logging.getLogger("paramiko")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def free_port(address="127.0.0.1"):
    """A port with nothing listening on it (free when probed)."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def ipv6_available():
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


class TcpServer:
    """Accepts TCP connections and talks no SSH.

    ``reply`` is sent on each connection, which is then closed; with
    ``reply=None`` connections are held open in silence until ``stop()``.
    """

    def __init__(self, reply=None):
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve,
                                        name="TcpServer-%d" % self.port)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            if self.reply is not None:
                conn.sendall(self.reply)
                conn.close()
            else:
                self.accepted.append(conn)

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_server():
    server = TcpServer()
    yield server
    server.stop()


@pytest.fixture
def scanner():
    scanner = NodeScanner(max_active=100, name="TestScanner")
    scanner.start()
    yield scanner
    scanner.stop()


def ed25519_key():
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem.decode()))


@pytest.fixture(scope="module")
def all_paramiko_keys():
    return [ed25519_key(),
            paramiko.ECDSAKey.generate(bits=256),
            paramiko.ECDSAKey.generate(bits=384),
            paramiko.ECDSAKey.generate(bits=521),
            paramiko.RSAKey.generate(2048)]


# -- synchronous scans against a real sshd ----------------------------------

@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2"])
def test_scan_returns_every_sshd_host_key(sshd, address):  # noqa: F811
    keys = scan_host_keys(address, sshd.port, timeout=10)
    assert sorted(keys) == sorted(sshd.host_keys())
    assert [k.split()[0] for k in keys] == [
        "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"]


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
def test_scan_ipv6(sshd_factory):  # noqa: F811
    server = sshd_factory(addresses=("::1",))
    assert sorted(scan_host_keys("::1", server.port, timeout=10)) == sorted(
        server.host_keys())


@pytest.mark.parametrize("connection_type", ["winrm", "kubectl"])
def test_non_ssh_connection_type_only_connects(sshd,  # noqa: F811
                                               connection_type):
    assert scan_host_keys("127.0.0.1", sshd.port, timeout=10,
                          connection_type=connection_type) == []


def test_network_cli_gathers_keys(sshd):  # noqa: F811
    keys = scan_host_keys("127.0.0.2", sshd.port, timeout=10,
                          connection_type="network_cli")
    assert sorted(keys) == sorted(sshd.host_keys())


def test_no_keys_wanted_still_needs_the_port(silent_server):
    # A plain TCP listener is enough when keys are not gathered.
    assert scan_host_keys("127.0.0.1", silent_server.port, timeout=5,
                          gather_keys=False) == []
    with pytest.raises(ConnectionTimeoutException):
        scan_host_keys("127.0.0.1", free_port(), timeout=1,
                       gather_keys=False)


def test_nothing_listening_times_out():
    port = free_port()
    start = time.monotonic()
    with pytest.raises(ConnectionTimeoutException) as info:
        scan_host_keys("127.0.0.1", port, timeout=2)
    elapsed = time.monotonic() - start
    assert 2 <= elapsed < 4
    assert str(info.value) == "Timeout connecting to 127.0.0.1 on port %d" % (
        port,)
    assert info.value.statsd_key == "error.keyscan"


def test_server_speaking_something_else_fails_keyscan():
    server = TcpServer(reply=b"HTTP/1.0 400 Bad Request\r\n\r\n")
    try:
        start = time.monotonic()
        with pytest.raises(LaunchKeyscanException) as info:
            scan_host_keys("127.0.0.1", server.port, timeout=10)
        assert time.monotonic() - start < 5
    finally:
        server.stop()
    assert info.value.statsd_key == "error.keyscan"
    assert "Can't scan host key of 127.0.0.1 port %d" % server.port in str(
        info.value)


def test_silent_server_fails_keyscan_within_timeout(silent_server):
    start = time.monotonic()
    with pytest.raises(LaunchKeyscanException):
        scan_host_keys("127.0.0.1", silent_server.port, timeout=2)
    assert time.monotonic() - start < 4


def test_no_address_skips_the_network():
    # Tests pass tests.fakes.scanner.FakeScanner in; the production scan
    # treats an address that reads "fake" like any other.
    with pytest.raises(ConnectionTimeoutException):
        scan_host_keys("fake-ip-1.invalid", 22, timeout=0.5)
    with pytest.raises(ConnectionTimeoutException):
        scan_host_keys("fake.invalid", 22, timeout=0.5, gather_keys=False)


# -- in-process paramiko servers ----------------------------------------------

def test_scan_every_paramiko_key_type(all_paramiko_keys):
    with ParamikoSshServer(all_paramiko_keys) as server:
        keys = scan_host_keys("127.0.0.1", server.port, timeout=10)
    assert keys == server.host_keys()
    assert [k.split()[0] for k in keys] == [
        "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521", "ssh-rsa"]


@pytest.mark.parametrize("index", range(5))
def test_scan_single_key_server(all_paramiko_keys, index):
    with ParamikoSshServer([all_paramiko_keys[index]]) as server:
        keys = scan_host_keys("127.0.0.1", server.port, timeout=10)
        # One connection learns the offered types, one fetches the key.
        assert server.connections == 2
    assert keys == server.host_keys()


def test_choose_algorithms():
    choose = hostkeys.choose_algorithms
    assert choose(["rsa-sha2-256", "ssh-ed25519"]) == [
        "ssh-ed25519", "rsa-sha2-256"]
    assert choose(["ssh-rsa", "rsa-sha2-256", "rsa-sha2-512"]) == [
        "rsa-sha2-512"]
    assert choose(["ssh-rsa", "ssh-dss",
                   "ssh-ed25519-cert-v01@openssh.com"]) == []


def test_server_offering_only_unsupported_types():
    # A KEXINIT offering only SHA-1 RSA and DSA host keys.
    def name_list(names):
        data = ",".join(names).encode()
        return len(data).to_bytes(4, "big") + data

    payload = (bytes([20]) + b"\0" * 16 + name_list(["curve25519-sha256"])
               + name_list(["ssh-rsa", "ssh-dss"])
               + name_list([]) * 8 + b"\0" + b"\0" * 4)
    padding = 8 - (len(payload) + 5) % 8 + 8
    packet = ((len(payload) + padding + 1).to_bytes(4, "big")
              + bytes([padding]) + payload + b"\0" * padding)
    server = TcpServer(reply=b"SSH-2.0-OldServer\r\n" + packet)
    try:
        with pytest.raises(LaunchKeyscanException,
                           match="no supported host key type among "
                                 "ssh-rsa,ssh-dss"):
            scan_host_keys("127.0.0.1", server.port, timeout=5)
    finally:
        server.stop()


# -- NodeScanner ------------------------------------------------------------

def wait_all(requests, timeout=30):
    for request in requests:
        assert request.wait(timeout), request
    return requests


def test_scanner_runs_concurrent_scans(sshd, scanner):  # noqa: F811
    requests = [scanner.submit("127.0.0.%d" % (1 + i % 2), sshd.port,
                               timeout=30) for i in range(20)]
    for request in wait_all(requests):
        assert request.complete
        assert request.exception is None
        assert sorted(request.result) == sorted(sshd.host_keys())


def test_scanner_queues_beyond_max_active(sshd, silent_server):  # noqa: F811
    scanner = NodeScanner(max_active=3, name="SmallScanner")
    scanner.start()
    try:
        held = [scanner.submit("127.0.0.1", silent_server.port, timeout=60)
                for _ in range(3)]
        waiting = [scanner.submit("127.0.0.1", sshd.port, timeout=60)
                   for _ in range(20)]
        # The first three occupy every slot: the silent server never
        # answers, so the rest stay queued.
        wait_for(lambda: len(silent_server.accepted) == 3, timeout=10)
        assert not waiting[0].wait(0.5)
        assert not any(r.complete for r in held + waiting)
        for request in held:
            request.cancel()
        for request in wait_all(waiting):
            assert request.exception is None
            assert sorted(request.result) == sorted(sshd.host_keys())
        assert len(silent_server.accepted) == 3
        for request in held:
            assert isinstance(request.exception, ScanCancelledException)
            assert request.cancelled
    finally:
        scanner.stop()


def test_scanner_connection_timeout(scanner):
    port = free_port()
    start = time.monotonic()
    request = scanner.submit("127.0.0.1", port, timeout=2)
    assert request.wait(10)
    elapsed = time.monotonic() - start
    assert 2 <= elapsed < 4
    assert isinstance(request.exception, ConnectionTimeoutException)
    assert str(request.exception) == (
        "Timeout connecting to 127.0.0.1 on port %d" % port)
    assert request.result == []


def test_scanner_does_not_spin_while_retrying(scanner):
    cpu = time.process_time()
    requests = [scanner.submit("127.0.0.1", free_port(), timeout=2)
                for _ in range(10)]
    wait_all(requests)
    assert all(isinstance(r.exception, ConnectionTimeoutException)
               for r in requests)
    # Busy polling would burn about two seconds of CPU here.
    assert time.process_time() - cpu < 0.5


def test_scanner_waits_for_a_server_that_comes_up_late(scanner,
                                                       all_paramiko_keys):
    port = free_port()
    request = scanner.submit("127.0.0.1", port, timeout=30)
    assert not request.wait(1.5)  # refused at least once, still retrying
    with ParamikoSshServer(all_paramiko_keys[:1], port=port) as server:
        assert request.wait(10)
        assert request.exception is None
        assert request.result == server.host_keys()


def test_scanner_keyscan_failure(scanner, silent_server):
    garbage = TcpServer(reply=b"220 smtp.example.com ESMTP\r\n")
    try:
        bad = scanner.submit("127.0.0.1", garbage.port, timeout=10)
        mute = scanner.submit("127.0.0.1", silent_server.port, timeout=2)
        wait_all([bad, mute])
    finally:
        garbage.stop()
    assert isinstance(bad.exception, LaunchKeyscanException)
    assert isinstance(mute.exception, LaunchKeyscanException)


def test_scanner_non_ssh_and_fake_named(scanner, silent_server):
    winrm = scanner.submit("127.0.0.1", silent_server.port, timeout=10,
                           connection_type="winrm")
    fake = scanner.submit("fake-host.invalid", 22, timeout=0.5)
    fake_winrm = scanner.submit("fake-host.invalid", 5986, timeout=0.5,
                                connection_type="winrm")
    wait_all([winrm, fake, fake_winrm])
    assert winrm.exception is None and winrm.result == []
    # No address is answered without the network.
    assert isinstance(fake.exception, ConnectionTimeoutException)
    assert isinstance(fake_winrm.exception, ConnectionTimeoutException)


def test_scanner_host_name(scanner, sshd_factory):  # noqa: F811
    addresses = ("127.0.0.1", "::1") if ipv6_available() else ("127.0.0.1",)
    server = sshd_factory(addresses=addresses)
    request = scanner.submit("localhost", server.port, timeout=10)
    assert request.wait(15)
    assert request.exception is None
    assert sorted(request.result) == sorted(server.host_keys())


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
def test_scanner_ipv6(scanner, all_paramiko_keys):
    with ParamikoSshServer(all_paramiko_keys, address="::1") as server:
        request = scanner.submit("::1", server.port, timeout=10)
        assert request.wait(15)
    assert request.exception is None
    assert request.result == server.host_keys()


def test_cancel_while_connecting_frees_the_slot(sshd):  # noqa: F811
    scanner = NodeScanner(max_active=1, name="OneSlotScanner")
    scanner.start()
    try:
        stuck = scanner.submit("127.0.0.1", free_port(), timeout=60)
        queued = scanner.submit("127.0.0.1", sshd.port, timeout=60)
        assert not queued.wait(0.3)
        stuck.cancel()
        assert stuck.complete
        assert isinstance(stuck.exception, ScanCancelledException)
        assert queued.wait(10)
        assert queued.exception is None
        # Cancelling a finished scan changes nothing.
        queued.cancel()
        assert queued.exception is None and not queued.cancelled
    finally:
        scanner.stop()


def test_cancel_interrupts_a_running_keyscan(scanner, silent_server):
    request = scanner.submit("127.0.0.1", silent_server.port, timeout=60)
    wait_for(lambda: silent_server.accepted, timeout=10)
    start = time.monotonic()
    request.cancel()
    assert isinstance(request.exception, ScanCancelledException)
    # The pool job gives its socket up at once rather than after the
    # 10 s negotiation timeout: the server sees the connection close.
    conn = silent_server.accepted[0]
    conn.settimeout(5)
    # The cancel may land before or after the client sent its banner.
    first = conn.recv(4096)
    if first:
        assert first.startswith(b"SSH-2.0-")
        assert conn.recv(4096) == b""
    assert time.monotonic() - start < 5


def test_cancel_queued_request():
    scanner = NodeScanner(max_active=1, name="NotStarted")
    request = scanner.submit("127.0.0.1", 22, timeout=60)
    request.cancel()
    assert request.complete and request.cancelled
    scanner.start()
    scanner.stop()


def scanner_threads(name):
    return [t for t in threading.enumerate() if t.name.startswith(name)]


def test_stop_joins_threads_and_cancels_scans(sshd, silent_server):  # noqa: F811,E501
    scanner = NodeScanner(max_active=2, name="StopScanner")
    scanner.start()
    done = scanner.submit("127.0.0.1", sshd.port, timeout=30)
    assert done.wait(10)
    in_keyscan = scanner.submit("127.0.0.1", silent_server.port, timeout=60)
    connecting = scanner.submit("127.0.0.1", free_port(), timeout=60)
    queued = scanner.submit("127.0.0.1", free_port(), timeout=60)
    wait_for(lambda: silent_server.accepted, timeout=10)
    assert scanner_threads("StopScanner")
    start = time.monotonic()
    scanner.stop()
    assert time.monotonic() - start < 5
    assert scanner_threads("StopScanner") == []
    for request in (in_keyscan, connecting, queued):
        assert request.complete
        assert isinstance(request.exception, ScanCancelledException)
    assert done.exception is None
    with pytest.raises(RuntimeError):
        scanner.submit("127.0.0.1", sshd.port)
