# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The static driver's adapter: there is no cloud behind it.

Static hosts are never created or destroyed by nodepool.  The adapter
exists so that the shared deleter can retire a node record the same way
for every driver: its delete state machine is finished before the first
``advance()``.
"""

from typing import Iterable

from nodepool.driver.quota import QuotaInformation
from nodepool.driver.statemachine.adapter import (
    Adapter, Instance, StateMachine)


class ReleaseStateMachine(StateMachine):
    """Deleting a static node's "instance" means nothing: done at once."""

    def __init__(self, external_id):
        super().__init__()
        self.external_id = external_id
        self.state = self.COMPLETE
        self.complete = True

    def advance(self):
        return None


class StaticAdapter(Adapter):
    """Adapter of a ``driver: static`` provider.

    Every node is one slot of a configured host and counts as one
    instance; nothing is ever listed as a cloud instance or resource, so
    unmanaged-quota and leak accounting find nothing to do.
    """

    def get_create_state_machine(self, hostname, label, image_external_id,
                                 metadata, request, az, log):
        # The request handler never launches for a provider whose
        # ``launches_nodes`` is False; reaching this is a framework bug.
        raise NotImplementedError("static hosts cannot be launched")

    def get_delete_state_machine(self, external_id, log) -> StateMachine:
        return ReleaseStateMachine(external_id)

    def list_instances(self) -> Iterable[Instance]:
        return []

    def get_quota_for_label(self, label) -> QuotaInformation:
        return QuotaInformation(instances=1)
