# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""What an Azure VM PUT sends: tags, the OS profile, disk and image
reference.

:class:`AzureBodyMixin` is part of
:class:`~nodepool.driver.azure.adapter.AzureAdapter`; it uses the
adapter's ``provider`` config, ``clients``, ``compute`` client,
``resource_group``, ``location``, ``list_all`` and ``_image_cache``.
"""

import base64
import fnmatch
import secrets
import string
from typing import Optional

from nodepool import exceptions
from nodepool.driver.azure.statemachines import disk_name
from nodepool.driver.statemachine.cloud import format_dynamic

PASSWORD_LENGTH = 64


def generate_password(length: int = PASSWORD_LENGTH) -> str:
    """A random password with lower and upper case letters and digits (the
    complexity Azure demands)."""
    alphabet = string.ascii_letters + string.digits
    while True:
        password = "".join(secrets.choice(alphabet) for _ in range(length))
        if (any(c.islower() for c in password)
                and any(c.isupper() for c in password)
                and any(c.isdigit() for c in password)):
            return password


def _b64(text: Optional[str]) -> Optional[str]:
    if text is None:
        return None
    return base64.b64encode(text.encode("utf8")).decode("ascii")


class AzureBodyMixin:
    """Builds the wire-format bodies of the resources of a node."""

    def _tags(self, sm) -> dict:
        if getattr(sm, "tags", None) is None:
            sm.tags = self._make_tags(sm)
        return dict(sm.tags)

    def _make_tags(self, sm) -> dict:
        tags = {}
        tags.update(self.provider.tags)
        tags.update(sm.label.tags or {})
        tags.update(format_dynamic(sm.label.dynamic_tags, sm.request,
                                   sm.log, "dynamic tag", sm.node_id))
        tags.update(sm.metadata)
        return {str(k): str(v) for k, v in tags.items()}

    def vm_body(self, sm) -> dict:
        """The wire-format body of the VM PUT for ``sm``'s node."""
        label = sm.label
        image = self._image_config(label)
        os_profile = {"computerName": sm.hostname,
                      "adminUsername": image.username or "zuul"}
        password = image.password
        if password is None and image.generate_password:
            password = generate_password()
        if password is not None:
            os_profile["adminPassword"] = password
        key = image.key or self.provider.zuul_public_key
        if key:
            os_profile["linuxConfiguration"] = {
                "disablePasswordAuthentication": password is None,
                "ssh": {"publicKeys": [{
                    "path": "/home/%s/.ssh/authorized_keys"
                    % os_profile["adminUsername"],
                    "keyData": key}]},
            }
        if label.custom_data:
            os_profile["customData"] = _b64(label.custom_data)
        os_disk = {"name": disk_name(sm.hostname), "createOption": "FromImage",
                   "deleteOption": "Delete", "caching": "ReadWrite"}
        if label.volume_size:
            os_disk["diskSizeGB"] = label.volume_size
        if label.volume_type:
            os_disk["managedDisk"] = {
                "storageAccountType": label.volume_type}
        props = {
            "hardwareProfile": {"vmSize": label.hardware_profile["vm_size"]},
            "storageProfile": {
                "imageReference": self._image_reference(sm),
                "osDisk": os_disk,
            },
            "osProfile": os_profile,
            "networkProfile": {"networkInterfaces": [{
                "id": sm.nic_id,
                "properties": {"primary": True, "deleteOption": "Delete"},
            }]},
        }
        if label.user_data:
            props["userData"] = _b64(label.user_data)
        if label.use_spot:
            props["priority"] = "Spot"
            props["evictionPolicy"] = "Delete"
            props["billingProfile"] = {"maxPrice": -1}
        if label.dedicated_host_group:
            props["hostGroup"] = {"id": label.dedicated_host_group}
        body = {"location": self.location, "tags": self._tags(sm),
                "properties": props}
        if sm.az:
            body["zones"] = [sm.az]
        return body

    def _image_config(self, label):
        if label.diskimage:
            return self.provider.diskimages[label.diskimage]
        return self.provider.cloud_images[label.cloud_image]

    def image_id(self, name: str) -> str:
        """The resource id of a managed image of the resource group."""
        if name.startswith("/"):
            return name
        return ("/subscriptions/%s/resourceGroups/%s/providers/"
                "Microsoft.Compute/images/%s" % (
                    self.clients.subscription_id, self.resource_group, name))

    def _image_reference(self, sm) -> dict:
        if sm.image_external_id:
            return {"id": self.image_id(sm.image_external_id)}
        image = self.provider.cloud_images[sm.label.cloud_image]
        if image.image_reference:
            return {k: image.image_reference[k] for k in
                    ("publisher", "offer", "sku", "version")}
        if image.image_id:
            return {"id": image.image_id}
        if image.community_gallery_image:
            return {"communityGalleryImageId": _gallery_id(
                "CommunityGalleries", image.community_gallery_image)}
        if image.shared_gallery_image:
            return {"sharedGalleryImageId": _gallery_id(
                "SharedGalleries", image.shared_gallery_image)}
        return {"id": self.resolve_image_filter(image)["id"]}

    def resolve_image_filter(self, image) -> dict:
        """The image record an ``image-filter`` selects: among Succeeded
        images of the resource group matching every given field, the
        alphabetically last name (cached 5 minutes)."""
        wanted = image.image_filter

        def load():
            found = []
            for record in self.list_all("images",
                                        self.compute.images
                                        .list_by_resource_group,
                                        self.resource_group):
                props = record.get("properties") or {}
                if props.get("provisioningState") != "Succeeded":
                    continue
                if wanted.get("location") and \
                        record.get("location") != wanted["location"]:
                    continue
                if wanted.get("name") and not fnmatch.fnmatchcase(
                        record["name"], wanted["name"]):
                    continue
                tags = record.get("tags") or {}
                if any(tags.get(k) != str(v)
                       for k, v in (wanted.get("tags") or {}).items()):
                    continue
                found.append(record)
            if not found:
                raise exceptions.LaunchNodepoolException(
                    "No image matches the filter of cloud image %s"
                    % image.name)
            return max(found, key=lambda r: r["name"])
        return self._image_cache.get(("filter", image.name), load)


def _gallery_id(kind: str, image) -> str:
    path = "/%s/%s/Images/%s" % (kind, image.gallery_name, image.name)
    if image.version:
        path += "/Versions/%s" % image.version
    return path
