# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The base of the JSON records and the payload type checks they share."""

import copy
import json
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from nodepool.exceptions import InvalidRecordError

# Values update_from shares instead of copying: nothing can change them.
_IMMUTABLE = frozenset((str, int, float, bool, type(None)))


DEFAULT_USERNAME = "zuul"
DEFAULT_PYTHON_PATH = "/usr/bin/python2"
DEFAULT_CONNECTION_PORT = 22


# -- payload helpers ----------------------------------------------------------
# They raise InvalidRecordError only for types our own code would trip over;
# anything else is kept as written so that a round trip loses nothing.

def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages:
    a garbage payload may hold megabytes."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _opt_number(data: dict, key: str) -> Optional[float]:
    value = data.get(key)
    if value is not None and not _is_number(value):
        raise InvalidRecordError("%s must be a number, not %s"
                                 % (key, _short(value)))
    return value


def _list(data: dict, key: str) -> list:
    """A list field; absent or null reads as an empty list."""
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRecordError("%s must be a list, not %s"
                                 % (key, _short(value)))
    return value


def _str_list(data: dict, key: str) -> List[str]:
    value = _list(data, key)
    if not all(isinstance(item, str) for item in value):
        raise InvalidRecordError("%s must be a list of strings: %s"
                                 % (key, _short(value)))
    return value


def _opt_str(data: dict, key: str) -> Optional[str]:
    """A string field that may be absent or null."""
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidRecordError("%s must be a string, not %s"
                                 % (key, _short(value)))
    return value


def _opt_dict(data: dict, key: str) -> Optional[dict]:
    value = data.get(key)
    if value is not None and not isinstance(value, dict):
        raise InvalidRecordError("%s must be an object, not %s"
                                 % (key, _short(value)))
    return value


def _check_id(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError("%s must be a str or None, not %r"
                        % (name, type(value).__name__))


# -- base class ---------------------------------------------------------------

class Record:
    """Base of the JSON records (nodes, requests, builds, uploads).

    Subclasses set ``STATES`` (their state enum), ``_ID_ATTRS`` (identifier
    attributes, in path order), ``_FIELDS`` (serialized attributes besides
    ``state`` and ``state_time``) and implement ``_load`` and ``_dump``.

    Attributes that are never serialized: ``stat`` (set by readers),
    ``lock`` (a kazoo ``Lock`` this process holds on the record, or None)
    and ``thread_lock`` (a re-entrant lock held by :meth:`update_from`;
    threads that need a consistent view of several fields while a cache may
    update the record can hold it too).
    """

    STATES: type = None
    _ID_ATTRS: Tuple[str, ...] = ("id",)
    _FIELDS: Tuple[str, ...] = ()

    def __init__(self, id: Optional[str] = None):
        self.id = id
        self.stat = None
        self.lock = None
        self.thread_lock = threading.RLock()
        self._state = None
        self.state_time: Optional[float] = None

    # -- identity and state

    @property
    def id(self) -> Optional[str]:
        """The znode name; None until the record has been created."""
        return self._id

    @id.setter
    def id(self, value: Optional[str]) -> None:
        _check_id("id", value)
        self._id = value

    @property
    def state(self):
        """The state as a member of ``STATES`` (None for a blank record).

        Setting accepts a member or its wire string, records the time in
        ``state_time`` and raises :class:`TypeError` for anything that is
        not a valid state of this record type.
        """
        return self._state

    @state.setter
    def state(self, value) -> None:
        self._state = self._coerce_state(value)
        self.state_time = time.time()

    @classmethod
    def _coerce_state(cls, value):
        try:
            return cls.STATES(value)
        except (ValueError, TypeError):
            raise TypeError("%s is not a valid %s state"
                            % (_short(value), cls.__name__)) from None

    @property
    def is_locked(self) -> bool:
        """True while this process holds the record's lock."""
        return self.lock is not None

    @property
    def mzxid(self) -> int:
        """The zxid of the last change read, or -1 if never read."""
        return self.stat.mzxid if self.stat is not None else -1

    def _ids(self) -> tuple:
        return tuple(getattr(self, name) for name in self._ID_ATTRS)

    # -- serialization

    def _dump(self) -> Dict[str, Any]:
        raise NotImplementedError

    def _load(self, data: dict) -> None:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Hook run before the record is serialized for writing."""

    def _wire_dict(self) -> Dict[str, Any]:
        # Shares containers with self; callers must not mutate it.
        data = {"state": self._state.value if self._state else None,
                "state_time": self.state_time}
        data.update(self._dump())
        return data

    def to_dict(self) -> Dict[str, Any]:
        """The JSON object written to ZooKeeper, as a fresh dict."""
        self._prepare()
        return copy.deepcopy(self._wire_dict())

    def serialize(self) -> bytes:
        """The UTF-8 JSON payload written to ZooKeeper."""
        self._prepare()
        return json.dumps(self._wire_dict()).encode("utf-8")

    def _load_dict(self, data: dict) -> None:
        if not isinstance(data, dict):
            raise InvalidRecordError("%s payload must be a JSON object, not %s"
                                     % (type(self).__name__,
                                        type(data).__name__))
        if "state" not in data:
            raise InvalidRecordError("%s payload has no state"
                                     % type(self).__name__)
        try:
            self._state = self._coerce_state(data["state"])
        except TypeError as e:
            raise InvalidRecordError(str(e)) from None
        self.state_time = _opt_number(data, "state_time")
        self._load(data)

    @classmethod
    def from_dict(cls, data: dict, **ids: Optional[str]) -> "Record":
        """Build a record from a decoded payload.

        ``ids`` are the identifiers from the path (e.g. ``id=...``).  The
        dict is copied.  Raises :class:`InvalidRecordError` for a missing or
        unknown state or a field of a type we cannot work with.
        """
        obj = cls(**ids)
        obj._load_dict(copy.deepcopy(data))
        return obj

    @classmethod
    def from_bytes(cls, data: bytes, stat=None,
                   **ids: Optional[str]) -> "Record":
        """Build a record from a znode's payload and stat.

        Raises :class:`InvalidRecordError` for an empty payload, bad UTF-8
        or JSON, a payload that is not a JSON object, and everything
        :meth:`from_dict` rejects.
        """
        where = "%s %s" % (cls.__name__,
                           "/".join(str(v) for v in ids.values()))
        if not data:
            raise InvalidRecordError("%s: empty payload" % where)
        try:
            if isinstance(data, (bytes, bytearray)):
                data = data.decode("utf-8")
            decoded = json.loads(data)
        except (UnicodeDecodeError, ValueError) as e:
            raise InvalidRecordError("%s: bad JSON: %s" % (where, e)) from None
        obj = cls(**ids)
        try:
            obj._load_dict(decoded)
        except InvalidRecordError as e:
            raise InvalidRecordError("%s: %s" % (where, e)) from None
        obj.stat = stat
        return obj

    def update_from(self, other: "Record", take: bool = False) -> None:
        """Copy the serialized fields and ``stat`` of ``other`` into self.

        Identifiers, ``lock`` and (for nodes) ``lock_contenders`` are kept.
        Containers are copied, so ``other`` may be used independently;
        with ``take`` they are taken over instead (cheaper, for a caller
        that drops ``other`` afterwards, like a cache applying a read).
        """
        if type(other) is not type(self):
            raise TypeError("cannot update %s from %s"
                            % (type(self).__name__, type(other).__name__))
        with self.thread_lock:
            self._state = other._state
            self.state_time = other.state_time
            for name in self._FIELDS:
                value = getattr(other, name)
                if not take and type(value) not in _IMMUTABLE:
                    value = copy.deepcopy(value)
                setattr(self, name, value)
            self.stat = other.stat

    def __getstate__(self) -> dict:
        # Thread locks cannot be copied; a copy gets its own.
        state = self.__dict__.copy()
        del state["thread_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.thread_lock = threading.RLock()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return (self._ids() == other._ids()
                and self._wire_dict() == other._wire_dict())

    __hash__ = None

    def _repr_extra(self) -> List[Tuple[str, Any]]:
        return []

    def __repr__(self) -> str:
        items = [(name, getattr(self, name)) for name in self._ID_ATTRS]
        items.append(("state", self._state.value if self._state else None))
        items.extend(self._repr_extra())
        return "<%s %s>" % (type(self).__name__,
                            " ".join("%s=%r" % item for item in items))
