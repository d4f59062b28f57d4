# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""How records get into a tree cache (:mod:`nodepool.zk.treecache`): from
the cache's own reads, and from the writes of this process that put their
result into the cache themselves (write-through).  Split from the cache's
event and playback machinery."""

import collections
import contextlib
import threading
from typing import Dict, Hashable, NamedTuple, Optional

from kazoo.protocol.states import WatchedEvent

from nodepool.exceptions import InvalidRecordError

# Event type of the events the cache makes up while re-synchronising, and
# of those that have it read a record again.
SYNTHETIC = "SYNTHETIC"


class InvalidEntry(NamedTuple):
    """Why the record at a key could not be read, and which version."""

    mzxid: Optional[int]
    reason: str


class OwnChange:
    """Context of one write of ours to a record (see
    :meth:`RecordStore.own_change`); the writer reports the result to the
    cache inside it.  Set ``applied = False`` when the write returned
    without applying (a transaction that failed a check)."""

    #: Longest the playback thread waits for the writer to report.
    REPORT_TIMEOUT = 10.0

    def __init__(self, cache: "RecordStore", path: str):
        self.cache = cache
        self.path = path
        self.applied = True
        self.done = threading.Event()

    def __enter__(self) -> "OwnChange":
        with self.cache._own_lock:
            self.cache._own_changes.setdefault(
                self.path, collections.deque()).append(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.done.set()
        if exc_type is None and self.applied:
            return
        cache = self.cache
        with cache._own_lock:
            waiting = cache._own_changes.get(self.path)
            if waiting is not None and self in waiting:
                waiting.remove(self)
                if not waiting:
                    del cache._own_changes[self.path]
        # Someone else's change may have passed unread in our place:
        # read the record now (queued behind that event).
        cache._event_queue.put(WatchedEvent(SYNTHETIC, None, self.path))


def own_change(cache: Optional["RecordStore"], path: str):
    """``cache.own_change(path)`` for a store that writes through
    ``cache``, or a context that does nothing (yielding None) for one
    without a cache."""
    if cache is None:
        return contextlib.nullcontext(None)
    return cache.own_change(path)


class RecordStore:
    """How records get into a :class:`~nodepool.zk.treecache.TreeCache`:
    from its reads, and from its writers (write-through, see the
    documentation of :mod:`nodepool.zk.treecache`).  Uses the cache's
    ``_objects``, ``_invalid``, ``_objects_lock``, ``_cached_paths``,
    ``invalid_log``, ``log``, ``make_object()`` and ``_event_queue``."""

    def _init_write_through(self) -> None:
        # Path -> writes of ours whose CHANGED event needs no read.
        self._own_changes: Dict[str, collections.deque] = {}
        self._own_lock = threading.Lock()

    def own_change(self, path: str) -> OwnChange:
        """Wrap a write of ours that changes the record at ``path``;
        the caller then reports the result with :meth:`written_record`.  The
        write's CHANGED event is not read again (see
        :mod:`nodepool.zk.treecache`)."""
        return OwnChange(self, path)

    def written_record(self, key: Hashable, data: bytes, stat) -> None:
        """A record of ours was stored with ``data`` at ``stat``: put it
        into the cache now (never over newer data)."""
        with self._objects_lock:
            self._cached_paths.add(self.object_path(key))
        self._store(key, data, stat)

    def _take_own_change(self, path: str) -> Optional[OwnChange]:
        with self._own_lock:
            waiting = self._own_changes.get(path)
            if not waiting:
                return None
            change = waiting.popleft()
            if not waiting:
                del self._own_changes[path]
            return change

    def _store(self, key, data, stat):
        with self._objects_lock:
            old = self._objects.get(key)
        if old is not None:
            with _record_lock(old):
                if getattr(old, "is_locked", False):
                    return old  # the holder owns this object's contents
                if stat is not None and old.stat is not None \
                        and stat.mzxid <= old.stat.mzxid:
                    return old  # never go back to older data
        try:
            new = self.make_object(key, data, stat)
        except InvalidRecordError as e:
            self.invalid_log.report(self.log, self.object_path(key), stat, e)
            with self._objects_lock:
                self._objects.pop(key, None)
                self._invalid[key] = InvalidEntry(
                    stat.mzxid if stat is not None else None, str(e))
            return None
        with self._objects_lock:
            was_invalid = self._invalid.pop(key, None)
        if was_invalid is not None:
            self.invalid_log.forget(self.object_path(key))
        if old is not None:
            # Checked again under the record's lock: a thread of ours that
            # locked the record meanwhile owns its contents from then on
            # (lock_node sets ``lock`` under the same lock).
            with _record_lock(old):
                if not getattr(old, "is_locked", False):
                    old.update_from(new, take=True)  # new is dropped
            return old
        with self._objects_lock:
            self._objects[key] = new
        return new

    def object_path(self, key) -> str:
        return "%s/%s" % (self.root, "/".join(key))


def _record_lock(obj):
    """The record's own thread lock (records that have none need none)."""
    lock = getattr(obj, "thread_lock", None)
    return lock if lock is not None else contextlib.nullcontext()
