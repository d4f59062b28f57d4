# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The metastatic driver on top of AWS: moto_server behind the proxy
plays EC2, an in-process launcher runs an ``aws`` provider for the backing
nodes and a ``metastatic`` one that packs jobs onto them, and the Zuul-like
client asks for the packed label."""

import json

import boto3
import pytest

from nodepool.zk import paths
from nodepool.zk.models import NodeState
from tests.fakes.aws_proxy import (
    AwsProxy, MotoServer, restore_aws, use_proxied_aws)
from tests.functional.conftest import nodes_of, read_nodes, served_by
from tests.fixtures.waits import wait_for

pytest.importorskip("moto")

REGION = "us-west-2"

CONFIG = """
labels:
  - name: big
  - name: packed
providers:
  - name: ec2
    driver: aws
    region-name: us-west-2
    rate: 20
    cloud-images:
      - name: base
        username: ubuntu
        image-id: ami-03cf127a
    pools:
      - name: main
        max-servers: 4
        host-key-checking: false
        labels:
          - name: big
            cloud-image: base
            instance-type: t3.medium
            key-name: np
  - name: meta
    driver: metastatic
    pools:
      - name: main
        max-servers: 10
        labels:
          - name: packed
            backing-label: big
            max-parallel-jobs: 3
            grace-time: 1
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
    use_proxied_aws(proxy.url, listing_interval=0.1)
    yield proxy
    restore_aws()
    proxy.stop()


@pytest.fixture
def ec2(moto_server):
    return boto3.client("ec2", endpoint_url=moto_server.url,
                        region_name=REGION, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def live_instances(ec2):
    found = {}
    for reservation in ec2.describe_instances()["Reservations"]:
        for instance in reservation["Instances"]:
            if instance["State"]["Name"] != "terminated":
                found[instance["InstanceId"]] = instance
    return found


def test_jobs_packed_onto_one_ec2_instance(launcher_factory, proxy, ec2,
                                           zuul):
    launcher_factory(CONFIG)
    requests = [zuul.submit(["packed"]) for _ in range(3)]
    nodes = [served_by(zuul, r, timeout=60)[1][0] for r in requests]
    [backing] = nodes_of(zuul, NodeState.IN_USE, label="big", provider="ec2")
    [instance] = live_instances(ec2).values()
    assert backing.external_id == instance["InstanceId"]
    assert json.loads(backing.user_data)["owner"] == \
        "NodePool:metastatic:meta"
    assert sorted(n.slot for n in nodes) == [0, 1, 2]
    for node in nodes:
        assert node.provider == "meta"
        assert node.driver_data["backing_node"] == backing.id
        # The EC2 instance's connection details, through the backing node.
        assert node.interface_ip == backing.interface_ip
        assert node.private_ipv4 == instance["PrivateIpAddress"]
        assert (node.cloud, node.region, node.az) == (
            "AWS", REGION, instance["Placement"]["AvailabilityZone"])
        assert node.username == "ubuntu"
        assert node.connection_port == 22
        assert node.resources == {"cores": 0, "instances": 1, "ram": 0}
    # A fourth job needs a second instance.
    [fourth] = served_by(zuul, zuul.submit(["packed"]), timeout=60)[1]
    assert fourth.driver_data["backing_node"] != backing.id
    assert len(live_instances(ec2)) == 2
    # Once every job is done and the grace time has passed, the backing
    # nodes are returned to the aws provider, which terminates them.
    zuul.finish(nodes + [fourth])
    wait_for(lambda: not read_nodes(zuul.kazoo) and not live_instances(ec2),
             timeout=60)


def test_dead_backing_instance_leaves_nothing_behind(launcher_factory,
                                                     proxy, ec2, zuul):
    launcher_factory(CONFIG)
    [busy] = served_by(zuul, zuul.submit(["packed"]), timeout=60)[1]
    waiting = zuul.wait_for_request(zuul.submit(["packed"]), timeout=60)
    [waiting_id] = waiting.nodes
    dead = busy.driver_data["backing_node"]
    # The provider's hold on the backing node (its lock) is lost: the aws
    # provider deletes the unlocked in-use node and its instance.
    path = paths.node_lock_path(dead)
    for name in zuul.kazoo.get_children(path):
        zuul.kazoo.delete(path + "/" + name)
    # The slot node nobody uses yet goes; the busy one stays until done.
    wait_for(lambda: waiting_id not in {n.id for n in read_nodes(
        zuul.kazoo)}, timeout=30)
    zuul.finish([busy])
    # Nothing is left, in ZooKeeper or in EC2.
    wait_for(lambda: not read_nodes(zuul.kazoo) and not live_instances(ec2),
             timeout=60)
    # A new job gets a new instance.
    [fresh] = served_by(zuul, zuul.submit(["packed"]), timeout=60)[1]
    assert fresh.driver_data["backing_node"] != dead
    assert len(live_instances(ec2)) == 1
    zuul.finish([fresh])
