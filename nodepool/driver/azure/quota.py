# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Azure quota: what a VM size uses and the subscription's limits.

Resource SKUs are cached a day, usage limits five minutes (the adapter's
``_lookups`` and ``_quota_cache``).  :class:`AzureQuotaMixin` is part of
:class:`~nodepool.driver.azure.adapter.AzureAdapter`.
"""

from nodepool import exceptions
from nodepool.driver.quota import QuotaInformation


class AzureQuotaMixin:
    """The quota part of the Adapter contract for Azure."""

    def _instance_quota(self, vm_size: str, spot: bool) -> QuotaInformation:
        """What a listed VM uses; an unknown size counts as an instance."""
        try:
            return self._vm_size_quota(vm_size, spot)
        except Exception as e:
            self.log.warning("Quota of VM size %s unknown: %s", vm_size, e)
            return QuotaInformation(instances=1)

    def _skus(self) -> dict:
        """VM resource SKUs of the location by name (cached a day)."""
        def load():
            skus = {}
            for record in self.list_all(
                    "resource SKUs", self.compute.resource_skus.list,
                    filter="location eq '%s'" % self.location):
                if record.get("resourceType") != "virtualMachines":
                    continue
                locations = [x.lower() for x in record.get("locations") or ()]
                if locations and self.location.lower() not in locations:
                    continue
                caps = {c.get("name"): c.get("value")
                        for c in record.get("capabilities") or ()}
                skus[record["name"]] = {
                    "family": record.get("family"),
                    "cores": int(float(caps.get("vCPUs") or 0)),
                    "ram": int(float(caps.get("MemoryGB") or 0) * 1024),
                }
            return skus
        return self._lookups.get(("skus",), load)

    def _vm_size_quota(self, vm_size: str,
                       spot: bool = False) -> QuotaInformation:
        sku = self._skus().get(vm_size)
        if sku is None:
            raise exceptions.RuntimeConfigurationException(
                "VM size %s is not offered in %s" % (vm_size, self.location))
        extra = {}
        if spot:
            extra["lowPriorityCores"] = sku["cores"]
        elif sku["family"]:
            extra[sku["family"]] = sku["cores"]
        return QuotaInformation(cores=sku["cores"], ram=sku["ram"],
                                instances=1, **extra)

    def get_quota_for_label(self, label) -> QuotaInformation:
        return self._vm_size_quota(label.hardware_profile["vm_size"],
                                   label.use_spot)

    def get_quota_limits(self) -> QuotaInformation:
        def load():
            limits = {}
            for usage in self.list_all("usages", self.compute.usage.list,
                                       self.location):
                name = (usage.get("name") or {}).get("value")
                limit = usage.get("limit")
                if name is None or limit is None or limit < 0:
                    continue
                if name == "cores":
                    limits["cores"] = limit
                elif name == "virtualMachines":
                    limits["instances"] = limit
                elif name.endswith("Family") or name == "lowPriorityCores":
                    limits[name] = limit
            return QuotaInformation(default=float("inf"), **limits)
        return self._quota_cache.get(("limits",), load)
