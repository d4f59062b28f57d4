# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""What moto lacks for the AWS driver, and call counting on top of it.

* :class:`FakeServiceQuotas`: ``list_service_quotas`` for ec2 and ebs
  (moto only knows VPC quotas).
* :class:`ImportingEc2`: an EC2 client wrapper adding ``import_snapshot``
  / ``import_image`` and their ``describe_*_tasks`` (NotImplemented in
  moto); the import makes a real moto snapshot (and AMI) so the rest of
  the flow runs against moto.
* :class:`CallRecorder`: counts calls by action on any boto3 client with
  botocore's event hooks, adds latency, and injects AWS errors
  (throttling, capacity, 5xx...) without touching the adapter.
"""

import collections
import itertools
import json
import os
import tempfile
import threading
import time

import boto3

# A handful of stock AMIs (ids and names as moto ships them) with distinct
# creation dates.  moto registers ~1300 AMIs in every new EC2 backend,
# which takes seconds per test; it reads MOTO_AMIS_PATH once, when its
# EC2 module is first imported, so this must run before that.
SMALL_AMIS = [
    ("ami-03cf127a", "Windows_Server-2016-English-Nano-Base-2017.10.13",
     "2017-10-13T00:00:00.000Z"),
    ("ami-000c540e28953ace2",
     "amzn-ami-minimal-hvm-2018.03.0.20181129-x86_64-ebs",
     "2018-11-29T00:00:00.000Z"),
    ("ami-0fc126a5457ec8751",
     "amzn-ami-minimal-hvm-2018.03.0.20231218.0-x86_64-ebs",
     "2023-12-18T00:00:00.000Z"),
]


def use_small_ami_set() -> None:
    """Point moto at :data:`SMALL_AMIS` (unless already configured)."""
    if "MOTO_AMIS_PATH" in os.environ:
        return
    amis = [{"ami_id": ami_id, "name": name, "description": name,
             "creation_date": created, "owner_id": "801119661308",
             "public": True, "virtualization_type": "hvm",
             "architecture": "x86_64", "state": "available",
             "platform": None, "root_device_type": "ebs",
             "root_device_name": "/dev/sda1", "sriov": "simple",
             "hypervisor": "xen"}
            for ami_id, name, created in SMALL_AMIS]
    # A marketplace image, to look up by product code.
    amis[0]["product_codes"] = ["np-product-1"]
    fd, path = tempfile.mkstemp(prefix="nodepool-moto-amis-",
                                suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(amis, f)
    os.environ["MOTO_AMIS_PATH"] = path


use_small_ami_set()

REGION = "us-west-2"

DEFAULT_QUOTAS = {
    "ec2": {
        "L-1216C47A": (
            "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) "
            "instances", 640.0),
        "L-34B43A08": (
            "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance "
            "Requests", 640.0),
        "L-43DA4232": ("Running On-Demand High Memory instances", 448.0),
        "L-DB2E81BA": ("Running On-Demand G and VT instances", 64.0),
        "L-8B27377A": ("Running Dedicated m5 Hosts", 2.0),
        "L-ABCD1234": ("Running Dedicated t3 Hosts", 1.0),
        "L-OTHER000": ("Some quota nodepool does not know", 5.0),
    },
    "ebs": {
        "L-7A658B76": ("Storage for General Purpose SSD (gp3) volumes, "
                       "in TiB", 50.0),
        "L-D18FCD1D": ("Storage for General Purpose SSD (gp2) volumes, "
                       "in TiB", 50.0),
        "L-8D977E7E": ("IOPS for Provisioned IOPS SSD (io2) volumes",
                       100000.0),
        "L-09BD8365": ("Storage for Provisioned IOPS SSD (io2) volumes, "
                       "in TiB", 10.0),
    },
}


class FakeServiceQuotas:
    """The part of the Service Quotas client the adapter uses.

    Answers ``page`` (2) quotas per page so pagination is exercised.  ``quotas``
    maps service -> code -> (name, value); ``calls`` counts requests.
    ``delay`` makes each call slow (to test coalescing).
    """

    def __init__(self, quotas=None, delay: float = 0.0, page: int = 2):
        self.quotas = {service: dict(codes) for service, codes in
                       (quotas or DEFAULT_QUOTAS).items()}
        self.calls = collections.Counter()
        self.delay = delay
        self.page = page
        self._lock = threading.Lock()

    def list_service_quotas(self, ServiceCode, NextToken=None,
                            MaxResults=100):
        with self._lock:
            self.calls[ServiceCode] += 1
        if self.delay:
            time.sleep(self.delay)
        items = sorted(self.quotas.get(ServiceCode, {}).items())
        start = int(NextToken or 0)
        size = min(self.page, MaxResults)
        page = items[start:start + size]
        response = {"Quotas": [
            {"ServiceCode": ServiceCode, "QuotaCode": code,
             "QuotaName": name, "Value": value}
            for code, (name, value) in page]}
        if start + size < len(items):
            response["NextToken"] = str(start + size)
        return response


class ImportingEc2:
    """A moto EC2 client plus the import-task calls moto lacks.

    Each task reports ``active`` on its first ``describe`` and
    ``completed`` on the next.  ``fail_next_imports`` makes that many
    import calls raise ``ResourceCountLimitExceeded`` first.
    """

    def __init__(self, ec2):
        self._ec2 = ec2
        self.tasks = {}
        self.task_tags = {}
        self.fail_next_imports = 0
        self._ids = itertools.count(1)
        self.import_calls = 0

    def __getattr__(self, name):
        return getattr(self._ec2, name)

    def _limit(self):
        self.import_calls += 1
        if self.fail_next_imports > 0:
            self.fail_next_imports -= 1
            raise client_error("ResourceCountLimitExceeded",
                               "too many concurrent imports", 400)

    def _snapshot(self):
        azs = self._ec2.describe_availability_zones()["AvailabilityZones"]
        volume = self._ec2.create_volume(
            Size=8, AvailabilityZone=azs[0]["ZoneName"])
        snapshot = self._ec2.create_snapshot(VolumeId=volume["VolumeId"])
        self._ec2.delete_volume(VolumeId=volume["VolumeId"])
        return snapshot["SnapshotId"]

    def import_snapshot(self, DiskContainer, TagSpecifications=(), **kw):
        self._limit()
        task_id = "import-snap-%d" % next(self._ids)
        self.tasks[task_id] = {"kind": "snapshot", "polls": 0,
                               "container": DiskContainer}
        self.task_tags[task_id] = TagSpecifications
        return {"ImportTaskId": task_id}

    def describe_import_snapshot_tasks(self, ImportTaskIds):
        result = []
        for task_id in ImportTaskIds:
            task = self.tasks[task_id]
            task["polls"] += 1
            detail = {"Status": "active"}
            if task["polls"] > 1:
                if "snapshot" not in task:
                    task["snapshot"] = self._snapshot()
                detail = {"Status": "completed",
                          "SnapshotId": task["snapshot"]}
            result.append({"ImportTaskId": task_id,
                           "SnapshotTaskDetail": detail})
        return {"ImportSnapshotTasks": result}

    def import_image(self, DiskContainers, TagSpecifications=(), **kw):
        self._limit()
        task_id = "import-ami-%d" % next(self._ids)
        self.tasks[task_id] = {"kind": "image", "polls": 0,
                               "containers": DiskContainers,
                               "architecture": kw.get("Architecture")}
        self.task_tags[task_id] = TagSpecifications
        return {"ImportTaskId": task_id}

    def describe_import_image_tasks(self, ImportTaskIds):
        result = []
        for task_id in ImportTaskIds:
            task = self.tasks[task_id]
            task["polls"] += 1
            entry = {"ImportTaskId": task_id, "Status": "active"}
            if task["polls"] > 1:
                if "image" not in task:
                    snapshot = self._snapshot()
                    image = self._ec2.register_image(
                        Name="import-%s" % task_id,
                        RootDeviceName="/dev/sda1",
                        BlockDeviceMappings=[{
                            "DeviceName": "/dev/sda1",
                            "Ebs": {"SnapshotId": snapshot}}])
                    task["image"] = image["ImageId"]
                    task["snapshot"] = snapshot
                entry.update(Status="completed", ImageId=task["image"],
                             SnapshotDetails=[
                                 {"SnapshotId": task["snapshot"]}])
            result.append(entry)
        return {"ImportImageTasks": result}


class _Http:
    def __init__(self, status):
        self.status_code = status
        self.headers = {}
        self.content = b""


def client_error(code: str, message: str, status: int = 400):
    """A botocore ClientError as the service would raise it."""
    from botocore.exceptions import ClientError
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}},
                       "FakeOperation")


class CallRecorder:
    """Counts, slows down and fails calls of boto3 clients, by action.

    ``attach(client)`` hooks a client; ``counts`` is a Counter of action
    names (``RunInstances``...).  ``delays[action] = seconds`` makes the
    call take that long; ``fail(action, code, status, times)`` makes the
    next ``times`` calls of the action fail with that AWS error code
    before they reach moto.  ``args[action]`` keeps each call's
    parameters.  ``concurrent``/``max_concurrent`` track overlapping
    calls per action (to see a thread pool at work).
    """

    def __init__(self):
        self.counts = collections.Counter()
        self.args = collections.defaultdict(list)
        self.delays = {}
        self.failures = collections.defaultdict(list)
        self.concurrent = collections.Counter()
        self.max_concurrent = collections.Counter()
        self.starts = collections.defaultdict(list)
        # action -> fn(parsed response), run after a successful call.
        self.after_hooks = {}
        self._lock = threading.Lock()

    def attach(self, client):
        events = client.meta.events
        events.register("provide-client-params.*.*", self._params)
        events.register("before-call.*.*", self._before)
        events.register("after-call.*.*", self._after)
        events.register("after-call-error.*.*", self._after_error)
        return client

    def fail(self, action, code, status=400, times=1):
        with self._lock:
            self.failures[action].extend([(code, status)] * times)

    def reset(self):
        with self._lock:
            self.counts.clear()
            self.args.clear()
            self.max_concurrent.clear()
            self.starts.clear()

    def _params(self, model, params, **kwargs):
        with self._lock:
            self.args[model.name].append(dict(params))

    def _before(self, model, params, **kwargs):
        action = model.name
        with self._lock:
            self.counts[action] += 1
            self.starts[action].append(time.monotonic())
            failure = (self.failures[action].pop(0)
                       if self.failures[action] else None)
            self.concurrent[action] += 1
            self.max_concurrent[action] = max(
                self.max_concurrent[action], self.concurrent[action])
        delay = self.delays.get(action)
        if delay:
            time.sleep(delay)
        if failure is not None:
            code, status = failure
            return _Http(status), {
                "Error": {"Code": code, "Message": "injected %s" % code},
                "ResponseMetadata": {"HTTPStatusCode": status}}
        return None

    def _done(self, model):
        with self._lock:
            if self.concurrent[model.name] > 0:
                self.concurrent[model.name] -= 1

    def _after(self, model, http_response=None, parsed=None, **kwargs):
        self._done(model)
        hook = self.after_hooks.get(model.name)
        status = getattr(http_response, "status_code", 200)
        if hook is not None and status < 300:
            hook(parsed)

    def _after_error(self, model, **kwargs):
        self._done(model)


def moto_clients(recorder=None, region=REGION, endpoint_url=None,
                 quotas=None):
    """AwsClients for moto (in-process when ``endpoint_url`` is None,
    which must then run inside ``moto.mock_aws()``)."""
    from nodepool.driver.aws.adapter import AwsClients
    import botocore.config
    config = botocore.config.Config(
        max_pool_connections=30, retries={"total_max_attempts": 1})
    kwargs = dict(region_name=region, config=config,
                  aws_access_key_id="testing",
                  aws_secret_access_key="testing")
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    made = {name: boto3.client(name, **kwargs)
            for name in ("ec2", "s3", "ebs")}
    if recorder is not None:
        for client in made.values():
            recorder.attach(client)
    return AwsClients(ImportingEc2(made["ec2"]), made["s3"], made["ebs"],
                      quotas if quotas is not None else FakeServiceQuotas())
