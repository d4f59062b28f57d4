# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The AWS driver end to end: ``nodepool-launcher`` as its own process,
moto_server on loopback behind the counting proxy (which also fakes
Service Quotas), a real ZooKeeper and a Zuul-like client."""

import os
import subprocess
import sys

import boto3
import pytest

from nodepool.zk.models import NodeState, RequestState
from tests.fakes.aws_proxy import AwsProxy, MotoServer, free_port
from tests.fixtures import zkserver
from tests.fixtures.waits import wait_for
from tests.fixtures.zuul import ZuulClient

REGION = "us-west-2"

CONFIG = """
labels:
  - name: small
providers:
  - name: ec2
    driver: aws
    region-name: us-west-2
    rate: 20
    launch-retries: 3
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
            tags:
              team: ci
"""


@pytest.fixture(scope="module")
def moto_server():
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def proxy(moto_server):
    moto_server.reset()
    proxy = AwsProxy(moto_server.port).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def ec2(moto_server):
    return boto3.client("ec2", endpoint_url=moto_server.url,
                        region_name=REGION, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


@pytest.fixture
def launcher(tmp_path, zk_server, zk_chroot, proxy):
    config = tmp_path / "nodepool.yaml"
    config.write_text(zkserver.client_config(
        zk_server.host, zk_server.secure_port, zk_chroot, zk_server.certs,
        web_port=free_port()) + CONFIG)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION,
               AWS_ENDPOINT_URL=proxy.url)
    env.pop("AWS_PROFILE", None)
    log = tmp_path / "launcher.log"
    binary = os.path.join(os.path.dirname(sys.executable),
                          "nodepool-launcher")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [binary, "-d", "-c", str(config), "-p",
             str(tmp_path / "launcher.pid")],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    yield proc, log
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def zuul(zk_factory):
    client = ZuulClient(zk_factory(tls=False))
    yield client
    client.close()


def live_instances(ec2):
    found = {}
    for reservation in ec2.describe_instances()["Reservations"]:
        for instance in reservation["Instances"]:
            if instance["State"]["Name"] != "terminated":
                found[instance["InstanceId"]] = {
                    t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    return found


def node_ids(zuul):
    if not zuul.kazoo.exists("/nodepool/nodes"):
        return []
    return zuul.kazoo.get_children("/nodepool/nodes")


def test_request_served_and_nodes_deleted(launcher, zuul, ec2, proxy):
    proc, log = launcher
    request = zuul.submit(["small", "small"])
    done = zuul.wait_for_request(request, timeout=60)
    assert done.state == RequestState.FULFILLED, log.read_text()[-3000:]
    nodes = zuul.accept_nodes(done)
    instances = live_instances(ec2)
    assert sorted(instances) == sorted(n.external_id for n in nodes)
    for node in nodes:
        assert node.state == NodeState.IN_USE
        assert node.provider == "ec2" and node.cloud == "AWS"
        assert node.region == REGION and node.interface_ip
        assert node.resources == {"cores": 2, "instances": 1,
                                  "ram": 4096, "L-1216C47A": 2}
        tags = instances[node.external_id]
        assert tags["nodepool_node_id"] == node.id
        assert tags["nodepool_provider_name"] == "ec2"
        assert tags["Name"] == "np" + node.id and tags["team"] == "ci"
    assert proxy.counts["RunInstances"] == 2
    zuul.return_nodes(nodes)
    wait_for(lambda: not node_ids(zuul), timeout=60)
    assert live_instances(ec2) == {}
    assert proxy.counts["TerminateInstances"] <= 2
    assert proc.poll() is None


def test_capacity_error_retried_without_leak(launcher, zuul, ec2, proxy):
    proc, log = launcher
    proxy.fail("RunInstances", "InsufficientInstanceCapacity", 500)
    done = zuul.wait_for_request(zuul.submit(["small"]), timeout=60)
    assert done.state == RequestState.FULFILLED, log.read_text()[-3000:]
    assert proxy.counts["RunInstances"] == 2
    text = log.read_text()
    assert "InsufficientInstanceCapacity" in text
    [node] = zuul.accept_nodes(done)
    assert list(live_instances(ec2)) == [node.external_id]
    zuul.return_nodes([node])
    wait_for(lambda: not live_instances(ec2), timeout=60)
