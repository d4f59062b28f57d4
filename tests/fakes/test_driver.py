# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""A driver for tests: an in-memory cloud with controllable behaviour.

Registered as ``driver: test`` by :func:`register`.  Each provider talks to
the :class:`FakeCloud` of its name (``FakeCloud.get(name)``), which tests
use to add latency (state machine steps before an instance is running),
inject failures (create errors, quota refusals, delete errors), set
provider limits and inspect or plant instances (leaks, unmanaged usage).

Image uploads (for the builder): a provider may list top-level
``diskimages`` (``name``, ``pause``, ``meta``) and set ``image-format``
(default ``raw``), ``image-name-format`` and ``post-upload-hook``.  The
cloud keeps uploaded images in :attr:`FakeCloud.images`; tests make
uploads or image deletions fail (``fail_uploads``,
``fail_image_deletes``), hold uploads (``hold_uploads``) and read the calls
made (``upload_calls``, ``image_delete_calls``).

The provider has the keys of every cloud driver
(:func:`nodepool.driver.cloud.provider_keys`).  A pool label may boot from
one of those uploads (``diskimage: <name>``, a name the provider lists
under ``diskimages``) or name a ``cloud-images`` entry (``cloud-image``;
only its connection details are used); without either a label needs no
image.  Instances record the external id of the image they were created
from (:attr:`FakeInstance.image_external_id`, None for image-less labels).
"""

import copy
import itertools
import threading
from dataclasses import dataclass

import voluptuous as v
from kazoo.exceptions import KazooException

from nodepool import driver, exceptions
from nodepool.config import schema
from nodepool.config.models import FrozenDict
from nodepool.driver import cloud
from nodepool.driver.base import (
    Driver, ImageConfig, PoolConfig, build_labels, build_pools,
    image_connection)
from nodepool.driver.quota import QuotaInformation
from nodepool.driver.statemachine.adapter import (
    Adapter, CloudImage, Instance, Resource, StateMachine)
from nodepool.driver.statemachine.provider import StateMachineProvider
from nodepool.driver.statemachine.quota import ProviderQuota

LABEL = schema.Section({
    v.Required("name"): str,
    v.Optional("cores", default=1): int,
    v.Optional("ram", default=1024): int,
    v.Optional("host-key-checking", default=False): bool,
    v.Optional("console-log", default=False): bool,
    **cloud.LABEL_KEYS,
}, schema.one_of("cloud-image", "diskimage"))

POOL = schema.POOL.extend({
    v.Optional("labels", default=list): schema.each(LABEL, unique="name"),
    v.Optional("max-cores", default=schema.UNLIMITED): schema.limit,
    v.Optional("max-ram", default=schema.UNLIMITED): schema.limit,
})

DISKIMAGE = cloud.PROVIDER_DISKIMAGE.extend({
    v.Optional("meta", default=dict): {str: str},
})

CLOUD_IMAGE = cloud.CLOUD_IMAGE.extend({
    v.Optional("username", default=None): schema.nullable(str),
})

PROVIDER = schema.PROVIDER.extend({
    v.Required("pools"): schema.each(POOL, unique="name"),
    # Short timeouts: tests wait for them.  The rate is not used.
    **cloud.provider_keys(boot_timeout=10, launch_timeout=60, rate=1.0,
                          rate_validator=schema.number,
                          cloud_image=CLOUD_IMAGE, diskimage=DISKIMAGE),
    v.Optional("image-format", default="raw"): str,
    v.Optional("image-name-format",
               default=cloud.DEFAULT_IMAGE_NAME_FORMAT): str,
})


@dataclass(frozen=True, kw_only=True)
class FakeLabel(cloud.CloudLabelConfig):
    cores: int
    ram: int
    host_key_checking: bool
    console_log: bool

    @property
    def checks_host_keys(self) -> bool:
        return self.host_key_checking

    @property
    def wants_console_log(self) -> bool:
        return self.console_log


@dataclass(frozen=True, kw_only=True)
class FakePool(PoolConfig):
    max_cores: float
    max_ram: float

    def quota_limits(self) -> dict:
        return {**super().quota_limits(), "cores": self.max_cores,
                "ram": self.max_ram}


@dataclass(frozen=True, kw_only=True)
class FakeDiskImage(cloud.CloudDiskImage):
    """Username, python-path and shell-type come from the top-level
    diskimage."""

    meta: FrozenDict

    @property
    def upload_metadata(self) -> FrozenDict:
        return self.meta


@dataclass(frozen=True, kw_only=True)
class FakeProviderConfig(cloud.CloudProviderConfig):
    image_format: str
    image_name_format: str

    @property
    def image_type(self) -> str:
        """The file format this provider uploads."""
        return self.image_format

    def external_image_name(self, image: str, upload_id: str,
                            timestamp: int) -> str:
        return self.image_name_format.format(
            image_name=image, upload_id=upload_id, timestamp=timestamp)


class FakeInstance(Instance):
    def __init__(self, external_id, metadata, cores, ram, az="az1",
                 image_external_id=None):
        super().__init__()
        self.external_id = external_id
        # The uploaded image it was created from (diskimage labels).
        self.image_external_id = image_external_id
        self.metadata = dict(metadata)
        self.cores = cores
        self.ram = ram
        self.cloud = "fake-cloud"
        self.region = "fake-region"
        self.az = az
        self.private_ipv4 = "10.0.0.%d" % (int(external_id.split("-")[1])
                                           % 250 + 1)
        # No resolver knows it: launchers get tests.fakes.scanner.FakeScanner.
        self.interface_ip = "fake-%s" % external_id
        self.public_ipv4 = self.interface_ip
        self.running = False

    def get_quota_information(self):
        return QuotaInformation(cores=self.cores, instances=1, ram=self.ram)


@dataclass
class FakeImage:
    """An image uploaded to a fake cloud."""

    id: str
    name: str
    filename: str
    format: str
    metadata: dict
    md5: str
    sha256: str
    size: int


class FakeCloud:
    """Shared, thread-safe state of one fake provider's cloud."""

    _clouds: dict = {}
    _registry_lock = threading.Lock()

    @classmethod
    def get(cls, name: str) -> "FakeCloud":
        with cls._registry_lock:
            cloud = cls._clouds.get(name)
            if cloud is None:
                cloud = cls._clouds[name] = FakeCloud(name)
            return cloud

    @classmethod
    def reset_all(cls) -> None:
        with cls._registry_lock:
            cls._clouds.clear()

    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.instances: dict = {}
        self.resources: list = []
        self.ids = itertools.count(1)
        self.create_steps = 2      # advance() calls before running
        self.fail_creates = 0      # next N creates raise
        self.quota_failures = 0    # next N creates raise QuotaException
        self.fail_deletes = 0      # next N deletes raise
        self.limits = QuotaInformation(default=float("inf"))
        self.bad_labels: set = set()
        self.create_calls = 0      # creates asked for, failed ones too
        self.created = 0
        self.deleted = 0
        self.paused = threading.Event()  # set: creates do not progress
        # (ip, port) to give new instances instead of an unreachable fake
        # address, e.g. a real sshd for host-key scanning.
        self.address = None
        # Zones get_azs() offers (None: the cloud has none; instances then
        # land in "az1").
        self.azs = [None]
        self.console_requests: list = []  # external ids asked for
        # Images (builder uploads).
        self.images: dict = {}         # id -> FakeImage
        self.image_ids = itertools.count(1)
        self.fail_uploads = 0          # next N uploads raise
        self.fail_image_deletes = 0    # next N image deletions raise
        self.hold_uploads = threading.Event()  # set: uploads wait
        self.upload_calls: list = []   # (name, filename, format, metadata)
        self.image_delete_calls: list = []  # external ids
        self.fail_image_listing = None  # an exception list_images raises
        # A message: building an adapter for this cloud fails with it.
        self.unreachable = None
        # The provider's bookkeeping (FakeQuota, RecordingNodeStore), not
        # the cloud's, but set per provider like the rest.
        self.reserve_error = None   # an exception quota.reserve() raises
        self.fail_record_deletes = 0  # next N node record deletions raise
        self.record_deletes: list = []  # node ids whose record it deleted

    def upload_image(self, provider_image, image_name, filename,
                     image_format, metadata, md5, sha256) -> str:
        with self.lock:
            self.upload_calls.append((image_name, filename, image_format,
                                      dict(metadata)))
        while self.hold_uploads.is_set():
            self.hold_uploads.wait(0.01)
        with self.lock:
            if self.fail_uploads > 0:
                self.fail_uploads -= 1
                raise RuntimeError("fake upload failed")
            with open(filename, "rb") as f:
                size = len(f.read())
            image = FakeImage("img-%d" % next(self.image_ids), image_name,
                              filename, image_format, dict(metadata), md5,
                              sha256, size)
            self.images[image.id] = image
            return image.id

    def delete_image(self, external_id) -> None:
        with self.lock:
            self.image_delete_calls.append(external_id)
            if self.fail_image_deletes > 0:
                self.fail_image_deletes -= 1
                raise RuntimeError("fake image delete failed")
            if external_id not in self.images:
                raise exceptions.NotFound(external_id)
            del self.images[external_id]

    def add_image(self, external_id, name, metadata) -> None:
        """An image someone else uploaded (not through upload_image)."""
        with self.lock:
            self.images[external_id] = FakeImage(
                external_id, name, "", "raw", dict(metadata), "", "", 0)

    def list_images(self) -> list:
        if self.fail_image_listing is not None:
            raise self.fail_image_listing
        with self.lock:
            return [CloudImage(i.id, i.name, i.metadata)
                    for i in self.images.values()]

    def create(self, label, metadata, az=None,
               image_external_id=None) -> FakeInstance:
        with self.lock:
            self.create_calls += 1
            if self.quota_failures > 0:
                self.quota_failures -= 1
                raise exceptions.QuotaException("fake quota exceeded")
            if self.fail_creates > 0:
                self.fail_creates -= 1
                raise exceptions.LaunchStatusException("fake create failed")
            instance = FakeInstance("i-%d" % next(self.ids), metadata,
                                    label.cores, label.ram, az=az or "az1",
                                    image_external_id=image_external_id)
            if self.address is not None:
                ip, port = self.address
                instance.interface_ip = instance.public_ipv4 = ip
                instance.connection_port = port
            self.instances[instance.external_id] = instance
            self.created += 1
            return instance

    def delete(self, external_id) -> None:
        with self.lock:
            if self.fail_deletes > 0:
                self.fail_deletes -= 1
                raise RuntimeError("fake delete failed")
            if external_id not in self.instances:
                raise exceptions.NotFound(external_id)
            del self.instances[external_id]
            self.deleted += 1

    def list(self) -> list:
        with self.lock:
            return list(self.instances.values())


class FakeCreateStateMachine(StateMachine):
    def __init__(self, cloud, label, metadata, az=None,
                 image_external_id=None):
        super().__init__()
        self.cloud = cloud
        self.label = label
        self.metadata = metadata
        self.az = az
        self.image_external_id = image_external_id
        self.instance = None
        self.steps = 0

    def advance(self):
        if self.cloud.paused.is_set():
            return None
        if self.instance is None:
            self.instance = self.cloud.create(
                self.label, self.metadata, self.az,
                image_external_id=self.image_external_id)
            self.external_id = self.instance.external_id
            self.state = "creating"
        self.steps += 1
        if self.steps >= self.cloud.create_steps:
            self.instance.running = True
            self.state = self.COMPLETE
            self.complete = True
            return self.instance
        return None


class FakeDeleteStateMachine(StateMachine):
    def __init__(self, cloud, external_id):
        super().__init__()
        self.cloud = cloud
        self.external_id = external_id

    def advance(self):
        self.cloud.delete(self.external_id)
        self.state = self.COMPLETE
        self.complete = True


class FakeAdapter(Adapter):
    def __init__(self, provider_config):
        super().__init__(provider_config)
        self.cloud = FakeCloud.get(provider_config.name)
        if self.cloud.unreachable:
            raise RuntimeError(self.cloud.unreachable)

    def get_create_state_machine(self, hostname, label, image_external_id,
                                 metadata, request, az, log):
        return FakeCreateStateMachine(self.cloud, label, metadata, az,
                                      image_external_id=image_external_id)

    def get_delete_state_machine(self, external_id, log):
        return FakeDeleteStateMachine(self.cloud, external_id)

    def list_instances(self):
        return self.cloud.list()

    def list_resources(self):
        resources = [Resource(i.metadata, "instance", i.external_id)
                     for i in self.cloud.list()]
        with self.cloud.lock:
            resources.extend(self.cloud.resources)
        return resources

    def delete_resource(self, resource):
        if resource.type == "instance":
            self.cloud.delete(resource.id)
        else:
            with self.cloud.lock:
                self.cloud.resources.remove(resource)

    def get_quota_limits(self):
        return self.cloud.limits.copy()

    def get_azs(self):
        return list(self.cloud.azs)

    def get_console_log(self, label, external_id):
        with self.cloud.lock:
            self.cloud.console_requests.append(external_id)
        return "fake console of %s\nlogin:" % external_id

    def get_quota_for_label(self, label):
        if label.name in self.cloud.bad_labels:
            raise exceptions.RuntimeConfigurationException(
                "label %s can not work" % label.name)
        return QuotaInformation(cores=label.cores, instances=1,
                                ram=label.ram)

    def upload_image(self, provider_image, image_name, filename,
                     image_format, metadata, md5, sha256):
        return self.cloud.upload_image(provider_image, image_name, filename,
                                       image_format, metadata, md5, sha256)

    def delete_image(self, external_id):
        self.cloud.delete_image(external_id)

    def list_images(self):
        return self.cloud.list_images()


class FakeQuota(ProviderQuota):
    """The real quota bookkeeping; :meth:`reserve` raises the cloud's
    ``reserve_error`` while one is set."""

    def reserve(self, label_name, pool):
        error = self.adapter.cloud.reserve_error
        if error is not None:
            raise error
        return super().reserve(label_name, pool)


class RecordingNodeStore:
    """The launcher's node store as the provider sees it: every call goes
    to ``store``; :meth:`delete_node` is recorded in the cloud's
    ``record_deletes`` and fails (``KazooException``) while its
    ``fail_record_deletes`` count lasts."""

    def __init__(self, store, cloud):
        self._store = store
        self._cloud = cloud

    def __getattr__(self, name):
        return getattr(self._store, name)

    def delete_node(self, node):
        cloud = self._cloud
        with cloud.lock:
            cloud.record_deletes.append(node.id)
            fail = cloud.fail_record_deletes > 0
            if fail:
                cloud.fail_record_deletes -= 1
        if fail:
            raise KazooException("fake ZooKeeper failure")
        return self._store.delete_node(node)


class FakeProvider(StateMachineProvider):
    """A state-machine provider with :class:`FakeQuota` whose node
    store is a :class:`RecordingNodeStore`."""

    quota_class = FakeQuota

    def __init__(self, config, adapter, services, interval=1.0):
        services = copy.copy(services)
        services.nodes = RecordingNodeStore(services.nodes, adapter.cloud)
        super().__init__(config, adapter, services, interval=interval)


class FakeDriver(Driver):
    name = "test"

    def provider_schema(self):
        return PROVIDER

    def build_provider(self, data, ctx, path):
        cloud_images = {image["name"]: ImageConfig(**image_connection(
            image)) for image in data["cloud_images"]}
        diskimage_names = [d["name"] for d in data["diskimages"]]

        def build_label(label, label_path):
            cloud.require_label_image(label, ctx, label_path, cloud_images,
                                      diskimage_names)
            return FakeLabel(**label)

        def build_pool(pool, pool_path):
            labels = build_labels(pool, ctx, pool_path, build_label)
            return FakePool(**dict(pool, labels=labels))
        diskimages = cloud.build_diskimages(
            data, ctx, path, lambda image, top: FakeDiskImage(**dict(
                image, username=top.username, python_path=top.python_path,
                shell_type=top.shell_type)))
        return FakeProviderConfig(**dict(
            data, pools=build_pools(data, ctx, path, build_pool),
            diskimages=diskimages, cloud_images=cloud_images))

    def get_adapter(self, provider_config, warm=True):
        return FakeAdapter(provider_config)

    def get_provider(self, provider_config, services, interval=1.0):
        return FakeProvider(provider_config, self.get_adapter(provider_config),
                            services, interval=interval)


def register() -> None:
    """Make ``driver: test`` available (idempotent)."""
    driver.register_driver("test", "tests.fakes.test_driver:FakeDriver")


def unregister() -> None:
    driver.unregister_driver("test")
