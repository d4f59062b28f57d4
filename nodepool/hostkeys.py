# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Reading a server's SSH host keys over a connected socket.

This is the *keyscan* phase of a node scan (:mod:`nodepool.nodescan` runs
the connect phase and schedules the work): read the server's KEXINIT to
learn which host-key algorithms it offers, then make one paramiko
connection per key type, restricted to that type, and record
``"<name> <base64>"`` for each key.

The offered algorithms are read straight off the wire (RFC 4253, section 7.1)
because paramiko keeps the server's KEXINIT only until key exchange ends and
exposes no public accessor for it.
"""

import logging
import socket
import struct
import time

import paramiko

from nodepool.exceptions import LaunchError, NodepoolError

# The scan's logger: these messages are part of a node scan.
log = logging.getLogger("nodepool.nodescan")

#: Upper bound of one SSH negotiation (banner, KEXINIT, key exchange).
KEYSCAN_TIMEOUT = 10.0

# Host-key algorithms we ask for, in the order keys are reported.  RSA is
# listed once: paramiko 5 no longer speaks "ssh-rsa" (SHA-1), so the RSA
# key is fetched with the first of its SHA-2 signature algorithms the
# server offers; the key itself still reports the name "ssh-rsa".
_KEY_FAMILIES = (
    ("ssh-ed25519",),
    ("ecdsa-sha2-nistp256",),
    ("ecdsa-sha2-nistp384",),
    ("ecdsa-sha2-nistp521",),
    ("rsa-sha2-512", "rsa-sha2-256"),
)

_CLIENT_BANNER = b"SSH-2.0-nodepool_nodescan\r\n"
_MSG_IGNORE = 2
_MSG_DEBUG = 4
_MSG_KEXINIT = 20
# RFC 4253 lets servers send text lines before their identification string;
# bound how much of that we read.
_MAX_PRE_BANNER_LINES = 50
_MAX_LINE = 8192
_MAX_PACKET = 35000


class LaunchKeyscanException(LaunchError):
    """The node accepted a connection but its host keys could not be read."""

    statsd_key = "error.keyscan"


class ScanCancelledException(NodepoolError):
    """The scan was cancelled, or its scanner stopped, before it finished."""

    statsd_key = "error.keyscan"


class _Unwatched:
    """The watch of a synchronous scan: never cancelled."""

    complete = False

    def _track(self, sock):
        pass

    def _untrack(self, sock):
        pass


def gather_keys(sock, address, host, port, negotiation_timeout, watch=None):
    """Read every host key ``host`` offers; ``sock`` is connected to it.

    ``sock`` is consumed (closed).  ``address`` is ``(family, sockaddr)``
    for the extra connections, one per key type.  ``watch`` (a
    :class:`~nodepool.nodescan.ScanRequest`) is told about every socket in use so that a
    cancellation can shut them down, and is checked between connections.
    """
    watch = watch or _Unwatched()
    watch._track(sock)
    try:
        offered = _read_offered_key_types(sock, negotiation_timeout)
    except (OSError, ValueError) as e:
        raise LaunchKeyscanException(
            "Can't scan host key of %s port %s: %s" % (host, port, e)) from e
    finally:
        watch._untrack(sock)
        sock.close()
    algorithms = choose_algorithms(offered)
    if not algorithms:
        raise LaunchKeyscanException(
            "Can't scan host key of %s port %s: no supported host key type "
            "among %s" % (host, port, ",".join(offered)))
    keys = []
    for algorithm in algorithms:
        if watch.complete:
            raise ScanCancelledException(
                "Scan of %s port %s cancelled" % (host, port))
        try:
            key = _fetch_key(address, algorithm, negotiation_timeout, watch)
        except Exception as e:
            raise LaunchKeyscanException(
                "Can't scan %s host key of %s port %s: %s"
                % (algorithm, host, port, e)) from e
        if key is not None and key not in keys:
            keys.append(key)
    if not keys:
        raise LaunchKeyscanException(
            "Can't scan host key of %s port %s: no key received"
            % (host, port))
    return keys


def choose_algorithms(offered):
    """One algorithm to ask for per key type the server offers."""
    chosen = []
    for family in _KEY_FAMILIES:
        for algorithm in family:
            if algorithm in offered:
                chosen.append(algorithm)
                break
    if "ssh-rsa" in offered and not any(a.startswith("rsa-sha2-")
                                        for a in offered):
        log.warning("Server offers its RSA key only with SHA-1 signatures "
                    "(ssh-rsa), which paramiko no longer supports; "
                    "skipping it")
    return chosen


def _fetch_key(address, algorithm, timeout, watch):
    """Negotiate with ``address`` allowing only ``algorithm``; return the key.

    Returns ``None`` when this paramiko does not know ``algorithm`` or the
    server turns it down (a key-type mismatch, expected and harmless).
    """
    family, sockaddr = address
    sock = socket.socket(family, socket.SOCK_STREAM)
    watch._track(sock)
    transport = None
    try:
        sock.settimeout(timeout)
        sock.connect(sockaddr)
        transport = paramiko.Transport(sock)
        try:
            transport.get_security_options().key_types = [algorithm]
        except ValueError:
            # paramiko reports an unknown algorithm as "unknown cipher".
            log.debug("paramiko does not support host key type %s",
                      algorithm)
            return None
        transport.banner_timeout = timeout
        transport.handshake_timeout = timeout
        try:
            transport.start_client(timeout=timeout)
        except paramiko.SSHException as e:
            if "Incompatible" in str(e):
                log.debug("Server declined host key type %s: %s",
                          algorithm, e)
                return None
            raise
        # start_client() returns quietly when its timeout expires; this
        # then raises "No existing session".
        key = transport.get_remote_server_key()
        return "%s %s" % (key.get_name(), key.get_base64())
    finally:
        if transport is not None:
            transport.close()
        # Transport.close() skips the socket when negotiation never started.
        watch._untrack(sock)
        sock.close()


class _Reader:
    """Buffered reads from a blocking socket against one deadline."""

    def __init__(self, sock, deadline):
        self.sock = sock
        self.deadline = deadline
        self.buffer = b""

    def _fill(self):
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out reading from the server")
        self.sock.settimeout(remaining)
        data = self.sock.recv(4096)
        if not data:
            raise ValueError("connection closed by the server")
        self.buffer += data

    def line(self):
        while b"\n" not in self.buffer:
            if len(self.buffer) > _MAX_LINE:
                raise ValueError("line too long")
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r")

    def exactly(self, count):
        while len(self.buffer) < count:
            self._fill()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data


def _read_offered_key_types(sock, timeout):
    """Exchange identification strings and return the server's host-key list.

    Raises ValueError for anything that is not an SSH 2 server and OSError
    (including timeouts) for transport problems.
    """
    reader = _Reader(sock, time.monotonic() + timeout)
    sock.settimeout(timeout)
    sock.sendall(_CLIENT_BANNER)
    for _ in range(_MAX_PRE_BANNER_LINES):
        line = reader.line()
        if line.startswith(b"SSH-"):
            break
    else:
        raise ValueError("no SSH identification string")
    if not line.startswith((b"SSH-2.0-", b"SSH-1.99-")):
        raise ValueError("unsupported protocol %r" % line[:40])
    # The first binary packets are unencrypted:
    # uint32 length, byte padding length, payload, padding.
    for _ in range(10):
        length, padding = struct.unpack(">IB", reader.exactly(5))
        if not padding + 1 < length <= _MAX_PACKET:
            raise ValueError("malformed packet")
        payload = reader.exactly(length - 1)[:length - 1 - padding]
        if payload[0] == _MSG_KEXINIT:
            return _parse_kexinit(payload)
        if payload[0] not in (_MSG_IGNORE, _MSG_DEBUG):
            raise ValueError("unexpected message %d before KEXINIT"
                             % payload[0])
    raise ValueError("no KEXINIT received")


def _parse_kexinit(payload):
    """Return the server_host_key_algorithms name-list of a KEXINIT."""
    offset = 1 + 16  # message number, cookie
    for index in range(2):  # kex_algorithms, server_host_key_algorithms
        if len(payload) < offset + 4:
            raise ValueError("truncated KEXINIT")
        (size,) = struct.unpack_from(">I", payload, offset)
        offset += 4
        if len(payload) < offset + size:
            raise ValueError("truncated KEXINIT")
        names = payload[offset:offset + size]
        offset += size
    return [n for n in names.decode("ascii", "replace").split(",") if n]
