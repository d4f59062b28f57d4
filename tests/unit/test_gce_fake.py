# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The fake Compute Engine API itself, driven by the stock
google-cloud-compute REST clients (anonymous credentials, the fake's
loopback endpoint): operations that finish later, instance states, paging,
and GCE's error bodies as the client parses them."""

import pytest
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from tests.fakes.gce import FakeGce, rate_limit_body
from tests.fixtures.waits import wait_for

PROJECT, ZONE, REGION = "nodepool-project", "us-central1-a", "us-central1"


@pytest.fixture
def fake():
    fake = FakeGce(step=0.02, page_size=2).start()
    yield fake
    fake.stop()


def client(cls, fake):
    return cls(credentials=AnonymousCredentials(), transport="rest",
               client_options=ClientOptions(api_endpoint=fake.url))


@pytest.fixture
def instances(fake):
    return client(compute_v1.InstancesClient, fake)


@pytest.fixture
def operations(fake):
    return client(compute_v1.ZoneOperationsClient, fake)


def body(name, machine_type="e2-small", disk_type="pd-standard",
         image="projects/debian-cloud/global/images/debian-12-bookworm-v1"):
    return compute_v1.Instance(
        name=name,
        machine_type="zones/%s/machineTypes/%s" % (ZONE, machine_type),
        disks=[compute_v1.AttachedDisk(
            boot=True, auto_delete=True,
            initialize_params=compute_v1.AttachedDiskInitializeParams(
                source_image=image, disk_size_gb=10,
                disk_type="zones/%s/diskTypes/%s" % (ZONE, disk_type)))],
        network_interfaces=[compute_v1.NetworkInterface(
            network="global/networks/default",
            access_configs=[compute_v1.AccessConfig(
                type_="ONE_TO_ONE_NAT", name="External NAT")])],
        metadata=compute_v1.Metadata(items=[
            compute_v1.Items(key="nodepool_node_id", value="0000000001")]))


def insert(instances, name, **kwargs):
    return instances.insert_unary(project=PROJECT, zone=ZONE,
                                  instance_resource=body(name, **kwargs))


def op_status(operations, op):
    return operations.get(project=PROJECT, zone=ZONE, operation=op.name)


def test_insert_runs_asynchronously_to_running(fake, instances, operations):
    op = insert(instances, "np0000000001")
    assert op.status == compute_v1.Operation.Status.PENDING
    seen = set()

    def finished():
        current = op_status(operations, op)
        record = fake.instance("np0000000001")
        seen.add(record["status"])
        return current.status == compute_v1.Operation.Status.DONE
    wait_for(finished, timeout=10)
    assert "error" not in fake.operations[op.name]
    server = instances.get(project=PROJECT, zone=ZONE,
                           instance="np0000000001")
    assert server.status == "RUNNING"
    assert seen <= {"PENDING", "PROVISIONING", "STAGING", "RUNNING"}
    assert server.network_interfaces[0].network_i_p.startswith("10.128.")
    assert server.network_interfaces[0].access_configs[0].nat_i_p
    assert {i.key: i.value for i in server.metadata.items} == {
        "nodepool_node_id": "0000000001"}
    assert fake.counts["POST instances"] == 1


def test_list_is_paged_and_empty_page_has_no_items(fake, instances):
    assert list(instances.list(project=PROJECT, zone=ZONE)) == []
    for index in range(5):
        fake.add_instance("planted-%d" % index)
    names = [i.name for i in instances.list(project=PROJECT, zone=ZONE)]
    assert names == ["planted-%d" % i for i in range(5)]
    # Two per page: three list calls.
    assert fake.counts["GET instances"] == 1 + 3


def test_delete_goes_stopping_then_gone(fake, instances, operations):
    fake.add_instance("np0000000002")
    op = instances.delete_unary(project=PROJECT, zone=ZONE,
                                instance="np0000000002")
    assert fake.instance("np0000000002")["status"] == "STOPPING"
    wait_for(lambda: op_status(operations, op).status ==
             compute_v1.Operation.Status.DONE, timeout=10)
    with pytest.raises(gexc.NotFound) as info:
        instances.get(project=PROJECT, zone=ZONE, instance="np0000000002")
    assert info.value.errors[0]["reason"] == "notFound"
    with pytest.raises(gexc.NotFound):
        instances.delete_unary(project=PROJECT, zone=ZONE,
                               instance="np0000000002")


def test_capacity_error_ends_the_operation(fake, instances, operations):
    fake.fail_operations(count=1)
    op = insert(instances, "np0000000003")
    wait_for(lambda: op_status(operations, op).status ==
             compute_v1.Operation.Status.DONE, timeout=10)
    done = op_status(operations, op)
    assert done.error.errors[0].code == "ZONE_RESOURCE_POOL_EXHAUSTED"
    assert done.http_error_status_code == 503
    assert fake.names() == []


def test_terminated_instance(fake, instances, operations):
    fake.terminate_next()
    op = insert(instances, "np0000000004")
    wait_for(lambda: op_status(operations, op).status ==
             compute_v1.Operation.Status.DONE, timeout=10)
    assert fake.instance("np0000000004")["status"] == "TERMINATED"


def test_quota_refusal_is_a_403_quota_exceeded(fake, instances):
    fake.quotas["INSTANCES"] = 1.0
    insert(instances, "np0000000005")
    with pytest.raises(gexc.Forbidden) as info:
        insert(instances, "np0000000006")
    assert info.value.errors[0]["reason"] == "quotaExceeded"
    assert "INSTANCES" in info.value.message
    regions = client(compute_v1.RegionsClient, fake)
    region = regions.get(project=PROJECT, region=REGION)
    quotas = {q.metric: (q.limit, q.usage) for q in region.quotas}
    assert quotas["INSTANCES"] == (1.0, 1.0)
    assert quotas["CPUS"] == (24.0, 2.0)


def test_bad_inserts_refused(fake, instances):
    with pytest.raises(gexc.NotFound):
        insert(instances, "np1", machine_type="no-such-type")
    with pytest.raises(gexc.NotFound):
        insert(instances, "np2", image="projects/x/global/images/none")
    with pytest.raises(gexc.BadRequest):
        insert(instances, "np3", disk_type="standard")
    with pytest.raises(gexc.BadRequest):
        insert(instances, "NP_4")
    insert(instances, "np5")
    with pytest.raises(gexc.Conflict):
        insert(instances, "np5")


def test_injected_rate_limit(fake, instances):
    fake.http_faults.fail("GET instances", 429, rate_limit_body(),
                          retry_after=1)
    with pytest.raises(gexc.TooManyRequests) as info:
        list(instances.list(project=PROJECT, zone=ZONE))
    assert info.value.errors[0]["reason"] == "rateLimitExceeded"
    assert info.value.response.headers["Retry-After"] == "1"
    assert list(instances.list(project=PROJECT, zone=ZONE)) == []


def test_lookups(fake):
    types = client(compute_v1.MachineTypesClient, fake)
    found = types.get(project=PROJECT, zone=ZONE, machine_type="f1-micro")
    assert (found.guest_cpus, found.memory_mb) == (1, 614)
    images = client(compute_v1.ImagesClient, fake)
    image = images.get_from_family(project="debian-cloud",
                                   family="debian-12")
    assert image.self_link.endswith(
        "/projects/debian-cloud/global/images/debian-12-bookworm-v1")
    with pytest.raises(gexc.NotFound):
        images.get_from_family(project="debian-cloud", family="none")
    with pytest.raises(gexc.NotFound):
        types.get(project="other-project", zone=ZONE,
                  machine_type="f1-micro")
