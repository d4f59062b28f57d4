# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""What a metastatic provider does to backing nodes in ZooKeeper.

The provider is a requestor of nodes like Zuul: it submits a node request
for the backing label, and once another provider fulfilled it, takes the
node over.  Unlike Zuul it holds the node with a *persistent* lock
contender whose data is the owner id (``NodePool:metastatic:<provider>``):
the backing node stays ours across a restart of the launcher, and the
``user_data`` JSON written on it (:mod:`.slots`) says what it is used for,
which is all a restart needs to rebuild the bookkeeping.  Releasing a
backing node sets it ``used`` and deletes that contender; the backing
provider's deleted-node worker then deletes it as any returned node.

Every method blocks on ZooKeeper (no kazoo callback may call them) and
raises the connection errors of :data:`nodepool.zk.client.
CONNECTION_ERRORS` unchanged: callers retry on a later pass.
"""

import logging
from typing import List, Optional, Tuple

from kazoo.exceptions import NoNodeError

from nodepool import exceptions
from nodepool.driver.metastatic.slots import BackingRecord, slot_of
from nodepool.zk.models import Node, NodeRequest, NodeState, RequestState
from nodepool.zk.paths import PRIORITY_HIGH

log = logging.getLogger("nodepool.driver.metastatic")

# What polling a backing request found.
WAITING, READY, FAILED = "waiting", "ready", "failed"


class BackingNodes:
    """Backing node operations for one owner.

    :param nodes: a :class:`~nodepool.zk.nodes.NodeStore`.
    :param requests: a :class:`~nodepool.zk.requests.RequestStore`.
    :param owner: the owner id, written as the requestor, the lock
        contender's data and ``user_data.owner``.
    """

    def __init__(self, nodes, requests, owner: str):
        self.nodes = nodes
        self.requests = requests
        self.owner = owner

    # Requests -----------------------------------------------------------

    def submit(self, backing_label: str) -> str:
        """Ask for one node of ``backing_label``; returns the request id.

        The request is ephemeral (it goes with our session, as nodepool
        11's does) and of the highest priority; it carries no tenant, so
        tenant limits never apply to backing nodes.
        """
        request = NodeRequest.new([backing_label], requestor=self.owner)
        return self.requests.submit_request(request, priority=PRIORITY_HIGH)

    def poll(self, request_id: str) -> Tuple[str, Optional[NodeRequest]]:
        """``(WAITING|READY|FAILED, request)`` of a backing request.

        A request that no longer exists counts as failed: nobody will
        fulfil it (it was ephemeral and its session is gone, or somebody
        removed it).
        """
        request = self.requests.get_request(request_id)
        if request is None:
            return FAILED, None
        if request.state == RequestState.FAILED:
            return FAILED, request
        if request.state == RequestState.FULFILLED:
            return READY, request
        return WAITING, request

    def withdraw(self, request_id: str) -> None:
        """Delete a backing request we no longer wait for."""
        request = NodeRequest(request_id)
        self.requests.delete_request(request)

    # Taking over and giving back ----------------------------------------

    def claim(self, request: NodeRequest, record: BackingRecord) -> bool:
        """Take over the node that fulfilled ``request`` for ``record``.

        Locks it (persistent contender, without waiting: the launcher
        that fulfilled it may not have unlocked it yet), writes
        ``user_data`` and ``in-use``, deletes the request and sets
        ``record.node_id``.  False when the lock is still held elsewhere
        (call again later).

        :raises LaunchStatusException: the node is gone or no longer the
            request's to give.
        """
        if not request.nodes:
            raise exceptions.LaunchStatusException(
                "Backing request %s fulfilled without nodes" % request.id)
        node = self.read(request.nodes[0], fresh=True)
        if node is None:
            raise exceptions.LaunchStatusException(
                "Backing node %s of request %s vanished"
                % (request.nodes[0], request.id))
        try:
            self.nodes.lock_node(node, blocking=False, ephemeral=False,
                                 identifier=self.owner)
        except exceptions.LockError:
            return False  # still locked, or deleted: the next poll says
        try:
            if (node.state != NodeState.READY
                    or node.allocated_to != request.id):
                raise exceptions.LaunchStatusException(
                    "Backing node %s is %s, allocated to %s, not ready for "
                    "request %s" % (node.id, node.state, node.allocated_to,
                                    request.id))
            node.state = NodeState.IN_USE
            node.user_data = record.user_data(self.owner)
            self.nodes.store_node(node)
        except Exception:
            self.nodes.unlock_node(node)
            raise
        record.node_id = node.id
        # The persistent contender is our hold on the node; the kazoo
        # lock object is not needed to give it back (see unlock()).
        node.lock = None
        self.requests.delete_request(request)
        log.info("Backing node %s of %s taken over for %s", node.id,
                 request.id, self.owner)
        return True

    def read(self, node_id: str, fresh: bool = False) -> Optional[Node]:
        """The backing node (from the cache unless ``fresh``)."""
        return self.nodes.get_node(node_id, cached=not fresh)

    def alive(self, record: BackingRecord) -> bool:
        """Whether the record's backing node still exists and is still
        ``in-use`` by us.  A node that only looks dead in the cache is
        read again: the cache may not have seen our own write yet."""
        node = self.read(record.node_id)
        if node is not None and node.state == NodeState.IN_USE:
            return True
        node = self.read(record.node_id, fresh=True)
        return node is not None and node.state == NodeState.IN_USE

    def store_failed(self, record: BackingRecord) -> None:
        """Write ``user_data.failed`` (a restart keeps the record
        failed); a vanished node is not an error."""
        node = self.read(record.node_id, fresh=True)
        if node is None:
            return
        node.user_data = record.user_data(self.owner)
        try:
            self.nodes.store_node(node)
        except NoNodeError:
            pass

    def release(self, record: BackingRecord) -> bool:
        """Give the backing node back: ``used``, then our lock removed.
        Returns whether there was a node to give back."""
        node = self.read(record.node_id, fresh=True)
        given = node is not None and node.state == NodeState.IN_USE
        if given:
            node.state = NodeState.USED
            try:
                self.nodes.store_node(node)
            except NoNodeError:
                given = False
        self.unlock(record.node_id)
        if given:
            log.info("Released backing node %s", record.node_id)
        return given

    def unlock(self, node_id: str) -> None:
        """Delete our lock contender(s) of the node, whatever session
        made them."""
        for name, owner in self.nodes.node_lock_identifiers(node_id):
            if owner == self.owner:
                self.nodes.remove_lock_contender(node_id, name)

    def holds(self, node_id: str) -> bool:
        """Whether we hold the node's lock (our contender is first)."""
        contenders = self.nodes.node_lock_identifiers(node_id)
        return bool(contenders) and contenders[0][1] == self.owner

    def evict(self, node_ids: List[str]) -> List[str]:
        """Send the ``ready`` ones of these requested nodes to deletion,
        unallocated (a Zuul that has not accepted one yet finds it is no
        longer its own and asks again).  Nodes locked elsewhere (in use,
        being launched) are left alone; returns the ids evicted."""
        evicted = []
        for node_id in node_ids:
            node = self.read(node_id, fresh=True)
            if node is None or node.state != NodeState.READY:
                continue
            try:
                self.nodes.lock_node(node, blocking=False)
            except exceptions.LockError:
                continue
            try:
                if node.state == NodeState.READY:
                    node.allocated_to = None
                    node.state = NodeState.DELETING
                    self.nodes.store_node(node)
                    evicted.append(node_id)
            finally:
                self.nodes.unlock_node(node)
        return evicted

    # Restart ------------------------------------------------------------

    def recover(self, provider_name: str, now: float
                ) -> List[BackingRecord]:
        """Rebuild the records from ZooKeeper alone.

        A backing node is ours when its ``user_data`` names us as owner and
        we hold its lock; a node of ``provider_name`` whose
        ``driver_data.backing_node`` is one of those occupies the slot its
        ``driver_data.slot`` names.  Pending requests are not recovered:
        they were ephemeral and went with the old session.
        """
        all_nodes = list(self.nodes.iter_nodes(cached=False))
        records = {}
        for node in all_nodes:
            record = BackingRecord.from_user_data(node.user_data, self.owner,
                                                  node.id, now)
            if record is not None and self.holds(node.id):
                records[node.id] = record
        for node in all_nodes:
            if node.provider != provider_name:
                continue
            backing_id, slot = slot_of(node.driver_data)
            record = records.get(backing_id)
            if record is None:
                continue
            if (isinstance(slot, int) and not isinstance(slot, bool)
                    and 0 <= slot < record.slot_count):
                record.allocated[slot] = node.id
            else:
                log.warning("Node %s names slot %r of backing node %s, "
                            "which has %d", node.id, slot, record.node_id,
                            record.slot_count)
        return list(records.values())
