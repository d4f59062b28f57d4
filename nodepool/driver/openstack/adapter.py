# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The OpenStack adapter: servers, quota, images and leak cleanup for one
provider, through openstacksdk.  Cached lookups
(:mod:`~nodepool.driver.openstack.lookups`), quota
(:mod:`~nodepool.driver.openstack.quota`) and leak cleanup
(:mod:`~nodepool.driver.openstack.cleanup`) are mixins of the adapter.

* One SDK connection per provider, made from clouds.yaml (the provider's
  ``cloud`` and ``region-name``).  The SDK's own rate limiting is off:
  every call goes through a :class:`RateLimiter` per service (compute,
  network, image, volume), each allowing one call per ``rate`` seconds, as the
  SDK's ``rate_limit`` would; with ``adaptive-rate`` (the default) that
  is their ceiling and they share one :class:`AdaptiveRateGroup`.
* Slow calls (server create, floating IP and delete work) run in a thread
  pool (:class:`~nodepool.driver.elastic.ElasticExecutor`) of at least
  ``api_workers`` threads, more when the compute rate times the calls'
  latency needs them; state machines only look at futures.
* Server states come from one shared ``GET /servers/detail`` listing
  (:class:`SharedListing`) for all machines of the provider, refreshed
  while some machine watches it and early after each create or delete.
* Flavors, networks, images and availability zones are cached
  (:class:`SingleFlightTTLCache`); a create refused with HTTP 400 clears
  them, in case the cloud changed under us.  Compute (and, when the cloud
  has Cinder, volume) limits are cached in a ``cachetools.TTLCache``.
"""

import base64
import concurrent.futures
import logging
import random
import threading
import time
from typing import Optional

import cachetools

from nodepool import exceptions
from nodepool.driver.errors import exception_for
from nodepool.driver.listing import SharedListing
from nodepool.driver.openstack.cleanup import OpenStackCleanupMixin
from nodepool.driver.openstack.lookups import OpenStackLookupsMixin
from nodepool.driver.openstack.quota import OpenStackQuotaMixin
from nodepool.driver.lazycache import SingleFlightTTLCache
from nodepool.driver.openstack.errors import (
    make_retrier, classify, http_status)
from nodepool.driver.openstack.statemachines import (
    OpenStackCreateStateMachine, OpenStackDeleteStateMachine,
    OpenStackInstance, server_addresses)
from nodepool.driver.elastic import ElasticExecutor, limiter_target
from nodepool.driver.ratelimit import provider_limiters
from nodepool.driver.statemachine.adapter import CloudImage
from nodepool.driver.statemachine.cloud import (
    CloudAdapter, format_dynamic)

FLAVOR_TTL = 3600.0
NETWORK_TTL = 3600.0
IMAGE_TTL = 300.0
AZ_TTL = 300.0
LIMITS_TTL = 300.0
API_WORKERS = 10
IMAGE_POLL_INTERVAL = 2.0


def translate(error: BaseException, what: str,
              creating: bool = False) -> BaseException:
    """The nodepool exception the launcher should see for an SDK error.

    Nova answers 403 or 413 "Quota exceeded ..." when the project is out
    of quota: :class:`QuotaException`.  A 404 is :class:`NotFound` (the
    resource is gone), except while creating, where a missing flavor or
    network is a failed launch.  A server error or lost connection of a
    create leaves its outcome unknown (see :mod:`.errors`).
    """
    if isinstance(error, exceptions.NodepoolError):
        return error
    return exception_for(classify(error), "%s: %s" % (what, error),
                         creating)


def connect(provider_config):
    """An openstacksdk connection for the provider (clouds.yaml based;
    ``OS_CLIENT_CONFIG_FILE`` may point at the file)."""
    import openstack
    return openstack.connect(cloud=provider_config.cloud,
                             region_name=provider_config.region_name,
                             app_name="nodepool")


class OpenStackAdapter(OpenStackLookupsMixin, OpenStackQuotaMixin,
                       OpenStackCleanupMixin, CloudAdapter):
    """Adapter for one ``driver: openstack`` provider.

    :param connection: an openstacksdk ``Connection``; made from
        clouds.yaml when omitted.
    :param listing_interval: seconds between server listings while a
        machine waits on a server (default: twice the ``rate`` spacing,
        at least one second).
    """

    create_state_machine_class = OpenStackCreateStateMachine

    def __init__(self, provider_config, connection=None,
                 listing_interval: Optional[float] = None,
                 api_workers: int = API_WORKERS, warm: bool = True,
                 clock=time.monotonic):
        super().__init__(provider_config)
        name = provider_config.name
        self.log = logging.getLogger("nodepool.driver.openstack.%s" % name)
        self.conn = connection if connection is not None else connect(
            provider_config)
        self.cloud_name = provider_config.cloud
        self.region = provider_config.region_name
        rate = provider_config.rate
        per_second = 1.0 / rate if rate else None
        self.limiters = provider_limiters(
            "openstack", name,
            {service: per_second
             for service in ("compute", "network", "image", "volume")},
            provider_config.adaptive_rate)
        self.compute_limiter = self.limiters["compute"]
        self.network_limiter = self.limiters["network"]
        self.image_limiter = self.limiters["image"]
        self.volume_limiter = self.limiters["volume"]
        self._clock = clock
        self.retrier = make_retrier(self.log)
        self.executor = ElasticExecutor(
            "openstack-api-%s" % name,
            limiter_target(self.compute_limiter, api_workers))
        if listing_interval is None:
            listing_interval = max(1.0, 2.0 * (rate or 0))
        self.servers = SharedListing(
            "openstack-servers-%s" % name, self._fetch_servers, self.log,
            interval=listing_interval, clock=clock)
        self._flavors = SingleFlightTTLCache(FLAVOR_TTL)
        self._networks = SingleFlightTTLCache(NETWORK_TTL)
        self._images = SingleFlightTTLCache(IMAGE_TTL)
        self._azs = SingleFlightTTLCache(AZ_TTL)
        self._limits = cachetools.TTLCache(1, LIMITS_TTL, timer=clock)
        self._limits_lock = threading.Lock()
        self._down_ports: Optional[set] = None
        self._ports_checked = None
        self._cleanup_lock = threading.Lock()
        self._stopped = False
        self.servers.start()
        if warm:
            self._start_warming("openstack")

    def listings(self) -> tuple:
        return (self.servers,)

    def rate_limiters(self) -> dict:
        return dict(self.limiters)

    def _warm_caches(self) -> None:
        try:
            self.flavors()
            self.networks()
            for pool in self.provider.pools.values():
                for label in pool.labels.values():
                    self.label_ready(label)
        except Exception:
            if not self._stopped:
                self.log.exception("Warming the caches failed")

    def stop(self) -> None:
        self._stopped = True
        self._stop_threads((self.servers,), self.executor)
        try:
            self.conn.close()
        except Exception:
            self.log.debug("Closing the connection failed", exc_info=True)

    # Helpers ------------------------------------------------------------

    def submit(self, func, *args) -> concurrent.futures.Future:
        """Run ``func(*args)`` in the API pool.

        The returned future has ``listed_after``: the time the call
        returned; its result is only set once a server listing started
        after that is available, so a machine that sees the future done
        finds its change in the listing (see :meth:`submit_to`).
        """
        return self.submit_to(self.executor, func, *args,
                              listing=self.servers)

    def _call(self, limiter, what: str, func, *args, log=None, **kwargs):
        """One rate-limited call; a throttled (429) one is sent again
        after the cloud's Retry-After, through the limiter again."""
        def once():
            with limiter.limited((log or self.log).debug, what):
                return func(*args, **kwargs)
        return self.retrier.call(what, once, limiter=limiter)

    def compute(self, what, func, *args, **kwargs):
        return self._call(self.compute_limiter, what, func, *args, **kwargs)

    def network(self, what, func, *args, **kwargs):
        return self._call(self.network_limiter, what, func, *args, **kwargs)

    def image(self, what, func, *args, **kwargs):
        return self._call(self.image_limiter, what, func, *args, **kwargs)

    def clear_caches(self) -> None:
        for cache in (self._flavors, self._networks, self._images,
                      self._azs):
            cache.invalidate()

    # Servers ------------------------------------------------------------

    def server_record(self, server, external=frozenset()) -> dict:
        """The listing's view of an SDK server (plain data)."""
        flavor = server.flavor
        flavor_id = None
        if flavor is not None:
            flavor_id = getattr(flavor, "id", None) or getattr(
                flavor, "original_name", None) or getattr(
                flavor, "name", None)
        return {
            "id": server.id, "name": server.name, "status": server.status,
            "metadata": dict(server.metadata or {}),
            "az": server.availability_zone, "host_id": server.host_id,
            "flavor_id": flavor_id,
            # Only microversions >= 2.47 embed the flavor's sizes.
            "vcpus": getattr(flavor, "vcpus", None) or None,
            "ram": getattr(flavor, "ram", None) or None,
            "fault": server.fault,
            "volumes": len(server.attached_volumes or ()),
            "ips": server_addresses(server.addresses, external),
        }

    def _fetch_servers(self) -> dict:
        external = self.external_network_names()
        servers = self.compute("List servers", lambda: list(
            self.conn.compute.servers(details=True)))
        return {s.id: self.server_record(s, external) for s in servers}

    def make_instance(self, record: dict) -> OpenStackInstance:
        return OpenStackInstance(record, self.cloud_name, self.region,
                                 self._server_quota)

    def list_instances(self):
        snapshot = self._recent_snapshot(self.servers, "server")
        return [self.make_instance(record)
                for record in snapshot.items.values()
                if record.get("status") not in ("DELETED", "SOFT_DELETED")]

    # Creating -----------------------------------------------------------

    def _server_metadata(self, sm) -> dict:
        label = sm.label
        # "groups" lets Ansible's OpenStack inventory group servers by
        # provider, image and label.  It is only a default: a "groups"
        # the user sets in instance-properties wins, as in nodepool 11.
        image = label.diskimage or label.cloud_image
        meta = {"groups": ",".join((self.provider.name, image, label.name))}
        meta.update({key: str(value)
                     for key, value in label.instance_properties.items()})
        meta.update(format_dynamic(
            label.dynamic_instance_properties, sm.request, sm.log,
            "dynamic instance property", sm.node_id))
        meta.update({key: str(value) for key, value in sm.metadata.items()})
        return meta

    def _image_config(self, label):
        if label.diskimage:
            return self.provider.diskimages.get(label.diskimage)
        return self.provider.cloud_images.get(label.cloud_image)

    def create_args(self, sm) -> dict:
        """The ``create_server`` arguments for a create machine (runs in a
        worker: the lookups may call the cloud)."""
        label = sm.label
        flavor = self.find_flavor(label)
        image_config = self._image_config(label)
        if sm.image_external_id:
            image_id = sm.image_external_id
        elif image_config is not None and image_config.image_id:
            image_id = image_config.image_id
        else:
            image_id = self.find_image(image_config.external_name)["id"]
        args = {"name": sm.hostname, "flavor_id": flavor["id"],
                "metadata": self._server_metadata(sm)}
        if label.boot_from_volume:
            args["block_device_mapping"] = [{
                "boot_index": 0, "uuid": image_id, "source_type": "image",
                "destination_type": "volume",
                "volume_size": label.volume_size,
                "delete_on_termination": True}]
        else:
            args["image_id"] = image_id
        if label.networks:
            args["networks"] = [{"uuid": self.find_network(n)["id"]}
                                for n in label.networks]
        elif self._supports_auto_network():
            # From microversion 2.37 Nova wants to be told to pick.
            args["networks"] = "auto"
        if sm.pool.security_groups:
            args["security_groups"] = [{"name": g}
                                       for g in sm.pool.security_groups]
        if label.key_name:
            args["key_name"] = label.key_name
        if label.userdata:
            args["user_data"] = base64.b64encode(
                label.userdata.encode("utf-8")).decode("ascii")
        if sm.az is None:
            sm.az = self.choose_az(sm.pool, sm.request)
        if sm.az:
            args["availability_zone"] = sm.az
        if image_config is not None and image_config.config_drive is not None:
            args["config_drive"] = image_config.config_drive
        return args

    def _supports_auto_network(self) -> bool:
        from openstack import utils
        try:
            return utils.supports_microversion(self.conn.compute, "2.37")
        except Exception:
            self.log.debug("Microversion check failed", exc_info=True)
            return False

    def choose_az(self, pool, request) -> Optional[str]:
        """The AZ of a new node when the launcher did not pick one: one of
        the pool's zones, else of the cloud's, the same one for every
        node of a request (nodes of a job should be close together)."""
        zones = list(pool.availability_zones or ()) or [
            z for z in self.get_azs() if z]
        if not zones:
            return None
        request_id = getattr(request, "id", None)
        chooser = random.Random(request_id) if request_id else random
        return chooser.choice(sorted(zones))

    def invalidate_limits(self) -> None:
        with self._limits_lock:
            self._limits.clear()

    def create_server(self, sm) -> str:
        """Create the server of a machine; returns its id (worker)."""
        what = "Create server for node %s (request %s)" % (
            sm.node_id, sm.request_id)
        try:
            args = self.create_args(sm)
            server = self.compute(what, self.conn.compute.create_server,
                                  log=sm.log, **args)
        except exceptions.NodepoolError as e:
            sm.log.warning("%s failed: %s", what, e)
            raise
        except Exception as e:
            if http_status(e) == 400:
                self.clear_caches()
            sm.log.warning("%s failed: %s", what, e)
            error = translate(e, what, creating=True)
            if isinstance(error, exceptions.QuotaException):
                self.invalidate_limits()
            raise error from e
        sm.log.info("Created server %s for node %s", server.id, sm.node_id)
        return server.id

    def needs_floating_ip(self, pool, record: dict) -> bool:
        """Whether a new server gets a floating IP: the pool wants one, the
        server has no public v4 address but a private one, and the cloud
        has an external network to take it from."""
        ips = record.get("ips") or {}
        if not pool.auto_floating_ip or ips.get("public_ipv4") \
                or not ips.get("private_ipv4"):
            return False
        try:
            return any(n["external"] for n in self.networks())
        except Exception:
            self.log.exception("Network lookup failed")
            return False

    def create_floating_ip(self, sm) -> str:
        """Attach a floating IP to the server's port (worker); returns the
        address."""
        what = "Create floating IP for server %s" % sm.server_id
        try:
            external = [n for n in self.networks() if n["external"]]
            ports = self.network(
                "List ports of %s" % sm.server_id,
                lambda: list(self.conn.network.ports(
                    device_id=sm.server_id)))
            external_ids = {n["id"] for n in external}
            ports = [p for p in ports if p.network_id not in external_ids
                     and any("." in ip.get("ip_address", "")
                             for ip in p.fixed_ips or ())]
            if not external or not ports:
                raise exceptions.LaunchNetworkException(
                    "%s: no external network or no port" % what)
            fip = self.network(what, self.conn.network.create_ip,
                               log=sm.log,
                               floating_network_id=external[0]["id"],
                               port_id=ports[0].id)
        except exceptions.NodepoolError:
            raise
        except Exception as e:
            raise translate(e, what, creating=True) from e
        sm.log.info("Attached floating IP %s to server %s",
                    fip.floating_ip_address, sm.server_id)
        return fip.floating_ip_address

    # Deleting -----------------------------------------------------------

    def get_delete_state_machine(self, external_id, log):
        return OpenStackDeleteStateMachine(self, external_id, log,
                                           clock=self._clock)

    def delete_server_floating_ips(self, server_id, log=None) -> int:
        """Delete the floating IPs of the server's ports (worker)."""
        log = log or self.log
        try:
            ports = self.network("List ports of %s" % server_id, lambda: list(
                self.conn.network.ports(device_id=server_id)))
            deleted = 0
            for port in ports:
                fips = self.network(
                    "List floating IPs of port %s" % port.id,
                    lambda: list(self.conn.network.ips(port_id=port.id)))
                for fip in fips:
                    self.network("Delete floating IP %s" % fip.id,
                                 self.conn.network.delete_ip, fip.id,
                                 log=log)
                    log.info("Deleted floating IP %s of server %s",
                             fip.floating_ip_address, server_id)
                    deleted += 1
            return deleted
        except Exception as e:
            raise translate(e, "Deleting floating IPs of %s" % server_id)

    def delete_server(self, server_id, log=None) -> None:
        """Delete a server (worker); NotFound when it is already gone."""
        what = "Delete server %s" % server_id
        try:
            self.compute(what, self.conn.compute.delete_server, server_id,
                         ignore_missing=False, log=log)
        except Exception as e:
            raise translate(e, what) from e

    # Images -------------------------------------------------------------

    def upload_image(self, provider_image, image_name, filename,
                     image_format, metadata, md5, sha256):
        properties = {key: str(value) for key, value in
                      dict(provider_image.meta, **(metadata or {})).items()}
        timeout = self.provider.image_upload_timeout
        what = "Upload image %s" % image_name
        image = self.image(
            what, self.conn.image.create_image, image_name,
            filename=filename, disk_format=image_format,
            container_format="bare", visibility="private",
            allow_duplicates=True, wait=True, timeout=timeout, md5=md5,
            sha256=sha256, **properties)
        deadline = time.monotonic() + timeout
        while True:
            # The upload's answer predates the data: ask again at once.
            image = self.image("Get image %s" % image.id,
                               self.conn.image.get_image, image.id)
            if image.status == "active":
                break
            if image.status in ("killed", "deleted", "deactivated"):
                raise exceptions.ImageCreateException(
                    "%s: image %s is %s" % (what, image.id, image.status))
            if time.monotonic() > deadline:
                raise exceptions.ImageCreateException(
                    "%s: timeout waiting for image %s" % (what, image.id))
            time.sleep(IMAGE_POLL_INTERVAL)
        self.log.info("Uploaded image %s as %s", image_name, image.id)
        return image.id

    def delete_image(self, external_id):
        self.image("Delete image %s" % external_id,
                   self.conn.image.delete_image, external_id,
                   ignore_missing=True)

    def list_images(self):
        project = self.conn.current_project_id
        images = self.image("List own images", lambda: list(
            self.conn.image.images(owner=project)))
        return [CloudImage(i.id, i.name, {k: v for k, v in (
            i.properties or {}).items()}) for i in images]

    def get_console_log(self, label, external_id):
        output = self.compute(
            "Get console log of %s" % external_id,
            self.conn.compute.get_server_console_output, external_id)
        return (output or {}).get("output", "")
