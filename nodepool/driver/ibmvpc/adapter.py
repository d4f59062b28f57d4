# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The IBM VPC adapter: instances, floating IPs, quota, leak cleanup and
(through ``images``) image uploads for one provider.

* Credentials: an IBM authenticator for service ``vpc`` read from the
  ``credentials-file`` (env style: ``VPC_AUTH_TYPE``, ``VPC_APIKEY``...),
  or from the SDK's usual sources without one.  The same file may name
  the service URLs (``VPC_URL``, ``VPC_AUTH_URL`` for the IAM token
  service, ``RESOURCE_MANAGER_URL``, ``RESOURCE_CONTROLLER_URL``; the
  object storage endpoint is the ``object-storage`` key's): that is IBM's
  documented way to point the SDKs elsewhere, and how the tests reach
  their fake.  Without ``VPC_URL`` the region's public endpoint is used.
* Every API call (each page of a list too, object storage calls
  included) waits on one rate limiter at the provider's ``rate``;
  throttling answers are retried with backoff (or their Retry-After).
* Startup lookups (the VPC, resource groups, profiles, subnets, SSH keys)
  run once, on first use, in a worker or quota thread; a failure is tried
  again on the next use.
* Instance and floating IP states come from two shared listings (one
  paged list call each for all machines, only while some machine
  waits).
"""

import concurrent.futures
import logging
import math
import threading
import time
from typing import Optional

from nodepool import exceptions
from nodepool.driver.elastic import ElasticExecutor, limiter_target
from nodepool.driver.ibmvpc import errors
from nodepool.driver.ibmvpc.clients import IbmClients, Setup, look_up
from nodepool.driver.ibmvpc.images import ImageManager
from nodepool.driver.ibmvpc.statemachines import (
    IbmCreateStateMachine, IbmDeleteStateMachine, IbmInstance, node_metadata,
    pool_group)
from nodepool.driver.lazycache import SingleFlightTTLCache
from nodepool.driver.listing import SharedListing
from nodepool.driver.quota import QuotaInformation
from nodepool.driver.ratelimit import make_limiter
from nodepool.driver.retry import Retrier
from nodepool.driver.statemachine.adapter import Resource
from nodepool.driver.statemachine.cloud import CloudAdapter

IMAGE_TTL = 10.0
LISTING_MAX_AGE = 10.0
DELETE_RESOURCE_TIMEOUT = 600.0


class IbmVpcAdapter(CloudAdapter):
    """Adapter for one ``driver: ibmvpc`` provider.

    :param clients: an :class:`IbmClients`; made from the credentials
        when omitted.
    :param listing_interval: seconds between list calls while a machine
        waits on a listing (early refreshes follow each call).
    """

    create_state_machine_class = IbmCreateStateMachine

    def __init__(self, provider_config, clients: Optional[IbmClients] = None,
                 listing_interval: Optional[float] = None,
                 listing_gap: float = 0.2, warm: bool = True,
                 poll_interval: float = 30.0):
        super().__init__(provider_config)
        name = provider_config.name
        self.log = logging.getLogger("nodepool.driver.ibmvpc.%s" % name)
        if clients is None:
            clients = IbmClients.from_credentials(
                provider_config.credentials_file, provider_config.region)
        self.clients = clients
        self.vpc = clients.vpc
        rate = provider_config.rate
        self.limiter = make_limiter("ibmvpc-%s" % name, rate,
                                    provider_config.adaptive_rate)
        self.retrier = Retrier(
            self.log, errors.classify, throttle_tries=5,
            throttle_delay=lambda attempt: min(10.0, 0.5 * 2 ** attempt),
            retry_after=errors.retry_after, max_retry_after=60.0)
        if listing_interval is None:
            listing_interval = max(1.0, 3.0 / rate) if rate else 1.0
        # Sized from the rate and the calls' measured latency.
        self.executor = ElasticExecutor(
            "ibmvpc-api-%s" % name, limiter_target(
                self.limiter, max(min(int(rate * 4), 8), 2) if rate else 8))
        self._setup: Optional[Setup] = None
        self._setup_lock = threading.Lock()
        self._images = SingleFlightTTLCache(IMAGE_TTL)
        self.images = ImageManager(self, poll_interval=poll_interval)
        # Resource groups made after the startup lookups (image groups).
        self._more_groups: dict = {}
        self.vms = SharedListing(
            "ibmvpc-vms-%s" % name, lambda: self._by_name(
                "instances", self.vpc.list_instances),
            self.log, interval=listing_interval, min_gap=listing_gap)
        self.fips = SharedListing(
            "ibmvpc-fips-%s" % name, lambda: self._by_name(
                "floating_ips", self.vpc.list_floating_ips),
            self.log, interval=listing_interval, min_gap=listing_gap)
        for listing in self.listings():
            listing.start()
        if warm:
            self._start_warming("ibmvpc")

    def listings(self) -> tuple:
        return (self.vms, self.fips)

    def rate_limiters(self) -> dict:
        return dict(api=self.limiter)

    def stop(self) -> None:
        self._stop_threads(self.listings(), self.executor)

    # Calls ----------------------------------------------------------------

    def submit(self, func, *args) -> concurrent.futures.Future:
        return self.submit_to(self.executor, func, *args)

    def call(self, what: str, func, *args, log=None, **kwargs):
        """One rate-limited API call (throttling retried); its result."""
        log = log or self.log

        def once():
            with self.limiter.limited(log.debug, what):
                return func(*args, **kwargs).get_result()
        return self.retrier.call(what, once, limiter=self.limiter)

    def list_all(self, key: str, func, **kwargs) -> list:
        """Every item of a paged VPC list; each page is one call."""
        from ibm_cloud_sdk_core import get_query_param
        items, start = [], None
        while True:
            page = self.call("List %s" % key, func, start=start, **kwargs)
            items.extend(page.get(key) or ())
            start = get_query_param((page.get("next") or {}).get("href"),
                                    "start") if page.get("next") else None
            if not start:
                return items

    def _by_name(self, key: str, func) -> dict:
        return {record["name"]: record for record in self.list_all(key, func)}

    # Startup lookups ------------------------------------------------------

    def setup(self) -> Setup:
        """The startup lookups, made once (blocks; worker threads only)."""
        with self._setup_lock:
            if self._setup is None:
                self._setup = look_up(self)
            return self._setup

    # Instances ------------------------------------------------------------

    def group_name(self, record: dict) -> Optional[str]:
        """The name of a record's resource group."""
        ref = record.get("resource_group") or {}
        if ref.get("name"):
            return ref["name"]
        # A reference without a name: by id, from the startup lookups.
        return self.setup().group_names.get(
            ref.get("id")) or self._more_groups.get(ref.get("id"))

    def remember_group(self, name: str, group_id: str) -> None:
        self._more_groups[group_id] = name

    def make_instance(self, record: dict,
                      fip: Optional[dict] = None) -> IbmInstance:
        return IbmInstance(record, self.group_name(record), fip,
                           self.provider.region, self._profile_quota)

    def list_instances(self):
        vms = self._recent(self.vms, "instance")
        fips = self._recent(self.fips, "floating IP")
        return [self.make_instance(record, fips.get(name))
                for name, record in vms.items.items()]

    def _recent(self, listing, what):
        return self._recent_snapshot(listing, what, LISTING_MAX_AGE)

    # Creating -------------------------------------------------------------

    def _translated(self, what: str, func, *args, creating=False, log=None,
                    **kwargs):
        try:
            return self.call(what, func, *args, log=log, **kwargs)
        except exceptions.NodepoolError:
            raise
        except Exception as e:
            (log or self.log).warning("%s failed: %s", what, e)
            raise errors.translate(e, what, creating=creating) from e

    def prepare_create(self, sm) -> Optional[dict]:
        """Look up what the instance needs; create its floating IP for a
        public pool (returned, else None)."""
        try:
            setup = self.setup()
        except exceptions.NodepoolError:
            raise
        except Exception as e:
            raise errors.translate(e, "Startup lookups", creating=True) from e
        sm.image = self.image_reference(sm.label, sm.image_external_id)
        if not sm.pool.public_ipv4:
            return None
        fip = self._translated(
            "Create floating IP %s for node %s" % (sm.hostname, sm.node_id),
            self.vpc.create_floating_ip, {
                "name": sm.hostname,
                "resource_group": {"id": setup.groups[pool_group(
                    self.provider.name, sm.pool.name)]},
                "zone": {"name": sm.pool.zone}},
            creating=True, log=sm.log)
        self.fips.when_newer(self.wake_runners)
        return fip

    def create_vm(self, sm) -> dict:
        setup = self.setup()
        pool = sm.pool
        body = {
            "name": sm.hostname,
            "profile": {"name": sm.label.profile},
            "resource_group": {"id": setup.groups[pool_group(
                self.provider.name, pool.name)]},
            "vpc": {"id": setup.vpc["id"]},
            "image": sm.image,
            "zone": {"name": pool.zone},
            "primary_network_interface": {
                "name": "eth0",
                "subnet": {"id": setup.subnets[pool.subnet]["id"]}},
            "boot_volume_attachment": {
                "volume": {"name": sm.hostname,
                           "profile": {"name": "general-purpose"}},
                "delete_volume_on_instance_delete": True},
        }
        image = self.provider.label_image(sm.label)
        if sm.label.cloud_image and image is not None and image.keys:
            body["keys"] = [{"id": self._key_id(setup, key)}
                            for key in image.keys]
        if sm.label.user_data:
            body["user_data"] = sm.label.user_data
        record = self._translated(
            "Create instance %s for node %s" % (sm.hostname, sm.node_id),
            self.vpc.create_instance, body, creating=True, log=sm.log)
        self.vms.when_newer(self.wake_runners)
        return record

    @staticmethod
    def _key_id(setup, name):
        key = setup.keys.get(name)
        if key is None:
            raise exceptions.LaunchStatusException("SSH key %s not found"
                                                   % name)
        return key["id"]

    def attach_fip(self, sm) -> dict:
        nic = sm.vm["primary_network_interface"]["id"]
        record = self._translated(
            "Attach floating IP %s to instance %s" % (sm.hostname,
                                                      sm.hostname),
            self.vpc.add_instance_network_interface_floating_ip,
            sm.vm["id"], nic, sm.fip["id"], creating=True, log=sm.log)
        self.fips.when_newer(self.wake_runners)
        return record

    # Images ---------------------------------------------------------------

    def _list_images(self) -> list:
        return self._images.get(("images",), lambda: self.list_all(
            "images", self.vpc.list_images))

    def image_reference(self, label, image_external_id) -> dict:
        """The ``image`` of an instance prototype for ``label``."""
        if label.diskimage:
            return {"id": image_external_id}
        image = self.provider.cloud_images[label.cloud_image]
        if image.image_id:
            return {"id": image.image_id}
        if image.image_href:
            return {"href": image.image_href}
        found = self.find_image(image)
        if found is None:
            raise exceptions.LaunchStatusException(
                "No image found for cloud image %s" % image.name)
        return {"id": found["id"]}

    def find_image(self, image) -> Optional[dict]:
        """The first listed image with ``image-name`` or matching
        ``image-filter`` (every key given must match)."""
        for record in self._list_images():
            if image.image_name is not None:
                if record.get("name") == image.image_name:
                    return record
            elif _filter_matches(image.image_filter, record):
                return record
        return None

    def label_ready(self, label) -> bool:
        if not label.cloud_image:
            return True
        image = self.provider.cloud_images.get(label.cloud_image)
        if image is None or not (image.image_name or image.image_filter):
            return True
        return self._cloud_image_found(label, self.find_image, image)

    def upload_image(self, provider_image, image_name, filename,
                     image_format, metadata, md5, sha256):
        """Upload through object storage; blocks (a builder thread).  The
        VPC name is made from the build and upload ids, not
        ``image_name``: names are how uploads are recognised."""
        external_id = self.images.upload(provider_image, filename,
                                         image_format, metadata)
        self._images.invalidate()
        return external_id

    def delete_image(self, external_id):
        self.images.delete(external_id)
        self._images.invalidate()

    def list_images(self):
        return self.images.list_images()

    # Deleting -------------------------------------------------------------

    def get_delete_state_machine(self, external_id, log):
        return IbmDeleteStateMachine(self, external_id, log)

    def delete_fip(self, fip_id: str, log=None) -> None:
        self._delete("floating IP", self.vpc.delete_floating_ip, fip_id, log)
        self.fips.when_newer(self.wake_runners)

    def delete_vm(self, vm_id: str, log=None) -> None:
        self._delete("instance", self.vpc.delete_instance, vm_id, log)
        self.vms.when_newer(self.wake_runners)

    def _delete(self, what, func, resource_id, log):
        try:
            self.call("Delete %s %s" % (what, resource_id), func, resource_id,
                      log=log)
        except Exception as e:
            if errors.classify(e) is errors.ErrorClass.NOT_FOUND:
                return
            (log or self.log).warning("Deleting %s %s failed: %s", what,
                                      resource_id, e)
            raise errors.translate(e, "Delete %s %s" % (
                what, resource_id)) from e

    # Leaks ----------------------------------------------------------------

    def list_resources(self):
        resources = []
        for key, func, rtype in (
                ("instances", self.vpc.list_instances, "instance"),
                ("floating_ips", self.vpc.list_floating_ips, "fip")):
            for record in self.list_all(key, func):
                if record.get("status") == "deleting":
                    continue
                metadata = node_metadata(record["name"],
                                         self.group_name(record))
                if metadata:
                    resources.append(Resource(metadata, rtype,
                                              record["name"]))
        try:
            resources.extend(self.images.resources())
        except Exception as e:
            # Instances and floating IPs are still swept.
            self.log.warning("Listing images and objects failed: %s", e)
        return resources

    def delete_resource(self, resource):
        if resource.type in ("image", "object"):
            self.images.delete_resource(resource)
            self._images.invalidate()
            return
        if resource.type == "fip":
            for record in self.list_all("floating_ips",
                                        self.vpc.list_floating_ips):
                if record["name"] == resource.id:
                    self.delete_fip(record["id"])
            return
        # An instance: the node delete machine also takes a floating IP
        # of the same name (the cleanup thread may block).
        sm = self.get_delete_state_machine(resource.id, self.log)
        deadline = time.monotonic() + DELETE_RESOURCE_TIMEOUT
        while not sm.complete:
            if time.monotonic() > deadline:
                raise exceptions.ServerDeleteTimeoutException(
                    "Timeout deleting leaked instance %s" % resource.id)
            sm.advance()
            if not sm.complete:
                time.sleep(0.1)

    # Quota ----------------------------------------------------------------

    def _profile_quota(self, profile: Optional[str]) -> QuotaInformation:
        """What an instance of ``profile`` uses.  IBM gives memory in GB;
        nodepool counts ram in MiB, so it is converted (nodepool 11 used
        the GB figure as is)."""
        try:
            record = self.setup().profiles.get(profile)
        except Exception as e:
            self.log.warning("Profile %s unknown: %s", profile, e)
            record = None
        if record is None:
            return QuotaInformation(instances=1)
        cores = (record.get("vcpu_count") or {}).get("value")
        memory = (record.get("memory") or {}).get("value")
        return QuotaInformation(
            cores=cores, instances=1,
            ram=None if memory is None else int(memory * 1024))

    def get_quota_for_label(self, label) -> QuotaInformation:
        return self._profile_quota(label.profile)

    def get_quota_limits(self) -> QuotaInformation:
        # The VPC API reports no account limits: the provider's quota.
        return QuotaInformation(default=math.inf, **dict(
            self.provider.quota))


def _filter_matches(wanted, record: dict) -> bool:
    """Whether an image record matches an ``image-filter``."""
    if not wanted:
        return False
    for key in ("owner_type", "status"):
        if wanted.get(key) is not None and record.get(key) != wanted[key]:
            return False
    system = record.get("operating_system") or {}
    for key, value in (wanted.get("operating_system") or {}).items():
        if value is not None and system.get(key) != value:
            return False
    return True
