# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Driver base class and the provider/pool/label config bases.

A driver supplies, for now, two things: the schema of a provider using it
(:meth:`Driver.provider_schema`, the common keys extended with its own) and
the construction of its provider config object from the validated data
(:meth:`Driver.build_provider`), and at run time the adapter to its cloud
(:meth:`Driver.get_adapter`).  Driver modules keep cloud SDK imports out of
module level so that config validation stays cheap.
"""

import threading
from dataclasses import dataclass, field

from nodepool.config import schema
from nodepool.config.context import BuildContext  # noqa: F401 (re-export)
from nodepool.config.models import ConfigObject, FrozenDict


@dataclass(frozen=True, kw_only=True)
class LabelConfig(ConfigObject):
    """A label as offered by one pool.

    The properties are what the launch framework asks of every label; a
    driver whose labels have the matching keys answers from them (see
    :class:`nodepool.driver.cloud.CloudLabelConfig`).  The base answers
    are those of a driver without images or host-key scans.
    """

    name: str

    @property
    def diskimage_name(self) -> str | None:
        """The provider diskimage nodes of this label boot, if any."""
        return None

    @property
    def cloud_image_name(self) -> str | None:
        """The provider cloud image nodes of this label boot, if any."""
        return None

    @property
    def checks_host_keys(self) -> bool | None:
        """Whether new nodes are scanned for host keys; None lets the
        pool decide (:attr:`PoolConfig.checks_host_keys`)."""
        return None

    @property
    def wants_console_log(self) -> bool:
        """Whether the console log is logged after a failed scan."""
        return False

    @property
    def capacity_types(self) -> tuple | None:
        """The machine types (instance types, flavors, VM sizes) to try
        in order when the cloud runs out of capacity, the label's own
        first; None when the label has no fallback key, and a capacity
        failure is an ordinary failed attempt (nodepool 11).  See
        :mod:`nodepool.driver.capacity`."""
        return None

    def for_capacity_type(self, type_name: str) -> "LabelConfig":
        """This label launching ``type_name`` (one of
        :attr:`capacity_types`) instead of its own type."""
        return self


@dataclass(frozen=True, kw_only=True)
class PoolConfig(ConfigObject):
    """A pool of a provider; ``labels`` maps names to LabelConfig objects.

    ``max_servers`` is ``math.inf`` when unlimited; <= 0 disables the pool.
    ``priority``: lower is preferred (pool, else provider, else 100).
    """

    name: str
    max_servers: float
    priority: int
    node_attributes: FrozenDict
    labels: FrozenDict

    def quota_limits(self) -> dict:
        """The pool's own limits by quota name (``instances``, ``cores``,
        ``ram``, ``volumes``, ``volume-gb`` or any resource name); a name
        left out is unlimited.  Drivers with more ``max-*`` keys extend
        it."""
        return {"instances": self.max_servers}

    @property
    def checks_provider_quota(self) -> bool:
        """Whether the provider's (cloud's) quota limits this pool too;
        only OpenStack pools can opt out (``ignore-provider-quota``)."""
        return True

    @property
    def zone_choices(self) -> tuple:
        """Availability zones new nodes may be placed in; empty: any zone
        the cloud offers."""
        return ()

    @property
    def prefers_private_ip(self) -> bool:
        """Whether nodes are reached on their private address even when
        they have a public one (``use-internal-ip``)."""
        return False

    @property
    def checks_host_keys(self) -> bool:
        """Whether new nodes of labels that do not decide are scanned for
        host keys (:attr:`LabelConfig.checks_host_keys`)."""
        return True


@dataclass(frozen=True, kw_only=True)
class ProviderConfig(ConfigObject):
    """The config of one provider; drivers subclass it.

    Equality (by value, same class only) decides whether a provider must be
    restarted on reload.
    """

    name: str
    driver: str
    max_concurrency: int
    priority: int | None
    pools: FrozenDict

    @property
    def manage_images(self) -> bool:
        """Whether nodepool uploads diskimages to this provider."""
        return False

    def label_image(self, label: LabelConfig) -> "ImageConfig | None":
        """The image entry nodes of ``label`` boot, if the driver has
        images."""
        return None

    @property
    def node_cloud(self) -> str | None:
        """The ``cloud`` recorded on a new node before its instance
        reports one."""
        return None

    @property
    def node_region(self) -> str | None:
        """The ``region`` recorded on a new node before its instance
        reports one."""
        return None

    @property
    def supported_labels(self) -> frozenset:
        """Names of all labels offered by any pool of this provider."""
        return frozenset(name for pool in self.pools.values()
                         for name in pool.labels)


@dataclass(frozen=True, kw_only=True)
class ImageConfig(ConfigObject):
    """What nodes booted from an image need to know to be reached."""

    name: str
    username: str | None
    python_path: str
    shell_type: str | None
    connection_type: str
    connection_port: int


class Driver:
    """Base of all drivers; one shared instance per registered name."""

    #: The ``driver`` value selecting this driver in a provider.
    name = ""

    def provider_schema(self):
        """The complete schema (a callable) for one provider mapping.

        It must validate, fill defaults and return Python-named data, like
        every :class:`nodepool.config.schema.Section`.
        """
        raise NotImplementedError

    def build_provider(self, data: dict, ctx: BuildContext,
                       path: tuple) -> ProviderConfig:
        """Build the provider config object from validated ``data``.

        ``path`` locates the provider in the file (``("providers", 3)``)
        for problems reported through ``ctx``.
        """
        raise NotImplementedError

    def get_adapter(self, provider_config: ProviderConfig,
                    warm: bool = True):
        """The :class:`nodepool.driver.statemachine.adapter.Adapter` that
        talks to this provider's cloud.

        ``warm`` (the launcher's case) lets the adapter fetch what its
        launches will need (limits, flavors, images) in the background at
        once; one-off users (CLI listings, the builder's uploads) pass
        False and pay only for the calls they make.
        """
        raise NotImplementedError

    def get_provider(self, provider_config: ProviderConfig,
                     services: "ProviderServices", interval: float = 1.0):
        """The launcher's runtime for one provider (runners, quota, leak
        cleanup) around this driver's adapter."""
        from nodepool.driver.statemachine.provider import StateMachineProvider
        return StateMachineProvider(provider_config,
                                    self.get_adapter(provider_config),
                                    services, interval=interval)


class ProviderServices:
    """What a provider uses of whoever runs it.

    The launcher's :class:`~nodepool.launcher.server.LauncherServices`
    gives all of it.  Running one deletion outside a launcher (``nodepool
    delete --now``) needs only the ZooKeeper stores: the caches, the
    component registry and the scanner serve launching, quota and static
    host registration, which such a provider never starts.  Without
    ``stats`` no metrics are sent.
    """

    def __init__(self, zk_client, nodes, requests, images, *,
                 node_cache=None, request_cache=None, image_cache=None,
                 registry=None, scanner=None, stats=None):
        self.zk_client = zk_client
        self.nodes = nodes
        self.requests = requests
        self.images = images
        self.node_cache = node_cache
        self.request_cache = request_cache
        self.image_cache = image_cache
        self.registry = registry
        self.scanner = scanner
        self.stats = stats
        self._shared: dict = {}
        self._shared_lock = threading.Lock()

    def shared_state(self, key, factory):
        """The object kept under ``key`` for whoever runs providers here,
        made by ``factory()`` on first use.

        For state that must outlive one provider object: a provider whose
        config changed is replaced by a new one while the old one finishes
        its work, and both use the same object.
        """
        with self._shared_lock:
            state = self._shared.get(key)
            if state is None:
                state = self._shared[key] = factory()
            return state


# Helpers shared by the driver config modules.

def image_connection(data: dict) -> dict:
    """Fill ``connection_port`` from ``connection_type`` when unset."""
    if data.get("connection_port") is None:
        data = dict(data, connection_port=schema.default_connection_port(
            data["connection_type"]))
    return data


def build_pools(provider_data, ctx, path, build_pool):
    """Map pool names to objects made by ``build_pool(data, path)``."""
    pools = {}
    for index, pool in enumerate(provider_data["pools"]):
        pool = dict(pool, priority=schema.pool_priority(
            pool["priority"], provider_data["priority"]))
        pools[pool["name"]] = build_pool(pool, path + ("pools", index))
    return FrozenDict(pools)


def build_labels(pool_data, ctx, path, build_label):
    """Map label names to objects, checking they are top-level labels."""
    labels = {}
    for index, label in enumerate(pool_data["labels"]):
        label_path = path + ("labels", index)
        ctx.require_label(label["name"], label_path + ("name",))
        labels[label["name"]] = build_label(label, label_path)
    return FrozenDict(labels)


def secret_field():
    """A field kept out of repr (passwords and the like)."""
    return field(repr=False)
