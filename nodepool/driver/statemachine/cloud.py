# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Shared pieces of the cloud drivers (AWS, OpenStack, Azure).

The cloud drivers work alike: the adapter runs slow API calls in its own
worker threads and reads resource states from shared listings
(:class:`nodepool.driver.listing.SharedListing`); the state machines only
look at futures and listing snapshots.  What that takes in every driver
lives here:

* :class:`CloudStateMachine`, :class:`CloudCreateStateMachine` and
  :class:`CloudDeleteStateMachine`: the fields of a node operation, the
  node and request ids for log messages, and the rule that a machine that
  fails stops watching the adapter's listings.

The cloud-specific steps stay in the drivers.
"""

from typing import Optional

from nodepool.driver.statemachine.adapter import StateMachine


class CloudStateMachine(StateMachine):
    """A create or delete machine of a cloud adapter.

    Subclasses implement :meth:`_advance`; :meth:`advance` stops watching
    the adapter's listings (``adapter.listings()``) when it raises, so a
    failed machine does not keep a listing polling.
    """

    def __init__(self, adapter, log):
        super().__init__()
        self.adapter = adapter
        self.log = log
        # The adapter's worker future the machine waits on, if any.
        self._future = None

    def advance(self):
        try:
            return self._advance()
        except Exception:
            self._unwatch()
            raise

    def _advance(self):
        raise NotImplementedError

    def _unwatch(self) -> None:
        for listing in self.adapter.listings():
            listing.unwatch(self)

    def _complete(self) -> None:
        self.state = self.COMPLETE
        self.complete = True


class CloudCreateStateMachine(CloudStateMachine):
    """Create one node's instance: the arguments of
    :meth:`Adapter.get_create_state_machine` plus the label's ``pool``."""

    def __init__(self, adapter, hostname: str, label, pool,
                 image_external_id: Optional[str], metadata: dict, request,
                 az: Optional[str], log):
        super().__init__(adapter, log)
        self.hostname = hostname
        self.label = label
        self.pool = pool
        self.image_external_id = image_external_id
        self.metadata = dict(metadata)
        self.request = request
        self.az = az

    @property
    def node_id(self):
        return self.metadata.get("nodepool_node_id")

    @property
    def request_id(self):
        return getattr(self.request, "id", None)


class CloudDeleteStateMachine(CloudStateMachine):
    """Delete one node's instance (and what belongs to it)."""

    def __init__(self, adapter, external_id, log):
        super().__init__(adapter, log)
        self.external_id = external_id
