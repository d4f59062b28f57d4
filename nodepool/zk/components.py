# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Component registration, the component registry and the stats election.

Every daemon process announces itself below ``/nodepool/components/<kind>``
with an ephemeral sequential znode whose payload is a JSON object written
with ``sort_keys=True``, as nodepool 11 writes it.  Launchers register one
``launcher`` record plus one ``pool`` record per provider pool worker;
builders register a ``builder`` record.  Pool records are what request
handling consults to know which pools exist, which labels they serve, their
priority and whether they are paused.

* :class:`BaseComponent` and its subclasses own *one* record each: they
  create it, rewrite it on :meth:`BaseComponent.update` and create it again
  after the ZooKeeper session was replaced.
* :class:`~nodepool.zk.registry.ComponentRegistry` watches every record
  of every kind and keeps read-only copies.
* :class:`~nodepool.zk.election.StatsElection` (re-exported here) elects
  the single launcher that emits the global gauges.
"""

import enum
import json
import logging
import socket
import threading
from typing import Any, Dict, Optional

from kazoo.exceptions import BadVersionError, KazooException, NoNodeError
from kazoo.protocol.states import KazooState

from nodepool.version import __version__
from nodepool.zk import paths
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.election import StatsElection  # noqa: F401  (re-export)

log = logging.getLogger("nodepool.zk.components")

# The data model version this code writes and understands.  The system's
# version is the minimum over every registered component (see
# ComponentRegistry.model_api); bump it only together with a compatibility
# mode for older readers.
MODEL_API = 0

#: How long :meth:`ComponentRecord.unregister` waits for ZooKeeper to
#: answer its delete (a daemon shutting down must not wait for a
#: ZooKeeper that is down).
UNREGISTER_TIMEOUT = 10.0


class ComponentState(str, enum.Enum):
    """Values of a component record's ``state`` key."""

    INITIALIZING = "initializing"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


INITIALIZING = ComponentState.INITIALIZING.value
RUNNING = ComponentState.RUNNING.value
PAUSED = ComponentState.PAUSED.value
STOPPED = ComponentState.STOPPED.value

# Component kinds (the middle path segment and the ``kind`` key).
LAUNCHER = paths.COMPONENT_LAUNCHER
BUILDER = paths.COMPONENT_BUILDER
POOL = paths.COMPONENT_POOL
KINDS = (LAUNCHER, BUILDER, POOL)


class BaseComponent:
    """One component record owned by this process.

    The record's content lives in memory and is mirrored to ZooKeeper once
    :meth:`register` was called.  Attributes are readable as plain
    attributes (``component.state``) and changed only with :meth:`update`,
    so that every change is written.

    Thread-safety: all methods may be called from any thread; an internal
    lock serialises writes, including the rewrite done from the ZooKeeper
    client's dispatch thread after a session loss.

    :param zk_client: the connected client whose session owns the record.
    :param hostname: defaults to ``socket.gethostname()``; it is also the
        prefix of the znode name.
    """

    kind: str = ""
    # Keys beyond the common ones, with their initial values.
    extra_defaults: Dict[str, Any] = {}
    # Our additions to nodepool 11's records, left out while empty.
    optional_keys: frozenset = frozenset()

    def __init__(self, zk_client: ZooKeeperClient,
                 hostname: Optional[str] = None):
        if self.kind not in KINDS:
            raise TypeError("%s has no valid component kind"
                            % type(self).__name__)
        content = {
            "hostname": hostname or socket.gethostname(),
            "state": STOPPED,
            "kind": self.kind,
            "version": __version__,
            "model_api": MODEL_API,
        }
        for key, value in self.extra_defaults.items():
            # Copy mutable defaults so instances never share them.
            if isinstance(value, (list, dict)):
                value = type(value)(value)
            content[key] = value
        # Set through __dict__: __setattr__ below refuses content keys.
        self.__dict__.update(
            _zk=zk_client, _content=content, _lock=threading.RLock(),
            _registered=False, _dirty=False, path=None, _version=-1)

    # Attribute access ---------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not found normally: the record's keys.
        content = self.__dict__.get("_content", {})
        if name in content:
            return content[name]
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__.get("_content", {}):
            raise AttributeError(
                "use update(%s=...) to change a component record" % name)
        super().__setattr__(name, value)

    def to_dict(self) -> Dict[str, Any]:
        """A copy of the record's content."""
        with self._lock:
            return json.loads(self._serialize())

    def _serialize(self) -> bytes:
        content = {k: v for k, v in self._content.items()
                   if v or k not in self.optional_keys}
        return json.dumps(content, sort_keys=True).encode("utf8")

    # Registration -------------------------------------------------------

    @property
    def registered(self) -> bool:
        """Whether the record exists: :meth:`register` succeeded (its
        path is known) and :meth:`unregister` was not called since.  (No
        lock: it would wait for a registration's ZooKeeper calls.)"""
        return self._registered and self.path is not None

    def register(self) -> str:
        """Create the record; return its path.

        Also arranges for the record to be created again, with the latest
        content, whenever the client's session is replaced after a loss.
        Calling it again while registered only makes sure the record
        exists.

        :raises kazoo.exceptions.KazooException: ZooKeeper errors
            (connection loss etc.); the component then stays unregistered.
        """
        with self._lock:
            first = not self._registered
            self._registered = True
            try:
                self._ensure_record()
            except Exception:
                if first:
                    self._registered = False
                raise
            if first:
                self._zk.add_session_listener(self._on_new_session)
                self._zk.add_state_listener(self._on_state)
            return self.path

    def unregister(self) -> None:
        """Delete the record and stop re-registering it.

        A record that is already gone (e.g. with an expired session) is not
        an error; neither is a connection failure (logged; the ephemeral
        record then goes with the session).  Never waits for a connection
        that is down, nor longer than :data:`UNREGISTER_TIMEOUT` for an
        answer: a daemon asked to stop during a ZooKeeper outage exits.
        """
        with self._lock:
            if not self._registered:
                return
            self._registered = False
            self._zk.remove_session_listener(self._on_new_session)
            self._zk.remove_state_listener(self._on_state)
            path, self.path = self.path, None
            self._version = -1
            if path is None:
                return
            if not self._zk.connected:
                # The record is ephemeral: it goes with the session.
                log.warning("Not deleting component %s: ZooKeeper is not "
                            "connected", path)
                return
            kazoo = self._zk.kazoo
            try:
                kazoo.delete_async(path).get(timeout=UNREGISTER_TIMEOUT)
            except NoNodeError:
                pass
            except (KazooException, kazoo.handler.timeout_exception) as e:
                # At worst it stays until the session ends (disconnect or
                # expiry).
                log.warning("Could not delete component %s: %r", path, e)

    def update(self, **attrs: Any) -> None:
        """Change attributes and write the record if registered.

        The write uses the znode version last seen; if somebody else wrote
        in between (``BadVersionError``) the version is re-read and our
        content written again: this process is the record's only author.
        If the record vanished it is created again.  If the connection is
        down the new content is kept and written once it is back.

        :raises TypeError: for a key this kind of record does not have.
        :raises ValueError: for an unknown ``state`` (a
            :class:`ComponentState` or its string).
        """
        for key in attrs:
            if key not in self._content:
                raise TypeError("%s record has no key %r" % (self.kind, key))
        if "state" in attrs:
            # Store the plain string: records are compared and dumped as
            # JSON values.
            attrs["state"] = ComponentState(attrs["state"]).value
        with self._lock:
            for key, value in attrs.items():
                if isinstance(value, (list, tuple, set, frozenset)):
                    value = list(value)
                self._content[key] = value
            if not self._registered:
                return
            self._dirty = True
            try:
                self._write()
            except KazooException as e:
                # Written again from _on_state once connected.
                log.warning("Could not write component %s yet: %s",
                            self.path, e)

    # Internals; callers hold self._lock ---------------------------------

    def _write(self) -> None:
        data = self._serialize()
        while True:
            try:
                stat = self._zk.kazoo.set(self.path, data,
                                          version=self._version)
            except BadVersionError:
                _, stat = self._zk.kazoo.get(self.path)
                self._version = stat.version
                continue
            except NoNodeError:
                self._ensure_record()
                return
            self._version = stat.version
            self._dirty = False
            return

    def _ensure_record(self) -> None:
        """Create the record unless this session already owns it."""
        kazoo = self._zk.kazoo
        if self.path is not None:
            stat = kazoo.exists(self.path)
            # An ephemeral node of the current session is ours; one left
            # by an expired session is about to vanish and must not count.
            if stat is not None and \
                    stat.ephemeralOwner == self._zk.session_id:
                if self._dirty:
                    self._write()
                return
        path = kazoo.create(
            paths.component_path(self.kind, self._content["hostname"]),
            self._serialize(), ephemeral=True, sequence=True, makepath=True)
        self.path = path
        self._version = 0
        self._dirty = False
        log.debug("Registered component %s", path)

    def _on_new_session(self) -> None:
        # Dispatch thread of the client, after the old session (and with
        # it the ephemeral record) was lost.
        with self._lock:
            if not self._registered:
                return
            log.info("Registering component %s again after session loss",
                     self.path)
            self._ensure_record()

    def _on_state(self, state: KazooState) -> None:
        # Flush content that could not be written while disconnected.
        if state != KazooState.CONNECTED:
            return
        with self._lock:
            if self._registered and self._dirty:
                try:
                    self._write()
                except KazooException as e:
                    log.warning("Could not write component %s: %s",
                                self.path, e)

    def __repr__(self) -> str:
        return "<%s %s %s>" % (type(self).__name__, self.path, self._content)


class LauncherComponent(BaseComponent):
    """The ``launcher`` record of a launcher daemon."""

    kind = LAUNCHER


class BuilderComponent(BaseComponent):
    """The ``builder`` record of a builder daemon."""

    kind = BUILDER


class PoolComponent(BaseComponent):
    """The ``pool`` record of one provider pool worker.

    ``id`` is the pool worker's launcher id (what request handling writes
    into ``declined_by``); ``priority`` defaults to 100 like the config.
    ``waiting`` (ours; display only, never checked) maps ids of requests
    the pool wants to serve but has not yet to why (request-status.rst).
    """

    kind = POOL
    extra_defaults = {
        "id": None,
        "name": None,
        "provider_name": None,
        "supported_labels": [],
        "priority": 100,
        "paused": False,
        "waiting": {},
    }
    optional_keys = frozenset({"waiting"})
