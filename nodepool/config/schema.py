# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The configuration schema: one voluptuous schema that validates and builds.

Every key of the file format and its default live here (the common part) or
in a driver's ``config`` module (provider, pool and label keys).  Validating
a file with :func:`validate` returns plain data whose keys are already
Python names (``max-servers`` becomes ``max_servers``) with every default
filled in, so the model classes are built straight from it and no second
list of keys or defaults exists anywhere.

The building blocks (:class:`Section`, :func:`each`, :func:`nullable` and
friends) live in :mod:`nodepool.config.validators` and are re-exported
here, so drivers need only this module.

Diskimages are special: their inheritable keys are validated without
defaults, merged along the ``parent`` chain, and only then get defaults
(see :func:`resolve_diskimages`), because a filled-in default on a child
would otherwise override its parent's value.
"""

import re

import voluptuous as v

from nodepool.config.errors import REDACTED, Problem, describe_value
from nodepool.config.validators import (  # noqa: F401 (re-exported)
    UNLIMITED, ConfigInvalid, Section, at_least_one_of, attr_name, choice,
    coerced_number, container_kind, each, limit, nullable, number, one_of,
    path_name, scalar_string, string_list, string_or_integer)

DEFAULT_DRIVER = "openstack"

# Keys whose values are never echoed in error messages.
SECRET_KEYS = frozenset({"password", "env-vars"})


def default_connection_port(connection_type: str) -> int:
    """The port used when a config gives a connection type but no port."""
    return 5986 if connection_type == "winrm" else 22


# --- Common provider and pool keys (drivers extend these) ------------------

def _optional(key, default=None):
    return v.Optional(key, default=default)


PROVIDER = Section({
    v.Required("name"): path_name,
    _optional("driver", DEFAULT_DRIVER): str,
    _optional("max-concurrency", -1): int,
    _optional("priority"): nullable(int),
})

POOL = Section({
    v.Required("name"): path_name,
    _optional("max-servers", UNLIMITED): limit,
    _optional("priority"): nullable(int),
    _optional("node-attributes", dict): dict,
})


def inherit(value, fallback):
    """A pool's key as set on the pool, else the provider's (both were
    validated as nullable without a default: None means not set)."""
    return fallback if value is None else value


def pool_priority(pool_priority, provider_priority):
    """Pools inherit the provider's priority; 100 when neither sets one."""
    if pool_priority is not None:
        return pool_priority
    if provider_priority is not None:
        return provider_priority
    return 100


# --- Top level ---------------------------------------------------------------

ZOOKEEPER_SERVER = Section({
    v.Required("host"): str,
    _optional("port", 2281): int,
    _optional("chroot"): nullable(str),
})

ZOOKEEPER_TLS = Section({
    v.Required("cert"): str,
    v.Required("key"): str,
    v.Required("ca"): str,
    # Ours (see doc/source/security.rst): the server's certificate must
    # name the host connected to; and opt-in x509 ACLs on new znodes.
    _optional("check-hostname", True): bool,
    _optional("acl"): nullable(each(str)),
})

_ORIGIN_RE = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#\s]+", re.IGNORECASE)


def cors_origin(data):
    """``*``, one origin (``scheme://host[:port]``) or null (no header)."""
    if data is None or data == "*" or (
            isinstance(data, str) and _ORIGIN_RE.fullmatch(data)):
        return data
    raise ConfigInvalid("'*', an origin such as 'https://zuul.example.com' "
                        "or null", found=describe_value(data))


WEBAPP = Section({
    _optional("port", 8005): int,
    _optional("listen_address", "0.0.0.0"): str,
    # Our extension: the Access-Control-Allow-Origin of the listings.
    _optional("cors-origin", "*"): cors_origin,
})

LABEL = Section({
    v.Required("name"): path_name,
    _optional("min-ready", 0): int,
    _optional("max-ready-age", 0): int,
})

# Tenant limit keys that map onto quota names; other keys pass verbatim.
_TENANT_QUOTA_NAMES = {
    "max-cores": "cores",
    "max-ram": "ram",
    "max-servers": "instances",
    "max-volumes": "volumes",
    "max-volume-gb": "volume-gb",
}


def _tenant_limits(data):
    limits = {}
    for key, value in data.items():
        if key != "tenant-name":
            limits[_TENANT_QUOTA_NAMES.get(key, key)] = value
    return {"tenant-name": data["tenant-name"], "limits": limits}


TENANT_LIMIT = Section({
    v.Required("tenant-name"): str,
    str: int,
}, _tenant_limits)


# Inheritable diskimage keys: (key, validator, default).  Defaults are
# applied after the parent chain has been merged (see resolve_diskimages).
_DISKIMAGE_INHERITED = (
    ("dib-cmd", str, "disk-image-create"),
    ("elements", each(str), list),
    ("env-vars", {str: str}, dict),
    ("formats", nullable(each(str)), None),
    ("keep-formats", nullable(each(str)), None),
    ("delete-after-upload", bool, False),
    ("pause", bool, False),
    ("release", string_or_integer, ""),
    ("rebuild-age", int, 86400),
    ("build-timeout", int, 28800),
    ("username", str, "zuul"),
    ("python-path", str, "auto"),
    ("shell-type", nullable(str), None),
)

DISKIMAGE = Section(dict(
    [(v.Required("name"), path_name),
     (_optional("abstract", False), bool),
     (_optional("parent"), nullable(str)),
     (_optional("metadata", dict), dict)]
    + [(v.Optional(key), validator)
       for key, validator, _ in _DISKIMAGE_INHERITED]))

_DISKIMAGE_DEFAULTS = v.Schema(
    {v.Optional(attr_name(key), default=default): object
     for key, _, default in _DISKIMAGE_INHERITED},
    extra=v.ALLOW_EXTRA)


def _provider(data):
    """Validate one provider with its driver's schema."""
    # Imported here: the registry imports driver modules, which import us.
    from nodepool import driver as registry
    if not isinstance(data, dict):
        raise ConfigInvalid("a mapping", found=describe_value(data))
    name = data.get("driver", DEFAULT_DRIVER)
    if name not in registry.driver_names():
        raise ConfigInvalid(
            "a known driver (%s)" % ", ".join(registry.driver_names()),
            path=["driver"], found=describe_value(name))
    return registry.get_driver(name).provider_schema()(data)


TOP_LEVEL = Section({
    _optional("webapp", dict): WEBAPP,
    _optional("elements-dir"): nullable(str),
    _optional("images-dir"): nullable(str),
    # MiB that must stay free in images-dir before a build starts; 0: no check.
    _optional("images-dir-required-free", 0): int,
    _optional("build-log-dir", "/var/log/nodepool/builds"): str,
    _optional("build-log-retention", 7): int,
    _optional("zookeeper-servers", list): each(ZOOKEEPER_SERVER),
    _optional("zookeeper-tls"): nullable(ZOOKEEPER_TLS),
    _optional("zookeeper-timeout", 10.0): number,
    _optional("labels", list): each(LABEL, unique="name"),
    _optional("diskimages", list): each(DISKIMAGE, unique="name"),
    _optional("providers", list): each(_provider, unique="name"),
    _optional("max-hold-age"): nullable(int),
    _optional("tenant-resource-limits", list): each(
        TENANT_LIMIT, unique="tenant-name"),
})


def _secure_zookeeper_tls(data):
    return ZOOKEEPER_TLS(data)


# What the secure file's zookeeper-tls replaces is the main file's whole
# section: an empty one (YAML null) would silently turn TLS off, so it is
# refused with this explanation (see Section._null_containers).
_secure_zookeeper_tls.container_kind = (
    "a mapping with ca, cert and key (an empty zookeeper-tls in the secure "
    "file would turn off the main file's TLS; leave the key out to keep "
    "the main file's)")

# The secure file overrides these; other keys are ignored, as upstream does.
SECURE = Section({
    v.Optional("zookeeper-servers"): each(ZOOKEEPER_SERVER),
    v.Optional("zookeeper-tls"): _secure_zookeeper_tls,
    v.Optional("diskimages", default=list): each(Section({
        v.Required("name"): str,
        _optional("env-vars", dict): {str: str},
    }), unique="name"),
}, extra=v.ALLOW_EXTRA)


def validate(data, schema=TOP_LEVEL):
    """Validate raw file data; return Python-named data with defaults.

    Raises :class:`voluptuous.MultipleInvalid` (see :func:`problems_from`).
    An empty document (``None``) is not a mapping and is refused.
    """
    return v.Schema(schema)(data)


# Descriptions of an absent or empty value: they reveal no secret.
_NOTHING_FOUND = ("null", "nothing")


def problems_from(error, raw, redact=False):
    """Turn a voluptuous error into :class:`Problem` objects.

    ``raw`` is the data that was validated; it is used to describe what
    was found at each path.  With ``redact`` nothing found is echoed.
    """
    errors = error.errors if isinstance(error, v.MultipleInvalid) else [error]
    problems = []
    for err in errors:
        path = tuple(err.path)
        if isinstance(err, ConfigInvalid):
            expected, found = err.expected, err.found
        elif isinstance(err, v.RequiredFieldInvalid):
            expected, found = "this required key", "nothing"
        else:
            expected = err.msg
            if expected.startswith("expected "):
                expected = expected[len("expected "):]
            found = None
        if found is None:
            found = _lookup(raw, path)
        if found not in _NOTHING_FOUND and (redact or SECRET_KEYS.intersection(
                p for p in path if isinstance(p, str))):
            found = REDACTED
        problems.append(Problem(path, expected, found))
    return problems


def _lookup(raw, path):
    value = raw
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return "nothing"
    return describe_value(value)


# --- Diskimage inheritance ----------------------------------------------------

def resolve_diskimages(images, problems):
    """Apply ``parent`` inheritance to validated diskimages.

    ``images`` is the validated ``diskimages`` list.  Returns a list of
    complete diskimage mappings (defaults filled in), in file order.  Unknown
    parents and parent cycles are appended to ``problems``.

    Along the chain, root first: ``elements`` are appended, ``env-vars``
    updated, ``delete-after-upload`` overrides whenever it is set, and every
    other inheritable key overrides only when its value is truthy (so a
    child cannot reset a parent's ``pause: true``; upstream behaves so).
    ``name``, ``abstract``, ``parent`` and ``metadata`` are never inherited.
    """
    by_name = {image["name"]: image for image in images}
    resolved = []
    for index, image in enumerate(images):
        chain = _parent_chain(image, by_name, index, problems)
        if chain is None:
            continue
        merged = {}
        for level in reversed(chain):
            _merge_level(merged, level)
        merged = _DISKIMAGE_DEFAULTS(merged)
        merged.update(name=image["name"], abstract=image["abstract"],
                      parent=image["parent"], metadata=image["metadata"],
                      release=merged["release"])
        resolved.append(merged)
    return resolved


def _parent_chain(image, by_name, index, problems):
    chain = [image]
    seen = {image["name"]}
    while chain[-1]["parent"] is not None:
        parent = chain[-1]["parent"]
        if parent not in by_name:
            if chain[-1] is image:
                problems.append(Problem(
                    ("diskimages", index, "parent"), "the name of a diskimage",
                    describe_value(parent)))
            return None
        if parent in seen:
            problems.append(Problem(
                ("diskimages", index, "parent"), "a parent chain without loops",
                "%r leads back to %r" % (parent, image["name"])))
            return None
        seen.add(parent)
        chain.append(by_name[parent])
    return chain


def _merge_level(merged, level):
    for key, _, _ in _DISKIMAGE_INHERITED:
        name = attr_name(key)
        value = level.get(name)
        if name == "elements":
            merged[name] = merged.get(name, []) + list(value or [])
        elif name == "env_vars":
            merged[name] = {**merged.get(name, {}), **(value or {})}
        elif name == "delete_after_upload":
            if value is not None:
                merged[name] = value
        elif value:
            merged[name] = value
