# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Connection to ZooKeeper shared by the daemons, the CLI and the caches.

Kazoo runs its state listeners on its connection thread, where they must
not block.  :class:`ZooKeeperClient` therefore only queues state changes
there and runs our own listeners on a dispatch thread, in order.  Two kinds
of listener exist:

* state listeners, called with every :class:`kazoo.protocol.states.KazooState`;
* session listeners, called after a *new* session was established following
  the loss of the previous one.  Ephemeral records (component registrations,
  ephemeral requests) must be written again from there.
"""

import logging
import posixpath
import queue
import threading
from typing import Callable, Optional, Sequence

from kazoo.client import KazooClient
from kazoo.retry import KazooRetry
from kazoo.exceptions import (
    ConnectionClosedError,
    ConnectionLoss,
    OperationTimeoutError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.hosts import collect_hosts
from kazoo.protocol.states import KazooState

from nodepool.exceptions import ZooKeeperConnectionError
from nodepool.zk.tls import ConnectionHandler, TLSFiles, x509_acl, \
    x509_identity

log = logging.getLogger("nodepool.zk.client")

StateListener = Callable[[KazooState], None]
SessionListener = Callable[[], None]

#: Errors of a ZooKeeper call that say nothing about the data: the
#: connection dropped (or the session expired) before the answer came.
#: Whoever meets one retries later rather than treating it as a failure
#: of the work at hand; :attr:`ZooKeeperClient.session_generation` tells
#: whether the locks taken before are still held.
CONNECTION_ERRORS = (ConnectionLoss, OperationTimeoutError,
                     SessionExpiredError, ConnectionClosedError)


def is_connection_error(error: BaseException) -> bool:
    """Whether ``error`` is one of :data:`CONNECTION_ERRORS` or was caused
    by one (e.g. a ``LockError`` raised because the connection dropped)."""
    while error is not None:
        if isinstance(error, CONNECTION_ERRORS):
            return True
        error = error.__cause__
    return False


class ZooKeeperClient:
    """A kazoo client with TLS, ordered listeners and session tracking.

    :param hosts: kazoo hosts string, optionally with a chroot suffix.
    :param tls_ca, tls_cert, tls_key: PEM files; TLS is used when all
        three are given (``zookeeper-tls`` in the config).  Only ``tls_ca``
        is trusted for the server's certificate (see :mod:`nodepool.zk.tls`).
    :param tls_check_hostname: the server's certificate must name the host
        as written in ``hosts`` (``zookeeper-tls.check-hostname``).
    :param acl: None (the default): znodes this client creates are open
        to everyone, as in nodepool 11.  A list of x509 identities: znodes
        are created with an ACL for this client's certificate subject and
        those identities only (``zookeeper-tls.acl``).  Needs TLS.
    :param timeout: session timeout in seconds.
    """

    def __init__(self, hosts: str, tls_ca: Optional[str] = None,
                 tls_cert: Optional[str] = None,
                 tls_key: Optional[str] = None, timeout: float = 10.0,
                 read_only: bool = False, tls_check_hostname: bool = True,
                 acl: Optional[Sequence[str]] = None):
        self.hosts = hosts
        self.timeout = timeout
        kwargs = {}
        self.tls = None
        if tls_ca or tls_cert or tls_key:
            if not (tls_ca and tls_cert and tls_key):
                raise ValueError("zookeeper-tls needs ca, cert and key")
            self.tls = TLSFiles(ca=tls_ca, cert=tls_cert, key=tls_key,
                                check_hostname=tls_check_hostname)
            # Kept for whoever reads them off the kazoo client (and for
            # its log line); the handler ignores them and uses self.tls.
            kwargs.update(use_ssl=True, ca=tls_ca, certfile=tls_cert,
                          keyfile=tls_key)
        self.acl_identities = None if acl is None else tuple(acl)
        if self.acl_identities is not None and self.tls is None:
            raise ValueError("ZooKeeper ACLs need zookeeper-tls")
        self._handler = ConnectionHandler(self.tls)
        # Kazoo's default reconnect backoff grows towards an hour: after an
        # outage of a few seconds its next attempt may come after the
        # session timeout although the server is back, losing a session
        # (and every lock) that a prompt reconnect would have kept.
        reconnect = KazooRetry(max_tries=-1, delay=0.1, backoff=2,
                               sleep_func=self._handler.sleep_func,
                               max_jitter=0.4,
                               max_delay=min(2.0, max(0.2, timeout / 4)))
        self.kazoo = KazooClient(hosts=hosts, timeout=timeout,
                                 read_only=read_only, handler=self._handler,
                                 connection_retry=reconnect, **kwargs)
        self._state_listeners: list[StateListener] = []
        self._session_listeners: list[SessionListener] = []
        self._listener_lock = threading.Lock()
        self._events: queue.Queue = queue.Queue()
        self._dispatcher: Optional[threading.Thread] = None
        self._session_lost = False
        self._closing = False
        self._close_on_outage = False
        self._stop_lock = threading.Lock()
        self._generation = 0
        self._connections = 0
        self.kazoo.add_listener(self._on_kazoo_state)

    @classmethod
    def from_config(cls, config, **kwargs) -> "ZooKeeperClient":
        """A client for a loaded :class:`nodepool.config.Config`: its
        servers, ``zookeeper-tls`` and ``zookeeper-timeout``."""
        tls = config.zookeeper_tls
        if tls is not None:
            kwargs.update(tls_ca=tls.ca, tls_cert=tls.cert, tls_key=tls.key,
                          tls_check_hostname=tls.check_hostname,
                          acl=tls.acl)
        return cls(config.zookeeper_hosts, timeout=config.zookeeper_timeout,
                   **kwargs)

    # Connection ---------------------------------------------------------

    def connect(self, timeout: Optional[float] = None) -> None:
        """Connect and wait for the session; raise on failure.

        :raises ZooKeeperConnectionError: no session within the timeout
            (the message says why the last attempt failed), or the TLS
            files cannot be used.
        """
        if self.tls is not None:
            self._check_tls_files()
        if self._dispatcher is None:
            self._dispatcher = threading.Thread(
                target=self._dispatch, name="ZooKeeperClientDispatch",
                daemon=True)
            self._dispatcher.start()
        try:
            self.kazoo.start(timeout=timeout or self.timeout)
        except KazooTimeoutError as e:
            reason = self._handler.last_error or str(e)
            self.kazoo.stop()
            raise ZooKeeperConnectionError(
                "could not connect to ZooKeeper at %s: %s" % (
                    self.hosts, reason))
        self._closing = False

    def _check_tls_files(self) -> None:
        # Read the files once up front: a missing or mismatched file is a
        # configuration error to report now, not a reason to retry until
        # the connection times out.
        try:
            self.tls.context()
            if self.acl_identities is not None:
                own = x509_identity(self.tls.cert)
                self.kazoo.default_acl = x509_acl(own, self.acl_identities)
        except (OSError, ValueError) as exc:
            raise ZooKeeperConnectionError(
                "cannot use the zookeeper-tls files (ca %s, cert %s, key "
                "%s): %s" % (self.tls.ca, self.tls.cert, self.tls.key,
                             getattr(exc, "strerror", None) or exc))

    def disconnect(self) -> None:
        """Close the session (ephemeral nodes go) and stop the dispatcher."""
        try:
            self._stop_kazoo()
            self.kazoo.close()
        finally:
            if self._dispatcher is not None:
                self._events.put(None)
                self._dispatcher.join()
                self._dispatcher = None

    def close_on_outage(self) -> None:
        """The owner is stopping: from now on, a connection that is down
        or goes down closes the client at once instead of waiting for a
        server to come back.

        Calls made while the connection is down wait for it to return;
        those of a stopping daemon's threads would never end during an
        outage.  Closing fails them (with a ``ConnectionLoss``) and every
        later call (``ConnectionClosedError``), so that the threads finish.
        The session's ephemeral nodes go when the server expires it.
        """
        self._close_on_outage = True  # before the check: see _dispatch
        if not self.connected:
            self._outage_close()

    def _outage_close(self) -> None:
        log.warning("Stopping while ZooKeeper is not connected: closing "
                    "the client instead of waiting for the connection")
        self._stop_kazoo()

    def _stop_kazoo(self) -> None:
        # Twice at the same time (a stopping owner's disconnect() and the
        # dispatch thread's outage close) would close kazoo's sockets
        # under each other.
        with self._stop_lock:
            self._closing = True
            self.kazoo.stop()

    def set_hosts(self, hosts: str) -> bool:
        """Use a changed server list; return whether anything changed.

        ``hosts`` is a kazoo hosts string like the constructor's.  The
        session is kept: kazoo stays on its current server and reads the
        new list the next time it has to connect, e.g. when that server
        goes away.  Stop a server only after every client has the new list.

        :raises ValueError: ``hosts`` names no server, or another chroot
            (or none where one is in use): a session cannot change its
            chroot.  Nothing is changed then.
        """
        if hosts == self.hosts:
            return False
        servers, chroot = collect_hosts(hosts)
        _, current = collect_hosts(self.hosts)
        if not servers:
            raise ValueError("no ZooKeeper server given")
        # Checked here: kazoo's set_hosts replaces the list before it
        # notices a changed chroot and raises.
        if _normal_chroot(chroot) != _normal_chroot(current):
            raise ValueError(
                "cannot change the ZooKeeper chroot from %r to %r at run "
                "time" % (current or "/", chroot or "/"))
        self.kazoo.set_hosts(hosts)
        self.hosts = hosts
        log.info("ZooKeeper servers changed to %s", hosts)
        return True

    @property
    def connected(self) -> bool:
        return self.kazoo.state == KazooState.CONNECTED

    @property
    def session_id(self):
        """The live session's id; None while disconnected, even when the
        session itself is still valid (use :attr:`session_generation` to
        tell whether a session was lost)."""
        return self.kazoo.client_id[0] if self.kazoo.client_id else None

    @property
    def session_generation(self) -> int:
        """A number that changes when a session is lost (expired or
        closed), and only then.

        A suspended connection keeps the session, and with it every lock
        and ephemeral node: work that captured the generation may go on
        once the connection is back, as long as the number is unchanged.
        """
        return self._generation

    @property
    def connection_count(self) -> int:
        """How many times the client got connected so far (the number of
        the current connection while connected).

        It moves on before state listeners hear of the new connection, so
        a listener can tell a connection it has dealt with already (e.g.
        one it learns of late) from a new one.
        """
        return self._connections

    def guard(self) -> "SessionGuard":
        """A :class:`SessionGuard` for work starting now."""
        return SessionGuard(self)

    @property
    def connection_queue_size(self) -> int:
        """Requests waiting in kazoo's send queue (its private ``_queue``
        deque); 0 if this kazoo version has no such queue."""
        pending = getattr(self.kazoo, "_queue", None)
        try:
            return len(pending) if pending is not None else 0
        except TypeError:
            return 0

    # Listeners ----------------------------------------------------------

    def add_state_listener(self, listener: StateListener) -> None:
        """Call ``listener(state)`` on every connection state change.

        Listeners run on one dispatch thread in registration order; they may
        block briefly (e.g. to talk to ZooKeeper) but hold up the others.
        """
        with self._listener_lock:
            self._state_listeners.append(listener)

    def remove_state_listener(self, listener: StateListener) -> None:
        with self._listener_lock:
            if listener in self._state_listeners:
                self._state_listeners.remove(listener)

    def add_session_listener(self, listener: SessionListener) -> None:
        """Call ``listener()`` once a new session replaced a lost one."""
        with self._listener_lock:
            self._session_listeners.append(listener)

    def remove_session_listener(self, listener: SessionListener) -> None:
        with self._listener_lock:
            if listener in self._session_listeners:
                self._session_listeners.remove(listener)

    def _on_kazoo_state(self, state: KazooState) -> None:
        # Kazoo's connection thread: never block here.  The generation
        # changes here rather than on the dispatch thread so that nobody
        # can see the new session before the count moved on.
        if state == KazooState.LOST:
            self._generation += 1
        elif state == KazooState.CONNECTED:
            self._connections += 1
        self._events.put(state)

    def _dispatch(self) -> None:
        while True:
            state = self._events.get()
            if state is None:
                return
            if state == KazooState.LOST:
                self._session_lost = True
                if self._closing:
                    log.debug("ZooKeeper session closed")
                else:
                    log.warning("ZooKeeper session lost")
                    if self._close_on_outage:
                        self._outage_close()
            elif state == KazooState.SUSPENDED:
                log.warning("ZooKeeper connection suspended")
                if self._close_on_outage and not self._closing:
                    self._outage_close()
            else:
                log.info("ZooKeeper connection established")
            with self._listener_lock:
                state_listeners = list(self._state_listeners)
                session_listeners = list(self._session_listeners)
            for listener in state_listeners:
                self._call(listener, state)
            if state == KazooState.CONNECTED and self._session_lost:
                self._session_lost = False
                for listener in session_listeners:
                    self._call(listener)

    @staticmethod
    def _call(listener, *args) -> None:
        try:
            listener(*args)
        except Exception:
            log.exception("ZooKeeper listener %r failed", listener)


def _normal_chroot(chroot: Optional[str]) -> str:
    return posixpath.normpath(chroot) if chroot else ""


class SessionGuard:
    """Ties work to the ZooKeeper session it began in.

    Locks taken under one session are gone once it is lost; work that
    holds such locks checks :attr:`lost` before writing and either takes
    its locks again (and a new guard) or stops.  Only a lost session counts:
    a connection that is merely suspended keeps its locks.
    """

    def __init__(self, client: ZooKeeperClient):
        self._client = client
        self.generation = client.session_generation

    @property
    def lost(self) -> bool:
        return self._client.session_generation != self.generation
