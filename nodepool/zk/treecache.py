# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The generic tree cache: an ordered, pipelined mirror of one subtree.

A cache mirrors one subtree of ZooKeeper with one persistent recursive
watch on its root and two threads:

* the *event* thread takes watch events in arrival order, decides from the
  path alone whether the event concerns a record (and so needs its data),
  and if so queues an asynchronous read;
* the *playback* thread takes ``(event, read)`` pairs in the same order,
  waits for each read and applies the result to the cache.

Reads are thus pipelined, while the cache still changes in event order.
They go out in batches (:mod:`nodepool.zk.multiread`: one request for up
to 128 reads), sent whenever the event thread has no more events waiting,
but changes not sooner than ``read_interval`` after the previous batch:
under a steady stream of changes (other launchers' nodes going through
their states, say) the reads of each interval share one request, so those
cost ZooKeeper a bounded number of requests per second however many
records change, at the price of reaching the cache up to one interval
later.  A new record is read at once, and takes the changes collected so
far along: new requests are to be served without delay, and new nodes
count against quotas that several launchers may share.
The watch hands events to the event thread straight from kazoo's
connection thread (a *direct* persistent watch).
Everything hinges on path parsing: a lock contender that parsed as a record
would cost one read per lock operation without anybody noticing, which is
why the parsers live in :mod:`nodepool.zk.paths` with their own tests and
why :attr:`TreeCache.fetch_count` exists.

A write of this process that also puts its result into the cache
(:meth:`TreeCache.own_change`, then :meth:`TreeCache.written_record`)
needs no read for the change event it causes: the event thread counts
such writes per path and lets the next CHANGED event of the path pass
unread (its listeners still hear of it, in order, once the writer
reported).  That halves the reads of a record this process keeps writing.
If the counted event was in truth somebody else's earlier write, ours came
later and wrote over it; a write that fails or does not apply un-counts
itself and has the path read.

On start and after every reconnection the cache re-synchronises (once per
client connection): it walks the subtree (listing children in batches,
level by level) and replays a synthetic event for every path found, then
for every path it had cached but did not find (those reads fail with
NoNode and the entries go).
Readers may wait for that with :meth:`TreeCache.ensure_ready`.

A record whose payload cannot be read is not cached, but its key is kept
aside (:meth:`TreeCache.invalid`) with the reason, so that callers can act
on it: the launcher fails a malformed request and never treats the cloud
instance of an unreadable node record as leaked.  Each version of a bad
record is logged once (:mod:`nodepool.zk.invalid`).
"""

import logging
import queue
import threading
import time
from typing import Callable, Dict, Hashable, Iterable, Optional

from kazoo.exceptions import KazooException, NoNodeError
from kazoo.protocol.states import EventType, KazooState, WatchedEvent

from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.invalid import InvalidRecordLog
from nodepool.zk.multiread import BatchReader
from nodepool.zk.recordstore import (  # noqa: F401  (re-exported)
    SYNTHETIC, InvalidEntry, OwnChange, RecordStore)
from nodepool.zk.watches import add_persistent_watch, remove_persistent_watch

QUEUE_WARNING_SIZE = 1024
QUEUE_WARNING_INTERVAL = 60.0
# Seconds before a walk that failed (a ZooKeeper error) is tried again.
RESYNC_RETRY = 1.0
# The shortest time, in seconds, between two batches of reads of a cache.
READ_INTERVAL = 0.02

Listener = Callable[[Hashable, Optional[object], str], None]


class _Resync:
    """Queue marker: walk the tree and replay it."""


class _SyncDone:
    """Queue marker: the replay of a walk is complete."""

    def __init__(self, generation: int):
        self.generation = generation


class TreeCache(RecordStore):
    """Ordered, pipelined mirror of one ZooKeeper subtree.

    Subclasses say which paths hold records (:meth:`parse_path`), how to
    build a record from a payload (:meth:`make_object`) and may react to any
    path in :meth:`pre_hook` (lock contenders, flags).

    Readers get the cached objects themselves; the playback thread updates
    them in place, so a reader sees fresh data without re-reading.  An
    object the process holds locked (``obj.is_locked``) is never updated
    behind the holder's back: the holder writes it and knows best.
    """

    name = "TreeCache"

    def __init__(self, client: ZooKeeperClient, root: str, *,
                 clock: Callable[[], float] = time.monotonic,
                 queue_warning_size: int = QUEUE_WARNING_SIZE,
                 read_interval: float = READ_INTERVAL):
        self.client = client
        self.kazoo = client.kazoo
        self.root = root
        # The monotonic clock of resync retries and queue warnings, and
        # the queue size warned about (tests pass their own).
        self._clock = clock
        self.queue_warning_size = queue_warning_size
        self.log = logging.getLogger("nodepool.zk.cache.%s" % self.name)
        # ZooKeeper operations issued, for tests and benchmarks: reads of
        # records and existence checks, and child listings of the walk.
        self.fetch_count = 0
        self.list_count = 0
        # Reads and listings go out in batches (one request each); the
        # event thread sends what it collected once no event is waiting
        # and ``read_interval`` has passed since the previous batch.
        self.reader = BatchReader(self.kazoo)
        self.read_interval = read_interval
        self._last_send = float("-inf")
        self._read_new_record = False
        self._objects: dict = {}
        self._objects_lock = threading.Lock()
        self._cached_paths: set[str] = set()
        self._invalid: Dict[Hashable, InvalidEntry] = {}
        self.invalid_log = InvalidRecordLog()
        self._listeners: list[Listener] = []
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._generation = 0
        # The client connection (ZooKeeperClient.connection_count) the last
        # complete walk ran on: a CONNECTED transition that reaches us late
        # (the client's first, when the cache starts right after connecting)
        # needs no second walk.
        self._walked_connection: Optional[int] = None
        # When a failed walk is tried again (monotonic time); the event
        # thread's own business, so no other thread is needed.
        self._retry_at: Optional[float] = None
        self._event_queue: queue.Queue = queue.Queue()
        self._init_write_through()
        self._playback_queue: queue.Queue = queue.Queue()
        # Never warned yet: the first warning must not wait for the
        # monotonic clock to pass the interval (it starts near 0 at boot).
        self._last_warning = {"event": float("-inf"),
                              "playback": float("-inf")}
        self._event_thread = threading.Thread(
            target=self._run_events, name="%sEvents" % self.name, daemon=True)
        self._playback_thread = threading.Thread(
            target=self._run_playback, name="%sPlayback" % self.name,
            daemon=True)

    # Life cycle ---------------------------------------------------------

    def start(self) -> "TreeCache":
        """Start the threads and the first synchronisation; returns self."""
        self.client.add_state_listener(self._on_state)
        self._event_thread.start()
        self._playback_thread.start()
        self._event_queue.put(_Resync())
        return self

    def stop(self) -> None:
        """Stop watching and join both threads."""
        self._stopped.set()
        self.client.remove_state_listener(self._on_state)
        if self.client.connected:
            try:
                remove_persistent_watch(self.kazoo, self.root, self._on_watch)
            except KazooException:
                pass  # the connection went meanwhile; so did the watch
        self._event_queue.put(None)
        self._event_thread.join()
        self._playback_thread.join()

    def ensure_ready(self, timeout: Optional[float] = None) -> bool:
        """Wait until the cache reflects the tree; False on timeout."""
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def event_queue_size(self) -> int:
        """Watch events (and markers) waiting for the event thread."""
        return self._event_queue.qsize()

    @property
    def playback_queue_size(self) -> int:
        """Events waiting for the playback thread to apply them."""
        return self._playback_queue.qsize()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(key, obj_or_None, event_type)`` after each update.

        Runs on the playback thread: it must be quick and must not block.
        """
        self._listeners.append(listener)

    def _on_state(self, state: KazooState) -> None:
        if state == KazooState.CONNECTED:
            self._event_queue.put(_Resync())
        elif state == KazooState.LOST:
            self._ready.clear()

    def _on_watch(self, event: WatchedEvent) -> None:
        # Kazoo's connection thread (a direct watch): only queue.
        self._event_queue.put(event)

    # Subclass hooks -----------------------------------------------------

    def parse_path(self, path: str) -> Optional[Hashable]:
        """Return the object key for a record path, else None."""
        raise NotImplementedError

    def make_object(self, key: Hashable, data: bytes, stat):
        """Build the record for ``key`` from a payload (may raise
        :class:`InvalidRecordError`)."""
        raise NotImplementedError

    def has_object(self, key: Hashable, data: Optional[bytes],
                   exists: bool) -> bool:
        """Whether the znode at ``key`` holds a record (default: has data)."""
        return exists and bool(data)

    def listing_paths(self, path: str) -> Iterable[str]:
        """Where the walk looks for what lies below ``path``, a path it
        found: by default ``path`` itself.  A subclass that knows its
        tree's layout may list a known child directly (its contents are
        then found, not the child itself) or nothing below a leaf, which
        saves one ZooKeeper request per path."""
        return (path,)

    def is_hook_path(self, path: str) -> bool:
        """Whether :meth:`pre_hook` cares about this non-record path.

        Events for paths that are neither records nor hook paths (lock
        directories, containers, junk) are dropped by the event thread.
        """
        return False

    def pre_hook(self, path: str, key: Optional[Hashable], exists: bool,
                 event: WatchedEvent) -> None:
        """React to an event for a record or hook path, before the record
        itself is updated."""

    # Readers ------------------------------------------------------------

    def get_object(self, key: Hashable):
        with self._objects_lock:
            return self._objects.get(key)

    def objects(self) -> list:
        with self._objects_lock:
            return list(self._objects.values())

    def keys(self) -> list:
        with self._objects_lock:
            return list(self._objects.keys())

    def keys_without_record(self) -> list:
        """Keys of the znodes that exist but hold no data at all (neither
        a record nor an invalid one), as far as the cache has seen."""
        with self._objects_lock:
            keys = {self.parse_path(path) for path in self._cached_paths}
            return [key for key in keys if key is not None
                    and key not in self._objects
                    and key not in self._invalid]

    def invalid(self) -> Dict[Hashable, InvalidEntry]:
        """Keys of the znodes that exist but hold no readable record.

        A snapshot; an entry goes when the znode is deleted or rewritten
        with a valid record.
        """
        with self._objects_lock:
            return dict(self._invalid)

    # Event thread -------------------------------------------------------

    def _check_queue(self, name: str, q: queue.Queue) -> None:
        size = q.qsize()
        now = self._clock()
        if (size > self.queue_warning_size
                and now - self._last_warning[name] > QUEUE_WARNING_INTERVAL):
            self._last_warning[name] = now
            self.log.warning("%s queue has %d entries", name, size)

    def _next_event(self):
        """The next queue item.  A retry that fell due is queued behind
        what is already waiting; while nothing is waiting, the collected
        reads are sent if one is of a new record or once the read
        interval allows it."""
        while True:
            now = self._clock()
            if self._retry_at is not None and self._retry_at <= now:
                self._retry_at = None
                self._event_queue.put(_Resync())
            try:
                return self._event_queue.get_nowait()
            except queue.Empty:
                pass
            send_at = self._send_reads(now)
            due = [t for t in (send_at, self._retry_at) if t is not None]
            try:
                return self._event_queue.get(
                    timeout=max(0.0, min(due) - now) if due else None)
            except queue.Empty:
                continue

    def _send_reads(self, now: float) -> Optional[float]:
        """Send the collected reads if the read interval has passed since
        the last batch; else return when it will have."""
        if not self.reader.pending:
            # (A full batch went out by itself: nothing is owed a read.)
            self._read_new_record = False
            return None
        send_at = self._last_send + self.read_interval
        if now < send_at and not self._read_new_record:
            return send_at
        self.reader.flush()
        self._last_send = now
        self._read_new_record = False
        return None

    def _run_events(self) -> None:
        while True:
            item = self._next_event()
            self._check_queue("event", self._event_queue)
            if item is None:
                self.reader.flush()  # playback waits for all it has
                self._playback_queue.put(None)
                return
            try:
                if isinstance(item, _Resync):
                    self._resync()
                else:
                    self._handle_event(item)
            except Exception:
                self.log.exception("Error handling cache event %r", item)

    def _handle_event(self, event: WatchedEvent) -> None:
        path = event.path
        if event.type is None or not path or path == self.root:
            return  # connection-only events and the root itself
        key = self.parse_path(path)
        if key is None and not self.is_hook_path(path):
            return
        future = None
        own = None
        if event.type == EventType.CHANGED and key is not None:
            own = self._take_own_change(path)
        if own is not None:
            future = own
        elif event.type != EventType.DELETED:
            if key is not None:
                future = self.reader.get(path)
                self.fetch_count += 1
                if event.type == EventType.CREATED:
                    self._read_new_record = True
            elif event.type == SYNTHETIC:
                # A replayed hook path: only its existence matters (lock
                # contender, flag), and it may have gone since the walk
                # listed it.
                future = self.kazoo.exists_async(path)
                self.fetch_count += 1
        self._playback_queue.put((event, future, key, key is not None))

    def _resync(self) -> None:
        self._retry_at = None
        if self._stopped.is_set() or not self.client.connected:
            return  # a later CONNECTED transition queues another resync
        connection = self.client.connection_count
        if connection == self._walked_connection:
            return  # walked on this very connection already
        self._generation += 1
        # The walk reads every record: nothing counted is owed any more.
        with self._own_lock:
            self._own_changes.clear()
        try:
            add_persistent_watch(self.kazoo, self.root, self._on_watch,
                                 direct=True)
            found = self._walk()
        except KazooException:
            self.log.exception("Re-synchronisation failed; will retry")
            self._retry_resync()
            return
        self._walked_connection = connection
        # Replay parents before children (a lock contender needs its node).
        for path in found:
            self._handle_event(WatchedEvent(SYNTHETIC, None, path))
        for path in self._cached_paths_snapshot() - set(found):
            self._handle_event(WatchedEvent(SYNTHETIC, None, path))
        self.reader.flush()
        self._playback_queue.put(_SyncDone(self._generation))

    def _retry_resync(self) -> None:
        self._retry_at = self._clock() + RESYNC_RETRY

    def _walk(self) -> list:
        """Every path below the root, breadth-first."""
        found, listings = self.reader.walk(self.root, self.listing_paths)
        self.list_count += listings
        return found

    def _cached_paths_snapshot(self) -> set:
        with self._objects_lock:
            return set(self._cached_paths)

    # Playback thread ----------------------------------------------------

    def _run_playback(self) -> None:
        while True:
            item = self._playback_queue.get()
            self._check_queue("playback", self._playback_queue)
            if item is None:
                return
            if isinstance(item, _SyncDone):
                if item.generation == self._generation:
                    self._ready.set()
                    self.log.debug("Synchronised")
                continue
            try:
                self._play(*item)
            except Exception:
                self.log.exception("Error applying cache event %r", item[0])

    def _play(self, event: WatchedEvent, future, key, with_data) -> None:
        if isinstance(future, OwnChange):
            # Our own write: its writer puts the result in the cache (the
            # write's answer arrives right behind its event).
            future.done.wait(future.REPORT_TIMEOUT)
            obj = self.get_object(key)
            if obj is not None:
                self._notify(key, obj, event.type)
            return
        path = event.path
        data = stat = None
        if future is not None:
            try:
                result = future.get()
            except NoNodeError:
                result = None
            except KazooException as e:
                # Connection trouble: a resync follows the reconnection.
                self.log.debug("Read of %s failed: %s", path, e)
                return
            # What the read found, whatever the event said: a znode
            # created or changed and deleted again before our read is gone
            # (its DELETED event follows), not a record without data.
            exists = result is not None
            if exists and with_data:
                data, stat = result
        else:
            exists = event.type in (EventType.CREATED, EventType.CHANGED)

        with self._objects_lock:
            if exists:
                self._cached_paths.add(path)
            else:
                self._cached_paths.discard(path)
        self.pre_hook(path, key, exists, event)
        if key is None:
            return
        if self.has_object(key, data, exists):
            obj = self._store(key, data, stat)
        else:
            obj = None
            with self._objects_lock:
                removed = self._objects.pop(key, None)
                was_invalid = self._invalid.pop(key, None)
            if was_invalid is not None:
                self.invalid_log.forget(path)
            if removed is None:
                return
        self._notify(key, obj, event.type)

    def _notify(self, key, obj, event_type) -> None:
        for listener in self._listeners:
            try:
                listener(key, obj, event_type)
            except Exception:
                self.log.exception("Cache listener failed")
