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

Building blocks:

* :class:`Section` -- a mapping with known keys; rejects unknown keys (and
  names the allowed ones), runs cross-key checks, renames keys on output.
* :func:`each` -- a list whose items are all validated (errors of every item
  are collected) with optional unique ``name`` enforcement.
* :func:`nullable`, :data:`number`, :func:`one_of` and friends.

Diskimages are special: their inheritable keys are validated without
defaults, merged along the ``parent`` chain, and only then get defaults
(see :func:`resolve_diskimages`), because a filled-in default on a child
would otherwise override its parent's value.
"""

import math
import re

import voluptuous as v

from nodepool.config.errors import REDACTED, Problem, describe_value

UNLIMITED = math.inf
DEFAULT_DRIVER = "openstack"

# Keys whose values are never echoed in error messages.
SECRET_KEYS = frozenset({"password", "env-vars"})


def attr_name(key: str) -> str:
    """The Python attribute name for a config key."""
    return key.replace("-", "_")


class ConfigInvalid(v.Invalid):
    """A validation failure with explicit expected/found wording."""

    def __init__(self, expected, path=None, found=None):
        super().__init__("expected " + expected, path=path)
        self.expected = expected
        self.found = found


class Section:
    """A mapping with a fixed set of keys.

    ``keys`` is a voluptuous dict schema (markers with defaults).  ``checks``
    are callables given the validated mapping (still with file key names);
    they may raise :class:`voluptuous.Invalid` with a path relative to the
    mapping, and may return a replacement mapping.  ``extra`` is passed to
    voluptuous (``v.ALLOW_EXTRA`` for mappings that accept arbitrary keys).
    ``drop`` lists accepted but ignored (deprecated) keys.
    """

    def __init__(self, keys, *checks, extra=v.PREVENT_EXTRA, drop=()):
        self.keys = dict(keys)
        for key in drop:
            self.keys.setdefault(v.Optional(key), object)
        self.checks = checks
        self.extra = extra
        self.drop = tuple(drop)
        self._schema = v.Schema(self.keys, extra=extra)

    def extend(self, keys, *checks, drop=()):
        """A new section with more (or replaced) keys and extra checks."""
        merged = {}
        names = {_key_name(k) for k in keys}
        for key, value in self.keys.items():
            if _key_name(key) not in names:
                merged[key] = value
        merged.update(keys)
        return Section(merged, *(self.checks + checks), extra=self.extra,
                       drop=self.drop + tuple(drop))

    def key_names(self):
        return sorted(str(_key_name(k)) for k in self.keys
                      if isinstance(_key_name(k), str))

    def __call__(self, data):
        if not isinstance(data, dict):
            raise ConfigInvalid("a mapping", found=describe_value(data))
        nulls = self._null_containers(data)
        try:
            out = self._schema(data)
        except v.MultipleInvalid as exc:
            errors = [self._explain(e) for e in exc.errors]
            paths = {tuple(e.path) for e in nulls}
            raise v.MultipleInvalid(nulls + [
                e for e in errors if tuple(e.path) not in paths]) from None
        if nulls:
            raise v.MultipleInvalid(nulls)
        for check in self.checks:
            result = check(out)
            if result is not None:
                out = result
        return {attr_name(k) if isinstance(k, str) else k: value
                for k, value in out.items() if k not in self.drop}

    def _null_containers(self, data):
        """Errors for keys written as null where a list or mapping belongs.

        A key left out takes its default; ``key:`` with nothing after it is
        YAML null, which nodepool 11 rejects for lists and mappings ("expected
        list"): a forgotten value should not silently mean "empty".
        """
        errors = []
        for key, validator in self.keys.items():
            name = _key_name(key)
            if isinstance(name, str) and name in data and \
                    data[name] is None:
                kind = container_kind(validator)
                if kind is not None:
                    errors.append(ConfigInvalid(kind, path=[name],
                                                found="null"))
        return errors

    def _explain(self, error):
        if (len(error.path) == 1 and error.msg == "extra keys not allowed"):
            return ConfigInvalid(
                "one of the keys %s" % ", ".join(self.key_names()),
                path=error.path, found="unknown key %r" % error.path[0])
        return error


def _key_name(key):
    return key.schema if isinstance(key, v.Marker) else key


def container_kind(validator):
    """``"a list"`` or ``"a mapping"`` if ``validator`` only accepts one
    (possibly wrapped by :func:`nullable`), else None."""
    kind = getattr(validator, "container_kind", None)
    if kind is not None:
        return kind
    if isinstance(validator, v.Schema):
        validator = validator.schema
    if isinstance(validator, (Section, dict)) or validator is dict:
        return "a mapping"
    if isinstance(validator, list) or validator is list:
        return "a list"
    return None


def _validator(schema):
    """Wrap anything that is not already a callable validator."""
    if isinstance(schema, (Section, v.Schema)) or (
            callable(schema) and not isinstance(schema, type)):
        return schema
    return v.Schema(schema)


def _reraise_at(exc, prefix):
    errors = exc.errors if isinstance(exc, v.MultipleInvalid) else [exc]
    for error in errors:
        error.prepend(list(prefix))
    return errors


def each(item, unique=None):
    """A list whose items all match ``item``.

    Errors of all items are reported.  With ``unique`` set to a key name,
    two items with the same value for it are an error.
    """
    validate_item = _validator(item)

    def validate(data):
        if not isinstance(data, list):
            raise ConfigInvalid("a list", found=describe_value(data))
        out, errors, seen = [], [], {}
        for index, value in enumerate(data):
            try:
                out.append(validate_item(value))
            except v.Invalid as exc:
                errors.extend(_reraise_at(exc, [index]))
                continue
            if unique and isinstance(value, dict):
                name = value.get(unique)
                if name in seen:
                    errors.append(ConfigInvalid(
                        "a unique %s" % unique, path=[index, unique],
                        found="%r, already used by item [%d]" % (
                            name, seen[name])))
                else:
                    seen[name] = index
        if errors:
            raise v.MultipleInvalid(errors)
        return out
    validate.container_kind = "a list"
    return validate


def nullable(schema):
    """``schema`` or ``null``; used for optional keys without a default.

    For a list or mapping ``schema`` only the default may be null: a
    :class:`Section` rejects a null written in the file (see
    :meth:`Section._null_containers`).
    """
    validate_inner = _validator(schema)

    def validate(data):
        if data is None:
            return None
        return validate_inner(data)
    validate.container_kind = container_kind(schema)
    return validate


def number(data):
    """An int or a float (not a bool), returned as float."""
    if isinstance(data, bool) or not isinstance(data, (int, float)):
        raise ConfigInvalid("a number", found=describe_value(data))
    return float(data)


def coerced_number(data):
    """A number, or a string holding one (``"0.5"``), returned as float:
    nodepool 11 coerces the keys that use this (OpenStack and Azure
    ``rate``)."""
    if isinstance(data, str):
        try:
            return float(data)
        except ValueError:
            raise ConfigInvalid("a number", found=describe_value(data))
    return number(data)


def limit(data):
    """A resource limit: an int; the default (unlimited) is ``math.inf``."""
    if data == UNLIMITED:
        return data
    if isinstance(data, bool) or not isinstance(data, int):
        raise ConfigInvalid("an integer", found=describe_value(data))
    return data


def choice(*values):
    """One of the given literal values."""
    def validate(data):
        if data not in values:
            raise ConfigInvalid(
                "one of %s" % ", ".join(repr(x) for x in values),
                found=describe_value(data))
        return data
    return validate


def string_list(data):
    """A string or a list of strings, returned as a list."""
    if isinstance(data, str):
        return [data]
    if isinstance(data, list) and all(isinstance(x, str) for x in data):
        return data
    raise ConfigInvalid("a string or a list of strings",
                        found=describe_value(data))


def string_or_integer(data):
    """A string or an integer, returned as a string.

    A float is refused: ``9.10`` would become ``"9.1"``; quote it.
    """
    if isinstance(data, str):
        return data
    if isinstance(data, int) and not isinstance(data, bool):
        return str(data)
    raise ConfigInvalid("a string or an integer (quote a value such as "
                        "'9.10')", found=describe_value(data))


def scalar_string(data):
    """A string; numbers and booleans are accepted and stringified."""
    if isinstance(data, (str, int, float, bool)):
        return str(data)
    raise ConfigInvalid("a string", found=describe_value(data))


def one_of(*keys, required=False):
    """A check: at most one of ``keys`` is set (exactly one if required)."""
    def check(data):
        present = [k for k in keys if data.get(k) is not None]
        if len(present) > 1:
            raise ConfigInvalid(
                "only one of %s" % ", ".join(keys), path=[present[1]],
                found="%s all given" % ", ".join(present) if len(present) > 2
                else "both %s and %s" % tuple(present))
        if required and not present:
            raise ConfigInvalid("one of the keys %s" % ", ".join(keys),
                                found="none of them")
    return check


def at_least_one_of(*keys):
    """A check: at least one of ``keys`` is set."""
    def check(data):
        if all(data.get(k) is None for k in keys):
            raise ConfigInvalid("at least one of the keys %s" % ", ".join(keys),
                                found="none of them")
    return check


def path_name(data):
    """A name that becomes one component of a file or znode path.

    Diskimage names name files in ``images-dir`` and build logs; diskimage,
    provider, pool and label names appear in ZooKeeper paths and metric
    keys.  A name that is empty, ``.`` or ``..``, or holds ``/`` or NUL
    would leave its directory (``../../x``) or break the path, so it is
    refused here rather than failing (or writing elsewhere) at run time.
    Dots inside a name (``ubuntu-22.04``) are fine.
    """
    if not isinstance(data, str):
        raise ConfigInvalid("a string", found=describe_value(data))
    if data in ("", ".", "..") or "/" in data or "\0" in data:
        raise ConfigInvalid(
            "a name usable in a path (not empty, '.' or '..'; no '/' or NUL "
            "character)", found=describe_value(data))
    return data


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
