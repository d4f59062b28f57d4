# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The GCE (Google Compute Engine) driver."""

from nodepool.driver.base import Driver
from nodepool.driver.gce import config


class GceDriver(Driver):
    """Driver for ``driver: gce`` providers.

    :meth:`make_clients` is where the adapter's API clients come from:
    Application Default Credentials and Google's endpoint.  A subclass
    may return clients with other credentials or another endpoint (the
    tests' loopback fake does), registered with
    :func:`nodepool.driver.register_driver`.
    """

    name = "gce"

    def provider_schema(self):
        return config.PROVIDER

    def build_provider(self, data, ctx, path):
        return config.build_provider(data, ctx, path)

    def make_clients(self, provider_config):
        """The :class:`~nodepool.driver.gce.client.GceClients` of a
        provider's adapter."""
        # Imported here: the SDK is only needed once a provider runs.
        from nodepool.driver.gce.client import GceClients
        return GceClients()

    def get_adapter(self, provider_config, warm=True):
        from nodepool.driver.gce.adapter import GceAdapter
        return GceAdapter(provider_config, self.make_clients(provider_config),
                          warm=warm)
