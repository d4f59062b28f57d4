# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Why is a request waiting?  The launcher's in-memory request journal.

One :class:`RequestJournal` per launcher remembers, for every request its
pools looked at, what each pool thinks of it (a :class:`Reason`: a short
code and a sentence) and a timeline of what happened to it and its nodes.
The pool workers and request handlers write it; the web app and the pool
component records read it (doc/source/request-status.rst).

Recording is on the launcher's hot path, so it is memory only: no I/O, no
ZooKeeper, one lock held for a dictionary update.  A reason that did not
change costs a comparison.  Memory is bounded three ways: at most
:data:`MAX_REQUESTS` requests (the least recently touched go first), none
kept longer than :data:`MAX_AGE` seconds after a pool last looked at it,
and at most :data:`MAX_EVENTS` timeline entries per request (the oldest
go first; the count of dropped ones is kept).
"""

import collections
import threading
import time
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional

#: How many requests the journal remembers at most.
MAX_REQUESTS = 2000
#: Seconds a request is remembered after a pool last looked at it (a
#: fulfilled request's timeline stays this long after it was fulfilled).
MAX_AGE = 3600.0
#: Timeline entries kept per request.
MAX_EVENTS = 100
#: Requests one pool lists in its component record (``waiting``).
MAX_PUBLISHED = 25

# Reason codes.  What a pool worker says about a request it does not take:
LABEL_NOT_SERVED = "label-not-served"
YIELDED = "yielded"              # another pool should serve it
PAUSED_QUOTA = "paused-quota"    # the pool is paused at a limit
TENANT_LIMIT = "tenant-limit"
MAX_CONCURRENCY = "max-concurrency"
# What the pool's handler says about a request it holds:
ACCEPTED = "accepted"
LAUNCHING = "launching"
WAITING_NODE = "waiting-node"
DECLINED = "declined"
FULFILLED = "fulfilled"
FAILED = "failed"

# When pools disagree, the request's reason is the one of the pool that
# got furthest with it: a pool holding the request beats a pool waiting
# for room, which beats one that left the request to others.
RANK = {code: rank for rank, code in enumerate((
    LABEL_NOT_SERVED, DECLINED, YIELDED, MAX_CONCURRENCY, TENANT_LIMIT,
    WAITING_NODE, PAUSED_QUOTA, ACCEPTED, LAUNCHING, FAILED, FULFILLED))}

# Codes that mean "this pool wants to serve the request but cannot yet":
# what a pool publishes in its component record.
WAITING_CODES = frozenset((PAUSED_QUOTA, TENANT_LIMIT, MAX_CONCURRENCY,
                           WAITING_NODE, ACCEPTED, LAUNCHING))


class Reason(NamedTuple):
    """Why one pool is not (yet) done with a request."""

    code: str
    text: str

    def short(self) -> str:
        """``code: text``, the form of the component records and the
        CLI."""
        return "%s: %s" % (self.code, self.text) if self.text else self.code


def rank(code: str) -> int:
    """How far a request got with a pool that says ``code`` (unknown
    codes, e.g. from a newer launcher, count least)."""
    return RANK.get(code, -1)


def code_of(short: str) -> str:
    """The code of a :meth:`Reason.short` text."""
    return short.partition(":")[0].strip()


class _Entry:
    """What the journal knows of one request.  Guarded by the journal's
    lock."""

    __slots__ = ("request_id", "first_seen", "touched", "reasons",
                 "events", "dropped")

    def __init__(self, request_id: str, now: float, max_events: int):
        self.request_id = request_id
        self.first_seen = now
        self.touched = now
        # pool -> (Reason, since)
        self.reasons: Dict[str, tuple] = {}
        # (time, pool, text, repeats)
        self.events: collections.deque = collections.deque(
            maxlen=max_events)
        self.dropped = 0

    def add_event(self, now: float, pool: Optional[str], text: str) -> None:
        if self.events:
            last_time, last_pool, last_text, repeats = self.events[-1]
            if (last_pool, last_text) == (pool, text):
                # A line repeated at every pass (a ZooKeeper outage) takes
                # one entry, not the whole timeline.
                self.events[-1] = (last_time, pool, text, repeats + 1)
                return
        if len(self.events) == self.events.maxlen:
            self.dropped += 1
        self.events.append((now, pool, text, 1))

    def best(self) -> Optional[tuple]:
        """(pool, Reason, since) of the pool that got furthest."""
        best = None
        for pool, (reason, since) in self.reasons.items():
            if best is None or rank(reason.code) > rank(best[1].code):
                best = (pool, reason, since)
        return best


class RequestJournal:
    """Reasons and timelines of the requests one launcher has seen.

    Thread-safe: pool workers, request handlers, the provider's runners
    (through a handler's launch log) and the web app's threads use it at
    once.  Every method holds the lock only for dictionary work.

    :param clock: wall-clock time source (tests pass a fake one).
    """

    def __init__(self, clock: Callable[[], float] = time.time,
                 max_requests: int = MAX_REQUESTS,
                 max_age: float = MAX_AGE,
                 max_events: int = MAX_EVENTS):
        self.clock = clock
        self.max_requests = max_requests
        self.max_age = max_age
        self.max_events = max_events
        self._lock = threading.Lock()
        # Least recently touched first.
        self._entries: "collections.OrderedDict[str, _Entry]" = \
            collections.OrderedDict()

    # Writers ------------------------------------------------------------

    def set_reason(self, request_id: str, pool: str, code: str,
                   text: str = "") -> None:
        """Record what ``pool`` thinks of the request now.

        A change is also a timeline entry; the same reason again only
        keeps the request from ageing out (a pool still looks at it).
        """
        now = self.clock()
        reason = Reason(code, text)
        with self._lock:
            entry = self._touch(request_id, now)
            current = entry.reasons.get(pool)
            if current is not None and current[0] == reason:
                return
            entry.reasons[pool] = (reason, now)
            entry.add_event(now, pool, reason.short())

    def note(self, request_id: str, text: str,
             pool: Optional[str] = None) -> None:
        """Add a timeline entry (a node's state change, a cloud call, a
        launch attempt) without changing any reason."""
        now = self.clock()
        with self._lock:
            self._touch(request_id, now).add_event(now, pool, text)

    def _touch(self, request_id: str, now: float) -> _Entry:
        entry = self._entries.get(request_id)
        if entry is None:
            entry = _Entry(request_id, now, self.max_events)
            self._entries[request_id] = entry
            self._evict(now)
        else:
            entry.touched = now
            self._entries.move_to_end(request_id)
        return entry

    def _evict(self, now: float) -> None:
        entries = self._entries
        while len(entries) > self.max_requests:
            entries.popitem(last=False)
        while entries:
            oldest = next(iter(entries.values()))
            if now - oldest.touched <= self.max_age:
                break
            entries.popitem(last=False)

    # Readers ------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            self._evict(self.clock())
            return len(self._entries)

    def reason(self, request_id: str) -> Optional[dict]:
        """The request's reason (that of the pool that got furthest) as
        ``{"reason", "detail", "pool", "since"}``, or None if unknown."""
        with self._lock:
            self._evict(self.clock())
            entry = self._entries.get(request_id)
            best = entry.best() if entry is not None else None
        if best is None:
            return None
        pool, reason, since = best
        return {"reason": reason.code, "detail": reason.text, "pool": pool,
                "since": since}

    def describe(self, request_id: str) -> Optional[dict]:
        """Everything known of the request: its reason, every pool's
        reason and the timeline (oldest first); None if unknown."""
        with self._lock:
            self._evict(self.clock())
            entry = self._entries.get(request_id)
            if entry is None:
                return None
            best = entry.best()
            pools = {pool: {"reason": reason.code, "detail": reason.text,
                            "since": since}
                     for pool, (reason, since) in entry.reasons.items()}
            timeline = [{"time": when, "pool": pool, "event": text,
                         "repeats": repeats}
                        for when, pool, text, repeats in entry.events]
            result = {"id": request_id, "first_seen": entry.first_seen,
                      "last_seen": entry.touched, "pools": pools,
                      "timeline": timeline,
                      "dropped_events": entry.dropped}
        result.update(reason=None, detail=None, pool=None, since=None)
        if best is not None:
            result.update(reason=best[1].code, detail=best[1].text,
                          pool=best[0], since=best[2])
        return result

    def waiting(self, pool: str, active: Iterable[str],
                limit: int = MAX_PUBLISHED) -> Dict[str, str]:
        """``request id -> short reason`` for at most ``limit`` of the
        ``active`` requests (ids still requested or pending) that ``pool``
        wants to serve but has not yet (see :data:`WAITING_CODES`); lowest
        ids (oldest, highest priority) first."""
        result = {}
        with self._lock:
            for request_id in sorted(active):
                entry = self._entries.get(request_id)
                current = entry.reasons.get(pool) if entry else None
                if current is None or current[0].code not in WAITING_CODES:
                    continue
                result[request_id] = current[0].short()
                if len(result) >= limit:
                    break
        return result


class WaitingPublisher:
    """Decides when a pool rewrites the ``waiting`` field of its
    component record: only when it changed, and at most once every
    ``interval`` seconds, so that a busy pool costs ZooKeeper one write
    every few seconds at most, never one per request.

    Owned by one pool worker thread.

    :param clock: monotonic time source (tests pass a fake one).
    """

    #: Seconds between two writes of the field.
    INTERVAL = 5.0

    def __init__(self, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self.published: Dict[str, str] = {}
        self._last: Optional[float] = None

    def due(self) -> bool:
        """Whether the field may be written now."""
        return self._last is None or \
            self.clock() - self._last >= self.interval

    def offer(self, waiting: Dict[str, str]) -> Optional[Dict[str, str]]:
        """The map to write now, or None (unchanged, or written too
        recently; offer it again later)."""
        if waiting == self.published or not self.due():
            return None
        self.published = dict(waiting)
        self._last = self.clock()
        return self.published


def summarize(shorts: Iterable[str]) -> Optional[str]:
    """Of several pools' short reasons for one request, the one of the
    pool that got furthest (None for none)."""
    best = None
    for short in shorts:
        if best is None or rank(code_of(short)) > rank(code_of(best)):
            best = short
    return best


def describe_limits(limits: List[str]) -> str:
    """``max-servers, cloud quota (cores)``; ``quota`` when unknown."""
    return ", ".join(limits) if limits else "quota"


class RequestTrace:
    """What one request handler tells the journal about its request.

    Owned by the handler (the pool worker's thread and its start
    threads, one at a time).  :meth:`observe` reads the slots' node
    objects, which the provider's create runner writes, and a launch's
    ``attempts`` and ``scan``: attribute reads, for display only.

    :param pool: the pool's name in the journal, ``provider/pool``.
    """

    def __init__(self, journal: RequestJournal, request_id: str, pool: str):
        self.journal = journal
        self.request_id = request_id
        self.pool = pool
        self.pause_reason: Optional[str] = None  # which limit, while paused
        self._states: Dict[str, object] = {}  # node id -> state noted

    def reason(self, code: str, text: str = "") -> None:
        self.journal.set_reason(self.request_id, self.pool, code, text)

    def note(self, text: str) -> None:
        self.journal.note(self.request_id, text, self.pool)

    def paused(self, quota, pool, label_name: str, log) -> None:
        """The handler paused for want of room for a node of the label:
        say which limits are reached (worked out once per pause, not on
        every retry)."""
        try:
            limits = quota.exhausted_limits(label_name, pool)
        except Exception:
            log.debug("Could not tell which limit is reached",
                      exc_info=True)
            limits = []
        self.pause_reason = "%s (no room for %s)" % (
            describe_limits(limits), label_name)
        self.reason(PAUSED_QUOTA, self.pause_reason)

    def unpaused(self) -> None:
        if self.pause_reason is not None:
            self.note("unpaused: room for every node")
        self.pause_reason = None

    def reused(self, node) -> None:
        self._states[node.id] = node.state
        self.note("node %s: reused (%s)" % (node.id, node.state))

    def observe(self, slots, launchers, paused: bool) -> None:
        """Note node state changes and say what the request waits for."""
        launching, waiting = [], []
        for index, node in enumerate(slots):
            if node is None:
                continue
            if self._states.get(node.id) != node.state:
                self._states[node.id] = node.state
                self.note("node %s: %s" % (node.id, node.state))
            launcher = launchers.get(index)
            if launcher is None or launcher.complete:
                continue
            if launcher.scan is not None:
                waiting.append("node %s: host-key scan" % node.id)
            else:
                launching.append("node %s attempt %d (%s)" % (
                    node.id, max(1, launcher.attempts), node.state))
        if paused:
            if self.pause_reason is not None:
                # Unchanged, but it keeps the request from ageing out.
                self.reason(PAUSED_QUOTA, self.pause_reason)
            return
        if launching:
            self.reason(LAUNCHING, "; ".join(launching + waiting))
        elif waiting:
            self.reason(WAITING_NODE, "; ".join(waiting))
