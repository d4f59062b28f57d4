# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""How a launch keeps its node record through ZooKeeper faults.

Split from :mod:`nodepool.driver.statemachine.launcher`: writes that survive
a dropped connection, taking the node lock back after a lost session, and
giving the node up when its record is no longer ours.
"""

from kazoo.exceptions import NoNodeError

from nodepool import exceptions
from nodepool.zk.client import CONNECTION_ERRORS
from nodepool.zk.models import NodeState


class LaunchRecordMixin:
    """The node-record half of :class:`~.launcher.NodeLauncher`.

    A write that fails because the connection dropped is kept (``_unsaved``)
    and written again by :meth:`_flush` once the connection is back.  If the
    session (and with it the node lock) was lost, :meth:`_take_back` locks
    the node again when the record is still ours to take; otherwise
    :meth:`_abandon` deletes whatever instance the launch created and the
    launch ends without touching the record.

    Uses these attributes of the launcher: ``provider``, ``adapter``,
    ``node``, ``log``, ``guard`` (the session guard the node lock was taken
    in), ``abandoned``, ``cancelled``, ``_unsaved``, ``_pending_result``,
    ``create_sm``, ``cleanup_sm``, ``pool``, and its ``_cancel_scan()`` and
    ``_created_id()``.
    """

    @property
    def _zk(self):
        return self.provider.services.zk_client

    def _take_back(self) -> None:
        """The session that held the node lock was lost: lock the node
        again and resume if its record is still ours, else abandon.

        The record is ours when it still exists, nobody else holds it and
        it is still ``building`` for us; the in-memory node (which may be
        ahead of the record) is then written again.
        """
        nodes = self.provider.nodes
        guard = self._zk.guard()
        try:
            fresh = nodes.relock_node(self.node)
        except exceptions.LockError as e:
            if isinstance(e.__cause__, CONNECTION_ERRORS):
                return  # the connection dropped again: next pass
            self._abandon("could not lock it again: %s" % e)
            return
        if (fresh.state != NodeState.BUILDING
                or fresh.allocated_to != self.node.allocated_to
                or self.cancelled):
            nodes.unlock_node(self.node)
            self._abandon("its record changed meanwhile (%s)" % fresh.state)
            return
        self.node.stat = fresh.stat
        self.guard = guard
        self._unsaved = True
        self.log.info("Locked node %s again after the ZooKeeper session "
                      "was lost; resuming its launch", self.node.id)

    def _abandon(self, why: str) -> None:
        """Give the node up without touching its record.

        The record belongs to whoever holds it now (the deleted-node worker
        deletes it and any instance it names).  The instance this launch
        created is deleted here at once: the record may not name it yet.
        """
        self.abandoned = True
        self.log.warning("Lost the lock of node %s while launching it: %s",
                         self.node.id, why)
        self.node.lock = None
        # Not a failure of the launch: the handler (if it still has the
        # request) relaunches, as for a quota refusal.
        self.node.state = NodeState.ABORTED
        self._pending_result = None
        self._unsaved = False
        self._cancel_scan()
        external_id = self._created_id()
        self.create_sm = None
        if external_id and self.cleanup_sm is None:
            self.node.external_id = external_id
            self.cleanup_sm = self.adapter.get_delete_state_machine(
                external_id, self.log)

    def _store(self) -> None:
        """Write the record; a failure of the connection is not an error.

        The write is retried by :meth:`_flush` on later passes.  Nothing is
        written once the session that holds our lock is gone: the record
        may be somebody else's by now.
        """
        if self.abandoned:
            return
        self._unsaved = True
        if self.guard.lost:
            return
        try:
            self.provider.nodes.store_node(self.node)
        except CONNECTION_ERRORS as e:
            self.log.info("Could not store node %s (%r); retrying once "
                          "ZooKeeper is back", self.node.id, e)
            return
        self._unsaved = False

    def _flush(self) -> bool:
        """Write a record whose last write failed; True once stored."""
        if not self._zk.connected:
            return False
        try:
            self._store()
        except NoNodeError:
            self._abandon("its record was deleted")
            return False
        return not self._unsaved

    def _apply_instance(self, instance) -> None:
        node = self.node
        node.external_id = instance.external_id
        # use-internal-ip (AWS, Azure pools) beats the address the
        # instance offers, which is its public one whenever it has one.
        private_ip = instance.private_ipv4 or instance.private_ipv6
        if self.pool.prefers_private_ip and private_ip:
            node.interface_ip = private_ip
        else:
            node.interface_ip = (instance.interface_ip or instance.public_ipv4
                                 or instance.public_ipv6)
        node.public_ipv4 = instance.public_ipv4
        node.private_ipv4 = instance.private_ipv4
        node.public_ipv6 = instance.public_ipv6
        node.host_id = instance.host_id
        # What the instance knows wins; what the launcher chose stays.
        node.cloud = instance.cloud or node.cloud
        node.region = instance.region or node.region
        node.az = instance.az or node.az
        node.driver_data = instance.driver_data
        node.slot = instance.slot
        node.node_properties = dict(instance.node_properties or {})
        if instance.attributes is not None:
            node.attributes = dict(instance.attributes)
        quota = instance.get_quota_information()
        if quota is not None:
            node.resources = quota.get_resources()
        for attr in ("username", "python_path", "shell_type",
                     "connection_port", "connection_type", "host_keys"):
            value = getattr(instance, attr, None)
            if value is not None:
                setattr(node, attr, value)
