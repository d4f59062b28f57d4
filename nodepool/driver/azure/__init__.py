# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The Azure driver."""

from nodepool.driver.azure import config
from nodepool.driver.base import Driver


class AzureDriver(Driver):
    """Driver for ``driver: azure`` providers."""

    name = "azure"

    def provider_schema(self):
        return config.PROVIDER

    def build_provider(self, data, ctx, path):
        return config.build_provider(data, ctx, path)

    def get_adapter(self, provider_config, warm=True):
        # Imported here: the Azure SDKs are only needed once a provider runs.
        from nodepool.driver.azure.adapter import AzureAdapter
        return AzureAdapter(provider_config, warm=warm)
