# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Capacity fallback: what a launch tries after the cloud ran out of a
machine type in a zone (doc/source/capacity-fallback.rst).

A label opts in with its driver's fallback key (``fallback-instance-types``
on AWS, ``fallback-flavor-names`` on OpenStack, ``fallback-hardware-profiles``
on Azure); its :attr:`~nodepool.driver.base.LabelConfig.capacity_types` are
then the machine types to try in order.  The zones are those the adapter
can place a node in (:meth:`~nodepool.driver.statemachine.adapter.Adapter.
capacity_zones`), or the single unknown zone ``None`` when the cloud
decides.

* :class:`CapacityMemory`: one per provider, shared by all its launches:
  which (type, zone) failed for lack of capacity, until when.
* :class:`CapacityPlan`: one per launch: the (type, zone) options in the
  order they are tried, skipping those tried already and those the
  memory says are cooling down.
"""

import threading
import time
from typing import Callable, Iterable, Optional, Sequence

#: Seconds a (type, zone) that failed for lack of capacity is skipped:
#: the default of the provider key ``capacity-cooldown``.
DEFAULT_COOLDOWN = 300

Option = tuple  # (type name, zone or None)


class CapacityMemory:
    """(type, zone) pairs that recently ran out of capacity.

    Thread-safe: the create runner records failures, pool workers, the
    stats reporter and the web app read.  ``clock`` (monotonic seconds)
    is a parameter so tests need not wait for a cooldown to pass.
    """

    def __init__(self, cooldown: float = DEFAULT_COOLDOWN,
                 clock: Callable[[], float] = time.monotonic):
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        # (type, zone) -> [cooling until, failures seen]
        self._entries: dict = {}

    def failed(self, type_name: str, zone: Optional[str]) -> None:
        """Remember that ``type_name`` in ``zone`` had no capacity now."""
        with self._lock:
            entry = self._entries.get((type_name, zone))
            until = self._clock() + self.cooldown
            if entry is None or entry[0] <= self._clock():
                self._entries[(type_name, zone)] = [until, 1]
            else:
                entry[0] = until
                entry[1] += 1

    def cooling(self, type_name: str, zone: Optional[str]) -> bool:
        """Whether ``type_name`` in ``zone`` is to be skipped now."""
        with self._lock:
            entry = self._entries.get((type_name, zone))
            return entry is not None and entry[0] > self._clock()

    def entries(self) -> list:
        """The pairs cooling down now, as dicts of ``type``, ``zone``
        (None: the cloud's choice), ``failures`` (since the pair last
        cooled down) and ``seconds_left``; expired pairs are forgotten."""
        with self._lock:
            now = self._clock()
            self._entries = {k: e for k, e in self._entries.items()
                             if e[0] > now}
            return [dict(type=key[0], zone=key[1], failures=entry[1],
                         seconds_left=round(entry[0] - now, 1))
                    for key, entry in sorted(
                        self._entries.items(),
                        key=lambda item: (item[0][0], item[0][1] or ""))]

    def any_left(self, options: Iterable[Option]) -> bool:
        """Whether one of ``options`` is not cooling down."""
        return any(not self.cooling(*option) for option in options)


def ordered_zones(zones: Sequence, first: Optional[str] = None,
                  start: int = 0) -> list:
    """``zones`` (without duplicates or empty names) in the order a
    launch tries them: ``first`` leads when it is one of them, else the
    sorted zones rotated by ``start`` (launches that come in turn spread
    over the zones).  ``[None]`` when there is no zone to choose."""
    names = sorted({z for z in zones if z})
    if not names:
        return [None]
    if first in names:
        index = names.index(first)
    else:
        index = start % len(names)
    return names[index:] + names[:index]


class CapacityPlan:
    """The (type, zone) options of one launch and what came of them.

    Types are tried in order, each in every zone before the next type;
    an option is skipped when it failed in this launch or is cooling
    down in ``memory``.  Not thread-safe: only the launch's runner uses
    it.
    """

    def __init__(self, types: Sequence[str], zones: Sequence,
                 memory: CapacityMemory):
        self.options = [(t, z) for t in types for z in zones]
        self.memory = memory
        self.tried: list = []   # options attempted, in order
        self.refused: list = []  # those that failed for lack of capacity

    def next_option(self) -> Optional[Option]:
        """The option to attempt now; None when none is left."""
        for option in self.options:
            if option in self.refused or self.memory.cooling(*option):
                continue
            return option
        return None

    def attempt(self, option: Option) -> None:
        self.tried.append(option)

    def no_capacity(self, option: Option) -> None:
        """``option`` failed for lack of capacity: never again in this
        launch, and skipped by every launch of the provider for the
        cooldown."""
        self.refused.append(option)
        self.memory.failed(*option)

    def describe(self) -> str:
        """The options refused so far, for log and decline messages."""
        return ", ".join(format_option(o) for o in self.refused) or "none"


def format_option(option: Option) -> str:
    type_name, zone = option
    return "%s in %s" % (type_name, zone) if zone else type_name


def type_order(own: str, fallbacks) -> Optional[tuple]:
    """A label's :attr:`capacity_types`: its ``own`` type, then its
    ``fallbacks`` in order without repeats; None without a fallback
    key (``fallbacks`` None)."""
    if fallbacks is None:
        return None
    order = [own]
    for name in fallbacks:
        if name not in order:
            order.append(name)
    return tuple(order)
