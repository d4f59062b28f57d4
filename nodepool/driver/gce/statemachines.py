# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The GCE instance record and the create and delete state machines.

A node is one instance named after its hostname (``np<node id>``), with a
boot disk that is deleted with it (``autoDelete``); the name is the
node's external id.

GCE answers an insert or delete with a *zone operation* that finishes
later.  The machines never call GCE themselves: the call runs in the
adapter's worker pool and comes back as a future; the instance's status
comes from the adapter's shared instance listing (one paged list call for
every machine), believed only when it started after the machine's own
call.  While the instance is not yet where the machine wants it, the
machine also polls its operation (in the worker pool, first after
``operation_interval`` seconds, then twice as long each time up to 30),
because a failed insert (no capacity, quota) shows only there: the
instance never appears.
"""

import time
from typing import Optional

from nodepool import exceptions
from nodepool.driver.errors import CloudApiError
from nodepool.driver.gce import errors
from nodepool.driver.listing import LostCreateSearch
from nodepool.driver.quota import QuotaInformation
from nodepool.driver.statemachine.cloud import (
    CloudCreateStateMachine, CloudDeleteStateMachine, CloudInstance)

RUNNING = "RUNNING"
# The longest wait between two polls of one operation (seconds).
MAX_OPERATION_INTERVAL = 30.0
# States an instance being launched never comes back from by itself.
STOPPED = frozenset(("TERMINATED", "STOPPING", "STOPPED", "SUSPENDING",
                     "SUSPENDED"))


def last_segment(url: Optional[str]) -> Optional[str]:
    """The last path segment of a resource URL (its name)."""
    if not url:
        return None
    return url.rstrip("/").rsplit("/", 1)[-1]


def metadata_dict(record: dict) -> dict:
    """An instance's metadata items as a dict."""
    items = (record.get("metadata") or {}).get("items") or ()
    return {item["key"]: item.get("value") for item in items
            if "key" in item}


class GceInstance(CloudInstance):
    """An instance from a listing record (GCE's JSON).

    ``quota_loader(record)`` gives its :class:`QuotaInformation` (from its
    machine type).
    """

    def __init__(self, record: dict, quota_loader=None):
        super().__init__(record, quota_loader)
        self.external_id = record["name"]
        self.metadata = metadata_dict(record)
        self.status = record.get("status")
        self.ready = self.status == RUNNING
        nics = record.get("networkInterfaces") or [{}]
        self.private_ipv4 = nics[0].get("networkIP")
        configs = nics[0].get("accessConfigs") or [{}]
        self.public_ipv4 = configs[0].get("natIP")
        # The launcher picks the private address for use-internal-ip.
        self.interface_ip = self.public_ipv4 or self.private_ipv4
        self.cloud = "Google"
        self.az = last_segment(record.get("zone"))
        self.region = self.az.rsplit("-", 1)[0] if self.az else None
        self.machine_type = last_segment(record.get("machineType"))

    def get_quota_information(self) -> QuotaInformation:
        if self._quota_loader is None or not self.machine_type:
            return QuotaInformation(instances=1)
        return self._quota_loader(self.machine_type)


class _Steps:
    """Futures from the adapter's workers, fresh reads of the instance
    listing, and polling of the machine's zone operation."""

    _since = -float("inf")
    operation: Optional[dict] = None
    _op_future = None
    _op_polled = -float("inf")
    _op_polls = 0

    def _submit(self, state: str, func, *args) -> None:
        self._since = self.adapter.instances.now()
        self._future = self.adapter.submit(func, *args)
        self.state = state

    def _fresh_record(self):
        """``(listed, record)``: whether a listing that started after our
        last call is in, and the instance's record in it (or None)."""
        listing = self.adapter.instances
        listing.watch(self)
        snapshot = listing.snapshot()
        if snapshot.started < self._since:
            return False, None
        return True, snapshot.get(self.external_id)

    def _operation_done(self) -> bool:
        """Poll the operation now and then; True once it is DONE
        (raising its error if it ended with one)."""
        op = self.operation
        if op is None:
            return False
        if op.get("status") == "DONE":
            if op.get("error"):
                raise errors.operation_error(
                    "%s of %s" % (op.get("operationType", "operation"),
                                  self.external_id), op)
            return True
        if self._op_future is not None:
            if not self._op_future.done():
                return False
            self.operation = self._op_future.result()
            self._op_future = None
            return self._operation_done()
        now = time.monotonic()
        if self._op_polled == -float("inf"):
            self._op_polled = now  # the call's own answer was the first
            return False
        # Backing off: a long insert or delete must not spend the rate
        # limit on polls (its success shows in the listing anyway).
        wait = min(self.adapter.operation_interval * 2 ** self._op_polls,
                   MAX_OPERATION_INTERVAL)
        if now - self._op_polled >= wait:
            self._op_polled = now
            self._op_polls += 1
            self._op_future = self.adapter.submit(
                self.adapter.get_operation, op["name"])
        return False

    def _finish(self) -> None:
        self._unwatch()
        self._complete()


class GceCreateStateMachine(_Steps, CloudCreateStateMachine):
    """Insert one node's instance and wait until it runs.

    States: ``start`` -> ``inserting`` [-> ``finding lost``] ->
    ``waiting`` -> ``complete``.  When the insert's answer was lost (a
    server error, a dropped connection), the instance may exist all the
    same: ``finding lost`` looks for it by name (and node id) in fresh
    listings and carries on with it, or fails the attempt with the
    insert's error when a few listings do not show it.
    """

    INSERTING = "inserting"
    FINDING_LOST = "finding lost"
    WAITING = "waiting"

    _lost: Optional[LostCreateSearch] = None

    def _advance(self):
        if self.state == self.START:
            # Known before the call: a failure from here on is cleaned up
            # by deleting whatever carries this name.
            self.external_id = self.hostname
            self._submit(self.INSERTING, self.adapter.insert_instance, self)
        if self.state == self.INSERTING:
            if not self._future.done():
                return None
            try:
                self.operation = self._future.result()
            except CloudApiError as e:
                if not e.outcome_unknown:
                    raise
                self.log.warning("Instance %s of node %s may have been "
                                 "inserted (%s): looking for it",
                                 self.hostname, self.node_id, e)
                self._lost = LostCreateSearch(self.adapter.instances,
                                              self._ours, e)
                self.state = self.FINDING_LOST
            else:
                self.state = self.WAITING
        if self.state == self.FINDING_LOST:
            if self._lost.find(self) is None:
                return None
            self.log.warning("Found instance %s of node %s whose insert "
                             "answer was lost", self.hostname, self.node_id)
            # No operation to poll: the instance's status decides.
            self.state = self.WAITING
        if self.state == self.WAITING:
            return self._check()
        return None

    def _ours(self, record: dict) -> bool:
        return record.get("name") == self.hostname and metadata_dict(
            record).get("nodepool_node_id") == self.node_id

    def _check(self):
        listed, record = self._fresh_record()
        if listed and record is not None:
            status = record.get("status")
            if status == RUNNING:
                self._finish()
                self.log.debug("Instance %s of node %s is running",
                               self.external_id, self.node_id)
                return self.adapter.make_instance(record)
            if status in STOPPED:
                raise exceptions.LaunchStatusException(
                    "Instance %s of node %s is %s" % (
                        self.external_id, self.node_id, status))
        if not self._operation_done():
            return None
        listing = self.adapter.instances
        if self._op_seen is None:
            self._op_seen = listing.now()
            listing.request_refresh()
        elif record is None and listing.snapshot().started > self._op_seen:
            # Done, yet missing from a listing that started after we saw
            # it done: it was deleted under us.
            raise exceptions.LaunchStatusException(
                "Instance %s of node %s vanished" % (
                    self.external_id, self.node_id))
        return None

    _op_seen = None


class GceDeleteStateMachine(_Steps, CloudDeleteStateMachine):
    """Delete one instance (its boot disk goes with it).

    States: ``start`` -> ``deleting`` -> ``waiting`` -> ``complete``.
    A missing instance raises NotFound, which ends the delete.
    """

    DELETING = "deleting"
    WAITING = "waiting"

    def _advance(self):
        if self.state == self.START:
            self._submit(self.DELETING, self.adapter.delete_instance,
                         self.external_id, self.log)
        if self.state == self.DELETING:
            if not self._future.done():
                return
            self.operation = self._future.result()
            self.state = self.WAITING
        if self.state == self.WAITING:
            listed, record = self._fresh_record()
            if listed and record is None:
                self._finish()
                return
            self._operation_done()
