# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The IBM Cloud VPC driver."""

from nodepool.driver.base import Driver
from nodepool.driver.ibmvpc import config


class IbmVpcDriver(Driver):
    """Driver for ``driver: ibmvpc`` providers."""

    name = "ibmvpc"

    def provider_schema(self):
        return config.PROVIDER

    def build_provider(self, data, ctx, path):
        return config.build_provider(data, ctx, path)

    def get_adapter(self, provider_config, warm: bool = True):
        # Imported here: the IBM SDKs are only needed once a provider runs.
        from nodepool.driver.ibmvpc.adapter import IbmVpcAdapter
        return IbmVpcAdapter(provider_config, warm=warm)
