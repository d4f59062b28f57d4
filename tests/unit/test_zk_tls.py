# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""TLS to ZooKeeper trusts the configured CA only, checks the server's
name, and says why a connection failed.

A loopback TLS proxy in front of the real server's plain port plays the
man in the middle: it presents a certificate of the test's choosing and,
when a client accepts it, gives that client a working session.
"""

import logging
import subprocess

import pytest

from nodepool.config import load_config
from nodepool.exceptions import ZooKeeperConnectionError
from nodepool.zk.client import ZooKeeperClient
from tests.fixtures import processes, zkserver
from tests.fixtures.tlsproxy import TLSProxy

SCRIPT = processes.console_script("nodepool")


@pytest.fixture(scope="module")
def extra_certs(tmp_path_factory, zk_certs):
    """A server certificate from the test CA for the wrong name, and a
    second CA with a server certificate for the right one."""
    directory = str(tmp_path_factory.mktemp("extra-certs"))
    wrong = zkserver.make_signed_cert(
        zk_certs, directory, "wrong-name", "/CN=wrong.example",
        alt_names="DNS:wrong.example")
    other_ca = zkserver.make_certs(directory + "/other-ca")
    return {"wrong-name": wrong,
            "other-ca": other_ca["ca.pem"],
            "other-ca-server": (other_ca["server.crt"],
                                other_ca["server.key"]),
            "other-ca-client": (other_ca["client.crt"],
                                other_ca["client.key"])}


def _client(hosts, zk_server, timeout=3, **kwargs):
    args = zk_server.tls_args()
    args.update(kwargs)
    return ZooKeeperClient(hosts, timeout=timeout, **args)


def _refused(client):
    with pytest.raises(ZooKeeperConnectionError) as info:
        client.connect(timeout=3)
    client.disconnect()
    return str(info.value)


def test_server_name_is_checked_by_default(zk_server, zk_chroot,
                                           extra_certs):
    backend = (zk_server.host, zk_server.port)
    with TLSProxy(*extra_certs["wrong-name"], backend) as proxy:
        message = _refused(_client(proxy.hosts + zk_chroot, zk_server))
    assert "certificate verify failed" in message
    assert "mismatch" in message
    # Not a byte reached ZooKeeper through the proxy.
    assert proxy.handshakes == 0


def test_check_hostname_off_accepts_the_name(zk_server, zk_chroot,
                                             extra_certs, zk_client):
    backend = (zk_server.host, zk_server.port)
    with TLSProxy(*extra_certs["wrong-name"], backend) as proxy:
        client = _client(proxy.hosts + zk_chroot, zk_server,
                         tls_check_hostname=False)
        client.connect(timeout=10)
        try:
            client.kazoo.create("/through-proxy", b"yes")
        finally:
            client.disconnect()
    assert zk_client.kazoo.get("/through-proxy")[0] == b"yes"


def test_only_the_configured_ca_is_trusted(zk_server, zk_chroot, extra_certs,
                                           monkeypatch):
    # The other CA plays a public CA: OpenSSL's default store (what kazoo
    # loads next to the configured CA) is read from SSL_CERT_FILE.  Even
    # without the name check its certificate must not pass.
    monkeypatch.setenv("SSL_CERT_FILE", extra_certs["other-ca"])
    backend = (zk_server.host, zk_server.port)
    with TLSProxy(*extra_certs["other-ca-server"], backend) as proxy:
        for kwargs in ({}, {"tls_check_hostname": False}):
            message = _refused(_client(proxy.hosts + zk_chroot, zk_server,
                                       **kwargs))
            assert "certificate verify failed" in message
    assert proxy.handshakes == 0


def test_wrong_ca_reason_reported_and_logged_once(zk_server, zk_chroot,
                                                  extra_certs, caplog):
    client = _client(zk_server.tls_hosts + zk_chroot, zk_server,
                     tls_ca=extra_certs["other-ca"])
    with caplog.at_level(logging.DEBUG, logger="nodepool.zk.client"):
        message = _refused(client)
    assert "could not connect to ZooKeeper" in message
    assert "TLS handshake with 127.0.0.1:%d failed: certificate verify " \
        "failed" % zk_server.secure_port in message
    errors = [r for r in caplog.records if r.levelno == logging.ERROR
              and r.name == "nodepool.zk.client"]
    # Kazoo retried meanwhile; the reason is logged once, not per attempt.
    assert len(errors) == 1, caplog.text
    assert "certificate verify failed" in errors[0].getMessage()
    assert "zookeeper-tls" in errors[0].getMessage()


def test_refused_client_certificate_reported(zk_server, zk_chroot,
                                             extra_certs):
    cert, key = extra_certs["other-ca-client"]
    message = _refused(_client(zk_server.tls_hosts + zk_chroot, zk_server,
                               tls_cert=cert, tls_key=key))
    assert "the server refused the handshake" in message
    assert "client certificate" in message


def test_missing_tls_file_reported_at_once(zk_server, zk_chroot, tmp_path):
    client = _client(zk_server.tls_hosts + zk_chroot, zk_server,
                     tls_cert=str(tmp_path / "missing.crt"), timeout=60)
    message = _refused(client)
    assert "cannot use the zookeeper-tls files" in message
    assert "missing.crt" in message


def test_cli_says_why(tmp_path, zk_server, zk_chroot, extra_certs):
    certs = dict(zk_server.certs, **{"ca.pem": extra_certs["other-ca"]})
    path = tmp_path / "nodepool.yaml"
    path.write_text(zkserver.client_config(
        zk_server.host, zk_server.secure_port, zk_chroot, certs, timeout=3)
        + "labels: []\nproviders: []\n")
    result = subprocess.run([SCRIPT, "-c", str(path), "list"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nodepool: error: could not connect to "
                               "ZooKeeper")
    assert "certificate verify failed" in lines[0]
    assert "Connection time-out" not in lines[0]


def test_config_keys_reach_the_client(tmp_path):
    path = tmp_path / "nodepool.yaml"
    path.write_text(
        "zookeeper-servers:\n  - host: zk.example.com\n"
        "zookeeper-tls:\n  ca: /ca.pem\n  cert: /c.pem\n  key: /c.key\n"
        "  check-hostname: false\n  acl: ['CN=zuul,O=Example']\n")
    config = load_config(str(path))
    assert config.zookeeper_tls.check_hostname is False
    assert config.zookeeper_tls.acl == ("CN=zuul,O=Example",)
    client = ZooKeeperClient.from_config(config)
    assert client.tls.check_hostname is False
    assert client.acl_identities == ("CN=zuul,O=Example",)
    # Defaults: the name is checked, no ACLs.
    path.write_text(
        "zookeeper-servers:\n  - host: zk.example.com\n"
        "zookeeper-tls:\n  ca: /ca.pem\n  cert: /c.pem\n  key: /c.key\n")
    tls = load_config(str(path)).zookeeper_tls
    assert tls.check_hostname is True and tls.acl is None


def test_poll_select_like_select():
    import socket as socket_module
    from nodepool.zk.tls import poll_select
    left, right = socket_module.socketpair()
    try:
        # Nothing to read yet; writable at once.
        assert poll_select([left], [], [], 0) == ([], [], [])
        assert poll_select([], [left], [], 0) == ([], [left], [])
        right.sendall(b"x")
        assert poll_select([left, right.fileno()], [], [], 5) == (
            [left], [], [])
        # A hang-up counts as readable: the read reports it.
        right.close()
        readable, _, _ = poll_select([left], [], [], 5)
        assert readable == [left]
        assert left.recv(10) == b"x" and left.recv(10) == b""
    finally:
        left.close()
    with pytest.raises(OSError):
        poll_select([left], [], [], 0)  # closed: fileno() is -1
    with pytest.raises(ValueError):
        poll_select([], [], [], -1)


def test_poll_select_same_descriptor_for_reading_and_writing():
    import socket as socket_module
    from nodepool.zk.tls import poll_select
    left, right = socket_module.socketpair()
    try:
        assert poll_select([left], [left], [], 0) == ([], [left], [])
        right.sendall(b"x")
        assert poll_select([left, right], [right, left], [], 5) == (
            [left], [right, left], [])
    finally:
        left.close()
        right.close()


def test_buffered_socket_reads_from_its_buffer_first():
    import socket as socket_module
    from nodepool.zk.tls import BufferedSocket, poll_select
    left, right = socket_module.socketpair()
    buffered = BufferedSocket(left)
    try:
        assert buffered.pending() == 0
        assert poll_select([buffered], [], [], 0) == ([], [], [])
        right.sendall(b"\x00\x00\x00\x05hello\x00\x00")
        assert poll_select([buffered], [], [], 5) == ([buffered], [], [])
        # One kernel read takes all; the rest waits in the buffer, and
        # counts as readable although the descriptor has nothing.
        assert buffered.recv(4) == b"\x00\x00\x00\x05"
        assert buffered.pending() == 7
        assert poll_select([right, buffered], [], [], 5) == (
            [buffered], [], [])
        assert buffered.recv(5) == b"hello"
        # A read larger than the buffer gets what the buffer holds.
        assert buffered.recv(10) == b"\x00\x00"
        assert buffered.pending() == 0
        assert poll_select([buffered], [], [], 0) == ([], [], [])
        # Everything else is the socket's.
        buffered.setblocking(False)
        with pytest.raises(BlockingIOError):
            buffered.recv(4)
        assert buffered.fileno() == left.fileno()
        right.sendall(b"ab")
        right.close()
        assert buffered.recv(1) == b"a" and buffered.recv(1) == b"b"
        assert buffered.recv(1) == b""  # end of stream
    finally:
        buffered.close()
    assert left.fileno() == -1
