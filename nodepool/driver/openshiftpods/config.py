# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Schema and config objects of the OpenShift pods driver.

Like the OpenShift driver, but every label is a pod (labels have no
``type``) and each pool's ``name`` is an existing project the pods are
created in.  The provider's ``max-pods`` is the default of the pools'
``max-servers``.
"""

from dataclasses import dataclass

import voluptuous as v

from nodepool.config import schema
from nodepool.driver.base import build_pools
from nodepool.driver.kubernetes import config as k8s
from nodepool.driver.openshift import config as openshift

_opt = v.Optional

LABEL = k8s.label_schemas({}, openshift.OPENSHIFT_LABEL_KEYS)

POOL = schema.POOL.extend(k8s.pool_keys(LABEL))

PROVIDER = schema.PROVIDER.extend({
    **k8s.provider_keys(),
    v.Required("context"): str,
    # Documented by nodepool 11 as the pools' default max-servers (its
    # code ignores it).
    _opt("max-pods", default=None): schema.nullable(schema.limit),
    v.Required("pools"): schema.each(POOL, unique="name"),
})


@dataclass(frozen=True, kw_only=True)
class OpenshiftPodsProviderConfig(k8s.KubernetesProviderConfig):
    """An OpenShift pods provider; ``max_servers`` is the resolved pool
    default (``max-pods``, else unlimited)."""


def build_provider(data, ctx, path):
    """Build an OpenshiftPodsProviderConfig from validated provider data."""
    max_servers = openshift.pool_default_servers(data, "max_pods")
    data = dict(data, max_servers=max_servers)
    del data["max_pods"]
    pools = build_pools(data, ctx, path, lambda pool, pool_path:
                        k8s.build_pool_object(
                            data, pool, ctx, pool_path,
                            kind_of=lambda label: "pod",
                            label_class=openshift.OpenshiftLabel,
                            pool_class=k8s.KubernetesPool,
                            max_servers=max_servers))
    return OpenshiftPodsProviderConfig(**dict(data, pools=pools))
