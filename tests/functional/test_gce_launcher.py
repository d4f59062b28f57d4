# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The GCE driver in the launcher: the launcher in-process with a gce
provider on the loopback fake Compute API (tests/fakes/gce.py; the real
google-cloud-compute clients over HTTP with anonymous credentials), a
real ZooKeeper and a Zuul-like client.

The contract suite (tests/contract) runs the cases every driver shares
against gce too; here are the node fields of nodepool 11's GCE nodes and
GCE's own failures."""

import pytest

from nodepool.zk.models import NodeState, RequestState
from tests.fixtures.waits import wait_for
from tests.functional.conftest import nodes_of, read_nodes, served_by

CONFIG = """
labels:
  - name: debian-e2-small
  - name: debian-internal
providers:
  - name: gcloud-provider
    driver: gce
    project: nodepool-project
    region: us-central1
    zone: us-central1-a
    rate: 200
    launch-retries: {retries}
    launch-timeout: {launch_timeout}
    cloud-images:
      - name: debian
        image-project: debian-cloud
        image-family: debian-12
        username: zuul
        key: ssh-rsa AAAAkey zuul
    pools:
      - name: main
        max-servers: {max_servers}
        host-key-checking: false
        node-attributes:
          key1: value1
        labels:
          - name: debian-e2-small
            cloud-image: debian
            instance-type: e2-small
      - name: internal
        use-internal-ip: true
        host-key-checking: false
        labels:
          - name: debian-internal
            cloud-image: debian
            instance-type: f1-micro
"""


@pytest.fixture
def launcher_factory(gce_fake, launcher_factory):
    """Launchers set up after, and stopped before, the fake."""
    return launcher_factory


@pytest.fixture
def fake(gce_fake):
    return gce_fake


@pytest.fixture
def start(launcher_factory):
    def start(**params):
        return launcher_factory(CONFIG, **params)
    return start


def released(zuul, fake, node):
    return node.id not in {n.id for n in read_nodes(zuul.kazoo)} and \
        node.external_id not in fake.names()


def test_node_fields_then_deleted(start, fake, zuul):
    start()
    _, [node] = served_by(zuul, zuul.submit(["debian-e2-small"]))
    record = fake.instance(node.external_id)
    nic = record["networkInterfaces"][0]
    assert node.external_id == "np" + node.id
    assert node.cloud == "Google"
    assert (node.region, node.az) == ("us-central1", "us-central1-a")
    assert node.public_ipv4 == nic["accessConfigs"][0]["natIP"]
    assert node.private_ipv4 == nic["networkIP"]
    assert node.interface_ip == node.public_ipv4
    assert (node.username, node.connection_type, node.connection_port,
            node.python_path) == ("zuul", "ssh", 22, "auto")
    assert node.attributes == {"key1": "value1"}
    assert node.resources == {"cores": 2, "instances": 1, "ram": 2048}
    assert fake.metadata(node.external_id) == {
        "nodepool_node_id": node.id, "nodepool_pool_name": "main",
        "nodepool_provider_name": "gcloud-provider",
        "ssh-keys": "zuul:ssh-rsa AAAAkey zuul"}
    zuul.return_nodes([node])
    wait_for(lambda: released(zuul, fake, node), timeout=30)
    assert fake.counts["DELETE instance"] == 1


def test_use_internal_ip(start, fake, zuul):
    start()
    _, [node] = served_by(zuul, zuul.submit(["debian-internal"]))
    assert node.pool == "internal"
    assert node.interface_ip == node.private_ipv4 != node.public_ipv4
    assert node.resources == {"cores": 1, "instances": 1, "ram": 614}


def test_instances_quota_pauses_until_first_node_deleted(start, fake, zuul):
    fake.quotas["INSTANCES"] = 1.0
    launcher = start()
    _, [first] = served_by(zuul, zuul.submit(["debian-e2-small"]))
    second = zuul.submit(["debian-e2-small"])
    worker = launcher.pool_workers[("gcloud-provider", "main")]
    wait_for(lambda: worker.paused, timeout=30)
    assert zuul.get_request(second).state == RequestState.PENDING
    # Paused by the launcher's own accounting, not by a refused insert.
    assert fake.counts["POST instances"] == 1
    zuul.return_nodes([first])
    _, [node] = served_by(zuul, second)
    assert fake.counts["POST instances"] == 2
    assert fake.names() == [node.external_id]


def test_capacity_error_fails_the_attempt_then_retried(start, fake, zuul):
    fake.fail_operations("ZONE_RESOURCE_POOL_EXHAUSTED", count=1)
    start()
    _, [node] = served_by(zuul, zuul.submit(["debian-e2-small"]))
    assert fake.counts["POST instances"] == 2
    assert fake.names() == [node.external_id]
    assert fake.instance(node.external_id)["status"] == "RUNNING"


def test_operation_errors_past_retries_fail_the_request(start, fake, zuul):
    fake.fail_operations("INTERNAL_ERROR", "backend failed", count=2,
                         http_status=500)
    start(retries=2)
    done = zuul.wait_for_request(zuul.submit(["debian-e2-small"]),
                                 timeout=30)
    assert done.state == RequestState.FAILED
    assert fake.counts["POST instances"] == 2
    wait_for(lambda: not read_nodes(zuul.kazoo), timeout=30)
    assert fake.names() == []


def test_terminated_instance_cleaned_up_and_retried(start, fake, zuul):
    fake.terminate_next()
    start()
    _, [node] = served_by(zuul, zuul.submit(["debian-e2-small"]))
    # The attempt whose instance ended TERMINATED deleted it.
    wait_for(lambda: fake.names() == [node.external_id], timeout=30)
    assert fake.counts["DELETE instance"] == 1


def test_leaked_instances_cleaned_up(start, fake, zuul):
    ours = {"nodepool_provider_name": "gcloud-provider",
            "nodepool_node_id": "0000099999",
            "nodepool_pool_name": "main"}
    fake.add_instance("np0000099999", ours)
    # nodepool 11 leaves TERMINATED instances alone in leak cleanup.
    fake.add_instance("np0000099998", dict(
        ours, nodepool_node_id="0000099998"), status="TERMINATED")
    fake.add_instance("other", {"nodepool_provider_name": "other",
                                "nodepool_node_id": "1"})
    fake.add_instance("untagged")
    start()
    wait_for(lambda: "np0000099999" not in fake.names(), timeout=30)
    assert fake.names() == ["np0000099998", "other", "untagged"]
    assert not nodes_of(zuul, NodeState.READY)


@pytest.mark.parametrize("how", ["drop", "error"])
def test_lost_insert_answer_finds_the_instance(start, fake, zuul, how):
    # GCE made the instance, the answer never arrived: the launcher finds
    # it by name instead of inserting a second one.
    fake.http_faults.lose_answer("POST instances", how)
    start()
    _, [node] = served_by(zuul, zuul.submit(["debian-e2-small"]))
    assert fake.counts["POST instances"] == 1
    assert fake.names() == [node.external_id]


def test_failed_insert_not_made_is_retried(start, fake, zuul):
    # A 503 before GCE did anything: no instance turns up, so after a few
    # listings the attempt fails and the next one inserts again.
    fake.http_faults.fail("POST instances", 503, {"error": {
        "code": 503, "message": "Backend Error",
        "errors": [{"reason": "backendError", "message": "Backend Error"}]}})
    start()
    _, [node] = served_by(zuul, zuul.submit(["debian-e2-small"]))
    assert fake.counts["POST instances"] == 2
    assert fake.names() == [node.external_id]


def test_instance_never_running_times_out_cleanly(start, fake, zuul):
    fake.stall_next(2)
    start(retries=2, launch_timeout=1)
    done = zuul.wait_for_request(zuul.submit(["debian-e2-small"]),
                                 timeout=30)
    assert done.state == RequestState.FAILED
    assert fake.counts["POST instances"] == 2
    wait_for(lambda: not read_nodes(zuul.kazoo) and not fake.names(),
             timeout=30, message="a timed-out launch left something")
