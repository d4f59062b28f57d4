# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Taking and giving up node locks (kazoo's recipe, see
:mod:`nodepool.zk.locks`), split from :mod:`nodepool.zk.nodes`."""

from typing import Optional

from kazoo.exceptions import (
    BadVersionError, KazooException, NoNodeError, NotEmptyError)

from nodepool.exceptions import InvalidRecordError, LockError
from nodepool.zk import locks
from nodepool.zk.models import Node
from nodepool.zk.paths import node_lock_path, node_path


class NodeLocking:
    """The locking half of :class:`~nodepool.zk.nodes.NodeStore`.

    Uses the store's ``kazoo``, ``_own_change()``, ``_written()``,
    ``store_node()`` and ``_read_node()``.
    """

    def lock_node(self, node: Node, blocking: bool = True,
                  timeout: Optional[float] = None,
                  ephemeral: bool = True,
                  identifier: Optional[str] = None,
                  lock: Optional[locks.Lock] = None) -> None:
        """Lock ``node`` and refresh it from ZooKeeper.

        The refresh matters because the object (often from the cache) may
        predate changes made by the previous lock holder.  On success
        ``node.lock`` holds the kazoo lock.  ``ephemeral=False`` keeps the
        lock beyond the session (for holders that must survive a restart);
        such a lock must be released or force-unlocked explicitly.

        Precondition: this process does not hold the lock yet (kazoo locks
        are not re-entrant; a blocking attempt would wait forever).
        ``lock`` continues an attempt that may have made a contender
        already (:func:`~nodepool.zk.locks.lock_at_once`).

        A non-blocking attempt on a node whose version we know takes the
        lock in one transaction that also checks the version, and then
        needs neither a listing of a fresh lock directory nor a re-read.
        That trusts ``node`` to hold what the record held at
        ``node.stat``: whoever changes a node object without storing it
        must clear its ``stat`` (the stores do so when a write fails).

        :raises LockError: non-blocking and held elsewhere, ZooKeeper
            failed, or the node was deleted (the lock is released again).
        :raises TimeoutException: ``timeout`` expired.
        """
        at_once = lock is None and not blocking and node.stat is not None
        if lock is None:
            lock = locks.new_lock(self.kazoo, node_lock_path(node.id),
                                  identifier, inside_record=True)
        if at_once and locks.lock_record_at_once(
                lock, node, node_path(node.id), ephemeral=ephemeral):
            return
        try:
            lock = locks.acquire_lock(
                self.kazoo, node_lock_path(node.id), blocking=blocking,
                timeout=timeout, identifier=identifier, ephemeral=ephemeral,
                inside_record=True, lock=lock)
        except locks.RecordGone:
            raise LockError("node %s was deleted" % node.id) from None
        try:
            data, stat = self.kazoo.get(node_path(node.id))
        except NoNodeError:
            data, stat = None, None
        except Exception as e:
            locks.release_lock(lock)
            if isinstance(e, KazooException):
                raise LockError("could not re-read node %s after locking: %r"
                                % (node.id, e)) from e
            raise
        fresh = None
        if data:
            try:
                fresh = Node.from_bytes(data, stat=stat, id=node.id)
            except InvalidRecordError as e:
                locks.release_lock(lock)
                raise LockError("node %s has invalid data: %s"
                                % (node.id, e)) from e
        if fresh is None:
            locks.release_lock(lock)
            self._remove_lock_skeleton(node.id, stat)
            raise LockError("node %s was deleted" % node.id)
        with node.thread_lock:  # the cache checks the lock under it
            node.update_from(fresh)
            node.stat = stat
            node.lock = lock

    def lock_new_node(self, node: Node, state: str,
                      timeout: float = 30) -> None:
        """Lock a node this process just created (:meth:`store_node`) and
        store it in ``state``.

        One transaction makes the lock directory with our contender in it
        (so the lock is ours without listing it) and writes the record,
        provided nobody touched it since we created it.  Otherwise it is
        :meth:`lock_node` (waiting up to ``timeout``), then
        :meth:`store_node`.  On failure the node is unlocked again and
        ``node.state`` is what was stored before.

        :raises LockError: as :meth:`lock_node`.
        """
        path = node_path(node.id)
        lock = locks.new_lock(self.kazoo, node_lock_path(node.id),
                              inside_record=True)
        before = node.state
        node.state = state
        data = node.serialize()
        taken = None
        try:
            with self._own_change(node.id) as change:
                taken = locks.lock_at_once(
                    lock, new_dir=True,
                    then_set=(path, data, node.stat.version))
                if taken is not None:
                    node.lock = lock
                    self._written(node, data, taken[-1])
                elif change is not None:
                    change.applied = False
        except KazooException:
            pass  # unknown: the ordinary way finds out
        if taken is not None:
            return
        node.state = before
        self.lock_node(node, timeout=timeout, lock=lock)
        if node.state not in (before, state):
            # Somebody else had it first (the cleanup of a stale "init").
            self.unlock_node(node)
            raise LockError("node %s changed before we locked it (%s)"
                            % (node.id, node.state))
        node.state = state
        try:
            self.store_node(node)
        except Exception:
            node.state = before
            self.unlock_node(node)
            raise

    def relock_node(self, node: Node) -> Node:
        """Hold ``node``'s lock in the current session again, after the
        session that held it was lost; returns the node as stored now.

        A lock whose contender still exists is kept: an attempt in flight
        when the session was lost completes in the new one (kazoo retries
        it).  Otherwise the lock is taken anew, without waiting.  ``node``
        only gets the lock; the caller compares the returned record with
        it and unlocks if it is no longer theirs.

        :raises LockError: as :meth:`lock_node` (non-blocking).
        """
        if locks.is_lock_holder(node.lock):
            fresh = self._read_node(node.id)
            if fresh is None:
                self.unlock_node(node)
                raise LockError("node %s was deleted" % node.id)
            return fresh
        return locks.lock_a_fresh_copy(
            node, lambda probe: self.lock_node(probe, blocking=False))

    def _remove_lock_skeleton(self, node_id: str, stat) -> None:
        # Our own locks never recreate a deleted node (inside_record), but
        # other clients' do (kazoo's recipe as used by Zuul and nodepool
        # 11): the node znode is back, empty.  Remove it and its lock
        # directory unless someone else is queued
        # on the lock: plain deletes fail on a non-empty directory, so a
        # live contender is never removed.
        try:
            self.kazoo.delete(node_lock_path(node_id))
            if stat is not None:
                self.kazoo.delete(node_path(node_id), version=stat.version)
        except (NoNodeError, NotEmptyError, BadVersionError):
            pass

    def unlock_node(self, node: Node) -> None:
        """Release the lock taken by :meth:`lock_node`; never fails on a
        lost session.

        :raises LockError: ``node`` is not locked by this process.
        """
        locks.unlock_record(node, "node %s" % node.id)

    def node_lock_contenders(self, node_id: str) -> list[str]:
        """Current contender znode names of the node's lock, holder first."""
        return locks.lock_contenders(self.kazoo, node_lock_path(node_id))

    def node_lock_identifiers(self, node_id: str) -> list[tuple]:
        """``(contender, identifier)`` of the node's lock contenders,
        holder first; the identifier is the data the contender was made
        with (None for one gone meanwhile)."""
        path = node_lock_path(node_id)
        found = []
        for name in locks.lock_contenders(self.kazoo, path):
            try:
                data, _ = self.kazoo.get(path + "/" + name)
            except NoNodeError:
                found.append((name, None))
                continue
            found.append((name, (data or b"").decode("utf-8", "replace")))
        return found

    def remove_lock_contender(self, node_id: str, contender: str) -> None:
        """Delete one contender of the node's lock (a persistent one left
        by a holder that is gone); a missing one is not an error."""
        try:
            self.kazoo.delete(node_lock_path(node_id) + "/" + contender)
        except NoNodeError:
            pass
