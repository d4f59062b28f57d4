# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Shared, rate-limited listings of cloud state, and a batched deleter.

Every state machine of a provider needs to know how its resource is
doing.  Asking the cloud once per machine per pass would spend the whole
read budget on "describe this server" calls for a few dozen nodes; instead
one thread per provider and resource type lists everything and every
machine reads that snapshot.  The thread only runs while some machine is
watching (so an idle launcher makes no calls), polls every ``interval``
seconds, and can be asked for an early refresh (after a create or a delete
returned) so that a change is seen within a fraction of a second rather
than a full interval.

:class:`LostCreateSearch` finds, in such a listing, what a create made
when the create's answer was lost.

:class:`BatchDeleter` queues deletions and sends them in batches (EC2's
TerminateInstances takes up to 50 ids): deletes are cheap for the cloud
but each call takes a slot of the mutating rate limit that creates need.
Drivers (AWS, OpenStack, Azure) use these with their own list functions.
"""

import concurrent.futures
import logging
import queue
import threading
import time
from typing import Callable, Dict, Hashable, Optional

from nodepool.service import ServiceThread


class Snapshot:
    """One listing: ``items`` by id, fetched by a call that started at
    ``started`` (monotonic)."""

    __slots__ = ("started", "items")

    def __init__(self, started: float, items: Dict[str, dict]):
        self.started = started
        self.items = items

    def get(self, key: str) -> Optional[dict]:
        return self.items.get(key)


EMPTY = Snapshot(-float("inf"), {})


class SharedListing(ServiceThread):
    """A listing refreshed by its own thread while anyone watches it.

    :param fetch: returns ``{id: record}``; called from the thread only
        (it does its own rate limiting and retries).
    :param interval: seconds between refreshes while watched.
    :param min_gap: shortest time between two fetch starts, also for
        early refreshes: requests arriving closer together share a call.
    :param watch_ttl: a watcher that has not touched its watch for this
        long is forgotten (a machine the launcher abandoned on timeout
        never says goodbye).

    Thread-safe.  Readers never block (:meth:`snapshot`); the blocking
    :meth:`wait_newer` is for worker threads and quota lookups.
    """

    def __init__(self, name: str, fetch: Callable[[], Dict[str, dict]],
                 log: logging.Logger, interval: float = 1.0,
                 min_gap: float = 0.2, watch_ttl: float = 120.0,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(name, interval, log)
        self._fetch = fetch
        self.min_gap = min_gap
        self.watch_ttl = watch_ttl
        self._clock = clock
        self._cond = threading.Condition()
        self._snapshot = EMPTY
        self._watchers: Dict[Hashable, float] = {}
        # Fetches must start at or after this time to satisfy a waiter.
        self._wanted_after = -float("inf")
        self._last_start = -float("inf")
        # (after, callback) pairs fired by the first listing at or after
        # `after` (see when_newer).
        self._callbacks: list = []
        self.fetches = 0
        self.failures = 0

    # Life cycle ---------------------------------------------------------

    def on_stop(self) -> None:
        # stop() set the stop event first: a waiter that saw it clear is
        # already waiting when this notifies (both under the condition).
        with self._cond:
            self._cond.notify_all()

    # Readers ------------------------------------------------------------

    def now(self) -> float:
        """The listing's clock: what :attr:`Snapshot.started` and the
        ``after`` arguments are measured in."""
        return self._clock()

    def snapshot(self) -> Snapshot:
        """The latest listing (possibly :data:`EMPTY`); never blocks."""
        with self._cond:
            return self._snapshot

    def watch(self, token: Hashable) -> None:
        """Keep the listing fresh on ``token``'s behalf (call on every
        read: it also renews the watch)."""
        with self._cond:
            new = token not in self._watchers
            self._watchers[token] = self._clock()
            if new:
                self._cond.notify_all()

    def unwatch(self, token: Hashable) -> None:
        with self._cond:
            self._watchers.pop(token, None)

    def request_refresh(self, after: Optional[float] = None) -> None:
        """Ask for a listing started at or after ``after`` (default now),
        without waiting for it."""
        with self._cond:
            after = self._clock() if after is None else after
            if after > self._wanted_after:
                self._wanted_after = after
            self._cond.notify_all()

    def wait_newer(self, after: Optional[float] = None,
                   timeout: float = 10.0) -> Optional[Snapshot]:
        """Block until a listing that started at or after ``after``
        (default now) is available; None on timeout or stop.

        Blocking: worker threads only, never a state machine.
        """
        after = self._clock() if after is None else after
        deadline = self._clock() + timeout
        with self._cond:
            if after > self._wanted_after:
                self._wanted_after = after
            self._cond.notify_all()
            while self._snapshot.started < after:
                remaining = deadline - self._clock()
                if remaining <= 0 or self.stopping:
                    return None
                self._cond.wait(remaining)
            return self._snapshot

    def recent(self, max_age: float,
               timeout: float = 60.0) -> Optional[Snapshot]:
        """The latest listing if it started at most ``max_age`` seconds
        ago, else the next one (see :meth:`wait_newer`: blocking, None on
        timeout or stop)."""
        snapshot = self.snapshot()
        if self._clock() - snapshot.started > max_age:
            return self.wait_newer(timeout=timeout)
        return snapshot

    def when_newer(self, callback: Callable[[], None],
                   after: Optional[float] = None) -> None:
        """Call ``callback()`` (from the listing thread) once a listing
        that started at or after ``after`` (default now) is stored, or
        when the listing stops.  Never blocks; the callback must not
        either."""
        after = self._clock() if after is None else after
        with self._cond:
            if self.stopping:
                fire = True
            else:
                fire = False
                self._callbacks.append((after, callback))
                if after > self._wanted_after:
                    self._wanted_after = after
                self._cond.notify_all()
        if fire:
            callback()

    def _fire(self, started: Optional[float]) -> None:
        with self._cond:
            due = [cb for after, cb in self._callbacks
                   if started is None or after <= started]
            self._callbacks = [(after, cb) for after, cb in self._callbacks
                               if started is not None and after > started]
        for callback in due:
            try:
                callback()
            except Exception:
                self.log.exception("%s: listing callback failed",
                                   self.name)

    @property
    def watching(self) -> int:
        with self._cond:
            self._expire_watchers()
            return len(self._watchers)

    # The thread ---------------------------------------------------------

    def _expire_watchers(self) -> None:
        limit = self._clock() - self.watch_ttl
        for token, touched in list(self._watchers.items()):
            if touched < limit:
                del self._watchers[token]

    def _next_fetch_delay(self) -> Optional[float]:
        """Seconds until the next fetch is due; None: nothing to do."""
        now = self._clock()
        since = now - self._last_start
        if self._wanted_after > self._snapshot.started:
            return max(0.0, self.min_gap - since)
        self._expire_watchers()
        if self._watchers:
            return max(0.0, self.interval - since)
        return None

    def loop(self) -> None:
        while not self.stopping:
            with self._cond:
                while not self.stopping:
                    delay = self._next_fetch_delay()
                    if delay is not None and delay <= 0:
                        break
                    self._cond.wait(delay)
                if self.stopping:
                    break
                started = self._clock()
                self._last_start = started
            try:
                items = self._fetch()
            except Exception:
                self.failures += 1
                self.log.exception("%s: listing failed", self.name)
                with self._cond:
                    # Let waiters time out rather than spin on errors.
                    self._cond.wait(self.interval)
                continue
            with self._cond:
                self.fetches += 1
                if started >= self._snapshot.started:
                    self._snapshot = Snapshot(started, items)
                self._cond.notify_all()
            self._fire(started)
        self._fire(None)


#: Fresh listings a lost create's resource must be missing from before it
#: counts as never made (listings may lag behind a create).
LOST_LISTINGS = 3


class LostCreateSearch:
    """Looks in a listing for what a create made when its answer was lost.

    A create that failed with a server error, a dropped connection or a
    timeout (:attr:`CloudApiError.outcome_unknown`) may have been carried
    out: the resource runs, tagged for its node, but the launcher does not
    know its id, and retrying would start a second one next to it.  The
    create machine looks for it instead, in listings that started after
    the failure; ``match(record)`` recognises it (by its idempotency token
    or the name the create gave it).  Found, the machine carries on with
    it; missing from :data:`LOST_LISTINGS` fresh listings, it was never
    made and :meth:`find` raises the create's ``error``.

    Used from one state machine; never blocks.
    """

    def __init__(self, listing: "SharedListing",
                 match: Callable[[dict], bool], error: BaseException,
                 listings: int = LOST_LISTINGS):
        self.listing = listing
        self.match = match
        self.error = error
        self.listings = listings
        self.since = listing.now()
        self._missing_in: set = set()
        listing.request_refresh(self.since)

    def find(self, token: Hashable) -> Optional[tuple]:
        """``(id, record)`` of the resource once a fresh listing shows
        it; None while still looking (``token`` watches the listing);
        raises the create's error once enough listings did not show it."""
        self.listing.watch(token)
        snapshot = self.listing.snapshot()
        if snapshot.started < self.since:
            return None
        for key, record in snapshot.items.items():
            if self.match(record):
                return key, record
        self._missing_in.add(snapshot.started)
        if len(self._missing_in) >= self.listings:
            self.listing.unwatch(token)
            raise self.error
        return None


class _Item:
    __slots__ = ("key", "future")

    def __init__(self, key: str):
        self.key = key
        self.future: concurrent.futures.Future = concurrent.futures.Future()


class BatchDeleter(ServiceThread):
    """Sends queued deletions in batches from one thread.

    :param send: ``send(keys)`` deletes up to ``batch_size`` resources in
        one API call (rate limiting included) and returns
        ``{key: exception}`` for the ones that failed individually; it may
        also raise, failing the whole batch.
    :param linger: after the first item arrives, wait for company until
        no item arrived for this long (deletions are queued a few
        milliseconds apart), at most ``max_linger`` seconds in all.  A
        lone delete goes out after ``linger``, never after a long
        batching window.
    :param limiter: waited on before each batch, *then* the queue is
        drained: whatever arrives while the rate limit holds the batch
        back rides along instead of needing a call of its own.  ``send``
        must not wait on it again for its first attempt.
    """

    def __init__(self, name: str, send: Callable, log: logging.Logger,
                 batch_size: int = 50, linger: float = 0.1,
                 max_linger: float = 1.0, limiter=None):
        super().__init__(name, linger, log)
        self._send = send
        self.limiter = limiter
        self.batch_size = batch_size
        self.linger = linger
        self.max_linger = max_linger
        self._queue: "queue.Queue[Optional[_Item]]" = queue.Queue()
        self.batches = 0

    def on_stop(self) -> None:
        self._queue.put(None)  # ends the thread's wait for items

    def submit(self, key: str) -> concurrent.futures.Future:
        """Queue ``key`` for deletion; the future completes (None or the
        exception) once its batch was sent.  Never blocks."""
        item = _Item(key)
        if self.stopping:
            item.future.set_exception(RuntimeError("%s stopped" % self.name))
        else:
            self._queue.put(item)
        return item.future

    def _collect(self) -> list:
        first = self._queue.get()
        if first is None:
            return []
        batch = [first]
        # Linger until the queue has been quiet for ``linger`` seconds
        # (deleters arrive a few milliseconds apart while the launcher
        # locks their nodes one by one), but never longer than
        # ``max_linger`` in all.
        give_up = time.monotonic() + self.max_linger
        while len(batch) < self.batch_size:
            remaining = min(self.linger, give_up - time.monotonic())
            try:
                item = (self._queue.get(timeout=remaining) if remaining > 0
                        else self._queue.get_nowait())
            except queue.Empty:
                break
            if item is None:
                return batch
            batch.append(item)
        if self.limiter is not None:
            self.limiter.wait()
        while len(batch) < self.batch_size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                break
            batch.append(item)
        return batch

    def loop(self) -> None:
        while not self.stopping:
            batch = self._collect()
            if batch:
                self._deliver(batch)
        # Fail whatever is still queued so no caller waits forever.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item.future.set_exception(
                    RuntimeError("%s stopped" % self.name))

    def _deliver(self, batch: list) -> None:
        # The same id queued twice (a retried delete) goes out once.
        by_key: dict = {}
        for item in batch:
            by_key.setdefault(item.key, []).append(item)
        self.batches += 1
        try:
            failures = self._send(list(by_key)) or {}
        except Exception as e:
            self.log.warning("%s: batch of %d failed: %s", self.name,
                             len(by_key), e)
            failures = {key: e for key in by_key}
        for key, items in by_key.items():
            for item in items:
                error = failures.get(key)
                if error is None:
                    item.future.set_result(None)
                else:
                    item.future.set_exception(error)
