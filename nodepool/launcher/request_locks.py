# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Removing request lock directories whose request is gone.

A request's lock lives in ``/nodepool/requests-lock/<id>``, apart from the
request; deleting the request leaves the directory behind (and a client
locking a request that was just deleted creates it again).  Such orphans
are removed once they are :data:`REQUEST_LOCK_MAX_AGE` old.

Listing the lock root and reading the age of every orphan on every
cleanup pass would cost an idle launcher one read per request deleted in
the last eight hours, every minute.  :class:`OrphanRequestLocks` instead
remembers the orphans it found with their age and lists the root again
only when that can find new ones: after a request went away (the request
cache says so), and every :data:`RELIST_INTERVAL` seconds for orphans no
request event announces (a lock taken on a request that was already
deleted, a cache resync).  An orphan is read once; a pass with nothing
new asks ZooKeeper nothing.
"""

import logging
import threading
import time
from typing import Callable, Dict, Optional

log = logging.getLogger("nodepool.CleanupWorker")

#: Age (seconds) at which an orphan request lock directory is removed.
REQUEST_LOCK_MAX_AGE = 8 * 3600
#: Seconds between two listings of the lock root when no request went
#: away meanwhile.  Small against the age limit: an orphan nothing
#: announced is removed at most this much late.
RELIST_INTERVAL = 600.0


class OrphanRequestLocks:
    """Finds and removes orphan request lock directories.

    Driven by the cleanup worker's thread (:meth:`run`); the request
    cache's listener only sets an event.

    :param requests: the :class:`~nodepool.zk.requests.RequestStore`.
    :param request_cache: the launcher's request cache: which requests
        exist (while it is not ready, ZooKeeper is asked) and when one
        went away.  Without one, every pass lists and asks ZooKeeper.
    :param max_age: remove orphans older than this (seconds).
    :param relist_interval: list the lock root at least this often
        (seconds of ``clock``).
    :param clock: monotonic time source (tests pass their own).
    """

    def __init__(self, requests, request_cache,
                 max_age: float = REQUEST_LOCK_MAX_AGE,
                 relist_interval: float = RELIST_INTERVAL,
                 clock: Callable[[], float] = time.monotonic):
        self.requests = requests
        self.request_cache = request_cache
        self.max_age = max_age
        self.relist_interval = relist_interval
        self.clock = clock
        #: Orphans found so far: request id -> the directory's mtime
        #: (epoch seconds, as ZooKeeper stamped it at creation).
        self.orphans: Dict[str, float] = {}
        self._request_gone = threading.Event()
        self._listed_at: Optional[float] = None
        if request_cache is not None:
            request_cache.add_listener(self._on_request)

    def _on_request(self, key, obj, event_type) -> None:
        # Playback thread of the cache: only note it.
        if obj is None:
            self._request_gone.set()

    def _existing(self) -> set:
        """Ids of the requests that exist, unreadable ones included."""
        cache = self.request_cache
        if cache is not None and cache.ready:
            return {key[0] for key in cache.keys()} | {
                key[0] for key in cache.invalid()}
        return set(self.requests.get_request_ids())

    def _relist_due(self) -> bool:
        return (self._listed_at is None or self.request_cache is None
                or self._request_gone.is_set()
                or self.clock() - self._listed_at >= self.relist_interval)

    def _relist(self) -> None:
        # Cleared before listing: a request going away during the listing
        # sets it again and the next pass lists once more.
        self._request_gone.clear()
        self._listed_at = self.clock()
        listed = self.requests.get_request_lock_ids()
        existing = self._existing()
        orphans = {}
        for request_id in listed:
            if request_id in existing:
                continue
            mtime = self.orphans.get(request_id)
            if mtime is None:
                mtime = self.requests.request_lock_mtime(request_id)
                if mtime is None:
                    continue  # removed meanwhile
            orphans[request_id] = mtime
        self.orphans = orphans

    def run(self) -> None:
        """One cleanup pass: list the lock root if due, then remove the
        orphans that are old enough."""
        if self._relist_due():
            self._relist()
        now = time.time()
        old = [request_id for request_id, mtime in self.orphans.items()
               if now - mtime > self.max_age]
        if not old:
            return
        existing = self._existing()
        for request_id in old:
            if request_id in existing:
                # A request the cache had not seen yet when we listed:
                # not an orphan.
                del self.orphans[request_id]
                continue
            # Refused (kept for the next pass) while anybody holds or
            # waits for the lock.
            if self.requests.delete_request_lock(request_id):
                del self.orphans[request_id]
                log.info("Deleted orphan request lock %s", request_id)
