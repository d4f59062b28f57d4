# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Reading, writing, locking and deleting node records.

Node records live at ``/nodepool/nodes/<id>``.  The launcher
reads through its tree cache; the builder and the CLI pass no cache and
read ZooKeeper directly.  Writes always go to ZooKeeper and, when there is
a cache, through to it as well: this process sees its own creations,
changes and deletions at once, other processes' through the watch.  That
is the one place where the launcher makes up for the cache's lag.

Thread-safety: a :class:`NodeStore` holds no mutable state of its own and
may be shared by threads.  A :class:`~nodepool.zk.models.Node` object,
however, is not synchronised: lock, modify, store and unlock it from one
thread at a time.  No method may be called from a kazoo callback.
"""

import copy
import logging
from typing import Iterable, Iterator, Optional

from kazoo.client import KazooClient
from kazoo.exceptions import (
    BadVersionError,
    KazooException,
    NoNodeError,
    NotEmptyError,
)

from nodepool.exceptions import InvalidRecordError, LockError
from nodepool.zk import locks
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.invalid import InvalidRecordLog
from nodepool.zk.models import Node, NodeState
from nodepool.zk.paths import NODE_ROOT, node_lock_path, node_path

log = logging.getLogger("nodepool.zk.nodes")

# A contender may appear in the lock directory while we delete a node
# recursively (someone racing to lock it); a few passes clear it.
_DELETE_ATTEMPTS = 5


class NodeStore:
    """Node operations on one ZooKeeper connection.

    :param zk_client: a connected :class:`ZooKeeperClient`.
    :param cache: optional node tree cache (``get(id)``, ``values()``);
        without one every read goes to ZooKeeper.
    """

    def __init__(self, zk_client: ZooKeeperClient, cache=None):
        self.zk_client = zk_client
        self.cache = cache
        # Each bad record is logged once per version by this store.
        self.invalid_log = InvalidRecordLog()

    @property
    def kazoo(self) -> KazooClient:
        return self.zk_client.kazoo

    # Reading ------------------------------------------------------------

    def get_node(self, node_id: str, cached: bool = True) -> Optional[Node]:
        """Return the node ``node_id`` or ``None`` if it does not exist.

        With ``cached`` and a cache, a cache hit is returned as is (the
        shared cached object); a miss falls back to ZooKeeper.  A znode
        without data or with an unreadable payload yields ``None`` (the
        latter is logged): one corrupt record must not stop a listing.
        """
        if cached and self.cache is not None:
            node = self.cache.get(node_id)
            if node is not None:
                return node
        return self._read_node(node_id)

    def _read_node(self, node_id: str) -> Optional[Node]:
        try:
            data, stat = self.kazoo.get(node_path(node_id))
        except NoNodeError:
            return None
        if not data:
            return None
        try:
            return Node.from_bytes(data, stat=stat, id=node_id)
        except InvalidRecordError as e:
            self.invalid_log.report(log, node_path(node_id), stat, e, "node")
            return None

    def get_node_ids(self) -> list[str]:
        """Ids of all node znodes in ZooKeeper, sorted (never the cache)."""
        try:
            return sorted(self.kazoo.get_children(NODE_ROOT))
        except NoNodeError:
            return []

    def iter_nodes(self, cached: bool = True) -> Iterator[Node]:
        """Yield every readable node.

        With ``cached`` and a cache this is a snapshot of the cache;
        otherwise the ids are listed and each node read in turn, so nodes
        deleted meanwhile are silently skipped.
        """
        if cached and self.cache is not None:
            yield from self.cache.values()
            return
        for node_id in self.get_node_ids():
            node = self._read_node(node_id)
            if node is not None:
                yield node

    def get_ready_nodes_of_types(self, labels: Iterable[str],
                                 cached: bool = True) -> dict[str, list[Node]]:
        """READY, unallocated nodes per wanted label.

        A node with several labels appears under each wanted one.  Labels
        without nodes are absent from the result.  Lock contenders are not
        considered; the caller must still lock and re-check a node.
        """
        wanted = set(labels)
        result: dict[str, list[Node]] = {}
        for node in self.iter_nodes(cached=cached):
            if node.state != NodeState.READY or node.allocated_to:
                continue
            for label in node.type:
                if label in wanted:
                    result.setdefault(label, []).append(node)
        return result

    def empty_node_ids(self) -> list[str]:
        """Ids of node znodes that have no data.

        Such znodes are left behind when another client (Zuul, an older
        launcher) locks a node that was deleted at the same time: kazoo's
        lock recipe recreates the lock directory and with it an empty
        parent.  With a ready cache, only the znodes it saw without data
        are read again (to confirm); without one, every node is read.
        """
        if self.cache is not None and self.cache.ready:
            candidates = sorted(key[0] for key
                                in self.cache.keys_without_record())
        else:
            candidates = self.get_node_ids()
        empty = []
        for node_id in candidates:
            try:
                data, _ = self.kazoo.get(node_path(node_id))
            except NoNodeError:
                continue
            if not data:
                empty.append(node_id)
        return empty

    # Writing ------------------------------------------------------------

    def store_node(self, node: Node) -> None:
        """Write ``node`` to ZooKeeper.

        A node without an id is created as a new sequential znode and gets
        its id (10 digits) assigned; otherwise the existing znode is
        overwritten unconditionally (no version check, as in nodepool 11).
        Call with the node locked unless it is new.  ``node.stat`` is
        updated.

        :raises kazoo.exceptions.NoNodeError: the existing node vanished.
        """
        data = node.serialize()
        if node.id is None:
            path, stat = self.kazoo.create(
                NODE_ROOT + "/", data, sequence=True,
                makepath=True, include_data=True)
            node.id = path.rsplit("/", 1)[1]
        else:
            stat = self.kazoo.set(node_path(node.id), data)
        node.stat = stat
        if self.cache is not None:
            self.cache.written(node.id, data, stat)

    def delete_node(self, node: Node) -> None:
        """Mark ``node`` deleted, then remove its znode and lock directory.

        The ``deleted`` tombstone is written first so that a reader racing
        with the recursive delete sees a final state rather than e.g.
        ``ready``.  Call with the node locked; the lock disappears with the
        znode (releasing it afterwards is harmless).  A node that is
        already gone is not an error.
        """
        node.state = NodeState.DELETED
        try:
            self.store_node(node)
        except NoNodeError:
            if self.cache is not None:
                self.cache.removed(node.id)
            return
        self.delete_raw_node(node.id)

    def delete_raw_node(self, node_id: str) -> None:
        """Recursively remove the znode of ``node_id`` without a tombstone.

        For nodes already ``deleted``, znodes without data, and records
        from unknown providers.  Missing znodes are not an error.
        """
        path = node_path(node_id)
        for attempt in range(_DELETE_ATTEMPTS):
            try:
                self.kazoo.delete(path, recursive=True)
            except NoNodeError:
                pass
            except NotEmptyError:
                # A new lock contender appeared between listing and
                # deleting the children; go round again.
                if attempt == _DELETE_ATTEMPTS - 1:
                    raise
                continue
            if self.cache is not None:
                self.cache.removed(node_id)
            return

    # Locking ------------------------------------------------------------

    def lock_node(self, node: Node, blocking: bool = True,
                  timeout: Optional[float] = None,
                  ephemeral: bool = True,
                  identifier: Optional[str] = None) -> None:
        """Lock ``node`` and refresh it from ZooKeeper.

        The refresh matters because the object (often from the cache) may
        predate changes made by the previous lock holder.  On success
        ``node.lock`` holds the kazoo lock.  ``ephemeral=False`` keeps the
        lock beyond the session (for holders that must survive a restart);
        such a lock must be released or force-unlocked explicitly.

        Precondition: this process does not hold the lock yet (kazoo locks
        are not re-entrant; a blocking attempt would wait forever).

        :raises LockError: non-blocking and held elsewhere, ZooKeeper
            failed, or the node was deleted (the lock is released again).
        :raises TimeoutException: ``timeout`` expired.
        """
        try:
            lock = locks.acquire_lock(
                self.kazoo, node_lock_path(node.id), blocking=blocking,
                timeout=timeout, identifier=identifier, ephemeral=ephemeral,
                inside_record=True)
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
        node.lock = None  # it went with the lost session
        probe = copy.copy(node)
        self.lock_node(probe, blocking=False)
        node.lock = probe.lock
        return probe

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
        if node.lock is None:
            raise LockError("node %s is not locked" % node.id)
        locks.release_lock(node.lock)
        node.lock = None

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
