# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Schema and config objects of the Kubernetes driver.

The OpenShift drivers build on these: :func:`label_schemas`,
:func:`pool_keys` and :func:`build_provider` take the driver's own pieces
(label ``type`` values, extra label keys, label class).

A label is either *nodepool-built* (nodepool writes the pod from ``image``,
``cpu``...) or a *user spec* (``spec`` is the pod spec, verbatim); a label
mixing ``spec`` with builder keys is refused, as in nodepool 11.  The pool's
``default-label-*`` values are resolved into each label when it is built,
so a label object says exactly what its pod asks for and what its node
counts against quota.
"""

from dataclasses import dataclass

import voluptuous as v

from nodepool.config import schema
from nodepool.config.schema import inherit
from nodepool.config.models import FrozenDict
from nodepool.driver.base import (
    LabelConfig, PoolConfig, ProviderConfig, build_labels, build_pools)

_opt = v.Optional
_str = schema.nullable(str)
_int = schema.nullable(int)
_RESOURCES = {str: int}

ENV_ITEM = schema.Section({
    v.Required("name"): str,
    v.Required("value"): str,
})

# Keys a user-spec label may have besides name, type and spec.
_SPEC_KEYS = ("labels", "dynamic-labels", "annotations")


def _float(data):
    """A float (an int is taken as a float, as voluptuous' float does not)."""
    return schema.number(data)


def builder_label_keys(type_key) -> dict:
    """Keys of a nodepool-built label; ``type_key`` is the ``type`` entry
    (``{}`` for a driver without one)."""
    return {
        v.Required("name"): str,
        **type_key,
        _opt("image", default=None): _str,
        _opt("image-pull", default="IfNotPresent"): str,
        _opt("python-path", default="auto"): str,
        _opt("shell-type", default=None): _str,
        _opt("cpu", default=None): _int,
        _opt("memory", default=None): _int,
        _opt("storage", default=None): _int,
        _opt("cpu-limit", default=None): _int,
        _opt("memory-limit", default=None): _int,
        _opt("storage-limit", default=None): _int,
        _opt("gpu", default=None): schema.nullable(_float),
        _opt("gpu-resource", default=None): _str,
        _opt("extra-resources", default=dict): _RESOURCES,
        _opt("env", default=list): schema.each(ENV_ITEM),
        _opt("node-selector", default=None): schema.nullable(dict),
        _opt("scheduler-name", default=None): _str,
        _opt("privileged", default=None): schema.nullable(bool),
        _opt("volumes", default=None): schema.nullable(list),
        _opt("volume-mounts", default=None): schema.nullable(list),
        _opt("labels", default=dict): dict,
        _opt("dynamic-labels", default=dict): {str: str},
        _opt("annotations", default=dict): dict,
    }


def label_schemas(type_key, extra_keys=None):
    """The label validator: a builder label, or a user-spec label.

    Both produce the same fields (a spec label gets the builder keys'
    defaults; ``spec`` is None for a builder label).
    """
    builder_keys = builder_label_keys(type_key)
    builder_keys.update(extra_keys or {})
    # Never in a builder label's data (those with a spec go to the other
    # schema): only its default.
    builder_keys[_opt("spec", default=None)] = schema.nullable(dict)
    builder = schema.Section(builder_keys)
    spec_keys = {v.Required("name"): str, **type_key,
                 v.Required("spec"): dict}
    for key in _SPEC_KEYS:
        spec_keys[_opt(key, default=dict)] = (
            {str: str} if key == "dynamic-labels" else dict)

    def fill_defaults(data):
        minimal = {"name": data["name"]}
        for key in type_key:
            minimal[key.schema] = data[key.schema]
        return dict(builder(minimal), **data)
    spec = schema.Section(spec_keys, fill_defaults)

    def validate(data):
        if isinstance(data, dict) and "spec" in data:
            return spec(data)
        return builder(data)
    validate.container_kind = "a mapping"
    validate.sections = (builder, spec)
    return validate


def pool_keys(label_validator) -> dict:
    """The pool keys shared by the Kubernetes-family drivers."""
    return {
        v.Required("labels"): schema.each(label_validator, unique="name"),
        # None: take the provider's value.
        _opt("max-servers", default=None): schema.nullable(schema.limit),
        _opt("max-cores", default=None): schema.nullable(schema.limit),
        _opt("max-ram", default=None): schema.nullable(schema.limit),
        _opt("max-resources", default=dict): _RESOURCES,
        _opt("default-label-cpu", default=None): _int,
        _opt("default-label-memory", default=None): _int,
        _opt("default-label-storage", default=None): _int,
        _opt("default-label-cpu-limit", default=None): _int,
        _opt("default-label-memory-limit", default=None): _int,
        _opt("default-label-storage-limit", default=None): _int,
        _opt("default-label-extra-resources", default=dict): _RESOURCES,
    }


def provider_keys() -> dict:
    """The provider keys shared by the Kubernetes-family drivers."""
    return {
        _opt("launch-retries", default=3): int,
        # Ours: seconds a create may take before the attempt fails
        # (nodepool 11 waits up to 300 polls for a pod to run).
        _opt("launch-timeout", default=300): int,
        _opt("max-cores", default=schema.UNLIMITED): schema.limit,
        _opt("max-ram", default=schema.UNLIMITED): schema.limit,
        _opt("max-resources", default=dict): _RESOURCES,
    }


LABEL = label_schemas({v.Required("type"): str})

POOL = schema.POOL.extend(pool_keys(LABEL))

PROVIDER = schema.PROVIDER.extend({
    **provider_keys(),
    _opt("context", default=None): _str,
    _opt("max-servers", default=schema.UNLIMITED): schema.limit,
    v.Required("pools"): schema.each(POOL, unique="name"),
})


@dataclass(frozen=True, kw_only=True)
class KubernetesLabel(LabelConfig):
    """A label of a Kubernetes-family pool, pool defaults resolved.

    ``kind`` is what a node of the label is: ``"namespace"`` (a
    namespace, or an OpenShift project, with a service account) or
    ``"pod"``.  ``cpu``, ``memory`` (MiB) and ``storage`` (MB) are the
    requests, the ``*_limit`` fields the limits (None: not set).
    ``extra_resources`` only counts against quota.
    """

    kind: str
    image: str | None
    image_pull: str
    python_path: str
    shell_type: str | None
    cpu: int | None
    memory: int | None
    storage: int | None
    cpu_limit: int | None
    memory_limit: int | None
    storage_limit: int | None
    gpu: float | None
    gpu_resource: str | None
    extra_resources: FrozenDict
    env: tuple
    node_selector: FrozenDict | None
    scheduler_name: str | None
    privileged: bool | None
    volumes: tuple | None
    volume_mounts: tuple | None
    labels: FrozenDict
    dynamic_labels: FrozenDict
    annotations: FrozenDict
    spec: FrozenDict | None


@dataclass(frozen=True, kw_only=True)
class KubernetesPool(PoolConfig):
    """A pool; ``name`` prefixes its namespaces (``<pool>-<node id>``).

    Limits are resolved against the provider's; ``max_resources`` is the
    provider's mapping updated by the pool's.
    """

    max_cores: float
    max_ram: float
    max_resources: FrozenDict

    def quota_limits(self) -> dict:
        return {**super().quota_limits(), "cores": self.max_cores,
                "ram": self.max_ram, **self.max_resources}

    @property
    def checks_host_keys(self) -> bool:
        """Pods and namespaces are reached through the API, never SSH."""
        return False


@dataclass(frozen=True, kw_only=True)
class KubernetesProviderConfig(ProviderConfig):
    """A Kubernetes provider.  ``context`` None: the kubeconfig's current
    context, or the in-cluster service account when there is no
    kubeconfig."""

    context: str | None
    launch_retries: int
    launch_timeout: int
    max_servers: float
    max_cores: float
    max_ram: float
    max_resources: FrozenDict


def _limit(label, pool, kind):
    return inherit(label[kind + "_limit"],
                   inherit(pool["default_label_%s_limit" % kind],
                           label[kind]))


def resolve_label(label: dict, pool: dict, kind: str) -> dict:
    """Label data with the pool's defaults filled in, ready for the label
    class; ``kind`` is ``"namespace"`` or ``"pod"``."""
    label = dict(label, kind=kind)
    label.pop("type", None)
    for resource in ("cpu", "memory", "storage"):
        label[resource] = inherit(label[resource],
                                  pool["default_label_" + resource])
    for resource in ("cpu", "memory", "storage"):
        label[resource + "_limit"] = _limit(label, pool, resource)
    label["extra_resources"] = {**pool["default_label_extra_resources"],
                                **label["extra_resources"]}
    return label


def kubernetes_kind(label: dict) -> str:
    """``namespace`` for that type, anything else is a pod (nodepool 11)."""
    return "namespace" if label["type"] == "namespace" else "pod"


def build_pool_object(provider, pool, ctx, pool_path, *, kind_of,
                      label_class, pool_class, max_servers):
    """The pool object: limits resolved, labels built with ``kind_of``."""
    pool = dict(
        pool,
        max_servers=inherit(pool["max_servers"], max_servers),
        max_cores=inherit(pool["max_cores"], provider["max_cores"]),
        max_ram=inherit(pool["max_ram"], provider["max_ram"]),
        max_resources={**provider["max_resources"], **pool["max_resources"]})

    def build_label(label, label_path):
        return label_class(**resolve_label(label, pool, kind_of(label)))
    labels = build_labels(pool, ctx, pool_path, build_label)
    for key in [k for k in pool if k.startswith("default_label_")]:
        del pool[key]
    return pool_class(**dict(pool, labels=labels))


def build_provider(data, ctx, path):
    """Build a KubernetesProviderConfig from validated provider data."""
    pools = build_pools(data, ctx, path, lambda pool, pool_path:
                        build_pool_object(
                            data, pool, ctx, pool_path,
                            kind_of=kubernetes_kind,
                            label_class=KubernetesLabel,
                            pool_class=KubernetesPool,
                            max_servers=data["max_servers"]))
    return KubernetesProviderConfig(**dict(data, pools=pools))
