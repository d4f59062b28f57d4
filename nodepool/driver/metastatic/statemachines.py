# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""State machines and the instance of the metastatic driver.

A requested node's "instance" is a slot on a backing node.  Creating it
means finding a slot (perhaps on a backing node still being requested),
waiting for the backing node, and copying its connection details; deleting
it means freeing the slot.  Neither ever talks to a cloud: every step
asks the adapter, which keeps the bookkeeping.
"""

from nodepool.driver.metastatic.slots import slot_driver_data
from nodepool.driver.quota import QuotaInformation
from nodepool.driver.statemachine.adapter import Instance, StateMachine

# Node fields copied from the backing node onto each of its slots' nodes.
COPIED_FIELDS = ("interface_ip", "public_ipv4", "public_ipv6",
                 "private_ipv4", "az", "region", "cloud", "username",
                 "python_path", "shell_type", "connection_port",
                 "connection_type")


class MetastaticInstance(Instance):
    """Slot ``slot`` of the backing node ``backing`` (a
    :class:`~nodepool.zk.models.Node`) given to node ``node_id``.

    Its attributes are the backing node's overlaid by the pool's
    ``node-attributes`` (top-level keys; the pool wins).
    """

    def __init__(self, node_id, backing, slot, metadata, pool_attributes):
        super().__init__()
        self.external_id = node_id
        self.metadata = dict(metadata)
        self.ready = True
        self.slot = slot
        self.driver_data = slot_driver_data(metadata, backing.id, slot,
                                            node_id)
        for name in COPIED_FIELDS:
            setattr(self, name, getattr(backing, name))
        self.host_keys = list(backing.host_keys or [])
        attributes = dict(backing.attributes or {})
        attributes.update(pool_attributes or {})
        self.attributes = attributes or None

    def get_quota_information(self) -> QuotaInformation:
        # A slot costs the pool one node and nothing else: the backing
        # node is counted by its own provider.
        return QuotaInformation(cores=0, instances=1, ram=0)


class MetastaticCreateStateMachine(StateMachine):
    """Find a slot, wait for its backing node, describe the slot.

    Every step returns at once.  Until the adapter has rebuilt its
    bookkeeping after a start, the machine waits.
    """

    REQUESTING = "requesting"

    def __init__(self, adapter, label, node_id, metadata, log):
        super().__init__()
        self.adapter = adapter
        self.label = label
        self.node_id = node_id
        self.metadata = metadata
        self.log = log

    def advance(self):
        if not self.adapter.ready():
            return None
        if self.state == self.START:
            self.adapter.allocate(self.label, self.node_id, self.log)
            # The slot is ours from now on; a failed attempt frees it
            # through the delete machine of this id.
            self.external_id = self.node_id
            self.state = self.REQUESTING
        if self.state == self.REQUESTING:
            if self.adapter.backing_node_of(self.node_id, self.log) is None:
                return None
            self.state = self.COMPLETE
        instance = self.adapter.describe(self.node_id, self.metadata)
        self.complete = True
        return instance


class MetastaticDeleteStateMachine(StateMachine):
    """Free the node's slot (once the bookkeeping is rebuilt)."""

    def __init__(self, adapter, node_id, log):
        super().__init__()
        self.adapter = adapter
        self.external_id = node_id
        self.log = log

    def advance(self):
        if not self.adapter.ready():
            return None
        self.adapter.free(self.external_id, self.log)
        self.state = self.COMPLETE
        self.complete = True
        return None
