# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Schema and config objects of the metastatic driver."""

from dataclasses import dataclass

import voluptuous as v

from nodepool.config import schema
from nodepool.config.errors import format_path
from nodepool.driver.base import (
    LabelConfig, PoolConfig, ProviderConfig, build_labels, build_pools)

_opt = v.Optional

# The label keys that say how backing nodes are used.  Every label of one
# provider naming the same backing label must agree on them: the backing
# nodes are shared by those labels' bookkeeping (nodepool 11 refuses a
# disagreement the same way).
SHARED_KEYS = ("backing-label", "max-parallel-jobs", "grace-time",
               "min-retention-time", "max-age")


def _age_after_retention(data):
    if (data["max-age"] is not None
            and data["max-age"] < data["min-retention-time"]):
        raise schema.ConfigInvalid(
            "max-age to be at least min-retention-time (%d)"
            % data["min-retention-time"], path=["max-age"],
            found=str(data["max-age"]))


LABEL = schema.Section({
    v.Required("name"): str,
    v.Required("backing-label"): str,
    _opt("max-parallel-jobs", default=1): v.All(int, v.Range(min=1)),
    _opt("grace-time", default=60): int,
    _opt("min-retention-time", default=0): int,
    _opt("max-age", default=None): schema.nullable(int),
    # None: the pool's value.
    _opt("host-key-checking", default=None): schema.nullable(bool),
}, _age_after_retention)

POOL = schema.POOL.extend({
    v.Required("labels"): schema.each(LABEL, unique="name"),
    _opt("host-key-checking", default=False): bool,
})

PROVIDER = schema.PROVIDER.extend({
    v.Required("pools"): schema.each(POOL, unique="name"),
    # nodepool 11's code default; its documentation says 60.
    _opt("boot-timeout", default=120): int,
    _opt("launch-timeout", default=3600): int,
    _opt("launch-retries", default=3): int,
})


@dataclass(frozen=True, kw_only=True)
class MetastaticLabel(LabelConfig):
    """A label served by slots of backing nodes of ``backing_label``.

    ``max_parallel_jobs`` slots per backing node; an idle backing node is
    released ``grace_time`` seconds after its last slot was freed, but not
    before ``min_retention_time`` seconds after it was requested;
    ``max_age`` (None: no limit) seconds after that it gets no new slots
    and is released once empty.  ``host_key_checking`` (the pool's value
    unless the label sets it) scans every new slot's host keys.
    """

    backing_label: str
    max_parallel_jobs: int
    grace_time: int
    min_retention_time: int
    max_age: int | None
    host_key_checking: bool

    @property
    def checks_host_keys(self) -> bool:
        return self.host_key_checking


@dataclass(frozen=True, kw_only=True)
class MetastaticPool(PoolConfig):
    """A metastatic pool; ``host_key_checking`` is its labels' default."""

    host_key_checking: bool

    @property
    def checks_host_keys(self) -> bool:
        return self.host_key_checking


@dataclass(frozen=True, kw_only=True)
class MetastaticProviderConfig(ProviderConfig):
    """A metastatic provider.  ``launch_timeout`` covers the wait for a
    backing node; ``boot_timeout`` bounds a slot's host-key scan."""

    boot_timeout: int
    launch_timeout: int
    launch_retries: int

    @property
    def labels(self) -> dict:
        """Every label of every pool by name (pools may not disagree on
        what a name means to the backing nodes: see SHARED_KEYS)."""
        return {name: label for pool in self.pools.values()
                for name, label in pool.labels.items()}


def _check_shared(data, ctx, path):
    """Report labels whose backing-node settings disagree with the first
    label of the provider naming the same backing label."""
    first = {}
    for pool_index, pool in enumerate(data["pools"]):
        for label_index, label in enumerate(pool["labels"]):
            values = tuple(label[schema.attr_name(k)] for k in SHARED_KEYS)
            where = path + ("pools", pool_index, "labels", label_index)
            seen = first.setdefault(label["backing_label"], (values, where))
            if seen[0] == values:
                continue
            ctx.problem(
                where, "the same %s as every label of this provider with "
                "backing-label %r (multiple label definitions for the same "
                "backing label must be identical)" % (
                    ", ".join(SHARED_KEYS[1:]), label["backing_label"]),
                "different values than at %s" % format_path(seen[1]))


def build_provider(data, ctx, path):
    """Build a MetastaticProviderConfig from validated provider data."""
    _check_shared(data, ctx, path)

    def build_pool(pool, pool_path):
        def build_label(label, label_path):
            checking = label["host_key_checking"]
            if checking is None:
                checking = pool["host_key_checking"]
            return MetastaticLabel(**dict(label,
                                          host_key_checking=checking))
        labels = build_labels(pool, ctx, pool_path, build_label)
        return MetastaticPool(**dict(pool, labels=labels))
    return MetastaticProviderConfig(**dict(
        data, pools=build_pools(data, ctx, path, build_pool)))
