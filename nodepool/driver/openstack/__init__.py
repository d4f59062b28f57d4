# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The OpenStack driver (clouds from clouds.yaml, through openstacksdk)."""

from nodepool.driver.base import Driver
from nodepool.driver.openstack import config


class OpenStackDriver(Driver):
    """Driver for ``driver: openstack`` providers (the default driver)."""

    name = "openstack"

    def provider_schema(self):
        return config.PROVIDER

    def build_provider(self, data, ctx, path):
        return config.build_provider(data, ctx, path)

    def get_adapter(self, provider_config, warm=True):
        # Imported here: openstacksdk is only needed once a provider runs.
        from nodepool.driver.openstack.adapter import OpenStackAdapter
        return OpenStackAdapter(provider_config, warm=warm)

    def get_provider(self, provider_config, services, interval=1.0):
        from nodepool.driver.openstack.provider import OpenStackProvider
        return OpenStackProvider(provider_config,
                                 self.get_adapter(provider_config),
                                 services, interval=interval)
