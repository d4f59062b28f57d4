# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The IBM VPC adapter on the fake IBM Cloud: startup lookups, ownership
by names, quota, image lookups, paging and error classes."""

import math
import textwrap

import pytest
from ibm_cloud_sdk_core import ApiException

from nodepool import exceptions
from nodepool.config.loader import load_config
from nodepool.driver.errors import ErrorClass
from nodepool.driver.ibmvpc import errors
from nodepool.driver.ibmvpc.adapter import IbmVpcAdapter
from nodepool.driver.ibmvpc.statemachines import node_metadata

CONFIG = """
labels:
  - name: small
  - name: big
providers:
  - name: ibm
    driver: ibmvpc
    vpc: {vpc}
    region: us-south
    zone: us-south-1
    subnet: sn-nodepool
    credentials-file: {credentials}
    rate: 100
    object-storage:
      instance-name: np-cos
      endpoint: {cos}
      bucket-name: np-images
    quota:
      instances: 4
      ram: 8192
    cloud-images:
      - name: debian
        username: debian
        image-name: ibm-debian-12
      - name: missing
        username: debian
        image-filter:
          operating-system:
            family: Plan 9
    pools:
      - name: main
        labels:
          - name: small
            profile: cx2-2x4
            cloud-image: debian
      - name: other
        labels:
          - name: big
            profile: nx9-9x99
            cloud-image: missing
"""


@pytest.fixture
def make_adapter(ibmvpc_fake, tmp_path):
    adapters = []

    def make(vpc="np-vpc"):
        path = tmp_path / ("nodepool-%d.yaml" % len(adapters))
        path.write_text(textwrap.dedent(CONFIG).format(
            vpc=vpc, credentials=ibmvpc_fake.credentials,
            cos=ibmvpc_fake.cos.url))
        provider = load_config(str(path)).providers["ibm"]
        adapter = IbmVpcAdapter(provider, warm=False)
        adapters.append(adapter)
        return adapter
    yield make
    for adapter in adapters:
        adapter.stop()


def test_startup_creates_pool_resource_groups(ibmvpc_fake, make_adapter):
    adapter = make_adapter()
    setup = adapter.setup()
    assert setup.vpc["name"] == "np-vpc"
    for pool in ("main", "other"):
        assert ibmvpc_fake.group_id("np_ibm_%s" % pool) == \
            setup.groups["np_ibm_%s" % pool]
    order = [route for route in ibmvpc_fake.counts if route != "POST token"]
    assert order[:3] == ["GET vpcs", "GET resource_groups",
                         "POST resource_groups"]
    # Once only.
    adapter.setup()
    assert ibmvpc_fake.counts["GET vpcs"] == 1


def test_unknown_vpc_is_a_configuration_error(make_adapter):
    adapter = make_adapter(vpc="nope")
    with pytest.raises(exceptions.RuntimeConfigurationException):
        adapter.setup()


def test_lists_follow_pages(ibmvpc_fake, make_adapter):
    for number in range(7):
        ibmvpc_fake.add_image("extra-%d" % number)
    ibmvpc_fake.page_size = 2
    adapter = make_adapter()
    images = adapter.list_all("images", adapter.vpc.list_images)
    assert len(images) == 9
    assert ibmvpc_fake.counts["GET images"] == 5


def test_quota(make_adapter):
    adapter = make_adapter()
    limits = adapter.get_quota_limits()
    assert limits.get("instances") == 4 and limits.get("ram") == 8192
    assert limits.get("cores") == math.inf
    small = adapter.provider.pools["main"].labels["small"]
    quota = adapter.get_quota_for_label(small)
    assert (quota.get("cores"), quota.get("ram"), quota.get(
        "instances")) == (2, 4096, 1)
    # An unknown profile counts as an instance only.
    big = adapter.provider.pools["other"].labels["big"]
    assert adapter.get_quota_for_label(big).get("cores") == 0


def test_label_ready_looks_for_the_image(make_adapter):
    adapter = make_adapter()
    pools = adapter.provider.pools
    assert adapter.label_ready(pools["main"].labels["small"])
    assert not adapter.label_ready(pools["other"].labels["big"])


def test_leaks_are_recognised_by_name_and_group(ibmvpc_fake, make_adapter):
    adapter = make_adapter()
    adapter.setup()
    ibmvpc_fake.plant_instance("np0042", "np_ibm_main")
    ibmvpc_fake.plant_instance("np0043", "Default")
    ibmvpc_fake.plant_instance("build-1", "np_ibm_main")
    ibmvpc_fake.plant_floating_ip("np0044", "np_ibm_other")
    found = {(r.type, r.id): r.metadata for r in adapter.list_resources()}
    assert found == {
        ("instance", "np0042"): {"nodepool_node_id": "0042",
                                 "nodepool_provider_name": "ibm",
                                 "nodepool_pool_name": "main"},
        ("fip", "np0044"): {"nodepool_node_id": "0044",
                            "nodepool_provider_name": "ibm",
                            "nodepool_pool_name": "other"}}


def test_node_metadata():
    assert node_metadata("np12", "np_a-b_c") == {
        "nodepool_node_id": "12", "nodepool_provider_name": "a-b",
        "nodepool_pool_name": "c"}
    assert node_metadata("np12", "np_a_b_c") == {}
    assert node_metadata("npx", "np_a_b") == {}
    assert node_metadata("np12", None) == {}


@pytest.mark.parametrize("status,code,message,expected", [
    (429, "too_many_requests", "", ErrorClass.THROTTLE),
    (503, "service_unavailable", "", ErrorClass.SERVER),
    (400, "over_quota", "", ErrorClass.QUOTA),
    (403, "forbidden", "Exceeded the quota", ErrorClass.QUOTA),
    (400, "insufficient_capacity", "", ErrorClass.CAPACITY),
    (404, "not_found", "", ErrorClass.NOT_FOUND),
    (400, "image_not_found", "", ErrorClass.NOT_FOUND),
    (400, "validation_unique_failed", "", ErrorClass.OTHER),
])
def test_error_classes(status, code, message, expected):
    assert errors.classify_code(code, message, status) is expected


def test_start_failures():
    assert isinstance(errors.start_failure("vm", [
        {"code": "cannot_start_capacity", "message": "no room"}]),
        exceptions.CapacityException)
    assert isinstance(errors.start_failure("vm", []),
                      exceptions.LaunchStatusException)


def test_retry_after_read_from_the_answer(ibmvpc_fake, make_adapter):
    adapter = make_adapter()
    ibmvpc_fake.faults.fail("GET vpcs", 429, {"errors": [{
        "code": "too_many_requests", "message": "slow down"}]},
        retry_after=0.5)
    with pytest.raises(ApiException) as info:
        adapter.vpc.list_vpcs()
    assert errors.retry_after(info.value) == 0.5
    assert errors.classify(info.value) is ErrorClass.THROTTLE


def test_uploads_recognised_by_name_and_group(ibmvpc_fake, make_adapter):
    adapter = make_adapter()
    cos = ibmvpc_fake.cos
    for key in ("npimage0001-0002.qcow2", "npimage0003.qcow2", "other.raw"):
        cos.objects[("np-images", key)] = b"x"
    ibmvpc_fake.add_resource_group("npimages_ibm")
    groups = {name: ibmvpc_fake.group_id(name)
              for name in ("npimages_ibm", "Default")}
    with ibmvpc_fake.lock:
        for name, group in (("npimage0001-0004", "npimages_ibm"),
                            ("npimage0005", "npimages_ibm"),
                            ("npimage0001-0006", "Default")):
            image = ibmvpc_fake.add_image(name, owner_type="user")
            image["resource_group"] = {"id": groups[group], "name": group}
    found = {(r.type, r.id): r.metadata for r in adapter.list_resources()
             if r.type in ("image", "object")}
    ours = {"nodepool_build_id": "0001", "nodepool_provider_name": "ibm"}
    image_id = ibmvpc_fake.by_name("images", "npimage0001-0004")["id"]
    assert found == {
        ("object", "npimage0001-0002.qcow2"): dict(
            ours, nodepool_upload_id="0002"),
        ("image", image_id): dict(ours, nodepool_upload_id="0004")}
    for resource in adapter.list_resources():
        if resource.type in ("image", "object"):
            adapter.delete_resource(resource)
    assert cos.keys() == ["npimage0003.qcow2", "other.raw"]
    assert ibmvpc_fake.by_name("images", "npimage0001-0004") is None
    assert ibmvpc_fake.by_name("images", "npimage0005") is not None
