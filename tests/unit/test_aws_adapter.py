# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The AWS adapter against in-process moto: create/delete state machines,
RunInstances arguments for every label and pool key, the create thread
pool, the shared listing, batched terminates, rate limiting, errors,
quota and leak cleanup.  API calls are counted by action."""

import logging
import threading
import time
import types

import boto3
import pytest

from nodepool import exceptions
from nodepool.driver.aws import errors
from nodepool.driver.aws.adapter import AwsAdapter, create_workers
from nodepool.driver.statemachine.provider import StateMachineProvider
from tests.fakes.aws import (
    CallRecorder, FakeServiceQuotas, REGION, moto_clients)
from tests.fixtures.adapters import AdapterEnv, label_of
from tests.fixtures.statemachines import run_to_completion
from tests.fixtures.waits import wait_for

moto = pytest.importorskip("moto")

LOG = logging.getLogger("tests.aws")

CONFIG = """
labels:
  - name: small
  - name: full
  - name: spot
  - name: dedicated
  - name: fleet
  - name: custom
  - name: bad-type
diskimages:
  - name: custom-image
providers:
  - name: ec2
    driver: aws
    region-name: us-west-2
    rate: {rate}
    launch-retries: 2
    cloud-images:
      - name: by-filter
        username: ubuntu
        image-filters:
          - name: name
            values: ["amzn-ami-minimal-hvm-2018*"]
          - name: architecture
            values: [x86_64]
      - name: by-id
        username: admin
        image-id: {image_id}
      - name: missing
        username: nobody
        image-id: ami-00000000
    diskimages:
      - name: custom-image
        volume-type: io2
        volume-size: 20
        iops: 3000
    pools:
      - name: main
        max-servers: 100
        availability-zone: us-west-2a
        labels:
          - name: small
            cloud-image: by-filter
            instance-type: t3.medium
            key-name: np-key
          - name: full
            cloud-image: by-id
            instance-type: m5.large
            key-name: np-key
            ebs-optimized: true
            volume-type: gp3
            volume-size: 80
            iops: 4000
            throughput: 200
            userdata: "#!/bin/sh\\necho hi"
            iam-instance-profile:
              arn: arn:aws:iam::123456789012:instance-profile/np
            tags:
              team: ci
              Name: overridden
            dynamic-tags:
              request: "{{request.id}}"
              broken: "{{request.nothing.here}}"
            imdsv2: required
          - name: spot
            cloud-image: by-filter
            instance-type: c5.large
            key-name: np-key
            use-spot: true
            iam-instance-profile:
              name: np-role
            imdsv2: optional
          - name: dedicated
            cloud-image: by-id
            instance-type: m5.large
            key-name: np-key
            dedicated-host: true
          - name: custom
            diskimage: custom-image
            instance-type: t3.small
            key-name: np-key
          - name: bad-type
            cloud-image: by-id
            instance-type: zz9.huge
            key-name: np-key
      - name: other
        subnet-id: {subnet}
        security-group-id: {sg}
        public-ipv4: false
        public-ipv6: true
        labels:
          - name: small
            cloud-image: by-filter
            instance-type: t3.medium
            key-name: np-key
          - name: fleet
            cloud-image: by-filter
            key-name: np-key
            fleet:
              instance-types: [t3.small, t3a.small]
              allocation-strategy: lowest-price
"""


class Env(AdapterEnv):
    """moto, a config, an adapter and a call recorder for one test."""

    provider = "ec2"

    def __init__(self, tmp_path):
        super().__init__(tmp_path, CONFIG)
        self.recorder = CallRecorder()
        self.quotas = FakeServiceQuotas()
        self.clients = moto_clients(self.recorder, quotas=self.quotas)
        self.ec2 = self.clients.ec2
        # One of moto's stock AMIs (listing them all takes seconds).
        self.image_id = "ami-03cf127a"
        vpc = self.ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
        self.subnet = self.ec2.describe_subnets()["Subnets"][0]["SubnetId"]
        self.sg = self.ec2.create_security_group(
            GroupName="np", Description="np", VpcId=vpc)["GroupId"]
        iam = boto3.client("iam", region_name=REGION)
        for name in ("np", "np-role"):
            iam.create_instance_profile(InstanceProfileName=name)
        self.recorder.reset()

    def values(self):
        return dict(image_id=self.image_id, subnet=self.subnet, sg=self.sg)

    def make_adapter(self, provider, **kwargs):
        kwargs.setdefault("retrier", errors.make_retrier(
            LOG, sleep=lambda s: None))
        return AwsAdapter(provider, clients=self.clients, **kwargs)


@pytest.fixture
def env(tmp_path, monkeypatch):
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"),
                       ("AWS_SECRET_ACCESS_KEY", "testing"),
                       ("AWS_DEFAULT_REGION", REGION)):
        monkeypatch.setenv(key, value)
    with moto.mock_aws():
        env = Env(tmp_path)
        yield env
        env.close()


def create_sm(adapter, label, node_id, pool="main", image=None,
              request=None):
    metadata = {"nodepool_node_id": str(node_id),
                "nodepool_pool_name": pool,
                "nodepool_provider_name": "ec2"}
    return adapter.get_create_state_machine(
        "np%s" % node_id, label, image, metadata, request, None, LOG)


def running_ids(env):
    ids = []
    for reservation in env.ec2.describe_instances()["Reservations"]:
        for instance in reservation["Instances"]:
            if instance["State"]["Name"] != "terminated":
                ids.append(instance["InstanceId"])
    return ids


# Creating ---------------------------------------------------------------

def test_create_and_delete_instance(env):
    adapter = env.adapter()
    sm = create_sm(adapter, label_of(adapter, "small"), 1)
    [instance] = run_to_completion([sm])
    assert sm.state == "complete" and sm.external_id == instance.external_id
    assert instance.ready and instance.cloud == "AWS"
    assert instance.region == REGION and instance.az == "us-west-2a"
    assert instance.interface_ip == instance.public_ipv4
    assert instance.private_ipv4
    assert instance.metadata == {
        "nodepool_node_id": "1", "nodepool_pool_name": "main",
        "nodepool_provider_name": "ec2", "Name": "np1"}
    assert instance.node_properties == {"spot": False, "fleet": False}
    quota = instance.get_quota_information().get_resources()
    assert quota == {"cores": 2, "instances": 1, "ram": 4096,
                     "L-1216C47A": 2}
    assert running_ids(env) == [instance.external_id]
    delete = adapter.get_delete_state_machine(instance.external_id, LOG)
    run_to_completion([delete])
    assert delete.state == "complete"
    assert running_ids(env) == []
    assert env.recorder.counts["TerminateInstances"] == 1


def test_cloud_image_filters_pick_newest(env):
    adapter = env.adapter()
    images = env.ec2.describe_images(Filters=[
        {"Name": "name", "Values": ["amzn-ami-minimal-hvm-2018*"]},
        {"Name": "architecture", "Values": ["x86_64"]}])["Images"]
    assert len(images) == 2
    newest = max(images, key=lambda i: i["CreationDate"])
    env.recorder.reset()
    sm = create_sm(adapter, label_of(adapter, "small"), 1)
    run_to_completion([sm])
    [args] = env.recorder.args["RunInstances"]
    assert args["ImageId"] == newest["ImageId"]
    # Looked up once for the image and once for its block devices.
    sms = [create_sm(adapter, label_of(adapter, "small"), i)
           for i in range(2, 6)]
    run_to_completion(sms)
    assert env.recorder.counts["DescribeImages"] == 2


def test_run_instances_arguments_for_every_label_key(env):
    adapter = env.adapter()
    request = types.SimpleNamespace(id="200-0000000042", requestor="zuul")
    sm = create_sm(adapter, label_of(adapter, "full"), 7, request=request)
    [instance] = run_to_completion([sm])
    [args] = env.recorder.args["RunInstances"]
    assert args["ImageId"] == env.image_id
    assert args["InstanceType"] == "m5.large"
    assert args["KeyName"] == "np-key" and args["EbsOptimized"] is True
    assert (args["MinCount"], args["MaxCount"]) == (1, 1)
    assert args["IamInstanceProfile"] == {
        "Arn": "arn:aws:iam::123456789012:instance-profile/np"}
    assert args["MetadataOptions"] == {"HttpTokens": "required",
                                       "HttpEndpoint": "enabled"}
    assert args["Placement"] == {"AvailabilityZone": "us-west-2a"}
    assert "InstanceMarketOptions" not in args
    [device] = args["BlockDeviceMappings"]
    assert device["DeviceName"] == "/dev/sda1"
    assert device["Ebs"]["DeleteOnTermination"] is True
    assert "Encrypted" not in device["Ebs"]
    assert (device["Ebs"]["VolumeType"], device["Ebs"]["VolumeSize"],
            device["Ebs"]["Iops"], device["Ebs"]["Throughput"]) == (
                "gp3", 80, 4000, 200)
    assert args["NetworkInterfaces"] == [
        {"AssociatePublicIpAddress": True, "DeviceIndex": 0}]
    tags = {spec["ResourceType"]: {t["Key"]: t["Value"] for t in
                                   spec["Tags"]}
            for spec in args["TagSpecifications"]}
    assert tags["instance"] == tags["volume"]
    assert tags["instance"] == {
        "team": "ci", "Name": "np7", "request": "200-0000000042",
        "nodepool_node_id": "7", "nodepool_pool_name": "main",
        "nodepool_provider_name": "ec2"}
    assert args["ClientToken"].startswith("np7-")
    # UserData is base64 encoded by boto on the wire.
    attribute = env.ec2.describe_instance_attribute(
        InstanceId=instance.external_id, Attribute="userData")
    assert attribute["UserData"]["Value"]
    volumes = env.ec2.describe_volumes(Filters=[{
        "Name": "tag:nodepool_node_id", "Values": ["7"]}])["Volumes"]
    assert volumes, "volume tags missing"


def test_spot_label_and_pool_network_keys(env):
    adapter = env.adapter()
    spot = create_sm(adapter, label_of(adapter, "spot"), 1)
    other = create_sm(adapter, label_of(adapter, "small", "other"), 2,
                      pool="other")
    spot_instance, other_instance = run_to_completion([spot, other])
    spot_args, other_args = sorted(
        env.recorder.args["RunInstances"],
        key=lambda a: a["InstanceType"])
    assert spot_args["InstanceMarketOptions"] == {
        "MarketType": "spot", "SpotOptions": {
            "SpotInstanceType": "one-time",
            "InstanceInterruptionBehavior": "terminate"}}
    assert spot_args["IamInstanceProfile"] == {"Name": "np-role"}
    assert spot_args["MetadataOptions"]["HttpTokens"] == "optional"
    assert spot_instance.node_properties["spot"] is True
    assert spot_instance.get_quota_information().get(
        "L-34B43A08") == 2
    assert other_args["NetworkInterfaces"] == [{
        "AssociatePublicIpAddress": False, "DeviceIndex": 0,
        "Groups": [env.sg], "SubnetId": env.subnet,
        "Ipv6AddressCount": 1}]
    assert "Placement" not in other_args
    assert other_instance.interface_ip == other_instance.private_ipv4


def test_diskimage_label_uses_uploaded_image(env):
    adapter = env.adapter()
    sm = create_sm(adapter, label_of(adapter, "custom"), 3,
                   image=env.image_id)
    run_to_completion([sm])
    [args] = env.recorder.args["RunInstances"]
    assert args["ImageId"] == env.image_id


def test_label_ready_follows_cloud_image(env):
    adapter = env.adapter()
    assert adapter.label_ready(label_of(adapter, "small"))
    assert adapter.label_ready(label_of(adapter, "custom"))
    missing = types.SimpleNamespace(name="x", cloud_image="missing")
    assert not adapter.label_ready(missing)


def test_dedicated_host_allocated_used_and_released(env):
    adapter = env.adapter()
    sm = create_sm(adapter, label_of(adapter, "dedicated"), 4)
    [instance] = run_to_completion([sm])
    host_id = sm.host_id
    assert instance.external_id == {"instance": sm.instance_id,
                                    "host": host_id}
    [alloc] = env.recorder.args["AllocateHosts"]
    assert alloc["AvailabilityZone"] == "us-west-2a"
    assert alloc["InstanceType"] == "m5.large"
    [args] = env.recorder.args["RunInstances"]
    assert args["Placement"] == {
        "AvailabilityZone": "us-west-2a", "Tenancy": "host",
        "HostId": host_id, "Affinity": "host"}
    delete = adapter.get_delete_state_machine(instance.external_id, LOG)
    run_to_completion([delete])
    assert env.recorder.args["ReleaseHosts"] == [{"HostIds": [host_id]}]
    host = env.ec2.describe_hosts(HostIds=[host_id])["Hosts"][0]
    assert host["State"].startswith("released")


def test_fleet_label_uses_launch_template(env):
    adapter = env.adapter()
    sms = [create_sm(adapter, label_of(adapter, "fleet", "other"), i,
                     pool="other") for i in (1, 2)]
    instances = run_to_completion(sms)
    assert env.recorder.counts["CreateLaunchTemplate"] == 1
    assert env.recorder.counts["CreateFleet"] == 2
    args = env.recorder.args["CreateFleet"][0]
    overrides = args["LaunchTemplateConfigs"][0]["Overrides"]
    types_ = [o["InstanceType"] for o in overrides]
    assert types_ == ["t3.small", "t3a.small"]
    assert args["OnDemandOptions"] == {"AllocationStrategy": "lowest-price"}
    assert all(i.node_properties["fleet"] for i in instances)
    template = env.recorder.args["CreateLaunchTemplate"][0]
    assert template["LaunchTemplateName"].startswith(
        "nodepool-launch-template-")


def test_old_string_external_id_deleted(env):
    adapter = env.adapter()
    sm = create_sm(adapter, label_of(adapter, "small"), 1)
    [instance] = run_to_completion([sm])
    delete = adapter.get_delete_state_machine(
        {"instance": instance.external_id}, LOG)
    run_to_completion([delete])
    assert running_ids(env) == []


# Thread pool, listing, batching, rate ---------------------------------

def test_create_workers_bound():
    assert create_workers(2, None) == 8
    assert create_workers(1, None) == 4
    assert create_workers(0.1, None) == 1
    assert create_workers(100, None) == 8
    assert create_workers(2, 3) == 3


def test_creates_run_in_parallel_and_advance_never_blocks(env):
    adapter = env.adapter(rate=100)
    env.recorder.delays["RunInstances"] = 0.5
    sms = [create_sm(adapter, label_of(adapter, "small"), i)
           for i in range(8)]
    slowest = [0.0]
    results = {}

    def step():
        for sm in sms:
            if sm.complete:
                continue
            start = time.monotonic()
            result = sm.advance()
            slowest[0] = max(slowest[0], time.monotonic() - start)
            if result is not None:
                results[sm] = result
        return all(sm.complete for sm in sms)
    start = time.monotonic()
    wait_for(step, timeout=20, interval=0.02)
    elapsed = time.monotonic() - start
    assert len(results) == 8
    assert env.recorder.max_concurrent["RunInstances"] >= 4
    # Eight 0.5 s creates one after another would take 4 s.
    assert elapsed < 3.0
    # Image lookups run in the pool too: advance() only looks at futures
    # and snapshots (a blocking create would take 0.5 s).
    assert slowest[0] < 0.25


def test_shared_listing_one_call_for_many_machines(env):
    adapter = env.adapter()
    sms = [create_sm(adapter, label_of(adapter, "small"), i)
           for i in range(20)]
    passes = [0]

    def step():
        passes[0] += 1
        for sm in sms:
            if not sm.complete:
                sm.advance()
        return all(sm.complete for sm in sms)
    wait_for(step, timeout=20, interval=0.02)
    listings = env.recorder.counts["DescribeInstances"]
    assert listings < passes[0]
    assert listings < len(sms)
    # Nothing waits any more: the listing goes quiet.
    wait_for(lambda: adapter.instances.watching == 0)
    before = env.recorder.counts["DescribeInstances"]
    time.sleep(0.5)  # observation window: no calls expected in it
    assert env.recorder.counts["DescribeInstances"] == before


def test_deletes_batched_fifty_per_call(env):
    adapter = env.adapter()
    ids = [i["InstanceId"] for i in env.ec2.run_instances(
        ImageId=env.image_id, MinCount=60, MaxCount=60,
        InstanceType="t3.small")["Instances"]]
    env.recorder.reset()
    deletes = [adapter.get_delete_state_machine(i, LOG) for i in ids]
    run_to_completion(deletes)
    calls = env.recorder.args["TerminateInstances"]
    assert sorted(len(c["InstanceIds"]) for c in calls) == [10, 50]
    assert running_ids(env) == []


def test_lone_delete_goes_out_promptly(env):
    adapter = env.adapter()
    [iid] = [i["InstanceId"] for i in env.ec2.run_instances(
        ImageId=env.image_id, MinCount=1, MaxCount=1,
        InstanceType="t3.small")["Instances"]]
    start = time.monotonic()
    run_to_completion([adapter.get_delete_state_machine(iid, LOG)])
    assert time.monotonic() - start < 2.0


def test_missing_id_in_batch_does_not_fail_the_others(env):
    adapter = env.adapter()
    ids = [i["InstanceId"] for i in env.ec2.run_instances(
        ImageId=env.image_id, MinCount=3, MaxCount=3,
        InstanceType="t3.small")["Instances"]]
    deletes = [adapter.get_delete_state_machine(i, LOG)
               for i in ids + ["i-00000000000000000"]]
    run_to_completion(deletes)
    assert all(d.complete for d in deletes)
    assert running_ids(env) == []


@pytest.mark.parametrize("adaptive_rate", [True, False])
def test_mutating_calls_paced_at_rate(env, adaptive_rate):
    adapter = env.adapter(rate=5, adaptive_rate=adaptive_rate)
    sms = [create_sm(adapter, label_of(adapter, "small"), i)
           for i in range(5)]
    run_to_completion(sms)
    starts = sorted(env.recorder.starts["RunInstances"])
    # Five starts at 5/s span at least 0.8 s (the limiter spaces entries;
    # thread scheduling adds jitter between entry and the wire).
    assert starts[-1] - starts[0] >= 0.75
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 0.1
    # Reads have their own (10x) limiter: the listing is not stuck
    # behind creates.
    assert adapter.read_limiter is not adapter.mutate_limiter
    assert adapter.read_limiter.rate == 50
    if adaptive_rate:
        # The rates are ceilings of one group: the account's limit
        # counts every call.
        assert adapter.read_limiter.ceiling == 50
        assert adapter.mutate_limiter.ceiling == 5
        assert adapter.read_limiter.group is adapter.mutate_limiter.group


def test_concurrent_lookups_coalesced(env):
    adapter = env.adapter()
    env.recorder.delays["DescribeInstanceTypes"] = 0.2
    env.quotas.delay = 0.1
    label = label_of(adapter, "small")
    results = []

    def lookup():
        results.append(adapter.get_quota_for_label(label))
        results.append(adapter.get_quota_limits())
    threads = [threading.Thread(target=lookup) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 16
    assert env.recorder.counts["DescribeInstanceTypes"] == 1
    # Seven ec2 quotas at two per page: four pages, once.
    assert env.quotas.calls["ec2"] == 4
    assert env.recorder.counts["DescribeImages"] <= 2


# Errors -----------------------------------------------------------------

def test_throttling_backs_off_and_retries(env):
    adapter = env.adapter()
    env.recorder.fail("RunInstances", "RequestLimitExceeded", 503, times=2)
    sm = create_sm(adapter, label_of(adapter, "small"), 1)
    [instance] = run_to_completion([sm])
    assert env.recorder.counts["RunInstances"] == 3
    assert running_ids(env) == [instance.external_id]


@pytest.mark.parametrize("code,status,error", [
    ("InsufficientInstanceCapacity", 500, exceptions.CapacityException),
    ("InstanceLimitExceeded", 400, exceptions.QuotaException),
    ("VcpuLimitExceeded", 400, exceptions.QuotaException),
    ("InternalError", 500, errors.AwsApiError),
    ("InvalidParameterValue", 400, exceptions.LaunchStatusException),
])
def test_create_errors_classified(env, caplog, code, status, error):
    adapter = env.adapter()
    env.recorder.fail("RunInstances", code, status, times=5)
    sm = create_sm(adapter, label_of(adapter, "small"), 9,
                   request=types.SimpleNamespace(id="100-0000000001"))
    with caplog.at_level(logging.WARNING):
        with pytest.raises(error):
            run_to_completion([sm])
    assert sm.external_id is None
    assert running_ids(env) == []
    assert any("node 9 (request 100-0000000001)" in r.getMessage()
               for r in caplog.records)
    tries = env.recorder.counts["RunInstances"]
    assert tries == (3 if code == "InternalError" else 1)
    assert adapter.instances.watching == 0


def test_classify_error_codes():
    from tests.fakes.aws import client_error
    kinds = {code: errors.classify(client_error(code, "x", status))
             for code, status in (
                 ("RequestLimitExceeded", 503), ("Throttling", 400),
                 ("InsufficientInstanceCapacity", 500),
                 ("HostLimitExceeded", 400), ("VolumeLimitExceeded", 400),
                 ("InvalidInstanceID.NotFound", 400),
                 ("ServiceUnavailable", 503), ("Weird", 502),
                 ("AuthFailure", 401))}
    assert kinds == {
        "RequestLimitExceeded": errors.ErrorClass.THROTTLE,
        "Throttling": errors.ErrorClass.THROTTLE,
        "InsufficientInstanceCapacity": errors.ErrorClass.CAPACITY,
        "HostLimitExceeded": errors.ErrorClass.QUOTA,
        "VolumeLimitExceeded": errors.ErrorClass.QUOTA,
        "InvalidInstanceID.NotFound": errors.ErrorClass.NOT_FOUND,
        "ServiceUnavailable": errors.ErrorClass.SERVER,
        "Weird": errors.ErrorClass.SERVER,
        "AuthFailure": errors.ErrorClass.BAD_REQUEST,
    }
    assert errors.classify(ValueError("x")) is errors.ErrorClass.OTHER


def test_instance_dying_while_starting_fails_attempt(env):
    adapter = env.adapter()
    # Gone before the listing could see it running (spot reclaimed,
    # say).
    env.recorder.after_hooks["RunInstances"] = lambda response: \
        env.ec2.terminate_instances(InstanceIds=[
            response["Instances"][0]["InstanceId"]])
    sm = create_sm(adapter, label_of(adapter, "small"), 1)
    with pytest.raises(exceptions.LaunchStatusException,
                       match="terminated"):
        run_to_completion([sm])
    # The launcher deletes what the machine reported.
    assert sm.external_id == sm.instance_id


def test_throttled_terminate_retried(env):
    adapter = env.adapter()
    [iid] = [i["InstanceId"] for i in env.ec2.run_instances(
        ImageId=env.image_id, MinCount=1, MaxCount=1,
        InstanceType="t3.small")["Instances"]]
    env.recorder.fail("TerminateInstances", "RequestLimitExceeded", 503)
    run_to_completion([adapter.get_delete_state_machine(iid, LOG)])
    assert env.recorder.counts["TerminateInstances"] == 2
    assert running_ids(env) == []


def _throttled_create(env, caplog, adaptive_rate):
    sleeps = []
    adapter = env.adapter(rate=4, adaptive_rate=adaptive_rate,
                          retrier=errors.make_retrier(LOG,
                                                      sleep=sleeps.append))
    env.recorder.fail("RunInstances", "RequestLimitExceeded", 503, times=2)
    caplog.set_level(logging.DEBUG, logger=LOG.name)
    sm = create_sm(adapter, label_of(adapter, "small"), 1)
    run_to_completion([sm])
    assert env.recorder.counts["RunInstances"] == 3
    # Every try, the two retries included, went through the limiter
    # (which logs each call it let through).
    tries = [r for r in caplog.records
             if r.getMessage().startswith("RunInstances")
             and "delay" in r.getMessage()]
    assert len(tries) == 3
    return adapter, sleeps


def test_throttled_create_cuts_the_adaptive_rate(env, caplog):
    adapter, sleeps = _throttled_create(env, caplog, adaptive_rate=True)
    limiter = adapter.mutate_limiter
    assert limiter.adaptive
    assert limiter.throttle_count == 2
    assert limiter.ceiling == 4
    assert limiter.current_rate < 4
    # The limiter paced the retries: the retrier did not sleep.
    assert sleeps == []
    # The throttles slowed every kind of call of the provider down, each
    # below its own ceiling.
    assert adapter.read_limiter.group is limiter.group
    assert adapter.quota_limiter.group is limiter.group
    assert adapter.read_limiter.ceiling == 40
    assert adapter.read_limiter.current_rate < 40
    assert adapter.read_limiter.throttle_count == 2
    assert adapter.rate_limiters() == dict(
        mutate=limiter, read=adapter.read_limiter,
        quota=adapter.quota_limiter)


def test_throttled_create_with_fixed_rate(env, caplog):
    adapter, sleeps = _throttled_create(env, caplog, adaptive_rate=False)
    assert not adapter.mutate_limiter.adaptive
    assert adapter.mutate_limiter.current_rate == 4
    # The retrier's exponential backoff, as before adaptive-rate.
    assert sleeps == [1.0, 2.0]
    # Reads have a limiter of their own at ten times the rate.
    assert sorted(adapter.rate_limiters()) == ["mutate", "quota", "read"]
    assert adapter.read_limiter.rate == 40


# Quota ------------------------------------------------------------------

def test_quota_limits_from_service_quotas(env):
    adapter = env.adapter()
    limits = adapter.get_quota_limits()
    assert limits.get("L-1216C47A") == 640
    assert limits.get("L-34B43A08") == 640
    assert limits.get("L-8B27377A") == 2  # dedicated m5 hosts, by name
    assert limits.get("L-7A658B76") == 50000  # 50 TiB of gp3, in GB
    assert limits.get("L-8D977E7E") == 100000  # io2 IOPS
    assert limits.get("L-OTHER000") == float("inf")  # unknown: ignored
    assert limits.get("cores") == float("inf")


def test_label_quota_on_demand_spot_dedicated_and_volumes(env):
    adapter = env.adapter()
    small = adapter.get_quota_for_label(label_of(adapter, "small"))
    assert small.get("L-1216C47A") == 2 and small.get("cores") == 2
    assert small.get("ram") == 4096 and small.get("instances") == 1
    spot = adapter.get_quota_for_label(label_of(adapter, "spot"))
    assert spot.get("L-34B43A08") == 2 and spot.get("L-1216C47A") == 0
    dedicated = adapter.get_quota_for_label(label_of(adapter, "dedicated"))
    assert dedicated.get("L-8B27377A") == 1
    assert dedicated.get("L-1216C47A") == 0
    full = adapter.get_quota_for_label(label_of(adapter, "full"))
    assert full.get("L-7A658B76") == 80  # GB of gp3
    custom = adapter.get_quota_for_label(label_of(adapter, "custom"))
    # The diskimage's io2 size and IOPS.
    assert custom.get("L-09BD8365") == 20 and custom.get("L-8D977E7E") == 3000
    fleet = adapter.get_quota_for_label(label_of(adapter, "fleet", "other"))
    assert fleet.get_resources() == {"cores": 0, "instances": 1, "ram": 0}


def test_unknown_instance_type_is_configuration_error(env):
    adapter = env.adapter()
    with pytest.raises(exceptions.RuntimeConfigurationException):
        adapter.get_quota_for_label(label_of(adapter, "bad-type"))


def test_quota_codes_by_family():
    from nodepool.driver.aws import quota_codes as qc
    assert qc.instance_family("u-6tb1.metal") == "u-"
    assert qc.instance_family("inf2.xlarge") == "inf"
    assert qc.instance_quota_code("m5.large", False) == "L-1216C47A"
    assert qc.instance_quota_code("g4dn.xlarge", True) == "L-3819A6DF"
    assert qc.instance_quota_code("u-6tb1.metal", False) == "L-43DA4232"
    assert qc.instance_quota_code("q9.large", False) is None
    assert qc.host_quota_family("Running Dedicated m5 Hosts") == "m5"


def test_list_instances_for_unmanaged_quota(env):
    adapter = env.adapter()
    env.ec2.run_instances(ImageId=env.image_id, MinCount=1, MaxCount=1,
                          InstanceType="m5.large")
    [instance] = adapter.list_instances()
    assert instance.metadata == {}
    assert instance.get_quota_information().get("cores") == 2


def test_provider_quota_with_moto_and_fake_quotas(env):
    adapter = env.adapter()
    services = types.SimpleNamespace(
        nodes=None, stats=None, node_cache=types.SimpleNamespace(
            ids=lambda: [], values=lambda: []))
    provider = StateMachineProvider(adapter.provider, adapter, services)
    env.ec2.run_instances(ImageId=env.image_id, MinCount=1, MaxCount=1,
                          InstanceType="m5.large")
    quota = provider.quota.provider_quota()
    assert quota.get("L-1216C47A") == 638  # 640 minus the unmanaged one
    pool = adapter.provider.pools["main"]
    assert provider.quota.has_provider_quota(["small"], pool)
    env.quotas.quotas["ec2"]["L-1216C47A"] = ("x", 3.0)
    adapter._quota_cache.invalidate()
    provider.quota.invalidate()
    assert not provider.quota.has_provider_quota(["small"], pool)


# Leak cleanup -----------------------------------------------------------

def test_leaked_resources_deleted_after_two_passes(env):
    adapter = env.adapter()
    ec2 = env.ec2

    def tags(**values):
        return [{"Key": k, "Value": v} for k, v in values.items()]
    leaked = tags(nodepool_provider_name="ec2", nodepool_node_id="99")
    known = tags(nodepool_provider_name="ec2", nodepool_node_id="1")
    foreign = tags(nodepool_provider_name="other", nodepool_node_id="99")
    upload = tags(nodepool_provider_name="ec2", nodepool_build_id="b1",
                  nodepool_upload_id="7")

    def instance(tag_list):
        return ec2.run_instances(
            ImageId=env.image_id, MinCount=1, MaxCount=1,
            InstanceType="t3.small", TagSpecifications=[
                {"ResourceType": "instance", "Tags": tag_list}])[
                    "Instances"][0]["InstanceId"]
    leaked_instance = instance(leaked)
    known_instance = instance(known)
    foreign_instance = instance(foreign)
    volume = ec2.create_volume(Size=1, AvailabilityZone="us-west-2a",
                               TagSpecifications=[{
                                   "ResourceType": "volume",
                                   "Tags": leaked}])["VolumeId"]
    snap_volume = ec2.create_volume(Size=1, AvailabilityZone="us-west-2a")
    snapshot = ec2.create_snapshot(
        VolumeId=snap_volume["VolumeId"], TagSpecifications=[{
            "ResourceType": "snapshot", "Tags": upload}])["SnapshotId"]
    ami = ec2.register_image(
        Name="leaked", RootDeviceName="/dev/sda1", BlockDeviceMappings=[{
            "DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snapshot}}],
    )["ImageId"]
    ec2.create_tags(Resources=[ami], Tags=upload)
    services = types.SimpleNamespace(stats=None, nodes=None)
    provider = StateMachineProvider(adapter.provider, adapter, services)
    assert provider.cleanup_leaked_resources({"1"}, set()) == 0
    assert leaked_instance in running_ids(env)
    assert provider.cleanup_leaked_resources({"1"}, set()) == 4
    alive = running_ids(env)
    assert leaked_instance not in alive
    assert known_instance in alive and foreign_instance in alive
    assert not ec2.describe_volumes(Filters=[{
        "Name": "volume-id", "Values": [volume]}])["Volumes"]
    assert not ec2.describe_images(Owners=["self"])["Images"]
    snapshots = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert snapshot not in {s["SnapshotId"] for s in snapshots}
    assert ami


def test_known_upload_not_leaked(env):
    adapter = env.adapter()
    volume = env.ec2.create_volume(Size=1, AvailabilityZone="us-west-2a")
    env.ec2.create_snapshot(
        VolumeId=volume["VolumeId"], TagSpecifications=[{
            "ResourceType": "snapshot", "Tags": [
                {"Key": "nodepool_provider_name", "Value": "ec2"},
                {"Key": "nodepool_build_id", "Value": "b1"},
                {"Key": "nodepool_upload_id", "Value": "7"}]}])
    provider = StateMachineProvider(adapter.provider, adapter,
                                    types.SimpleNamespace(stats=None, nodes=None))
    for _ in range(3):
        assert provider.cleanup_leaked_resources(set(), {"b1-7"}) == 0
