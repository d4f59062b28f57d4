# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Quota arithmetic and the launcher's quota helpers.

A :class:`QuotaInformation` is a set of named resource amounts (``cores``,
``instances``, ``ram`` in MiB, plus any extra name such as ``volumes``,
``volume-gb`` or an AWS quota code) with a *default* that stands for every
name it does not list.  Limits use ``math.inf`` as the default (what is not
mentioned is unlimited); usage and needs use ``0`` (what is not mentioned is
not consumed).  The launcher checks a request with
``limits - used - needed`` and :meth:`QuotaInformation.non_negative`.

The helpers below are pure functions over config and node objects; they
never talk to ZooKeeper or to a cloud.
"""

import math
from typing import Iterable, Mapping, Optional


class QuotaInformation:
    """Resource amounts by name, with a default for unnamed resources.

    ``cores``, ``instances`` and ``ram`` are always present (``None`` means
    ``default``); ``extra`` adds further names, given as
    ``QuotaInformation(**{"volume-gb": 100})`` when the name is not an
    identifier.  Arithmetic is in place and runs over the union of both
    operands' names, each side supplying its own default for a name it
    lacks.  Note that ``inf - inf`` is NaN, which :meth:`non_negative`
    treats as exhausted; never subtract a limit from a limit.

    Not thread-safe: an instance is meant to be owned by one thread (use
    :meth:`copy` before handing one on).
    """

    def __init__(self, cores: Optional[float] = None,
                 instances: Optional[float] = None,
                 ram: Optional[float] = None, default: float = 0,
                 **extra: Optional[float]):
        self.default = default
        self._values: dict = {}
        self._update({"cores": cores, "instances": instances, "ram": ram})
        self._update(extra)

    def _update(self, values: Mapping) -> None:
        for name, value in values.items():
            self._values[name] = self.default if value is None else value

    @classmethod
    def from_resources(cls, resources: Mapping,
                       default: float = 0) -> "QuotaInformation":
        """Build from a ``Node.resources`` style dict (see :meth:`get_resources`).

        The default is 0: a resources dict records consumption, so a name it
        does not mention is not consumed.
        """
        quota = cls(default=default)
        quota._update(resources)
        return quota

    def get_resources(self) -> dict:
        """The amounts as a plain dict (a new one on every call).

        This is the form stored in ``Node.resources`` and read by Zuul:
        ``{"cores": n, "instances": n, "ram": MiB, ...extra}``.  All names
        are included, also those equal to the default; ``cores``,
        ``instances`` and ``ram`` are always there.  Only store finite
        values: JSON has no infinity.
        """
        return dict(self._values)

    def get(self, name: str) -> float:
        """The amount of ``name``, or the default when it is not listed."""
        return self._values.get(name, self.default)

    def names(self) -> list:
        """The listed resource names, in insertion order."""
        return list(self._values)

    def copy(self) -> "QuotaInformation":
        """An independent copy with the same amounts and default."""
        return QuotaInformation.from_resources(self._values,
                                               default=self.default)

    def _combine(self, other: "QuotaInformation", sign: int) -> None:
        for name in self._union(other):
            self._values[name] = self.get(name) + sign * other.get(name)

    def _union(self, other: "QuotaInformation") -> list:
        # Keep our own order first so that reprs and resources dicts stay
        # stable; names only the other side has are appended.
        return list(self._values) + [n for n in other._values
                                     if n not in self._values]

    def add(self, other: "QuotaInformation") -> None:
        """Add ``other`` to this quota in place."""
        self._combine(other, 1)

    def add_resources(self, resources: Mapping, times: int = 1) -> None:
        """Add a ``Node.resources`` style dict ``times`` times in place:
        the same as ``add(QuotaInformation.from_resources(resources))``
        (None counts as 0) repeated, without building that quota."""
        values = self._values
        for name, value in resources.items():
            if value is None:
                value = 0
            values[name] = values.get(name, self.default) + (
                value if times == 1 else value * times)

    def subtract(self, other: "QuotaInformation") -> None:
        """Subtract ``other`` from this quota in place."""
        self._combine(other, -1)

    def __add__(self, other: "QuotaInformation") -> "QuotaInformation":
        result = self.copy()
        result.add(other)
        return result

    def __sub__(self, other: "QuotaInformation") -> "QuotaInformation":
        result = self.copy()
        result.subtract(other)
        return result

    def non_negative(self) -> bool:
        """Whether every listed amount is >= 0 (NaN counts as negative)."""
        return all(value >= 0 for value in self._values.values())

    def exceeded(self) -> list:
        """The names whose amount is below 0 (or NaN), in order."""
        return [name for name, value in self._values.items()
                if not value >= 0]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuotaInformation):
            return NotImplemented
        # Equal when they agree on every name, after defaults are applied.
        return (self.default == other.default and
                all(self.get(n) == other.get(n) for n in self._union(other)))

    # Mutable, so not hashable.
    __hash__ = None

    def __repr__(self) -> str:
        return "QuotaInformation(%r, default=%r)" % (self._values,
                                                     self.default)


def pool_limits(pool) -> QuotaInformation:
    """The limits a pool config sets (:meth:`PoolConfig.quota_limits`),
    unlimited (``inf``) for every name it leaves out or sets to None."""
    limits = QuotaInformation(default=math.inf)
    limits._update(pool.quota_limits())
    return limits


# The pool setting behind each quota name :meth:`PoolConfig.quota_limits`
# may give.
_LIMIT_SETTINGS = {"instances": "max-servers", "cores": "max-cores",
                   "ram": "max-ram", "volumes": "max-volumes",
                   "volume-gb": "max-volume-gb"}


def limit_name(quota_name: str) -> str:
    """The pool setting behind a quota name of :func:`pool_limits`
    (``instances`` -> ``max-servers``); names of ``max-resources`` are
    shown as they are."""
    return _LIMIT_SETTINGS.get(quota_name, quota_name)


def tenant_usage(nodes: Iterable, tenant_name: str) -> QuotaInformation:
    """The summed ``resources`` of all nodes of ``tenant_name`` (default 0).

    Nodes of every provider count; nodes without ``resources`` are skipped.
    """
    total = QuotaInformation()
    for node in nodes:
        if node.tenant_name == tenant_name and node.resources is not None:
            total.add_resources(node.resources)
    return total


def tenant_limits_quota(limits: Mapping) -> QuotaInformation:
    """A tenant's configured limits as a quota, unlimited where unset.

    ``limits`` is keyed by quota name (``cores``, ``ram``, ``instances``,
    ``volumes``, ``volume-gb`` or any other name, taken verbatim), the form
    ``TenantResourceLimit.limits`` has after the config loader mapped the
    ``max-*`` keys.
    """
    quota = QuotaInformation(default=math.inf)
    quota._update(limits)
    return quota
