# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Schema and config objects of the IBM VPC driver."""

import re
from dataclasses import dataclass

import voluptuous as v

from nodepool.config import schema
from nodepool.config.schema import inherit
from nodepool.config.models import ConfigObject, FrozenDict
from nodepool.config.errors import describe_value
from nodepool.config.validators import ConfigInvalid
from nodepool.driver import cloud
from nodepool.driver.base import (
    ImageConfig, build_labels, build_pools, image_connection)

_opt = v.Optional
_str = schema.nullable(str)
_int = schema.nullable(int)
_bool = schema.nullable(bool)

IMAGE_FORMAT = "qcow2"
# Provider and pool names become parts of resource group names
# (np_<provider>_<pool>), whose parts are told apart by the underscore;
# the VPC API allows letters, digits and hyphens in them.
_NAME_PART = re.compile(r"^[A-Za-z0-9-]+$")


def name_part(data):
    """A provider or pool name usable in a resource group name."""
    data = schema.path_name(data)
    if not _NAME_PART.match(data):
        raise ConfigInvalid(
            "a name of letters, digits and hyphens (no underscore)",
            found=describe_value(data))
    return data


OPERATING_SYSTEM = schema.Section({
    _opt(key, default=None): _str for key in (
        "architecture", "display-name", "family", "href", "name", "vendor",
        "version")
} | {_opt("dedicated-host-only", default=None): _bool})

IMAGE_FILTER = schema.Section({
    _opt("operating-system", default=None): schema.nullable(
        OPERATING_SYSTEM),
    _opt("owner-type", default=None): _str,
    _opt("status", default=None): _str,
})

_IMAGE_SOURCES = ("image-id", "image-href", "image-name", "image-filter")

CLOUD_IMAGE = cloud.CLOUD_IMAGE.extend({
    v.Required("username"): str,
    _opt("image-id", default=None): _str,
    _opt("image-href", default=None): _str,
    _opt("image-name", default=None): _str,
    _opt("image-filter", default=None): schema.nullable(IMAGE_FILTER),
    _opt("keys", default=list): [str],
}, schema.one_of(*_IMAGE_SOURCES, required=True))

PROVIDER_DISKIMAGE = cloud.PROVIDER_DISKIMAGE.extend({
    v.Required("operating-system"): str,
    _opt("python-path", default="auto"): str,
    _opt("shell-type", default=None): _str,
})

LABEL = schema.Section({
    v.Required("name"): str,
    **cloud.LABEL_KEYS,
    v.Required("profile"): str,
    _opt("user-data", default=None): _str,
}, schema.at_least_one_of("cloud-image", "diskimage"))

POOL = schema.POOL.extend({
    v.Required("name"): name_part,
    v.Required("labels"): schema.each(LABEL, unique="name"),
    # None: take the provider's value.
    _opt("zone", default=None): _str,
    _opt("subnet", default=None): _str,
    _opt("public-ipv4", default=None): _bool,
    _opt("use-internal-ip", default=None): _bool,
    _opt("host-key-checking", default=None): _bool,
})

OBJECT_STORAGE = schema.Section({
    v.Required("instance-name"): str,
    v.Required("endpoint"): str,
    v.Required("bucket-name"): str,
})

QUOTA = schema.Section({
    _opt("instances", default=None): _int,
    _opt("cores", default=None): _int,
    _opt("ram", default=None): _int,
})

PROVIDER = schema.PROVIDER.extend({
    v.Required("name"): name_part,
    v.Required("vpc"): str,
    v.Required("region"): str,
    _opt("zone", default=None): _str,
    _opt("subnet", default=None): _str,
    # None: the SDK's own sources (IBM_CREDENTIALS_FILE, environment).
    _opt("credentials-file", default=None): _str,
    _opt("object-storage", default=None): schema.nullable(OBJECT_STORAGE),
    _opt("quota", default=None): schema.nullable(QUOTA),
    _opt("public-ipv4", default=False): bool,
    _opt("use-internal-ip", default=False): bool,
    _opt("host-key-checking", default=True): bool,
    v.Required("pools"): schema.each(POOL, unique="name"),
    # rate: calls per second.
    **cloud.provider_keys(boot_timeout=120, rate=1.0,
                          rate_validator=schema.coerced_number,
                          cloud_image=CLOUD_IMAGE,
                          diskimage=PROVIDER_DISKIMAGE),
})


@dataclass(frozen=True, kw_only=True)
class IbmObjectStorage(ConfigObject):
    """The Cloud Object Storage bucket images are uploaded through."""

    instance_name: str
    endpoint: str
    bucket_name: str


@dataclass(frozen=True, kw_only=True)
class IbmCloudImage(ImageConfig):
    """An existing VPC image; exactly one source key is set.  ``keys``
    are the names of VPC SSH keys put on its instances."""

    image_id: str | None
    image_href: str | None
    image_name: str | None
    image_filter: FrozenDict | None
    keys: tuple


@dataclass(frozen=True, kw_only=True)
class IbmDiskImage(cloud.CloudDiskImage):
    """A top-level diskimage as uploaded to one IBM VPC provider;
    ``operating_system`` names the VPC operating system record."""

    operating_system: str


@dataclass(frozen=True, kw_only=True)
class IbmLabel(cloud.CloudLabelConfig):
    """A label of an IBM VPC pool: an instance ``profile`` (cx2-2x4...)."""

    profile: str
    user_data: str | None


@dataclass(frozen=True, kw_only=True)
class IbmPool(cloud.CloudPoolConfig):
    """A pool, zone, subnet and addressing resolved (pool, else
    provider)."""

    zone: str
    subnet: str
    public_ipv4: bool
    use_internal_ip: bool

    @property
    def prefers_private_ip(self) -> bool:
        return self.use_internal_ip

    @property
    def zone_choices(self) -> tuple:
        return (self.zone,)


@dataclass(frozen=True, kw_only=True)
class IbmProviderConfig(cloud.CloudProviderConfig):
    """An IBM VPC provider.  ``rate`` is calls per second; ``quota`` maps
    ``instances``, ``cores`` and ``ram`` to the limits given."""

    vpc: str
    region: str
    zone: str | None
    subnet: str | None
    credentials_file: str | None
    object_storage: IbmObjectStorage | None
    quota: FrozenDict
    public_ipv4: bool
    use_internal_ip: bool
    host_key_checking: bool

    @property
    def image_type(self) -> str:
        return IMAGE_FORMAT

    @property
    def node_cloud(self) -> str | None:
        return "IBM"

    @property
    def node_region(self) -> str | None:
        return self.region


def _build_pool(provider, pool, ctx, pool_path, images):
    zone = inherit(pool["zone"], provider["zone"])
    subnet = inherit(pool["subnet"], provider["subnet"])
    for key, value in (("zone", zone), ("subnet", subnet)):
        if value is None:
            ctx.problem(pool_path + (key,), "a %s (here or on the "
                        "provider)" % key, "nothing")
    pool = dict(
        pool, zone=zone or "", subnet=subnet or "",
        public_ipv4=inherit(pool["public_ipv4"], provider["public_ipv4"]),
        use_internal_ip=inherit(pool["use_internal_ip"],
                                provider["use_internal_ip"]),
        host_key_checking=inherit(pool["host_key_checking"],
                                  provider["host_key_checking"]))

    def build_label(label, label_path):
        cloud.require_label_image(label, ctx, label_path, *images)
        return IbmLabel(**label)

    return IbmPool(**dict(
        pool, labels=build_labels(pool, ctx, pool_path, build_label)))


def build_provider(data, ctx, path):
    """Build an IbmProviderConfig from validated provider data."""
    diskimages = cloud.build_diskimages(
        data, ctx, path, lambda image, top: IbmDiskImage(**dict(
            image, username=top.username,
            shell_type=inherit(image["shell_type"], top.shell_type))))
    cloud_images = {
        image["name"]: IbmCloudImage(**image_connection(dict(
            image, keys=tuple(image["keys"]))))
        for image in data["cloud_images"]}
    known = (cloud_images, [d["name"] for d in data["diskimages"]])
    pools = build_pools(data, ctx, path, lambda pool, pool_path: _build_pool(
        data, pool, ctx, pool_path, known))
    storage = data["object_storage"]
    quota = {key: value for key, value in (data["quota"] or {}).items()
             if value is not None}
    return IbmProviderConfig(**dict(
        data, pools=pools, cloud_images=cloud_images, diskimages=diskimages,
        object_storage=IbmObjectStorage(**storage) if storage else None,
        quota=FrozenDict(quota)))
