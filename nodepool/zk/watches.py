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
  runs user code.  A callback registered as ``direct`` (one that only puts
  the event on a queue, like a tree cache's) runs on the connection thread
  itself and spares every event a hop through kazoo's callback thread.
* ZooKeeper forgets a connection's watches when the TCP connection drops,
  even if the session survives, and kazoo (unlike the Java client) does not
  send ``SetWatches`` on reconnect.  A state listener therefore queues an
  ``addWatch`` for every registered path whenever the client is CONNECTED
  again.  Events that happen while disconnected are lost; callers that need
  a complete view must resync after a reconnect.

Servers before 3.9 keep a single watch mode per path and connection (found
with ZooKeeper 3.8.0; fixed upstream in 3.9).  Three consequences:

* A second ``addWatch`` on a path replaces the first, so we allow one mode
  per path and client (:class:`ValueError` otherwise).
* A kazoo one-shot watch (``get``/``exists``/``get_children`` with a
  watch, ``DataWatch``, ``ChildrenWatch``) on the *same* path would turn the
  persistent watch into a one-shot one.  We therefore also wrap
  ``ConnectionHandler._submit``: once our ``addWatch`` went out on the
  current connection, and our watch makes the server report what kazoo's
  one-shot watch waits for, kazoo's request goes out with its watch flag
  cleared.  Kazoo still records its watcher locally and fires it on our
  notification, since kazoo's own code sees every event first.  A child
  watch on a recursively watched path is sent unchanged: recursive watches
  never report NodeChildrenChanged, and on the server it only touches the
  child-watch table, where our ``addWatch`` must therefore come first (on
  reconnect we queue ours ahead of everything; when a recursive watch is
  added on a path kazoo already watches for children, we arm a new child
  watch right after it, and a child change in between can be missed).
* ``removeWatches`` does not know the watcher types Persistent (4) and
  PersistentRecursive (5) and replies MarshallingError; the older types
  would remove all of the connection's watches on the path.  We send the
  new types and accept that error: the server keeps reporting the path
  until the next reconnect, and we drop those events because delivery is
  decided by the local registry alone.  Before removing, we arm a plain
  one-shot watch on the path, so kazoo watchers whose flag we cleared still
  get their event.
"""

import logging
import threading
from collections import namedtuple
from typing import Callable, Dict, List, Optional

from kazoo.client import KazooClient
from kazoo.exceptions import (
    ConnectionLoss,
    MarshallingError,
    NoNodeError,
    NoWatcherError,
    SessionExpiredError,
)
from kazoo.protocol.serialization import (
    Exists,
    GetChildren,
    GetChildren2,
    Watch,
    int_struct,
    write_string,
)
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

# Errors not worth a warning for requests nobody waits for.
_QUIET = _REMOVE_IGNORED + (NoNodeError,)

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


class _ArmWatch(namedtuple("_ArmWatch", "type path")):
    """``exists`` or ``getChildren`` that only sets a one-shot watch.

    Kazoo registers no watcher for it (it has no ``watcher`` field), and
    the reply is not needed.
    """

    def serialize(self):
        return write_string(self.path) + b"\x01"

    @classmethod
    def deserialize(cls, buffer, offset):
        return True


def add_persistent_watch(client: KazooClient, path: str,
                         callback: WatchCallback,
                         recursive: bool = True,
                         direct: bool = False) -> None:
    """Call ``callback(event)`` for every change at ``path``, until removed.

    ``event`` is a :class:`kazoo.protocol.states.WatchedEvent` whose path
    is relative to the client's chroot.  A recursive watch reports
    CREATED, DELETED and CHANGED for ``path`` and all its descendants (never
    CHILD); a non-recursive one reports those and CHILD for ``path`` only.
    The node need not exist.  Callbacks run on kazoo's callback thread in
    event order; they must not block for long, and an exception they raise
    is logged and does not stop later deliveries.

    ``direct``: call ``callback`` on kazoo's connection thread rather
    than its callback thread (one thread hop less per event).  Only for a
    callback that never blocks and raises nothing, such as one putting the
    event on an unbounded queue: while it runs, the client reads nothing.

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
    result = registry.add(server_path, callback, recursive, direct)
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

    def __init__(self, path: str, recursive: bool):
        self.path = path
        self.recursive = recursive
        self.callbacks: List[WatchCallback] = []
        self.direct: set = set()  # callbacks run on the connection thread
        self.added = None  # async result of the first addWatch
        # Our latest addWatch went out on the current connection: from then
        # on the server reports this path to us (see _Registry._submit).
        self.last_add = None
        self.sent = False

    def add_request(self) -> AddWatch:
        self.last_add = AddWatch(self.path, MODE_PERSISTENT_RECURSIVE
                                 if self.recursive else MODE_PERSISTENT)
        return self.last_add

    def remove_requests(self) -> list:
        """Arm one-shot watches that stand in for the persistent one
        (see the module doc), then remove it."""
        requests = [_ArmWatch(Exists.type, self.path)]
        if not self.recursive:
            requests.append(_ArmWatch(GetChildren.type, self.path))
        requests.append(RemoveWatches(
            self.path, WATCHER_PERSISTENT_RECURSIVE if self.recursive
            else WATCHER_PERSISTENT))
        return requests

    def covers(self, request) -> bool:
        """Whether this watch reports what ``request``'s watch waits for."""
        is_child = isinstance(request, (GetChildren, GetChildren2))
        return not (is_child and self.recursive)


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

    def add(self, path: str, callback: WatchCallback, recursive: bool,
            direct: bool = False):
        """Register; return the async result of the path's addWatch."""
        with self._lock:
            watch = self._watches.get(path)
            if watch is None:
                watch = self._watches[path] = _PathWatch(path, recursive)
                watch.added = self._send(watch.add_request())
                if recursive and self._client._child_watchers.get(path):
                    self._send(_ArmWatch(GetChildren.type, path)).rawlink(
                        _log_failure)
            elif watch.recursive != recursive:
                raise ValueError("%s is already watched %s" % (
                    path, "recursively" if watch.recursive else
                    "non-recursively"))
            if callback not in watch.callbacks:
                watch.callbacks.append(callback)
                if direct:
                    watch.direct.add(callback)
            return watch.added

    def remove(self, path: str, callback: WatchCallback):
        """Unregister; return the removeWatches result if one was sent."""
        with self._lock:
            watch = self._watches.get(path)
            if watch is None or callback not in watch.callbacks:
                return None
            watch.callbacks.remove(callback)
            watch.direct.discard(callback)
            if watch.callbacks:
                return None
            del self._watches[path]
            *arms, removal = watch.remove_requests()
            for request in arms:
                self._send(request).rawlink(_log_failure)
            return self._send(removal)

    def _send(self, request, first: bool = False):
        result = self._client.handler.async_result()
        if not first:
            # Only queues the request and wakes the connection thread.
            self._client._call(request, result)
        else:
            # Only while kazoo sets up a connection and sends nothing.
            self._client._queue.appendleft((request, result))
            self._client._connection._write_sock.send(b"\0")  # as _call
        return result

    # Connection thread --------------------------------------------------

    def _on_state(self, state: KazooState) -> None:
        # Kazoo calls this while it sets up a new connection, before it
        # sends anything queued; ours go first.  Never block here.
        with self._lock:
            for watch in self._watches.values():
                watch.sent = False
                if state == KazooState.CONNECTED:
                    self._send(watch.add_request(), first=True).rawlink(
                        _log_failure)

    def _submit(self, request, timeout, xid=None) -> None:
        # Wraps ConnectionHandler._submit, which writes every request in
        # queue order; the server handles them in the same order.  Kazoo
        # keeps the original request to register its watcher when the
        # reply comes; only the bytes on the wire lose the watch flag.
        with self._lock:
            watch = self._watches.get(getattr(request, "path", None))
            if watch is None:
                pass
            elif request is watch.last_add:
                watch.sent = True
            elif (getattr(request, "watcher", None) is not None
                  and watch.sent and watch.covers(request)):
                request = request._replace(watcher=None)
        self._kazoo_submit(request, timeout, xid)

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
        # callback -> direct; a dict keeps order and delivers once per
        # callback
        targets: Dict[WatchCallback, bool] = {}
        with self._lock:
            for path in _self_and_ancestors(notification.path):
                watch = self._watches.get(path)
                if watch is None:
                    continue
                if (event_type != EventType.CHILD if watch.recursive
                        else path == notification.path):
                    for callback in watch.callbacks:
                        targets.setdefault(callback,
                                           callback in watch.direct)
        event = WatchedEvent(event_type, client._state,
                             client.unchroot(notification.path))
        for callback, direct in targets.items():
            if direct:
                _run_callback(callback, event)
            else:
                client.handler.dispatch_callback(
                    Callback("watch", _run_callback, (callback, event)))


def _log_failure(result) -> None:
    # Runs on kazoo's completion thread for requests nobody waits for.
    error = result.exception
    if error is not None and not isinstance(error, _QUIET):
        log.warning("A persistent watch request failed: %r", error)


def _run_callback(callback: WatchCallback, event: WatchedEvent) -> None:
    try:
        callback(event)
    except Exception:
        log.exception("Persistent watch callback %r failed for %s",
                      callback, event)
