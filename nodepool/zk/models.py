# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Records stored in ZooKeeper and their JSON wire format.

The JSON written and read here is the contract with nodepool 11 and Zuul:
the key names, which keys are always written, and the defaults applied when
a key is missing on read all follow what nodepool 11 writes and reads
(doc/source/zookeeper.rst describes the tree).  Python attribute names equal the JSON keys.

Identifiers (node id, request id, image name, build id, provider name,
upload id) come from the znode path and are never part of the payload.

Every record keeps the :class:`kazoo.protocol.states.ZnodeStat` it was read
with in ``stat`` (``None`` for records not read from ZooKeeper) so that
caches can tell newer data from older (:attr:`Record.mzxid`).

Records are mutable and therefore unhashable; equality compares the class,
the identifiers and the serialized fields.
"""

import copy
import enum
import json
import threading
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

from nodepool.exceptions import InvalidRecordError
from nodepool.zk.paths import split_request_id


class _WireEnum(str, enum.Enum):
    """A ``str`` enum whose ``str()`` and ``format()`` are the wire value."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class NodeState(_WireEnum):
    """States of a node record."""

    BUILDING = "building"
    TESTING = "testing"   # valid on the wire, never set by nodepool
    READY = "ready"
    IN_USE = "in-use"     # set by Zuul
    USED = "used"         # set by Zuul
    HOLD = "hold"
    DELETING = "deleting"
    FAILED = "failed"
    INIT = "init"
    ABORTED = "aborted"
    DELETED = "deleted"   # tombstone written just before the znode goes


class RequestState(_WireEnum):
    """States of a node request."""

    REQUESTED = "requested"
    PENDING = "pending"
    FULFILLED = "fulfilled"
    FAILED = "failed"


class BuildState(_WireEnum):
    """States of an image build."""

    BUILDING = "building"
    READY = "ready"
    DELETING = "deleting"
    FAILED = "failed"


class UploadState(_WireEnum):
    """States of an image upload."""

    UPLOADING = "uploading"
    READY = "ready"
    DELETING = "deleting"
    FAILED = "failed"


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

    def update_from(self, other: "Record") -> None:
        """Copy the serialized fields and ``stat`` of ``other`` into self.

        Identifiers, ``lock`` and (for nodes) ``lock_contenders`` are kept.
        Containers are copied, so ``other`` may be used independently.
        """
        if type(other) is not type(self):
            raise TypeError("cannot update %s from %s"
                            % (type(self).__name__, type(other).__name__))
        with self.thread_lock:
            self._state = other._state
            self.state_time = other.state_time
            for name in self._FIELDS:
                setattr(self, name, copy.deepcopy(getattr(other, name)))
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


# -- nodes --------------------------------------------------------------------

class Node(Record):
    """A node record, ``/nodepool/nodes/<id>``.

    Every field is written on each store, null included.  ``ssh_port`` is
    not an attribute: it is always written equal to ``connection_port``.

    Not serialized: ``lock``, ``lock_contenders`` (names of the contenders
    of the node's lock, maintained by the node cache), ``stat`` and
    ``thread_lock``.
    """

    STATES = NodeState
    _FIELDS = (
        "cloud", "provider", "pool", "type", "allocated_to", "az", "region",
        "public_ipv4", "private_ipv4", "public_ipv6", "host_id",
        "interface_ip", "connection_port", "connection_type", "shell_type",
        "image_id", "launcher", "created_time", "external_id", "hostname",
        "comment", "user_data", "hold_job", "host_keys", "username",
        "hold_expiration", "resources", "slot", "attributes", "python_path",
        "tenant_name", "driver_data", "requestor", "node_properties",
    )

    def __init__(self, id: Optional[str] = None):
        super().__init__(id)
        self.lock_contenders = set()
        self.cloud: Optional[str] = None
        self.provider: Optional[str] = None
        self.pool: Optional[str] = None
        self.type: List[str] = []
        self.allocated_to: Optional[str] = None
        self.az: Optional[str] = None
        self.region: Optional[str] = None
        self.public_ipv4: Optional[str] = None
        self.private_ipv4: Optional[str] = None
        self.public_ipv6: Optional[str] = None
        self.host_id: Optional[str] = None
        self.interface_ip: Optional[str] = None
        self.connection_port: Any = DEFAULT_CONNECTION_PORT
        self.connection_type: Optional[str] = None
        self.shell_type: Optional[str] = None
        self.image_id: Optional[str] = None
        self.launcher: Optional[str] = None
        self.created_time: Optional[float] = None
        self.external_id: Any = None
        self.hostname: Optional[str] = None
        self.comment: Optional[str] = None
        self.user_data: Any = None
        self.hold_job: Optional[str] = None
        self.host_keys: List[str] = []
        self.username: Optional[str] = DEFAULT_USERNAME
        self.hold_expiration: Optional[int] = None
        self.resources: Optional[dict] = None
        self.slot: Optional[int] = None
        self.attributes: Optional[dict] = None
        self.python_path: Optional[str] = None
        self.tenant_name: Optional[str] = None
        self.driver_data: Any = None
        self.requestor: Optional[str] = None
        self.node_properties: dict = {}

    def _prepare(self) -> None:
        if self.created_time is None:
            self.created_time = self.state_time or time.time()

    def _dump(self) -> Dict[str, Any]:
        data = {name: getattr(self, name) for name in self._FIELDS}
        # Older Zuul versions read ssh_port only.
        data["ssh_port"] = self.connection_port
        return data

    # Names the launcher compares, uses as dict keys or joins into paths;
    # another type there would break a pass over all nodes, not one node.
    _STR_FIELDS = ("cloud", "provider", "pool", "allocated_to", "az",
                   "region", "launcher", "tenant_name", "requestor")

    def _load(self, data: dict) -> None:
        for name in self._FIELDS:
            setattr(self, name, data.get(name))
        for name in self._STR_FIELDS:
            setattr(self, name, _opt_str(data, name))
        labels = data.get("type")
        if isinstance(labels, str):
            # Records from old launchers hold a single label.
            self.type = [labels]
        else:
            self.type = _str_list(data, "type")
        port = data.get("connection_port")
        if port is None:
            port = data.get("ssh_port")
        self.connection_port = (DEFAULT_CONNECTION_PORT if port is None
                                else port)
        self.created_time = _opt_number(data, "created_time")
        self.host_keys = _list(data, "host_keys")
        self.username = data.get("username", DEFAULT_USERNAME)
        expiration = data.get("hold_expiration")
        if expiration is not None:
            try:
                expiration = int(expiration)
            except (TypeError, ValueError, OverflowError):
                expiration = 0
        self.hold_expiration = expiration
        self.resources = _opt_dict(data, "resources")
        self.node_properties = _opt_dict(data, "node_properties") or {}

    def _repr_extra(self) -> List[Tuple[str, Any]]:
        return [("provider", self.provider), ("pool", self.pool),
                ("type", self.type), ("allocated_to", self.allocated_to)]


# -- node requests ------------------------------------------------------------

class NodeRequest(Record):
    """A node request, ``/nodepool/requests/<prio>-<seq>``.

    ``lock`` holds the request lock (``/nodepool/requests-lock/<id>``)
    while this process owns it.
    """

    STATES = RequestState
    _FIELDS = (
        "declined_by", "node_types", "nodes", "reuse", "requestor",
        "requestor_data", "provider", "relative_priority", "event_id",
        "created_time", "tenant_name",
    )

    def __init__(self, id: Optional[str] = None):
        super().__init__(id)
        self.declined_by: List[str] = []
        self.node_types: List[str] = []
        self.nodes: List[str] = []
        self.reuse: bool = True
        self.requestor: Optional[str] = None
        self.requestor_data: Any = None
        self.provider: Optional[str] = None
        self.relative_priority: int = 0
        self.event_id: Optional[str] = None
        self.created_time: Optional[float] = None
        self.tenant_name: Optional[str] = None

    @classmethod
    def new(cls, node_types: List[str], requestor: Optional[str] = None, *,
            provider: Optional[str] = None, relative_priority: int = 0,
            reuse: bool = True, tenant_name: Optional[str] = None,
            event_id: Optional[str] = None, requestor_data: Any = None,
            created_time: Optional[float] = None) -> "NodeRequest":
        """A new ``requested`` request, not yet stored (``id`` is None).

        ``event_id`` defaults to a fresh ``uuid4().hex``.
        """
        request = cls()
        request.state = RequestState.REQUESTED
        request.node_types = list(node_types)
        request.requestor = requestor
        request.provider = provider
        request.relative_priority = relative_priority
        request.reuse = reuse
        request.tenant_name = tenant_name
        request.event_id = event_id or uuid.uuid4().hex
        request.requestor_data = requestor_data
        request.created_time = created_time
        return request

    @classmethod
    def salvage(cls, payload: Optional[bytes],
                id: Optional[str] = None) -> "NodeRequest":
        """A valid, stateless request with what can be read of a payload
        that :meth:`from_bytes` rejects.

        Each field of a JSON object payload is kept when it is valid on its
        own and gets its default otherwise; a payload that is no JSON
        object at all yields a blank request.  Used to fail a malformed
        request while keeping what its requestor may recognise it by
        (``requestor``, ``requestor_data``, ``event_id``).  The caller
        sets the state.
        """
        request = cls(id)
        try:
            decoded = json.loads(bytes(payload).decode("utf-8"))
        except (TypeError, UnicodeDecodeError, ValueError):
            decoded = None
        if not isinstance(decoded, dict):
            return request
        for name in cls._FIELDS:
            if name not in decoded:
                continue
            trial = cls()
            try:
                trial._load_dict({"state": RequestState.FAILED.value,
                                  "node_types": [], name: decoded[name]})
            except InvalidRecordError:
                continue
            setattr(request, name, getattr(trial, name))
        return request

    @property
    def priority(self) -> Tuple[str, int, str]:
        """Sort key ``(prefix, relative_priority, sequence)``.

        Lower sorts first (more urgent).  A request without an id sorts as
        prefix ``""``; an id without ``-`` is used whole as the prefix.
        """
        if self.id is None:
            prefix, sequence = "", ""
        else:
            try:
                prefix, sequence = split_request_id(self.id)
            except ValueError:
                prefix, sequence = self.id, ""
        return (prefix, self.relative_priority, sequence)

    def _dump(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in self._FIELDS}

    # As for nodes: fields used as keys or compared with names.
    _STR_FIELDS = ("requestor", "provider", "event_id", "tenant_name")

    def _load(self, data: dict) -> None:
        for name in self._FIELDS:
            setattr(self, name, data.get(name))
        for name in self._STR_FIELDS:
            setattr(self, name, _opt_str(data, name))
        self.declined_by = _str_list(data, "declined_by")
        if data.get("node_types") is None:
            # nodepool 11 reads this as no labels and fulfils the request
            # with no nodes; no requestor means that.
            raise InvalidRecordError("node_types is missing")
        self.node_types = _str_list(data, "node_types")
        self.nodes = _str_list(data, "nodes")
        reuse = data.get("reuse")
        if reuse is None:
            reuse = True
        elif not isinstance(reuse, bool):
            raise InvalidRecordError("reuse must be a boolean, not %s"
                                     % _short(reuse))
        self.reuse = reuse
        priority = data.get("relative_priority")
        if priority is None:
            priority = 0
        elif not isinstance(priority, int) or isinstance(priority, bool):
            raise InvalidRecordError("relative_priority must be an integer, "
                                     "not %s" % _short(priority))
        self.relative_priority = priority
        self.created_time = _opt_number(data, "created_time")

    def _repr_extra(self) -> List[Tuple[str, Any]]:
        return [("node_types", self.node_types),
                ("requestor", self.requestor), ("nodes", self.nodes)]


# -- images -------------------------------------------------------------------

class ImageBuild(Record):
    """An image build, ``/nodepool/images/<image>/builds/<id>``.

    ``formats`` is a list in memory and a sorted, comma-joined string on
    the wire.  ``builder``, ``builder_id`` and ``formats`` are only written
    when set (non-empty for ``formats``).
    """

    STATES = BuildState
    _ID_ATTRS = ("image_name", "id")
    _FIELDS = ("builder", "builder_id", "formats", "username", "python_path",
               "shell_type")

    def __init__(self, image_name: Optional[str] = None,
                 id: Optional[str] = None):
        _check_id("image_name", image_name)
        super().__init__(id)
        self.image_name = image_name
        self.builder: Optional[str] = None
        self.builder_id: Optional[str] = None
        self.formats: List[str] = []
        self.username: Optional[str] = DEFAULT_USERNAME
        self.python_path: Optional[str] = None
        self.shell_type: Optional[str] = None

    def _dump(self) -> Dict[str, Any]:
        data = {}
        if self.builder is not None:
            data["builder"] = self.builder
        if self.builder_id is not None:
            data["builder_id"] = self.builder_id
        if self.formats:
            data["formats"] = ",".join(sorted(self.formats))
        data["username"] = self.username
        data["python_path"] = self.python_path
        data["shell_type"] = self.shell_type
        return data

    def _load(self, data: dict) -> None:
        self.builder = data.get("builder")
        self.builder_id = data.get("builder_id")
        formats = data.get("formats")
        if isinstance(formats, str):
            self.formats = [f for f in formats.split(",") if f]
        else:
            self.formats = _str_list(data, "formats")
        self.username = data.get("username", DEFAULT_USERNAME)
        self.python_path = data.get("python_path", DEFAULT_PYTHON_PATH)
        self.shell_type = data.get("shell_type")

    def _repr_extra(self) -> List[Tuple[str, Any]]:
        return [("builder", self.builder), ("formats", self.formats)]


class ImageUpload(Record):
    """An upload of a build to a provider.

    Lives at ``.../builds/<build_id>/providers/<provider>/images/<id>``;
    the image, build and provider names come from that path.
    """

    STATES = UploadState
    _ID_ATTRS = ("image_name", "build_id", "provider_name", "id")
    _FIELDS = ("external_id", "external_name", "format", "username",
               "python_path", "shell_type")

    def __init__(self, image_name: Optional[str] = None,
                 build_id: Optional[str] = None,
                 provider_name: Optional[str] = None,
                 id: Optional[str] = None):
        _check_id("image_name", image_name)
        _check_id("build_id", build_id)
        _check_id("provider_name", provider_name)
        super().__init__(id)
        self.image_name = image_name
        self.build_id = build_id
        self.provider_name = provider_name
        self.external_id: Optional[str] = None
        self.external_name: Optional[str] = None
        self.format: Optional[str] = None
        self.username: Optional[str] = DEFAULT_USERNAME
        self.python_path: Optional[str] = None
        self.shell_type: Optional[str] = None

    def _dump(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in self._FIELDS}

    def _load(self, data: dict) -> None:
        self.external_id = data.get("external_id")
        self.external_name = data.get("external_name")
        self.format = data.get("format")
        self.username = data.get("username", DEFAULT_USERNAME)
        self.python_path = data.get("python_path", DEFAULT_PYTHON_PATH)
        self.shell_type = data.get("shell_type")

    def _repr_extra(self) -> List[Tuple[str, Any]]:
        return [("external_id", self.external_id), ("format", self.format)]


class Image:
    """The container znode ``/nodepool/images/<name>`` as the image cache
    sees it.

    It has no payload; ``paused`` mirrors the presence of the ``pause``
    child and is maintained by whoever watches that child, so
    :meth:`update_from` leaves it alone.
    """

    def __init__(self, name: Optional[str] = None, paused: bool = False):
        _check_id("name", name)
        self.name = name
        self.paused = bool(paused)
        self.stat = None

    @property
    def mzxid(self) -> int:
        """The zxid of the last change read, or -1 if never read."""
        return self.stat.mzxid if self.stat is not None else -1

    def to_dict(self) -> Dict[str, Any]:
        """Always ``{}``: the container carries no data."""
        return {}

    def serialize(self) -> bytes:
        """Always ``b""``."""
        return b""

    @classmethod
    def from_dict(cls, data: dict, name: Optional[str] = None) -> "Image":
        """An unpaused Image; ``data`` is ignored."""
        return cls(name)

    @classmethod
    def from_bytes(cls, data: bytes, stat=None,
                   name: Optional[str] = None) -> "Image":
        """An unpaused Image with ``stat``; the payload is ignored."""
        image = cls(name)
        image.stat = stat
        return image

    def update_from(self, other: "Image") -> None:
        """Take ``stat`` from ``other``; ``name`` and ``paused`` are kept."""
        if type(other) is not type(self):
            raise TypeError("cannot update Image from %s"
                            % type(other).__name__)
        self.stat = other.stat

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.name == other.name and self.paused == other.paused

    __hash__ = None

    def __repr__(self) -> str:
        return "<Image name=%r paused=%r>" % (self.name, self.paused)
