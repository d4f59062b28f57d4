# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Schema and config objects of the OpenStack driver."""

import logging
from dataclasses import dataclass

import voluptuous as v

from nodepool.config import schema
from nodepool.config.models import FrozenDict
from nodepool.driver import capacity, cloud
from nodepool.driver.base import (
    ImageConfig, build_labels, build_pools, image_connection)

_opt = v.Optional
_log = logging.getLogger("nodepool.driver.openstack.config")
DEFAULT_IMAGE_FORMAT = "qcow2"

# Username, python-path and shell-type come from the top-level diskimage.
PROVIDER_DISKIMAGE = cloud.PROVIDER_DISKIMAGE.extend({
    _opt("meta", default=dict): dict,
    _opt("config-drive", default=None): schema.nullable(bool),
})

CLOUD_IMAGE = cloud.CLOUD_IMAGE.extend({
    _opt("config-drive", default=None): schema.nullable(bool),
    _opt("image-id", default=None): schema.nullable(str),
    _opt("image-name", default=None): schema.nullable(str),
    _opt("username", default=None): schema.nullable(str),
}, schema.one_of("image-id", "image-name"))

LABEL = schema.Section({
    v.Required("name"): str,
    **cloud.LABEL_KEYS,
    _opt("min-ram", default=None): schema.nullable(int),
    _opt("flavor-name", default=None): schema.nullable(str),
    # Our extension: flavors (exact names) tried in order when the cloud
    # has no valid host for the label's own (capacity-fallback.rst).
    _opt("fallback-flavor-names", default=None): schema.nullable(
        schema.each(str)),
    _opt("key-name", default=None): schema.nullable(str),
    _opt("console-log", default=False): bool,
    _opt("boot-from-volume", default=False): bool,
    _opt("volume-size", default=50): int,
    _opt("instance-properties", default=dict): {str: object},
    _opt("dynamic-instance-properties", default=dict): {str: str},
    _opt("userdata", default=None): schema.nullable(str),
    _opt("networks", default=None): schema.nullable(schema.each(str)),
    _opt("host-key-checking", default=None): schema.nullable(bool),
}, schema.one_of("diskimage", "cloud-image", required=True),
    schema.at_least_one_of("min-ram", "flavor-name"))

POOL = schema.POOL.extend({
    _opt("networks", default=list): schema.each(str),
    _opt("security-groups", default=list): schema.each(str),
    _opt("availability-zones", default=None): schema.nullable(
        schema.each(str)),
    _opt("auto-floating-ip", default=True): bool,
    _opt("host-key-checking", default=True): bool,
    _opt("ignore-provider-quota", default=False): bool,
    _opt("max-cores", default=schema.UNLIMITED): schema.limit,
    _opt("max-ram", default=schema.UNLIMITED): schema.limit,
    _opt("max-volumes", default=schema.UNLIMITED): schema.limit,
    _opt("max-volume-gb", default=schema.UNLIMITED): schema.limit,
    _opt("labels", default=list): schema.each(LABEL, unique="name"),
})

PROVIDER = schema.PROVIDER.extend({
    v.Required("cloud"): str,
    _opt("region-name", default=None): schema.nullable(str),
    # rate: seconds between API calls (the SDK gets 1/rate calls per
    # second).
    **cloud.provider_keys(boot_timeout=60, rate=1.0,
                          rate_validator=schema.coerced_number,
                          cloud_image=CLOUD_IMAGE,
                          diskimage=PROVIDER_DISKIMAGE),
    _opt("image-upload-timeout", default=3600): int,
    _opt("image-name-format",
         default=cloud.DEFAULT_IMAGE_NAME_FORMAT): str,
    _opt("clean-floating-ips", default=None): schema.nullable(bool),
    _opt("port-cleanup-interval", default=600): int,
    _opt("pools", default=list): schema.each(POOL, unique="name"),
}, drop=("nodepool-id",))


@dataclass(frozen=True, kw_only=True)
class OpenStackDiskImage(cloud.CloudDiskImage):
    """A top-level diskimage as uploaded to one OpenStack provider.

    ``username``, ``python_path`` and ``shell_type`` come from the
    top-level diskimage; ``meta`` becomes glance image properties.
    """

    meta: FrozenDict
    config_drive: bool | None

    @property
    def upload_metadata(self) -> FrozenDict:
        return self.meta


@dataclass(frozen=True, kw_only=True)
class OpenStackCloudImage(ImageConfig):
    """An image that already exists in the cloud."""

    config_drive: bool | None
    image_id: str | None
    image_name: str | None

    @property
    def external_name(self) -> str:
        """What to look the image up by: id, else image name, else name."""
        return self.image_id or self.image_name or self.name


@dataclass(frozen=True, kw_only=True)
class OpenStackLabel(cloud.CloudLabelConfig):
    """A label of an OpenStack pool.

    Exactly one of ``diskimage`` / ``cloud_image`` names the provider image.
    ``networks`` and ``host_key_checking`` are already resolved against the
    pool.  With ``min_ram`` the smallest flavor with enough RAM (whose name
    contains ``flavor_name``, if given) is used, else ``flavor_name`` exactly.
    """

    min_ram: int | None
    flavor_name: str | None
    fallback_flavor_names: tuple | None
    key_name: str | None
    console_log: bool
    boot_from_volume: bool
    volume_size: int
    instance_properties: FrozenDict
    dynamic_instance_properties: FrozenDict
    userdata: str | None
    networks: tuple
    host_key_checking: bool

    @property
    def checks_host_keys(self) -> bool:
        return self.host_key_checking

    @property
    def wants_console_log(self) -> bool:
        return self.console_log

    @property
    def own_flavor(self) -> str:
        """The label's own flavor choice as a capacity type: the flavor
        name, or ``min-ram=N`` (with ``,name`` when it also filters by
        name) for the smallest flavor with that much RAM."""
        if not self.min_ram:
            return self.flavor_name
        if self.flavor_name:
            return "min-ram=%d,%s" % (self.min_ram, self.flavor_name)
        return "min-ram=%d" % self.min_ram

    @property
    def capacity_types(self) -> tuple | None:
        return capacity.type_order(self.own_flavor,
                                   self.fallback_flavor_names)

    def for_capacity_type(self, type_name: str) -> "OpenStackLabel":
        # A fallback is an exact flavor name: min-ram no longer applies.
        if type_name == self.own_flavor:
            return self
        return self.replace(flavor_name=type_name, min_ram=None)


@dataclass(frozen=True, kw_only=True)
class OpenStackPool(cloud.CloudPoolConfig):
    """A pool of an OpenStack provider."""

    networks: tuple
    security_groups: tuple
    availability_zones: tuple | None
    auto_floating_ip: bool
    ignore_provider_quota: bool
    max_cores: float
    max_ram: float
    max_volumes: float
    max_volume_gb: float

    def quota_limits(self) -> dict:
        return {**super().quota_limits(), "cores": self.max_cores,
                "ram": self.max_ram, "volumes": self.max_volumes,
                "volume-gb": self.max_volume_gb}

    @property
    def checks_provider_quota(self) -> bool:
        return not self.ignore_provider_quota

    @property
    def zone_choices(self) -> tuple:
        return tuple(z for z in self.availability_zones or () if z)


@dataclass(frozen=True, kw_only=True)
class OpenStackProviderConfig(cloud.CloudProviderConfig):
    """An OpenStack provider.  ``rate`` is seconds between API calls."""

    cloud: str
    region_name: str | None
    image_upload_timeout: int
    image_name_format: str
    clean_floating_ips: bool | None
    port_cleanup_interval: int

    @property
    def node_cloud(self) -> str:
        """The clouds.yaml cloud, recorded as the nodes' ``cloud``."""
        return self.cloud

    @property
    def node_region(self) -> str | None:
        return self.region_name

    def external_image_name(self, image: str, upload_id: str,
                            timestamp: int) -> str:
        return self.image_name_format.format(
            image_name=image, upload_id=upload_id, timestamp=timestamp)

    @property
    def image_type(self) -> str:
        """The disk image format this provider uploads: the cloud's
        ``image_format`` in clouds.yaml (openstacksdk's default qcow2).

        Read on every use (only the builder asks), so that config loading
        and validation never need openstacksdk or clouds.yaml.
        """
        return cloud_image_format(self.cloud, self.region_name)


def cloud_image_format(cloud: str, region_name) -> str:
    try:
        from openstack import config as sdk_config
        region = sdk_config.OpenStackConfig().get_one(
            cloud=cloud, region_name=region_name)
        return region.config.get("image_format") or DEFAULT_IMAGE_FORMAT
    except Exception as e:
        _log.warning("Image format of cloud %s unknown (%s); using %s",
                     cloud, e, DEFAULT_IMAGE_FORMAT)
        return DEFAULT_IMAGE_FORMAT


def build_provider(data, ctx, path):
    """Build an OpenStackProviderConfig from validated provider data."""
    diskimages = cloud.build_diskimages(
        data, ctx, path, lambda image, top: OpenStackDiskImage(**dict(
            image, username=top.username, python_path=top.python_path,
            shell_type=top.shell_type)))
    cloud_images = {image["name"]: OpenStackCloudImage(**image_connection(
        image)) for image in data["cloud_images"]}
    diskimage_names = [d["name"] for d in data["diskimages"]]

    def build_label(label, label_path):
        cloud.require_label_image(label, ctx, label_path, cloud_images,
                                  diskimage_names)
        return OpenStackLabel(**label)

    def build_pool(pool, pool_path):
        def pool_label(label, label_path):
            if label["networks"] is None:
                label = dict(label, networks=pool["networks"])
            if label["host_key_checking"] is None:
                label = dict(label,
                             host_key_checking=pool["host_key_checking"])
            return build_label(label, label_path)
        labels = build_labels(pool, ctx, pool_path, pool_label)
        return OpenStackPool(**dict(pool, labels=labels))

    return OpenStackProviderConfig(**dict(
        data, diskimages=diskimages, cloud_images=cloud_images,
        pools=build_pools(data, ctx, path, build_pool)))
