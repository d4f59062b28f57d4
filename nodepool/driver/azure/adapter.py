# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The Azure adapter: VMs, quota and leak cleanup for one provider.

* Credentials: a service principal from the ``auth-path`` JSON file
  (``clientId``, ``clientSecret``, ``tenantId``, ``subscriptionId``; the
  optional ``activeDirectoryEndpointUrl`` and
  ``resourceManagerEndpointUrl`` of ``az ad sp create-for-rbac --sdk-auth``
  files select another cloud) through azure-identity; the clients are the
  azure-mgmt compute, network and resource ones.
* Every ARM call (each page of a list too) waits on one
  :class:`RateLimiter` at the provider's ``rate`` (adaptive unless
  ``adaptive-rate: false``); so do azure-core's own retries of a call,
  and their 429 answers reach the limiter
  (:mod:`~nodepool.driver.azure.pacing`).  PUTs and DELETEs run in
  a small thread pool and are sent without the SDK's pollers
  (``polling=False``): a poller would start a thread per operation that
  polls outside the rate limit.  What became of them is read from shared
  listings instead: one list call per resource type (VMs, NICs, public
  IPs) serves every state machine, and only runs while a machine waits.
* Lookups that rarely change (resource SKUs, usage limits, the subnet,
  image filters) are cached; concurrent misses share one call.

The node's resources and state machines are in ``statemachines``; image
upload, delete and listing for the builder in ``images``.  The adapter
class is assembled from mixins: the bodies of VM PUTs (``bodies``), quota
(``quota``) and leak cleanup (``cleanup``).
"""

import concurrent.futures
import json
import logging
import threading
from typing import Optional
from urllib.parse import urlsplit

from nodepool import exceptions
from nodepool.driver.listing import SharedListing
from nodepool.driver.azure import errors
from nodepool.driver.azure.bodies import AzureBodyMixin
from nodepool.driver.azure.cleanup import AzureCleanupMixin
from nodepool.driver.azure.images import UPLOAD_TIMEOUT, ImageManager
from nodepool.driver.azure.pacing import LimiterPolicy
from nodepool.driver.azure.quota import AzureQuotaMixin
from nodepool.driver.azure.statemachines import (
    AzureCreateStateMachine, AzureDeleteStateMachine, AzureInstance, as_dict,
    nic_name, pip_name)
from nodepool.driver.elastic import ElasticExecutor, limiter_target
from nodepool.driver.lazycache import SingleFlightTTLCache
from nodepool.driver.ratelimit import make_limiter
from nodepool.driver.statemachine.cloud import CloudAdapter

PUBLIC_ARM = "https://management.azure.com"
QUOTA_TTL = 300.0
SKU_TTL = 24 * 3600.0
IMAGE_TTL = 300.0
# Quota accounting accepts a VM listing this old before asking for one.
LISTING_MAX_AGE = 10.0


def worker_count(rate: Optional[float]) -> int:
    """Smallest size of the API thread pool, which grows when the rate
    times the calls' latency needs more (:mod:`nodepool.driver.elastic`)."""
    if not rate:
        return 8
    return max(min(int(rate * 4), 8), 2)


class AzureClients:
    """The azure-mgmt clients of one provider (tests may build their own).

    azure-mgmt clients are thread-safe; one set serves every thread.
    """

    def __init__(self, compute, network, resource, subscription_id: str,
                 credential=None):
        self.compute = compute
        self.network = network
        self.resource = resource
        self.subscription_id = subscription_id
        self.credential = credential

    @classmethod
    def from_auth_file(cls, path: str, retry_total: int = 3,
                       **client_kwargs) -> "AzureClients":
        # Imported here: the SDKs are only needed once a provider runs.
        from azure.identity import AzureAuthorityHosts, ClientSecretCredential
        from azure.mgmt.compute import ComputeManagementClient
        from azure.mgmt.network import NetworkManagementClient
        from azure.mgmt.resource.resources import ResourceManagementClient

        with open(path) as f:
            auth = json.load(f)
        missing = [k for k in ("clientId", "clientSecret", "tenantId",
                               "subscriptionId") if not auth.get(k)]
        if missing:
            raise exceptions.ConfigError(
                "Azure auth file %s lacks %s" % (path, ", ".join(missing)))
        credential_args = {}
        authority = (auth.get("activeDirectoryEndpointUrl") or "").rstrip("/")
        if authority:
            host = urlsplit(authority).netloc or authority
            credential_args["authority"] = authority
            known = {getattr(AzureAuthorityHosts, name) for name in
                     dir(AzureAuthorityHosts) if name.isupper()}
            if host not in known:
                # A private cloud (or a test double): no instance
                # discovery against login.microsoftonline.com.
                credential_args["disable_instance_discovery"] = True
        credential = ClientSecretCredential(
            auth["tenantId"], auth["clientId"], auth["clientSecret"],
            **credential_args)
        base_url = (auth.get("resourceManagerEndpointUrl")
                    or PUBLIC_ARM).rstrip("/")
        kwargs = dict(base_url=base_url,
                      credential_scopes=[base_url + "/.default"],
                      retry_total=retry_total)
        kwargs.update(client_kwargs)
        subscription = auth["subscriptionId"]
        return cls(ComputeManagementClient(credential, subscription, **kwargs),
                   NetworkManagementClient(credential, subscription, **kwargs),
                   ResourceManagementClient(credential, subscription,
                                            **kwargs),
                   subscription, credential)

    def close(self) -> None:
        for client in (self.compute, self.network, self.resource,
                       self.credential):
            close = getattr(client, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass


class AzureAdapter(AzureBodyMixin, AzureQuotaMixin, AzureCleanupMixin,
                   CloudAdapter):
    """Adapter for one ``driver: azure`` provider.

    :param clients: an :class:`AzureClients`; made from the auth file when
        omitted, with azure-core's retries paced by the rate limiter
        (:mod:`~nodepool.driver.azure.pacing`) and ``client_options``
        (keyword arguments of the azure-mgmt clients, e.g.
        ``read_timeout``).
    :param listing_interval: seconds between list calls of a resource type
        while some machine waits on it (early refreshes follow each PUT
        and DELETE); default from the rate.
    :param listing_gap: shortest time between two list calls of a type.
    :param poll_interval: seconds between polls of image upload steps.
    """

    create_state_machine_class = AzureCreateStateMachine

    def __init__(self, provider_config, clients: Optional[AzureClients] = None,
                 client_options: Optional[dict] = None,
                 listing_interval: Optional[float] = None,
                 listing_gap: float = 0.2, warm: bool = True,
                 poll_interval: float = 5.0,
                 upload_timeout: float = UPLOAD_TIMEOUT):
        super().__init__(provider_config)
        name = provider_config.name
        self.log = logging.getLogger("nodepool.driver.azure.%s" % name)
        self.resource_group = provider_config.resource_group
        self.location = provider_config.location
        rate = provider_config.rate
        self.limiter = make_limiter("azure-%s" % name, rate,
                                    provider_config.adaptive_rate)
        if clients is None:
            clients = AzureClients.from_auth_file(
                provider_config.auth_path,
                per_retry_policies=[LimiterPolicy(self.limiter)],
                **(client_options or {}))
        self.clients = clients
        self.compute = clients.compute
        self.network = clients.network
        if listing_interval is None:
            listing_interval = max(1.0, 3.0 / rate) if rate else 1.0
        self.executor = ElasticExecutor(
            "azure-api-%s" % name,
            limiter_target(self.limiter, worker_count(rate)))
        self._lookups = SingleFlightTTLCache(SKU_TTL)
        self._quota_cache = SingleFlightTTLCache(QUOTA_TTL)
        self._image_cache = SingleFlightTTLCache(IMAGE_TTL)
        self._group_lock = threading.Lock()
        self._group_ready = False
        self.images = ImageManager(self, poll_interval=poll_interval,
                                   upload_timeout=upload_timeout)
        self.vms = SharedListing(
            "azure-vms-%s" % name, lambda: self._fetch(
                "virtual machines", self.compute.virtual_machines.list),
            self.log, interval=listing_interval, min_gap=listing_gap)
        self.nics = SharedListing(
            "azure-nics-%s" % name, lambda: self._fetch(
                "network interfaces", self.network.network_interfaces.list),
            self.log, interval=listing_interval, min_gap=listing_gap)
        self.pips = SharedListing(
            "azure-pips-%s" % name, lambda: self._fetch(
                "public IPs", self.network.public_ip_addresses.list),
            self.log, interval=listing_interval, min_gap=listing_gap)
        for listing in self.listings():
            listing.start()
        if warm:
            self._start_warming("azure")

    def listings(self) -> tuple:
        return (self.vms, self.nics, self.pips)

    def rate_limiters(self) -> dict:
        return dict(api=self.limiter)

    def stop(self) -> None:
        self._stop_threads(self.listings(), self.executor)
        self.clients.close()

    # Calls ----------------------------------------------------------------

    def submit(self, func, *args) -> concurrent.futures.Future:
        """Run ``func(*args)`` in the API pool; the runners are woken when
        it is done.  Never blocks."""
        return self.submit_to(self.executor, func, *args)

    def call(self, what: str, func, *args, log=None, **kwargs):
        """One rate-limited ARM call, logged with its delay and duration."""
        log = log or self.log
        with self.limiter.limited(log.debug, what):
            return func(*args, **kwargs)

    def list_all(self, what: str, func, *args, **kwargs) -> list:
        """Every item of a paged list call as a wire-format dict; each page
        is one rate-limited call."""
        items = []
        pages = func(*args, **kwargs).by_page()
        first = True
        while first or pages.continuation_token:
            first = False
            with self.limiter.limited(self.log.debug, "List " + what):
                try:
                    page = next(pages)
                except StopIteration:
                    break
                items.extend(as_dict(item) for item in page)
        return items

    def _fetch(self, what: str, func) -> dict:
        """A listing of the resource group for a SharedListing: records by
        lower-case name (ARM names are case-insensitive)."""
        return {record["name"].lower(): record for record in
                self.list_all(what, func, self.resource_group)}

    def _refreshed(self, *listings) -> None:
        """A PUT or DELETE just returned: ask for listings that see it and
        wake the runners once they are in."""
        for listing in listings:
            listing.when_newer(self.wake_runners)

    # Instances ------------------------------------------------------------

    def make_instance(self, vm: dict, nic=None, pips=()) -> AzureInstance:
        return AzureInstance(
            vm, nic, tuple(p for p in pips if p), self._instance_quota)

    def list_instances(self):
        snapshot = self._recent_snapshot(self.vms, "VM", LISTING_MAX_AGE)
        nics = self.nics.snapshot()
        pips = self.pips.snapshot()
        instances = []
        for record in snapshot.items.values():
            nic = nics.get(nic_name(record["name"]).lower())
            found = [pips.get(pip_name(record["name"], v).lower())
                     for v in ("v4", "v6")]
            instances.append(self.make_instance(record, nic, found))
        return instances

    # Creating -------------------------------------------------------------

    def ensure_group(self, log) -> None:
        """Create the resource group once (a no-op PUT if it exists)."""
        with self._group_lock:
            if self._group_ready:
                return
            self.call("Create resource group %s" % self.resource_group,
                      self.clients.resource.resource_groups.create_or_update,
                      self.resource_group,
                      {"location": self.provider.resource_group_location},
                      log=log)
            self._group_ready = True

    def _put(self, sm, what: str, operations, name: str, body: dict,
             listing) -> dict:
        """PUT one resource of ``sm``'s node without waiting for it."""
        label = "%s %s for node %s" % (what, name, sm.node_id)
        try:
            self.ensure_group(sm.log)
            poller = self.call(
                "Create " + label, operations.begin_create_or_update,
                self.resource_group, name, body, polling=False, log=sm.log)
            record = as_dict(poller.result())
        except exceptions.NodepoolError:
            raise
        except Exception as e:
            sm.log.warning("Creating %s failed: %s", label, e)
            raise errors.translate(e, "Creating " + label,
                                   creating=True) from e
        self._refreshed(listing)
        return record

    def create_public_ips(self, sm) -> dict:
        ids = {}
        for version in sm.versions:
            body = {
                "location": self.location,
                "tags": self._tags(sm),
                "sku": {"name": "Standard", "tier": "Regional"},
                "properties": {
                    "publicIPAllocationMethod": "Static",
                    "publicIPAddressVersion": "IPv4" if version == "v4"
                    else "IPv6",
                },
            }
            if sm.az:
                body["zones"] = [sm.az]
            record = self._put(sm, "public IP",
                               self.network.public_ip_addresses,
                               pip_name(sm.hostname, version), body,
                               self.pips)
            ids[version] = record.get("id")
        return ids

    def subnet_id(self) -> str:
        """The subnet NICs go on: ``subnet-id`` or the ``network``'s."""
        if self.provider.subnet_id:
            return self.provider.subnet_id
        network = self.provider.network
        if network is None:
            raise exceptions.LaunchNodepoolException(
                "Provider %s has neither subnet-id nor network"
                % self.provider.name)

        def load():
            subnet = self.call(
                "Get subnet %s/%s" % (network.network, network.subnet),
                self.network.subnets.get, network.resource_group,
                network.network, network.subnet)
            return as_dict(subnet)["id"]
        return self._lookups.get(("subnet",), load)

    def create_nic(self, sm) -> str:
        try:
            subnet = self.subnet_id()
        except exceptions.NodepoolError:
            raise
        except Exception as e:
            raise errors.translate(e, "Looking up the subnet",
                                   creating=True) from e
        configs = []
        pool = sm.pool
        for version, wanted in (("v4", pool.ipv4), ("v6", pool.ipv6)):
            if not wanted:
                continue
            props = {
                "privateIPAddressVersion": "IPv4" if version == "v4"
                else "IPv6",
                "privateIPAllocationMethod": "Dynamic",
                "subnet": {"id": subnet},
                "primary": not configs,
            }
            pip = sm.pip_ids.get(version)
            if pip:
                props["publicIPAddress"] = {"id": pip}
            configs.append({"name": "%s-%s-config" % (sm.hostname, version),
                            "properties": props})
        body = {"location": self.location, "tags": self._tags(sm),
                "properties": {"ipConfigurations": configs}}
        record = self._put(sm, "NIC", self.network.network_interfaces,
                           nic_name(sm.hostname), body, self.nics)
        return record["id"]

    def create_vm(self, sm) -> dict:
        body = self.vm_body(sm)
        return self._put(sm, "VM", self.compute.virtual_machines, sm.hostname,
                         body, self.vms)

    def vm_statuses(self, name: str) -> list:
        """The statuses of a VM's instance view (why it failed)."""
        try:
            view = self.call("Instance view of VM %s" % name,
                             self.compute.virtual_machines.instance_view,
                             self.resource_group, name)
        except Exception as e:
            self.log.warning("Instance view of VM %s: %s", name, e)
            return []
        return as_dict(view).get("statuses") or []

    # Deleting -------------------------------------------------------------

    def get_delete_state_machine(self, external_id, log):
        return AzureDeleteStateMachine(self, external_id, log)

    def _operations(self, kind: str):
        return {
            "virtualMachines": self.compute.virtual_machines,
            "disks": self.compute.disks,
            "images": self.compute.images,
            "networkInterfaces": self.network.network_interfaces,
            "publicIPAddresses": self.network.public_ip_addresses,
        }[kind]

    def delete_one(self, kind: str, name: str, log=None) -> bool:
        """DELETE one resource without waiting; False if it was gone."""
        what = "Delete %s %s" % (kind, name)
        try:
            poller = self.call(what, self._operations(kind).begin_delete,
                               self.resource_group, name, polling=False,
                               log=log)
            poller.result()
        except Exception as e:
            if errors.classify(e) is errors.ErrorClass.NOT_FOUND:
                return False
            (log or self.log).warning("%s failed: %s", what, e)
            raise errors.translate(e, what) from e
        return True

    def delete_resources(self, targets: list) -> None:
        """DELETE ``[(kind, name)...]`` in order (missing ones are fine),
        then ask for listings that show the result."""
        # Machines wait for VMs and NICs to go, not for the rest.
        listings = {"virtualMachines": self.vms,
                    "networkInterfaces": self.nics}
        touched = set()
        for kind, name in targets:
            self.delete_one(kind, name)
            if kind in listings:
                touched.add(listings[kind])
        self._refreshed(*touched)

    # Labels and images ----------------------------------------------------

    def label_ready(self, label) -> bool:
        if not label.cloud_image:
            return True
        image = self.provider.cloud_images.get(label.cloud_image)
        if image is None or not image.image_filter:
            return True
        return self._cloud_image_found(label, self.resolve_image_filter,
                                       image)

    def upload_image(self, provider_image, image_name, filename,
                     image_format, metadata, md5, sha256):
        """Upload a VHD as managed image ``image_name`` (its external id);
        blocks (a builder thread)."""
        external_id = self.images.upload(provider_image, image_name,
                                         filename, metadata)
        self._image_cache.invalidate()
        return external_id

    def delete_image(self, external_id):
        self.images.delete(external_id)
        self._image_cache.invalidate()

    def list_images(self):
        return self.images.list_images()
