# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""statsd metrics of the launcher and the builder.

Every metric name nodepool emits is spelled in this module and nowhere
else; the names, types and values are a compatibility contract with
existing dashboards (statsd reference).  Callers hand over plain facts
(a launch finished with this result after so many seconds, these are the
current nodes) and :class:`StatsReporter` turns them into metrics.

The client is configured from the environment: ``STATSD_HOST`` enables it,
``STATSD_PORT`` (default 8125) picks the port.  Nodepool uses no prefix.
Without ``STATSD_HOST`` :func:`get_client` returns None and every reporter
method returns at once, so callers never need to check.

Names: requestor, tenant and tenant-limit keys are normalised with
:func:`normalize` (``.`` and ``:`` become ``_``); provider, pool, label,
image, AZ and host names are used verbatim, as upstream does.

Several metrics of one event go out in a statsd pipeline, which packs them
into as few datagrams as fit, separated by newlines.

Thread-safety: a reporter may be shared by any number of threads.  Each
call builds its own pipeline, and the client only calls ``sendto`` on its
socket.
"""

import contextlib
import logging
import os
import socket
import threading
import time
from typing import (Any, Callable, Dict, Hashable, Iterable, Iterator,
                    Mapping, NamedTuple, Optional, Sequence, Tuple)

import statsd

from nodepool.zk.models import NodeState

log = logging.getLogger("nodepool.stats")

DEFAULT_PORT = 8125

# -- launch results -----------------------------------------------------------
# The ``<result>`` part of the ``nodepool.launch.*`` keys.

RESULT_READY = "ready"
RESULT_ZKSESSION = "error.zksession"
RESULT_QUOTA = "error.quota"
RESULT_UNKNOWN = "error.unknown"
_ERROR_PREFIX = "error."

#: Every ``<result>`` nodepool 11 sends.  Dashboards and alerts key on
#: these names, so any other key an exception carries (a driver's own
#: ``error.api``, say) is sent as ``error.unknown``, which is what
#: nodepool 11 reports for an error it has no name for.
LAUNCH_RESULTS = frozenset((
    RESULT_READY, RESULT_ZKSESSION, RESULT_QUOTA, RESULT_UNKNOWN,
    "error.nodepool", "error.status", "error.network", "error.keyscan",
    "error.capacity", "error.ssh", "error.ipadd",
    "error.servercreatetimeout", "error.serverdeletetimeout",
    "error.imagetimeout",
))

# -- builder worker states (``...build.state`` / ``...upload.state``) -------

WORKER_IDLE = 0
WORKER_BUILDING = 1
WORKER_UPLOADING = 2
WORKER_PAUSED = 3

# The ZooKeeper tree caches whose queue lengths are reported, in the order
# the launcher reports them.
ZK_CACHES = ("node_cache", "request_cache", "image_cache")

# The contract says "every pool-worker loop" (about a second upstream);
# pool workers may loop much faster (tests run them every 50 ms), so the
# per-loop gauges are sent at most this often, per provider and launcher.
POOL_GAUGE_INTERVAL = 1.0


def get_client() -> Optional[statsd.StatsClient]:
    """A statsd client configured from the environment, or None.

    ``STATSD_HOST`` must be set and non-empty; ``STATSD_PORT`` defaults to
    8125.  A host that does not resolve or a port that is not a number
    leaves statsd disabled (None) and logs the error instead of stopping
    the daemon over its metrics.
    """
    host = os.environ.get("STATSD_HOST")
    if not host:
        return None
    port = os.environ.get("STATSD_PORT") or DEFAULT_PORT
    try:
        return statsd.StatsClient(host, int(port))
    except (ValueError, OSError) as exc:
        log.error("statsd disabled: cannot use STATSD_HOST=%r "
                  "STATSD_PORT=%r: %s", host, port, exc)
        return None


def normalize(name: Any) -> str:
    """``name`` as a single statsd key component: ``.`` and ``:`` become
    ``_`` (used for requestors, tenants and tenant-limit keys)."""
    return str(name).replace(".", "_").replace(":", "_")


def launch_result(exc: Optional[BaseException] = None) -> str:
    """The launch ``<result>`` for an attempt that raised ``exc``.

    None means success (``ready``).  An exception's ``statsd_key``
    attribute names its result, either in full (``error.quota``) or
    without the ``error.`` prefix (``quota``); any other exception, and a
    key not in :data:`LAUNCH_RESULTS`, is ``error.unknown``.  Session loss
    and quota errors have the constants :data:`RESULT_ZKSESSION` and
    :data:`RESULT_QUOTA`.
    """
    if exc is None:
        return RESULT_READY
    key = getattr(exc, "statsd_key", None)
    if not key or not isinstance(key, str):
        return RESULT_UNKNOWN
    if not key.startswith(_ERROR_PREFIX):
        key = _ERROR_PREFIX + key
    return key if key in LAUNCH_RESULTS else RESULT_UNKNOWN


def _pool_fields(pool: Any) -> Tuple[Optional[str], Optional[str],
                                     Sequence[str]]:
    """``(provider, pool name, supported labels)`` of a registered pool.

    A :class:`nodepool.zk.registry.ComponentInfo` keeps its znode name
    in ``name``, so the pool's own name is read from its record
    (``to_dict()``); other objects are read by attribute.
    """
    if hasattr(pool, "to_dict"):
        data = pool.to_dict()
        return (data.get("provider_name"), data.get("name"),
                data.get("supported_labels") or ())
    return (getattr(pool, "provider_name", None), getattr(pool, "name", None),
            getattr(pool, "supported_labels", None) or ())


def _wire_state(state: Any) -> str:
    """The wire value of a state enum member (or the string itself)."""
    return getattr(state, "value", state)


class NodeCounts(NamedTuple):
    """Nodes per state: overall, per provider and per label."""

    overall: Dict[str, int]
    by_provider: Dict[str, Dict[str, int]]
    by_label: Dict[str, Dict[str, int]]


def count_nodes(nodes: Iterable[Any], pools: Sequence[Any]) -> NodeCounts:
    """Count ``nodes`` per state for the node gauges (statsd and
    Prometheus alike).

    Every state appears, zeros included, for every provider and label of
    a registered pool (``pools``: component records or objects with
    ``provider_name``, ``name`` and ``supported_labels``) and of a node.
    A node counts once per entry of its ``type``; nodes without a state
    are skipped, nodes without a provider are left out of ``by_provider``.
    """
    states = [state.value for state in NodeState]

    def zeros():
        return dict.fromkeys(states, 0)

    counts = NodeCounts(zeros(), {}, {})
    for pool in pools:
        provider, _, labels = _pool_fields(pool)
        if provider:
            counts.by_provider.setdefault(provider, zeros())
        for label in labels:
            counts.by_label.setdefault(label, zeros())
    for node in nodes:
        if node.state is None:
            continue
        state = _wire_state(node.state)
        groups = [counts.overall]
        if node.provider:
            groups.append(counts.by_provider.setdefault(node.provider,
                                                        zeros()))
        groups += [counts.by_label.setdefault(label, zeros())
                   for label in node.type or ()]
        for group in groups:
            group[state] = group.get(state, 0) + 1
    return counts


def addressable_requests(requests: Iterable[Any],
                         pools: Sequence[Any]) -> Dict[Tuple[str, str], int]:
    """Per registered ``(provider, pool)``: how many ``requests`` (any
    state) ask only for labels that pool supports.

    Two pool workers with the same provider and pool (two launchers
    sharing a config) are one pool here.
    """
    labels_by_pool: Dict[Tuple[str, str], set] = {}
    for pool in pools:
        provider, name, labels = _pool_fields(pool)
        labels_by_pool.setdefault((provider or "", name or ""),
                                  set()).update(labels)
    wanted = [set(request.node_types or ()) for request in requests]
    return {key: sum(1 for types in wanted if types <= labels)
            for key, labels in labels_by_pool.items()}


class StatsReporter:
    """Emit nodepool's metrics through a statsd client.

    ``client`` is a ``statsd.StatsClient`` (usually from
    :func:`get_client`) or None, which makes every method a no-op.
    ``pool_gauge_interval`` is the least time in seconds between two
    emissions of one provider's per-loop gauges (and of the tenant
    limits), see :meth:`update_pool_gauges`; ``clock`` is the monotonic
    clock used for that (tests pass their own).
    """

    def __init__(self, client: Optional[statsd.StatsClient] = None,
                 pool_gauge_interval: float = POOL_GAUGE_INTERVAL,
                 clock: Callable[[], float] = time.monotonic):
        self._client = client
        self.pool_gauge_interval = pool_gauge_interval
        self._clock = clock
        self._last_sent: Dict[Hashable, float] = {}
        self._throttle_lock = threading.Lock()

    @classmethod
    def from_environment(cls) -> "StatsReporter":
        """A reporter using :func:`get_client`."""
        return cls(get_client())

    @property
    def enabled(self) -> bool:
        """Whether metrics are sent at all."""
        return self._client is not None

    @property
    def client(self) -> Optional[statsd.StatsClient]:
        """The underlying client (None when disabled)."""
        return self._client

    # -- launcher: events -----------------------------------------------------

    def record_launch(self, result: str, duration: float, *, provider: str,
                      az: Optional[str] = None,
                      requestor: Optional[str] = None) -> None:
        """One finished launch attempt.

        ``result`` is ``ready`` or an ``error.<reason>`` key (see
        :func:`launch_result`; one not in :data:`LAUNCH_RESULTS` is sent
        as ``error.unknown``); ``duration`` is in seconds since the
        launcher first ran the node's state machine.  Emits a timer (ms)
        and a +1 counter on each of ``nodepool.launch.<result>``,
        ``nodepool.launch.provider.<provider>.<result>``,
        ``nodepool.launch.provider.<provider>.<az>.<result>`` (only with an
        ``az``) and ``nodepool.launch.requestor.<requestor>.<result>``
        (only with a ``requestor``, normalised).

        A launch with retries calls this once per failed attempt and once
        for the final outcome.
        """
        if self._client is None:
            return
        if result not in LAUNCH_RESULTS:
            result = RESULT_UNKNOWN
        keys = ["nodepool.launch.%s" % result,
                "nodepool.launch.provider.%s.%s" % (provider, result)]
        if az:
            keys.append("nodepool.launch.provider.%s.%s.%s"
                        % (provider, az, result))
        if requestor:
            keys.append("nodepool.launch.requestor.%s.%s"
                        % (normalize(requestor), result))
        millis = duration * 1000.0
        with self._batch() as pipe:
            for key in keys:
                pipe.timing(key, millis)
                pipe.incr(key)

    def record_node_launch(self, node: Any, result: str,
                           duration: float) -> None:
        """:meth:`record_launch` with provider, az and requestor taken from
        a :class:`nodepool.zk.models.Node` (whose ``requestor`` was copied
        from its request)."""
        if self._client is None:
            return
        self.record_launch(result, duration, provider=node.provider,
                           az=node.az, requestor=node.requestor)

    def record_leaked(self, provider: str, plural: str,
                      count: int = 1) -> None:
        """Leaked resources deleted: ``nodepool.provider.<provider>.leaked.
        <plural>`` counter += ``count``.

        ``plural`` is the resource type plus ``s``, verbatim (``instances``,
        ``volumes``, ``ports``, ``floatingips``, Azure's ``INSTANCEs``...).
        Nothing is sent when ``count`` is zero.
        """
        if self._client is None or not count:
            return
        with self._batch() as pipe:
            pipe.incr("nodepool.provider.%s.leaked.%s" % (provider, plural),
                      count)

    # -- launcher: gauges -----------------------------------------------------

    def update_global_gauges(self, nodes: Iterable[Any],
                             requests: Iterable[Any],
                             pools: Iterable[Any] = ()) -> None:
        """The elected launcher's gauges, in one pipeline:
        :meth:`update_node_gauges` plus :meth:`update_request_gauges`."""
        if self._client is None:
            return
        pools = list(pools)
        with self._batch() as pipe:
            self._node_gauges(pipe, nodes, pools)
            self._request_gauges(pipe, requests, pools)

    def update_node_gauges(self, nodes: Iterable[Any],
                           pools: Iterable[Any] = ()) -> None:
        """Node counts per state, overall, per provider and per label.

        ``nodes`` are :class:`nodepool.zk.models.Node` records (the node
        cache's values); ``pools`` are the registered ``pool`` components
        (``ComponentInfo`` records, or anything with ``provider_name``,
        ``name`` and ``supported_labels`` attributes).

        Emits gauges ``nodepool.nodes.<state>`` for every node state,
        ``nodepool.provider.<provider>.nodes.<state>`` for every state of
        every provider of a registered pool or of a node, and
        ``nodepool.label.<label>.nodes.<state>`` for every state of every
        label a registered pool supports or a node has; zeros included.
        A node counts once for each entry of its ``type`` list.  Nodes
        without a state are skipped; nodes without a provider are left out
        of the per-provider gauges.
        """
        if self._client is None:
            return
        with self._batch() as pipe:
            self._node_gauges(pipe, nodes, list(pools))

    def update_request_gauges(self, requests: Iterable[Any],
                              pools: Iterable[Any] = ()) -> None:
        """``nodepool.provider.<provider>.pool.<pool>.addressable_requests``
        for every registered pool: how many of ``requests`` (any state)
        ask only for labels that pool supports."""
        if self._client is None:
            return
        with self._batch() as pipe:
            self._request_gauges(pipe, requests, list(pools))

    def update_provider_limits(self, provider: Any) -> None:
        """``nodepool.provider.<provider>.max_servers``: the sum of the
        ``max_servers`` of the provider config's pools, falsy values
        skipped (``inf`` when a pool is unlimited)."""
        if self._client is None:
            return
        total = 0
        for pool in provider.pools.values():
            if pool.max_servers:
                total += pool.max_servers
        with self._batch() as pipe:
            pipe.gauge("nodepool.provider.%s.max_servers" % provider.name,
                       total)

    def update_tenant_limits(self, tenant_limits: Mapping[str, Any]) -> None:
        """``nodepool.tenant_limits.<tenant>.<limit>`` for each configured
        limit (tenant and limit names normalised).

        ``tenant_limits`` maps tenant names to either a
        :class:`nodepool.config.models.TenantResourceLimit` or a plain
        mapping of limit name to value (``Config.tenant_resource_limits``
        fits).
        """
        if self._client is None or not tenant_limits:
            return
        with self._batch() as pipe:
            for tenant, limits in tenant_limits.items():
                limits = getattr(limits, "limits", limits)
                for name, value in limits.items():
                    pipe.gauge("nodepool.tenant_limits.%s.%s"
                               % (normalize(tenant), normalize(name)), value)

    def update_pool_gauges(self, provider: Any,
                           tenant_limits: Mapping[str, Any]) -> None:
        """The gauges every pool-worker loop reports, throttled.

        :meth:`update_provider_limits` for ``provider`` (the pool's
        provider config) unless this reporter sent that provider's within
        the last :attr:`pool_gauge_interval` seconds, and
        :meth:`update_tenant_limits` for ``tenant_limits`` (the config's
        ``tenant_resource_limits``) unless sent within that time.  A
        launcher has one reporter, so several pools of one provider (and
        all providers, for the tenant limits) share the budget.  The first
        call sends at once.
        """
        if self._client is None:
            return
        if self._due(("max_servers", provider.name)):
            self.update_provider_limits(provider)
        if tenant_limits and self._due(("tenant_limits",)):
            self.update_tenant_limits(tenant_limits)

    def update_api_rates(self, provider: str, rates: Iterable[Any]) -> None:
        """``nodepool.provider.<provider>.api_rate.<limiter>``: the calls
        per second each API rate limiter allows now (our addition; see
        doc/source/adaptive-rate.rst); ``rates`` as
        ``StateMachineProvider.api_rates()`` gives them, unlimited ones
        skipped.  Throttled like :meth:`update_pool_gauges`."""
        if self._client is None or not self._due(("api_rate", provider)):
            return
        with self._batch() as pipe:
            for entry in rates:
                if entry["rate"] is not None:
                    pipe.gauge("nodepool.provider.%s.api_rate.%s" % (
                        provider, entry["limiter"]), entry["rate"])

    def update_capacity(self, provider: str, entries: list) -> None:
        """``nodepool.provider.<provider>.capacity_cooldowns``: how many
        (type, zone) pairs capacity fallback skips now (our addition;
        see doc/source/capacity-fallback.rst); ``entries`` as
        ``StateMachineProvider.capacity_entries()`` gives them.
        Throttled like :meth:`update_pool_gauges`."""
        if self._client is None or not self._due(("capacity", provider)):
            return
        with self._batch() as pipe:
            pipe.gauge("nodepool.provider.%s.capacity_cooldowns" % provider,
                       len(entries))

    def update_zk_queues(self, connection_queue: int,
                         caches: Mapping[str, Tuple[int, int]],
                         hostname: Optional[str] = None) -> None:
        """ZooKeeper client and cache backlogs (every 10 s).

        Emits ``nodepool.launcher.<hostname>.zk.client.connection_queue``
        and, for each ``(name, (event_queue, playback_queue))`` in
        ``caches`` (names from :data:`ZK_CACHES`),
        ``nodepool.launcher.<hostname>.zk.<name>.event_queue`` and
        ``.playback_queue``.  ``hostname`` defaults to
        ``socket.gethostname()``.
        """
        if self._client is None:
            return
        base = "nodepool.launcher.%s.zk" % (hostname or socket.gethostname())
        with self._batch() as pipe:
            pipe.gauge("%s.client.connection_queue" % base, connection_queue)
            for name, (events, playback) in caches.items():
                pipe.gauge("%s.%s.event_queue" % (base, name), events)
                pipe.gauge("%s.%s.playback_queue" % (base, name), playback)

    # -- builder ----------------------------------------------------------------

    def record_image_build(self, image: str, duration: float, rc: int,
                           finished_at: float,
                           sizes: Optional[Mapping[str, int]] = None) -> None:
        """A finished diskimage build (successful or not).

        Emits ``nodepool.dib_image_build.<image>.status.duration`` (timer,
        ``duration`` seconds as ms), ``...status.rc`` (gauge; pass 1 for a
        timeout) and ``...status.last_build`` (gauge, ``finished_at`` as an
        int unix time).  ``sizes`` maps each format's extension to its file's
        allocated bytes (``st_blocks * 512``) and gives
        ``nodepool.dib_image_build.<image>.<ext>.size`` gauges; pass it for
        successful builds only.
        """
        if self._client is None:
            return
        base = "nodepool.dib_image_build.%s" % image
        with self._batch() as pipe:
            for ext, size in (sizes or {}).items():
                pipe.gauge("%s.%s.size" % (base, ext), size)
            pipe.timing("%s.status.duration" % base, duration * 1000.0)
            pipe.gauge("%s.status.rc" % base, rc)
            pipe.gauge("%s.status.last_build" % base, int(finished_at))

    def record_image_upload(self, image: str, provider: str,
                            duration: float) -> None:
        """A successful upload (after the post-upload hook):
        ``nodepool.image_update.<image>.<provider>`` timer (``duration``
        seconds as ms) and +1 counter."""
        if self._client is None:
            return
        key = "nodepool.image_update.%s.%s" % (image, provider)
        with self._batch() as pipe:
            pipe.timing(key, duration * 1000.0)
            pipe.incr(key)

    def update_build_requests(self, requested: Mapping[str, bool]) -> None:
        """Manual build requests, per image name -> pending or not.

        Emits ``nodepool.image_build_requests`` (how many are pending) and
        ``nodepool.image.<image>.image_build_requests`` (0 or 1) for each
        image in ``requested``.
        """
        if self._client is None:
            return
        with self._batch() as pipe:
            pending = 0
            for image, flag in requested.items():
                flag = 1 if flag else 0
                pending += flag
                pipe.gauge("nodepool.image.%s.image_build_requests" % image,
                           flag)
            pipe.gauge("nodepool.image_build_requests", pending)

    def update_builder_workers(
            self, builds: Iterable[Tuple[str, int]],
            uploads: Iterable[Tuple[str, str, int]],
            fqdn: Optional[str] = None) -> None:
        """Builder worker states, the maximum per image (and provider).

        ``builds`` holds ``(image, state)`` pairs, one per build worker and
        image, with states :data:`WORKER_IDLE`, :data:`WORKER_BUILDING` or
        :data:`WORKER_PAUSED`; ``uploads`` holds ``(image, provider,
        state)`` with :data:`WORKER_IDLE`, :data:`WORKER_UPLOADING` or
        :data:`WORKER_PAUSED`.  Emits gauges
        ``nodepool.builder.<fqdn>.image.<image>.build.state`` and
        ``nodepool.builder.<fqdn>.image.<image>.provider.<provider>.upload.
        state``; ``fqdn`` defaults to ``socket.getfqdn()``.
        """
        if self._client is None:
            return
        build_max = {}
        for image, state in builds:
            build_max[image] = max(state, build_max.get(image, state))
        upload_max = {}
        for image, provider, state in uploads:
            key = (image, provider)
            upload_max[key] = max(state, upload_max.get(key, state))
        base = "nodepool.builder.%s.image" % (fqdn or socket.getfqdn())
        with self._batch() as pipe:
            for image, state in build_max.items():
                pipe.gauge("%s.%s.build.state" % (base, image), state)
            for (image, provider), state in upload_max.items():
                pipe.gauge("%s.%s.provider.%s.upload.state"
                           % (base, image, provider), state)

    # -- helpers ----------------------------------------------------------------

    def _due(self, key: Hashable) -> bool:
        """Whether the throttled gauges ``key`` may be sent now (at least
        :attr:`pool_gauge_interval` seconds after the last time); if so,
        the time is recorded as sent."""
        now = self._clock()
        with self._throttle_lock:
            last = self._last_sent.get(key)
            if last is not None and now - last < self.pool_gauge_interval:
                return False
            self._last_sent[key] = now
            return True

    @contextlib.contextmanager
    def _batch(self) -> Iterator[Any]:
        """A pipeline sent on leaving the block.

        Sending never raises: the client already ignores socket errors,
        and a name that is not ASCII (the wire is ASCII) must not take the
        caller down with it; the batch is dropped and logged instead.
        """
        pipe = self._client.pipeline()
        yield pipe
        try:
            pipe.send()
        except UnicodeError:
            log.warning("Dropped statsd metrics with non-ASCII names",
                        exc_info=True)

    @staticmethod
    def _node_gauges(pipe: Any, nodes: Iterable[Any],
                     pools: Sequence[Any]) -> None:
        counts = count_nodes(nodes, pools)
        for state, count in counts.overall.items():
            pipe.gauge("nodepool.nodes.%s" % state, count)
        for provider, by_state in counts.by_provider.items():
            for state, count in by_state.items():
                pipe.gauge("nodepool.provider.%s.nodes.%s"
                           % (provider, state), count)
        for label, by_state in counts.by_label.items():
            for state, count in by_state.items():
                pipe.gauge("nodepool.label.%s.nodes.%s" % (label, state),
                           count)

    @staticmethod
    def _request_gauges(pipe: Any, requests: Iterable[Any],
                        pools: Sequence[Any]) -> None:
        for (provider, name), count in addressable_requests(
                requests, pools).items():
            pipe.gauge("nodepool.provider.%s.pool.%s.addressable_requests"
                       % (provider, name), count)
