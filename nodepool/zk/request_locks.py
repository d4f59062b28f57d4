# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Taking and giving up request locks (kazoo's recipe, see
:mod:`nodepool.zk.locks`), split from :mod:`nodepool.zk.requests`."""

import threading
import time
from typing import Callable, Optional

from kazoo.exceptions import KazooException, NoNodeError, NotEmptyError

from nodepool.exceptions import LockError
from nodepool.zk import locks
from nodepool.zk.models import NodeRequest, RequestState
from nodepool.zk.paths import (
    REQUEST_LOCK_ROOT, request_lock_path, request_path)


# Seconds a request that a contended attempt gave up on is left alone
# while its record stays as it was (see RequestLocking.lock_request).
GIVE_UP_TIME = 2.0


class GivenUp:
    """Requests that a ``contended`` attempt gave up on, by id: the
    version the record had then, until when to leave that version alone,
    and whether the request's lock directory is known to exist.

    Bounded (forgetting an entry costs one needless attempt or a wrong
    guess, nothing else) and thread-safe.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 limit: int = 10000):
        self._clock = clock
        self.limit = limit
        self._entries: dict = {}
        self._lock = threading.Lock()

    def note(self, request: NodeRequest, locked_before: bool) -> None:
        with self._lock:
            if len(self._entries) >= self.limit:
                self._entries.clear()
            old = self._entries.get(request.id)
            self._entries[request.id] = (
                request.stat.version, self._clock() + GIVE_UP_TIME,
                locked_before or (old is not None and old[2]))

    def waiting(self, request: NodeRequest) -> bool:
        """Whether ``request`` is as it was when given up on, and recently
        so: whoever changed or locked it is to be heard of first."""
        with self._lock:
            entry = self._entries.get(request.id)
        return (entry is not None and entry[0] == request.stat.version
                and self._clock() < entry[1])

    def locked_before(self, request_id: str) -> bool:
        with self._lock:
            entry = self._entries.get(request_id)
        return entry is not None and entry[2]


class RequestLocking:
    """The locking half of :class:`~nodepool.zk.requests.RequestStore`.

    Uses the store's ``kazoo``, ``_read_request()``, ``_own_change()``
    and ``_written()``.
    """

    #: Requests that ``contended`` attempts of this store gave up on.
    _given_up: GivenUp

    def lock_request(self, request: NodeRequest, blocking: bool = True,
                     timeout: Optional[float] = None,
                     identifier: Optional[str] = None,
                     contended: bool = False) -> None:
        """Lock ``request`` and refresh it from ZooKeeper.

        The refresh matters because the object (usually from the cache)
        may be older than the last change made under the lock, e.g. a
        decline by another launcher.  Sets ``request.lock`` on success.

        ``contended`` (non-blocking, ``request`` from the cache): other
        launchers are likely to try the same request now, so a sign that
        one was first (the record changed, or its lock directory exists)
        ends the attempt with one request spent, not three or four (see
        :func:`~nodepool.zk.locks.lock_record_at_once`).  Until the
        record changes (the cache brings that change, most often
        ``pending`` by whoever took it), or for :data:`GIVE_UP_TIME`
        seconds, further contended attempts on it give up at once,
        without asking ZooKeeper.

        :raises LockError: held elsewhere (non-blocking; perhaps held, with
            ``contended``), ZooKeeper failed, or the request was deleted
            (the lock is released again).
        :raises TimeoutException: ``timeout`` expired.
        """
        lock = locks.new_lock(self.kazoo, request_lock_path(request.id),
                              identifier)
        # A request never locked has no lock directory yet: make it with
        # ours.  One that was (taken, or turned down) keeps it.
        if not blocking and request.stat is not None:
            if contended and self._given_up.waiting(request):
                raise LockError("request %s: waiting to hear from whoever "
                                "changed or locked it" % request.id)
            new_dir = (request.state == RequestState.REQUESTED
                       and not request.declined_by
                       and not self._given_up.locked_before(request.id))
            try:
                if locks.lock_record_at_once(
                        lock, request, request_path(request.id),
                        new_dir=new_dir, contended=contended):
                    return
            except locks.LockedBefore:
                self._given_up.note(request, locked_before=True)
                raise
            except locks.StaleRecord:
                if contended:
                    self._given_up.note(request, locked_before=False)
                raise
        lock = locks.acquire_lock(self.kazoo, request_lock_path(request.id),
                                  blocking=blocking, timeout=timeout,
                                  identifier=identifier, lock=lock)
        try:
            fresh, stat = self._read_request(request.id)
        except Exception as e:
            locks.release_lock(lock)
            if isinstance(e, KazooException):
                raise LockError("could not re-read request %s after "
                                "locking: %r" % (request.id, e)) from e
            raise
        if fresh is None:
            locks.release_lock(lock)
            # Our attempt recreated the lock directory; drop it again
            # rather than leave it for the 8 h orphan cleanup.
            self.delete_request_lock(request.id)
            raise LockError("request %s was deleted or is unreadable"
                            % request.id)
        with request.thread_lock:  # the cache checks the lock under it
            request.update_from(fresh)
            request.stat = stat
            request.lock = lock

    def relock_request(self, request: NodeRequest) -> NodeRequest:
        """Hold ``request``'s lock in the current session again, after the
        session that held it was lost; returns the request as stored now.

        Same rules as :meth:`NodeStore.relock_node`: a lock whose contender
        still exists (acquired in the new session by an attempt in flight
        at the loss) is kept, else it is taken anew without waiting.

        :raises LockError: as :meth:`lock_request` (non-blocking).
        """
        if locks.is_lock_holder(request.lock):
            fresh, stat = self._read_request(request.id)
            if fresh is None:
                self.unlock_request(request)
                raise LockError("request %s was deleted or is unreadable"
                                % request.id)
            fresh.stat = stat
            return fresh
        return locks.lock_a_fresh_copy(
            request, lambda probe: self.lock_request(probe, blocking=False))

    def unlock_request(self, request: NodeRequest) -> None:
        """Release the lock taken by :meth:`lock_request`.

        :raises LockError: ``request`` is not locked by this process.
        """
        locks.unlock_record(request, "request %s" % request.id)

    def is_request_locked(self, request_id: str) -> bool:
        """Whether anybody (this process included) holds the request lock.

        A snapshot: use :meth:`lock_request` non-blocking to act on the
        answer without a race.
        """
        return locks.lock_is_held(self.kazoo, request_lock_path(request_id))

    def get_request_lock_ids(self) -> list[str]:
        """Ids of all request lock directories (orphans included)."""
        try:
            return self.kazoo.get_children(REQUEST_LOCK_ROOT)
        except NoNodeError:
            return []

    def request_lock_mtime(self, request_id: str) -> Optional[float]:
        """Modification time (epoch seconds) of the request's lock
        directory, or ``None`` if there is none.

        The directory's mtime is set when it is created; adding or removing
        contenders does not change it.
        """
        try:
            stat = self.kazoo.exists(request_lock_path(request_id))
        except NoNodeError:
            return None
        if stat is None:
            return None
        return stat.mtime / 1000.0

    def delete_request_lock(self, request_id: str) -> bool:
        """Remove the lock directory of ``request_id`` unless it is in use.

        Returns ``True`` if it is gone afterwards.  We rely on ZooKeeper
        refusing to delete a znode that has children: a non-recursive
        delete atomically checks that nobody holds or waits for the lock,
        where listing contenders first would leave a race window.  The
        caller should only do this for requests that no longer exist.
        """
        try:
            self.kazoo.delete(request_lock_path(request_id))
        except NoNodeError:
            return True
        except NotEmptyError:
            return False
        return True

    def fulfill_and_unlock(self, request: NodeRequest, nodes) -> bool:
        """Mark ``request`` fulfilled with ``nodes`` (locked by us, in the
        order of ``request.node_types``) and release the nodes' locks and
        the request's lock, all in one transaction.

        Zuul sees the request fulfilled and its nodes free at the same
        moment, and it costs one write instead of one per lock.  The
        request's lock directory goes too (nobody locks a fulfilled
        request).  Returns False, with nothing written, if it cannot be one
        step (a lock not held the way this expects, e.g. a contender gone,
        or somebody queued on the request's lock): the caller then uses
        :meth:`fulfill_request` and unlocks one by one.

        :raises kazoo.exceptions.NoNodeError: the request is gone
            (nothing was written).
        :raises kazoo.exceptions.KazooException: ZooKeeper failed; whether
            the transaction applied is unknown (:meth:`holds_lock` tells).
        """
        held = [n.lock for n in nodes] + [request.lock]
        contenders = [locks.held_contender(lock) for lock in held]
        if None in contenders:
            return False
        self._mark_fulfilled(request, [n.id for n in nodes])
        data = request.serialize()
        txn = self.kazoo.transaction()
        txn.set_data(request_path(request.id), data)
        for contender in contenders:
            txn.delete(contender)
        # The request's lock directory too: nobody locks a fulfilled
        # request, so it would only wait for the orphan cleanup.
        txn.delete(request.lock.path)
        with self._own_change(request.id) as change:
            try:
                results = txn.commit()
            except Exception:
                request.stat = None  # ahead of the record, or not
                raise
            applied = not any(isinstance(r, Exception) for r in results)
            if applied:
                request.stat = results[0]
                self._written(request, data)
            elif change is not None:
                change.applied = False
        if not applied:
            request.stat = None  # ahead of the record
            if isinstance(results[0], NoNodeError):
                raise NoNodeError(request_path(request.id))
            return False
        for record, lock in zip(list(nodes) + [request], held):
            locks.mark_released(lock)
            locks.forget_lock(record, lock)
        return True

    @staticmethod
    def _mark_fulfilled(request: NodeRequest, node_ids: list) -> None:
        if len(node_ids) != len(request.node_types):
            raise ValueError(
                "request %s wants %d nodes, got %d"
                % (request.id, len(request.node_types), len(node_ids)))
        request.nodes = node_ids
        request.state = RequestState.FULFILLED

    def holds_lock(self, request: NodeRequest) -> bool:
        """Whether our contender of the request's lock still exists, asked
        of ZooKeeper (connection errors propagate: no answer)."""
        lock = request.lock
        if lock is None or not lock.node:
            return False
        return self.kazoo.exists(lock.path + "/" + lock.node) is not None
