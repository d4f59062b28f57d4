# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""OpenStack leak cleanup: leaked servers and images, DOWN ports and
unattached floating IPs.

:class:`OpenStackCleanupMixin` is part of
:class:`~nodepool.driver.openstack.adapter.OpenStackAdapter`; the launcher's
leak sweeper calls ``list_resources``/``delete_resource``, and the
provider's cleanup pass the two ``cleanup_*`` methods.
"""

from nodepool import exceptions
from nodepool.driver.statemachine.adapter import Resource


class OpenStackCleanupMixin:
    """Finding and deleting what nodepool left behind."""

    def list_resources(self):
        resources = []
        for record in self._fetch_servers().values():
            if record.get("status") in ("DELETED", "SOFT_DELETED"):
                continue
            resources.append(Resource(record["metadata"], "instance",
                                      record["id"]))
        for image in self.list_images():
            resources.append(Resource(image.metadata, "image", image.id))
        return resources

    def delete_resource(self, resource):
        if resource.type == "instance":
            try:
                self.delete_server_floating_ips(resource.id)
                self.delete_server(resource.id)
            except exceptions.NotFound:
                pass
        elif resource.type == "image":
            self.delete_image(resource.id)
        else:
            raise exceptions.NodepoolError(
                "Unknown resource type %s" % resource.type)

    def cleanup_down_ports(self) -> int:
        """Delete compute ports that stayed DOWN between two passes at
        least ``port-cleanup-interval`` apart; returns how many."""
        interval = self.provider.port_cleanup_interval
        if not interval or interval <= 0:
            return 0
        with self._cleanup_lock:
            now = self._clock()
            if self._ports_checked is not None and \
                    now - self._ports_checked < interval:
                return 0
            ports = self.network("List DOWN ports", lambda: list(
                self.conn.network.ports(status="DOWN")))
            down = {p.id for p in ports if p.status == "DOWN" and (
                not p.device_owner or p.device_owner.startswith("compute:"))}
            deleted = set()
            for port_id in down & (self._down_ports or set()):
                try:
                    self.network("Delete DOWN port %s" % port_id,
                                 self.conn.network.delete_port, port_id)
                    deleted.add(port_id)
                    self.log.info("Deleted DOWN port %s", port_id)
                except Exception:
                    self.log.exception("Deleting port %s failed", port_id)
            self._down_ports = down - deleted
            self._ports_checked = now
            return len(deleted)

    def cleanup_floating_ips(self) -> int:
        """Delete floating IPs attached to nothing; returns how many."""
        if not self.provider.clean_floating_ips:
            return 0
        fips = self.network("List floating IPs", lambda: list(
            self.conn.network.ips()))
        deleted = 0
        for fip in fips:
            if fip.port_id:
                continue
            try:
                self.network("Delete floating IP %s" % fip.id,
                             self.conn.network.delete_ip, fip.id)
                deleted += 1
                self.log.info("Deleted unattached floating IP %s",
                              fip.floating_ip_address)
            except Exception:
                self.log.exception("Deleting floating IP %s failed", fip.id)
        return deleted
