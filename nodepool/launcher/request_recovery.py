# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""How a request handler gets through ZooKeeper faults: node records it
stored but could not lock, and locks lost with the session.

A mixin of :class:`~nodepool.launcher.request_handler.RequestHandler`
(its attributes: ``services``, ``request``, ``slots``, ``launchers``,
``orphans``, ``guard``...), kept apart so that the handler reads as the
normal flow of a request.
"""

from nodepool import exceptions
from nodepool.zk.client import CONNECTION_ERRORS, is_connection_error
from nodepool.zk.models import Node, NodeState, RequestState


class RequestRecovery:
    """Orphaned node records and lost sessions of one request handler."""

    def _remove_orphans(self) -> None:
        """Delete the "init" records a ZooKeeper fault kept us from
        locking (each launched again in its slot)."""
        nodes = self.services.nodes
        for node in list(self.orphans):
            try:
                nodes.lock_node(node, blocking=False)
            except exceptions.LockError as e:
                if is_connection_error(e):
                    return
                self.orphans.remove(node)  # gone, or somebody else's now
                continue
            try:
                if node.state == NodeState.INIT:
                    node.state = NodeState.DELETING
                    node.allocated_to = None
                    nodes.store_node(node)
            finally:
                nodes.unlock_node(node)
            self.orphans.remove(node)

    def _take_back(self) -> bool:
        """Our session was lost: lock the request again and carry on if it
        is still ours.  Returns False if the request was given up."""
        guard = self.services.zk_client.guard()
        expected = (RequestState.PENDING if self.accepted
                    else RequestState.REQUESTED)
        requests = self.services.requests
        try:
            fresh = requests.relock_request(self.request)
        except exceptions.LockError as e:
            if isinstance(e.__cause__, CONNECTION_ERRORS):
                return True  # try again on the next poll
            self._abandon("could not lock it again: %s" % e)
            return False
        if (fresh.state != expected
                or self.launcher_id in fresh.declined_by):
            requests.unlock_request(self.request)
            self._abandon("it changed meanwhile (%s)" % fresh.state)
            return False
        self.request.stat = fresh.stat
        for index, node in enumerate(self.slots):
            launcher = self.launchers.get(index)
            if node is None:
                continue
            if launcher is not None and (not launcher.complete
                                         or not launcher.guard.lost):
                # A running launch takes its node back itself; one that
                # already did holds the lock in the new session.
                continue
            if not self._take_back_node(node):
                self.slots[index] = None
                self.launchers.pop(index, None)
                self.paused = True  # _assign fills the slot again
        self.guard = guard
        self.log.info("Locked the request again after the ZooKeeper "
                      "session was lost; carrying on")
        return True

    def _take_back_node(self, node: Node) -> bool:
        """Lock a finished node of ours again; False if a ready node can
        no longer be counted on (its slot is filled anew)."""
        nodes = self.services.nodes
        try:
            fresh = nodes.relock_node(node)
        except exceptions.LockError:
            return node.state != NodeState.READY
        if (fresh.state != node.state
                or fresh.allocated_to != self.request.id):
            nodes.unlock_node(node)
            return node.state != NodeState.READY
        node.stat = fresh.stat
        return True

    def _abandon(self, reason: str) -> None:
        """The session that held our locks is gone and the request is no
        longer ours: cancel our launches (each deletes its instance) and
        forget the dead locks.

        Whoever holds the request now serves it; the lost-request cleanup
        hands a still pending one back, and nodes allocated to it are
        freed or deleted by the cleanup workers.
        """
        self.log.warning("ZooKeeper session lost; leaving the request: %s",
                         reason)
        self.trace.note("ZooKeeper session lost; left the request: %s"
                        % reason)
        for launcher in self.launchers.values():
            launcher.cancel()
        self.request.lock = None
        for index, node in enumerate(self.slots):
            launcher = self.launchers.get(index)
            if node is not None and (launcher is None or launcher.complete):
                node.lock = None
        self.done = True
