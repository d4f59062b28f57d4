# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The Azure instance record and the create and delete state machines.

A node is four kinds of ARM resource, all named after its hostname
(``np<node id>``): public IPs ``<host>-pip-v4`` / ``<host>-pip-v6``, the
NIC ``<host>-nic``, the VM ``<host>`` and its OS disk ``<host>-disk``.
The VM name is the node's external id, so a delete only needs that id to
find everything else, even for a launch that failed half way.

The machines never call Azure: PUTs and DELETEs run in the adapter's
worker threads and come back as futures; provisioning states come from the
adapter's shared listings (one list call per resource type for all
machines), read only when they started after the machine's own last call,
so a stale listing never speaks for a newer request.
"""

import time
from typing import Optional

from nodepool import exceptions
from nodepool.driver.azure import errors
from nodepool.driver.quota import QuotaInformation
from nodepool.driver.statemachine.adapter import Instance
from nodepool.driver.statemachine.cloud import (
    CloudCreateStateMachine, CloudDeleteStateMachine, CloudInstance)

IP_VERSIONS = ("v4", "v6")


def pip_name(hostname: str, version: str) -> str:
    return "%s-pip-%s" % (hostname, version)


def nic_name(hostname: str) -> str:
    return "%s-nic" % hostname


def disk_name(hostname: str) -> str:
    return "%s-disk" % hostname


def id_name(resource_id: Optional[str]) -> Optional[str]:
    """The last path segment (the name) of an ARM resource id."""
    if not resource_id:
        return None
    return resource_id.rstrip("/").rsplit("/", 1)[-1]


def as_dict(item) -> dict:
    """An SDK model (or anything mapping-like) as a plain wire-format dict."""
    if item is None:
        return {}
    to_dict = getattr(item, "as_dict", None)
    if to_dict is not None:
        return to_dict()
    return dict(item)


def provisioning_state(record: Optional[dict]) -> Optional[str]:
    if record is None:
        return None
    return (record.get("properties") or {}).get("provisioningState")


def nic_addresses(nic: Optional[dict]) -> dict:
    """``{"v4": [private...], "v6": [...], "pips": [public ip ids]}``."""
    found = {"v4": [], "v6": [], "pips": []}
    for config in ((nic or {}).get("properties") or {}).get(
            "ipConfigurations") or ():
        props = config.get("properties") or {}
        address = props.get("privateIPAddress")
        if address:
            version = ("v6" if props.get("privateIPAddressVersion") == "IPv6"
                       or ":" in address else "v4")
            found[version].append(address)
        pip = (props.get("publicIPAddress") or {}).get("id")
        if pip:
            found["pips"].append(pip)
    return found


class AzureInstance(CloudInstance):
    """A VM from a listing record, with its NIC and public IP records when
    known (they hold the addresses).

    ``quota_loader(vm_size, spot)`` gives its :class:`QuotaInformation`.
    """

    def __init__(self, vm: dict, nic: Optional[dict] = None,
                 pips: tuple = (), quota_loader=None):
        super().__init__(vm, quota_loader)
        props = vm.get("properties") or {}
        self.external_id = vm["name"]
        self.metadata = dict(vm.get("tags") or {})
        state = props.get("provisioningState")
        self.ready = state == "Succeeded"
        self.deleted = state == "Deleting"
        addresses = nic_addresses(nic)
        self.private_ipv4 = (addresses["v4"] or [None])[0]
        self.private_ipv6 = (addresses["v6"] or [None])[0]
        for pip in pips:
            pip_props = pip.get("properties") or {}
            address = pip_props.get("ipAddress")
            if not address:
                continue
            if pip_props.get("publicIPAddressVersion") == "IPv6" or \
                    ":" in address:
                self.public_ipv6 = self.public_ipv6 or address
            else:
                self.public_ipv4 = self.public_ipv4 or address
        # The launcher picks the private address for use-internal-ip.
        self.interface_ip = (self.public_ipv4 or self.public_ipv6
                             or self.private_ipv4 or self.private_ipv6)
        self.cloud = "Azure"
        self.region = vm.get("location")
        zones = vm.get("zones") or ()
        self.az = zones[0] if zones else None
        self.host_id = id_name((props.get("host") or {}).get("id"))
        self.vm_size = (props.get("hardwareProfile") or {}).get("vmSize")
        self.spot = props.get("priority") == "Spot"
        self.node_properties = {"spot": self.spot}

    def get_quota_information(self) -> QuotaInformation:
        if self._quota_loader is None or not self.vm_size:
            return QuotaInformation(instances=1)
        return self._quota_loader(self.vm_size, self.spot)


class _Steps:
    """Azure's steps on top of :class:`CloudStateMachine`: futures from the
    adapter's workers, fresh reads of the shared listings."""

    # Listings must have started after this to be believed.
    _since = -float("inf")

    def _submit(self, state: str, func, *args) -> None:
        self._since = time.monotonic()
        self._future = self.adapter.submit(func, *args)
        self.state = state

    def _result(self):
        """The finished future's result (raises its error); None while it
        runs (check ``self._future.done()`` first)."""
        return self._future.result()

    def _fresh(self, listing, after: Optional[float] = None):
        """The listing's snapshot if it started after our last call (or
        ``after``), else None; keeps the listing busy for us meanwhile."""
        listing.watch(self)
        snapshot = listing.snapshot()
        if snapshot.started < (self._since if after is None else after):
            return None
        return snapshot

    def _finish(self) -> None:
        self._unwatch()
        self._complete()


class AzureCreateStateMachine(_Steps, CloudCreateStateMachine):
    """Create the public IPs, the NIC and the VM of one node.

    States: ``start`` -> [``creating public ips`` -> ``waiting for public
    ips``] -> ``creating nic`` -> ``waiting for nic`` -> ``creating vm`` ->
    ``waiting for vm`` [-> ``querying failure``] -> ``complete``.
    """

    CREATING_PIPS = "creating public ips"
    WAITING_PIPS = "waiting for public ips"
    CREATING_NIC = "creating nic"
    WAITING_NIC = "waiting for nic"
    CREATING_VM = "creating vm"
    WAITING_VM = "waiting for vm"
    QUERYING_FAILURE = "querying failure"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.versions = [v for v, on in (("v4", self.pool.public_ipv4),
                                         ("v6", self.pool.public_ipv6))
                         if on]
        self.pip_ids: dict = {}
        self.nic_id: Optional[str] = None

    def _advance(self) -> Optional[Instance]:
        adapter = self.adapter
        if self.state == self.START:
            # Recorded before anything exists: a failure from here on is
            # cleaned up by deleting whatever carries these names.
            self.external_id = self.hostname
            if self.versions:
                self._submit(self.CREATING_PIPS, adapter.create_public_ips,
                             self)
            else:
                self._submit(self.CREATING_NIC, adapter.create_nic, self)
        if self.state == self.CREATING_PIPS:
            if not self._future.done():
                return None
            self.pip_ids = self._result()
            self.state = self.WAITING_PIPS
        if self.state == self.WAITING_PIPS:
            snapshot = self._fresh(adapter.pips)
            if snapshot is None:
                return None
            for version in self.versions:
                name = pip_name(self.hostname, version)
                if not self._provisioned(snapshot.get(name.lower()),
                                         "Public IP %s" % name):
                    return None
            adapter.pips.unwatch(self)
            self._submit(self.CREATING_NIC, adapter.create_nic, self)
        if self.state == self.CREATING_NIC:
            if not self._future.done():
                return None
            self.nic_id = self._result()
            self.state = self.WAITING_NIC
        if self.state == self.WAITING_NIC:
            snapshot = self._fresh(adapter.nics)
            if snapshot is None:
                return None
            name = nic_name(self.hostname)
            if not self._provisioned(snapshot.get(name.lower()),
                                     "NIC %s" % name):
                return None
            adapter.nics.unwatch(self)
            self._submit(self.CREATING_VM, adapter.create_vm, self)
        if self.state == self.CREATING_VM:
            if not self._future.done():
                return None
            self._result()
            self.state = self.WAITING_VM
        if self.state == self.WAITING_VM:
            return self._check_vm()
        if self.state == self.QUERYING_FAILURE:
            if not self._future.done():
                return None
            raise errors.provisioning_failure(
                "VM %s of node %s" % (self.hostname, self.node_id),
                self._result())
        return None

    def _provisioned(self, record: Optional[dict], what: str) -> bool:
        state = provisioning_state(record)
        if state == "Failed":
            raise exceptions.LaunchStatusException(
                "%s of node %s failed to provision" % (what, self.node_id))
        return state == "Succeeded"

    def _check_vm(self) -> Optional[Instance]:
        adapter = self.adapter
        snapshot = self._fresh(adapter.vms)
        if snapshot is None:
            return None
        record = snapshot.get(self.hostname.lower())
        state = provisioning_state(record)
        if state == "Failed":
            self._unwatch()
            self._submit(self.QUERYING_FAILURE, adapter.vm_statuses,
                         self.hostname)
            return None
        if state != "Succeeded":
            return None
        # The NIC and public IP records are older than the VM; their
        # addresses were assigned when they were provisioned.
        nic = adapter.nics.snapshot().get(nic_name(self.hostname).lower())
        pips = [adapter.pips.snapshot().get(
            pip_name(self.hostname, v).lower()) for v in self.versions]
        if nic is None or any(p is None for p in pips):
            # Not in the latest listings (a failed list call?): ask again.
            adapter.nics.watch(self)
            adapter.pips.watch(self)
            return None
        self._finish()
        self.log.debug("VM %s of node %s is ready", self.hostname,
                       self.node_id)
        return adapter.make_instance(record, nic, pips)


class AzureDeleteStateMachine(_Steps, CloudDeleteStateMachine):
    """Delete a node's VM, then its NIC and OS disk, then its public IPs.

    Everything is found by name from the external id (the VM name), plus
    whatever the VM and NIC records reference; public IPs are only deleted
    when referenced or listed.  NotFound counts as deleted.

    States: ``start`` -> ``deleting vm`` -> ``waiting for vm`` ->
    ``deleting nic`` -> ``waiting for nic`` -> ``deleting public ips`` ->
    ``complete``.
    """

    DELETING_VM = "deleting vm"
    WAITING_VM = "waiting for vm"
    DELETING_NIC = "deleting nic"
    WAITING_NIC = "waiting for nic"
    DELETING_PIPS = "deleting public ips"

    def __init__(self, adapter, external_id, log):
        if isinstance(external_id, dict):
            external_id = external_id.get("vm") or external_id.get("name")
        super().__init__(adapter, external_id, log)
        self.hostname = id_name(str(external_id))
        self.disks = {disk_name(self.hostname)}
        self.nics = {nic_name(self.hostname)}
        self.pips = {pip_name(self.hostname, v) for v in IP_VERSIONS}
        self.referenced_pips: set = set()
        self._vm_gone_at = None

    def _advance(self) -> None:
        adapter = self.adapter
        if self.state == self.START:
            self._note_vm(adapter.vms.snapshot().get(self.hostname.lower()))
            self._submit(self.DELETING_VM, adapter.delete_resources,
                         [("virtualMachines", self.hostname)])
        if self.state == self.DELETING_VM:
            if not self._future.done():
                return
            self._result()
            self.state = self.WAITING_VM
        if self.state == self.WAITING_VM:
            snapshot = self._fresh(adapter.vms)
            if snapshot is None:
                return
            record = snapshot.get(self.hostname.lower())
            if record is not None:
                self._note_vm(record)
                return
            self._vm_gone_at = snapshot.started
            adapter.vms.unwatch(self)
            for nic in self.nics:
                self._note_nic(adapter.nics.snapshot().get(nic.lower()))
            targets = [("networkInterfaces", n) for n in sorted(self.nics)]
            targets += [("disks", d) for d in sorted(self.disks)]
            self._submit(self.DELETING_NIC, adapter.delete_resources,
                         targets)
        if self.state == self.DELETING_NIC:
            if not self._future.done():
                return
            self._result()
            self.state = self.WAITING_NIC
        if self.state == self.WAITING_NIC:
            snapshot = self._fresh(adapter.nics)
            # Public IPs are made before the NIC: a listing from after
            # the VM was gone shows all there are.
            pips = self._fresh(adapter.pips, after=self._vm_gone_at)
            if snapshot is None or pips is None:
                return
            for nic in self.nics:
                if snapshot.get(nic.lower()) is not None:
                    return
            names = set(self.referenced_pips)
            names.update(n for n in self.pips if pips.get(n.lower()))
            if not names:
                self._finish()
                return
            self._submit(self.DELETING_PIPS, adapter.delete_resources,
                         [("publicIPAddresses", p) for p in sorted(names)])
        if self.state == self.DELETING_PIPS:
            if not self._future.done():
                return
            self._result()
            self._finish()

    def _note_vm(self, record: Optional[dict]) -> None:
        """Remember the disk and NICs a VM record points at."""
        if record is None:
            return
        props = record.get("properties") or {}
        os_disk = (props.get("storageProfile") or {}).get("osDisk") or {}
        name = id_name((os_disk.get("managedDisk") or {}).get("id")) or \
            os_disk.get("name")
        if name:
            self.disks.add(name)
        for ref in (props.get("networkProfile") or {}).get(
                "networkInterfaces") or ():
            name = id_name(ref.get("id"))
            if name:
                self.nics.add(name)

    def _note_nic(self, record: Optional[dict]) -> None:
        for pip in nic_addresses(record)["pips"]:
            self.referenced_pips.add(id_name(pip))
