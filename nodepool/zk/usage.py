# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""What the cached nodes use, counted by provider, pool and kind of node.

Every launch asks how much of its provider and pool is in use
(:class:`~nodepool.driver.statemachine.quota.ProviderQuota`).  Summing
every cached node for that made a burst of launches quadratic in the
number of nodes.  The node cache keeps this index up to date instead, one
node at a time, and a question costs as many steps as there are distinct
kinds of node (usually a handful).
"""

import threading
from typing import NamedTuple, Optional


class UsageGroup(NamedTuple):
    """``count`` nodes of one provider's pool that use the same.

    ``resources``: the ``Node.resources`` they store, or None for nodes
    that store none; those count as the quota of their ``labels``.
    """

    pool: Optional[str]
    resources: Optional[dict]
    labels: tuple
    count: int


class NodeUsageIndex:
    """The cached nodes grouped by provider, pool and what they use.

    Thread-safe.  The owner calls :meth:`update` whenever the object it
    holds for a node id changed or went away; the index reads the fields
    it needs at that moment.
    """

    def __init__(self):
        self._lock = threading.Lock()
        # node id -> (provider, group key)
        self._entries: dict = {}
        # provider -> {group key: [count, pool, resources, labels]}
        self._groups: dict = {}

    def update(self, node_id: str, node) -> None:
        """Count ``node`` (a cached node, or None when it is gone) as the
        one with ``node_id``."""
        if node is None:
            entry = group = None
        else:
            entry, group = _describe(node_id, node)
        with self._lock:
            old = self._entries.get(node_id)
            if old == entry:
                return
            if old is not None:
                self._drop(node_id, old)
            if entry is None:
                return
            self._entries[node_id] = entry
            provider, key = entry
            groups = self._groups.setdefault(provider, {})
            current = groups.get(key)
            if current is None:
                groups[key] = group
            else:
                current[0] += 1

    def _drop(self, node_id: str, entry: tuple) -> None:
        del self._entries[node_id]
        provider, key = entry
        groups = self._groups[provider]
        groups[key][0] -= 1
        if not groups[key][0]:
            del groups[key]
            if not groups:
                del self._groups[provider]

    def groups(self, provider: str) -> list:
        """The :class:`UsageGroup` of ``provider``'s nodes, in the order
        their kinds were first seen."""
        with self._lock:
            return [UsageGroup(pool, resources, labels, count)
                    for count, pool, resources, labels
                    in self._groups.get(provider, {}).values()]


def _describe(node_id: str, node) -> tuple:
    """The node's (provider, group key) and a new group of it alone."""
    labels = tuple(node.type)
    if node.resources:
        resources = dict(node.resources)
        try:
            key = (node.pool, "resources", tuple(resources.items()))
            hash(key)
        except TypeError:
            # A value that is not a number (a damaged record): its own
            # group, so that quota reports the error as before.
            key = (node.pool, "node", node_id, repr(resources))
    else:
        resources = None
        key = (node.pool, "labels", labels)
    return (node.provider, key), [1, node.pool, resources, labels]
