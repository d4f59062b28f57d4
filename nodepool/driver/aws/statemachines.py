# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The AWS instance record and the create and delete state machines.

The machines never call AWS themselves.  Slow calls (RunInstances takes
over a second, AllocateHosts about as long) run in the adapter's create
thread pool and come back as futures; terminations go to the adapter's
batched deleter; instance and host states are read from the adapter's
shared listings.  ``advance()`` therefore only looks at futures and
snapshots and returns at once.
"""

import time
import uuid
from typing import Optional

from nodepool import exceptions
from nodepool.driver.errors import CloudApiError
from nodepool.driver.listing import LostCreateSearch
from nodepool.driver.statemachine.adapter import Instance
from nodepool.driver.statemachine.cloud import (
    CloudCreateStateMachine, CloudDeleteStateMachine, CloudInstance)

# EC2 instance states after which an instance will never run again.
DEAD_STATES = frozenset(("shutting-down", "terminated", "stopping",
                         "stopped"))
# Dedicated host states that mean the allocation failed for good.
DEAD_HOST_STATES = frozenset(("permanent-failure", "released",
                              "released-permanent-failure"))


def split_external_id(external_id) -> tuple:
    """``(instance_id, host_id)`` of an external id.

    New nodes store ``{"instance": ..., "host": ...}`` (either may be
    missing); nodes of older launchers stored the bare instance id.
    """
    if isinstance(external_id, dict):
        return external_id.get("instance"), external_id.get("host")
    return external_id, None


def make_external_id(instance_id, host_id):
    """The external id to record: the bare instance id when there is no
    dedicated host, so that plain nodes stay readable by older tools."""
    if host_id is None:
        return instance_id
    ids = {"host": host_id}
    if instance_id is not None:
        ids["instance"] = instance_id
    return ids


def tags_to_dict(tags) -> dict:
    return {t["Key"]: t["Value"] for t in tags or ()}


class AwsInstance(CloudInstance):
    """An EC2 instance from a DescribeInstances record.

    ``quota_loader(record)`` gives its :class:`QuotaInformation`: a cached
    lookup of the instance type, already warm for instances nodepool made.
    """

    def __init__(self, record: dict, region: str, quota_loader=None,
                 external_id=None):
        super().__init__(record, quota_loader)
        self.external_id = external_id or record["InstanceId"]
        self.metadata = tags_to_dict(record.get("Tags"))
        state = record.get("State", {}).get("Name")
        self.ready = state == "running"
        self.deleted = state == "terminated"
        self.private_ipv4 = record.get("PrivateIpAddress")
        self.public_ipv4 = record.get("PublicIpAddress")
        for nic in record.get("NetworkInterfaces") or ():
            addresses = nic.get("Ipv6Addresses") or ()
            if addresses:
                self.public_ipv6 = addresses[0].get("Ipv6Address")
                break
        self.interface_ip = (self.public_ipv4 or self.public_ipv6
                             or self.private_ipv4)
        placement = record.get("Placement") or {}
        self.az = placement.get("AvailabilityZone")
        self.host_id = placement.get("HostId")
        self.region = region
        self.cloud = "AWS"
        self.node_properties = {
            "spot": record.get("InstanceLifecycle") == "spot",
            "fleet": "nodepool_fleet" in self.metadata,
        }


class AwsCreateStateMachine(CloudCreateStateMachine):
    """Create one instance (on a fresh dedicated host if the label says).

    States: ``start`` -> [``allocating host`` -> ``waiting for host``] ->
    ``submit creating instance`` -> [``finding lost instance``] ->
    ``creating instance`` -> ``complete``.

    When RunInstances failed in a way that leaves open whether the
    instance was started (a 5xx, a dropped connection or a timeout on
    every try), the machine looks for an instance carrying its client
    token before it fails: one that is found is the node's instance.
    """

    ALLOCATING_HOST = "allocating host"
    WAITING_FOR_HOST = "waiting for host"
    SUBMIT_CREATING = "submit creating instance"
    FINDING_LOST = "finding lost instance"
    CREATING = "creating instance"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.host_id: Optional[str] = None
        self.instance_id: Optional[str] = None
        # Idempotency token of RunInstances: a retried call (throttled,
        # timed out) returns the first call's instance, never a second.
        self.client_token = "%s-%s" % (self.hostname, uuid.uuid4().hex[:16])
        self._lost: Optional[LostCreateSearch] = None

    def _advance(self) -> Optional[Instance]:
        if self.state == self.START:
            if self.label.dedicated_host:
                self._future = self.adapter.submit_host_allocation(self)
                self.state = self.ALLOCATING_HOST
            else:
                self._submit_create()
        if self.state == self.ALLOCATING_HOST:
            if not self._future.done():
                return None
            self.host_id = self._future.result()
            self.external_id = make_external_id(None, self.host_id)
            self.state = self.WAITING_FOR_HOST
        if self.state == self.WAITING_FOR_HOST:
            if not self._host_available():
                return None
            self._submit_create()
        if self.state == self.SUBMIT_CREATING:
            if not self._future.done():
                return None
            try:
                self._created(self._future.result())
            except CloudApiError as e:
                if not e.outcome_unknown or self.label.fleet is not None:
                    raise
                self.log.warning(
                    "Instance of node %s may have been started: looking "
                    "for its client token %s", self.node_id,
                    self.client_token)
                self._lost = LostCreateSearch(
                    self.adapter.instances, self._started_by_us, e)
                self.state = self.FINDING_LOST
        if self.state == self.FINDING_LOST:
            found = self._lost.find(self)
            if found is None:
                return None
            self.log.warning("Found instance %s of node %s whose "
                             "RunInstances answer was lost", found[0],
                             self.node_id)
            self._created(found[0])
        if self.state == self.CREATING:
            return self._check_running()
        return None

    def _submit_create(self) -> None:
        self._future = self.adapter.submit_create(self)
        self.state = self.SUBMIT_CREATING

    def _created(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.external_id = make_external_id(instance_id, self.host_id)
        self.state = self.CREATING

    def _started_by_us(self, record: dict) -> bool:
        """Whether a listed instance is the one our RunInstances started
        (fleets have no client token of ours: never)."""
        return (record.get("ClientToken") == self.client_token
                and record.get("State", {}).get("Name") != "terminated")

    def _host_available(self) -> bool:
        hosts = self.adapter.hosts
        hosts.watch(self)
        record = hosts.snapshot().get(self.host_id)
        if record is None:
            return False
        state = record.get("State")
        if state == "available":
            hosts.unwatch(self)
            return True
        if state in DEAD_HOST_STATES:
            raise exceptions.LaunchStatusException(
                "Dedicated host %s for node %s is %s" % (
                    self.host_id, self.node_id, state))
        return False

    def _check_running(self) -> Optional[Instance]:
        instances = self.adapter.instances
        instances.watch(self)
        record = instances.snapshot().get(self.instance_id)
        if record is None:
            # Not listed yet (EC2 listings are eventually consistent).
            return None
        state = record.get("State", {}).get("Name")
        if state == "running":
            instances.unwatch(self)
            self._complete()
            self.log.debug("Instance %s of node %s is running",
                           self.instance_id, self.node_id)
            return self.adapter.make_instance(record, self.external_id)
        if state in DEAD_STATES:
            reason = (record.get("StateReason") or {}).get("Message", "")
            raise exceptions.LaunchStatusException(
                "Instance %s of node %s is %s %s" % (
                    self.instance_id, self.node_id, state, reason))
        return None


class AwsDeleteStateMachine(CloudDeleteStateMachine):
    """Terminate an instance (batched) and release its dedicated host.

    States: ``start`` -> ``terminating instance`` -> ``deleting instance``
    (until listed as terminated or gone) -> [``releasing host``] ->
    ``complete``.
    """

    TERMINATING = "terminating instance"
    DELETING = "deleting instance"
    RELEASING_HOST = "releasing host"

    def __init__(self, adapter, external_id, log,
                 clock=time.monotonic):
        super().__init__(adapter, external_id, log)
        self.instance_id, self.host_id = split_external_id(external_id)
        self._clock = clock
        self._terminated_at = None

    def _advance(self) -> None:
        if self.state == self.START:
            if self.instance_id:
                self._future = self.adapter.instance_deleter.submit(
                    self.instance_id)
                self._future.add_done_callback(
                    lambda f: self.adapter.wake_runners())
                self.state = self.TERMINATING
            else:
                self._release_host()
        if self.state == self.TERMINATING:
            if not self._future.done():
                return
            try:
                self._future.result()
            except exceptions.NotFound:
                self.log.info("Instance %s is already gone",
                              self.instance_id)
                self._release_host()
                return
            # Only a listing that began after this moment can tell
            # whether the termination took effect.
            self._terminated_at = self._clock()
            self.state = self.DELETING
        if self.state == self.DELETING:
            instances = self.adapter.instances
            instances.watch(self)
            snapshot = instances.snapshot()
            if snapshot.started < self._terminated_at:
                return
            record = snapshot.get(self.instance_id)
            state = (record or {}).get("State", {}).get("Name")
            if record is not None and state != "terminated":
                return
            instances.unwatch(self)
            self._release_host()
        if self.state == self.RELEASING_HOST:
            if not self._future.done():
                return
            try:
                self._future.result()
            except exceptions.NotFound:
                pass
            self._complete()

    def _release_host(self) -> None:
        if self.host_id is None:
            self._complete()
            return
        self._future = self.adapter.host_deleter.submit(self.host_id)
        self._future.add_done_callback(lambda f: self.adapter.wake_runners())
        self.state = self.RELEASING_HOST
