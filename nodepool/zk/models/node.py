# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The node record."""

import time
from typing import Any, Dict, List, Optional, Tuple

from nodepool.zk.models.base import (
    DEFAULT_CONNECTION_PORT, DEFAULT_USERNAME, Record, _list, _opt_dict,
    _opt_number, _opt_str, _str_list)
from nodepool.zk.models.states import NodeState


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
