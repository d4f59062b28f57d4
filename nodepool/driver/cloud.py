# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The config layer shared by the cloud drivers (openstack, aws, azure).

A cloud driver launches nodes from images: *cloud images* that exist in
the cloud already and *diskimages* that the builder uploads.  Its provider
paces API calls (``rate``), bounds launches (``boot-timeout``,
``launch-timeout``, ``launch-retries``) and may run a ``post-upload-hook``.
Those keys are declared once here, by :func:`provider_keys`; what
legitimately differs between drivers (the boot timeout, the meaning and
default of ``rate``, the image entries) is a parameter.

The config classes (:class:`CloudProviderConfig`, :class:`CloudPoolConfig`,
:class:`CloudLabelConfig`, :class:`CloudDiskImage`) carry the shared
fields, so the launcher and the builder read them as plain attributes.
"""

from dataclasses import dataclass

import voluptuous as v

from nodepool.config import schema
from nodepool.config.models import FrozenDict
from nodepool.driver import capacity
from nodepool.driver.base import (
    ImageConfig, LabelConfig, PoolConfig, ProviderConfig, image_connection)

#: How an uploaded image is named when the driver has no
#: ``image-name-format`` (AWS, Azure), and that key's default.
DEFAULT_IMAGE_NAME_FORMAT = "{image_name}-{timestamp}"

LAUNCH_TIMEOUT = 3600
LAUNCH_RETRIES = 3
# Our extension: the seconds a post-upload-hook may run before its process
# group is killed and the upload fails (nodepool 11 waits forever).
POST_UPLOAD_HOOK_TIMEOUT = 3600


def provider_keys(*, boot_timeout: int, rate: float, rate_validator,
                  cloud_image: schema.Section, diskimage: schema.Section,
                  launch_timeout: int = LAUNCH_TIMEOUT) -> dict:
    """The provider keys every cloud driver has, for ``PROVIDER.extend``.

    ``boot_timeout`` and ``rate`` are the driver's defaults (``rate`` is
    seconds between calls for OpenStack, calls per second elsewhere);
    ``cloud_image`` and ``diskimage`` validate one entry of
    ``cloud-images`` and ``diskimages``.
    """
    return {
        v.Optional("rate", default=rate): rate_validator,
        # Our extension: throttling answers lower the rate (see
        # doc/source/adaptive-rate.rst); false keeps it fixed.
        v.Optional("adaptive-rate", default=True): bool,
        v.Optional("boot-timeout", default=boot_timeout): int,
        v.Optional("launch-timeout", default=launch_timeout): int,
        v.Optional("launch-retries", default=LAUNCH_RETRIES): int,
        # Our extension: seconds a machine type that ran out of capacity
        # in a zone is skipped (labels with a fallback key only; see
        # doc/source/capacity-fallback.rst).
        v.Optional("capacity-cooldown", default=capacity.DEFAULT_COOLDOWN):
            v.All(int, v.Range(min=0)),
        v.Optional("post-upload-hook", default=None): schema.nullable(str),
        v.Optional("post-upload-hook-timeout",
                   default=POST_UPLOAD_HOOK_TIMEOUT): v.All(
                       int, v.Range(min=1)),
        v.Optional("cloud-images", default=list): schema.each(
            cloud_image, unique="name"),
        v.Optional("diskimages", default=list): schema.each(
            diskimage, unique="name"),
    }


#: The label keys naming the image a label boots; each driver adds the
#: rule on how many of them must be set.
LABEL_KEYS = {
    v.Optional("cloud-image", default=None): schema.nullable(str),
    v.Optional("diskimage", default=None): schema.nullable(str),
}

#: How nodes booted from an image are reached; drivers extend it.
_CONNECTION_KEYS = {
    v.Required("name"): str,
    v.Optional("connection-type", default="ssh"): str,
    v.Optional("connection-port", default=None): schema.nullable(int),
}

#: The keys of a ``cloud-images`` entry common to all cloud drivers.
CLOUD_IMAGE = schema.Section({
    **_CONNECTION_KEYS,
    v.Optional("python-path", default="auto"): str,
    v.Optional("shell-type", default=None): schema.nullable(str),
})

#: The keys of a provider ``diskimages`` entry common to all cloud
#: drivers (username, python-path and shell-type may come from the
#: top-level diskimage; drivers decide).
PROVIDER_DISKIMAGE = schema.Section({
    **_CONNECTION_KEYS,
    v.Optional("pause", default=False): bool,
})


@dataclass(frozen=True, kw_only=True)
class CloudDiskImage(ImageConfig):
    """A top-level diskimage as uploaded to one cloud provider.

    ``pause`` stops its uploads.
    """

    pause: bool

    @property
    def upload_metadata(self) -> FrozenDict:
        """Properties or tags the uploaded image gets from this entry
        (``meta`` for OpenStack, ``tags`` for AWS and Azure)."""
        return FrozenDict()


@dataclass(frozen=True, kw_only=True)
class CloudLabelConfig(LabelConfig):
    """A label booting a cloud image or a diskimage (exactly one is set
    once the driver's schema has run)."""

    cloud_image: str | None
    diskimage: str | None

    @property
    def diskimage_name(self) -> str | None:
        return self.diskimage

    @property
    def cloud_image_name(self) -> str | None:
        return self.cloud_image


@dataclass(frozen=True, kw_only=True)
class CloudPoolConfig(PoolConfig):
    """A pool of a cloud provider; ``host_key_checking`` is resolved
    (provider, then pool) and applies to labels that do not set it."""

    host_key_checking: bool

    @property
    def checks_host_keys(self) -> bool:
        return self.host_key_checking


@dataclass(frozen=True, kw_only=True)
class CloudProviderConfig(ProviderConfig):
    """A provider of a cloud driver.

    ``cloud_images`` and ``diskimages`` map names to
    :class:`~nodepool.driver.base.ImageConfig` and :class:`CloudDiskImage`
    objects; an empty ``diskimages`` still makes the builder look at the
    provider (to remove its uploads).
    """

    rate: float
    adaptive_rate: bool
    boot_timeout: int
    launch_timeout: int
    launch_retries: int
    capacity_cooldown: int
    post_upload_hook: str | None
    post_upload_hook_timeout: int
    cloud_images: FrozenDict
    diskimages: FrozenDict

    @property
    def manage_images(self) -> bool:
        return bool(self.diskimages)

    @property
    def image_type(self) -> str:
        """The disk image format (file extension) this provider uploads."""
        raise NotImplementedError

    def external_image_name(self, image: str, upload_id: str,
                            timestamp: int) -> str:
        """The name an upload of ``image`` gets in the cloud."""
        return DEFAULT_IMAGE_NAME_FORMAT.format(
            image_name=image, upload_id=upload_id, timestamp=timestamp)

    def label_image(self, label: LabelConfig) -> ImageConfig | None:
        """The image entry a label of this provider boots, if any."""
        if label.diskimage_name:
            return self.diskimages.get(label.diskimage_name)
        if label.cloud_image_name:
            return self.cloud_images.get(label.cloud_image_name)
        return None


def build_diskimages(data: dict, ctx, path: tuple, make) -> dict:
    """Map provider diskimage names to ``make(entry, top_level_image)``.

    Entries naming no top-level diskimage are reported through ``ctx`` and
    left out.  ``connection_port`` is filled in before ``make`` sees it.
    """
    images = {}
    for index, image in enumerate(data["diskimages"]):
        top = ctx.require_diskimage(
            image["name"], path + ("diskimages", index, "name"))
        if top is not None:
            images[image["name"]] = make(image_connection(image), top)
    return images


def require_label_image(label: dict, ctx, label_path: tuple,
                        cloud_images, diskimage_names) -> None:
    """Report a label naming an unknown cloud image or diskimage."""
    if label["cloud_image"] is not None:
        ctx.require_member(label["cloud_image"], cloud_images,
                           "a cloud-image", label_path + ("cloud-image",))
    if label["diskimage"] is not None:
        ctx.require_member(label["diskimage"], diskimage_names,
                           "a diskimage", label_path + ("diskimage",))
