# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""SSH host-key scanning of freshly booted nodes.

A scan has two phases:

1. *Connect*: try a TCP connection to the node until one succeeds or the
   scan's timeout (the provider's ``boot-timeout``) runs out.  A refused or
   unreachable attempt is retried after :data:`RETRY_INTERVAL`; a single
   attempt never waits longer than :data:`ATTEMPT_TIMEOUT`.
2. *Keyscan* (only for ``ssh`` and ``network_cli`` connection types): read
   the host keys the server offers over the connection from phase 1, one
   key type at a time (:mod:`nodepool.hostkeys`).

:func:`scan_host_keys` runs a scan synchronously in the caller's thread.
:class:`NodeScanner` runs many scans for the launcher's non-blocking state
machines: one thread multiplexes every connect phase with :mod:`selectors`,
and a small thread pool runs the keyscans, which block inside paramiko.
"""

import collections
import concurrent.futures
import errno
import logging
import selectors
import socket
import threading
import time

from nodepool.exceptions import LaunchError, NodepoolError
from nodepool import hostkeys
from nodepool.hostkeys import (KEYSCAN_TIMEOUT, LaunchKeyscanException,
                               ScanCancelledException)

__all__ = [
    "ATTEMPT_TIMEOUT", "ConnectionTimeoutException", "KEYSCAN_TIMEOUT",
    "KEY_CONNECTION_TYPES", "LaunchKeyscanException", "NodeScanner",
    "POLL_INTERVAL", "RETRY_INTERVAL", "ScanCancelledException",
    "ScanRequest", "scan_host_keys", "wants_keys",
]

log = logging.getLogger("nodepool.nodescan")

#: Connection types whose host keys are gathered; any other type (winrm,
#: for instance) only needs its port to accept a TCP connection.
KEY_CONNECTION_TYPES = frozenset(("ssh", "network_cli"))

#: Upper bound of one TCP connection attempt, in seconds.
ATTEMPT_TIMEOUT = 10.0
#: Pause after a refused or unreachable attempt before the next one.
RETRY_INTERVAL = 1.0
#: Longest the scanner thread blocks in ``select()``.
POLL_INTERVAL = 1.0


class ConnectionTimeoutException(LaunchError):
    """The node's port did not accept a connection within the timeout."""

    # Every failed scan of a launch is a "keyscan" launch result, as in
    # nodepool 11 (which wraps them all): dashboards and alerts count
    # unreachable boots under that name, not "ssh".
    statsd_key = "error.keyscan"


def wants_keys(gather_keys: bool, connection_type: str) -> bool:
    """Whether a scan with these settings gathers host keys."""
    return bool(gather_keys) and connection_type in KEY_CONNECTION_TYPES


def scan_host_keys(ip: str, port: int = 22, timeout: float = 60,
                   gather_keys: bool = True,
                   connection_type: str = "ssh") -> list[str]:
    """Wait for ``ip:port`` to accept connections and return its host keys.

    Blocks the calling thread for up to ``timeout`` seconds of connection
    attempts plus the keyscan.  Returns ``[]`` when no keys are wanted
    (``gather_keys`` false, or a connection type other than ``ssh`` and
    ``network_cli``); then a TCP connection is all that is checked.
    IPv6 addresses work; a host name is looked up on every attempt and its
    first address used.

    :raises ConnectionTimeoutException: no TCP connection within ``timeout``.
    :raises LaunchKeyscanException: connected, but no host key could be read.
    """
    gather = wants_keys(gather_keys, connection_type)
    deadline = time.monotonic() + timeout
    sock, sockaddr = _connect_until(ip, port, deadline)
    if not gather:
        sock.close()
        return []
    return hostkeys.gather_keys(sock, sockaddr, ip, port,
                                min(KEYSCAN_TIMEOUT, timeout))


def _resolve(host, port, numeric_only=False):
    """Return ``(family, sockaddr)`` for ``host``; raise socket.gaierror."""
    flags = socket.AI_NUMERICHOST if numeric_only else 0
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                               flags=flags)
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def _connect_until(host, port, deadline):
    """Blocking connect attempts until one succeeds or ``deadline`` passes."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ConnectionTimeoutException(
                "Timeout connecting to %s on port %s" % (host, port))
        sock = None
        try:
            family, sockaddr = _resolve(host, port)
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(min(ATTEMPT_TIMEOUT, remaining))
            sock.connect(sockaddr)
            return sock, (family, sockaddr)
        except OSError as e:
            if sock is not None:
                sock.close()
            log.debug("Connection attempt to %s port %s failed: %s",
                      host, port, e)
        # A refused connection returns at once; space the retries out.
        time.sleep(max(0.0, min(RETRY_INTERVAL,
                                deadline - time.monotonic())))


def _shutdown(sock):
    """Wake whoever is blocked on ``sock``; the owner still closes it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected yet, or already closed


class ScanRequest:
    """One scan submitted to a :class:`NodeScanner`.

    Poll :attr:`complete`; then :attr:`result` holds the keys (``[]`` when
    none were wanted) and :attr:`exception` is ``None`` or the error
    (:class:`ConnectionTimeoutException`, :class:`LaunchKeyscanException`
    or :class:`ScanCancelledException`).  Safe to read from any thread.
    """

    def __init__(self, scanner, host, port, timeout, gather_keys):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.gather_keys = gather_keys
        self.result = []
        self.exception = None
        self._scanner = scanner
        self._done = threading.Event()
        self._cancelled = False
        self._pool_sockets = set()  # sockets of a running keyscan
        self._deadline = time.monotonic() + timeout
        # Connect-phase state, owned by the scanner thread.
        self._address = None      # (family, sockaddr) once resolved
        self._sock = None         # socket of the attempt in progress
        self._next_attempt = 0.0
        self._attempt_deadline = 0.0
        self._resolving = False

    def __repr__(self):
        return "<ScanRequest %s port %s>" % (self.host, self.port)

    @property
    def complete(self) -> bool:
        """True once the scan succeeded, failed or was cancelled."""
        return self._done.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Abandon the scan; it completes with ScanCancelledException.

        Sockets of a keyscan already running in the pool are shut down so
        it ends promptly.  Does nothing to a completed scan.
        """
        self._abort(ScanCancelledException(
            "Scan of %s port %s cancelled" % (self.host, self.port)))
        self._scanner._wake()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until complete or ``timeout``; return :attr:`complete`."""
        return self._done.wait(timeout)

    def _abort(self, exception):
        if not self._finish(exception=exception, cancel=True):
            return
        with self._scanner._lock:
            sockets = list(self._pool_sockets)
        for sock in sockets:
            _shutdown(sock)

    def _track(self, sock):
        """Record a socket the keyscan uses (called by the pool job)."""
        with self._scanner._lock:
            self._pool_sockets.add(sock)
            cancelled = self._cancelled
        if cancelled:
            _shutdown(sock)

    def _untrack(self, sock):
        with self._scanner._lock:
            self._pool_sockets.discard(sock)

    def _finish(self, result=None, exception=None, cancel=False):
        with self._scanner._lock:
            if self._done.is_set():
                return False
            self._cancelled = cancel
            self.result = result if result is not None else []
            self.exception = exception
            self._done.set()
            self._scanner._live.discard(self)
        return True


class NodeScanner:
    """Runs many scans at once without blocking the caller.

    ``start()`` it, ``submit()`` scans, poll their :class:`ScanRequest`, and
    ``stop()`` it (which joins its threads).  At most ``max_active`` scans
    are in progress (connecting or keyscanning); the rest wait in FIFO order.
    All public methods are thread-safe.  ``keyscan_workers`` bounds the
    threads that run paramiko negotiations (each takes tens of
    milliseconds against a healthy server).
    """

    def __init__(self, max_active: int = 100, name: str = "NodeScanner",
                 keyscan_workers: int = 4):
        if max_active < 1:
            raise ValueError("max_active must be at least 1")
        self.name = name
        self.max_active = max_active
        self.keyscan_workers = keyscan_workers
        self.log = logging.getLogger("nodepool.nodescan.%s" % name)
        self._lock = threading.Lock()
        self._queue = collections.deque()   # submitted, not yet admitted
        self._live = set()                  # submitted, not yet complete
        # (handler, request, value) posted by pool jobs for the scanner
        # thread, which alone touches the connect-phase state.
        self._inbox = collections.deque()
        self._stop_event = threading.Event()
        self._started = False
        self._thread = None
        self._pool = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        # Owned by the scanner thread.
        self._connecting = set()
        self._active = 0

    # -- public API -----------------------------------------------------

    def start(self) -> None:
        """Start the scanner thread and the keyscan pool."""
        with self._lock:
            if self._started:
                raise RuntimeError("%s already started" % self.name)
            self._started = True
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.keyscan_workers,
            thread_name_prefix="%s-keyscan" % self.name)
        self._thread = threading.Thread(target=self._run, name=self.name,
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Cancel unfinished scans and join every thread of the scanner.

        Unfinished scans complete with :class:`ScanCancelledException`;
        running keyscans have their sockets shut down, so this returns
        promptly (a pending host-name lookup is the exception).
        """
        self._stop_event.set()
        self._wake()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            unfinished = list(self._live)
            self._queue.clear()
        for request in unfinished:
            request._abort(ScanCancelledException(
                "%s stopped before scanning %s port %s"
                % (self.name, request.host, request.port)))
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._wake_r.close()
        self._wake_w.close()

    def submit(self, ip: str, port: int = 22, timeout: float = 60,
               gather_keys: bool = True,
               connection_type: str = "ssh") -> ScanRequest:
        """Queue a scan of ``ip:port``; see :func:`scan_host_keys`.

        Never blocks.
        """
        gather = wants_keys(gather_keys, connection_type)
        request = ScanRequest(self, ip, port, timeout, gather)
        with self._lock:
            # stop() sets the event before it collects the live requests
            # under this lock, so none slips past it.
            if self._stop_event.is_set():
                raise RuntimeError("%s is stopped" % self.name)
            self._live.add(request)
            self._queue.append(request)
        self._wake()
        return request

    # -- scanner thread -------------------------------------------------

    def _wake(self):
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            # Full means a wake-up is already pending; closed means stopped.
            pass

    def _run(self):
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while not self._stop_event.is_set():
                self._drain_inbox(selector)
                self._admit()
                now = time.monotonic()
                wait = self._service(selector, now)
                for key, _ in selector.select(wait):
                    if key.data is None:
                        self._drain_wake_socket()
                    else:
                        self._on_connect_event(selector, key.data)
        except Exception:
            self.log.exception("Scanner thread failed")
            raise
        finally:
            for request in list(self._connecting):
                self._close_attempt(selector, request)
            selector.close()

    def _drain_wake_socket(self):
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _drain_inbox(self, selector):
        while self._inbox:
            handler, request, value = self._inbox.popleft()
            handler(selector, request, value)

    def _admit(self):
        while self._active < self.max_active:
            with self._lock:
                if not self._queue:
                    return
                request = self._queue.popleft()
            if request.complete:
                continue  # cancelled while queued
            self._active += 1
            try:
                request._address = _resolve(request.host, request.port,
                                            numeric_only=True)
            except OSError:
                pass  # a host name: resolved in the pool, off this thread
            request._next_attempt = time.monotonic()
            self._connecting.add(request)

    def _release(self, request):
        self._connecting.discard(request)
        self._active -= 1

    def _service(self, selector, now):
        """Advance every connect phase; return how long select may wait."""
        wait = POLL_INTERVAL
        for request in list(self._connecting):
            if request._resolving:
                continue  # the pool job reports back through the inbox
            if request.complete:
                self._close_attempt(selector, request)
                self._release(request)
                continue
            if now >= request._deadline:
                self._close_attempt(selector, request)
                self._release(request)
                request._finish(exception=ConnectionTimeoutException(
                    "Timeout connecting to %s on port %s"
                    % (request.host, request.port)))
                continue
            if request._sock is not None:
                if now >= request._attempt_deadline:
                    self.log.debug("Connection attempt to %s port %s "
                                   "timed out", request.host, request.port)
                    self._close_attempt(selector, request)
                    request._next_attempt = now
                else:
                    wait = min(wait, request._attempt_deadline - now)
                    continue
            if now >= request._next_attempt:
                self._start_attempt(selector, request, now)
            if (request in self._connecting and request._sock is None
                    and not request._resolving):
                wait = min(wait, request._next_attempt - now)
            wait = min(wait, request._deadline - now)
        return max(0.0, wait)

    def _start_attempt(self, selector, request, now):
        if request._address is None:
            request._resolving = True
            self._pool.submit(self._resolve_job, request)
            return
        family, sockaddr = request._address
        sock = None
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            err = sock.connect_ex(sockaddr)
        except OSError as e:
            err = e.errno
        if err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
            request._sock = sock
            request._attempt_deadline = min(now + ATTEMPT_TIMEOUT,
                                            request._deadline)
            selector.register(sock, selectors.EVENT_WRITE, request)
        elif err == 0:
            request._sock = sock
            self._connected(selector, request)
        else:
            if sock is not None:
                sock.close()
            self._retry_later(request, err)

    def _retry_later(self, request, err):
        self.log.debug("Connection attempt to %s port %s failed: %s",
                       request.host, request.port,
                       errno.errorcode.get(err, err))
        request._next_attempt = time.monotonic() + RETRY_INTERVAL

    def _close_attempt(self, selector, request):
        sock, request._sock = request._sock, None
        if sock is not None:
            try:
                selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()

    def _on_connect_event(self, selector, request):
        sock = request._sock
        if sock is None:
            return
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._close_attempt(selector, request)
            self._retry_later(request, err)
        else:
            selector.unregister(sock)
            self._connected(selector, request)

    def _connected(self, selector, request):
        sock, request._sock = request._sock, None
        if not request.gather_keys or request.complete:
            sock.close()
            self._release(request)
            request._finish([])
            return
        # From here the pool owns the socket; the slot is released when
        # the keyscan job reports back.
        self._connecting.discard(request)
        sock.setblocking(True)
        self._pool.submit(self._keyscan_job, request, sock)

    # -- pool jobs (report back through the inbox) ----------------------

    def _post(self, handler, request, value=None):
        self._inbox.append((handler, request, value))
        self._wake()

    def _resolve_job(self, request):
        try:
            address = _resolve(request.host, request.port)
        except OSError as e:
            self.log.debug("Cannot resolve %s: %s", request.host, e)
            address = None
        self._post(self._on_resolved, request, address)

    def _on_resolved(self, selector, request, address):
        request._resolving = False
        if address is None:
            request._next_attempt = time.monotonic() + RETRY_INTERVAL
        else:
            request._address = address
            request._next_attempt = time.monotonic()

    def _keyscan_job(self, request, sock):
        try:
            if request.complete:
                sock.close()
                return
            timeout = min(KEYSCAN_TIMEOUT, request.timeout)
            keys = hostkeys.gather_keys(sock, request._address,
                                        request.host, request.port, timeout,
                                        watch=request)
            request._finish(keys)
        except NodepoolError as e:
            request._finish(exception=e)
        except Exception as e:
            self.log.exception("Unexpected error scanning %s port %s",
                               request.host, request.port)
            error = LaunchKeyscanException(
                "Can't scan host key of %s port %s: %s"
                % (request.host, request.port, e))
            error.__cause__ = e
            request._finish(exception=error)
        finally:
            self._post(self._on_keyscan_done, request)

    def _on_keyscan_done(self, selector, request, value):
        self._active -= 1
