# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The AWS adapter: instances, quota and leak cleanup for one provider.

The class is assembled from parts: the arguments of creates
(:mod:`~nodepool.driver.aws.launch`), quota (:mod:`~nodepool.driver.aws.quota`),
image import (:mod:`~nodepool.driver.aws.images`) and fleet launch
templates (:mod:`~nodepool.driver.aws.templates`).

Notes on rate limits, which shape most of this module:

* EC2 throttles per account and region with token buckets; the default
  for mutating calls like RunInstances is about 2 per second.  All of
  them (run, terminate, allocate/release hosts, tags, images) go through
  one :class:`RateLimiter` at the provider's ``rate``; describe calls go
  through a second one at ten times that, since their bucket is larger.
  Service Quotas has its own, small, limit.  With ``adaptive-rate`` (the
  default) those rates are ceilings and the three limiters share one
  :class:`AdaptiveRateGroup`: a throttling answer slows them all down.
* RunInstances takes more than a second to return.  Called from the
  runner thread, that would cap a provider at under one instance per
  second whatever the rate, so creates run in a thread pool
  (:class:`~nodepool.driver.elastic.ElasticExecutor`) that grows to
  rate times the calls' measured latency, at least
  ``max(1, min(8, int(rate * 4)))`` and at most 64 threads, and shrinks
  when idle; ``create-workers`` fixes its size instead.
* Instance state comes from one shared DescribeInstances listing, not a
  call per node, and terminations are batched 50 to a call, leaving the
  mutating budget to creates.
* Lookups (images, instance types, quotas) are cached and concurrent
  misses share one call (:class:`SingleFlightTTLCache`).
"""

import concurrent.futures
import logging
import time
from typing import Optional

from nodepool import exceptions
from nodepool.driver.aws import errors
from nodepool.driver.aws.images import ImageManager
from nodepool.driver.aws.launch import AwsLaunchMixin
from nodepool.driver.aws.quota import AwsQuotaMixin
from nodepool.driver.aws.templates import LaunchTemplates
from nodepool.driver.listing import BatchDeleter, SharedListing
from nodepool.driver.aws.statemachines import (
    AwsCreateStateMachine, AwsDeleteStateMachine, AwsInstance, tags_to_dict)
from nodepool.driver.lazycache import SingleFlightTTLCache
from nodepool.driver.elastic import (
    ElasticExecutor, fixed_target, limiter_target)
from nodepool.driver.ratelimit import provider_limiters
from nodepool.driver.statemachine.adapter import CloudImage, Resource
from nodepool.driver.statemachine.cloud import CloudAdapter

TERMINATE_BATCH = 50
IMAGE_TTL = 300.0
# DescribeImages page size (the most EC2 allows).
IMAGE_LIST_PAGE = 1000
INSTANCE_TYPE_TTL = 24 * 3600.0
SERVICE_QUOTA_TTL = 300.0
# A host allocation waits this long at most for the listing that shows
# its new host (same idea as the instance listing after a create).
CREATE_LISTING_WAIT = 2.0


def create_workers(rate: Optional[float], override: Optional[int]) -> int:
    """Size of the create thread pool for a provider."""
    if override:
        return max(1, int(override))
    if not rate:
        return 8
    return max(min(int(rate * 4), 8), 1)


class AwsClients:
    """The boto3 clients one provider uses.

    Tests build one from moto (or fakes); :meth:`from_session` makes the
    real ones.  boto3 clients are thread-safe, sessions are not: only the
    clients are shared.
    """

    def __init__(self, ec2, s3=None, ebs=None, quotas=None):
        self.ec2 = ec2
        self.s3 = s3
        self.ebs = ebs
        self.quotas = quotas

    @classmethod
    def from_session(cls, region: str, profile: Optional[str] = None,
                     pool_size: int = 20) -> "AwsClients":
        import boto3
        import botocore.config
        session = boto3.Session(region_name=region, profile_name=profile)
        # botocore's own retries are off: throttling and server errors are
        # classified and retried by the adapter (errors.make_retrier), under
        # its rate limiters and with logging.
        config = botocore.config.Config(
            max_pool_connections=pool_size,
            retries={"total_max_attempts": 1, "mode": "standard"})
        return cls(session.client("ec2", config=config),
                   session.client("s3", config=config),
                   session.client("ebs", config=config),
                   session.client("service-quotas", config=config))


class AwsAdapter(AwsLaunchMixin, AwsQuotaMixin, CloudAdapter):
    """Adapter for one ``driver: aws`` provider.

    :param clients: an :class:`AwsClients`; made from the provider's
        region and profile when omitted.
    :param listing_interval: seconds between DescribeInstances while some
        machine waits on an instance.
    """

    create_state_machine_class = AwsCreateStateMachine

    def __init__(self, provider_config, clients: Optional[AwsClients] = None,
                 listing_interval: float = 1.0, linger: float = 0.1,
                 image_poll_interval: float = 30.0, retrier=None,
                 warm: bool = True):
        super().__init__(provider_config)
        name = provider_config.name
        self.log = logging.getLogger("nodepool.driver.aws.%s" % name)
        self.region = provider_config.region_name
        if clients is None:
            clients = AwsClients.from_session(
                self.region, provider_config.profile_name)
        self.clients = clients
        self.ec2 = clients.ec2
        rate = provider_config.rate
        self.limiters = provider_limiters(
            "aws", name, dict(mutate=rate, read=rate * 10 if rate else None,
                              quota=rate),
            provider_config.adaptive_rate)
        self.mutate_limiter = self.limiters["mutate"]
        self.read_limiter = self.limiters["read"]
        self.quota_limiter = self.limiters["quota"]
        self.retrier = retrier or errors.make_retrier(self.log)
        self.workers = create_workers(
            rate, provider_config.create_workers)
        if provider_config.create_workers:
            target = fixed_target(self.workers)
        else:
            target = limiter_target(self.mutate_limiter, self.workers)
        self.create_executor = ElasticExecutor("aws-create-%s" % name,
                                               target)
        self._image_cache = SingleFlightTTLCache(IMAGE_TTL)
        self._type_cache = SingleFlightTTLCache(INSTANCE_TYPE_TTL)
        self._quota_cache = SingleFlightTTLCache(SERVICE_QUOTA_TTL)
        self._zone_cache = SingleFlightTTLCache(IMAGE_TTL)
        self.instances = SharedListing(
            "aws-instances-%s" % name, self._fetch_instances, self.log,
            interval=listing_interval)
        self.hosts = SharedListing(
            "aws-hosts-%s" % name, self._fetch_hosts, self.log,
            interval=listing_interval)
        self.instance_deleter = BatchDeleter(
            "aws-terminate-%s" % name, self._terminate_batch, self.log,
            batch_size=TERMINATE_BATCH, linger=linger,
            limiter=self.mutate_limiter)
        self.host_deleter = BatchDeleter(
            "aws-release-%s" % name, self._release_batch, self.log,
            batch_size=TERMINATE_BATCH, linger=linger,
            limiter=self.mutate_limiter)
        self.images = ImageManager(self, poll_interval=image_poll_interval)
        self.templates = LaunchTemplates(self, self._config_args)
        for thread in (self.instances, self.hosts, self.instance_deleter,
                       self.host_deleter):
            thread.start()
        if warm:
            # The first request would otherwise wait for every quota and
            # instance type lookup (Service Quotas pages come at `rate`).
            self._start_warming("aws")

    def listings(self) -> tuple:
        return (self.instances, self.hosts)

    def rate_limiters(self) -> dict:
        return dict(self.limiters)

    def stop(self) -> None:
        self.images.stop()
        self._stop_threads((self.instances, self.hosts,
                            self.instance_deleter, self.host_deleter),
                           self.create_executor)

    def _warm_caches(self) -> None:
        # Starting for the launcher: also make the fleet labels' launch
        # templates and delete this provider's unused ones.
        try:
            self.templates.sync()
        except Exception:
            self.log.exception("Syncing the launch templates failed")
        super()._warm_caches()

    # API call helpers ---------------------------------------------------

    def mutate(self, what: str, func, log=None, **kwargs):
        """A mutating call: rate limited, retried, logged."""
        log = log or self.log

        def once():
            with self.mutate_limiter.limited(log.debug, what):
                return func(**kwargs)
        return self.retrier.call(what, once, limiter=self.mutate_limiter)

    def read(self, what: str, func, **kwargs):
        """A describe/list call, under the read limiter."""
        def once():
            with self.read_limiter:
                return func(**kwargs)
        return self.retrier.call(what, once, limiter=self.read_limiter)

    def _paginate(self, what: str, func, key: str, **kwargs) -> list:
        items = []
        token = None
        while True:
            args = dict(kwargs)
            if token:
                args["NextToken"] = token
            response = self.read(what, func, **args)
            items.extend(response.get(key) or ())
            token = response.get("NextToken")
            if not token:
                return items

    # Listings -----------------------------------------------------------

    def _fetch_instances(self) -> dict:
        records = {}
        for reservation in self._paginate(
                "DescribeInstances", self.ec2.describe_instances,
                "Reservations"):
            for record in reservation.get("Instances") or ():
                records[record["InstanceId"]] = record
        return records

    def _fetch_hosts(self) -> dict:
        return {host["HostId"]: host for host in self._paginate(
            "DescribeHosts", self.ec2.describe_hosts, "Hosts")}

    def make_instance(self, record: dict, external_id=None) -> AwsInstance:
        return AwsInstance(record, self.region, self._instance_quota,
                           external_id=external_id)

    def list_instances(self):
        snapshot = self._recent_snapshot(self.instances, "instance")
        return [self.make_instance(record)
                for record in snapshot.items.values()
                if record.get("State", {}).get("Name") != "terminated"]

    # Creating -----------------------------------------------------------

    def submit_create(self, sm) -> concurrent.futures.Future:
        """Run the instance create for ``sm`` in the create pool.

        The returned future's result is the new instance id, set once a
        listing that started after RunInstances returned is available:
        the machine then usually finds its instance running on the pass
        that sees the future done, instead of one runner pass later.
        """
        return self.submit_to(self.create_executor, self._create_instance,
                              sm, listing=self.instances)

    def submit_host_allocation(self, sm) -> concurrent.futures.Future:
        return self.create_executor.submit(self._allocate_host, sm)

    def _create_instance(self, sm) -> str:
        what = "RunInstances for node %s (request %s)" % (
            sm.node_id, sm.request_id)
        try:
            if sm.label.fleet is not None:
                instance_id = self._create_fleet_instance(sm, what)
            else:
                args = self._run_instances_args(sm)
                response = self.mutate(what, self.ec2.run_instances,
                                       log=sm.log, **args)
                instance_id = response["Instances"][0]["InstanceId"]
        except exceptions.NodepoolError as e:
            sm.log.warning("%s failed: %s", what, e)
            raise
        except Exception as e:
            kind = errors.classify(e)
            sm.log.warning("%s failed (%s): %s", what, kind.value, e)
            raise errors.translate(e, what, creating=True) from e
        sm.log.info("Created instance %s for node %s (request %s)",
                    instance_id, sm.node_id, sm.request_id)
        return instance_id

    def _allocate_host(self, sm) -> str:
        what = "AllocateHosts for node %s (request %s)" % (
            sm.node_id, sm.request_id)
        args = dict(
            AvailabilityZone=sm.pool.availability_zone,
            InstanceType=sm.label.instance_type, Quantity=1,
            TagSpecifications=[{"ResourceType": "dedicated-host",
                                "Tags": self._tag_list(sm)}])
        try:
            response = self.mutate(what, self.ec2.allocate_hosts,
                                   log=sm.log, **args)
        except Exception as e:
            sm.log.warning("%s failed (%s): %s", what,
                           errors.classify(e).value, e)
            raise errors.translate(e, what, creating=True) from e
        host_id = response["HostIds"][0]
        sm.log.info("Allocated dedicated host %s for node %s", host_id,
                    sm.node_id)
        self.hosts.wait_newer(timeout=CREATE_LISTING_WAIT)
        return host_id

    # Deleting -----------------------------------------------------------

    def get_delete_state_machine(self, external_id, log):
        return AwsDeleteStateMachine(self, external_id, log)

    def _terminate_batch(self, instance_ids: list) -> dict:
        """One TerminateInstances call for up to 50 ids (the deleter has
        already waited on the rate limiter for it)."""
        failures = self._batch_call(
            "TerminateInstances", self.ec2.terminate_instances,
            "InstanceIds", instance_ids)
        self.instances.request_refresh()
        return failures

    def _release_batch(self, host_ids: list) -> dict:
        failures = self._batch_call("ReleaseHosts", self.ec2.release_hosts,
                                    "HostIds", host_ids)
        self.hosts.request_refresh()
        return failures

    def _batch_call(self, what: str, func, key: str, ids: list) -> dict:
        first = [True]

        def once(batch):
            # The deleter waited on the limiter for the first attempt.
            if first[0]:
                first[0] = False
                return func(**{key: batch})
            with self.mutate_limiter:
                return func(**{key: batch})

        label = "%s %s" % (what, ",".join(ids))
        start = time.monotonic()
        try:
            response = self.retrier.call(label, once, ids,
                                         limiter=self.mutate_limiter)
        except Exception as e:
            kind = errors.classify(e)
            if kind is not errors.ErrorClass.NOT_FOUND and \
                    kind is not errors.ErrorClass.BAD_REQUEST:
                self.log.warning("%s failed: %s", label, e)
                raise errors.translate(e, what) from e
            if len(ids) == 1:
                return {ids[0]: errors.translate(e, label)}
            # One bad id fails the whole call; find it one by one.
            self.log.info("%s: %s; retrying ids one by one", label,
                          errors.error_code(e))
            failures = {}
            for one in ids:
                try:
                    self.mutate("%s %s" % (what, one), func, **{key: [one]})
                except Exception as single:
                    failures[one] = errors.translate(
                        single, "%s %s" % (what, one))
            return failures
        self.log.info("%s for %d ids in %.2fs", what, len(ids),
                      time.monotonic() - start)
        failures = {}
        for item in (response or {}).get("Unsuccessful") or ():
            failures[item.get("ResourceId")] = exceptions.NodepoolError(
                "%s %s: %s" % (what, item.get("ResourceId"),
                               item.get("Error", {}).get("Message")))
        return failures

    # Labels and images --------------------------------------------------

    def label_ready(self, label) -> bool:
        if not label.cloud_image:
            return True
        return self._cloud_image_found(label, self.resolve_cloud_image,
                                       label.cloud_image)

    def upload_image(self, provider_image, image_name, filename,
                     image_format, metadata, md5, sha256):
        return self.images.upload(provider_image, image_name, filename,
                                  image_format, metadata)

    def delete_image(self, external_id):
        self.images.delete(external_id)

    def list_images(self):
        """The account's own AMIs (not public or shared ones), their tags
        as metadata; the snapshots behind them are not listed."""
        images = []
        for record in self._paginate(
                "DescribeImages", self.ec2.describe_images, "Images",
                Owners=["self"], MaxResults=IMAGE_LIST_PAGE):
            if record.get("State") == "deregistered":
                continue
            images.append(CloudImage(record["ImageId"], record.get("Name"),
                                     tags_to_dict(record.get("Tags"))))
        return images

    def get_console_log(self, label, external_id):
        instance_id = (external_id.get("instance")
                       if isinstance(external_id, dict) else external_id)
        response = self.read("GetConsoleOutput",
                             self.ec2.get_console_output,
                             InstanceId=instance_id)
        return response.get("Output", "")

    # Leak cleanup -------------------------------------------------------

    def list_resources(self):
        resources = []
        for record in self._fetch_instances().values():
            if record.get("State", {}).get("Name") == "terminated":
                continue
            resources.append(Resource(tags_to_dict(record.get("Tags")),
                                      "instance", record["InstanceId"]))
        for host in self._fetch_hosts().values():
            if host.get("State") in ("released",
                                     "released-permanent-failure"):
                continue
            resources.append(Resource(tags_to_dict(host.get("Tags")),
                                      "host", host["HostId"]))
        for volume in self._paginate("DescribeVolumes",
                                     self.ec2.describe_volumes, "Volumes"):
            if volume.get("State") == "deleting":
                continue
            resources.append(Resource(tags_to_dict(volume.get("Tags")),
                                      "volume", volume["VolumeId"]))
        for image in self.read("DescribeImages", self.ec2.describe_images,
                               Owners=["self"]).get("Images") or ():
            resources.append(Resource(tags_to_dict(image.get("Tags")),
                                      "ami", image["ImageId"]))
        for snapshot in self._paginate(
                "DescribeSnapshots", self.ec2.describe_snapshots,
                "Snapshots", OwnerIds=["self"]):
            resources.append(Resource(tags_to_dict(snapshot.get("Tags")),
                                      "snapshot", snapshot["SnapshotId"]))
        resources.extend(self.images.list_objects())
        return resources

    def delete_resource(self, resource):
        # Leaks are rare: immediate single calls, not the batch queue.
        kind, rid = resource.type, resource.id
        calls = {
            "instance": (self.ec2.terminate_instances,
                         {"InstanceIds": [rid]}),
            "host": (self.ec2.release_hosts, {"HostIds": [rid]}),
            "volume": (self.ec2.delete_volume, {"VolumeId": rid}),
            "ami": (self.ec2.deregister_image, {"ImageId": rid}),
            "snapshot": (self.ec2.delete_snapshot, {"SnapshotId": rid}),
        }
        if kind == "object":
            self.images.delete_object(rid)
            return
        func, args = calls[kind]
        try:
            self.mutate("Delete leaked %s %s" % (kind, rid), func, **args)
        except Exception as e:
            if errors.classify(e) is errors.ErrorClass.NOT_FOUND:
                return
            raise
