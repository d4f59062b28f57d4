# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Schema and config objects of the GCE driver.

The keys are nodepool 11's (doc/source/drivers/gce.rst), with two
differences kept on purpose (doc/source/differences.rst): pool
``host-key-checking``, which nodepool 11 documents and reads but whose
schema refuses, is accepted; and ``rate`` (calls per second, nodepool 11's
code default 2 that its schema does not name) and ``adaptive-rate`` are
accepted as on the other cloud drivers.  ``rate-limit`` is accepted and
unused, as in nodepool 11.

GCE has no diskimages here (nodepool 11 uploads none), so the provider is
a plain :class:`ProviderConfig`, not a ``CloudProviderConfig``: the
builder never looks at it.
"""

from dataclasses import dataclass

import voluptuous as v

from nodepool.config import schema
from nodepool.config.models import FrozenDict
from nodepool.driver import cloud
from nodepool.driver.base import (
    ImageConfig, LabelConfig, ProviderConfig, build_labels, build_pools,
    image_connection)

_opt = v.Optional
_str = schema.nullable(str)

CLOUD_IMAGE = cloud.CLOUD_IMAGE.extend({
    _opt("image-id", default=None): _str,
    _opt("image-project", default=None): _str,
    _opt("image-family", default=None): _str,
    _opt("username", default=None): _str,
    _opt("key", default=None): _str,
})

LABEL = schema.Section({
    v.Required("name"): str,
    v.Required("cloud-image"): str,
    v.Required("instance-type"): str,
    # A disk type name of the zone (pd-standard, pd-balanced, pd-ssd...).
    _opt("volume-type", default="pd-standard"): str,
    # GiB.
    _opt("volume-size", default=10): int,
})

POOL = schema.POOL.extend({
    v.Required("labels"): schema.each(LABEL, unique="name"),
    _opt("use-internal-ip", default=False): bool,
    _opt("host-key-checking", default=True): bool,
})

PROVIDER = schema.PROVIDER.extend({
    v.Required("project"): str,
    v.Required("region"): str,
    v.Required("zone"): str,
    v.Required("pools"): schema.each(POOL, unique="name"),
    _opt("boot-timeout", default=60): int,
    _opt("launch-timeout", default=cloud.LAUNCH_TIMEOUT): int,
    _opt("launch-retries", default=cloud.LAUNCH_RETRIES): int,
    # Parsed and unused, as in nodepool 11.
    _opt("rate-limit", default=1): int,
    # Calls per second.
    _opt("rate", default=2.0): schema.coerced_number,
    _opt("adaptive-rate", default=True): bool,
    _opt("cloud-images", default=list): schema.each(CLOUD_IMAGE,
                                                    unique="name"),
})


@dataclass(frozen=True, kw_only=True)
class GceCloudImage(ImageConfig):
    """An existing image: ``image_id`` (used verbatim as the boot disk's
    ``sourceImage``), else the newest image of ``image_family`` in
    ``image_project``.  ``key`` becomes the instance's ``ssh-keys``
    metadata for ``username``."""

    image_id: str | None
    image_project: str | None
    image_family: str | None
    key: str | None


@dataclass(frozen=True, kw_only=True)
class GceLabel(LabelConfig):
    """A label of a GCE pool: machine type, boot disk type and size."""

    cloud_image: str
    instance_type: str
    volume_type: str
    volume_size: int

    @property
    def cloud_image_name(self) -> str | None:
        return self.cloud_image


@dataclass(frozen=True, kw_only=True)
class GcePool(cloud.CloudPoolConfig):
    """A pool of a GCE provider."""

    use_internal_ip: bool

    @property
    def prefers_private_ip(self) -> bool:
        return self.use_internal_ip


@dataclass(frozen=True, kw_only=True)
class GceProviderConfig(ProviderConfig):
    """A GCE provider: one project, region and zone.  ``rate`` is calls
    per second; ``rate_limit`` is kept only for equality."""

    project: str
    region: str
    zone: str
    boot_timeout: int
    launch_timeout: int
    launch_retries: int
    rate_limit: int
    rate: float
    adaptive_rate: bool
    cloud_images: FrozenDict

    @property
    def node_cloud(self) -> str | None:
        return "Google"

    @property
    def node_region(self) -> str | None:
        return self.region

    def label_image(self, label: LabelConfig) -> ImageConfig | None:
        return self.cloud_images.get(label.cloud_image_name)


def _build_image(image, ctx, path):
    if not image["image_id"] and not (image["image_project"]
                                      and image["image_family"]):
        ctx.problem(path + ("image-id",), "image-id, or image-project "
                    "with image-family", "neither")
    return GceCloudImage(**image_connection(image))


def build_provider(data, ctx, path):
    """Build a GceProviderConfig from validated provider data."""
    images = {}
    for index, image in enumerate(data["cloud_images"]):
        images[image["name"]] = _build_image(
            image, ctx, path + ("cloud-images", index))

    def build_pool(pool, pool_path):
        def build_label(label, label_path):
            ctx.require_member(label["cloud_image"], images, "a cloud-image",
                               label_path + ("cloud-image",))
            return GceLabel(**label)
        return GcePool(**dict(pool, labels=build_labels(
            pool, ctx, pool_path, build_label)))

    pools = build_pools(data, ctx, path, build_pool)
    return GceProviderConfig(**dict(data, pools=pools,
                                    cloud_images=FrozenDict(images)))
