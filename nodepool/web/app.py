# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The launcher's status web app and Prometheus metrics.

The operator's view of the endpoints is doc/source/webapp.rst.

Endpoints (``GET``/``HEAD`` only; anything else is 404, other methods 405):

``/node-list`` (``node_id``, ``fields``), ``/request-list``,
``/label-list``, ``/image-list``, ``/dib-image-list``, ``/image-status``
(``fields``)
    The listings of :mod:`nodepool.status`, read from the launcher's tree
    caches.  The ``Accept`` header picks the format among ``text/html``,
    ``text/plain`` and ``application/json`` (no header: text).  Text is the
    CLI's table (``fields`` restricts its columns; a name that is no column
    gets 400); JSON is the list of rows with every key.  Each result is
    kept for :attr:`WebApp.cache_ttl` seconds per path, format and known
    parameter values (other parameters are ignored, so they cannot defeat
    the cache) and carries ``Last-Modified``, ``Expires``, ``ETag`` and
    ``Cache-Control: public, max-age=1``, so clients can make conditional
    requests (304).
``/request-status``, ``/request-status/<request id>``
    Why requests wait, from the launcher's request journal
    (:mod:`nodepool.launcher.why`), always as JSON: every pending request
    in the request cache with its reason, or one request (also one
    finished a while ago) with every pool's reason and its timeline (404
    when neither the cache nor the journal knows it).  Not cached: the
    answer comes from memory.
``/ready``
    ``200 OK`` once the launcher finished its first main-loop pass,
    ``503`` before.
``/api-rates``, ``/capacity``
    JSON: every API rate limiter of the launcher's providers with the
    rate it allows now, its ceiling, whether it adapts and the throttling
    answers it was told of (doc/source/adaptive-rate.rst); the (type,
    zone) pairs capacity fallback skips (doc/source/capacity-fallback.rst).
``/metrics``
    The node gauges of the statsd reporter in Prometheus form (see
    :class:`NodeMetrics`).

Request size: the request line may have :data:`MAX_REQUEST_LINE` bytes
(longer: 414), the header fields :data:`MAX_HEADER_BYTES` together
(more: 431) and the body :data:`MAX_BODY_BYTES` (more: 413); cheroot
alone would read megabytes of headers.

Serving: every :class:`WebApp` runs its own cheroot WSGI server in a thread,
in front of a CherryPy application that is never mounted on
``cherrypy.tree``; the global CherryPy engine is not started.  Several web
apps (several launchers in one test process) can therefore run side by
side, each with its own port and Prometheus registry.

Nothing here writes to ZooKeeper, and only the record fields of the
listings (the columns of :mod:`nodepool.status`) are served: the
configuration (and with it any secret) is never read except for the
``webapp`` section and the providers' ``max-servers``.
"""

import hashlib
import json
import logging
import threading
import time
from typing import Any, Callable, Dict, Hashable, NamedTuple, Optional, Tuple

import cherrypy
import prometheus_client
from cheroot import errors as cheroot_errors
from cheroot import server as cheroot_server
from cheroot import wsgi
from cherrypy.lib import cptools, httputil
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from nodepool import stats, status
from nodepool.config import schema
from nodepool.config.models import WebApp as WebAppConfig
from nodepool.web import capacity, rates

log = logging.getLogger("nodepool.web")

TEXT_PLAIN = "text/plain; charset=UTF-8"
JSON = "application/json"
# Media types we answer with, in the order cptools.accept prefers them when
# the client does not care (text/html is served as the text table).
MEDIA = ["text/plain", "text/html", JSON]

# Request size limits, in bytes.  A listing URL is short; 8 KiB of request
# line and 64 KiB of headers are what common proxies allow by default.
MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024

#: WebApp's ``cors_origin`` default: take it from the configuration.
FROM_CONFIG = object()


# -- listings -----------------------------------------------------------------

def _param(params: Dict[str, Any], name: str) -> Optional[str]:
    """A query parameter as one string (repeated ones joined with ``,``)."""
    value = params.get(name)
    if isinstance(value, list):
        value = ",".join(value)
    return value


def _nodes(launcher, params, now) -> status.Listing:
    cache = launcher.services.node_cache
    node_id = _param(params, "node_id")
    if node_id is not None:
        node = cache.get(node_id)
        nodes = [node] if node is not None else []
    else:
        nodes = sorted(cache.values(), key=lambda n: n.id)
    return status.node_list(nodes, now=now)


def _requests(launcher, params, now) -> status.Listing:
    requests = launcher.services.request_cache.values()
    return status.request_list(sorted(requests, key=lambda r: r.id))


def _labels(launcher, params, now) -> status.Listing:
    return status.label_list(launcher.services.registry.pools())


def _uploads(launcher, params, now) -> status.Listing:
    uploads = launcher.services.image_cache.uploads()
    return status.image_list(sorted(uploads, key=lambda u: (
        u.image_name, u.build_id, u.provider_name, u.id)))


def _builds(launcher, params, now) -> status.Listing:
    cache = launcher.services.image_cache
    paused = [image.name for image in cache.images() if image.paused]
    builds = sorted(cache.builds(), key=lambda b: (b.image_name, b.id))
    return status.dib_image_list(builds, paused)


def _image_status(launcher, params, now) -> status.Listing:
    # Build requests and build locks are not in the image cache; read them
    # (a handful of znodes per image) and let the result cache absorb load.
    return status.image_status(
        status.read_image_status(launcher.services.images))


class ListingSpec(NamedTuple):
    """One listing endpoint: how to compute it and what it accepts."""

    compute: Callable[[Any, Dict[str, Any], float], status.Listing]
    #: The table's columns, the names ``fields`` may use.
    columns: Tuple[str, ...]
    #: Query parameters besides ``fields`` that change the result.
    params: Tuple[str, ...] = ()


def _keys(columns) -> Tuple[str, ...]:
    return tuple(column.key for column in columns)


LISTINGS: Dict[str, ListingSpec] = {
    "node-list": ListingSpec(_nodes, _keys(status.NODE_COLUMNS),
                             ("node_id",)),
    "request-list": ListingSpec(_requests, _keys(status.REQUEST_COLUMNS)),
    "label-list": ListingSpec(_labels, _keys(status.LABEL_COLUMNS)),
    "image-list": ListingSpec(_uploads, _keys(status.IMAGE_COLUMNS)),
    "dib-image-list": ListingSpec(_builds,
                                  _keys(status.DIB_IMAGE_COLUMNS)),
    "image-status": ListingSpec(_image_status,
                                _keys(status.IMAGE_STATUS_COLUMNS)),
}


class UnknownFields(ValueError):
    """``fields`` names something that is no column of the listing."""


def requested_fields(spec: ListingSpec,
                     params: Dict[str, Any]) -> Optional[Tuple[str, ...]]:
    """The columns ``fields`` selects, in table order; None: all.

    :raises UnknownFields: naming the names that are no column of this
        listing, and the columns.
    """
    value = _param(params, "fields")
    names = [name for name in value.split(",") if name] if value else []
    if not names:
        return None
    unknown = sorted(set(names) - set(spec.columns))
    if unknown:
        raise UnknownFields("Unknown fields: %s (known: %s)" % (
            ", ".join(unknown), ", ".join(spec.columns)))
    return tuple(key for key in spec.columns if key in names)


# -- result cache -------------------------------------------------------------

class Rendered(NamedTuple):
    """One rendered listing, as served and cached."""

    body: bytes
    content_type: str
    created: float
    etag: str


class ResultCache:
    """Rendered results kept for ``ttl`` seconds per key; thread-safe.

    Two requests missing the same key at once may both render it; the
    later one wins, which is harmless for read-only data.  Expired entries
    are dropped on every insert, so arbitrary query strings cannot make
    the cache grow beyond what one ``ttl`` of traffic adds.
    """

    def __init__(self, ttl: float, clock: Callable[[], float]):
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: Dict[Hashable, Rendered] = {}

    def get(self, key: Hashable,
            render: Callable[[float], Tuple[bytes, str]]) -> Rendered:
        now = self.clock()
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and now - entry.created < self.ttl:
            return entry
        body, content_type = render(now)
        entry = Rendered(body, content_type, now,
                         '"%s"' % hashlib.sha1(body).hexdigest())
        with self._lock:
            for old in [k for k, e in self._entries.items()
                        if now - e.created >= self.ttl]:
                del self._entries[old]
            self._entries[key] = entry
        return entry


# -- Prometheus ---------------------------------------------------------------

class NodeMetrics(Collector):
    """The launcher's global statsd gauges, computed at scrape time.

    Each statsd name maps to a metric whose name is the constant part with
    ``.`` replaced by ``_`` and whose variable parts become labels:

    * ``nodepool.nodes.<state>`` -> ``nodepool_nodes{state}``
    * ``nodepool.provider.<provider>.nodes.<state>`` ->
      ``nodepool_provider_nodes{provider, state}``
    * ``nodepool.label.<label>.nodes.<state>`` ->
      ``nodepool_label_nodes{label, state}``
    * ``nodepool.provider.<provider>.pool.<pool>.addressable_requests`` ->
      ``nodepool_provider_pool_addressable_requests{provider, pool}``
    * ``nodepool.provider.<provider>.max_servers`` ->
      ``nodepool_provider_max_servers{provider}``

    As with statsd, every state is reported (zeros included), providers and
    labels of registered pools are reported even without nodes, and a node
    counts once for each of its labels.  Node and request gauges come from
    this launcher's caches, so every launcher reports the same global
    values (statsd has one elected emitter instead); ``max_servers``
    covers the providers this launcher runs.
    """

    def __init__(self, launcher):
        self.launcher = launcher

    def describe(self):
        # Only known at scrape time; an empty description keeps the
        # registry from calling collect() on registration.
        return []

    def collect(self):
        services = self.launcher.services
        if services is None or services.registry is None:
            return
        pools = list(services.registry.pools())
        yield from self._node_gauges(services.node_cache.values(), pools)
        yield self._addressable(services.request_cache.values(), pools)
        yield self._max_servers()
        yield rates.api_rate_gauge(self.launcher)
        yield capacity.capacity_gauge(self.launcher)

    @staticmethod
    def _node_gauges(nodes, pools):
        counts = stats.count_nodes(nodes, pools)
        gauge = GaugeMetricFamily("nodepool_nodes", "Nodes per state",
                                  labels=["state"])
        for state, count in counts.overall.items():
            gauge.add_metric([state], count)
        yield gauge
        for name, label, groups in (
                ("nodepool_provider_nodes", "provider", counts.by_provider),
                ("nodepool_label_nodes", "label", counts.by_label)):
            gauge = GaugeMetricFamily(
                name, "Nodes per %s and state" % label,
                labels=[label, "state"])
            for key in sorted(groups):
                for state, count in groups[key].items():
                    gauge.add_metric([key, state], count)
            yield gauge

    @staticmethod
    def _addressable(requests, pools):
        gauge = GaugeMetricFamily(
            "nodepool_provider_pool_addressable_requests",
            "Requests whose labels a registered pool all supports",
            labels=["provider", "pool"])
        counts = stats.addressable_requests(requests, pools)
        for key in sorted(counts):
            gauge.add_metric(list(key), counts[key])
        return gauge

    def _max_servers(self):
        gauge = GaugeMetricFamily(
            "nodepool_provider_max_servers",
            "Sum of max-servers of the provider's pools",
            labels=["provider"])
        for provider in list(self.launcher.providers.values()):
            config = provider.config
            total = sum(pool.max_servers for pool in config.pools.values()
                        if pool.max_servers)
            gauge.add_metric([config.name], total)
        return gauge


# -- HTTP ---------------------------------------------------------------------

def _plain_error_page(status, message, traceback, version):
    """Error bodies as one line of plain text (never a traceback)."""
    cherrypy.serving.response.headers["Content-Type"] = TEXT_PLAIN
    return "%s\n" % (message or status)


class _LimitedRequest(cheroot_server.HTTPRequest):
    """cheroot's request parser with separate request line and header
    limits.

    cheroot counts the request line and the headers against one limit and
    answers 413 for headers; RFC 6585 has 431 for that.
    """

    def read_request_line(self):
        # parse_request() wrapped rfile in a SizeCheckWrapper; its limit
        # applies to the request line first, then to line plus headers.
        self.rfile.maxlen = MAX_REQUEST_LINE
        ok = super().read_request_line()
        self.rfile.maxlen = self.rfile.bytes_read + MAX_HEADER_BYTES
        return ok

    def read_request_headers(self):
        try:
            return super().read_request_headers()
        except cheroot_errors.MaxSizeExceeded:
            # The rest of the headers stays unread: close afterwards.
            self.close_connection = True
            self.simple_response(
                "431 Request Header Fields Too Large",
                "The request's header fields exceed %d bytes.\n"
                % MAX_HEADER_BYTES)
            return False


class _LimitedConnection(cheroot_server.HTTPConnection):
    RequestHandlerClass = _LimitedRequest


class _Server(wsgi.Server):
    ConnectionClass = _LimitedConnection
    # Nonzero, so that parse_request() installs the size check at all;
    # _LimitedRequest sets the real limits.
    max_request_header_size = MAX_REQUEST_LINE
    max_request_body_size = MAX_BODY_BYTES


class _Root:
    """The CherryPy handler: every path lands in :meth:`default`."""

    def __init__(self, app: "WebApp"):
        self.app = app

    @cherrypy.expose
    def default(self, *vpath, **params):
        path = "/".join(vpath)
        if path == "ready":
            return self.app.ready_page()
        if path == "metrics":
            return self.app.metrics_page()
        if path in ("api-rates", "capacity"):
            return self.app.json_page(
                rates.api_rate_list if path == "api-rates"
                else capacity.capacity_list)
        if vpath and vpath[0] == "request-status" and len(vpath) <= 2:
            return self.app.request_status_page(
                vpath[1] if len(vpath) == 2 else None)
        spec = LISTINGS.get(path)
        if spec is None:
            # Not cherrypy.NotFound: its error page gets padded to 512
            # bytes for old browsers.
            response = cherrypy.serving.response
            response.status = 404
            response.headers["Content-Type"] = TEXT_PLAIN
            return b"Not found\n"
        return self.app.listing_page(path, spec, params)


def _webapp_config(config) -> WebAppConfig:
    """The launcher config's ``webapp`` section; before a config is
    loaded, the section the schema makes of nothing (its defaults)."""
    if config is not None:
        return config.webapp
    return WebAppConfig(**schema.WEBAPP({}))


class WebApp:
    """The status web app of one launcher.

    :param launcher: the :class:`~nodepool.launcher.server.NodePoolLauncher`
        (or anything with its ``services``, ``ready``, ``providers``,
        ``config`` and ``journal`` attributes).
    :param listen_address, port: where to listen; by default the
        launcher config's ``webapp`` section, read at :meth:`start`.  Port
        0 picks a free port; :attr:`port` tells which after :meth:`start`.
    :param cors_origin: the ``Access-Control-Allow-Origin`` of the
        listings; None sends none.  By default the config's
        ``webapp.cors-origin``, read at :meth:`start`.
    :param cache_ttl: how long a rendered listing is served unchanged.
    :param clock: time source of the result cache and of the date headers
        (tests pass a fake one).
    """

    def __init__(self, launcher, listen_address: Optional[str] = None,
                 port: Optional[int] = None, *,
                 cors_origin: Any = FROM_CONFIG, cache_ttl: float = 1.0,
                 clock: Callable[[], float] = time.time,
                 threads: int = 10):
        self.launcher = launcher
        self.listen_address = listen_address
        self._port = port
        self.cors_origin = cors_origin
        self.cache_ttl = cache_ttl
        self.clock = clock
        self.threads = threads
        self.cache = ResultCache(cache_ttl, clock)
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        self.registry.register(NodeMetrics(launcher))
        self.application = cherrypy.Application(_Root(self), "", config={
            "/": {
                "tools.allow.on": True,
                "tools.allow.methods": ["GET", "HEAD"],
                "tools.encode.on": False,
                "request.show_tracebacks": False,
                "request.show_mismatched_params": False,
                "error_page.default": _plain_error_page,
                "response.headers.server": "nodepool",
            },
        })
        # Log through our logger tree rather than CherryPy's, whose access
        # log prints every request on stdout.
        self.application.log.access_log = logging.getLogger(
            "nodepool.web.access")
        self.application.log.error_log = logging.getLogger(
            "nodepool.web.error")
        self._server: Optional[wsgi.Server] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> Optional[int]:
        """The bound port once started (the configured one before)."""
        if self._server is not None:
            return self._server.bind_addr[1]
        return self._port

    def start(self) -> None:
        """Bind the socket and serve in a background thread.

        :raises OSError: the address cannot be bound.
        """
        config = _webapp_config(self.launcher.config)
        address = self.listen_address
        if address is None:
            address = config.listen_address
        port = self._port
        if port is None:
            port = config.port
        if self.cors_origin is FROM_CONFIG:
            self.cors_origin = config.cors_origin
        server = _Server((address, port), self.application,
                         numthreads=self.threads,
                         server_name="nodepool-webapp")
        server.prepare()  # binds now, so errors surface in the caller
        self._server = server
        self._thread = threading.Thread(target=server.serve,
                                        name="WebApp", daemon=True)
        self._thread.start()
        log.info("Status web app listening on %s:%s", address, self.port)

    def stop(self) -> None:
        """Stop serving and join the server thread (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._port = server.bind_addr[1]
        server.stop()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # Pages (called on server threads) -----------------------------------

    def ready_page(self) -> bytes:
        response = cherrypy.serving.response
        response.headers["Content-Type"] = TEXT_PLAIN
        if self.launcher.ready.is_set():
            return b"OK"
        response.status = 503
        return b"Not ready"

    def request_status_page(self, request_id: Optional[str]) -> bytes:
        if self.launcher.services is None:
            raise cherrypy.HTTPError(503, "The launcher has not started")
        response = cherrypy.serving.response
        cache = self.launcher.services.request_cache
        if request_id is None:
            data = status.pending_request_status(cache.values(),
                                                 self.launcher.journal)
        else:
            data = status.request_status(request_id, cache.get(request_id),
                                         self.launcher.journal)
        if data is None:
            response.status = 404
            response.headers["Content-Type"] = TEXT_PLAIN
            return b"Request not known to this launcher\n"
        response.headers["Content-Type"] = JSON
        response.headers["Cache-Control"] = "no-cache"
        if self.cors_origin:
            response.headers["Access-Control-Allow-Origin"] = self.cors_origin
        return json.dumps(data).encode("utf-8")

    def json_page(self, rows: Callable) -> bytes:
        """``rows(launcher)`` as JSON, not cached (``/api-rates``...)."""
        response = cherrypy.serving.response
        response.headers["Content-Type"] = JSON
        response.headers["Cache-Control"] = "no-cache"
        return json.dumps(rows(self.launcher)).encode("utf-8")

    def metrics_page(self) -> bytes:
        response = cherrypy.serving.response
        response.headers["Content-Type"] = prometheus_client.CONTENT_TYPE_LATEST
        return prometheus_client.generate_latest(self.registry)

    def listing_page(self, path: str, spec: ListingSpec, params) -> bytes:
        if self.launcher.services is None:
            raise cherrypy.HTTPError(503, "The launcher has not started")
        media = cptools.accept(MEDIA)
        fmt = "json" if media == JSON else "text"
        # Only what changes the answer goes into the key: JSON carries
        # every column whatever ``fields`` says, and unknown parameters
        # are ignored, so a random query string meets the cached result
        # instead of causing fresh reads.
        response = cherrypy.serving.response
        try:
            fields = (requested_fields(spec, params) if fmt == "text"
                      else None)
        except UnknownFields as e:
            # Answered here rather than with HTTPError, whose page CherryPy
            # pads to 512 bytes.
            response.status = 400
            response.headers["Content-Type"] = TEXT_PLAIN
            return ("%s\n" % e).encode("utf-8")
        values = tuple(_param(params, name) for name in spec.params)

        def render(now: float) -> Tuple[bytes, str]:
            headers, rows = spec.compute(self.launcher, params, now)
            if fmt == "json":
                return json.dumps(rows).encode("utf-8"), JSON
            table = status.render_table(headers, rows, fields, now=now)
            return (table + "\n").encode("utf-8"), TEXT_PLAIN

        entry = self.cache.get((path, fmt, fields, values), render)
        headers = {
            "Content-Type": entry.content_type,
            "Cache-Control": "public, max-age=%d" % max(1, self.cache_ttl),
            "Last-Modified": httputil.HTTPDate(entry.created),
            "Expires": httputil.HTTPDate(entry.created + self.cache_ttl),
            "ETag": entry.etag,
            "Vary": "Accept",
        }
        if self.cors_origin:
            headers["Access-Control-Allow-Origin"] = self.cors_origin
        # One by one: HeaderMap.update() would skip its key folding.
        for name, value in headers.items():
            response.headers[name] = value
        # If-None-Match, when sent, decides alone (RFC 9110, 13.2.2).
        cptools.validate_etags()
        if "If-None-Match" not in cherrypy.serving.request.headers:
            cptools.validate_since()
        return entry.body
