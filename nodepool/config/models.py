# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Immutable configuration objects.

All objects are frozen dataclasses built from validated schema output
(``Class(**data)``: field names are the config keys with ``-`` replaced by
``_``, and the schema supplies every default).  Collections are frozen on
construction (lists become tuples, dicts :class:`FrozenDict`), so objects
compare by value and hash.  The launcher relies on that equality: a
provider whose config object compares unequal after a reload is restarted.

Fields that may hold secrets are declared with ``repr=False``.
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field


class FrozenDict(Mapping):
    """A read-only mapping that compares by value and is hashable.

    Keeps insertion order (file order for names built from lists).
    """

    __slots__ = ("_data", "_hash")

    def __init__(self, *args, **kwargs):
        self._data = dict(*args, **kwargs)
        self._hash = None

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __eq__(self, other):
        if isinstance(other, FrozenDict):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __hash__(self):
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __repr__(self):
        return "FrozenDict(%r)" % (self._data,)


def freeze(value):
    """Deep-convert lists to tuples and dicts to :class:`FrozenDict`."""
    if isinstance(value, FrozenDict):
        return value
    if isinstance(value, Mapping):
        return FrozenDict((k, freeze(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, set):
        return frozenset(freeze(v) for v in value)
    return value


def thaw(value):
    """Plain (JSON-ready) data from frozen values: the inverse of
    :func:`freeze` for mappings and sequences."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True, kw_only=True)
class ConfigObject:
    """Base of every config object: freezes its fields on construction."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            frozen = freeze(value)
            if frozen is not value:
                object.__setattr__(self, f.name, frozen)

    def replace(self, **changes):
        """A copy with some fields changed (objects are immutable)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class ZooKeeperServer(ConfigObject):
    """One ZooKeeper server: ``host``, ``port`` and optional ``chroot``."""

    host: str
    port: int
    chroot: str | None

    @property
    def host_port(self) -> str:
        """``host:port``; IPv6 literals are wrapped in brackets."""
        host = self.host
        if ":" in host and not host.startswith("["):
            host = "[%s]" % host
        return "%s:%d" % (host, self.port)


@dataclass(frozen=True, kw_only=True)
class ZooKeeperTLS(ConfigObject):
    """Paths of the client certificate, its key and the CA certificate;
    whether the server's name is checked; the x509 identities given access
    to new znodes (None: no ACLs, everyone may write)."""

    cert: str
    key: str
    ca: str
    check_hostname: bool = True
    acl: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class WebApp(ConfigObject):
    """Where the launcher's status web app listens, and which origin its
    CORS header names (None: no header)."""

    port: int
    listen_address: str
    cors_origin: str | None


@dataclass(frozen=True, kw_only=True)
class Label(ConfigObject):
    """A top-level label.

    ``min_ready`` <= 0 disables min-ready requests; ``max_ready_age`` 0
    disables deleting old unused ready nodes.
    """

    name: str
    min_ready: int
    max_ready_age: int


@dataclass(frozen=True, kw_only=True)
class DiskImage(ConfigObject):
    """A diskimage after ``parent`` inheritance was applied.

    ``env_vars`` may come from the secure file and is kept out of repr.
    ``abstract`` images are never built.  ``release`` is always a string.
    """

    name: str
    abstract: bool
    parent: str | None
    dib_cmd: str
    elements: tuple
    env_vars: FrozenDict = field(repr=False)
    formats: tuple | None
    keep_formats: tuple | None
    delete_after_upload: bool
    pause: bool
    release: str
    rebuild_age: int
    build_timeout: int
    username: str
    python_path: str
    shell_type: str | None
    metadata: FrozenDict

    @property
    def buildable(self) -> bool:
        """Whether the builder should ever build this image."""
        return not self.abstract


@dataclass(frozen=True, kw_only=True)
class TenantResourceLimit(ConfigObject):
    """Resource limits of one tenant, keyed by quota name.

    ``limits`` uses the quota names (``cores``, ``ram``, ``instances``,
    ``volumes``, ``volume-gb``, or any other key verbatim, such as an AWS
    quota code); a quota absent from it is unlimited.
    """

    tenant_name: str
    limits: FrozenDict


@dataclass(frozen=True, kw_only=True)
class Config(ConfigObject):
    """A complete, validated configuration.

    ``labels``, ``diskimages`` and ``providers`` map names to objects, in
    file order.  Providers are instances of driver-specific subclasses of
    :class:`nodepool.driver.base.ProviderConfig`.
    """

    webapp: WebApp
    elements_dir: str | None
    images_dir: str | None
    images_dir_required_free: int
    build_log_dir: str
    build_log_retention: int
    zookeeper_servers: tuple
    zookeeper_tls: ZooKeeperTLS | None
    zookeeper_timeout: float
    labels: FrozenDict
    diskimages: FrozenDict
    providers: FrozenDict
    max_hold_age: int | None
    tenant_resource_limits: FrozenDict

    @property
    def zookeeper_hosts(self) -> str:
        """The kazoo hosts string: every ``host:port``, then the chroot.

        A connection has one chroot, written once after the last server;
        the first server that names one decides it.
        """
        hosts = ",".join(s.host_port for s in self.zookeeper_servers)
        chroot = next((s.chroot for s in self.zookeeper_servers
                       if s.chroot), None)
        if chroot:
            hosts += "/" + chroot.strip("/")
        return hosts
