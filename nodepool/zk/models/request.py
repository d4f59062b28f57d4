# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The node request record."""

import json
import uuid
from typing import Any, Dict, List, Optional, Tuple

from nodepool.exceptions import InvalidRecordError
from nodepool.zk.models.base import (Record, _opt_number, _opt_str, _short,
                                     _str_list)
from nodepool.zk.models.states import RequestState
from nodepool.zk.paths import split_request_id


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
