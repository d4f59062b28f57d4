# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""AWS quota: what a label or instance uses and the account's limits.

Instance type records (DescribeInstanceTypes) and Service Quotas are
cached with single-flight loading: the first lookup of a type or service
makes the call and concurrent ones wait for it.  :class:`AwsQuotaMixin` is
part of :class:`~nodepool.driver.aws.adapter.AwsAdapter`; it uses the
adapter's ``provider`` config, ``ec2``/``clients``, ``read`` and
``retrier``, ``quota_limiter``, ``resolve_cloud_image`` and the
``_type_cache``/``_quota_cache``.
"""

from typing import Optional

from nodepool import exceptions
from nodepool.driver.aws import errors, quota_codes
from nodepool.driver.quota import QuotaInformation


class AwsQuotaMixin:
    """The quota part of the Adapter contract for AWS."""

    def instance_type_info(self, instance_type: str) -> dict:
        """``DescribeInstanceTypes`` record (cached, single flight).

        Raises :class:`RuntimeConfigurationException` for a type EC2 does
        not know: the label can never work.
        """
        def load():
            try:
                found = self.read(
                    "DescribeInstanceTypes",
                    self.ec2.describe_instance_types,
                    InstanceTypes=[instance_type])["InstanceTypes"]
            except Exception as e:
                if errors.error_code(e) in ("InvalidInstanceType",
                                            "InvalidParameterValue"):
                    raise exceptions.RuntimeConfigurationException(
                        "Unknown instance type %s: %s" % (instance_type, e))
                raise
            if not found:
                raise exceptions.RuntimeConfigurationException(
                    "Unknown instance type %s" % instance_type)
            return found[0]
        return self._type_cache.get(instance_type, load)

    def service_quotas(self, service: str) -> dict:
        """``{code: (value, name)}`` of a Service Quotas service (cached
        5 minutes, single flight)."""
        def load():
            quotas = {}
            token = None
            while True:
                args = {"ServiceCode": service, "MaxResults": 100}
                if token:
                    args["NextToken"] = token

                def once():
                    with self.quota_limiter:
                        return self.clients.quotas.list_service_quotas(
                            **args)
                response = self.retrier.call(
                    "ListServiceQuotas %s" % service, once,
                    limiter=self.quota_limiter)
                for quota in response.get("Quotas") or ():
                    quotas[quota["QuotaCode"]] = (quota["Value"],
                                                  quota.get("QuotaName", ""))
                token = response.get("NextToken")
                if not token:
                    return quotas
        return self._quota_cache.get(service, load)

    def _host_quota_code(self, instance_type: str) -> Optional[str]:
        family = quota_codes.host_family(instance_type)
        for code, (_, name) in self._quotas_or_empty("ec2").items():
            if quota_codes.host_quota_family(name) == family:
                return code
        self.log.warning("No dedicated host quota code for %s", family)
        return None

    def _quotas_or_empty(self, service: str) -> dict:
        if self.clients.quotas is None:
            return {}
        try:
            return self.service_quotas(service)
        except Exception:
            self.log.exception("Service Quotas lookup for %s failed",
                               service)
            return {}

    def get_quota_limits(self) -> QuotaInformation:
        limits = {}
        known = quota_codes.ec2_codes()
        for code, (value, name) in self._quotas_or_empty("ec2").items():
            if code in known or quota_codes.host_quota_family(name):
                limits[code] = value
        storage = {pair[0] for pair in
                   quota_codes.VOLUME_TYPE_CODES.values()}
        for code, (value, _) in self._quotas_or_empty("ebs").items():
            if code in storage:
                # Reported in TiB; volume sizes are in GB.
                limits[code] = value * 1000
            elif code in quota_codes.ebs_codes():
                limits[code] = value
        return QuotaInformation(default=float("inf"), **limits)

    def _type_quota(self, instance_type: str, spot: bool,
                    dedicated: bool) -> QuotaInformation:
        info = self.instance_type_info(instance_type)
        vcpus = info.get("VCpuInfo", {}).get("DefaultVCpus", 0)
        ram = info.get("MemoryInfo", {}).get("SizeInMiB", 0)
        extra = {}
        if dedicated:
            code = self._host_quota_code(instance_type)
            if code:
                extra[code] = 1
        else:
            code = quota_codes.instance_quota_code(instance_type, spot)
            if code:
                extra[code] = vcpus
            else:
                self.log.warning("No quota code for instance type %s",
                                 instance_type)
        return QuotaInformation(cores=vcpus, ram=ram, instances=1, **extra)

    def get_quota_for_label(self, label) -> QuotaInformation:
        if label.fleet is not None:
            # The type is only known once the fleet picked one.
            return QuotaInformation(instances=1)
        quota = self._type_quota(label.instance_type, label.use_spot,
                                 label.dedicated_host)
        quota.add(self._volume_quota(label))
        return quota

    def _volume_quota(self, label) -> QuotaInformation:
        volume_type, size = label.volume_type, label.volume_size
        iops = label.iops
        diskimage = (self.provider.diskimages.get(label.diskimage)
                     if label.diskimage else None)
        if diskimage is not None:
            volume_type = volume_type or diskimage.volume_type
            size = size or diskimage.volume_size
            iops = iops or diskimage.iops
        elif label.cloud_image and (volume_type is None or size is None):
            try:
                image = self.resolve_cloud_image(label.cloud_image)
                ebs = next((m["Ebs"] for m in
                            image.get("BlockDeviceMappings") or ()
                            if "Ebs" in m), {})
                volume_type = volume_type or ebs.get("VolumeType")
                size = size or ebs.get("VolumeSize")
            except Exception:
                self.log.exception("Image lookup for quota of %s failed",
                                   label.name)
        storage_code, iops_code = quota_codes.volume_quota_codes(
            volume_type or "")
        extra = {}
        if storage_code and size:
            extra[storage_code] = size
        if iops_code and iops:
            extra[iops_code] = iops
        return QuotaInformation(**extra)

    def _instance_quota(self, record: dict) -> QuotaInformation:
        instance_type = record.get("InstanceType")
        if not instance_type:
            return QuotaInformation(instances=1)
        try:
            return self._type_quota(
                instance_type, record.get("InstanceLifecycle") == "spot",
                (record.get("Placement") or {}).get("Tenancy") == "host")
        except Exception:
            self.log.exception("Quota of instance %s unknown",
                               record.get("InstanceId"))
            return QuotaInformation(instances=1)
