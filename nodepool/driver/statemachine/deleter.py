# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Deletion of one node, driven step by step by the delete runner."""

import time

from kazoo.exceptions import KazooException, NoNodeError

from nodepool import exceptions
from nodepool.zk.models import NodeState

DELETE_TIMEOUT = 600.0


class NodeDeleter:
    """Delete one locked node's instance, then its record.

    On an error other than NotFound the node is unlocked and kept (still
    ``deleting``) so the deleted-node worker retries it on its next pass.
    """

    def __init__(self, provider, node, log, report_deleted=True):
        self.provider = provider
        self.node = node
        self.log = log
        # Whether the provider's node_deleted() hears of the removal.
        self.report_deleted = report_deleted
        self.sm = None
        self.complete = False
        self.succeeded = False
        self.start = time.monotonic()

    def step(self) -> None:
        if self.complete:
            return
        try:
            if self.sm is None:
                self._begin()
                if self.complete:
                    return
            if time.monotonic() - self.start > DELETE_TIMEOUT:
                raise exceptions.ServerDeleteTimeoutException(
                    "Timeout deleting instance %s" % (self.node.external_id,))
            try:
                self.sm.advance()
            except exceptions.NotFound:
                self.sm.complete = True
            if self.sm.complete:
                self._remove_record()
        except Exception as e:
            if isinstance(e, exceptions.NodepoolError):
                self.log.warning("Deleting node %s failed: %s",
                                 self.node.id, e)
            else:
                self.log.exception("Deleting node %s failed", self.node.id)
            self._unlock()
            self.complete = True

    def abort(self, error: Exception) -> None:
        """An unexpected error escaped :meth:`step`: unlock and end; the
        node stays ``deleting`` and the deleted-node worker retries it."""
        self.log.error("Deleting node %s aborted: %r", self.node.id, error)
        self._unlock()
        self.complete = True

    def _unlock(self) -> None:
        try:
            self.provider.nodes.unlock_node(self.node)
        except exceptions.LockError:
            pass  # not (or no longer) ours

    def _begin(self) -> None:
        node = self.node
        if node.state != NodeState.DELETING:
            node.state = NodeState.DELETING
            try:
                self.provider.nodes.store_node(node)
            except NoNodeError:
                # Removed meanwhile (by another launcher's deleter, which
                # held the lock until its recursive delete took it).
                self.log.info("Node %s is gone already", node.id)
                node.lock = None
                self.complete = True
                return
        if not node.external_id or node.provider is None:
            self._remove_record()
            return
        self.sm = self.provider.adapter.get_delete_state_machine(
            node.external_id, self.log)

    def _remove_record(self) -> None:
        try:
            self.provider.nodes.delete_node(self.node)
        except KazooException:
            self.log.exception("Removing node record %s failed", self.node.id)
            self._unlock()
        else:
            self.node.lock = None
            self.succeeded = True
            self.log.info("Deleted node %s", self.node.id)
            if self.report_deleted:
                self.provider.node_deleted(self.node)
        self.complete = True
