# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Slot bookkeeping of a metastatic provider, free of ZooKeeper.

A :class:`BackingRecord` stands for one backing node (or, while its node
request is pending, the node to come) and says which of its slots hold
which requested node.  A :class:`SlotBook` holds the records of one
provider grouped by metastatic label name and answers the questions the
adapter asks: where does a new node go, which record holds a node, which
slot does a deleted node free.

The records are not thread-safe: the adapters use them under their
:class:`SlotState`'s lock.
"""

import dataclasses
import json
import threading
from typing import Iterator, List, Optional, Tuple

#: ``user_data`` keys written on a backing node (the record's survival
#: across a restart); the wire names of nodepool 11.
OWNER, LABEL, SLOTS, FAILED, LAUNCHED = (
    "owner", "label", "slots", "failed", "launched")

#: ``driver_data`` keys of a slot's node (nodepool 11's names); recovery
#: reads the backing node and slot from them.
BACKING_NODE, SLOT = "backing_node", "slot"


def slot_driver_data(metadata: dict, backing_id: str, slot: int,
                     node_id: str) -> dict:
    """The ``driver_data`` of a slot's node."""
    return {"metadata": dict(metadata), BACKING_NODE: backing_id,
            SLOT: slot, "node": node_id}


def slot_of(driver_data) -> Tuple[Optional[str], object]:
    """``(backing node id, slot)`` named by a node's ``driver_data``
    (``(None, None)`` for anything else)."""
    if not isinstance(driver_data, dict):
        return None, None
    return driver_data.get(BACKING_NODE), driver_data.get(SLOT)


@dataclasses.dataclass
class BackingRecord:
    """One backing node and its slots.

    ``node_id`` is None while the backing request ``request_id`` is
    pending.  ``allocated`` has one entry per slot: the requested node's
    id or None.  ``failed`` records get no new slots and are released as
    soon as they are empty.  ``launched`` is when the backing node was
    asked for (epoch seconds); ``last_used`` when a slot was last freed.
    """

    label_name: str
    slot_count: int
    launched: float
    last_used: float
    request_id: Optional[str] = None
    node_id: Optional[str] = None
    failed: bool = False
    allocated: List[Optional[str]] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if not self.allocated:
            self.allocated = [None] * self.slot_count

    @property
    def pending(self) -> bool:
        return self.node_id is None

    @property
    def busy(self) -> bool:
        """Whether any slot holds a node."""
        return any(n is not None for n in self.allocated)

    def free_slot(self) -> Optional[int]:
        """The lowest free slot index, or None when all are taken."""
        for index, holder in enumerate(self.allocated):
            if holder is None:
                return index
        return None

    def user_data(self, owner: str) -> str:
        """The ``user_data`` JSON string stored on the backing node."""
        return json.dumps({OWNER: owner, LABEL: self.label_name,
                           SLOTS: self.slot_count, FAILED: self.failed,
                           LAUNCHED: self.launched})

    @classmethod
    def from_user_data(cls, raw, owner: str, node_id: str,
                       now: float) -> Optional["BackingRecord"]:
        """The record a backing node's ``user_data`` describes, or None if
        it is not one of ``owner``'s (or is malformed)."""
        if not isinstance(raw, str):
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get(OWNER) != owner:
            return None
        label, slots = data.get(LABEL), data.get(SLOTS)
        launched = data.get(LAUNCHED)
        if (not isinstance(label, str) or not isinstance(slots, int)
                or isinstance(slots, bool) or slots < 1
                or not isinstance(launched, (int, float))):
            return None
        return cls(label_name=label, slot_count=slots, node_id=node_id,
                   failed=bool(data.get(FAILED)), launched=float(launched),
                   last_used=now)


class SlotBook:
    """The records of one provider, by metastatic label name."""

    def __init__(self):
        self._records: dict = {}   # label name -> [BackingRecord]

    def records(self) -> Iterator[BackingRecord]:
        """Every record (a snapshot: dropping while iterating is fine)."""
        for records in list(self._records.values()):
            yield from list(records)

    def add(self, record: BackingRecord) -> None:
        self._records.setdefault(record.label_name, []).append(record)

    def drop(self, record: BackingRecord) -> None:
        records = self._records.get(record.label_name, [])
        if record in records:
            records.remove(record)
        if not records:
            self._records.pop(record.label_name, None)

    def usable(self, label_name: str, too_old=lambda r: False
               ) -> Optional[BackingRecord]:
        """The first record of the label that takes another node: not
        failed, not ``too_old`` and with a free slot.  A pending record
        qualifies, so that several nodes wait on one backing request."""
        for record in self._records.get(label_name, ()):
            if (not record.failed and not too_old(record)
                    and record.free_slot() is not None):
                return record
        return None

    def holding(self, node_id: str
                ) -> Tuple[Optional[BackingRecord], Optional[int]]:
        """``(record, slot)`` holding the requested node, or
        ``(None, None)``."""
        for record in self.records():
            for slot, holder in enumerate(record.allocated):
                if holder == node_id:
                    return record, slot
        return None, None

    def by_request(self, request_id: str) -> List[BackingRecord]:
        return [r for r in self.records() if r.request_id == request_id]

    def assign(self, record: BackingRecord, node_id: str) -> int:
        """Put ``node_id`` into the record's lowest free slot; returns
        the slot.  :raises ValueError: the record is full."""
        slot = record.free_slot()
        if slot is None:
            raise ValueError("backing record %s is full" % record.node_id)
        record.allocated[slot] = node_id
        return slot

    def free(self, node_id: str, now: float) -> Optional[BackingRecord]:
        """Free the slot holding ``node_id`` (if any); returns its
        record.  The record remembers ``now`` as its last use."""
        record, slot = self.holding(node_id)
        if record is not None:
            record.allocated[slot] = None
            record.last_used = now
        return record


class SlotState:
    """The bookkeeping of one metastatic provider in one launcher.

    Reconfiguring a provider starts its new adapter while the old one
    still finishes the launches it began (the old provider drains), so
    both must see the same slots: they share this object, kept for them
    by the launcher (``ProviderServices.shared_state``).  ``lock`` guards
    everything else; ``recovered`` is set once the book was rebuilt from
    ZooKeeper; ``users`` counts the adapters using it.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.book = SlotBook()
        self.recovered = threading.Event()
        self.recovering = False
        self.users = 0

    def join(self) -> None:
        """One adapter more uses the state."""
        with self.lock:
            self.users += 1

    def leave(self) -> Optional[List[BackingRecord]]:
        """One adapter fewer.  The last one gets the records back and the
        state starts afresh (the next adapter rebuilds it from ZooKeeper,
        which is where it lives while no adapter runs); others get None.
        """
        with self.lock:
            self.users -= 1
            if self.users > 0:
                return None
            records = list(self.book.records())
            self.book = SlotBook()
            self.recovered.clear()
            self.recovering = False
            return records
