# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""What an AWS create sends: tags, the AMI, RunInstances and CreateFleet
arguments.

:class:`AwsLaunchMixin` is part of
:class:`~nodepool.driver.aws.adapter.AwsAdapter`; it uses the adapter's
``provider`` config, ``ec2`` client, ``read``/``mutate`` call helpers,
``templates`` and ``_image_cache``.
"""

import copy
from typing import Optional

from nodepool import exceptions
from nodepool.driver.aws import errors
from nodepool.driver.statemachine.cloud import format_dynamic

# The EBS keys of a disk in a CreateFleet override (an AMI's mapping may
# carry more, like OutpostArn, that the call rejects).
FLEET_EBS_KEYS = frozenset(("DeleteOnTermination", "Iops", "SnapshotId",
                            "VolumeSize", "VolumeType", "KmsKeyId",
                            "Throughput"))


class AwsLaunchMixin:
    """Builds the arguments of the calls that create instances."""

    # Tags ---------------------------------------------------------------

    def _tags(self, sm) -> dict:
        tags = dict(sm.label.tags)
        tags.update(format_dynamic(sm.label.dynamic_tags, sm.request,
                                   sm.log, "dynamic tag", sm.node_id))
        tags.update(sm.metadata)
        # The console shows Name; it always matches the node's hostname.
        tags["Name"] = sm.hostname
        return tags

    def _tag_list(self, sm, extra: Optional[dict] = None) -> list:
        tags = self._tags(sm)
        tags.update(extra or {})
        return [{"Key": k, "Value": str(v)} for k, v in tags.items()]

    # Images and RunInstances arguments ---------------------------------

    def _image_id(self, sm) -> str:
        if sm.image_external_id:
            return sm.image_external_id
        return self.resolve_cloud_image(sm.label.cloud_image)["ImageId"]

    def resolve_cloud_image(self, name: str) -> dict:
        """The AMI record of a configured cloud image (cached 5 minutes;
        concurrent lookups share one DescribeImages).  Raises
        :class:`LaunchNodepoolException` when nothing matches."""
        image = self.provider.cloud_images[name]

        def load():
            if image.image_id:
                found = self.read("DescribeImages", self.ec2.describe_images,
                                  ImageIds=[image.image_id])["Images"]
            else:
                found = self.read("DescribeImages", self.ec2.describe_images,
                                  Filters=[dict(f) for f in
                                           image.image_filters])["Images"]
            if not found:
                raise exceptions.LaunchNodepoolException(
                    "No AMI found for cloud image %s" % name)
            # With filters the newest match wins.
            return max(found, key=lambda i: i.get("CreationDate") or "")
        return self._image_cache.get(("cloud", name), load)

    def _image_record(self, image_id: str) -> Optional[dict]:
        def load():
            found = self.read("DescribeImages", self.ec2.describe_images,
                              ImageIds=[image_id])["Images"]
            return found[0] if found else None
        return self._image_cache.get(("id", image_id), load)

    def _block_devices(self, sm, image_id: str) -> Optional[list]:
        label = sm.label
        image = self._image_record(image_id) or {}
        mappings = [m for m in image.get("BlockDeviceMappings") or ()
                    if "Ebs" in m]
        if mappings:
            mapping = copy.deepcopy(mappings[0])
        elif any(v is not None for v in (label.volume_size,
                                         label.volume_type)):
            mapping = {"DeviceName": image.get("RootDeviceName",
                                               "/dev/sda1"), "Ebs": {}}
        else:
            return None
        ebs = mapping["Ebs"]
        ebs["DeleteOnTermination"] = True
        # Encryption follows the snapshot; setting it is rejected for
        # unencrypted ones.
        ebs.pop("Encrypted", None)
        for key, value in (("VolumeSize", label.volume_size),
                           ("VolumeType", label.volume_type),
                           ("Iops", label.iops),
                           ("Throughput", label.throughput)):
            if value is not None:
                ebs[key] = value
        return [mapping]

    def _network_interface(self, pool) -> dict:
        nic = {"AssociatePublicIpAddress": bool(pool.public_ipv4),
               "DeviceIndex": 0}
        if pool.security_group_id:
            nic["Groups"] = [pool.security_group_id]
        if pool.subnet_id:
            nic["SubnetId"] = pool.subnet_id
        if pool.public_ipv6:
            nic["Ipv6AddressCount"] = 1
        return nic

    def _config_args(self, label, pool) -> dict:
        """Arguments of RunInstances and of launch templates that only
        depend on the label and pool config (not the UserData, which the
        two calls encode differently)."""
        args = dict(KeyName=label.key_name,
                    EbsOptimized=label.ebs_optimized,
                    NetworkInterfaces=[self._network_interface(pool)])
        profile = label.iam_instance_profile
        if profile is not None:
            args["IamInstanceProfile"] = (
                {"Arn": profile.arn} if profile.arn else
                {"Name": profile.name})
        if label.imdsv2:
            args["MetadataOptions"] = {"HttpTokens": label.imdsv2,
                                       "HttpEndpoint": "enabled"}
        return args

    def _run_instances_args(self, sm) -> dict:
        label = sm.label
        image_id = self._image_id(sm)
        args = self._config_args(label, sm.pool)
        args["ImageId"] = image_id
        devices = self._block_devices(sm, image_id)
        if devices:
            args["BlockDeviceMappings"] = devices
        if label.userdata:
            # botocore base64-encodes RunInstances' UserData itself.
            args["UserData"] = label.userdata
        tags = self._tag_list(sm)
        args.update(
            MinCount=1, MaxCount=1, InstanceType=label.instance_type,
            # Makes a retried call (throttled, timed out) idempotent: AWS
            # returns the instance of the first call instead of a second.
            ClientToken=sm.client_token,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags},
                               {"ResourceType": "volume", "Tags": tags}])
        if label.use_spot:
            args["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {
                    "SpotInstanceType": "one-time",
                    "InstanceInterruptionBehavior": "terminate"}}
        placement = {}
        if sm.pool.availability_zone:
            placement["AvailabilityZone"] = sm.pool.availability_zone
        elif sm.az and not sm.pool.subnet_id:
            placement["AvailabilityZone"] = sm.az
        if sm.host_id:
            placement.update(Tenancy="host", HostId=sm.host_id,
                             Affinity="host")
        if placement:
            args["Placement"] = placement
        return args

    def capacity_zones(self, pool) -> tuple:
        """Zones a launch may move to after a capacity failure: the
        pool's ``availability-zone`` when set; none when a ``subnet-id``
        fixes the zone; else the region's available zones (cached),
        passed to RunInstances as the placement."""
        if pool.availability_zone:
            return (pool.availability_zone,)
        if pool.subnet_id:
            return ()

        def load():
            found = self.read(
                "DescribeAvailabilityZones",
                self.ec2.describe_availability_zones,
                Filters=[{"Name": "state", "Values": ["available"]}])
            return tuple(sorted(
                z["ZoneName"] for z in found["AvailabilityZones"]
                if z.get("ZoneType", "availability-zone")
                == "availability-zone"))
        return self._zone_cache.get("zones", load)

    # Fleets -------------------------------------------------------------

    def _fleet_disks(self, sm, image_id: str) -> Optional[list]:
        """The block device mappings of a fleet override: those of
        RunInstances, with only the EBS keys CreateFleet accepts."""
        devices = self._block_devices(sm, image_id)
        for mapping in devices or ():
            mapping["Ebs"] = {k: v for k, v in mapping["Ebs"].items()
                              if k in FLEET_EBS_KEYS}
        return devices

    def _create_fleet_instance(self, sm, what: str) -> str:
        fleet = sm.label.fleet
        template = self.templates.name_for(sm.label, sm.pool)
        image_id = self._image_id(sm)
        disks = self._fleet_disks(sm, image_id)
        tags = self._tag_list(sm, {"nodepool_fleet": "true"})
        capacity = "spot" if sm.label.use_spot else "on-demand"
        overrides = []
        for priority, instance_type in enumerate(fleet.instance_types):
            override = {"InstanceType": instance_type, "ImageId": image_id}
            if disks:
                override["BlockDeviceMappings"] = disks
            if sm.pool.subnet_id:
                override["SubnetId"] = sm.pool.subnet_id
            if fleet.allocation_strategy == "prioritized":
                override["Priority"] = float(priority)
            overrides.append(override)
        args = dict(
            Type="instant",
            LaunchTemplateConfigs=[{
                "LaunchTemplateSpecification": {
                    "LaunchTemplateName": template, "Version": "$Latest"},
                "Overrides": overrides}],
            TargetCapacitySpecification={
                "TotalTargetCapacity": 1,
                "DefaultTargetCapacityType": capacity},
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags},
                               {"ResourceType": "volume", "Tags": tags}])
        options = {"AllocationStrategy": fleet.allocation_strategy}
        args["SpotOptions" if sm.label.use_spot else
             "OnDemandOptions"] = options
        response = self.mutate("CreateFleet: " + what, self.ec2.create_fleet,
                               log=sm.log, **args)
        for group in response.get("Instances") or ():
            for instance_id in group.get("InstanceIds") or ():
                return instance_id
        failures = response.get("Errors") or [{}]
        code = failures[0].get("ErrorCode", "")
        message = "%s: %s %s" % (what, code,
                                 failures[0].get("ErrorMessage", ""))
        fake = _CodedError(code, message)
        raise errors.translate(fake, "CreateFleet") from None


class _CodedError(Exception):
    """A fleet error shaped like a botocore ClientError for classifying."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.response = {"Error": {"Code": code, "Message": message},
                         "ResponseMetadata": {"HTTPStatusCode": 400}}
