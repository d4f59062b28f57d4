# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The building blocks of the configuration schema.

* :class:`Section` -- a mapping with known keys; rejects unknown keys (and
  names the allowed ones), runs cross-key checks, renames keys on output.
* :func:`each` -- a list whose items are all validated (errors of every item
  are collected) with optional unique ``name`` enforcement.
* :func:`nullable`, :func:`number`, :func:`one_of` and friends.

:mod:`nodepool.config.schema` re-exports all of them; driver config modules
use them as ``schema.Section``, ``schema.nullable`` and so on.
"""

import math

import voluptuous as v

from nodepool.config.errors import describe_value

UNLIMITED = math.inf


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
