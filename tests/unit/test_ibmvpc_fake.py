# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The fake IBM Cloud (tests/fakes/ibmvpc.py) as the real SDKs see it:
IAM tokens, query parameters, pagination, asynchronous states, error
bodies and faults."""

import pytest
import requests
from ibm_cloud_sdk_core import ApiException

from nodepool.driver.ibmvpc.clients import IbmClients
from tests.fakes.ibmvpc import FakeIbmVpc
from tests.fixtures.waits import wait_for


@pytest.fixture
def clients(ibmvpc_fake):
    return IbmClients.from_credentials(ibmvpc_fake.credentials, "us-south")


def _group(fake):
    return {"id": fake.group_id("Default")}


def _instance_body(fake, name="np1"):
    subnet = fake.by_name("subnets", "sn-nodepool")
    image = fake.by_name("images", "ibm-debian-12")
    return {"name": name, "profile": {"name": "cx2-2x4"},
            "resource_group": _group(fake), "image": {"id": image["id"]},
            "zone": {"name": "us-south-1"},
            "primary_network_interface": {"name": "eth0",
                                          "subnet": {"id": subnet["id"]}}}


def test_token_and_lists_through_the_sdk(ibmvpc_fake, clients):
    vpcs = clients.vpc.list_vpcs().get_result()["vpcs"]
    assert [v["name"] for v in vpcs] == ["np-vpc"]
    groups = clients.resource_manager.list_resource_groups().get_result()
    assert [g["name"] for g in groups["resources"]] == ["Default"]
    assert ibmvpc_fake.counts["POST token"] == 1


def test_wrong_api_key_is_refused(ibmvpc_fake, tmp_path):
    path = ibmvpc_fake.write_credentials(tmp_path / "bad.env",
                                         api_key="wrong")
    bad = IbmClients.from_credentials(path, "us-south")
    with pytest.raises(ApiException) as info:
        bad.vpc.list_vpcs()
    assert info.value.status_code == 400
    assert ibmvpc_fake.counts["GET vpcs"] == 0


def test_version_and_generation_are_required(ibmvpc_fake, clients):
    token = clients.vpc.authenticator.token_manager.get_token()
    headers = {"Authorization": "Bearer " + token}
    url = ibmvpc_fake.url + "/v1/vpcs"
    missing = requests.get(url, headers=headers, timeout=10)
    assert missing.status_code == 400
    assert missing.json()["errors"][0]["code"] == "missing_version"
    wrong = requests.get(url, params={"version": "2024-04-30",
                                      "generation": "1"},
                         headers=headers, timeout=10)
    assert wrong.json()["errors"][0]["code"] == "bad_generation"
    no_token = requests.get(url, params={"version": "2024-04-30",
                                         "generation": "2"}, timeout=10)
    assert no_token.status_code == 401


def test_pages_follow_next_start(ibmvpc_fake, clients):
    for number in range(5):
        ibmvpc_fake.add_image("extra-%d" % number, owner_type="user")
    first = clients.vpc.list_images(limit=3).get_result()
    assert len(first["images"]) == 3 and first["total_count"] == 7
    assert "start=3" in first["next"]["href"]
    last = clients.vpc.list_images(limit=3, start="6").get_result()
    assert len(last["images"]) == 1 and "next" not in last


def test_instance_becomes_running_then_is_deleted(ibmvpc_fake, clients):
    ibmvpc_fake.start_delay = 0.2
    created = clients.vpc.create_instance(
        _instance_body(ibmvpc_fake)).get_result()
    assert created["status"] == "pending"
    wait_for(lambda: ibmvpc_fake.by_name("instances", "np1")["status"]
             == "running", timeout=10)
    clients.vpc.delete_instance(created["id"])
    assert ibmvpc_fake.by_name("instances", "np1")["status"] == "deleting"
    wait_for(lambda: ibmvpc_fake.names("instances") == [], timeout=10)
    with pytest.raises(ApiException) as info:
        clients.vpc.delete_instance(created["id"])
    assert info.value.status_code == 404


def test_failed_start_has_a_reason(ibmvpc_fake, clients):
    ibmvpc_fake.fail_instances(1, code="cannot_start_capacity")
    clients.vpc.create_instance(_instance_body(ibmvpc_fake))
    wait_for(lambda: ibmvpc_fake.by_name("instances", "np1")["status"]
             == "failed", timeout=10)
    reasons = ibmvpc_fake.by_name("instances", "np1")["status_reasons"]
    assert reasons[0]["code"] == "cannot_start_capacity"


def test_fip_becomes_available_and_attaches(ibmvpc_fake, clients):
    fip = clients.vpc.create_floating_ip({
        "name": "np1", "resource_group": _group(ibmvpc_fake),
        "zone": {"name": "us-south-1"}}).get_result()
    assert fip["status"] == "pending"
    vm = clients.vpc.create_instance(_instance_body(ibmvpc_fake)).get_result()
    nic = vm["primary_network_interface"]["id"]
    with pytest.raises(ApiException) as info:
        clients.vpc.add_instance_network_interface_floating_ip(
            vm["id"], nic, fip["id"])
    assert info.value.status_code == 409
    wait_for(lambda: ibmvpc_fake.by_name("floating_ips", "np1")["status"]
             == "available", timeout=10)
    bound = clients.vpc.add_instance_network_interface_floating_ip(
        vm["id"], nic, fip["id"]).get_result()
    assert bound["target"]["id"] == nic


def test_errors_carry_the_api_body(ibmvpc_fake, clients):
    body = _instance_body(ibmvpc_fake)
    clients.vpc.create_instance(body)
    with pytest.raises(ApiException) as info:
        clients.vpc.create_instance(body)
    assert info.value.status_code == 400
    assert info.value.http_response.json()["errors"][0]["code"] == \
        "validation_unique_failed"
    ibmvpc_fake.max_instances = 1
    with pytest.raises(ApiException) as info:
        clients.vpc.create_instance(_instance_body(ibmvpc_fake, "np2"))
    assert "quota" in info.value.message


def test_injected_faults(ibmvpc_fake, clients):
    ibmvpc_fake.faults.fail("GET instances", 429, {"errors": [{
        "code": "too_many_requests", "message": "slow down"}]},
        retry_after=1)
    with pytest.raises(ApiException) as info:
        clients.vpc.list_instances()
    assert info.value.status_code == 429
    assert clients.vpc.list_instances().get_result()["instances"] == []


def test_fake_stops(tmp_path):
    fake = FakeIbmVpc().start()
    url = fake.url
    fake.stop()
    with pytest.raises(requests.ConnectionError):
        requests.post(url + "/identity/token", timeout=2)
