# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The metastatic adapter: requested nodes as slots of backing nodes.

The bookkeeping (which slot of which backing node holds which node) lives
in memory, in a :class:`~.slots.SlotBook` under one lock, and is written
nowhere but in the nodes themselves: ``user_data`` of each backing node
and ``driver_data`` of each slot's node.  After a start it is rebuilt from
those (:meth:`BackingNodes.recover`) in a thread of the adapter; state
machines wait until that is done, so that no slot is freed or handed out
against an empty book.  Book and lock are a :class:`~.slots.SlotState`
shared with the provider's previous adapter while that one drains after
a reconfiguration.

Several threads use the bookkeeping: the provider's runners (state
machines: allocate, wait for the backing node, free), those of a draining
predecessor, the launcher's cleanup thread
(:meth:`MetastaticAdapter.release_idle`, once per cleanup pass, which
releases idle, old or failed backing nodes and notices dead ones) and the
recovery thread.  ZooKeeper calls made under the lock are short (a
request submitted, a node locked and written) and never wait for another
lock holder.
"""

import logging
import time
from typing import Optional

from nodepool import exceptions
from nodepool.driver.metastatic.backing import (
    FAILED, READY, BackingNodes)
from nodepool.driver.metastatic.slots import BackingRecord, SlotState
from nodepool.driver.metastatic.statemachines import (
    MetastaticCreateStateMachine, MetastaticDeleteStateMachine,
    MetastaticInstance)
from nodepool.driver.quota import QuotaInformation
from nodepool.driver.statemachine.adapter import Adapter
from nodepool.service import TaskThreads

OWNER_PREFIX = "NodePool:metastatic:"


class MetastaticAdapter(Adapter):
    """Adapter of a ``driver: metastatic`` provider.

    :param provider_config: the provider's
        :class:`~.config.MetastaticProviderConfig`.
    :param services: the launcher's services (``nodes``, ``requests``,
        ``shared_state``); None for one-off users (image listings), which
        cannot launch.
    :param clock: the wall clock (``launched``, ``last_used``, ages).
    """

    def __init__(self, provider_config, services=None, clock=time.time):
        super().__init__(provider_config)
        self.owner = OWNER_PREFIX + provider_config.name
        self.log = logging.getLogger(
            "nodepool.driver.metastatic.%s" % provider_config.name)
        self.clock = clock
        self.backing = None
        self._state = SlotState()
        if services is not None:
            self.backing = BackingNodes(services.nodes, services.requests,
                                        self.owner)
            self._state = services.shared_state(
                ("metastatic", provider_config.name), SlotState)
        self._state.join()
        self._stopped = False
        self._lock = self._state.lock
        self._tasks = TaskThreads(self.log)

    @property
    def book(self):
        """The provider's :class:`~.slots.SlotBook` (use under the
        lock)."""
        return self._state.book

    # Start and stop -----------------------------------------------------

    def ready(self) -> bool:
        """Whether the bookkeeping is rebuilt; starts rebuilding it on the
        first call.  Never blocks."""
        if self._state.recovered.is_set():
            return True
        if self.backing is None:
            raise exceptions.LaunchNodepoolException(
                "metastatic provider %s has no ZooKeeper" % self.provider.name)
        with self._lock:
            if not self._state.recovering:
                self._state.recovering = True
                self._tasks.spawn("Recover.%s" % self.provider.name,
                                  self._recover)
        return False

    def _recover(self) -> None:
        try:
            records = self.backing.recover(self.provider.name, self.clock())
        except Exception:
            self.log.exception("Rebuilding the slots from ZooKeeper failed; "
                               "trying again")
            with self._lock:
                self._state.recovering = False
            return
        with self._lock:
            for record in records:
                self.book.add(record)
                self.log.info("Recovered backing node %s of %s: slots %s",
                              record.node_id, record.label_name,
                              record.allocated)
        self._state.recovered.set()

    def stop(self) -> None:
        """Stop the recovery thread; the provider's last adapter also
        withdraws the backing requests still pending (nobody else waits
        for them)."""
        self._tasks.stop()
        self._tasks.join(10)
        if self.backing is None or self._stopped:
            return
        self._stopped = True
        records = self._state.leave()
        if records is None:
            return
        pending = {r.request_id for r in records
                   if r.pending and r.request_id}
        for request_id in pending:
            try:
                self.backing.withdraw(request_id)
            except Exception as e:
                self.log.warning("Could not withdraw backing request %s: "
                                 "%r", request_id, e)

    # Create and delete --------------------------------------------------

    def get_create_state_machine(self, hostname, label, image_external_id,
                                 metadata, request, az, log):
        return MetastaticCreateStateMachine(
            self, label, metadata["nodepool_node_id"], metadata, log)

    def get_delete_state_machine(self, external_id, log):
        return MetastaticDeleteStateMachine(self, external_id, log)

    def allocate(self, label, node_id: str, log) -> None:
        """Give ``node_id`` a slot: on a usable backing node of the label,
        or on a new one whose request this submits."""
        now = self.clock()
        with self._lock:
            # A retried launch frees what its failed attempt held.
            self.book.free(node_id, now)

            def too_old(record):
                return (label.max_age is not None
                        and now - record.launched > label.max_age)
            record = self.book.usable(label.name, too_old)
            if record is None:
                request_id = self.backing.submit(label.backing_label)
                record = BackingRecord(
                    label_name=label.name,
                    slot_count=label.max_parallel_jobs, launched=now,
                    last_used=now, request_id=request_id)
                self.book.add(record)
                log.info("Requested a %s backing node (%s) for node %s",
                         label.backing_label, request_id, node_id)
            slot = self.book.assign(record, node_id)
            log.info("Node %s gets slot %d of backing node %s", node_id,
                     slot, record.node_id or "(requested %s)"
                     % record.request_id)

    def backing_node_of(self, node_id: str, log) -> Optional[str]:
        """The id of the backing node holding ``node_id``'s slot, None
        while it is still being requested.

        :raises LaunchStatusException: the backing node failed (its request
            failed, it vanished, it was marked failed): the launch attempt
            fails and a retry gets another slot.
        """
        with self._lock:
            record, _ = self.book.holding(node_id)
            if record is None:
                raise exceptions.LaunchNodepoolException(
                    "Node %s holds no slot" % node_id)
            if record.failed:
                raise exceptions.LaunchStatusException("Backing node failed")
            if record.pending:
                self._poll(record, log)
            return record.node_id

    def _poll(self, record: BackingRecord, log) -> None:
        state, request = self.backing.poll(record.request_id)
        if state == READY:
            try:
                self.backing.claim(request, record)
            except exceptions.LaunchError as e:
                log.warning("Backing request %s: %s", record.request_id, e)
                state = FAILED
        if state != FAILED:
            return
        # Every node waiting on that request fails its launch attempt (the
        # retry requests anew); the record goes once they all freed their
        # slots (release_idle).
        log.warning("Backing request %s for %s failed", record.request_id,
                    record.label_name)
        for waiting in self.book.by_request(record.request_id):
            waiting.failed = True
        self.backing.withdraw(record.request_id)
        raise exceptions.LaunchStatusException("Backing node failed")

    def describe(self, node_id: str, metadata: dict) -> MetastaticInstance:
        """The instance of ``node_id``'s slot, from its backing node.

        :raises LaunchStatusException: the backing node is gone.
        """
        with self._lock:
            record, slot = self.book.holding(node_id)
            if record is None or record.node_id is None:
                raise exceptions.LaunchNodepoolException(
                    "Node %s holds no slot" % node_id)
            backing_id = record.node_id
        backing = self.backing.read(backing_id)
        if backing is None:
            raise exceptions.LaunchStatusException(
                "Backing node %s vanished" % backing_id)
        pool = self.provider.pools.get(metadata.get("nodepool_pool_name"))
        return MetastaticInstance(
            node_id, backing, slot, metadata,
            pool.node_attributes if pool is not None else None)

    def free(self, node_id: str, log) -> None:
        """Free ``node_id``'s slot (nothing if it holds none)."""
        with self._lock:
            record = self.book.free(node_id, self.clock())
        if record is not None:
            log.info("Freed the slot of node %s on backing node %s", node_id,
                     record.node_id or record.request_id)

    def notify_nodescan_failure(self, label, external_id) -> None:
        """The host behind the slot did not answer: no new slots there."""
        with self._lock:
            record, _ = self.book.holding(external_id)
            if record is None or record.failed:
                return
            record.failed = True
            self.log.warning("Backing node %s failed the host-key scan of "
                             "node %s", record.node_id, external_id)
            if record.node_id is not None:
                self.backing.store_failed(record)

    # Release ------------------------------------------------------------

    def release_idle(self) -> int:
        """One release pass (the cleanup thread); returns the number of
        backing nodes released.

        Slots whose node vanished are freed first.  A backing node that
        died (its record gone, or no longer ``in-use``) fails: no new
        slots, and its ``ready`` slot nodes are sent to deletion so that
        they are replaced elsewhere.  A backing node past its label's
        ``max-age`` fails too.  Empty ones are released once idle for
        ``grace-time`` and older than ``min-retention-time``; failed ones,
        and those of labels no longer configured, at once.
        """
        if not self.ready():
            return 0
        released = 0
        now = self.clock()
        labels = self.provider.labels
        with self._lock:
            for record in self.book.records():
                label = labels.get(record.label_name)
                self._reap_vanished(record, now)
                self._check_health(record, label, now)
                grace = minimum = 0
                if label is not None and not record.failed:
                    grace = label.grace_time
                    minimum = label.min_retention_time
                if (record.busy or now - record.last_used < grace
                        or now - record.launched < minimum):
                    continue
                self.book.drop(record)
                record.failed = True
                if record.pending:
                    self.backing.withdraw(record.request_id)
                elif self.backing.release(record):
                    released += 1
        return released

    def _reap_vanished(self, record, now) -> None:
        # A slot whose node record is gone without our delete machine
        # having run (removed by another process: "nodepool delete --now"
        # builds a provider of its own) would stay taken for good.
        for node_id in [n for n in record.allocated if n is not None]:
            if self.backing.read(node_id) is None:
                self.log.info("Node %s is gone; freeing its slot on %s",
                              node_id, record.node_id or record.request_id)
                self.book.free(node_id, now)

    def _check_health(self, record, label, now) -> None:
        if record.pending:
            return
        if not record.failed and label is not None and \
                label.max_age is not None and \
                now - record.launched > label.max_age:
            self.log.info("Backing node %s is older than max-age %ds",
                          record.node_id, label.max_age)
            record.failed = True
        if self.backing.alive(record):
            return
        if not record.failed:
            self.log.warning("Backing node %s is gone; its slots get no new "
                             "nodes", record.node_id)
            record.failed = True
        holders = [n for n in record.allocated if n is not None]
        for node_id in self.backing.evict(holders):
            self.log.info("Node %s on dead backing node %s sent to deletion",
                          node_id, record.node_id)

    # Quota and listings -------------------------------------------------

    def list_instances(self):
        # Slots use nothing of any cloud account.
        return []

    def get_quota_for_label(self, label) -> QuotaInformation:
        return QuotaInformation(cores=0, instances=1, ram=0)
