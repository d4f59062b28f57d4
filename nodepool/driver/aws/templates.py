# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The launch templates of an AWS provider's fleet labels.

A fleet label launches from a launch template holding what its config
says (key, network, user data, instance profile, metadata options).  The
image and its disks change with uploads and image lookups; they go into
CreateFleet's overrides instead, so a template only changes with the
config.  Its name is a hash of its data: identical labels share one, a
changed label gets a new one.  Templates are tagged ``nodepool_managed``
and ``nodepool_provider_name``; those of this provider that no label uses
any more are deleted when the adapter starts (a reconfiguration starts a
new adapter), as nodepool 11 does.
"""

import base64
import hashlib
import json

from nodepool.driver.aws import errors
from nodepool.driver.aws.statemachines import tags_to_dict
from nodepool.driver.lazycache import SingleFlightTTLCache

PREFIX = "nodepool-launch-template-"
# How long a template this adapter made or found is taken to exist.
TEMPLATE_TTL = 24 * 3600.0


def template_name(data: dict) -> str:
    """The name of the launch template with ``data``."""
    digest = hashlib.sha256(json.dumps(
        data, sort_keys=True, default=str).encode()).hexdigest()
    return PREFIX + digest


class LaunchTemplates:
    """Launch templates for one :class:`AwsAdapter`.

    ``config_args(label, pool)`` gives the label's instance arguments
    that only depend on its config (the adapter's, shared with
    RunInstances).  Thread-safe: concurrent creates of one template share
    one call.
    """

    def __init__(self, adapter, config_args):
        self.adapter = adapter
        self.log = adapter.log
        self._config_args = config_args
        self._cache = SingleFlightTTLCache(TEMPLATE_TTL)

    @property
    def provider(self):
        return self.adapter.provider

    def data(self, label, pool) -> dict:
        """The LaunchTemplateData of a fleet label."""
        data = self._config_args(label, pool)
        if label.userdata:
            # Unlike RunInstances' (which botocore encodes), the UserData
            # of a launch template is sent as given: EC2 wants it
            # base64-encoded already.
            data["UserData"] = base64.b64encode(
                label.userdata.encode("utf-8")).decode("ascii")
        return data

    def name_for(self, label, pool) -> str:
        """The name of the label's template, created if this adapter has
        not made or found it yet (a mutating call; not for a state
        machine's thread)."""
        data = self.data(label, pool)
        return self._ensure(template_name(data), data)

    def _ensure(self, name: str, data: dict) -> str:
        def load():
            try:
                self.adapter.mutate(
                    "CreateLaunchTemplate %s" % name,
                    self.adapter.ec2.create_launch_template,
                    LaunchTemplateName=name, LaunchTemplateData=data,
                    TagSpecifications=[{
                        "ResourceType": "launch-template",
                        "Tags": [{"Key": "nodepool_managed",
                                  "Value": "true"},
                                 {"Key": "nodepool_provider_name",
                                  "Value": self.provider.name}]}])
            except Exception as e:
                if errors.error_code(e) != \
                        "InvalidLaunchTemplateName.AlreadyExistsException":
                    raise
            return name
        return self._cache.get(name, load)

    def wanted(self) -> dict:
        """Name -> data of the templates the fleet labels use."""
        wanted = {}
        for pool in self.provider.pools.values():
            for label in pool.labels.values():
                if label.fleet is not None:
                    data = self.data(label, pool)
                    wanted[template_name(data)] = data
        return wanted

    def sync(self) -> None:
        """Create the templates the fleet labels use and delete the ones
        this provider made (tagged ``nodepool_managed`` and with its name
        as ``nodepool_provider_name``) that no label uses.  Templates of
        other providers or not made by nodepool stay.  A failed delete is
        logged and left for the next start."""
        wanted = self.wanted()
        for name, data in wanted.items():
            self._ensure(name, data)
        adapter = self.adapter
        existing = adapter._paginate(
            "DescribeLaunchTemplates", adapter.ec2.describe_launch_templates,
            "LaunchTemplates", Filters=[{
                "Name": "launch-template-name", "Values": [PREFIX + "*"]}])
        for template in existing:
            name = template["LaunchTemplateName"]
            tags = tags_to_dict(template.get("Tags"))
            if (name in wanted or "nodepool_managed" not in tags
                    or tags.get("nodepool_provider_name")
                    != self.provider.name):
                continue
            try:
                adapter.mutate("DeleteLaunchTemplate %s" % name,
                               adapter.ec2.delete_launch_template,
                               LaunchTemplateId=template["LaunchTemplateId"])
            except Exception as e:
                self.log.warning("Deleting unused launch template %s "
                                 "failed: %s", name, e)
                continue
            self.log.info("Deleted unused launch template %s", name)
