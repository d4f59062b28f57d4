# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Status listings shared by the ``nodepool`` CLI and the launcher web app.

Every listing is a pure function of record objects, so the launcher can
feed it from its tree caches and the CLI from direct ZooKeeper reads.  Each
returns ``(headers, rows)``:

``headers``
    a list of :class:`Column` (``key``, ``title``, ``kind``) in display
    order.  ``key`` is the JSON key of the web API (doc/source/webapp.rst), ``title``
    the table header of the CLI.
``rows``
    a list of dicts keyed by the column keys, in header order, holding
    JSON-ready values (str, int, float, bool, None, lists, dicts).  These
    are what the web app returns as JSON.

Listings:

=============================================  ===============================
:func:`node_list` ``(nodes, node_id=None)``    ``nodepool list --detail``,
                                               ``GET /node-list``
:func:`request_list` ``(requests, reasons)``   ``request-list``
                                               (``--detail``)
:func:`pending_request_status`,                ``GET /request-status``
:func:`request_status`                         (``/<request id>``)
:func:`image_list` ``(uploads)``               ``image-list``
:func:`dib_image_list` ``(builds, paused)``    ``dib-image-list``
:func:`image_status` ``(statuses)``            ``image-status``
:func:`label_list` ``(pools)``                 ``GET /label-list``
=============================================  ===============================

Inputs:

* ``nodes``: :class:`~nodepool.zk.models.Node` objects.  The ``locked``
  column is derived from ``node.lock_contenders`` (maintained by the node
  cache; :func:`read_nodes` fills it in for direct reads).
* ``requests``: :class:`~nodepool.zk.models.NodeRequest` objects.
* ``uploads``: :class:`~nodepool.zk.models.ImageUpload` objects.
* ``builds``: :class:`~nodepool.zk.models.ImageBuild` objects and
  ``paused``: a collection of image names whose ZooKeeper pause flag is
  set (their builds show state ``paused``).
* ``statuses``: :class:`ImageStatus` objects (see
  :func:`read_image_status`; the launcher may build them from its image
  cache).
* ``pools``: pool component records (anything with ``supported_labels``).

Rows keep the input order, except :func:`label_list` (sorted).  The
``read_*`` helpers read ZooKeeper directly in a stable order.

Ages: ``age`` in node rows is already a ``DD:HH:MM:SS`` string; in image
and build rows it is the ``state_time`` as int epoch seconds, and in image
status rows ``build_request_age`` is the request znode's ctime in
milliseconds.  :func:`render_table` turns both into ``DD:HH:MM:SS`` (the
column's ``kind`` says how).

:func:`render_table` ``(headers, rows, fields=None) -> str`` draws the
left-aligned table; ``fields`` (JSON keys) restricts the columns, keeping
header order and ignoring unknown keys.  :data:`NODE_LIST_FIELDS` are the
columns of ``nodepool list`` without ``--detail``.
"""

import dataclasses
import time
from typing import (Any, Collection, Dict, Iterable, List, Mapping,
                    NamedTuple, Optional, Sequence, Tuple)

import prettytable


# Column kinds: how render_table shows a value.
TEXT = "text"
AGE = "age"          # epoch seconds -> DD:HH:MM:SS
AGE_MS = "age_ms"    # epoch milliseconds -> DD:HH:MM:SS


class Column(NamedTuple):
    """One column of a listing: JSON key, table title, display kind."""

    key: str
    title: str
    kind: str = TEXT


Row = Dict[str, Any]
Listing = Tuple[List[Column], List[Row]]


def format_age(timestamp: Optional[float], now: Optional[float] = None) -> str:
    """``DD:HH:MM:SS`` elapsed since the epoch ``timestamp``.

    ``None`` yields ``""``.  A timestamp in the future counts as age 0.
    """
    if timestamp is None:
        return ""
    if now is None:
        now = time.time()
    elapsed = max(0, int(now - timestamp))
    minutes, seconds = divmod(elapsed, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return "%02d:%02d:%02d:%02d" % (days, hours, minutes, seconds)


def _epoch(value: Optional[float]) -> Optional[int]:
    return None if value is None else int(value)


def _wire(value: Any) -> Any:
    """State enums become their wire strings; the rest passes through."""
    return getattr(value, "value", value) if value is not None else None


# -- nodes --------------------------------------------------------------------

NODE_COLUMNS = [
    Column("id", "ID"),
    Column("provider", "Provider"),
    Column("label", "Label"),
    Column("server_id", "Server ID"),
    Column("public_ipv4", "Public IPv4"),
    Column("ipv6", "IPv6"),
    Column("state", "State"),
    Column("age", "Age"),
    Column("locked", "Locked"),
    Column("pool", "Pool"),
    Column("hostname", "Hostname"),
    Column("private_ipv4", "Private IPv4"),
    Column("AZ", "AZ"),
    Column("username", "Username"),
    Column("connection_port", "Port"),
    Column("launcher", "Launcher"),
    Column("allocated_to", "Allocated To"),
    Column("hold_job", "Hold Job"),
    Column("comment", "Comment"),
    Column("user_data", "User Data"),
    Column("driver_data", "Driver Data"),
]

#: Columns of ``nodepool list`` without ``--detail``.
NODE_LIST_FIELDS = [c.key for c in NODE_COLUMNS[:9]]


def node_row(node, now: Optional[float] = None) -> Row:
    """The row of one node (all 21 keys)."""
    port = node.connection_port
    if not isinstance(port, int) or isinstance(port, bool):
        # E.g. a Kubernetes token; never show it.
        port = "redacted"
    contenders = getattr(node, "lock_contenders", None)
    return {
        "id": node.id,
        "provider": node.provider,
        "label": list(node.type or []),
        "server_id": node.external_id,
        "public_ipv4": node.public_ipv4,
        "ipv6": node.public_ipv6,
        "state": _wire(node.state),
        "age": format_age(node.state_time, now),
        "locked": "locked" if contenders else "unlocked",
        "pool": node.pool,
        "hostname": node.hostname,
        "private_ipv4": node.private_ipv4,
        "AZ": node.az,
        "username": node.username,
        "connection_port": port,
        "launcher": node.launcher,
        "allocated_to": node.allocated_to,
        "hold_job": node.hold_job,
        "comment": node.comment,
        "user_data": node.user_data,
        "driver_data": node.driver_data,
    }


def node_list(nodes: Iterable, node_id: Optional[str] = None,
              now: Optional[float] = None) -> Listing:
    """All nodes, or only ``node_id`` (no rows if it is absent)."""
    rows = [node_row(node, now) for node in nodes
            if node_id is None or node.id == node_id]
    return list(NODE_COLUMNS), rows


# -- requests -----------------------------------------------------------------

REQUEST_COLUMNS = [
    Column("id", "Request ID"),
    Column("relative_priority", "Priority"),
    Column("state", "State"),
    Column("requestor", "Requestor"),
    Column("node_types", "Node Types"),
    Column("nodes", "Nodes"),
    Column("declined_by", "Declined By"),
    Column("event_id", "Event ID"),
]


#: ``request-list --detail``: the columns above and why a request waits.
REQUEST_DETAIL_COLUMNS = REQUEST_COLUMNS + [Column("reason", "Reason")]


def request_list(requests: Iterable,
                 reasons: Optional[Dict[str, str]] = None) -> Listing:
    """One row per node request; with ``reasons`` (see
    :func:`request_reasons`) a ``reason`` column too."""
    requests = list(requests)
    rows = [{
        "id": request.id,
        "relative_priority": request.relative_priority,
        "state": _wire(request.state),
        "requestor": request.requestor,
        "node_types": list(request.node_types or []),
        "nodes": list(request.nodes or []),
        "declined_by": list(request.declined_by or []),
        "event_id": request.event_id,
    } for request in requests]
    if reasons is None:
        return list(REQUEST_COLUMNS), rows
    for row in rows:
        row["reason"] = reasons.get(row["id"], "")
    return list(REQUEST_DETAIL_COLUMNS), rows


def request_reasons(requests: Iterable, pools: Iterable) -> Dict[str, str]:
    """Why each requested or pending request waits, from the ``waiting``
    fields of the pool component records (objects with ``to_dict()``,
    e.g. :class:`~nodepool.zk.registry.ComponentInfo`): the reason of the pool that got
    furthest with it, naming the pool.  A requested request no pool
    mentions while no registered pool serves all its labels is
    ``label-not-served``; other requests are left out."""
    from nodepool.launcher import why
    # The records' content: a ComponentInfo's ``name`` is its znode's.
    records = [pool.to_dict() for pool in pools]
    said: Dict[str, List[str]] = {}
    for record in records:
        waiting = record.get("waiting")
        if not isinstance(waiting, Mapping):
            continue  # display only: a malformed field is skipped
        for request_id, text in waiting.items():
            if isinstance(text, str):
                said.setdefault(request_id, []).append("%s (pool %s/%s)" % (
                    text, record.get("provider_name"), record.get("name")))
    served = [set(r.get("supported_labels") or ()) for r in records]
    result = {}
    for request in requests:
        state = _wire(request.state)
        if state not in _WAITING_STATES:
            continue
        best = why.summarize(said.get(request.id, ()))
        wanted = set(request.node_types or ())
        if best is None and state == "requested" and \
                not any(wanted <= labels for labels in served):
            best = "%s: no registered pool serves %s" % (
                why.LABEL_NOT_SERVED, ", ".join(sorted(wanted)))
        if best is not None:
            result[request.id] = best
    return result


# -- why requests wait ---------------------------------------------------------

_NO_REASON = {"reason": None, "detail": None, "pool": None, "since": None}
_WAITING_STATES = ("requested", "pending")


def _request_fields(request) -> Row:
    return {"id": request.id, "state": _wire(request.state),
            "node_types": list(request.node_types or []),
            "declined_by": list(request.declined_by or [])}


def pending_request_status(requests: Iterable, journal) -> List[Row]:
    """``GET /request-status``: every requested or pending request, by id,
    with the reason the launcher's journal
    (:class:`~nodepool.launcher.why.RequestJournal`) gives; all None when
    no pool of the launcher looked at it yet."""
    rows = []
    for request in sorted(requests, key=lambda r: r.id):
        if _wire(request.state) not in _WAITING_STATES:
            continue
        row = _request_fields(request)
        row.update(journal.reason(request.id) or _NO_REASON)
        rows.append(row)
    return rows


def request_status(request_id: str, request, journal) -> Optional[Row]:
    """``GET /request-status/<id>``: the record's fields (``request`` is
    None once the record is gone), every pool's reason and the timeline;
    None if neither the record nor the journal knows the request."""
    described = journal.describe(request_id)
    if request is None and described is None:
        return None
    result = {"id": request_id, "state": None, "node_types": None,
              "declined_by": None}
    if request is not None:
        result.update(_request_fields(request))
    result.update(described or dict(_NO_REASON, pools={}, timeline=[],
                                    dropped_events=0, first_seen=None,
                                    last_seen=None))
    return result


# -- images -------------------------------------------------------------------

IMAGE_COLUMNS = [
    Column("id", "Build ID"),
    Column("upload_id", "Upload ID"),
    Column("provider", "Provider"),
    Column("image", "Image"),
    Column("external_name", "Provider Image Name"),
    Column("external_id", "Provider Image ID"),
    Column("state", "State"),
    Column("age", "Age", AGE),
]


def image_list(uploads: Iterable) -> Listing:
    """One row per image upload."""
    rows = [{
        "id": upload.build_id,
        "upload_id": upload.id,
        "provider": upload.provider_name,
        "image": upload.image_name,
        "external_name": upload.external_name,
        "external_id": upload.external_id,
        "state": _wire(upload.state),
        "age": _epoch(upload.state_time),
    } for upload in uploads]
    return list(IMAGE_COLUMNS), rows


DIB_IMAGE_COLUMNS = [
    Column("id", "ID"),
    Column("image", "Image"),
    Column("builder", "Builder"),
    Column("formats", "Formats"),
    Column("state", "State"),
    Column("age", "Age", AGE),
]


def build_label(image: str, build_id: str) -> str:
    """The ``<image>-<build_id>`` id of ``dib-image-list``."""
    return "%s-%s" % (image, build_id)


def split_build_label(label: str) -> Tuple[str, str]:
    """Inverse of :func:`build_label` (split on the last ``-``).

    :raises ValueError: no ``-`` in ``label``.
    """
    image, sep, build_id = label.rpartition("-")
    if not sep or not image or not build_id:
        raise ValueError("%r is not of the form <image>-<build id>" % label)
    return image, build_id


def dib_image_list(builds: Iterable,
                   paused: Collection[str] = ()) -> Listing:
    """One row per build; builds of paused images show state ``paused``."""
    paused = set(paused)
    rows = [{
        "id": build_label(build.image_name, build.id),
        "image": build.image_name,
        "builder": build.builder,
        "formats": list(build.formats or []),
        "state": ("paused" if build.image_name in paused
                  else _wire(build.state)),
        "age": _epoch(build.state_time),
    } for build in builds]
    return list(DIB_IMAGE_COLUMNS), rows


@dataclasses.dataclass
class ImageStatus:
    """Pause flag and manual build request of one image.

    ``build_request`` is ``None``, ``"pending"`` or ``"building"``;
    ``build_request_age`` the request znode's ctime in ms (or ``None``).
    """

    image: str
    paused: bool = False
    build_request: Optional[str] = None
    build_request_age: Optional[int] = None


IMAGE_STATUS_COLUMNS = [
    Column("image", "Image"),
    Column("paused", "Paused"),
    Column("build_request", "Build Request"),
    Column("build_request_age", "Build Request Age", AGE_MS),
]


def image_status(statuses: Iterable[ImageStatus]) -> Listing:
    """One row per image."""
    rows = [{
        "image": status.image,
        "paused": bool(status.paused),
        "build_request": status.build_request,
        "build_request_age": status.build_request_age,
    } for status in statuses]
    return list(IMAGE_STATUS_COLUMNS), rows


# -- labels -------------------------------------------------------------------

LABEL_COLUMNS = [Column("label", "Label")]


def label_list(pools: Iterable) -> Listing:
    """The sorted union of ``supported_labels`` of all pools."""
    labels = set()
    for pool in pools:
        labels.update(getattr(pool, "supported_labels", None) or ())
    return list(LABEL_COLUMNS), [{"label": label}
                                 for label in sorted(labels)]


# -- rendering ----------------------------------------------------------------

def _cell(column: Column, value: Any, now: Optional[float]) -> str:
    if value is None:
        return ""
    if column.kind == AGE and isinstance(value, (int, float)):
        return format_age(value, now)
    if column.kind == AGE_MS and isinstance(value, (int, float)):
        # Upstream shows the millisecond ctime as if it were seconds; we
        # show the real age.
        return format_age(value / 1000.0, now)
    if isinstance(value, (list, tuple)):
        return ",".join("" if v is None else str(v) for v in value)
    return str(value)


def select_columns(headers: Sequence[Column],
                   fields: Optional[Iterable[str]] = None) -> List[Column]:
    """Columns whose key is in ``fields`` (all if ``fields`` is empty)."""
    if not fields:
        return list(headers)
    wanted = set(fields)
    return [c for c in headers if c.key in wanted]


def render_table(headers: Sequence[Column], rows: Iterable[Row],
                 fields: Optional[Iterable[str]] = None,
                 now: Optional[float] = None) -> str:
    """A left-aligned PrettyTable of ``rows`` as a string.

    ``fields`` restricts the columns to these JSON keys.  Lists are joined
    with ``,``, ``None`` is empty, age columns are ``DD:HH:MM:SS``.
    """
    columns = select_columns(headers, fields)
    table = prettytable.PrettyTable([c.title for c in columns])
    table.align = "l"
    for row in rows:
        table.add_row([_cell(c, row.get(c.key), now) for c in columns])
    return table.get_string()


# -- direct ZooKeeper reads (CLI) ---------------------------------------------

def read_nodes(node_store, node_id: Optional[str] = None) -> List:
    """Nodes read from ZooKeeper with ``lock_contenders`` filled in.

    With ``node_id`` only that node (``[]`` if it does not exist).
    """
    if node_id is not None:
        node = node_store.get_node(node_id, cached=False)
        nodes = [node] if node is not None else []
    else:
        nodes = list(node_store.iter_nodes(cached=False))
    for node in nodes:
        node.lock_contenders = set(node_store.node_lock_contenders(node.id))
    return nodes


def read_uploads(image_store) -> List:
    """Every upload, ordered by image, build, provider and upload id."""
    uploads = []
    for image in image_store.get_image_names():
        for build_id in image_store.get_build_ids(image):
            for provider in image_store.get_build_providers(image, build_id):
                uploads.extend(image_store.get_uploads(image, build_id,
                                                       provider))
    return uploads


def read_builds(image_store) -> Tuple[List, List[str]]:
    """``(builds, paused image names)``, builds ordered by image and id."""
    builds, paused = [], []
    for image in image_store.get_image_names():
        if image_store.is_image_paused(image):
            paused.append(image)
        builds.extend(image_store.get_builds(image))
    return builds, paused


def read_image_status(image_store) -> List[ImageStatus]:
    """Status of every image znode, read through ``image_store`` (an
    :class:`~nodepool.zk.images.ImageStore`).

    A build request is ``building`` when the image build lock has a
    contender and some build znode was created no earlier than the lock
    directory (i.e. the lock is held for a build that exists); otherwise
    ``pending``.
    """
    result = []
    for image in image_store.get_image_names():
        status = ImageStatus(image,
                             paused=image_store.is_image_paused(image))
        request_ctime = image_store.build_request_ctime(image)
        if request_ctime is not None:
            status.build_request = "pending"
            status.build_request_age = request_ctime
            if _build_in_progress(image_store, image):
                status.build_request = "building"
        result.append(status)
    return result


def _build_in_progress(image_store, image: str) -> bool:
    lock_ctime = image_store.build_lock_ctime(image)
    if lock_ctime is None:
        return False
    return any(ctime >= lock_ctime
               for ctime in image_store.build_ctimes(image).values())
