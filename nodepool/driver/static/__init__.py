# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The static driver: hands out pre-existing hosts listed in the config."""

from nodepool.driver.base import Driver
from nodepool.driver.static import config


class StaticDriver(Driver):
    """Driver for ``driver: static`` providers."""

    name = "static"

    #: Period of the providers' full reconciliation in seconds (None: the
    #: provider's default, a multiple of its interval).
    sync_interval = None

    def provider_schema(self):
        return config.PROVIDER

    def build_provider(self, data, ctx, path):
        return config.build_provider(data, ctx, path)

    def get_adapter(self, provider_config, warm=True):
        from nodepool.driver.static.adapter import StaticAdapter
        return StaticAdapter(provider_config)

    def get_provider(self, provider_config, services, interval=1.0):
        from nodepool.driver.static.provider import StaticProvider
        return StaticProvider(provider_config,
                              self.get_adapter(provider_config), services,
                              interval=interval,
                              sync_interval=self.sync_interval)
