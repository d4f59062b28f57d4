# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Persistent and persistent-recursive watches for a kazoo client.

ZooKeeper 3.6 added the ``addWatch`` operation: a watch that stays
registered after it fires and, in recursive mode, also covers every
descendant of its path.  Kazoo 2.11 has no support for it, so this module
adds the requests and hooks into *one* client instance (never the class):

* Notifications arrive on kazoo's connection thread in
  ``ConnectionHandler._read_watch_event``, which only knows kazoo's own
  one-shot watchers.  We wrap that method on the client's connection
  handler: kazoo's code runs unchanged, then the event goes to our
  callbacks through kazoo's callback queue, so the connection thread never
  runs user code.
* ZooKeeper forgets a connection's watches when the TCP connection drops,
  even if the session survives, and kazoo (unlike the Java client) does not
  send ``SetWatches`` on reconnect.  A state listener therefore queues an
  ``addWatch`` for every registered path whenever the client is CONNECTED
  again.  Events that happen while disconnected are lost; callers that need
  a complete view must resync after a reconnect.

Servers before 3.9 have two quirks, both checked against ZooKeeper 3.8.0:

* They keep one watch mode per path and connection.  A second ``addWatch``
  replaces the first, so we allow one mode per path and client.  A kazoo
  one-shot watch (``get``/``exists``/``get_children`` with a watch,
  ``DataWatch``, ``ChildrenWatch``) on the *same* path turns the persistent
  watch into a one-shot one.  We wrap ``ConnectionHandler._submit`` too and
  queue an ``addWatch`` right behind every such request, which restores it;
  changes below the path made by other clients in between can be missed.
* ``removeWatches`` does not know the watcher types Persistent (4) and
  PersistentRecursive (5) and replies MarshallingError.  The older types
  would remove the connection's one-shot watches on the path as well,
  silently stopping kazoo's ``DataWatch``/``ChildrenWatch``, so we do not
  use them: the server keeps sending events for the path until the next
  reconnect, and we drop them because delivery is decided by the local
  registry alone.
"""

import logging
import threading
from collections import namedtuple
from typing import Callable, Dict, List, Optional

from kazoo.client import KazooClient
from kazoo.exceptions import (
    ConnectionLoss,
    MarshallingError,
    NoWatcherError,
    SessionExpiredError,
)
from kazoo.protocol.serialization import Watch, int_struct, write_string
from kazoo.protocol.states import (
    EVENT_TYPE_MAP,
    Callback,
    EventType,
    KazooState,
    WatchedEvent,
)

log = logging.getLogger("nodepool.zk.watches")

WatchCallback = Callable[[WatchedEvent], None]

# ``addWatch`` modes (ZooKeeper's AddWatchMode).
MODE_PERSISTENT = 0
MODE_PERSISTENT_RECURSIVE = 1

# ``removeWatches`` watcher types for persistent watches (ZooKeeper 3.9+).
WATCHER_PERSISTENT = 4
WATCHER_PERSISTENT_RECURSIVE = 5

# Errors meaning the server no longer holds our watch (the connection that
# owned it is gone) or cannot remove it selectively (see the module doc).
_REMOVE_IGNORED = (NoWatcherError, ConnectionLoss, SessionExpiredError,
                   MarshallingError)

# The attribute of the KazooClient that holds its registry.
_ATTRIBUTE = "_nodepool_persistent_watches"
_attach_lock = threading.Lock()


class AddWatch(namedtuple("AddWatch", "path mode")):
    """The ``addWatch`` request (opcode 106); the reply has no body.

    Shaped like kazoo's requests so ``KazooClient._call`` can queue it.  The
    field must not be called ``watcher``: kazoo would then register it as a
    one-shot watcher when the reply arrives.
    """

    type = 106

    def serialize(self):
        return write_string(self.path) + int_struct.pack(self.mode)

    @classmethod
    def deserialize(cls, buffer, offset):
        return True


class RemoveWatches(namedtuple("RemoveWatches", "path watcher_type")):
    """The ``removeWatches`` request (opcode 18); the reply has no body."""

    type = 18

    def serialize(self):
        return write_string(self.path) + int_struct.pack(self.watcher_type)

    @classmethod
    def deserialize(cls, buffer, offset):
        return True


def add_persistent_watch(client: KazooClient, path: str,
                         callback: WatchCallback,
                         recursive: bool = True) -> None:
    """Call ``callback(event)`` for every change at ``path``, until removed.

    ``event`` is a :class:`kazoo.protocol.states.WatchedEvent` whose path
    is relative to the client's chroot.  A recursive watch reports
    CREATED, DELETED and CHANGED for ``path`` and all its descendants (never
    CHILD); a non-recursive one reports those and CHILD for ``path`` only.
    The node need not exist.  Callbacks run on kazoo's callback thread in
    event order; they must not block for long, and an exception they raise
    is logged and does not stop later deliveries.

    Adding the same ``(path, callback)`` again is a no-op.  The watch is
    re-registered after every reconnect; events while disconnected are
    lost.

    Thread-safe.  Blocks until the server has answered, so never call it
    from a kazoo state listener (the connection thread).

    :raises ValueError: if ``path`` does not start with ``/``, or this
        client already watches ``path`` in the other mode.
    :raises kazoo.exceptions.KazooException: what the server or kazoo
        reports (e.g. ConnectionLoss, ConnectionClosedError); the callback
        is then not registered.
    """
    server_path = _server_path(client, path)
    registry = _registry(client, create=True)
    result = registry.add(server_path, callback, recursive)
    try:
        result.get()
    except Exception:
        undo = registry.remove(server_path, callback)
        if undo is not None:
            undo.rawlink(_log_failure)
        raise


def remove_persistent_watch(client: KazooClient, path: str,
                            callback: WatchCallback) -> None:
    """Stop calling ``callback`` for ``path``; a no-op if it is not there.

    Delivery stops at once.  When the last callback for ``path`` goes, the
    watch is removed on the server too; a server older than 3.9 cannot do
    that (see the module doc) and keeps it until the next reconnect, which
    is harmless.  Thread-safe; it waits for the server like
    :func:`add_persistent_watch`, so not from a state listener.

    :raises ValueError: if ``path`` does not start with ``/``.
    :raises kazoo.exceptions.KazooException: on unexpected server errors;
        errors meaning the watch is gone anyway (connection loss, session
        expiry, no such watcher) are ignored, as is MarshallingError from
        servers before 3.9.
    """
    server_path = _server_path(client, path)
    registry = _registry(client, create=False)
    result = None if registry is None else registry.remove(server_path,
                                                           callback)
    if result is not None:
        try:
            result.get()
        except _REMOVE_IGNORED:
            pass


def _registry(client: KazooClient, create: bool) -> Optional["_Registry"]:
    with _attach_lock:
        registry = getattr(client, _ATTRIBUTE, None)
        if registry is None and create:
            registry = _Registry(client)
            setattr(client, _ATTRIBUTE, registry)
        return registry


def _server_path(client: KazooClient, path: str) -> str:
    """The path as the server sees it: chroot prefixed, no trailing /."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError("ZooKeeper path must start with /: %r" % (path,))
    return ((client.chroot or "") + path).rstrip("/") or "/"


def _self_and_ancestors(path: str):
    yield path
    while path != "/":
        path = path.rsplit("/", 1)[0] or "/"
        yield path


class _PathWatch:
    """The callbacks registered for one server path, and its mode."""

    def __init__(self, recursive: bool, added):
        self.recursive = recursive
        self.callbacks: List[WatchCallback] = []
        self.added = added  # async result of the first addWatch


class _Registry:
    """The persistent watches of one KazooClient, by server path.

    The connection thread reads ``_watches`` while callers change it, so it
    is guarded by ``_lock``.  Requests are queued under the lock too, so the
    server sees addWatch and removeWatches in registry order; the lock is
    never held while waiting for a reply.
    """

    def __init__(self, client: KazooClient):
        self._client = client
        self._lock = threading.Lock()
        self._watches: Dict[str, _PathWatch] = {}
        connection = client._connection
        self._kazoo_read_watch_event = connection._read_watch_event
        self._kazoo_submit = connection._submit
        connection._read_watch_event = self._read_watch_event
        connection._submit = self._submit
        client.add_listener(self._on_state)

    # Caller threads -----------------------------------------------------

    def add(self, path: str, callback: WatchCallback, recursive: bool):
        """Register; return the async result of the path's addWatch."""
        with self._lock:
            watch = self._watches.get(path)
            if watch is None:
                watch = _PathWatch(recursive, self._add_watch(path, recursive))
                self._watches[path] = watch
            elif watch.recursive != recursive:
                raise ValueError("%s is already watched %s" % (
                    path, "recursively" if watch.recursive else
                    "non-recursively"))
            if callback not in watch.callbacks:
                watch.callbacks.append(callback)
            return watch.added

    def remove(self, path: str, callback: WatchCallback):
        """Unregister; return the removeWatches result if one was sent."""
        with self._lock:
            watch = self._watches.get(path)
            if watch is None or callback not in watch.callbacks:
                return None
            watch.callbacks.remove(callback)
            if watch.callbacks:
                return None
            del self._watches[path]
            kind = WATCHER_PERSISTENT_RECURSIVE if watch.recursive else \
                WATCHER_PERSISTENT
            return self._send(RemoveWatches(path, kind))

    def _add_watch(self, path: str, recursive: bool):
        mode = MODE_PERSISTENT_RECURSIVE if recursive else MODE_PERSISTENT
        return self._send(AddWatch(path, mode))

    def _send(self, request):
        # _call only queues the request and wakes the connection thread.
        result = self._client.handler.async_result()
        self._client._call(request, result)
        return result

    # Connection thread --------------------------------------------------

    def _on_state(self, state: KazooState) -> None:
        # Kazoo calls this while it sets up a new connection, before it
        # sends anything queued, so these go first.  Only queue here.
        if state != KazooState.CONNECTED:
            return
        with self._lock:
            for path, watch in self._watches.items():
                self._readd(path, watch)

    def _readd(self, path: str, watch: _PathWatch) -> None:
        self._add_watch(path, watch.recursive).rawlink(_log_failure)

    def _submit(self, request, timeout, xid=None) -> None:
        # Wraps ConnectionHandler._submit, which writes every request.  A
        # one-shot watch on a watched path replaces our mode on servers
        # before 3.9; an addWatch queued right behind it restores it.
        self._kazoo_submit(request, timeout, xid)
        if getattr(request, "watcher", None) is not None:
            with self._lock:
                watch = self._watches.get(request.path)
                if watch is not None:
                    self._readd(request.path, watch)

    def _read_watch_event(self, buffer, offset) -> None:
        # Wraps ConnectionHandler._read_watch_event (notifications, xid -1).
        self._kazoo_read_watch_event(buffer, offset)
        try:
            self._dispatch(Watch.deserialize(buffer, offset)[0])
        except Exception:
            # A bug here must not kill kazoo's connection loop.
            log.exception("Cannot dispatch ZooKeeper watch event")

    def _dispatch(self, notification: Watch) -> None:
        client = self._client
        event_type = EVENT_TYPE_MAP.get(notification.type)
        if event_type in (None, EventType.NONE) or client._stopped.is_set():
            return
        targets = {}  # a dict keeps order and delivers once per callback
        with self._lock:
            for path in _self_and_ancestors(notification.path):
                watch = self._watches.get(path)
                if watch is None:
                    continue
                if (event_type != EventType.CHILD if watch.recursive
                        else path == notification.path):
                    targets.update(dict.fromkeys(watch.callbacks))
        event = WatchedEvent(event_type, client._state,
                             client.unchroot(notification.path))
        for callback in targets:
            client.handler.dispatch_callback(
                Callback("watch", _run_callback, (callback, event)))


def _log_failure(result) -> None:
    # Runs on kazoo's completion thread for requests nobody waits for.
    error = result.exception
    if error is not None and not isinstance(error, _REMOVE_IGNORED):
        log.warning("A persistent watch request failed: %r", error)


def _run_callback(callback: WatchCallback, event: WatchedEvent) -> None:
    try:
        callback(event)
    except Exception:
        log.exception("Persistent watch callback %r failed for %s",
                      callback, event)
