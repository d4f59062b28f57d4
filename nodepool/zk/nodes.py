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

import logging
from typing import Iterable, Iterator, Optional

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError, NotEmptyError

from nodepool.exceptions import InvalidRecordError
from nodepool.zk import locks
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.invalid import InvalidRecordLog
from nodepool.zk.node_locks import NodeLocking
from nodepool.zk.models import Node, NodeState
from nodepool.zk.paths import NODE_ROOT, node_path
from nodepool.zk.recordstore import own_change

log = logging.getLogger("nodepool.zk.nodes")

# A contender may appear in the lock directory while we delete a node
# recursively (someone racing to lock it); a few passes clear it.
_DELETE_ATTEMPTS = 5


class NodeStore(NodeLocking):
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
            self._written(node, data, stat)
            return
        with self._own_change(node.id):
            try:
                stat = self.kazoo.set(node_path(node.id), data)
            except Exception:
                # The object is ahead of the record now: its version no
                # longer vouches for its contents (see lock_node()).
                node.stat = None
                raise
            self._written(node, data, stat)

    def _written(self, node: Node, data: bytes, stat) -> None:
        node.stat = stat
        if self.cache is not None:
            self.cache.written(node.id, data, stat)

    def _own_change(self, node_id: str):
        """Context of a write of ours to the node's record, which we then
        put into the cache ourselves (so the cache need not read it)."""
        return own_change(self.cache, node_path(node_id))

    def delete_node(self, node: Node) -> None:
        """Remove ``node``'s znode and lock directory.

        Call with the node locked; the lock disappears with the znode
        (releasing it afterwards is harmless).  A node that is already
        gone is not an error.  When our contender is the lock's only one,
        the three znodes go in one transaction: no reader ever sees a
        half-deleted node.  Otherwise (someone queued on the lock, a lock
        taken by another client's recipe) the ``deleted`` tombstone is
        written first so that a reader racing with the recursive delete
        sees a final state rather than e.g. ``ready``.
        """
        if self._delete_at_once(node):
            return
        node.state = NodeState.DELETED
        try:
            self.store_node(node)
        except NoNodeError:
            if self.cache is not None:
                self.cache.removed(node.id)
            return
        self.delete_raw_node(node.id)

    def _delete_at_once(self, node: Node) -> bool:
        """Delete the locked node's contender, lock directory and record in
        one transaction; False if it did not apply (nothing changed)."""
        lock = node.lock
        contender = locks.held_contender(lock)
        if contender is None:
            return False
        txn = self.kazoo.transaction()
        txn.delete(contender)
        txn.delete(lock.path)
        txn.delete(node_path(node.id))
        results = txn.commit()
        if any(isinstance(r, Exception) for r in results):
            return False
        # The lock went with the record: nothing left to release.
        locks.mark_released(lock)
        node.state = NodeState.DELETED
        if self.cache is not None:
            self.cache.removed(node.id)
        return True

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
