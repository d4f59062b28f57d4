# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Azure leak cleanup: resources of the resource group that carry
nodepool's tags but belong to no node or upload.

:class:`AzureCleanupMixin` is part of
:class:`~nodepool.driver.azure.adapter.AzureAdapter`; it uses the
adapter's clients, ``list_all``, ``delete_one`` and delete state machine.
"""

import time

from nodepool import exceptions
from nodepool.driver.statemachine.adapter import Resource

DELETE_RESOURCE_TIMEOUT = 600.0


def provisioning_deleting(record: dict) -> bool:
    return (record.get("properties") or {}).get(
        "provisioningState") == "Deleting"


class AzureCleanupMixin:
    """Finding and deleting leaked resources."""

    # Resource type for each ARM type; VMs keep upstream's metric name
    # (``leaked.INSTANCEs``).
    LEAK_TYPES = (
        ("INSTANCE", "virtualMachines"),
        ("nic", "networkInterfaces"),
        ("pip", "publicIPAddresses"),
        ("disk", "disks"),
        ("image", "images"),
    )

    def _list_kind(self, kind: str) -> list:
        func = {
            "virtualMachines": self.compute.virtual_machines.list,
            "networkInterfaces": self.network.network_interfaces.list,
            "publicIPAddresses": self.network.public_ip_addresses.list,
            "disks": self.compute.disks.list_by_resource_group,
            "images": self.compute.images.list_by_resource_group,
        }[kind]
        return self.list_all(kind, func, self.resource_group)

    def list_resources(self):
        resources = []
        for rtype, kind in self.LEAK_TYPES:
            for record in self._list_kind(kind):
                if provisioning_deleting(record):
                    continue
                resources.append(Resource(dict(record.get("tags") or {}),
                                          rtype, record["name"]))
        return resources

    def delete_resource(self, resource):
        kind = dict(self.LEAK_TYPES)[resource.type]
        if kind != "virtualMachines":
            self.delete_one(kind, resource.id)
            return
        # A VM takes its NIC, disk and public IPs with it: drive the
        # node delete machine here (the cleanup thread may block).
        sm = self.get_delete_state_machine(resource.id, self.log)
        deadline = time.monotonic() + DELETE_RESOURCE_TIMEOUT
        while not sm.complete:
            if time.monotonic() > deadline:
                raise exceptions.ServerDeleteTimeoutException(
                    "Timeout deleting leaked VM %s" % resource.id)
            sm.advance()
            if not sm.complete:
                time.sleep(0.1)
