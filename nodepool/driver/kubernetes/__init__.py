# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The Kubernetes driver: namespaces and pods as nodes."""

from nodepool.driver.base import Driver
from nodepool.driver.kubernetes import config


class KubernetesDriver(Driver):
    """Driver for ``driver: kubernetes`` providers.

    ``in_cluster`` (a :class:`nodepool.driver.kubernetes.client.
    InClusterPaths`, None for the standard mount) is where the service
    account's credentials are read when there is no kubeconfig.
    """

    name = "kubernetes"
    in_cluster = None

    def provider_schema(self):
        return config.PROVIDER

    def build_provider(self, data, ctx, path):
        return config.build_provider(data, ctx, path)

    def get_adapter(self, provider_config, warm: bool = True):
        # Imported here: the kubernetes client is only needed once a
        # provider runs.
        from nodepool.driver.kubernetes.adapter import KubernetesAdapter
        return KubernetesAdapter(provider_config, in_cluster=self.in_cluster)
