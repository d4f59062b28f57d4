# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The static provider: the launcher's runtime for pre-existing hosts.

It plugs into the same framework as the cloud drivers.  Requests are served
from the ``ready`` nodes the :class:`~nodepool.driver.static.registrar.
Registrar` keeps registered; nothing is ever launched.  Used nodes are
removed by the shared deleter (their delete state machine finishes at
once) and :meth:`StaticProvider.node_deleted` has the slot re-checked and
registered again.

Waiting is per label: a request whose labels have no free node is left
alone (``label_available``), and one that still finds no free node is
released without being declined (``launches_nodes = False``), so a busy
host never pauses the pool for requests of other labels.  Only a request
that asks for more nodes than the pool has slots is declined
(:meth:`StaticQuota.has_provider_quota`).
"""

import collections
import itertools
from typing import Iterable, Optional

from nodepool.driver.statemachine.provider import StateMachineProvider
from nodepool.driver.statemachine.quota import ProviderQuota
from nodepool.driver.static.registrar import (
    Registrar, free_nodes_of, node_identity, shared_book)
from nodepool.zk.models import RequestState

# Above this many distinct labels in one request the exact slot check
# (which looks at every subset of the labels) falls back to per label.
_EXACT_CHECK_LABELS = 10

# Registrar cadences in multiples of the provider's ``interval`` (1 s in
# production): retry a failing host every 10 s, re-check every host and
# reconcile every record once a minute.
RETRY_FACTOR = 10
SYNC_FACTOR = 60


def fits(wanted: collections.Counter, offers: Iterable[tuple]) -> bool:
    """Whether ``wanted`` (label -> count) fits into ``offers`` at once.

    An offer is ``(labels, slots)``: that many nodes of any of the labels.
    This is a matching problem; by Hall's theorem it is solvable exactly
    when no set of wanted labels needs more nodes than the offers carrying
    any of them hold.
    """
    offers = [(frozenset(labels), slots) for labels, slots in offers]
    names = sorted(wanted)
    sizes = range(1, len(names) + 1)
    if len(names) > _EXACT_CHECK_LABELS:
        sizes = range(1, 2)
    for size in sizes:
        for subset in itertools.combinations(names, size):
            demand = sum(wanted[name] for name in subset)
            supply = sum(slots for labels, slots in offers
                         if not labels.isdisjoint(subset))
            if demand > supply:
                return False
    return True


def slots_suffice(wanted: collections.Counter, hosts: Iterable) -> bool:
    """Whether configured hosts could hold ``wanted`` all at once (each
    offers ``max_parallel_jobs`` slots to any of its labels; a host listed
    twice counts once)."""
    unique = {}
    for host in hosts:
        unique.setdefault(host.identity, host)
    return fits(wanted, ((h.labels, max(0, h.max_parallel_jobs))
                         for h in unique.values()))


class StaticQuota(ProviderQuota):
    """Quota of a static provider: a pool's slots are its hosts'
    ``max-parallel-jobs``, and no room is ever made by launching."""

    def has_provider_quota(self, labels, pool) -> bool:
        """False when the pool has fewer slots than the request needs."""
        return slots_suffice(collections.Counter(labels), pool.nodes)

    def has_remaining_quota(self, label_name: str, pool) -> bool:
        return False  # nothing can be launched

    def reserve(self, label_name: str, pool):
        return None


class StaticProvider(StateMachineProvider):
    """Runtime of one ``driver: static`` provider.

    :param retry_interval: how soon a host that failed its check is
        checked again (default ``RETRY_FACTOR * interval``).
    :param sync_interval: period of the full reconciliation, which also
        re-checks every host (default ``SYNC_FACTOR * interval``).
    """

    launches_nodes = False
    quota_class = StaticQuota

    def __init__(self, config, adapter, services, interval: float = 1.0,
                 retry_interval: Optional[float] = None,
                 sync_interval: Optional[float] = None):
        super().__init__(config, adapter, services, interval=interval)
        self.registrar = Registrar(
            self, poll=min(interval, 0.1),
            retry_interval=(retry_interval if retry_interval is not None
                            else RETRY_FACTOR * interval),
            sync_interval=(sync_interval if sync_interval is not None
                           else SYNC_FACTOR * interval))

    # Life cycle ---------------------------------------------------------

    def start(self) -> None:
        # Nothing is ever created: only the delete runner is needed.
        self.delete_runner.start()
        self.registrar.start()

    def stop(self) -> None:
        self.registrar.stop()
        super().stop()

    def join(self, timeout=None) -> None:
        super().join(timeout)
        self.registrar.join(timeout)

    def wake_pool_workers(self) -> None:
        """Nodes were registered: let the pool workers look at once."""
        # The pool workers' launch listeners only wake them up.
        for listener in list(self._launch_listeners):
            try:
                listener(None)
            except Exception:
                self.log.exception("Waking a pool worker failed")

    # Nodes coming back ----------------------------------------------------

    def node_deleted(self, node) -> None:
        """A used (or deregistered) node's record is gone: refill its slot.

        Called from the delete runner, so it only hands the host to the
        registrar.  After a reconfiguration the old provider's deleter
        may still finish work; the host then goes to the newest
        provider's registrar, which knows the current config.
        """
        registrar = shared_book(self.services, self.name).current \
            or self.registrar
        registrar.host_freed(node_identity(node))

    # Request decisions ----------------------------------------------------

    def label_available(self, label_name: str,
                        count: Optional[int] = None) -> bool:
        """Whether a request wanting the label should be taken now.

        The pool worker asks per label, not per request; taking a request
        that then cannot be filled only to release it again would repeat
        on every pass.  So without ``count`` the label counts as available
        only if some waiting request that wants it could be filled from
        the free nodes right now, or could never be filled by this
        provider's slots (it must be taken to be declined).
        """
        free_nodes = free_nodes_of(self.services.node_cache.values(),
                                   self.name)
        free = collections.Counter(
            label for node in free_nodes for label in node.type)
        if count is not None:
            return free[label_name] >= count
        request_cache = getattr(self.services, "request_cache", None)
        if request_cache is None:
            return free[label_name] > 0
        offers = [(node.type, 1) for node in free_nodes]
        for request in request_cache.values():
            if (request.state != RequestState.REQUESTED
                    or label_name not in request.node_types):
                continue
            wanted = collections.Counter(request.node_types)
            if free[label_name] and fits(wanted, offers):
                return True
            if not any(slots_suffice(wanted, pool.nodes)
                       for pool in self.config.pools.values()):
                return True
        return False

    def cleanup_leaked_resources(self, known_node_ids: set,
                                 known_uploads: set) -> int:
        return 0  # static hosts cannot leak
