# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Quota bookkeeping of one provider: its cloud limits, what its nodes and
launches in flight use, and the count of requests its pools handle
(``max-concurrency``)."""

import logging
import threading
from typing import Optional

import cachetools

from nodepool import exceptions
from nodepool.driver.quota import QuotaInformation, limit_name, pool_limits

PROVIDER_QUOTA_TTL = 300.0


class ProviderQuota:
    """Decides whether a provider has room for more nodes.

    :param config: the provider's config (``name``, ``pools``,
        ``max_concurrency``).
    :param adapter: the driver's adapter (``get_quota_limits``,
        ``get_quota_for_label``, ``list_instances``).
    :param node_cache: the launcher's node cache (``usage()``, ``ids()``);
        may be None where nothing asks about usage (the CLI's deletes).

    Thread-safe: pool workers, request handlers and the runners call it
    from their own threads.
    """

    def __init__(self, config, adapter, node_cache,
                 log: Optional[logging.Logger] = None):
        self.config = config
        self.name = config.name
        self.adapter = adapter
        self.node_cache = node_cache
        self.log = log or logging.getLogger(
            "nodepool.driver.%s.quota" % self.name)
        #: Labels whose resources the cloud cannot tell (bad flavor and
        #: the like); requests for them are declined.
        self.error_labels: set = set()
        self._limits_cache = cachetools.TTLCache(1, PROVIDER_QUOTA_TTL)
        self._limits_lock = threading.Lock()
        self._label_quota: dict = {}
        self._claims_lock = threading.RLock()
        self._reservations: list = []
        self._requests_lock = threading.Lock()
        self._requests_handled = 0

    # Requests in flight (max-concurrency) --------------------------------

    @property
    def requests_handled(self) -> int:
        """How many requests the provider's pools are handling now."""
        with self._requests_lock:
            return self._requests_handled

    def begin_request(self) -> bool:
        """Count one more request handled by one of the pools, unless
        ``max-concurrency`` (when above 0) is reached; False then.

        Each True must be matched by one :meth:`end_request` whatever way
        the handling ends.
        """
        limit = self.config.max_concurrency
        with self._requests_lock:
            if limit > 0 and self._requests_handled >= limit:
                return False
            self._requests_handled += 1
            return True

    def end_request(self) -> None:
        """A request counted by :meth:`begin_request` is no longer
        handled."""
        with self._requests_lock:
            self._requests_handled = max(0, self._requests_handled - 1)

    # Limits ---------------------------------------------------------------

    def quota_for_label(self, label_name: str, pool_name: str
                        ) -> QuotaInformation:
        """Resources one node of the label needs (cached per label).

        Raises :class:`~nodepool.exceptions.RuntimeConfigurationException`
        when the cloud cannot tell (the label is added to
        :attr:`error_labels`).
        """
        key = (pool_name, label_name)
        quota = self._label_quota.get(key)
        if quota is None:
            label = self.config.pools[pool_name].labels[label_name]
            try:
                quota = self.adapter.get_quota_for_label(label)
            except exceptions.RuntimeConfigurationException:
                self.error_labels.add(label_name)
                raise
            self._label_quota[key] = quota
        return quota.copy()

    def invalidate(self) -> None:
        """Forget the cached provider limits (the cloud refused a launch
        for quota: they are out of date)."""
        with self._limits_lock:
            self._limits_cache.clear()

    def provider_quota(self) -> QuotaInformation:
        """Provider limits minus what others use, cached for 5 minutes;
        unlimited when they cannot be read."""
        with self._limits_lock:
            cached = self._limits_cache.get("quota")
            if cached is not None:
                return cached.copy()
        try:
            quota = self.adapter.get_quota_limits()
            quota.subtract(self.unmanaged_used())
        except Exception:
            self.log.exception("Could not compute provider quota")
            return QuotaInformation(default=float("inf"))
        with self._limits_lock:
            self._limits_cache["quota"] = quota
        return quota.copy()

    def unmanaged_used(self) -> QuotaInformation:
        """What the provider's instances that are not our nodes use
        (other tenants of the cloud account, leaked instances)."""
        used = QuotaInformation()
        known = set(self.node_cache.ids())
        for instance in self.adapter.list_instances():
            meta = instance.metadata or {}
            if (meta.get("nodepool_provider_name") == self.name
                    and meta.get("nodepool_node_id") in known):
                continue
            used.add(instance.get_quota_information())
        return used

    # Usage ----------------------------------------------------------------

    def reserve(self, label_name: str, pool) -> Optional[object]:
        """Claim room for one node of the label, or None if there is none.

        Several threads start launches at once; a claim counts as used
        until :meth:`claim_node` drops it, by which time the node record
        made for it is in the node cache (the node store writes through).
        """
        needed = self.quota_for_label(label_name, pool.name)
        with self._claims_lock:
            if not self.has_remaining_quota(label_name, pool):
                return None
            token = (pool.name, needed)
            self._reservations.append(token)
            return token

    def claim_node(self, token, node) -> None:
        """The launch the reservation was for has stored its node (or,
        with None, did not get as far): stop counting the reservation."""
        with self._claims_lock:
            if token in self._reservations:
                self._reservations.remove(token)

    def nodes_used(self, pool_name: Optional[str] = None
                   ) -> QuotaInformation:
        """What this provider's nodes (of one pool, if given) and its
        reservations use."""
        return self._usage([pool_name])[0]

    def _usage(self, pool_names: list) -> list:
        """``nodes_used(name)`` for each of ``pool_names`` (None: the
        whole provider), from the node cache's usage index: one step per
        kind of node, not per node."""
        totals = [QuotaInformation() for _ in pool_names]

        def counting(pool):
            return [total for name, total in zip(pool_names, totals)
                    if name is None or name == pool]
        with self._claims_lock:
            for reserved_pool, quota in self._reservations:
                for total in counting(reserved_pool):
                    total.add(quota)
        for group in self.node_cache.usage(self.name):
            targets = counting(group.pool)
            if not targets:
                continue
            if group.resources:
                for total in targets:
                    total.add_resources(group.resources, group.count)
                continue
            pool = self.config.pools.get(group.pool)
            if pool is None:
                continue
            for label in group.labels:
                if label in pool.labels:
                    needed = self.quota_for_label(label, group.pool)
                    # Nodes without stored resources are few (records
                    # of old launchers): one addition per node.
                    for total in targets:
                        for _ in range(group.count):
                            total.add(needed)
        return totals

    # Decisions ------------------------------------------------------------

    def _needed(self, labels, pool) -> QuotaInformation:
        needed = QuotaInformation()
        for label in labels:
            needed.add(self.quota_for_label(label, pool.name))
        return needed

    def has_provider_quota(self, labels, pool) -> bool:
        """Could the pool ever hold these labels at once (ignoring usage)?"""
        needed = self._needed(labels, pool)
        if pool.checks_provider_quota:
            remaining = self.provider_quota()
            remaining.subtract(needed)
            if not remaining.non_negative():
                return False
        limits = pool_limits(pool)
        limits.subtract(needed)
        return limits.non_negative()

    def has_remaining_quota(self, label_name: str, pool) -> bool:
        """Is there room right now for one more node of the label?"""
        return not self.exhausted_limits(label_name, pool)

    def exhausted_limits(self, label_name: str, pool) -> list:
        """The limits one more node of the label would exceed now: the
        pool's settings (``max-servers``, ``max-cores``...) and the
        cloud's (``cloud quota (cores)``); empty when there is room."""
        needed = self.quota_for_label(label_name, pool.name)
        exceeded = []
        if pool.checks_provider_quota:
            remaining = self.provider_quota()
            provider_used, pool_used = self._usage([None, pool.name])
            remaining.subtract(provider_used)
            remaining.subtract(needed)
            exceeded.extend("cloud quota (%s)" % name
                            for name in remaining.exceeded())
        else:
            pool_used = self.nodes_used(pool.name)
        limits = pool_limits(pool)
        limits.subtract(pool_used)
        limits.subtract(needed)
        exceeded.extend(limit_name(name) for name in limits.exceeded())
        return exceeded
