# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The GCE adapter: instances, quota and leak cleanup for one provider.

* Clients: :class:`~nodepool.driver.gce.client.GceClients` (the
  google-cloud-compute REST clients, Application Default Credentials);
  the driver makes them, tests pass their own (anonymous credentials, a
  loopback endpoint).
* Every API call, each page of a list and each retry included, waits on
  one rate limiter at the provider's ``rate`` (calls per second; adaptive
  with ``adaptive-rate``).  Throttling answers (429 ``rateLimitExceeded``)
  are retried after Retry-After by the shared
  :class:`~nodepool.driver.retry.Retrier`, also through the limiter.
* Inserts, deletes and operation polls run in a small thread pool; the
  state machines read instance states from one shared, paged listing of
  the zone that only runs while a machine waits.
* Lookups that rarely change are cached: machine types a day (a record
  without ``guestCpus`` or ``memoryMb`` raises KeyError and clears the
  whole machine-type cache, as nodepool 11 does), image families an hour,
  the region's quotas five minutes.

Ownership is nodepool's three metadata items on the instance
(``nodepool_node_id``, ``nodepool_pool_name``,
``nodepool_provider_name``), not GCE labels.
"""

import concurrent.futures
import logging
from typing import Optional

from nodepool import exceptions
from nodepool.driver.elastic import ElasticExecutor, limiter_target
from nodepool.driver.errors import ErrorClass
from nodepool.driver.gce import errors
from nodepool.driver.gce.client import GceClients
from nodepool.driver.gce.statemachines import (
    GceCreateStateMachine, GceDeleteStateMachine, GceInstance)
from nodepool.driver.lazycache import SingleFlightTTLCache
from nodepool.driver.listing import SharedListing
from nodepool.driver.quota import QuotaInformation
from nodepool.driver.ratelimit import make_limiter
from nodepool.driver.statemachine.adapter import Resource
from nodepool.driver.statemachine.cloud import CloudAdapter

MACHINE_TYPE_TTL = 24 * 3600.0
IMAGE_TTL = 3600.0
QUOTA_TTL = 300.0
# Quota accounting accepts an instance listing this old.
LISTING_MAX_AGE = 10.0


def worker_count(rate: Optional[float]) -> int:
    """Threads for inserts, deletes and operation polls: enough to keep
    the limiter busy while calls take a few seconds, bounded."""
    if not rate:
        return 8
    return max(min(int(rate * 4), 8), 2)


class GceAdapter(CloudAdapter):
    """Adapter for one ``driver: gce`` provider.

    :param clients: a :class:`GceClients`; Application Default
        Credentials and the public endpoint when None.
    :param listing_interval: seconds between instance listings while a
        machine waits (early refreshes follow each insert and delete);
        default from the rate.
    :param listing_gap: shortest time between two listings.
    :param operation_interval: seconds before the first poll of a
        machine's zone operation (each later wait is twice as long, up to
        30 seconds).
    :param retrier: a :class:`~nodepool.driver.retry.Retrier` (tests
        pass one that does not sleep).
    """

    create_state_machine_class = GceCreateStateMachine

    def __init__(self, provider_config, clients: Optional[GceClients] = None,
                 listing_interval: Optional[float] = None,
                 listing_gap: float = 0.2,
                 operation_interval: float = 2.0, warm: bool = True,
                 retrier=None):
        super().__init__(provider_config)
        name = provider_config.name
        self.log = logging.getLogger("nodepool.driver.gce.%s" % name)
        self.project = provider_config.project
        self.zone = provider_config.zone
        self.clients = clients if clients is not None else GceClients()
        rate = provider_config.rate
        self.limiter = make_limiter("gce-%s" % name, rate,
                                    provider_config.adaptive_rate)
        self.retrier = retrier or errors.make_retrier(self.log)
        self.operation_interval = operation_interval
        if listing_interval is None:
            listing_interval = max(1.0, 3.0 / rate) if rate else 1.0
        self.executor = ElasticExecutor(
            "gce-api-%s" % name,
            limiter_target(self.limiter, worker_count(rate)))
        self._machine_types = SingleFlightTTLCache(MACHINE_TYPE_TTL)
        self._images = SingleFlightTTLCache(IMAGE_TTL)
        self._quota_cache = SingleFlightTTLCache(QUOTA_TTL)
        self.instances = SharedListing(
            "gce-instances-%s" % name, self._fetch_instances, self.log,
            interval=listing_interval, min_gap=listing_gap)
        self.instances.start()
        if warm:
            self._start_warming("gce")

    def listings(self) -> tuple:
        return (self.instances,)

    def rate_limiters(self) -> dict:
        return dict(api=self.limiter)

    def stop(self) -> None:
        self._stop_threads(self.listings(), self.executor)
        self.clients.close()

    # Calls ----------------------------------------------------------------

    def submit(self, func, *args) -> concurrent.futures.Future:
        """Run ``func(*args)`` in the API pool; never blocks."""
        return self.submit_to(self.executor, func, *args)

    def call(self, what: str, func, *args, log=None):
        """One API call through the rate limiter, throttling retried."""
        log = log or self.log

        def attempt():
            with self.limiter.limited(log.debug, what):
                return func(*args)
        return self.retrier.call(what, attempt, limiter=self.limiter)

    def _fetch_instances(self) -> dict:
        """Every instance of the zone by name, page by page."""
        found = {}
        token = None
        while True:
            items, token = self.call(
                "List instances", self.clients.list_instances_page,
                self.project, self.zone, token)
            for record in items:
                found[record["name"]] = record
            if not token:
                return found

    # Instances ------------------------------------------------------------

    def make_instance(self, record: dict) -> GceInstance:
        return GceInstance(record, self._instance_quota)

    def list_instances(self):
        snapshot = self._recent_snapshot(self.instances, "instance",
                                         LISTING_MAX_AGE)
        return [self.make_instance(r) for r in snapshot.items.values()]

    def insert_instance(self, sm) -> dict:
        """Send the insert of ``sm``'s instance (a worker thread); its
        zone operation."""
        what = "Insert instance %s for node %s" % (sm.hostname, sm.node_id)
        try:
            body = self.instance_body(sm)
            op = self.call(what, self.clients.insert_instance, self.project,
                           self.zone, body, log=sm.log)
        except exceptions.NodepoolError:
            raise
        except Exception as e:
            sm.log.warning("%s failed: %s", what, errors.describe(e))
            raise errors.translate(e, what, creating=True) from e
        self.instances.when_newer(self.wake_runners)
        return op

    def instance_body(self, sm) -> dict:
        label = sm.label
        image = self.provider.cloud_images[label.cloud_image]
        if image.image_id:
            source = image.image_id
        else:
            source = self.family_image(image)["selfLink"]
        machine_type = self.machine_type(label.instance_type)["selfLink"]
        items = [{"key": k, "value": v} for k, v in sm.metadata.items()]
        if image.key:
            items.append({"key": "ssh-keys",
                          "value": "%s:%s" % (image.username, image.key)})
        return {
            "name": sm.hostname,
            "machineType": machine_type,
            "disks": [{
                "boot": True,
                "autoDelete": True,
                "initializeParams": {
                    "sourceImage": source,
                    "diskType": "zones/%s/diskTypes/%s" % (
                        self.zone, label.volume_type),
                    "diskSizeGb": str(label.volume_size),
                },
            }],
            "networkInterfaces": [{
                "network": "global/networks/default",
                "accessConfigs": [{"type": "ONE_TO_ONE_NAT",
                                   "name": "External NAT"}],
            }],
            "serviceAccounts": [],
            "metadata": {"items": items},
        }

    def get_operation(self, name: str) -> dict:
        what = "Get operation %s" % name
        try:
            return self.call(what, self.clients.get_operation, self.project,
                             self.zone, name)
        except Exception as e:
            raise errors.translate(e, what) from e

    # Deleting -------------------------------------------------------------

    def get_delete_state_machine(self, external_id, log):
        return GceDeleteStateMachine(self, external_id, log)

    def delete_instance(self, name: str, log=None) -> dict:
        """Send the delete; its zone operation.  Raises NotFound when the
        instance does not exist."""
        what = "Delete instance %s" % name
        try:
            op = self.call(what, self.clients.delete_instance, self.project,
                           self.zone, name, log=log)
        except Exception as e:
            if errors.classify(e) is not ErrorClass.NOT_FOUND:
                (log or self.log).warning("%s failed: %s", what,
                                          errors.describe(e))
            raise errors.translate(e, what) from e
        self.instances.when_newer(self.wake_runners)
        return op

    # Leaks ----------------------------------------------------------------

    def list_resources(self):
        # nodepool 11 leaves TERMINATED instances out; so do we.
        snapshot = self._recent_snapshot(self.instances, "instance",
                                         LISTING_MAX_AGE)
        return [Resource(GceInstance(r).metadata, "instance", r["name"])
                for r in snapshot.items.values()
                if r.get("status") != "TERMINATED"]

    def delete_resource(self, resource):
        try:
            self.delete_instance(resource.id)
        except exceptions.NotFound:
            pass

    # Quota ----------------------------------------------------------------

    def machine_type(self, name: str) -> dict:
        """The machine type record (cached a day)."""
        return self._machine_types.get(name, lambda: self.call(
            "Get machine type %s" % name, self.clients.get_machine_type,
            self.project, self.zone, name))

    def machine_type_quota(self, name: str) -> QuotaInformation:
        """What an instance of machine type ``name`` uses.

        A record lacking ``guestCpus`` or ``memoryMb`` raises KeyError and
        empties the machine-type cache, so the next lookup asks again.
        """
        record = self.machine_type(name)
        try:
            cores, ram = record["guestCpus"], record["memoryMb"]
        except KeyError:
            self._machine_types.invalidate()
            raise
        return QuotaInformation(cores=cores, ram=ram, instances=1)

    def _instance_quota(self, name: str) -> QuotaInformation:
        try:
            return self.machine_type_quota(name)
        except Exception as e:
            self.log.warning("Quota of machine type %s unknown: %s", name, e)
            return QuotaInformation(instances=1)

    def get_quota_for_label(self, label) -> QuotaInformation:
        try:
            return self.machine_type_quota(label.instance_type)
        except KeyError:
            raise
        except Exception as e:
            if errors.classify(e) is ErrorClass.NOT_FOUND:
                raise exceptions.RuntimeConfigurationException(
                    "Machine type %s is not offered in %s" % (
                        label.instance_type, self.zone)) from e
            raise

    def get_quota_limits(self) -> QuotaInformation:
        def load():
            region = self.call("Get region %s" % self.provider.region,
                               self.clients.get_region, self.project,
                               self.provider.region)
            limits = {}
            for quota in region.get("quotas") or ():
                if quota.get("metric") == "CPUS":
                    limits["cores"] = int(quota.get("limit", 0))
                elif quota.get("metric") == "INSTANCES":
                    limits["instances"] = int(quota.get("limit", 0))
            return QuotaInformation(default=float("inf"), **limits)
        return self._quota_cache.get("limits", load)

    # Images ---------------------------------------------------------------

    def family_image(self, image) -> dict:
        """The newest image of a cloud image's family (cached an hour)."""
        key = (image.image_project, image.image_family)
        return self._images.get(key, lambda: self.call(
            "Get image family %s/%s" % key,
            self.clients.get_image_from_family, *key))

    def label_ready(self, label) -> bool:
        image = self.provider.cloud_images.get(label.cloud_image)
        if image is None or image.image_id:
            return True
        return self._cloud_image_found(label, self.family_image, image)
