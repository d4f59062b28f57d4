# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Capacity fallback under a running launcher (issue 15, section 2).

moto behind :class:`AwsProxy`, which refuses one instance type in one
zone with ``InsufficientInstanceCapacity``, and the fake OpenStack
answering "No valid host".  Every request must be served, the attempts
show in the proxy's calls, the launch log and the provider's capacity
memory, and a later launch skips what the memory remembers without
asking the cloud.  doc/source/capacity-fallback.rst quotes these
scenarios.
"""

import json
import logging

from nodepool.web.app import WebApp
from nodepool.zk.models import RequestState
from tests.functional import test_faults_cloud as faults
from tests.functional.test_faults_cloud import (
    INTERVALS, live_instances, live_servers, serve)
from tests.functional.test_webapp import get_json, metrics

# The fixtures of the cloud fault tests: moto behind the proxy, the fake
# OpenStack with a short API timeout.
moto_server = faults.moto_server
proxy = faults.proxy
ec2 = faults.ec2
os_cloud = faults.os_cloud
azure = faults.azure

REFUSED = ("t3.medium", "us-west-2a")

AWS_CONFIG = """
labels:
  - name: small
providers:
  - name: ec2
    driver: aws
    region-name: us-west-2
    rate: 20
    priority: 1
    cloud-images:
      - name: base
        username: ubuntu
        image-id: ami-03cf127a
    pools:
      - name: main
        max-servers: 10
        host-key-checking: false
        {zone}
        labels:
          - name: small
            cloud-image: base
            instance-type: t3.medium
            key-name: np
            fallback-instance-types: {fallbacks}
"""

# A second provider in another zone, preferred less (priority 2).
SECOND_PROVIDER = """
  - name: ec2-b
    driver: aws
    region-name: us-west-2
    rate: 20
    priority: 2
    cloud-images:
      - name: base
        username: ubuntu
        image-id: ami-03cf127a
    pools:
      - name: main
        max-servers: 10
        host-key-checking: false
        availability-zone: us-west-2b
        labels:
          - name: small
            cloud-image: base
            instance-type: t3.medium
            key-name: np
"""


def serve_one_by_one(zuul, ec2, count):
    """Submit ``count`` one-node requests, each once the one before it
    was served (so launches come in turn); returns the requests and the
    accepted nodes, returned at the end (nothing left behind)."""
    done = []
    for _ in range(count):
        done.extend(serve(zuul, [zuul.submit(["small"])],
                          lambda: live_instances(ec2)))
    return done


def instance_types(ec2):
    """``{node id: instance type}`` of every instance ever made."""
    found = {}
    for reservation in ec2.describe_instances()["Reservations"]:
        for instance in reservation["Instances"]:
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            found[tags.get("nodepool_node_id")] = (
                instance["InstanceType"],
                instance["Placement"]["AvailabilityZone"])
    return found


def test_aws_capacity_moves_to_another_zone_and_is_remembered(
        launcher_factory, zuul, ec2, proxy, caplog):
    zones = sorted(z["ZoneName"] for z in
                   ec2.describe_availability_zones()["AvailabilityZones"])
    assert zones[0] == REFUSED[1]
    launcher = launcher_factory(AWS_CONFIG, zone="", fallbacks="[]",
                                intervals=INTERVALS)
    proxy.refuse(*REFUSED)
    with caplog.at_level(logging.INFO):
        done = serve_one_by_one(zuul, ec2, len(zones) + 1)
    assert [r.state for r in done] == [RequestState.FULFILLED] * (
        len(zones) + 1)
    # The first launch started in the first zone, was refused and moved
    # to the next; launches then start in each zone in turn, and the one
    # that starts in the refused zone again skips it without a call.
    # (moto's us-west-2 has four zones: a, b, c, d.)
    assert proxy.runs == [REFUSED] + [
        ("t3.medium", z) for z in zones[1:2] + zones[1:] + zones[1:2]]
    assert sorted(instance_types(ec2).values()) == sorted(
        ("t3.medium", z) for z in zones[1:2] + zones[1:] + zones[1:2])
    assert "No capacity for node" in caplog.text
    assert "trying t3.medium in %s" % zones[1] in caplog.text
    [entry] = launcher.providers["ec2"].capacity_entries()
    assert (entry["type"], entry["zone"], entry["failures"]) == (
        "t3.medium", REFUSED[1], 1)
    assert 0 < entry["seconds_left"] <= 300
    # The first request's timeline tells the story too.
    events = [e["event"] for e in
              launcher.journal.describe(done[0].id)["timeline"]]
    assert any("No capacity for node" in e for e in events), events
    app = WebApp(launcher, "127.0.0.1", 0)
    app.start()
    try:
        [row] = get_json(app, "/capacity")
        assert row.pop("seconds_left") > 0
        assert row == dict(provider="ec2", type="t3.medium",
                           zone=REFUSED[1], failures=1)
        assert metrics(app)[("nodepool_provider_capacity_cooldowns",
                             ("provider", "ec2"))] == 1
    finally:
        app.stop()


def test_aws_capacity_falls_back_to_the_next_instance_type(
        launcher_factory, zuul, ec2, proxy):
    launcher = launcher_factory(
        AWS_CONFIG, zone="availability-zone: us-west-2a",
        fallbacks="[t3.large, m5.large]", intervals=INTERVALS)
    proxy.refuse(*REFUSED)
    done = serve_one_by_one(zuul, ec2, 3)
    assert [r.state for r in done] == [RequestState.FULFILLED] * 3
    # One refusal; every launch after it went to t3.large at once.
    assert proxy.runs == [REFUSED] + [("t3.large", "us-west-2a")] * 3
    assert sorted(instance_types(ec2).values()) == [
        ("t3.large", "us-west-2a")] * 3
    assert [e["type"] for e in
            launcher.providers["ec2"].capacity_entries()] == ["t3.medium"]


def test_aws_no_option_left_declines_for_another_provider(
        launcher_factory, zuul, ec2, proxy):
    launcher = launcher_factory(
        AWS_CONFIG + SECOND_PROVIDER, zone="availability-zone: us-west-2a",
        fallbacks="[]", intervals=INTERVALS)
    proxy.refuse(*REFUSED)
    done = serve_one_by_one(zuul, ec2, 2)
    assert [r.state for r in done] == [RequestState.FULFILLED] * 2
    # ec2 (preferred) tried once and declined; ec2-b served both.  The
    # second request was declined by ec2 without a launch.
    assert proxy.runs == [REFUSED] + [("t3.medium", "us-west-2b")] * 2
    for request in done:
        assert len(request.declined_by) == 1
        assert "PoolWorker.ec2-main" in request.declined_by[0]
    first = launcher.journal.describe(done[0].id)["pools"]["ec2/main"]
    assert first["reason"] == "declined"
    assert "no capacity option left for label small" in first["detail"]
    second = launcher.journal.describe(done[1].id)["pools"]["ec2/main"]
    assert "no capacity option left for ['small']" in second["detail"]
    assert launcher.providers["ec2-b"].capacity_entries() == []


def test_aws_without_fallback_key_retries_in_place(launcher_factory, zuul,
                                                   ec2, proxy):
    """nodepool 11 behaviour: the attempt is retried with the same type
    and placement, nothing is remembered."""
    launcher = launcher_factory(
        AWS_CONFIG.replace("            fallback-instance-types: "
                           "{fallbacks}\n", ""),
        zone="availability-zone: us-west-2a", intervals=INTERVALS)
    proxy.fail("RunInstances", "InsufficientInstanceCapacity", 500)
    done = serve_one_by_one(zuul, ec2, 1)
    assert [r.state for r in done] == [RequestState.FULFILLED]
    assert proxy.runs == [REFUSED, REFUSED]
    assert launcher.providers["ec2"].capacity_entries() == []


def test_aws_refused_type_fails_every_request_without_fallback(
        launcher_factory, zuul, ec2, proxy):
    """The same refusal under a nodepool 11 config: each request uses up
    its launch-retries on the refused type and zone, then fails (the
    figures of doc/source/capacity-fallback.rst)."""
    launcher_factory(
        AWS_CONFIG.replace("            fallback-instance-types: "
                           "{fallbacks}\n", ""),
        zone="availability-zone: us-west-2a", intervals=INTERVALS)
    proxy.refuse(*REFUSED)
    done = serve_one_by_one(zuul, ec2, 3)
    assert [r.state for r in done] == [RequestState.FAILED] * 3
    assert proxy.runs == [REFUSED] * 9


# OpenStack ---------------------------------------------------------------

OS_CONFIG = """
labels:
  - name: small
providers:
  - name: os
    driver: openstack
    cloud: fake
    region-name: RegionOne
    rate: 0
    cloud-images:
      - name: base
        image-name: Fake Image
        username: zuul
    pools:
      - name: main
        max-servers: 10
        host-key-checking: false
        networks: [private]
        availability-zones: [az1]
        labels:
          - name: small
            cloud-image: base
            min-ram: 2048
            fallback-flavor-names: [m1.medium]
"""


def test_openstack_no_valid_host_falls_back_to_the_next_flavor(
        launcher_factory, zuul, os_cloud):
    requests = 2
    launcher = launcher_factory(OS_CONFIG, intervals=INTERVALS)
    os_cloud.error_faults = ["No valid host was found. There are not "
                             "enough hosts available."]
    done = []
    for _ in range(requests):
        done.extend(serve(zuul, [zuul.submit(["small"])],
                          lambda: live_servers(os_cloud)))
    assert [r.state for r in done] == [RequestState.FULFILLED] * requests
    # min-ram picked m1.small, which had no host; then m1.medium, and
    # the second request went to m1.medium at once.
    assert [(b["flavorRef"], b.get("availability_zone"))
            for b in os_cloud.create_bodies] == [
        ("f-small", "az1"), ("f-medium", "az1"), ("f-medium", "az1")]
    [entry] = launcher.providers["os"].capacity_entries()
    assert (entry["type"], entry["zone"]) == ("min-ram=2048", "az1")


# Azure -------------------------------------------------------------------

AZURE_CONFIG = faults.AZURE_CONFIG.replace(
    "              vm-size: Standard_B1ls\n",
    "              vm-size: Standard_B1ls\n"
    "            fallback-hardware-profiles:\n"
    "              - vm-size: Standard_B2s\n")


def test_azure_sku_not_available_falls_back_to_the_next_size(
        launcher_factory, zuul, azure, tmp_path):
    auth_path = tmp_path / "azure.json"
    auth_path.write_text(json.dumps(azure.auth_data()))
    launcher = launcher_factory(AZURE_CONFIG, auth_path=auth_path,
                                retries=1, intervals=INTERVALS)
    azure.fail_put("virtualMachines", "SkuNotAvailable", status=409)
    sizes = {}

    def live():
        vms = faults.live_vms(azure)
        for name in vms:
            record = azure.get("virtualMachines", name) or {}
            sizes[name] = record["properties"]["hardwareProfile"]["vmSize"]
        return vms
    done = []
    for _ in range(2):
        done.extend(serve(zuul, [zuul.submit(["small"])], live))
    # One launch attempt only (launch-retries: 1), yet served: the
    # refusal moved it to Standard_B2s, which the next launch took at once.
    assert [r.state for r in done] == [RequestState.FULFILLED] * 2
    assert sorted(sizes.values()) == ["Standard_B2s"] * 2
    assert azure.counts["PUT virtualMachines"] == 3
    [entry] = launcher.providers["azure"].capacity_entries()
    assert (entry["type"], entry["zone"]) == ("Standard_B1ls", None)
