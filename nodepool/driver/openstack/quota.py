# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""OpenStack quota: the project's limits and what a label or server uses.

Compute (and, when the cloud has Cinder, volume) limits are cached in the
adapter's ``_limits`` ``TTLCache`` under ``_limits_lock``; a create refused
for quota clears it (``invalidate_limits``).  :class:`OpenStackQuotaMixin`
is part of :class:`~nodepool.driver.openstack.adapter.OpenStackAdapter`.
"""

import math

from nodepool.driver.quota import QuotaInformation


class OpenStackQuotaMixin:
    """The quota part of the Adapter contract for OpenStack."""

    def get_quota_limits(self) -> QuotaInformation:
        with self._limits_lock:
            cached = self._limits.get("limits")
        if cached is None:
            limits = self.compute("Get limits", self.conn.compute.get_limits)
            absolute = limits.absolute

            def value(number):
                return math.inf if number is None or number < 0 else number
            values = {"instances": value(absolute.instances),
                      "cores": value(absolute.total_cores),
                      "ram": value(absolute.total_ram)}
            if self.conn.has_service("block-storage"):
                volume = self._call(
                    self.volume_limiter, "Get volume limits",
                    self.conn.block_storage.get_limits).absolute
                values["volumes"] = value(volume.max_total_volumes)
                values["volume-gb"] = value(
                    volume.max_total_volume_gigabytes)
            cached = QuotaInformation(default=math.inf, **values)
            with self._limits_lock:
                self._limits["limits"] = cached
        return cached.copy()

    def get_quota_for_label(self, label) -> QuotaInformation:
        flavor = self.find_flavor(label)
        quota = QuotaInformation(instances=1, cores=flavor["vcpus"],
                                 ram=flavor["ram"])
        if label.boot_from_volume:
            quota.add(QuotaInformation(
                volumes=1, **{"volume-gb": label.volume_size}))
        return quota

    def _server_quota(self, record: dict) -> QuotaInformation:
        vcpus, ram = record.get("vcpus"), record.get("ram")
        if vcpus is None or ram is None:
            try:
                flavor = self._flavor_by_id(record.get("flavor_id"))
            except Exception:
                self.log.exception("Flavor lookup for server %s failed",
                                   record.get("id"))
                flavor = None
            if flavor is None:
                return QuotaInformation(instances=1)
            vcpus, ram = flavor["vcpus"], flavor["ram"]
        quota = QuotaInformation(instances=1, cores=vcpus, ram=ram)
        if record.get("volumes"):
            quota.add(QuotaInformation(volumes=record["volumes"]))
        return quota
