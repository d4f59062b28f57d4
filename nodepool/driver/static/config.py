# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Schema and config objects of the static driver."""

from dataclasses import dataclass

import voluptuous as v

from nodepool.config import schema
from nodepool.config.models import ConfigObject
from nodepool.driver.base import (
    LabelConfig, PoolConfig, ProviderConfig, build_pools)


# A static host's port when neither ``connection-port`` nor ``ssh-port`` is
# given, whatever its ``connection-type``: nodepool 11 uses 22 for winrm
# hosts too (cloud images differ: 5986 for winrm).
DEFAULT_PORT = 22


def _node_port(data):
    # ``ssh-port`` is the legacy spelling; ``connection-port`` wins.
    port = data["connection-port"]
    if port is None:
        port = data["ssh-port"]
    if port is None:
        port = DEFAULT_PORT
    data = dict(data, **{"connection-port": port})
    del data["ssh-port"]
    return data


NODE = schema.Section({
    v.Required("name"): str,
    v.Required("labels"): schema.string_list,
    v.Optional("username", default="zuul"): str,
    v.Optional("timeout", default=5): int,
    v.Optional("host-key-checking", default=True): bool,
    v.Optional("host-key", default=list): schema.string_list,
    v.Optional("connection-port", default=None): schema.nullable(int),
    v.Optional("ssh-port", default=None): schema.nullable(int),
    v.Optional("connection-type", default="ssh"): str,
    v.Optional("shell-type", default=None): schema.nullable(str),
    v.Optional("max-parallel-jobs", default=1): int,
    v.Optional("python-path", default="auto"): str,
}, _node_port)

POOL = schema.POOL.extend({
    v.Optional("nodes", default=list): schema.each(NODE),
})

PROVIDER = schema.PROVIDER.extend({
    v.Required("pools"): schema.each(POOL, unique="name"),
})


@dataclass(frozen=True, kw_only=True)
class StaticNode(ConfigObject):
    """A static host.

    ``labels`` is the tuple of label names (a string in the file is split
    on whitespace).  ``host_key`` lists the expected host keys.  Hosts are
    identified by (name, username, connection_port).
    """

    name: str
    labels: tuple
    username: str
    timeout: int
    host_key_checking: bool
    host_key: tuple
    connection_port: int
    connection_type: str
    shell_type: str | None
    max_parallel_jobs: int
    python_path: str

    @property
    def identity(self) -> tuple:
        return (self.name, self.username, self.connection_port)


@dataclass(frozen=True, kw_only=True)
class StaticLabel(LabelConfig):
    """A label offered by at least one host of a static pool."""


@dataclass(frozen=True, kw_only=True)
class StaticPool(PoolConfig):
    """A static pool: its hosts (``nodes``) in file order."""

    nodes: tuple


@dataclass(frozen=True, kw_only=True)
class StaticProviderConfig(ProviderConfig):
    """A static provider; it never manages images."""


def _split_labels(names):
    return tuple(part for name in names for part in name.split())


def build_provider(data, ctx, path):
    """Build a StaticProviderConfig from validated provider data."""
    def build_pool(pool, pool_path):
        nodes = []
        labels = {}
        for index, node in enumerate(pool["nodes"]):
            node = dict(node, labels=_split_labels(node["labels"]))
            for name in node["labels"]:
                ctx.require_label(
                    name, pool_path + ("nodes", index, "labels"))
                labels.setdefault(name, StaticLabel(name=name))
            nodes.append(StaticNode(**node))
        return StaticPool(**dict(pool, nodes=nodes, labels=labels))
    return StaticProviderConfig(**dict(
        data, pools=build_pools(data, ctx, path, build_pool)))
