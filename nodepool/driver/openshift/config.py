# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Schema and config objects of the OpenShift driver.

The keys are the Kubernetes driver's (:mod:`nodepool.driver.kubernetes.
config`) with these differences: label ``type`` is ``project`` or
``pod``, labels take ``image-pull-secrets``, ``context`` is required, and
the provider's ``max-projects`` (else ``max-servers``) is the default of
the pools' ``max-servers``.
"""

from dataclasses import dataclass

import voluptuous as v

from nodepool.config import schema
from nodepool.driver.base import build_pools
from nodepool.driver.kubernetes import config as k8s

_opt = v.Optional

#: Label keys only the OpenShift drivers have.
OPENSHIFT_LABEL_KEYS = {
    _opt("image-pull-secrets", default=list): list,
}

LABEL = k8s.label_schemas({v.Required("type"): str}, OPENSHIFT_LABEL_KEYS)

POOL = schema.POOL.extend(k8s.pool_keys(LABEL))

PROVIDER = schema.PROVIDER.extend({
    **k8s.provider_keys(),
    v.Required("context"): str,
    # Default of the pools' max-servers; max-projects wins over
    # max-servers (nodepool 11 reads both, documents only max-projects).
    _opt("max-projects", default=None): schema.nullable(schema.limit),
    _opt("max-servers", default=None): schema.nullable(schema.limit),
    v.Required("pools"): schema.each(POOL, unique="name"),
})


@dataclass(frozen=True, kw_only=True)
class OpenshiftLabel(k8s.KubernetesLabel):
    """A label of an OpenShift pool; ``kind`` ``namespace`` is a project.
    ``image_pull_secrets`` is the pod's ``imagePullSecrets``."""

    image_pull_secrets: tuple


@dataclass(frozen=True, kw_only=True)
class OpenshiftProviderConfig(k8s.KubernetesProviderConfig):
    """An OpenShift provider (``context`` is always set).  ``max_servers``
    is the resolved pool default (``max-projects``, else ``max-servers``,
    else unlimited)."""


def openshift_kind(label: dict) -> str:
    """``pod`` for that type, anything else is a project (nodepool 11)."""
    return "pod" if label["type"] == "pod" else "namespace"


def pool_default_servers(data: dict, *keys) -> float:
    """The first of ``keys`` the provider sets, else unlimited."""
    for key in keys:
        if data[key] is not None:
            return data[key]
    return schema.UNLIMITED


def build_provider(data, ctx, path):
    """Build an OpenshiftProviderConfig from validated provider data."""
    max_servers = pool_default_servers(data, "max_projects", "max_servers")
    data = dict(data, max_servers=max_servers)
    del data["max_projects"]
    pools = build_pools(data, ctx, path, lambda pool, pool_path:
                        k8s.build_pool_object(
                            data, pool, ctx, pool_path,
                            kind_of=openshift_kind,
                            label_class=OpenshiftLabel,
                            pool_class=k8s.KubernetesPool,
                            max_servers=max_servers))
    return OpenshiftProviderConfig(**dict(data, pools=pools))
