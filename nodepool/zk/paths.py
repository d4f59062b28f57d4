# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Every znode path nodepool reads or writes, built and parsed in one place.

All paths are absolute and relative to the client's chroot, exactly as kazoo
hands them to watch callbacks.  The layout is the wire contract shared with
nodepool 11 and Zuul (the tree is described in doc/source/zookeeper.rst).

Builders validate each component they are given: an empty component, one
containing ``/`` or one of the names ``.`` and ``..`` raises
:class:`ValueError`, a non-string raises :class:`TypeError`.  They do not
reject the name ``lock``; callers that list children of a container must
skip the lock directories themselves.

Parsers are used by the tree caches to map watch events onto records.  They
return an object key only for the znode of a record, never for a lock
directory or a lock contender, and ``None`` for anything else (including the
root itself, paths with empty segments such as a trailing slash, and paths
of other trees that merely share a prefix).
"""

from typing import Optional, Tuple, Union

NODEPOOL_ROOT = "/nodepool"
NODE_ROOT = "/nodepool/nodes"
REQUEST_ROOT = "/nodepool/requests"
REQUEST_LOCK_ROOT = "/nodepool/requests-lock"
IMAGE_ROOT = "/nodepool/images"
COMPONENT_ROOT = "/nodepool/components"
ELECTION_ROOT = "/nodepool/elections"
STATS_ELECTION = "/nodepool/elections/stats"
# Launchers registered here before nodepool 4; kept for reference only.
LAUNCHER_ROOT = "/nodepool/launchers"
# Autohold requests are owned by Zuul; nodepool never writes there.
HOLD_REQUEST_ROOT = "/zuul/hold-requests"

# Fixed child names inside the trees above.
LOCK = "lock"
PAUSE = "pause"
REQUEST_BUILD = "request-build"
BUILDS = "builds"
PROVIDERS = "providers"
UPLOADS = "images"

# Component kinds registered under COMPONENT_ROOT.
COMPONENT_LAUNCHER = "launcher"
COMPONENT_BUILDER = "builder"
COMPONENT_POOL = "pool"

# Request priority prefixes (zero-padded, three characters).
PRIORITY_HIGH = "100"
PRIORITY_NORMAL = "200"
PRIORITY_LOW = "300"
PRIORITY_MIN_READY = "900"
PRIORITY_DEFAULT = PRIORITY_HIGH

# Separator between a lock contender's unique prefix and its sequence, as
# written by the kazoo Lock recipe (``<32 hex>__lock__<10 digits>``).
_CONTENDER_MARKERS = ("__lock__", "__rlock__")


def _component(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError("%s must be a str, not %r" % (what, type(value).__name__))
    if not value or "/" in value or value in (".", ".."):
        raise ValueError("invalid %s for a znode path: %r" % (what, value))
    return value


# -- nodes -------------------------------------------------------------------

def node_path(node_id: str) -> str:
    """Path of the node record ``node_id``."""
    return "%s/%s" % (NODE_ROOT, _component(node_id, "node id"))


def node_lock_path(node_id: str) -> str:
    """Path of the kazoo lock directory of node ``node_id``."""
    return "%s/%s" % (node_path(node_id), LOCK)


# -- requests ----------------------------------------------------------------

def request_path(request_id: str) -> str:
    """Path of the node request ``request_id`` (``<prio>-<seq>``)."""
    return "%s/%s" % (REQUEST_ROOT, _component(request_id, "request id"))


def request_prefix(priority: Union[str, int]) -> str:
    """Prefix for a sequential create of a request with ``priority``.

    ``priority`` is the three-character prefix such as ``"100"``; an int is
    zero-padded to three digits.  ZooKeeper appends the ten-digit sequence,
    so the resulting znode is ``/nodepool/requests/<prio>-<seq>``.
    """
    if isinstance(priority, int) and not isinstance(priority, bool):
        if priority < 0:
            raise ValueError("negative request priority: %r" % priority)
        priority = "%03d" % priority
    _component(priority, "request priority")
    if "-" in priority:
        raise ValueError("request priority may not contain '-': %r" % priority)
    return "%s/%s-" % (REQUEST_ROOT, priority)


def request_lock_path(request_id: str) -> str:
    """Path of the lock directory of request ``request_id``.

    The lock lives in a separate tree so that it survives the deletion of
    the request itself.
    """
    return "%s/%s" % (REQUEST_LOCK_ROOT, _component(request_id, "request id"))


def split_request_id(request_id: str) -> Tuple[str, str]:
    """Split ``"100-0000000042"`` into ``("100", "0000000042")``.

    Raises :class:`ValueError` when the id has no ``-`` or either half is
    empty.
    """
    if not isinstance(request_id, str):
        raise TypeError("request id must be a str, not %r"
                        % type(request_id).__name__)
    prefix, sep, sequence = request_id.partition("-")
    if not sep or not prefix or not sequence:
        raise ValueError("malformed request id: %r" % request_id)
    return prefix, sequence


# -- images, builds and uploads ----------------------------------------------

def image_path(image: str) -> str:
    """Path of the container of diskimage ``image``."""
    return "%s/%s" % (IMAGE_ROOT, _component(image, "image name"))


def image_pause_path(image: str) -> str:
    """Path whose presence marks ``image`` as paused."""
    return "%s/%s" % (image_path(image), PAUSE)


def image_build_request_path(image: str) -> str:
    """Path whose presence asks the builder for a manual build of ``image``."""
    return "%s/%s" % (image_path(image), REQUEST_BUILD)


def builds_path(image: str) -> str:
    """Path of the container holding the builds of ``image``."""
    return "%s/%s" % (image_path(image), BUILDS)


def build_lock_path(image: str) -> str:
    """Path of the "image build lock", held for a whole DIB run."""
    return "%s/%s" % (builds_path(image), LOCK)


def build_path(image: str, build_id: str) -> str:
    """Path of the ImageBuild record ``build_id`` of ``image``."""
    return "%s/%s" % (builds_path(image), _component(build_id, "build id"))


def build_id_lock_path(image: str, build_id: str) -> str:
    """Path of the "build-id lock" of one build."""
    return "%s/%s" % (build_path(image, build_id), LOCK)


def build_providers_path(image: str, build_id: str) -> str:
    """Path of the container of per-provider upload trees of one build."""
    return "%s/%s" % (build_path(image, build_id), PROVIDERS)


def build_provider_path(image: str, build_id: str, provider: str) -> str:
    """Path of the container for ``provider`` under one build."""
    return "%s/%s" % (build_providers_path(image, build_id),
                      _component(provider, "provider name"))


def uploads_path(image: str, build_id: str, provider: str) -> str:
    """Parent of the sequential upload records for one build and provider."""
    return "%s/%s" % (build_provider_path(image, build_id, provider), UPLOADS)


def upload_lock_path(image: str, build_id: str, provider: str) -> str:
    """Path of the "upload lock" (one uploader per build and provider)."""
    return "%s/%s" % (uploads_path(image, build_id, provider), LOCK)


def upload_path(image: str, build_id: str, provider: str,
                upload_id: str) -> str:
    """Path of the ImageUpload record ``upload_id``."""
    return "%s/%s" % (uploads_path(image, build_id, provider),
                      _component(upload_id, "upload id"))


def upload_number_lock_path(image: str, build_id: str, provider: str,
                            upload_id: str) -> str:
    """Path of the "upload-number lock" of one upload."""
    return "%s/%s" % (upload_path(image, build_id, provider, upload_id), LOCK)


# -- components --------------------------------------------------------------

def component_kind_path(kind: str) -> str:
    """Path of the container of components of ``kind`` (e.g. ``pool``)."""
    return "%s/%s" % (COMPONENT_ROOT, _component(kind, "component kind"))


def component_path(kind: str, name: str) -> str:
    """Path of one registered component.

    For a new registration ``name`` is the hostname and the znode is created
    ephemeral-sequential, so ZooKeeper appends ten digits.
    """
    return "%s/%s" % (component_kind_path(kind),
                      _component(name, "component name"))


# -- parsers -----------------------------------------------------------------

def _split(path: str, root: str) -> Optional[list]:
    """Segments of ``path`` below ``root``, or None if it is not below it.

    The root itself, and any path with an empty segment (a trailing or
    doubled slash), yield None.
    """
    if not isinstance(path, str) or not path.startswith(root + "/"):
        return None
    parts = path[len(root) + 1:].split("/")
    if any(not part for part in parts):
        return None
    return parts


def parse_node_path(path: str) -> Optional[Tuple[str]]:
    """``(node_id,)`` for ``/nodepool/nodes/<node_id>``, else None."""
    parts = _split(path, NODE_ROOT)
    if parts is None or len(parts) != 1 or parts[0] == LOCK:
        return None
    return (parts[0],)


def parse_node_lock_path(path: str) -> Optional[Tuple[str, str]]:
    """``(node_id, contender)`` for a contender of a node's lock, else None.

    Matches only ``/nodepool/nodes/<node_id>/lock/<contender>``; the lock
    directory itself is not a contender.
    """
    parts = _split(path, NODE_ROOT)
    if (parts is None or len(parts) != 3 or parts[1] != LOCK
            or parts[0] == LOCK):
        return None
    return (parts[0], parts[2])


def parse_request_path(path: str) -> Optional[Tuple[str]]:
    """``(request_id,)`` for ``/nodepool/requests/<request_id>``, else None."""
    parts = _split(path, REQUEST_ROOT)
    if parts is None or len(parts) != 1 or parts[0] == LOCK:
        return None
    return (parts[0],)


def parse_request_lock_path(path: str) -> Optional[Tuple[str]]:
    """``(request_id,)`` for a request's lock directory, else None.

    Matches ``/nodepool/requests-lock/<request_id>`` only, not its
    contenders.
    """
    parts = _split(path, REQUEST_LOCK_ROOT)
    if parts is None or len(parts) != 1:
        return None
    return (parts[0],)


def parse_image_path(path: str) -> Optional[tuple]:
    """Object key of an image tree record, or None.

    * ``/nodepool/images/<image>`` -> ``(image,)``
    * ``.../<image>/builds/<build_id>`` -> ``(image, build_id)``
    * ``.../builds/<build_id>/providers/<provider>/images/<upload_id>`` ->
      ``(image, build_id, provider, upload_id)``

    The fixed segments (``builds``, ``providers``, ``images``) are checked
    and no object segment may be ``lock``, so lock directories, their
    contenders, the ``pause`` and ``request-build`` markers and the
    intermediate containers are never mistaken for records.
    """
    parts = _split(path, IMAGE_ROOT)
    if parts is None:
        return None
    if len(parts) == 1:
        key = (parts[0],)
    elif len(parts) == 3 and parts[1] == BUILDS:
        key = (parts[0], parts[2])
    elif (len(parts) == 7 and parts[1] == BUILDS and parts[3] == PROVIDERS
          and parts[5] == UPLOADS):
        key = (parts[0], parts[2], parts[4], parts[6])
    else:
        return None
    if LOCK in key:
        return None
    return key


def parse_image_pause_path(path: str) -> Optional[str]:
    """Image name for ``/nodepool/images/<image>/pause``, else None."""
    parts = _split(path, IMAGE_ROOT)
    if (parts is None or len(parts) != 2 or parts[1] != PAUSE
            or parts[0] == LOCK):
        return None
    return parts[0]


def parse_component_path(path: str) -> Optional[Tuple[str, str]]:
    """``(kind, name)`` for ``/nodepool/components/<kind>/<name>``, else None."""
    parts = _split(path, COMPONENT_ROOT)
    if parts is None or len(parts) != 2:
        return None
    return (parts[0], parts[1])


def lock_contender_sequence(name: str) -> Optional[int]:
    """Sequence number of a kazoo lock contender name, or None.

    Contenders are named ``<unique>__lock__<10 digits>`` (``__rlock__`` for
    read locks); the lowest sequence holds the lock.
    """
    for marker in _CONTENDER_MARKERS:
        _, sep, sequence = name.rpartition(marker)
        if sep and sequence.isascii() and sequence.isdigit():
            return int(sequence)
    return None
