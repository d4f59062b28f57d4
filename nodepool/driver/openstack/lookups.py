# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Cached lookups of the OpenStack adapter: flavors, networks, images and
availability zones.

Each answer is kept in a :class:`SingleFlightTTLCache` of the adapter
(``_flavors``, ``_networks``, ``_images``, ``_azs``): concurrent misses
share one call.  :class:`OpenStackLookupsMixin` is part of
:class:`~nodepool.driver.openstack.adapter.OpenStackAdapter` and uses its
``conn``, ``provider`` and ``compute``/``network``/``image`` call helpers.
"""

import uuid
from typing import Optional

from nodepool import exceptions


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


class OpenStackLookupsMixin:
    """Finding the flavor, networks and image of a label."""

    def flavors(self) -> list:
        """All flavors as dicts, sorted by (ram, name)."""
        def load():
            found = self.compute("List flavors", lambda: list(
                self.conn.compute.flavors(details=True)))
            flavors = [{"id": f.id, "name": f.name, "ram": f.ram or 0,
                        "vcpus": f.vcpus or 0, "disk": f.disk or 0}
                       for f in found]
            return sorted(flavors, key=lambda f: (f["ram"], f["name"]))
        return self._flavors.get("flavors", load)

    def find_flavor(self, label) -> dict:
        """The flavor a label boots (see the config's flavor rules)."""
        flavors = self.flavors()
        if label.min_ram:
            for flavor in flavors:
                if flavor["ram"] < label.min_ram:
                    continue
                if label.flavor_name and \
                        label.flavor_name not in flavor["name"]:
                    continue
                return flavor
        else:
            for flavor in flavors:
                if label.flavor_name in (flavor["name"], flavor["id"]):
                    return flavor
        raise exceptions.RuntimeConfigurationException(
            "No flavor for label %s (min-ram %s, flavor-name %s) in %s" % (
                label.name, label.min_ram, label.flavor_name,
                self.provider.name))

    def _flavor_by_id(self, flavor_id) -> Optional[dict]:
        for flavor in self.flavors():
            if flavor["id"] == flavor_id or flavor["name"] == flavor_id:
                return flavor
        return None

    def networks(self) -> list:
        def load():
            return [{"id": n.id, "name": n.name,
                     "external": bool(n.is_router_external)}
                    for n in self.network("List networks", lambda: list(
                        self.conn.network.networks()))]
        return self._networks.get("networks", load)

    def external_network_names(self) -> frozenset:
        try:
            return frozenset(n["name"] for n in self.networks()
                             if n["external"])
        except Exception:
            self.log.exception("Network lookup failed")
            return frozenset()

    def find_network(self, name_or_id: str) -> dict:
        for network in self.networks():
            if name_or_id in (network["id"], network["name"]):
                return network
        raise exceptions.LaunchNodepoolException(
            "Unable to find network %s in %s" % (name_or_id,
                                                 self.provider.name))

    def find_image(self, name_or_id: str) -> dict:
        """A cloud image by id or name (see :meth:`lookup_image`)."""
        image = self.lookup_image(name_or_id)
        if image is None:
            raise exceptions.LaunchNodepoolException(
                "Unable to find image %s in %s" % (name_or_id,
                                                   self.provider.name))
        return image

    def lookup_image(self, name_or_id: str) -> Optional[dict]:
        """The active image with this id, else the newest active one with
        this name, or None.  Answers (also None) are cached for
        ``IMAGE_TTL``: a missing image is looked for again after that."""
        def load():
            images = []
            if _is_uuid(name_or_id):
                image = self.image("Get image %s" % name_or_id,
                                   self.conn.image.find_image, name_or_id,
                                   ignore_missing=True)
                images = [image] if image is not None else []
            if not images:
                images = self.image("List images named %s" % name_or_id,
                                    lambda: list(self.conn.image.images(
                                        name=name_or_id)))
            active = [i for i in images if i.status == "active"]
            if not active:
                self.log.warning("No active image %s in %s", name_or_id,
                                 self.provider.name)
                return None
            newest = max(active, key=lambda i: i.created_at or "")
            return {"id": newest.id, "name": newest.name}
        return self._images.get(name_or_id, load)

    def get_azs(self) -> list:
        def load():
            zones = self.compute("List availability zones", lambda: list(
                self.conn.compute.availability_zones()))
            return [z.name for z in zones
                    if (z.state or {}).get("available", True)]
        try:
            return self._azs.get("azs", load) or [None]
        except Exception:
            self.log.exception("Listing availability zones failed")
            return [None]

    def capacity_zones(self, pool) -> tuple:
        """The pool's ``availability-zones``, else the cloud's."""
        return tuple(pool.zone_choices) or tuple(
            z for z in self.get_azs() if z)

    def label_ready(self, label) -> bool:
        if not label.cloud_image:
            return True
        image = self.provider.cloud_images.get(label.cloud_image)
        if image is None:
            return False
        return self._cloud_image_found(label, self.lookup_image,
                                       image.external_name)
