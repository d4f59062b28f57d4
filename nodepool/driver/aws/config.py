# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Schema and config objects of the AWS driver."""

from dataclasses import dataclass

import voluptuous as v

from nodepool.config import schema
from nodepool.config.schema import inherit
from nodepool.config.models import ConfigObject, FrozenDict
from nodepool.driver import capacity, cloud
from nodepool.driver.base import (
    ImageConfig, build_labels, build_pools, image_connection)

_opt = v.Optional
_str = schema.nullable(str)
_int = schema.nullable(int)
_bool = schema.nullable(bool)

IMAGE_FORMATS = ("ova", "vhd", "vhdx", "vmdk", "raw")
IMPORT_METHODS = ("snapshot", "ebs-direct", "image")
ALLOCATION_STRATEGIES = ("prioritized", "price-capacity-optimized",
                         "capacity-optimized", "diversified", "lowest-price")


def _capitalize_filter(data):
    # boto wants Name/Values; both spellings are accepted in the file.
    name = data.get("name", data.get("Name"))
    values = data.get("values", data.get("Values"))
    if name is None or values is None:
        missing = "name" if name is None else "values"
        raise schema.ConfigInvalid(
            "both a name and values", path=[missing], found="nothing")
    return {"Name": name, "Values": values}


IMAGE_FILTER = schema.Section({
    v.Exclusive("name", "name"): str,
    v.Exclusive("Name", "name"): str,
    v.Exclusive("values", "values"): schema.each(str),
    v.Exclusive("Values", "values"): schema.each(str),
}, _capitalize_filter)

CLOUD_IMAGE = cloud.CLOUD_IMAGE.extend({
    v.Required("username"): str,
    _opt("image-id", default=None): _str,
    _opt("image-filters", default=None): schema.nullable(
        schema.each(IMAGE_FILTER)),
}, schema.one_of("image-id", "image-filters", required=True))


def _imds_import_method(data):
    if data["imds-support"] == "v2.0" and data["import-method"] == "image":
        raise schema.ConfigInvalid(
            "import-method snapshot or ebs-direct with imds-support v2.0",
            path=["import-method"], found="'image'")


PROVIDER_DISKIMAGE = cloud.PROVIDER_DISKIMAGE.extend({
    _opt("username", default=None): _str,
    # Not inherited from the top-level diskimage (upstream quirk).
    _opt("python-path", default="auto"): str,
    _opt("shell-type", default=None): _str,
    _opt("architecture", default="x86_64"): str,
    _opt("ena-support", default=True): bool,
    _opt("volume-size", default=None): _int,
    _opt("volume-type", default="gp3"): str,
    _opt("import-method", default="snapshot"): schema.choice(*IMPORT_METHODS),
    _opt("imds-support", default=None): schema.nullable(
        schema.choice("v2.0")),
    _opt("iops", default=None): _int,
    _opt("throughput", default=None): _int,
    _opt("tags", default=dict): {str: schema.scalar_string},
}, _imds_import_method)

FLEET = schema.Section({
    v.Required("instance-types"): schema.each(str),
    v.Required("allocation-strategy"): schema.choice(*ALLOCATION_STRATEGIES),
})

IAM_PROFILE = schema.Section({
    _opt("name", default=None): _str,
    _opt("arn", default=None): _str,
}, schema.one_of("name", "arn", required=True))


def _fallback_needs_instance_type(data):
    if data["fallback-instance-types"] is not None and \
            data["instance-type"] is None:
        raise schema.ConfigInvalid(
            "an instance-type for fallback-instance-types (a fleet "
            "chooses among its own types)",
            path=["fallback-instance-types"], found="a fleet")


def _spot_on_dedicated_host(data):
    if data["dedicated-host"] and data["use-spot"]:
        raise schema.ConfigInvalid(
            "use-spot to be off on a dedicated host (spot instances can "
            "not be used on dedicated hosts)", path=["use-spot"],
            found="true")


LABEL = schema.Section({
    v.Required("name"): str,
    **cloud.LABEL_KEYS,
    _opt("instance-type", default=None): _str,
    _opt("fleet", default=None): schema.nullable(FLEET),
    # Our extension: tried in order when EC2 has no capacity for
    # instance-type (doc/source/capacity-fallback.rst).
    _opt("fallback-instance-types", default=None): schema.nullable(
        schema.each(str)),
    v.Required("key-name"): str,
    _opt("ebs-optimized", default=False): bool,
    _opt("volume-type", default=None): _str,
    _opt("volume-size", default=None): _int,
    _opt("iops", default=None): _int,
    _opt("throughput", default=None): _int,
    _opt("userdata", default=None): _str,
    _opt("iam-instance-profile", default=None): schema.nullable(IAM_PROFILE),
    _opt("tags", default=dict): {str: schema.scalar_string},
    _opt("dynamic-tags", default=dict): {str: str},
    _opt("use-spot", default=False): bool,
    _opt("imdsv2", default=None): schema.nullable(
        schema.choice("required", "optional")),
    _opt("dedicated-host", default=False): bool,
}, schema.one_of("cloud-image", "diskimage", required=True),
    # Upstream's schema lets both be missing, but such a label can never
    # launch (RunInstances gets no InstanceType, the quota lookup fails).
    schema.one_of("instance-type", "fleet", required=True),
    _spot_on_dedicated_host, _fallback_needs_instance_type)

_RESOURCES = {str: int}

POOL = schema.POOL.extend({
    v.Required("labels"): schema.each(LABEL, unique="name"),
    # None: take the provider's value.
    _opt("max-servers", default=None): schema.nullable(schema.limit),
    _opt("max-cores", default=None): schema.nullable(schema.limit),
    _opt("max-ram", default=None): schema.nullable(schema.limit),
    _opt("max-resources", default=dict): _RESOURCES,
    _opt("subnet-id", default=None): _str,
    _opt("security-group-id", default=None): _str,
    _opt("public-ipv4", default=None): _bool,
    # Deprecated spelling of public-ipv4; wins when both are given.
    _opt("public-ip-address", default=None): _bool,
    _opt("public-ipv6", default=None): _bool,
    _opt("use-internal-ip", default=None): _bool,
    _opt("host-key-checking", default=None): _bool,
    _opt("availability-zone", default=None): _str,
})

PROVIDER = schema.PROVIDER.extend({
    v.Required("region-name"): str,
    v.Required("pools"): schema.each(POOL, unique="name"),
    _opt("profile-name", default=None): _str,
    # rate: mutating API operations per second (reads get ten times as
    # many).
    **cloud.provider_keys(boot_timeout=180, rate=2.0,
                          rate_validator=schema.number,
                          cloud_image=CLOUD_IMAGE,
                          diskimage=PROVIDER_DISKIMAGE),
    # Threads running RunInstances; default max(1, min(8, rate * 4)).
    _opt("create-workers", default=None): schema.nullable(
        v.All(int, v.Range(min=1))),
    _opt("object-storage", default=None): schema.nullable(schema.Section({
        v.Required("bucket-name"): str})),
    _opt("image-format", default="raw"): schema.choice(*IMAGE_FORMATS),
    _opt("image-import-timeout", default=None): _int,
    _opt("max-servers", default=schema.UNLIMITED): schema.limit,
    _opt("max-cores", default=schema.UNLIMITED): schema.limit,
    _opt("max-ram", default=schema.UNLIMITED): schema.limit,
    _opt("max-resources", default=dict): _RESOURCES,
    _opt("use-internal-ip", default=False): bool,
    _opt("host-key-checking", default=True): bool,
    _opt("public-ipv4", default=True): bool,
    _opt("public-ipv6", default=False): bool,
})


@dataclass(frozen=True, kw_only=True)
class ObjectStorage(ConfigObject):
    """Where image files are staged for import."""

    bucket_name: str


@dataclass(frozen=True, kw_only=True)
class AwsCloudImage(ImageConfig):
    """An existing AMI: by id, or the newest match of ``image_filters``.

    Filters are ``{"Name": ..., "Values": [...]}`` mappings, as boto wants.
    """

    image_id: str | None
    image_filters: tuple | None


@dataclass(frozen=True, kw_only=True)
class AwsDiskImage(cloud.CloudDiskImage):
    """A top-level diskimage as imported into one AWS provider."""

    architecture: str
    ena_support: bool
    volume_size: int | None
    volume_type: str
    import_method: str
    imds_support: str | None
    iops: int | None
    throughput: int | None
    tags: FrozenDict

    @property
    def upload_metadata(self) -> FrozenDict:
        return self.tags


@dataclass(frozen=True, kw_only=True)
class Fleet(ConfigObject):
    """An EC2 fleet request: candidate instance types and how to choose."""

    instance_types: tuple
    allocation_strategy: str


@dataclass(frozen=True, kw_only=True)
class IamInstanceProfile(ConfigObject):
    """An IAM instance profile, by name or by ARN."""

    name: str | None
    arn: str | None


@dataclass(frozen=True, kw_only=True)
class AwsLabel(cloud.CloudLabelConfig):
    """A label of an AWS pool; ``host_key_checking`` comes from the pool."""

    instance_type: str | None
    fallback_instance_types: tuple | None
    fleet: Fleet | None
    key_name: str
    ebs_optimized: bool
    volume_type: str | None
    volume_size: int | None
    iops: int | None
    throughput: int | None
    userdata: str | None
    iam_instance_profile: IamInstanceProfile | None
    tags: FrozenDict
    dynamic_tags: FrozenDict
    use_spot: bool
    imdsv2: str | None
    dedicated_host: bool
    host_key_checking: bool

    @property
    def checks_host_keys(self) -> bool:
        return self.host_key_checking

    @property
    def capacity_types(self) -> tuple | None:
        return capacity.type_order(self.instance_type,
                                   self.fallback_instance_types)

    def for_capacity_type(self, type_name: str) -> "AwsLabel":
        return self.replace(instance_type=type_name)


@dataclass(frozen=True, kw_only=True)
class AwsPool(cloud.CloudPoolConfig):
    """A pool of an AWS provider; limits are resolved against the provider.

    ``max_resources`` is the provider's mapping updated by the pool's.
    """

    max_cores: float
    max_ram: float
    max_resources: FrozenDict
    subnet_id: str | None
    security_group_id: str | None
    public_ipv4: bool
    public_ipv6: bool
    use_internal_ip: bool
    availability_zone: str | None

    def quota_limits(self) -> dict:
        return {**super().quota_limits(), "cores": self.max_cores,
                "ram": self.max_ram, **self.max_resources}

    @property
    def prefers_private_ip(self) -> bool:
        return self.use_internal_ip


@dataclass(frozen=True, kw_only=True)
class AwsProviderConfig(cloud.CloudProviderConfig):
    """An AWS provider.  ``rate`` is mutating operations per second."""

    region_name: str
    profile_name: str | None
    create_workers: int | None
    object_storage: ObjectStorage | None
    image_format: str
    image_import_timeout: int | None
    max_servers: float
    max_cores: float
    max_ram: float
    max_resources: FrozenDict
    use_internal_ip: bool
    host_key_checking: bool
    public_ipv4: bool
    public_ipv6: bool

    @property
    def image_type(self) -> str:
        return self.image_format

    @property
    def node_region(self) -> str | None:
        return self.region_name


def _build_pool(provider, pool, ctx, pool_path, images):
    public_ipv4 = inherit(pool["public_ip_address"],
                          inherit(pool["public_ipv4"],
                                  provider["public_ipv4"]))
    pool = dict(
        pool,
        max_servers=inherit(pool["max_servers"], provider["max_servers"]),
        max_cores=inherit(pool["max_cores"], provider["max_cores"]),
        max_ram=inherit(pool["max_ram"], provider["max_ram"]),
        max_resources={**provider["max_resources"], **pool["max_resources"]},
        public_ipv4=public_ipv4,
        public_ipv6=inherit(pool["public_ipv6"], provider["public_ipv6"]),
        use_internal_ip=inherit(pool["use_internal_ip"],
                                provider["use_internal_ip"]),
        host_key_checking=inherit(pool["host_key_checking"],
                                  provider["host_key_checking"]))
    del pool["public_ip_address"]

    def build_label(label, label_path):
        cloud.require_label_image(label, ctx, label_path, *images)
        if label["dedicated_host"] and pool["availability_zone"] is None:
            ctx.problem(label_path + ("dedicated-host",),
                        "an availability-zone on the pool for dedicated "
                        "hosts", "no pool availability-zone")
        return AwsLabel(**dict(
            label, host_key_checking=pool["host_key_checking"],
            fleet=Fleet(**label["fleet"]) if label["fleet"] else None,
            iam_instance_profile=(
                IamInstanceProfile(**label["iam_instance_profile"])
                if label["iam_instance_profile"] else None)))

    labels = build_labels(pool, ctx, pool_path, build_label)
    return AwsPool(**dict(pool, labels=labels))


def build_provider(data, ctx, path):
    """Build an AwsProviderConfig from validated provider data."""
    diskimages = cloud.build_diskimages(
        data, ctx, path, lambda image, top: AwsDiskImage(**dict(
            image, username=inherit(image["username"], top.username),
            shell_type=inherit(image["shell_type"], top.shell_type))))
    cloud_images = {image["name"]: AwsCloudImage(**image_connection(image))
                    for image in data["cloud_images"]}
    known = (cloud_images, [d["name"] for d in data["diskimages"]])
    pools = build_pools(data, ctx, path, lambda pool, pool_path: _build_pool(
        data, pool, ctx, pool_path, known))
    storage = data["object_storage"]
    return AwsProviderConfig(**dict(
        data, pools=pools, cloud_images=cloud_images, diskimages=diskimages,
        object_storage=ObjectStorage(**storage) if storage else None))
