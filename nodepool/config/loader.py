# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Read, substitute, validate, merge and build configuration files.

The same code path serves the daemons and ``nodepool config-validate``:
there is no load without validation.  Pipeline:

1. read the file (retrying briefly if it is momentarily missing, as it is
   while an editor or config-management tool replaces it);
2. replace ``%(NODEPOOL_NAME)s`` / ``%(NODEPOOL_NAME)`` by the value of the
   environment variable ``NODEPOOL_NAME`` (other names are left alone);
3. parse YAML and validate with :mod:`nodepool.config.schema`;
4. likewise for the secure file, then merge it over the main file
   (``zookeeper-servers`` and ``zookeeper-tls`` replace the main file's;
   ``diskimages[].env-vars`` are added to the named, resolved diskimage);
5. resolve diskimage inheritance, build providers through their drivers,
   check cross references; raise one error listing every problem.
"""

import logging
import os
import re
import time

import voluptuous as v
import yaml

from nodepool import driver as registry
from nodepool.config import schema
from nodepool.config.context import BuildContext
from nodepool.config.errors import (
    ConfigValidationError, Problem, describe_value)
from nodepool.config.models import (
    Config, DiskImage, FrozenDict, Label, TenantResourceLimit, WebApp,
    ZooKeeperServer, ZooKeeperTLS)
from nodepool.exceptions import ConfigError

DEFAULT_CONFIG_PATH = "/etc/nodepool/nodepool.yaml"
DEFAULT_SECURE_PATH = "/etc/nodepool/secure.conf"

_READ_ATTEMPTS = 3
_READ_RETRY_DELAY = 0.5
_ENV_REFERENCE = re.compile(r"%\((NODEPOOL_\w+)\)s?")

log = logging.getLogger("nodepool.config")


def default_secure_path():
    """The default secure file if it exists, else None."""
    if os.path.exists(DEFAULT_SECURE_PATH):
        return DEFAULT_SECURE_PATH
    return None


def substitute_env(text: str, env) -> str:
    """Replace ``%(NODEPOOL_X)s`` (or ``%(NODEPOOL_X)``) by ``env`` values.

    Only names starting with ``NODEPOOL_`` that are set in ``env`` are
    replaced; anything else is left as written.
    """
    def replace(match):
        value = env.get(match.group(1))
        return match.group(0) if value is None else value
    return _ENV_REFERENCE.sub(replace, text)


def read_config_file(path: str, env, secret: bool = False) -> object:
    """Read, substitute and YAML-parse ``path``; ConfigError on failure.

    With ``secret`` (the secure file) a YAML error names only the line and
    column: PyYAML's own message quotes the offending line, which may hold
    a password, and the message reaches the console and the daemon's log.
    """
    for attempt in range(_READ_ATTEMPTS):
        try:
            with open(path) as f:
                text = f.read()
            break
        except FileNotFoundError:
            if attempt == _READ_ATTEMPTS - 1:
                raise ConfigError("%s: config file not found" % path)
            time.sleep(_READ_RETRY_DELAY)
        except OSError as exc:
            raise ConfigError("%s: cannot read config file: %s" % (
                path, exc.strerror or exc))
    try:
        return yaml.safe_load(substitute_env(text, env))
    except yaml.YAMLError as exc:
        if secret:
            raise ConfigError("%s: invalid YAML%s (the secure file's "
                              "contents are not shown)" % (
                                  path, _yaml_position(exc))) from None
        raise ConfigError("%s: invalid YAML: %s" % (
            path, " ".join(str(exc).split())))


def _yaml_position(exc) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(
        exc, "context_mark", None)
    if mark is None:
        return ""
    return " at line %d, column %d" % (mark.line + 1, mark.column + 1)


def _validate(path, raw, section, redact=False):
    try:
        return schema.validate(raw, section)
    except v.Invalid as exc:
        raise ConfigValidationError(
            path, schema.problems_from(exc, raw, redact=redact)) from None


def load_config(path: str, secure_path: str | None = None,
                env=None) -> Config:
    """Load, validate and build the config in ``path``.

    ``secure_path``: optional secure file merged over it (no default is
    applied here; see :func:`default_secure_path`).  ``env``: mapping used
    for ``%(NODEPOOL_...)s`` substitution (default ``os.environ``).

    Raises :class:`nodepool.exceptions.ConfigError`; for validation failures
    a :class:`ConfigValidationError` naming each key path, what was expected
    and what was found (secure-file values are never shown).
    """
    if env is None:
        env = os.environ
    raw = read_config_file(path, env)
    if raw is None:
        # As nodepool 11: an empty (or all-comment) file is no config.  A
        # file replaced while being written must not look like one either.
        raise ConfigValidationError(path, [Problem(
            (), "a mapping of configuration keys", "an empty file")])
    data = _validate(path, raw, schema.TOP_LEVEL)
    secure = None
    if secure_path:
        raw_secure = read_config_file(secure_path, env, secret=True)
        # An empty secure file overrides nothing (nodepool 11 alike).
        secure = _validate(secure_path,
                           {} if raw_secure is None else raw_secure,
                           schema.SECURE, redact=True)
        for key in ("zookeeper_servers", "zookeeper_tls"):
            if key in secure:
                data[key] = secure[key]
    return build_config(path, data, secure, secure_path, env)


def build_config(path, data, secure=None, secure_path=None, env=None):
    """Build a :class:`Config` from validated (and merged) data."""
    problems = []
    diskimages = FrozenDict(
        (image["name"], DiskImage(**image))
        for image in schema.resolve_diskimages(data["diskimages"], problems))
    labels = FrozenDict((label["name"], Label(**label))
                        for label in data["labels"])
    ctx = BuildContext(labels, diskimages, env or {})
    providers = {}
    if not problems:
        for index, provider in enumerate(data["providers"]):
            driver = registry.get_driver(provider["driver"])
            providers[provider["name"]] = driver.build_provider(
                provider, ctx, ("providers", index))
    problems.extend(ctx.problems)
    if problems:
        raise ConfigValidationError(path, problems)
    if secure:
        diskimages = _merge_secure_env(diskimages, secure, secure_path)
    return Config(
        webapp=WebApp(**data["webapp"]),
        elements_dir=data["elements_dir"],
        images_dir=data["images_dir"],
        images_dir_required_free=data["images_dir_required_free"],
        build_log_dir=data["build_log_dir"],
        build_log_retention=data["build_log_retention"],
        zookeeper_servers=tuple(ZooKeeperServer(**s)
                                for s in data["zookeeper_servers"]),
        zookeeper_tls=(ZooKeeperTLS(**data["zookeeper_tls"])
                       if data["zookeeper_tls"] else None),
        zookeeper_timeout=data["zookeeper_timeout"],
        labels=labels,
        diskimages=diskimages,
        providers=FrozenDict(providers),
        max_hold_age=data["max_hold_age"],
        tenant_resource_limits=FrozenDict(
            (limit["tenant_name"], TenantResourceLimit(**limit))
            for limit in data["tenant_resource_limits"]),
    )


def _merge_secure_env(diskimages, secure, secure_path):
    merged = dict(diskimages)
    problems = []
    for index, entry in enumerate(secure["diskimages"]):
        image = merged.get(entry["name"])
        if image is None:
            problems.append(Problem(
                ("diskimages", index, "name"),
                "a diskimage defined in the main config file",
                describe_value(entry["name"])))
            continue
        merged[image.name] = image.replace(
            env_vars={**image.env_vars, **entry["env_vars"]})
    if problems:
        raise ConfigValidationError(secure_path, problems)
    return FrozenDict(merged)


def changed_providers(old: Config | None, new: Config) -> set:
    """Names of providers added, removed or changed between two configs."""
    old_providers = old.providers if old is not None else {}
    names = set(old_providers) | set(new.providers)
    return {name for name in names
            if old_providers.get(name) != new.providers.get(name)}


class ConfigWatcher:
    """Reload a config (and its secure file) when either file changes.

    Daemons call :meth:`reload` from their main loop.  A file that fails to
    load on reload leaves the running config in place; the error is logged
    once per change of the files.  Not thread-safe: one owner calls it.
    """

    def __init__(self, path, secure_path=None, env=None, logger=None):
        self.path = path
        self.secure_path = secure_path
        self.env = env
        self.log = logger or log
        self.config = None
        self._stamp = None

    def _current_stamp(self):
        stamp = []
        for path in (self.path, self.secure_path):
            try:
                stamp.append(os.stat(path).st_mtime_ns if path else None)
            except OSError:
                stamp.append(-1)
        return tuple(stamp)

    def load(self) -> Config:
        """Load unconditionally; raises ConfigError (startup)."""
        stamp = self._current_stamp()
        self.config = load_config(self.path, self.secure_path, self.env)
        self._stamp = stamp
        return self.config

    def reload(self):
        """Reload if a file changed; return ``(config, changed)``.

        ``changed`` is true only when a new config was loaded and differs
        from the running one.
        """
        stamp = self._current_stamp()
        if stamp == self._stamp and self.config is not None:
            return self.config, False
        self._stamp = stamp
        try:
            new = load_config(self.path, self.secure_path, self.env)
        except ConfigError as exc:
            self.log.error("Keeping the running configuration; the changed "
                           "file is invalid:\n%s", exc)
            return self.config, False
        changed = new != self.config
        self.config = new
        return new, changed
