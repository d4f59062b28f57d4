# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Exclusive ZooKeeper locks built on kazoo's ``Lock`` recipe.

Zuul, the ``nodepool`` CLI and older launchers take the very same locks, so
the layout must stay exactly what kazoo's recipe produces: a lock is a
directory whose children are ephemeral-sequential contenders named
``<32 hex>__lock__<10 digits>``; the contender with the lowest sequence
holds the lock.  We therefore use the recipe itself rather than our own
protocol and only add what it lacks: our exceptions, a release that
survives a lost session, and read-only inspection of a lock directory.

All functions are thread-safe in the sense kazoo is: they may be called
from any thread but never from a kazoo callback (they block on
ZooKeeper round trips).  A kazoo ``Lock`` object itself must not be
shared by threads that acquire it concurrently.
"""

import contextlib
import copy
import logging
import re
from typing import Any, Callable, Iterator, Optional

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError, KazooException, LockTimeout, NodeExistsError,
    NoNodeError)
from kazoo.recipe.lock import Lock

from nodepool.exceptions import LockError, TimeoutException

log = logging.getLogger("nodepool.zk.locks")

# Same pattern kazoo's recipe uses to recognise contenders (the sequence
# may be negative after the 32-bit counter wraps).
CONTENDER_RE = re.compile(r"__lock__(-?\d{10})$")


class _RecordLock(Lock):
    """A lock whose directory lives inside a record it must not outlive.

    kazoo's recipe creates the lock directory with all its parents, so
    locking a record deleted a moment earlier brings its znode back,
    empty.  Readers then briefly see a record that is not there (and
    someone has to remove it).  This lock creates only the directory
    itself; if the record is gone, acquiring fails with NoNodeError.
    """

    def _ensure_path(self):
        try:
            self.client.create(self.path)
        except NodeExistsError:
            pass
        self.assured_path = True


class RecordGone(LockError):
    """The record a lock belongs to no longer exists."""


class StaleRecord(LockError):
    """:func:`lock_at_once` found the checked record changed or deleted
    since the caller read it (nothing was created)."""


class LockedBefore(LockError):
    """:func:`lock_at_once` guessed the lock directory new, and it is not:
    somebody locked the record before, and may hold it now (nothing was
    created)."""


def new_lock(kazoo: KazooClient, path: str,
             identifier: Optional[str] = None,
             inside_record: bool = False) -> Lock:
    """A kazoo ``Lock`` for ``path``, not yet acquired (see
    :func:`acquire_lock` for ``inside_record``)."""
    return (_RecordLock if inside_record else Lock)(kazoo, path, identifier)


def lock_at_once(lock: Lock, *, new_dir: bool = False,
                 check: Optional[tuple] = None,
                 then_set: Optional[tuple] = None,
                 ephemeral: bool = True,
                 contended: bool = False,
                 retried: bool = False) -> Optional[list]:
    """Try to take ``lock`` in one ZooKeeper transaction, without waiting.

    The transaction creates our contender, and first the lock directory
    itself with ``new_dir``; ``check`` (``(path, version)``) makes it apply
    only while that znode is at that version, so a record read earlier is
    known to be current without reading it again.  ``then_set``
    (``(path, data, version)``) writes a record in the same step; it needs
    ``new_dir``, since only a contender in a directory the transaction made
    is sure to be the first, i.e. to hold the lock when the write applies.

    ``new_dir`` is a guess: when it is wrong (the directory exists, or
    does not), the transaction is sent once more with the other guess,
    unless it writes (``then_set``).  A record's lock directory is only
    ever made while ``check`` holds, i.e. while the record exists.

    Returns the transaction's results once the lock is held.  Returns
    ``None`` if the transaction did not apply for another reason than the
    check (the directory's parent does not exist...): nothing was
    created; the caller takes the lock the ordinary way, with the same
    ``lock``.

    :raises StaleRecord: the checked record changed or went: the caller's
        copy is out of date (most often somebody else took it meanwhile);
        nothing was created.
    :raises LockError: someone else holds the lock (our contender was
        removed again).
    :raises LockedBefore: with ``contended`` (others are likely to try the
        same lock at this moment), the directory guessed new exists: the
        caller gives up without a listing to see whether it is held, and
        guesses otherwise next time.
    :raises kazoo.exceptions.KazooException: ZooKeeper failed, and whether
        the transaction applied is unknown.  ``lock`` is marked so that
        :func:`acquire_lock` with it first looks for the contender this
        attempt may have made (kazoo's recipe names contenders with a
        per-lock prefix for exactly this).
    """
    if then_set is not None and not new_dir:
        raise ValueError("then_set needs new_dir")
    kazoo = lock.client
    txn = kazoo.transaction()
    if check is not None:
        txn.check(*check)
    if new_dir:
        txn.create(lock.path)
    txn.create(lock.create_path, lock.data, ephemeral=ephemeral,
               sequence=True)
    if then_set is not None:
        txn.set_data(*then_set)
    lock.create_tried = True
    results = txn.commit()
    if any(isinstance(r, Exception) for r in results):
        lock.create_tried = False  # nothing was made
        if check is not None and isinstance(results[0], (BadVersionError,
                                                         NoNodeError)):
            raise StaleRecord("%s changed or went since it was read (%s)"
                              % (check[0], type(results[0]).__name__))
        if then_set is not None or retried:
            return None
        # The check passed (else the later operations only report being
        # rolled back), but the lock directory was not as we guessed.
        first = check is not None
        if new_dir and isinstance(results[first], NodeExistsError):
            if contended:
                raise LockedBefore("%s exists: locked before, perhaps held"
                                   % lock.path)
            # Somebody locked it before, and most often still holds it
            # (several launchers saw the same new request): look before
            # contending in the directory there is.
            if lock_is_held(kazoo, lock.path):
                raise LockError("Did not get lock on %s" % lock.path)
            return lock_at_once(lock, check=check, ephemeral=ephemeral,
                                retried=True)
        if not new_dir and isinstance(results[first], NoNodeError):
            # Never locked yet: make the directory with our contender.
            return lock_at_once(lock, new_dir=True, check=check,
                                ephemeral=ephemeral, retried=True)
        return None
    offset = (check is not None) + new_dir
    node = results[offset].rsplit("/", 1)[1]
    if not new_dir:
        holder = lock_contenders(kazoo, lock.path)
        if not holder or holder[0] != node:
            try:
                kazoo.delete(lock.path + "/" + node)
            except NoNodeError:
                pass
            except KazooException as e:
                # Ephemeral: it goes with the session that failed here.
                log.warning("Could not remove contender %s/%s: %r",
                            lock.path, node, e)
            lock.create_tried = False
            raise LockError("Did not get lock on %s" % lock.path)
    lock.node = node
    lock.is_acquired = True
    lock.assured_path = True
    return results


def lock_record_at_once(lock: Lock, record, path: str, *,
                        new_dir: bool = False,
                        ephemeral: bool = True,
                        contended: bool = False) -> bool:
    """Take ``lock`` for ``record`` (a node or request whose znode is
    ``path``) in one transaction, provided the record is still at
    ``record.stat.version``: then ``record`` needs no re-reading and gets
    ``lock``.  False when the caller must take the ordinary way (with the
    same ``lock``): the version was unknown, the record changed while
    nobody holds the lock, or ZooKeeper failed meanwhile.

    ``contended`` is for records that other clients are likely to lock at
    the same moment (a new request all launchers see), and whose changes
    the caller hears of through a cache: a changed record (most often
    changed by whoever took it) or an existing lock directory
    (:class:`LockedBefore`) is given up on at once, without the listing
    that would tell whether the lock is held.  The caller tries again
    with its newer copy, if that still calls for it.

    :raises LockError: somebody else holds the lock (or, ``contended``, may
        hold it).
    """
    try:
        taken = lock_at_once(lock, new_dir=new_dir,
                             check=(path, record.stat.version),
                             ephemeral=ephemeral, contended=contended)
    except StaleRecord:
        if contended:
            raise
        # Most often somebody else took it meanwhile: see that before
        # making a contender only to remove it again.
        refuse_if_held(lock.client, lock.path)
        return False
    except KazooException:
        return False  # unknown: the ordinary way finds out
    if taken is None:
        return False
    with record.thread_lock:  # the cache checks the lock under it
        record.lock = lock
    return True


def held_contender(lock: Optional[Lock]) -> Optional[str]:
    """The path of our contender of ``lock`` while this process believes
    it holds the lock (ZooKeeper is not asked); else None."""
    if lock is None or not lock.is_acquired or not lock.node:
        return None
    return lock.path + "/" + lock.node


def mark_released(lock: Lock) -> None:
    """Tell ``lock`` that its contender is gone (deleted by a transaction
    of ours, or with the session), so that it is not released again."""
    lock.is_acquired = False
    lock.node = None


def unlock_record(record, what: str) -> None:
    """Release ``record.lock`` (a node's or a request's); never fails on a
    lost session.

    :raises LockError: ``record`` is not locked by this process (``what``
        names it in the message).
    """
    lock = record.lock
    if lock is None:
        raise LockError("%s is not locked" % what)
    # Forgotten first: once released, another thread of ours may lock
    # this very object (the cache's) and set its own lock.
    forget_lock(record, lock)
    release_lock(lock)


def lock_a_fresh_copy(record, lock_copy: Callable[[Any], None]):
    """Take a node's or request's lock anew after the session that held
    it was lost: ``lock_copy`` (a non-blocking lock) is called with a copy
    of ``record`` whose version is unknown, so that it is read again (the
    object may be ahead of the record).  ``record`` gets the lock; the
    copy, as stored now, is returned."""
    record.lock = None  # it went with the lost session
    probe = copy.copy(record)
    probe.stat = None
    lock_copy(probe)
    record.lock = probe.lock
    return probe


def forget_lock(record, lock: Optional[Lock]) -> None:
    """Drop ``record.lock`` if it is still ``lock``.

    Records of a cache are shared by the threads of a process: once a lock
    is let go in ZooKeeper, another thread may lock the very same object,
    and its lock must not be wiped by ours."""
    with record.thread_lock:
        if record.lock is lock:
            record.lock = None


def refuse_if_held(kazoo: KazooClient, path: str) -> None:
    """Raise LockError if somebody holds the lock at ``path``; else (or if
    ZooKeeper cannot tell) return None: take it the ordinary way.  For a
    non-blocking attempt whose :func:`lock_at_once` found the record
    changed: one listing instead of a contender made and removed."""
    try:
        held = lock_is_held(kazoo, path)
    except KazooException:
        return None
    if held:
        raise LockError("Did not get lock on %s" % path)
    return None


def acquire_lock(kazoo: KazooClient, path: str, blocking: bool = True,
                 timeout: Optional[float] = None,
                 identifier: Optional[str] = None,
                 ephemeral: bool = True,
                 inside_record: bool = False,
                 lock: Optional[Lock] = None) -> Lock:
    """Take the exclusive lock at ``path`` and return the kazoo ``Lock``.

    The lock directory is created if missing, with its parents unless
    ``inside_record``: then the parent is a record (a node) that a lock
    attempt must never recreate once it is deleted.  ``identifier`` is
    stored as the contender's data (visible through ``Lock.contenders()``).

    :raises RecordGone: ``inside_record`` and the parent does not exist.
    :raises LockError: ``blocking`` is false and someone else holds the
        lock, or ZooKeeper failed during the attempt.
    :raises TimeoutException: ``blocking`` with a ``timeout`` that expired.

    On every failure our contender znode has been removed again, so a
    failed attempt never leaves a waiter behind that would later grab the
    lock without an owner.  ``lock`` continues with a lock object from
    :func:`new_lock` (after :func:`lock_at_once` did not take it).
    """
    if lock is None:
        lock = new_lock(kazoo, path, identifier, inside_record)
    try:
        acquired = lock.acquire(blocking=blocking, timeout=timeout,
                                ephemeral=ephemeral)
    except NoNodeError as e:
        if not inside_record:
            raise LockError("failed to lock %s: %r" % (path, e)) from e
        raise RecordGone("the record of lock %s is gone" % path) from e
    except LockTimeout as e:
        # Kazoo has already deleted our contender before re-raising.
        raise TimeoutException(
            "timed out after %ss waiting for lock %s" % (timeout, path)) from e
    except KazooException as e:
        raise LockError("failed to lock %s: %r" % (path, e)) from e
    if not acquired:
        # Kazoo returns False both for a busy non-blocking attempt and when
        # its internal retry deadline (= timeout) ran out.
        if blocking:
            raise TimeoutException(
                "timed out after %ss waiting for lock %s" % (timeout, path))
        raise LockError("Did not get lock on %s" % path)
    return lock


def release_lock(lock: Optional[Lock]) -> None:
    """Release ``lock``; never raises.

    ``None`` and already released locks are ignored.  If the session that
    took the lock is gone, the ephemeral contender went with it and there
    is nothing to release; we only log and forget the lock.  While the
    connection is merely suspended this waits (kazoo retries) until it is
    back or the session has expired, so a live session never keeps a lock
    we meant to give up.
    """
    if lock is None:
        return
    try:
        lock.release()
    except KazooException as e:
        # The contender znode is ephemeral: a failure here means the
        # session (and with it the lock) is already lost or the client was
        # stopped.  The caller can do nothing more about it.
        log.warning("Could not release lock %s cleanly: %r", lock.path, e)
        mark_released(lock)


@contextlib.contextmanager
def locked(kazoo: KazooClient, path: str, blocking: bool = True,
           timeout: Optional[float] = None,
           identifier: Optional[str] = None) -> Iterator[Lock]:
    """Context manager form of :func:`acquire_lock`; releases on exit.

    Raises what :func:`acquire_lock` raises, before the body runs.
    """
    lock = acquire_lock(kazoo, path, blocking=blocking, timeout=timeout,
                        identifier=identifier)
    try:
        yield lock
    finally:
        release_lock(lock)


def _sorted_contenders(children) -> list[str]:
    matches = [m for m in (CONTENDER_RE.search(c) for c in children) if m]
    # Order exactly as kazoo's recipe does (by the sequence string), so the
    # first entry is whoever kazoo considers the holder.
    matches.sort(key=lambda m: m.group(1))
    return [m.string for m in matches]


def lock_contenders(kazoo: KazooClient, path: str) -> list[str]:
    """Names of the contender znodes under ``path``, holder first.

    Returns ``[]`` if the lock directory does not exist.  Non-contender
    children are ignored.  This is a snapshot and may be stale at once.
    """
    try:
        children = kazoo.get_children(path)
    except NoNodeError:
        return []
    return _sorted_contenders(children)


def lock_is_held(kazoo: KazooClient, path: str) -> bool:
    """Whether anybody (this process included) holds the lock at ``path``.

    With the recipe the lowest contender always holds the lock, so the
    lock is held exactly when at least one contender exists.
    """
    return bool(lock_contenders(kazoo, path))


def is_lock_holder(lock: Optional[Lock]) -> bool:
    """Whether ``lock`` is still acquired *and* its contender still exists.

    ``Lock.is_acquired`` stays true after the session expired; this checks
    ZooKeeper, so it detects a lock that was silently lost.
    """
    contender = held_contender(lock)
    if contender is None:
        return False
    try:
        return lock.client.exists(contender) is not None
    except KazooException:
        return False
