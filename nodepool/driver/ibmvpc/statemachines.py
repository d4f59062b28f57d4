# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The IBM VPC instance record, ownership by name, and the create and
delete state machines.

VPC resources carry no tags nodepool could set atomically with the
create, so ownership is read from names instead: a node's instance,
floating IP and boot volume are all named ``np<node id>`` and live in the
resource group ``np_<provider>_<pool>``.  The instance name is the node's
external id, so a delete finds everything from it, also after a launch
that failed half way.

The machines never call the API: creates, attaches and deletes run in the
adapter's worker threads and come back as futures; statuses come from
the adapter's shared instance and floating IP listings, believed only
when they started after the machine's own last call.
"""

import re
import time
from typing import Optional

from nodepool.driver.ibmvpc import errors
from nodepool.driver.statemachine.cloud import (
    CloudCreateStateMachine, CloudDeleteStateMachine, CloudInstance)

_NODE_NAME = re.compile(r"^np(\d+)$")
_POOL_GROUP = re.compile(r"^np_([A-Za-z0-9-]+)_([A-Za-z0-9-]+)$")


def pool_group(provider: str, pool: str) -> str:
    """The resource group of a pool's nodes."""
    return "np_%s_%s" % (provider, pool)


def node_metadata(name: str, group_name: Optional[str]) -> dict:
    """nodepool's metadata of a resource, read from its name and its
    resource group's name; empty when they are not nodepool's."""
    node = _NODE_NAME.match(name or "")
    group = _POOL_GROUP.match(group_name or "")
    if node is None or group is None:
        return {}
    return {"nodepool_node_id": node.group(1),
            "nodepool_provider_name": group.group(1),
            "nodepool_pool_name": group.group(2)}


class IbmInstance(CloudInstance):
    """An instance from a listing record, with its floating IP record when
    it has one.  ``metadata`` is reconstructed (:func:`node_metadata`);
    ``quota_loader(profile name)`` gives its quota."""

    def __init__(self, record: dict, group_name: Optional[str],
                 fip: Optional[dict] = None, region: Optional[str] = None,
                 quota_loader=None):
        super().__init__(record, quota_loader)
        self.external_id = record["name"]
        self.metadata = node_metadata(record["name"], group_name)
        status = record.get("status")
        self.ready = status == "running"
        self.deleted = status == "deleting"
        nic = record.get("primary_network_interface") or {}
        self.private_ipv4 = ((nic.get("primary_ip") or {}).get("address")
                             or nic.get("primary_ipv4_address"))
        self.public_ipv4 = (fip or {}).get("address")
        self.interface_ip = self.public_ipv4 or self.private_ipv4
        self.cloud = "IBM"
        self.region = region
        self.az = (record.get("zone") or {}).get("name")
        self.profile = (record.get("profile") or {}).get("name")

    def get_quota_information(self):
        return self._quota_loader(self.profile)


class _Steps:
    """Futures from the adapter's workers, fresh listing snapshots."""

    _since = -float("inf")

    def _submit(self, state: str, func, *args) -> None:
        self._since = time.monotonic()
        self._future = self.adapter.submit(func, *args)
        self.state = state

    def _fresh(self, listing):
        """The listing's snapshot if it started after our last call."""
        listing.watch(self)
        snapshot = listing.snapshot()
        if snapshot.started < self._since:
            return None
        return snapshot

    def _finish(self) -> None:
        self._unwatch()
        self._complete()


class IbmCreateStateMachine(_Steps, CloudCreateStateMachine):
    """Create one node: [floating IP], instance, [attach the IP].

    States: ``start`` -> ``creating fip`` -> ``waiting for fip`` ->
    ``creating vm`` -> ``waiting for vm`` -> ``attaching fip`` ->
    ``waiting for attachment`` -> ``complete`` (the floating IP states
    only for pools with ``public-ipv4``).
    """

    CREATING_FIP = "creating fip"
    WAITING_FIP = "waiting for fip"
    CREATING_VM = "creating vm"
    WAITING_VM = "waiting for vm"
    ATTACHING = "attaching fip"
    WAITING_ATTACH = "waiting for attachment"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fip: Optional[dict] = None
        self.vm: Optional[dict] = None
        # The instance prototype's ``image``, set by the adapter's
        # prepare_create before its future completes.
        self.image: Optional[dict] = None

    def _advance(self):
        adapter = self.adapter
        if self.state == self.START:
            # Recorded before anything exists: whatever carries this name
            # is cleaned up if the launch fails.
            self.external_id = self.hostname
            self._submit(self.CREATING_FIP, adapter.prepare_create, self)
        if self.state == self.CREATING_FIP:
            if not self._future.done():
                return None
            self.fip = self._future.result()
            if self.fip is None:
                self._submit(self.CREATING_VM, adapter.create_vm, self)
            else:
                self.state = self.WAITING_FIP
        if self.state == self.WAITING_FIP:
            record = self._listed(adapter.fips, "Floating IP")
            if record is None or record.get("status") != "available":
                return None
            self.fip = record
            adapter.fips.unwatch(self)
            self._submit(self.CREATING_VM, adapter.create_vm, self)
        if self.state == self.CREATING_VM:
            if not self._future.done():
                return None
            self._future.result()
            self.state = self.WAITING_VM
        if self.state == self.WAITING_VM:
            record = self._listed(adapter.vms, "Instance")
            if record is None or record.get("status") != "running":
                return None
            self.vm = record
            adapter.vms.unwatch(self)
            if self.fip is None:
                self._finish()
                return adapter.make_instance(record)
            self._submit(self.ATTACHING, adapter.attach_fip, self)
        if self.state == self.ATTACHING:
            if not self._future.done():
                return None
            self._future.result()
            self.state = self.WAITING_ATTACH
        if self.state == self.WAITING_ATTACH:
            record = self._listed(adapter.fips, "Floating IP")
            if record is None or not record.get("target"):
                return None
            self._finish()
            return adapter.make_instance(self.vm, record)
        return None

    def _listed(self, listing, what: str) -> Optional[dict]:
        """The node's record in a fresh listing (None: wait); a failed
        resource raises."""
        snapshot = self._fresh(listing)
        if snapshot is None:
            return None
        record = snapshot.get(self.hostname)
        if record is not None and record.get("status") == "failed":
            raise errors.start_failure(
                "%s %s of node %s" % (what, self.hostname, self.node_id),
                record.get("status_reasons"))
        return record


class IbmDeleteStateMachine(_Steps, CloudDeleteStateMachine):
    """Delete a node's floating IP, then its instance (the boot volume
    goes with it), both found by name.

    States: ``start`` -> ``finding fip`` [-> ``deleting fip`` ->
    ``waiting for fip``] -> ``finding vm`` [-> ``deleting vm`` ->
    ``waiting for vm``] -> ``complete``.
    """

    FINDING_FIP = "finding fip"
    DELETING_FIP = "deleting fip"
    WAITING_FIP = "waiting for fip"
    FINDING_VM = "finding vm"
    DELETING_VM = "deleting vm"
    WAITING_VM = "waiting for vm"

    def _advance(self):
        adapter = self.adapter
        name = self.external_id
        if self.state == self.START:
            self._since = time.monotonic()
            self.state = self.FINDING_FIP
        if self.state == self.FINDING_FIP:
            snapshot = self._fresh(adapter.fips)
            if snapshot is None:
                return
            record = snapshot.get(name)
            if record is None:
                self._since = time.monotonic()
                self.state = self.FINDING_VM
            else:
                self._submit(self.DELETING_FIP, adapter.delete_fip,
                             record["id"], self.log)
        if self.state == self.DELETING_FIP:
            if not self._future.done():
                return
            self._future.result()
            self.state = self.WAITING_FIP
        if self.state == self.WAITING_FIP:
            snapshot = self._fresh(adapter.fips)
            if snapshot is None or snapshot.get(name) is not None:
                return
            adapter.fips.unwatch(self)
            self._since = time.monotonic()
            self.state = self.FINDING_VM
        if self.state == self.FINDING_VM:
            snapshot = self._fresh(adapter.vms)
            if snapshot is None:
                return
            record = snapshot.get(name)
            if record is None:
                self.log.warning("Instance %s not found; nothing to delete",
                                 name)
                self._finish()
                return
            if record.get("status") == "deleting":
                self.state = self.WAITING_VM
            else:
                self._submit(self.DELETING_VM, adapter.delete_vm,
                             record["id"], self.log)
        if self.state == self.DELETING_VM:
            if not self._future.done():
                return
            self._future.result()
            self.state = self.WAITING_VM
        if self.state == self.WAITING_VM:
            snapshot = self._fresh(adapter.vms)
            if snapshot is None or snapshot.get(name) is not None:
                return
            self._finish()
