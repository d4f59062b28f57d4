# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The AWS (EC2) driver."""

from nodepool.driver.base import Driver
from nodepool.driver.aws import config


class AwsDriver(Driver):
    """Driver for ``driver: aws`` providers."""

    name = "aws"

    def provider_schema(self):
        return config.PROVIDER

    def build_provider(self, data, ctx, path):
        return config.build_provider(data, ctx, path)

    def get_adapter(self, provider_config, warm: bool = True):
        """The provider's :class:`AwsAdapter`.

        ``warm`` (the launcher's default) fetches the service quotas and
        every label's instance type and image in the background at once,
        and makes the fleet labels' launch templates (deleting those of
        this provider that no label uses); a one-off caller (a CLI
        listing) can do without.
        """
        # Imported here: boto3 is only needed once a provider runs.
        from nodepool.driver.aws.adapter import AwsAdapter
        return AwsAdapter(provider_config, warm=warm)
