# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The OpenShift driver: projects and pods as nodes."""

from nodepool.driver.kubernetes import KubernetesDriver
from nodepool.driver.openshift import config


class OpenshiftDriver(KubernetesDriver):
    """Driver for ``driver: openshift`` providers."""

    name = "openshift"

    def provider_schema(self):
        return config.PROVIDER

    def build_provider(self, data, ctx, path):
        return config.build_provider(data, ctx, path)

    def get_adapter(self, provider_config, warm: bool = True):
        from nodepool.driver.openshift.adapter import OpenshiftAdapter
        return OpenshiftAdapter(provider_config, in_cluster=self.in_cluster)
