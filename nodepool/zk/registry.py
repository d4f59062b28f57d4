# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The component registry: read-only copies of every component record.

:mod:`nodepool.zk.components` writes a process's own records; this module
reads everybody's.  :class:`ComponentRegistry` watches every record below
``/nodepool/components`` and keeps a :class:`ComponentInfo` per record;
:func:`check_component_record` decides whether a record is usable.
"""

import json
import logging
import queue
import threading
import types
from typing import Any, Dict, List, Optional

from kazoo.exceptions import KazooException, NoNodeError
from kazoo.protocol.states import EventType, KazooState

from nodepool.zk import paths
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.components import KINDS, MODEL_API, POOL
from nodepool.zk.invalid import InvalidRecordLog

log = logging.getLogger("nodepool.zk.registry")

#: How long :meth:`ComponentRegistry.stop` waits for its thread to finish
#: a call (one waiting for a ZooKeeper connection may never end).
REGISTRY_JOIN_TIMEOUT = 10.0


# Types of the record keys readers rely on, checked when a record is read:
# a pool record with e.g. a string for ``supported_labels`` would otherwise
# be taken for a set of one-letter labels, and one with a list for ``id``
# would break every pool worker's pass.  Null is accepted everywhere.
_KEY_TYPES: Dict[str, Dict[str, tuple]] = {
    "": {"hostname": (str,), "state": (str,), "kind": (str,),
         "version": (str,)},
    POOL: {"id": (str,), "name": (str,), "provider_name": (str,),
           "supported_labels": (list,), "priority": (int,),
           "paused": (bool,)},
}


def check_component_record(kind: str, content: Any) -> None:
    """Raise ValueError unless ``content`` is a usable ``kind`` record."""
    if not isinstance(content, dict):
        raise ValueError("not a JSON object")
    for table in (_KEY_TYPES[""], _KEY_TYPES.get(kind, {})):
        for key, allowed in table.items():
            value = content.get(key)
            if value is None:
                continue
            if not isinstance(value, allowed) or (
                    isinstance(value, bool) and bool not in allowed):
                raise ValueError("%s must be %s, not %r"
                                 % (key, allowed[0].__name__, value))
    labels = content.get("supported_labels")
    if kind == POOL and labels is not None and \
            not all(isinstance(label, str) for label in labels):
        raise ValueError("supported_labels must be a list of strings, "
                         "not %r" % (labels,))


class ComponentInfo:
    """Read-only copy of somebody's component record, as the registry saw it.

    Record keys are attributes (``info.supported_labels``); lists are turned
    into tuples so the copy cannot be changed in place.  A key missing from
    the record reads as ``None``.
    """

    __slots__ = ("kind", "name", "path", "_content")

    def __init__(self, kind: str, name: str, content: Dict[str, Any]):
        frozen = {k: tuple(v) if isinstance(v, list) else v
                  for k, v in content.items()}
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "path", paths.component_kind_path(kind)
                           + "/" + name)
        object.__setattr__(self, "_content", types.MappingProxyType(frozen))

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        return self._content.get(key)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("component records are read-only here")

    def to_dict(self) -> Dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in self._content.items()}

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ComponentInfo) and
                (self.path, dict(self._content)) ==
                (other.path, dict(other._content)))

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        return "<ComponentInfo %s %s>" % (self.path, dict(self._content))


class ComponentRegistry:
    """Watch every component record and keep read-only copies.

    Kazoo calls our watch callbacks on its event thread, which must not
    block, so they only queue the changed path; one thread of ours fetches
    data and sets the next (one-shot) watch.  After every reconnection the
    whole tree is read again, because change events may have been missed
    while a fetch failed or the session was replaced.

    The constructor returns once the first full read finished (or
    ``timeout`` passed; then the copy fills in when it can).

    Thread-safety: the readers may be called from any thread.  Call
    :meth:`stop` to end the watcher thread.
    """

    def __init__(self, zk_client: ZooKeeperClient,
                 timeout: Optional[float] = 30.0):
        self._zk = zk_client
        self._lock = threading.Lock()
        self._components: Dict[str, Dict[str, ComponentInfo]] = {
            kind: {} for kind in KINDS}
        self._queue: queue.Queue = queue.Queue()
        self._synced = threading.Event()
        self._invalid_log = InvalidRecordLog()
        self._stopped = False
        self._departure_listeners: list = []
        self._thread = threading.Thread(
            target=self._run, name="ComponentRegistry", daemon=True)
        self._zk.add_state_listener(self._on_state)
        self._thread.start()
        self._queue.put(("sync",))
        self._synced.wait(timeout)

    def stop(self) -> None:
        """Stop watching; the copies stay as they were."""
        self._stopped = True
        self._zk.remove_state_listener(self._on_state)
        self._queue.put(None)
        self._thread.join(REGISTRY_JOIN_TIMEOUT)
        if self._thread.is_alive():
            # Blocked in a call waiting for the connection; a daemon
            # thread, it goes with the process.
            log.warning("Component registry still waiting for ZooKeeper; "
                        "leaving it behind")

    def add_departure_listener(self, listener) -> None:
        """Call ``listener(kind, name)`` when a component record goes away
        (its owner stopped or its session ended), from the registry's
        thread: it must not block."""
        self._departure_listeners.append(listener)

    # Readers ------------------------------------------------------------

    def all(self, kind: Optional[str] = None) -> List[ComponentInfo]:
        """Records of one kind (or of every kind), ordered by znode name."""
        with self._lock:
            kinds = [kind] if kind else list(KINDS)
            result = []
            for k in kinds:
                records = self._components.get(k, {})
                result.extend(records[name] for name in sorted(records))
            return result

    def pools(self) -> List[ComponentInfo]:
        """All registered ``pool`` records."""
        return self.all(POOL)

    @property
    def model_api(self) -> int:
        """The system's data model version.

        The minimum of our own :data:`MODEL_API` and every registered
        component's ``model_api``; records without a usable integer are
        ignored.
        """
        result = MODEL_API
        for info in self.all():
            value = info.model_api
            if isinstance(value, int) and not isinstance(value, bool):
                result = min(result, value)
        return result

    # Watch plumbing -----------------------------------------------------

    def _on_state(self, state: KazooState) -> None:
        if state == KazooState.CONNECTED:
            self._queue.put(("sync",))

    def _on_children(self, event) -> None:
        # Kazoo event thread: queue only.
        if event.type == EventType.CHILD and event.path:
            self._queue.put(("children", event.path))

    def _on_data(self, event) -> None:
        # Kazoo event thread: queue only.  Events without a path come from
        # a lost session; the resync after reconnection covers them.
        if event.path and event.type != EventType.NONE:
            self._queue.put(("data", event.path))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stopped:
                return
            try:
                if item[0] == "sync":
                    self._sync()
                    self._synced.set()
                elif item[0] == "children":
                    self._fetch_children(self._kind_of(item[1]))
                else:
                    kind, _, name = item[1].rpartition("/")
                    self._fetch_data(self._kind_of(kind), name)
            except KazooException as e:
                # The connection is down; the CONNECTED state change that
                # follows queues a full sync.
                log.warning("Component registry could not read %s: %s",
                            item, e)
            except Exception:
                log.exception("Component registry failed on %s", item)

    @staticmethod
    def _kind_of(kind_path: str) -> str:
        return kind_path.rstrip("/").rpartition("/")[2]

    def _sync(self) -> None:
        for kind in KINDS:
            self._zk.kazoo.ensure_path(paths.component_kind_path(kind))
            for name in self._fetch_children(kind):
                self._fetch_data(kind, name)

    def _fetch_children(self, kind: str) -> List[str]:
        """Re-list one kind, drop vanished records and read new ones.

        Returns every current child name.
        """
        names = self._zk.kazoo.get_children(
            paths.component_kind_path(kind), watch=self._on_children)
        with self._lock:
            known = self._components[kind]
            departed = set(known) - set(names)
            for gone in departed:
                log.debug("Component %s/%s went away", kind, gone)
                del known[gone]
            new = [n for n in names if n not in known]
        for gone in sorted(departed):
            self._departed(kind, gone)
        for name in new:
            self._fetch_data(kind, name)
        return names

    def _fetch_data(self, kind: str, name: str) -> None:
        path = paths.component_path(kind, name)
        try:
            data, stat = self._zk.kazoo.get(path, watch=self._on_data)
        except NoNodeError:
            data = stat = None
        info = None
        if data:
            try:
                content = json.loads(data.decode("utf8"))
                check_component_record(kind, content)
                info = ComponentInfo(kind, name, content)
            except ValueError as e:
                # One bad record must not hide the others.
                self._invalid_log.report(log, path, stat, e, "component record")
        with self._lock:
            if info is None:
                known = self._components[kind].pop(name, None)
            else:
                self._components[kind][name] = info
        if info is None and stat is None and known is not None:
            self._departed(kind, name)

    def _departed(self, kind: str, name: str) -> None:
        for listener in list(self._departure_listeners):
            try:
                listener(kind, name)
            except Exception:
                log.exception("Component departure listener failed")
