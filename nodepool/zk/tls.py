# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""TLS to ZooKeeper: our own SSL context, connection errors that say why,
and x509 ACLs.

Kazoo 2.11 builds its SSL context itself for every connection attempt: it
loads the system's CA store next to the configured CA and checks the host
name only when asked (``check_hostname`` defaults to off).  A certificate
for any name, from any public CA, would then be accepted as the ZooKeeper
server.  Kazoo lets us pass the handler whose ``create_connection`` opens
the socket, so :class:`ConnectionHandler` opens it with a context that
trusts the configured CA alone and checks the server's name by default.

The context is built again for every attempt, as kazoo does, so renewed
certificate files are picked up at the next reconnect.

The handler also remembers why the last attempt failed.  Kazoo turns every
connection error into a retry and its caller sees only "Connection
time-out"; :class:`ZooKeeperClient` reports the remembered reason instead,
and a TLS failure is logged (once per distinct error) as an ERROR: a wrong
CA or certificate does not heal by retrying.
"""

import errno
import logging
import select
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Optional, Sequence

from kazoo.handlers import utils as kazoo_utils
from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.security import ACL, Id, Permissions

log = logging.getLogger("nodepool.zk.client")

#: What identities listed in ``zookeeper-tls.acl`` may do: everything but
#: change ACLs, which stays with nodepool's own identity.
LISTED_PERMISSIONS = (Permissions.READ | Permissions.WRITE
                      | Permissions.CREATE | Permissions.DELETE)


@dataclass(frozen=True)
class TLSFiles:
    """The PEM files of a TLS connection and how strictly to check it.

    ``check_hostname``: the server certificate must name the host the
    client connected to (as written in the hosts string).
    """

    ca: str
    cert: str
    key: str
    check_hostname: bool = True

    def context(self) -> ssl.SSLContext:
        """A client context trusting ``ca`` only; reads the files now.

        :raises OSError, ssl.SSLError: a file is missing or unusable.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # Deliberately no load_default_certs(): a certificate from a
        # public CA must not pass for the ZooKeeper server.
        context.check_hostname = self.check_hostname
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=self.ca)
        context.load_cert_chain(certfile=self.cert, keyfile=self.key)
        return context


_READABLE = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR
_WRITABLE = select.POLLOUT | select.POLLHUP | select.POLLERR


_READ_EVENTS = select.POLLIN | select.POLLPRI


def _bad_descriptor():
    return OSError(errno.EBADF, "bad file descriptor")


class BufferedSocket:
    """A connected plain socket whose reads go through a buffer.

    Kazoo reads every reply in two parts (length, then body), each after a
    wait for the socket to be readable: four system calls per reply.  Here
    one ``recv`` takes whatever the kernel holds (up to
    :attr:`RECV_SIZE` bytes, often several replies), later reads are served
    from the buffer, and :meth:`pending` tells kazoo (as it asks SSL
    sockets) and :func:`poll_select` that no wait is needed.  Everything
    else is the socket's own.
    """

    RECV_SIZE = 65536

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._buffer = b""
        self._offset = 0
        self._left = 0
        # What kazoo calls per request, bound once rather than looked up
        # through __getattr__ each time.
        self.send = sock.send
        self.fileno = sock.fileno

    def pending(self) -> int:
        """Bytes received but not yet read."""
        return self._left

    def recv(self, size: int) -> bytes:
        if not self._left:
            data = self._sock.recv(max(size, self.RECV_SIZE))
            if len(data) <= size:
                return data
            self._buffer, self._offset, self._left = data, 0, len(data)
        start = self._offset
        chunk = self._buffer[start:start + size]
        taken = len(chunk)
        self._offset = start + taken
        self._left -= taken
        if not self._left:
            self._buffer = b""
        return chunk

    def __getattr__(self, name):
        return getattr(self._sock, name)


def poll_select(rlist, wlist, xlist, timeout=None):
    """``select.select`` semantics on ``poll(2)``.

    Kazoo's handler builds, registers and closes an epoll selector for
    every wait, several times per ZooKeeper reply; a poll object is one
    system call.  Like epoll (and unlike ``select(2)``) it has no limit on
    descriptor numbers.  Errors and hang-ups count as ready, so the
    caller's read or write reports them; a closed descriptor raises
    ``OSError(EBADF)`` as ``select`` does.  ``xlist`` is not watched (kazoo
    passes none).  A socket with received data not read yet (``pending()``
    above 0: a :class:`BufferedSocket`, an SSL socket) is readable whatever
    the descriptor says.  Kazoo's connection thread calls this a few
    hundred times per node lifecycle, hence the plain loops.
    """
    rfds = [obj if isinstance(obj, int) else obj.fileno() for obj in rlist]
    wfds = [obj if isinstance(obj, int) else obj.fileno() for obj in wlist]
    poller = select.poll()
    for fd in rfds:
        if fd < 0:
            raise _bad_descriptor()
        poller.register(fd, _READ_EVENTS)
    for fd in wfds:
        if fd < 0:
            raise _bad_descriptor()
        poller.register(fd, select.POLLOUT | (
            _READ_EVENTS if fd in rfds else 0))
    if timeout is not None and timeout < 0:
        raise ValueError("timeout must be non-negative")
    buffered = [obj for obj in rlist if _has_pending(obj)]
    if buffered:
        timeout = 0
    events = poller.poll(None if timeout is None else timeout * 1000)
    if not events and not buffered:
        return [], [], []
    ready = dict(events)
    for event in ready.values():
        if event & select.POLLNVAL:
            raise _bad_descriptor()
    return ([obj for obj, fd in zip(rlist, rfds)
             if ready.get(fd, 0) & _READABLE or obj in buffered],
            [obj for obj, fd in zip(wlist, wfds)
             if ready.get(fd, 0) & _WRITABLE], [])


def _has_pending(obj) -> bool:
    pending = getattr(obj, "pending", None)
    return pending is not None and pending() > 0


class ConnectionHandler(SequentialThreadingHandler):
    """Kazoo's threading handler, opening sockets our way and waiting on
    them with :func:`poll_select`.

    ``tls``: the files for TLS connections, or None for plain TCP.
    Runs on kazoo's connection thread: it only logs, never blocks longer
    than the connection attempt itself.
    """

    def select(self, *args, **kwargs):
        return poll_select(*args, **kwargs)

    def __init__(self, tls: Optional[TLSFiles] = None):
        super().__init__()
        self.tls = tls
        self._lock = threading.Lock()
        self._last_error: Optional[str] = None
        self._logged_error: Optional[str] = None

    @property
    def last_error(self) -> Optional[str]:
        """Why the latest connection attempt failed (None after one
        succeeded)."""
        with self._lock:
            return self._last_error

    def create_connection(self, address, hostname=None, timeout=None,
                          **_kazoo_tls_options):
        # Kazoo also passes its own TLS options (use_ssl, ca, certfile,
        # verify_certs, check_hostname...); self.tls replaces them all.
        where = "%s:%s" % (hostname or address[0], address[1])
        try:
            sock = kazoo_utils.create_tcp_connection(
                socket, address, timeout=timeout)
        except OSError as exc:
            self._failed("cannot connect to %s: %s" % (
                where, exc.strerror or exc), tls=False)
            raise
        if self.tls is None:
            self._succeeded()
            return BufferedSocket(sock)
        try:
            conn = self.tls.context().wrap_socket(
                sock, server_hostname=hostname or address[0])
        except ssl.SSLError as exc:
            sock.close()
            self._failed("TLS handshake with %s failed: %s" % (
                where, _ssl_reason(exc)), tls=True)
            raise
        except OSError as exc:
            # A missing or unreadable certificate file, or the server
            # closing the connection during the handshake.
            sock.close()
            self._failed("TLS connection to %s failed: %s" % (
                where, exc.strerror or exc), tls=True)
            raise
        self._succeeded()
        return conn

    def _failed(self, message: str, tls: bool) -> None:
        with self._lock:
            self._last_error = message
            repeated = message == self._logged_error
            self._logged_error = message
        if tls and not repeated:
            log.error("%s (see zookeeper-tls in the configuration)", message)
        else:
            log.debug("%s", message)

    def _succeeded(self) -> None:
        with self._lock:
            self._last_error = None
            self._logged_error = None


def _ssl_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return "certificate verify failed: %s" % exc.verify_message
    if exc.reason and "ALERT" in exc.reason:
        # The server's side of the handshake failed, nearly always over
        # our client certificate (not signed by a CA the server trusts).
        return "the server refused the handshake (%s); does it trust the " \
            "CA of the client certificate?" % exc.reason.lower()
    return str(exc)


def x509_identity(cert_path: str) -> str:
    """The subject of the certificate in ``cert_path`` as ZooKeeper's
    ``X509AuthenticationProvider`` names the client (RFC 2253, most
    specific part first: ``CN=nodepool,O=Example``)."""
    from cryptography import x509
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    return cert.subject.rfc4514_string()


def x509_acl(own_identity: str, others: Sequence[str]) -> list:
    """ACL entries for new znodes: everything for ``own_identity``, all but
    ACL changes for each of ``others``; nothing for anyone else."""
    acl = [ACL(Permissions.ALL, Id("x509", own_identity))]
    for identity in others:
        if identity != own_identity:
            acl.append(ACL(LISTED_PERMISSIONS, Id("x509", identity)))
    return acl
