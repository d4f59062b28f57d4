# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The OpenStack server record and the create and delete state machines.

The machines never call the cloud themselves.  Server creates, floating
IP work and deletes run in the adapter's API thread pool and come back as
futures; server states are read from the adapter's shared server listing
(one ``GET /servers/detail`` for every machine of the provider).
``advance()`` therefore only looks at futures and snapshots.
"""

import ipaddress
import time
from typing import Optional

from nodepool import exceptions
from nodepool.driver.errors import CloudApiError
from nodepool.driver.listing import LostCreateSearch
from nodepool.driver.openstack.errors import (
    NoValidHost, is_capacity_fault, is_quota_message)
from nodepool.driver.statemachine.adapter import Instance
from nodepool.driver.statemachine.cloud import (
    CloudCreateStateMachine, CloudDeleteStateMachine, CloudInstance)

#: A new server missing from this many fresh listings is gone.
VANISHED_LISTINGS = 3
#: Server states after which a server will never become ACTIVE.
DEAD_STATES = frozenset(("ERROR", "DELETED", "SOFT_DELETED", "SHELVED",
                         "SHELVED_OFFLOADED", "SHUTOFF"))


def server_addresses(addresses: dict, external_networks=()) -> dict:
    """``public_ipv4``, ``private_ipv4``, ``public_ipv6``, ``private_ipv6``
    and whether the server has a floating IP, from Nova's ``addresses``.

    A v4 address is public when it is floating, on an external network or
    outside the private ranges; v6 addresses (other than link-local) are
    public, as openstacksdk counts them.  ``private_ipv4`` falls back to
    the public v4 address.
    """
    public4 = private4 = public6 = private6 = None
    floating = False
    for network, entries in sorted((addresses or {}).items()):
        for entry in entries or ():
            addr = entry.get("addr")
            if not addr:
                continue
            kind = entry.get("OS-EXT-IPS:type")
            try:
                ip = ipaddress.ip_address(addr)
            except ValueError:
                continue
            if ip.version == 6:
                if ip.is_link_local:
                    continue
                public6 = public6 or addr
                continue
            if kind == "floating":
                floating = True
                public4 = addr
            elif network in external_networks or not ip.is_private:
                public4 = public4 or addr
            else:
                private4 = private4 or addr
    return {"public_ipv4": public4, "private_ipv4": private4 or public4,
            "public_ipv6": public6, "private_ipv6": private6,
            "floating": floating}


class OpenStackInstance(CloudInstance):
    """A Nova server from a listing record (see
    :meth:`OpenStackAdapter.server_record`).

    ``quota_loader(record)`` gives its :class:`QuotaInformation` (a cached
    flavor lookup).
    """

    def __init__(self, record: dict, cloud: str, region: Optional[str],
                 quota_loader=None):
        super().__init__(record, quota_loader)
        self.external_id = record["id"]
        self.metadata = dict(record.get("metadata") or {})
        status = record.get("status")
        self.ready = status == "ACTIVE"
        self.deleted = status in ("DELETED", "SOFT_DELETED")
        ips = record.get("ips") or {}
        self.public_ipv4 = ips.get("public_ipv4")
        self.private_ipv4 = ips.get("private_ipv4")
        self.public_ipv6 = ips.get("public_ipv6")
        self.private_ipv6 = ips.get("private_ipv6")
        self.interface_ip = (self.public_ipv4 or self.public_ipv6
                             or self.private_ipv4)
        self.az = record.get("az")
        self.host_id = record.get("host_id")
        self.cloud = cloud
        self.region = region


class OpenStackCreateStateMachine(CloudCreateStateMachine):
    """Create one server, and attach a floating IP when it needs one.

    States: ``start`` -> ``submit creating server`` -> [``finding lost
    server``] -> ``creating server`` -> [``creating floating ip`` ->
    ``attaching floating ip``] -> ``complete``.

    When the create failed in a way that leaves open whether Nova made
    the server (a 5xx, a dropped connection, a timeout), the machine looks
    for a server with the node's name and node id before it fails: one
    that is found is the node's server.
    """

    SUBMIT_CREATING = "submit creating server"
    FINDING_LOST = "finding lost server"
    CREATING = "creating server"
    CREATING_FIP = "creating floating ip"
    ATTACHING_FIP = "attaching floating ip"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.server_id: Optional[str] = None
        self.floating_ip: Optional[str] = None
        self._since = None
        self._missing_in: set = set()
        self._lost: Optional[LostCreateSearch] = None

    def _advance(self) -> Optional[Instance]:
        if self.state == self.START:
            self._future = self.adapter.submit(self.adapter.create_server,
                                               self)
            self.state = self.SUBMIT_CREATING
        if self.state == self.SUBMIT_CREATING:
            if not self._future.done():
                return None
            try:
                server_id = self._future.result()
            except CloudApiError as e:
                if not e.outcome_unknown:
                    raise
                self.log.warning("Server of node %s may have been made: "
                                 "looking for %s", self.node_id,
                                 self.hostname)
                self._lost = LostCreateSearch(self.adapter.servers,
                                              self._made_by_us, e)
                self.state = self.FINDING_LOST
            else:
                self._created(server_id, self._future.listed_after)
        if self.state == self.FINDING_LOST:
            found = self._lost.find(self)
            if found is None:
                return None
            self.log.warning("Found server %s of node %s whose create "
                             "answer was lost", found[0], self.node_id)
            self._created(found[0], self._lost.since)
        if self.state == self.CREATING:
            record = self._record()
            if record is None:
                return None
            status = record.get("status")
            if status == "ACTIVE":
                if not self.adapter.needs_floating_ip(self.pool, record):
                    return self._finish(record)
                self._future = self.adapter.submit(
                    self.adapter.create_floating_ip, self)
                self.state = self.CREATING_FIP
            elif status in DEAD_STATES:
                fault = (record.get("fault") or {}).get("message") or ""
                message = "Server %s of node %s is %s: %s" % (
                    self.server_id, self.node_id, status, fault)
                if is_quota_message(fault):
                    self.adapter.invalidate_limits()
                    raise exceptions.QuotaException(message)
                if is_capacity_fault(fault):
                    raise NoValidHost(message)
                raise exceptions.LaunchStatusException(message)
            else:
                return None
        if self.state == self.CREATING_FIP:
            if not self._future.done():
                return None
            self.floating_ip = self._future.result()
            self._since = self._future.listed_after
            self.state = self.ATTACHING_FIP
        if self.state == self.ATTACHING_FIP:
            record = self._record()
            if record is None:
                return None
            ips = record.get("ips") or {}
            if ips.get("public_ipv4") != self.floating_ip:
                return None
            return self._finish(record)
        return None

    def _created(self, server_id: str, since: float) -> None:
        self.server_id = server_id
        self.external_id = server_id
        self._since = since
        self.state = self.CREATING

    def _made_by_us(self, record: dict) -> bool:
        """Whether a listed server is the one our create made: it has the
        node's name and id (a server of an earlier attempt was deleted
        before this attempt began)."""
        return (record.get("name") == self.hostname
                and (record.get("metadata") or {}).get(
                    "nodepool_node_id") == self.node_id
                and record.get("status") not in ("DELETED", "SOFT_DELETED"))

    def _record(self) -> Optional[dict]:
        """The server in a listing newer than our last change, or None.

        Nova lists a server as soon as the create returned; one missing
        from several such listings was deleted behind our back.
        """
        servers = self.adapter.servers
        servers.watch(self)
        snapshot = servers.snapshot()
        if snapshot.started < self._since:
            return None
        record = snapshot.get(self.server_id)
        if record is None:
            self._missing_in.add(snapshot.started)
            if len(self._missing_in) >= VANISHED_LISTINGS:
                raise exceptions.LaunchStatusException(
                    "Server %s of node %s disappeared" % (self.server_id,
                                                          self.node_id))
        return record

    def _finish(self, record: dict) -> Instance:
        self.adapter.servers.unwatch(self)
        self._complete()
        self.log.debug("Server %s of node %s is active", self.server_id,
                       self.node_id)
        return self.adapter.make_instance(record)


class OpenStackDeleteStateMachine(CloudDeleteStateMachine):
    """Delete a server's floating IPs, then the server.

    States: ``start`` (until a fresh listing shows whether the server
    has floating IPs) -> [``deleting floating ip``] -> ``submit delete
    server`` -> ``deleting server`` (until no longer listed, or listed as
    DELETED) -> ``complete``.  A server that is already gone completes the
    machine.  Floating IPs of a server that is not listed are left to the
    ``clean-floating-ips`` cleanup.
    """

    DELETING_FIP = "deleting floating ip"
    SUBMIT_DELETE = "submit delete server"
    DELETING = "deleting server"

    def __init__(self, adapter, external_id, log, clock=time.monotonic):
        super().__init__(adapter, external_id, log)
        self._clock = clock
        self._since = None

    def _advance(self) -> None:
        if self.state == self.START:
            # Whether the server has floating IPs to delete first comes
            # from a listing that began after this machine did.
            servers = self.adapter.servers
            if self._since is None:
                self._since = self._clock()
                servers.request_refresh(self._since)
            servers.watch(self)
            snapshot = servers.snapshot()
            if snapshot.started < self._since:
                return
            record = snapshot.get(self.external_id)
            if record is not None and (record.get("ips") or {}).get(
                    "floating"):
                self._future = self.adapter.submit(
                    self.adapter.delete_server_floating_ips,
                    self.external_id, self.log)
                self.state = self.DELETING_FIP
            else:
                self._submit_delete()
        if self.state == self.DELETING_FIP:
            if not self._future.done():
                return
            self._future.result()
            self._submit_delete()
        if self.state == self.SUBMIT_DELETE:
            if not self._future.done():
                return
            try:
                self._future.result()
            except exceptions.NotFound:
                self.log.info("Server %s is already gone", self.external_id)
                self._complete()
                return
            self._since = self._future.listed_after
            self.state = self.DELETING
        if self.state == self.DELETING:
            servers = self.adapter.servers
            servers.watch(self)
            snapshot = servers.snapshot()
            if snapshot.started < self._since:
                return
            record = snapshot.get(self.external_id)
            if record is not None and record.get("status") not in (
                    "DELETED", "SOFT_DELETED"):
                return
            servers.unwatch(self)
            self._complete()

    def _submit_delete(self) -> None:
        self._future = self.adapter.submit(self.adapter.delete_server,
                                           self.external_id, self.log)
        self.state = self.SUBMIT_DELETE
