# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Cloud faults under a running launcher (issue 10, scenario 4).

An in-process launcher serves requests from a cloud stand-in that
misbehaves on purpose: moto behind :class:`AwsProxy`, the fake OpenStack
and the fake Azure with their fault switches.  Throttling bursts, server
errors, capacity errors, timeouts and creates whose answer is lost after
the cloud made the instance.  Each test checks the outcomes Zuul and the
operator care about: every request ends fulfilled with ready nodes or
failed with a reason, no node serves two requests, and once the nodes
are returned nothing is left in the cloud or in ZooKeeper.
"""

import dataclasses
import json
import logging

import boto3
import pytest

from nodepool.web.app import WebApp
from nodepool.zk.models import NodeState, RequestState
from tests.fakes.azure import restore_azure, use_short_timeouts
from tests.fakes.aws_proxy import (
    AwsProxy, MotoServer, restore_aws, use_proxied_aws)
from tests.functional.conftest import FAST, read_nodes
from tests.functional.test_webapp import get_json, metrics
from tests.fixtures.waits import wait_for

REGION = "us-west-2"
# Client read timeout of the launcher's AWS clients: a held answer
# times out after this long.
AWS_READ_TIMEOUT = 2.0
# Leak cleanup every second (it lists five kinds of resource).
INTERVALS = dataclasses.replace(FAST, cleanup=1.0)

AWS_CONFIG = """
labels:
  - name: small
providers:
  - name: ec2
    driver: aws
    region-name: us-west-2
    rate: 20
    adaptive-rate: {adaptive}
    launch-retries: {retries}
    cloud-images:
      - name: base
        username: ubuntu
        image-id: ami-03cf127a
    pools:
      - name: main
        max-servers: 10
        host-key-checking: false
        labels:
          - name: small
            cloud-image: base
            instance-type: t3.medium
            key-name: np
"""


# Outcome checks shared by every cloud ------------------------------------

def settle(zuul, requests, timeout=90):
    """Wait until every request is fulfilled or failed; return them."""
    return [zuul.wait_for_request(r, timeout=timeout) for r in requests]


def accept_fulfilled(zuul, done):
    """Accept the nodes of the fulfilled requests: they must be ready
    when accepted and no node may serve two requests."""
    nodes = []
    for request in done:
        if request.state != RequestState.FULFILLED:
            continue
        accepted = zuul.accept_nodes(request)
        assert len(accepted) == len(request.node_types)
        nodes.extend(accepted)
    ids = [n.id for n in nodes]
    assert len(ids) == len(set(ids)), "a node served two requests"
    for node in nodes:
        assert node.state == NodeState.IN_USE and node.external_id
    return nodes


def serve(zuul, requests, live):
    """Settle ``requests`` and accept the fulfilled ones; what runs in
    the cloud must come down to exactly the accepted nodes' instances
    (instances of failed attempts and nodes are deleted meanwhile).
    Then return the nodes: nothing may be left in ZooKeeper or in the
    cloud.  ``live()`` gives ``{instance id: its nodepool_node_id}``
    for the cloud's instances that are not deleted."""
    done = settle(zuul, requests)
    nodes = accept_fulfilled(zuul, done)
    expected = {n.external_id: n.id for n in nodes}
    wait_until(lambda: live() == expected, timeout=20,
               describe=lambda: "cloud has %s, nodes are %s" % (
                   live(), expected))
    zuul.return_nodes(nodes)
    wait_until(lambda: not read_nodes(zuul.kazoo) and not live(),
               timeout=60,
               describe=lambda: "left behind: nodes %s, cloud %s" % (
                   [n.id for n in read_nodes(zuul.kazoo)], live()))
    return done


def wait_until(predicate, timeout, describe):
    """:func:`wait_for` whose failure says ``describe()`` (the state at
    the deadline)."""
    try:
        wait_for(predicate, timeout=timeout)
    except AssertionError:
        raise AssertionError(describe()) from None


# AWS (moto behind the fault-injecting proxy) ----------------------------

@pytest.fixture(scope="module")
def moto_server():
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def proxy(moto_server):
    moto_server.reset()
    proxy = AwsProxy(moto_server.port).start()
    use_proxied_aws(proxy.url, read_timeout=AWS_READ_TIMEOUT)
    yield proxy
    restore_aws()
    proxy.stop()


@pytest.fixture
def ec2(moto_server):
    return boto3.client("ec2", endpoint_url=moto_server.url,
                        region_name=REGION, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


@pytest.fixture
def aws_launcher(launcher_factory, proxy):
    def start(retries=3, adaptive=False):
        return launcher_factory(AWS_CONFIG, retries=retries,
                                adaptive="true" if adaptive else "false",
                                intervals=INTERVALS)
    return start


def live_instances(ec2):
    """``{instance id: nodepool_node_id tag}`` of the instances not
    terminated."""
    found = {}
    for reservation in ec2.describe_instances()["Reservations"]:
        for instance in reservation["Instances"]:
            if instance["State"]["Name"] != "terminated":
                tags = {t["Key"]: t["Value"]
                        for t in instance.get("Tags", [])}
                found[instance["InstanceId"]] = tags.get("nodepool_node_id")
    return found


def serve_on_aws(zuul, ec2, requests):
    return serve(zuul, requests, lambda: live_instances(ec2))


def test_aws_throttling_burst_is_ridden_out(aws_launcher, zuul, ec2, proxy):
    aws_launcher()
    proxy.fail("RunInstances", "RequestLimitExceeded", 503, times=3)
    proxy.fail("DescribeInstances", "RequestLimitExceeded", 503, times=2)
    done = serve_on_aws(zuul, ec2, [zuul.submit(["small", "small"])])
    assert [r.state for r in done] == [RequestState.FULFILLED]
    # Throttled calls were retried, not turned into failed launches.
    assert proxy.counts["RunInstances"] == 2 + 3


def test_aws_throttling_cuts_the_adaptive_rate_and_shows_it(
        aws_launcher, zuul, ec2, proxy):
    launcher = aws_launcher(adaptive=True)
    proxy.fail("RunInstances", "RequestLimitExceeded", 503, times=2)
    done = serve_on_aws(zuul, ec2, [zuul.submit(["small"])])
    assert [r.state for r in done] == [RequestState.FULFILLED]
    assert proxy.counts["RunInstances"] == 1 + 2
    rates = {row["limiter"]: row
             for row in launcher.providers["ec2"].api_rates()}
    assert sorted(rates) == ["mutate", "quota", "read"]
    mutate = rates["mutate"]
    # The throttles count for the whole group.
    assert all(row["adaptive"] and row["throttles"] == 2
               for row in rates.values())
    assert mutate["ceiling"] == 20
    assert rates["read"]["ceiling"] == 200
    # (Cut at the throttles; by now it may have recovered: the cut
    # itself is tested in tests/unit/test_aws_adapter.py.)
    assert 1 <= mutate["rate"] <= 20
    app = WebApp(launcher, "127.0.0.1", 0)
    app.start()
    try:
        rows = {row["limiter"]: row for row in get_json(app, "/api-rates")}
        row = rows["mutate"]
        assert 1 <= row.pop("rate") <= 20
        assert row == dict(provider="ec2", limiter="mutate", ceiling=20.0,
                           adaptive=True, throttles=2)
        values = metrics(app)
        assert 1 <= values[("nodepool_provider_api_rate",
                            ("limiter", "mutate"),
                            ("provider", "ec2"))] <= 20
    finally:
        app.stop()


def test_aws_server_errors_fail_attempts_then_launch(
        aws_launcher, zuul, ec2, proxy):
    aws_launcher()
    # Three 500s use up one create's retries: that launch attempt fails
    # and the launcher's next attempt succeeds.
    proxy.fail("RunInstances", "InternalError", 500, times=3)
    proxy.fail("TerminateInstances", "Unavailable", 503, times=2)
    done = serve_on_aws(zuul, ec2, [zuul.submit(["small"])])
    assert [r.state for r in done] == [RequestState.FULFILLED]
    assert proxy.counts["RunInstances"] == 4
    assert not any(proxy.failures.values())


def test_aws_capacity_exhausted_fails_request_with_reason(
        aws_launcher, zuul, ec2, proxy, caplog):
    aws_launcher(retries=2)
    proxy.fail("RunInstances", "InsufficientInstanceCapacity", 500,
               times=2)
    with caplog.at_level(logging.WARNING):
        done = serve_on_aws(zuul, ec2, [zuul.submit(["small"])])
    assert done[0].state == RequestState.FAILED
    assert done[0].declined_by
    assert "InsufficientInstanceCapacity" in caplog.text


def test_aws_capacity_error_retried(aws_launcher, zuul, ec2, proxy):
    aws_launcher()
    proxy.fail("RunInstances", "InsufficientInstanceCapacity", 500)
    done = serve_on_aws(zuul, ec2, [zuul.submit(["small"]),
                                    zuul.submit(["small"])])
    assert [r.state for r in done] == [RequestState.FULFILLED] * 2


@pytest.mark.parametrize("how", ["drop", "error", "hold"])
def test_aws_lost_create_answer_leaks_no_instance(aws_launcher, zuul, ec2,
                                                  proxy, how):
    """RunInstances reaches EC2 (the instance starts, tagged with the
    node id) but every answer to it is lost: the connection drops, a 500
    comes back, or the answer comes after the client's timeout.  The
    launcher must not leave that instance running next to a second one
    it starts for the same node."""
    aws_launcher()
    proxy.lose_answer("RunInstances", how, times=3)
    done = serve_on_aws(zuul, ec2, [zuul.submit(["small"])])
    assert [r.state for r in done] == [RequestState.FULFILLED]
    # The instance of the lost answers is the node's: one create.
    assert proxy.counts["RunInstances"] == 3


def test_aws_one_lost_answer_is_retried_idempotently(aws_launcher, zuul,
                                                     ec2, proxy):
    aws_launcher()
    proxy.lose_answer("RunInstances", "drop")
    done = serve_on_aws(zuul, ec2, [zuul.submit(["small"])])
    assert [r.state for r in done] == [RequestState.FULFILLED]
    # The retried call carried the same ClientToken: one instance.
    assert proxy.counts["RunInstances"] == 2


# OpenStack (the loopback fake with its fault switches) ------------------

OS_CONFIG = """
labels:
  - name: small
providers:
  - name: os
    driver: openstack
    cloud: fake
    region-name: RegionOne
    rate: 0
    launch-retries: {retries}
    cloud-images:
      - name: base
        image-name: Fake Image
        username: zuul
    pools:
      - name: main
        max-servers: 10
        host-key-checking: false
        networks: [private]
        labels:
          - name: small
            cloud-image: base
            min-ram: 2048
"""
# openstacksdk's timeout per call (clouds.yaml ``api_timeout``).
OS_API_TIMEOUT = 2


@pytest.fixture
def os_cloud(openstack_cloud, tmp_path, monkeypatch):
    """The fake OpenStack, its clouds.yaml with a short API timeout."""
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", openstack_cloud.write_clouds(
        tmp_path / "clouds-timeout.yaml", api_timeout=OS_API_TIMEOUT))
    return openstack_cloud


@pytest.fixture
def os_launcher(launcher_factory, os_cloud):
    def start(retries=3):
        return launcher_factory(OS_CONFIG, retries=retries,
                                intervals=INTERVALS)
    return start


def live_servers(cloud):
    return {sid: (server["metadata"] or {}).get("nodepool_node_id")
            for sid, server in cloud.live_servers().items()}


def serve_on_openstack(zuul, cloud, requests):
    return serve(zuul, requests, lambda: live_servers(cloud))


def test_openstack_throttling_burst_honours_retry_after(os_launcher, zuul,
                                                        os_cloud):
    os_cloud.fail("POST servers", 429, "Rate limit exceeded", times=3,
                  retry_after=0.2)
    os_cloud.fail("GET servers/detail", 429, "Rate limit exceeded",
                  times=2, retry_after=0.2)
    os_launcher(retries=1)
    done = serve_on_openstack(zuul, os_cloud, [zuul.submit(["small"])])
    # Throttled calls were retried, not turned into failed launches.
    assert [r.state for r in done] == [RequestState.FULFILLED]
    assert os_cloud.counts["POST servers"] == 1 + 3


def test_openstack_server_errors_fail_attempts_then_launch(
        os_launcher, zuul, os_cloud):
    os_launcher()
    os_cloud.fail("POST servers", 500, "Unexpected API Error", times=2)
    os_cloud.fail("DELETE server", 503, "Service Unavailable")
    done = serve_on_openstack(zuul, os_cloud, [zuul.submit(["small"])])
    assert [r.state for r in done] == [RequestState.FULFILLED]
    assert os_cloud.counts["POST servers"] == 3
    assert os_cloud.faults.pending() == 0


def test_openstack_no_valid_host_fails_request_with_reason(
        os_launcher, zuul, os_cloud, caplog):
    os_cloud.error_faults = ["No valid host was found"] * 2
    os_launcher(retries=2)
    with caplog.at_level(logging.WARNING):
        done = serve_on_openstack(zuul, os_cloud, [zuul.submit(["small"])])
    assert done[0].state == RequestState.FAILED
    assert done[0].declined_by
    assert "No valid host was found" in caplog.text


@pytest.mark.parametrize("how", ["drop", "error", "hold"])
def test_openstack_lost_create_answer_leaks_no_server(os_launcher, zuul,
                                                      os_cloud, how):
    """Nova made the server (named and tagged for the node) but its
    answer to the create was lost."""
    os_launcher()
    os_cloud.lose_answer("POST servers", how)
    done = serve_on_openstack(zuul, os_cloud, [zuul.submit(["small"])])
    assert [r.state for r in done] == [RequestState.FULFILLED]
    # The server made by the lost create is the node's.
    assert os_cloud.counts["POST servers"] == 1


# Azure (the loopback fake ARM with its fault switches) ------------------

AZURE_CONFIG = """
labels:
  - name: small
providers:
  - name: azure
    driver: azure
    location: centralus
    resource-group: nodepool
    resource-group-location: centralus
    auth-path: {auth_path}
    network: np-net
    rate: 200
    launch-retries: {retries}
    cloud-images:
      - name: ubuntu
        username: zuul
        key: ssh-rsa AAAAkey
        image-reference:
          sku: 22_04-lts
          publisher: Canonical
          version: latest
          offer: ubuntu
    pools:
      - name: main
        max-servers: 10
        host-key-checking: false
        labels:
          - name: small
            cloud-image: ubuntu
            hardware-profile:
              vm-size: Standard_B1ls
"""
# The read timeout of the launcher's Azure clients.
AZURE_READ_TIMEOUT = 2.0


@pytest.fixture
def azure(azure_fake):
    use_short_timeouts(AZURE_READ_TIMEOUT)
    yield azure_fake
    restore_azure()


@pytest.fixture
def azure_launcher(azure, launcher_factory, tmp_path):
    # Depends on the fake through `azure`: the launchers stop first.
    auth_path = tmp_path / "azure.json"
    auth_path.write_text(json.dumps(azure.auth_data()))

    def start(retries=3):
        return launcher_factory(AZURE_CONFIG, auth_path=auth_path,
                                retries=retries, intervals=INTERVALS)
    return start


def live_vms(fake):
    """``{vm name: nodepool_node_id tag}``; once no VM is left, also no
    NIC, public IP or disk may be."""
    vms = {}
    for name in fake.names("virtualMachines"):
        record = fake.get("virtualMachines", name) or {}
        vms[name] = (record.get("tags") or {}).get("nodepool_node_id")
    if not vms and fake.all_names():
        return {"(left over)": fake.all_names()}
    return vms


def serve_on_azure(zuul, fake, requests):
    return serve(zuul, requests, lambda: live_vms(fake))


def test_azure_throttling_burst_honours_retry_after(azure_launcher, zuul,
                                                    azure):
    azure_launcher(retries=1)
    azure.fail("PUT virtualMachines", 429, "TooManyRequests", times=2,
               retry_after=0.2)
    azure.fail("LIST networkInterfaces", 429, "TooManyRequests", times=2,
               retry_after=0.2)
    done = serve_on_azure(zuul, azure, [zuul.submit(["small"])])
    assert [r.state for r in done] == [RequestState.FULFILLED]
    assert azure.http_faults.pending() == 0


def test_azure_server_errors_fail_attempts_then_launch(azure_launcher, zuul,
                                                       azure):
    azure_launcher()
    # More 500s than azure-core retries: one launch attempt fails.
    azure.fail("PUT networkInterfaces", 500, "InternalServerError",
               times=4)
    azure.fail("DELETE virtualMachines", 503, "ServiceUnavailable")
    done = serve_on_azure(zuul, azure, [zuul.submit(["small"])])
    assert [r.state for r in done] == [RequestState.FULFILLED]
    assert azure.http_faults.pending() == 0


def test_azure_capacity_errors(azure_launcher, zuul, azure, caplog):
    azure_launcher(retries=2)
    # The first request's node fails twice: refused, then accepted but
    # not allocated.  The second request's node is served.
    azure.fail_put("virtualMachines", "SkuNotAvailable", status=409)
    azure.fail_provisioning("virtualMachines", "AllocationFailed")
    with caplog.at_level(logging.WARNING):
        first = settle(zuul, [zuul.submit(["small"])])
    assert first[0].state == RequestState.FAILED
    assert first[0].declined_by
    assert "SkuNotAvailable" in caplog.text
    assert "AllocationFailed" in caplog.text
    done = serve_on_azure(zuul, azure, [zuul.submit(["small"])])
    assert [r.state for r in done] == [RequestState.FULFILLED]


@pytest.mark.parametrize("how", ["drop", "error", "hold"])
def test_azure_lost_vm_create_answer_leaks_nothing(azure_launcher, zuul,
                                                   azure, how):
    """ARM made the VM but no answer to its PUT (nor to azure-core's
    retries of it) arrived."""
    azure_launcher()
    azure.lose_answer("PUT virtualMachines", how, times=4)
    done = serve_on_azure(zuul, azure, [zuul.submit(["small"])])
    assert [r.state for r in done] == [RequestState.FULFILLED]
    assert azure.http_faults.pending() == 0
