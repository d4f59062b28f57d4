# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The metastatic driver: several jobs share one large backing node.

A metastatic provider asks nodepool itself (through ZooKeeper, as a
requestor) for backing nodes of a backing label and hands out
``max-parallel-jobs`` slots on each, every slot a node of its own carrying
the backing node's connection details.
"""

from nodepool.driver.base import Driver
from nodepool.driver.metastatic import config


class MetastaticDriver(Driver):
    """Driver for ``driver: metastatic`` providers."""

    name = "metastatic"

    def provider_schema(self):
        return config.PROVIDER

    def build_provider(self, data, ctx, path):
        return config.build_provider(data, ctx, path)

    def get_adapter(self, provider_config, warm=True):
        # Without the launcher's ZooKeeper stores: enough for listings
        # (there is nothing to list), not for launching.
        from nodepool.driver.metastatic.adapter import MetastaticAdapter
        return MetastaticAdapter(provider_config)

    def get_provider(self, provider_config, services, interval=1.0):
        from nodepool.driver.metastatic.adapter import MetastaticAdapter
        from nodepool.driver.metastatic.provider import MetastaticProvider
        adapter = MetastaticAdapter(provider_config, services)
        return MetastaticProvider(provider_config, adapter, services,
                                  interval=interval)
