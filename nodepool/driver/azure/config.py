# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Schema and config objects of the Azure driver."""

from dataclasses import dataclass

import voluptuous as v

from nodepool.config import schema
from nodepool.config.schema import inherit
from nodepool.config.models import ConfigObject, FrozenDict
from nodepool.driver import capacity, cloud
from nodepool.driver.base import (
    ImageConfig, build_labels, build_pools, image_connection, secret_field)

_opt = v.Optional
_str = schema.nullable(str)
_int = schema.nullable(int)
_bool = schema.nullable(bool)

# Environment variable naming the auth file when auth-path is not given.
AUTH_PATH_VARIABLE = "AZURE_AUTH_LOCATION"
IMAGE_TYPE = "vhd"

IMAGE_REFERENCE = schema.Section({
    v.Required("sku"): str,
    v.Required("publisher"): str,
    v.Required("version"): str,
    v.Required("offer"): str,
})

IMAGE_FILTER = schema.Section({
    _opt("location", default=None): _str,
    _opt("name", default=None): _str,
    _opt("tags", default=dict): {str: schema.scalar_string},
})

GALLERY_IMAGE = schema.Section({
    v.Required("gallery-name"): str,
    v.Required("name"): str,
    _opt("version", default=None): _str,
})

_IMAGE_SOURCES = ("image-reference", "image-filter", "image-id",
                  "community-gallery-image", "shared-gallery-image")

CLOUD_IMAGE = cloud.CLOUD_IMAGE.extend({
    v.Required("username"): str,
    _opt("password", default=None): _str,
    _opt("generate-password", default=False): bool,
    _opt("key", default=None): _str,
    _opt("image-reference", default=None): schema.nullable(IMAGE_REFERENCE),
    _opt("image-filter", default=None): schema.nullable(IMAGE_FILTER),
    _opt("image-id", default=None): _str,
    _opt("community-gallery-image", default=None): schema.nullable(
        GALLERY_IMAGE),
    _opt("shared-gallery-image", default=None): schema.nullable(
        GALLERY_IMAGE),
}, schema.one_of(*_IMAGE_SOURCES, required=True))

PROVIDER_DISKIMAGE = cloud.PROVIDER_DISKIMAGE.extend({
    _opt("username", default=None): _str,
    _opt("password", default=None): _str,
    _opt("generate-password", default=False): bool,
    _opt("key", default=None): _str,
    _opt("python-path", default="auto"): str,
    _opt("shell-type", default=None): _str,
    _opt("tags", default=dict): {str: schema.scalar_string},
})

HARDWARE_PROFILE = schema.Section({v.Required("vm-size"): str})

LABEL = schema.Section({
    v.Required("name"): str,
    **cloud.LABEL_KEYS,
    v.Required("hardware-profile"): HARDWARE_PROFILE,
    # Our extension: VM sizes tried in order when Azure has none of the
    # hardware-profile's (doc/source/capacity-fallback.rst).
    _opt("fallback-hardware-profiles", default=None): schema.nullable(
        schema.each(HARDWARE_PROFILE)),
    _opt("tags", default=dict): {str: schema.scalar_string},
    _opt("dynamic-tags", default=dict): {str: str},
    _opt("user-data", default=None): _str,
    _opt("custom-data", default=None): _str,
    _opt("volume-size", default=None): _int,
    # Extensions: OS disk storage account type (Premium_LRS...), spot
    # priority, a dedicated host group's resource id.
    _opt("volume-type", default=None): _str,
    _opt("use-spot", default=False): bool,
    _opt("dedicated-host-group", default=None): _str,
}, schema.at_least_one_of("cloud-image", "diskimage"))

POOL = schema.POOL.extend({
    v.Required("labels"): schema.each(LABEL, unique="name"),
    # None: take the provider's value.
    _opt("ipv4", default=None): _bool,
    _opt("ipv6", default=None): _bool,
    _opt("public-ipv4", default=None): _bool,
    _opt("public-ipv6", default=None): _bool,
    _opt("use-internal-ip", default=None): _bool,
    _opt("host-key-checking", default=None): _bool,
})

NETWORK = schema.Section({
    _opt("resource-group", default=None): _str,
    v.Required("network"): str,
    _opt("subnet", default="default"): str,
})

PROVIDER = schema.PROVIDER.extend({
    v.Required("location"): str,
    v.Required("resource-group"): str,
    v.Required("resource-group-location"): str,
    # Required unless AZURE_AUTH_LOCATION is set (checked when building).
    _opt("auth-path", default=None): _str,
    v.Required("pools"): schema.each(POOL, unique="name"),
    _opt("subnet-id", default=None): _str,
    _opt("network", default=None): schema.nullable(v.Any(str, NETWORK)),
    _opt("ipv4", default=None): _bool,
    _opt("ipv6", default=None): _bool,
    _opt("public-ipv4", default=True): bool,
    _opt("public-ipv6", default=False): bool,
    _opt("use-internal-ip", default=False): bool,
    _opt("host-key-checking", default=True): bool,
    # rate: operations per second.
    **cloud.provider_keys(boot_timeout=120, rate=1.0,
                          rate_validator=schema.coerced_number,
                          cloud_image=CLOUD_IMAGE,
                          diskimage=PROVIDER_DISKIMAGE),
    _opt("zuul-public-key", default=None): _str,
    # Extension: tags on every resource (under label tags).
    _opt("tags", default=dict): {str: schema.scalar_string},
})


@dataclass(frozen=True, kw_only=True)
class AzureNetwork(ConfigObject):
    """A virtual network and subnet (resource group resolved)."""

    resource_group: str
    network: str
    subnet: str


@dataclass(frozen=True, kw_only=True)
class GalleryImage(ConfigObject):
    """An image of a community or shared gallery."""

    gallery_name: str
    name: str
    version: str | None


@dataclass(frozen=True, kw_only=True)
class AzureCloudImage(ImageConfig):
    """An existing Azure image; exactly one source key is set.

    ``password`` is a secret and kept out of repr.  ``key`` defaults to
    the provider's ``zuul-public-key``.
    """

    password: str | None = secret_field()
    generate_password: bool
    key: str | None
    image_reference: FrozenDict | None
    image_filter: FrozenDict | None
    image_id: str | None
    community_gallery_image: GalleryImage | None
    shared_gallery_image: GalleryImage | None


@dataclass(frozen=True, kw_only=True)
class AzureDiskImage(cloud.CloudDiskImage):
    """A top-level diskimage as uploaded to one Azure provider."""

    password: str | None = secret_field()
    generate_password: bool
    key: str | None
    tags: FrozenDict

    @property
    def upload_metadata(self) -> FrozenDict:
        return self.tags


@dataclass(frozen=True, kw_only=True)
class AzureLabel(cloud.CloudLabelConfig):
    """A label of an Azure pool (host-key checking is the pool's)."""

    hardware_profile: FrozenDict
    tags: FrozenDict
    dynamic_tags: FrozenDict
    user_data: str | None
    custom_data: str | None
    volume_size: int | None
    volume_type: str | None
    use_spot: bool
    dedicated_host_group: str | None
    fallback_hardware_profiles: tuple | None

    @property
    def capacity_types(self) -> tuple | None:
        fallbacks = self.fallback_hardware_profiles
        return capacity.type_order(
            self.hardware_profile["vm_size"],
            None if fallbacks is None else [p["vm_size"] for p in fallbacks])

    def for_capacity_type(self, type_name: str) -> "AzureLabel":
        return self.replace(hardware_profile={"vm_size": type_name})


@dataclass(frozen=True, kw_only=True)
class AzurePool(cloud.CloudPoolConfig):
    """A pool of an Azure provider, addressing resolved.

    ``ipv4``/``ipv6``: whether nodes get such addresses (pool, else
    provider, or implied by the public flag; IPv4 when neither is on).
    """

    ipv4: bool
    ipv6: bool
    public_ipv4: bool
    public_ipv6: bool
    use_internal_ip: bool

    @property
    def prefers_private_ip(self) -> bool:
        return self.use_internal_ip


@dataclass(frozen=True, kw_only=True)
class AzureProviderConfig(cloud.CloudProviderConfig):
    """An Azure provider.  ``rate`` is operations per second."""

    location: str
    resource_group: str
    resource_group_location: str
    auth_path: str
    subnet_id: str | None
    network: AzureNetwork | None
    ipv4: bool | None
    ipv6: bool | None
    public_ipv4: bool
    public_ipv6: bool
    use_internal_ip: bool
    host_key_checking: bool
    zuul_public_key: str | None
    tags: FrozenDict

    @property
    def image_type(self) -> str:
        return IMAGE_TYPE


def _build_pool(provider, pool, ctx, pool_path, images):
    public_ipv4 = inherit(pool["public_ipv4"], provider["public_ipv4"])
    public_ipv6 = inherit(pool["public_ipv6"], provider["public_ipv6"])
    ipv4 = bool(inherit(pool["ipv4"], provider["ipv4"]) or public_ipv4)
    ipv6 = bool(inherit(pool["ipv6"], provider["ipv6"]) or public_ipv6)
    pool = dict(
        pool, ipv4=ipv4 or not ipv6, ipv6=ipv6,
        public_ipv4=public_ipv4, public_ipv6=public_ipv6,
        use_internal_ip=inherit(pool["use_internal_ip"],
                                provider["use_internal_ip"]),
        host_key_checking=inherit(pool["host_key_checking"],
                                  provider["host_key_checking"]))

    def build_label(label, label_path):
        cloud.require_label_image(label, ctx, label_path, *images)
        return AzureLabel(**label)

    return AzurePool(**dict(
        pool, labels=build_labels(pool, ctx, pool_path, build_label)))


def _gallery(data):
    return GalleryImage(**data) if data else None


def _network(data):
    network = data["network"]
    if network is None:
        return None
    if isinstance(network, str):
        network = {"network": network, "resource_group": None,
                   "subnet": "default"}
    return AzureNetwork(**dict(network, resource_group=inherit(
        network["resource_group"], data["resource_group"])))


def build_provider(data, ctx, path):
    """Build an AzureProviderConfig from validated provider data."""
    auth_path = data["auth_path"] or ctx.env.get(AUTH_PATH_VARIABLE)
    if not auth_path:
        ctx.problem(path + ("auth-path",), "the path of the Azure auth file "
                    "(or %s in the environment)" % AUTH_PATH_VARIABLE,
                    "nothing")
    diskimages = cloud.build_diskimages(
        data, ctx, path, lambda image, top: AzureDiskImage(**dict(
            image, username=inherit(image["username"], top.username),
            shell_type=inherit(image["shell_type"], top.shell_type))))
    cloud_images = {}
    for image in data["cloud_images"]:
        cloud_images[image["name"]] = AzureCloudImage(**image_connection(dict(
            image, key=inherit(image["key"], data["zuul_public_key"]),
            community_gallery_image=_gallery(image["community_gallery_image"]),
            shared_gallery_image=_gallery(image["shared_gallery_image"]))))
    known = (cloud_images, [d["name"] for d in data["diskimages"]])
    pools = build_pools(data, ctx, path, lambda pool, pool_path: _build_pool(
        data, pool, ctx, pool_path, known))
    return AzureProviderConfig(**dict(
        data, auth_path=auth_path or "", network=_network(data), pools=pools,
        cloud_images=cloud_images, diskimages=diskimages))
