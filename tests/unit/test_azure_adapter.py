# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The Azure adapter against the loopback fake ARM (tests/fakes/azure.py),
through the real azure-identity credential and azure-mgmt clients: create
and delete state machines, request bodies, failures, shared listings,
quota, leak cleanup and image hooks."""

import base64
import json
import logging
import time
import types

import pytest

from nodepool import exceptions
from nodepool.driver.azure import errors
from nodepool.driver.azure.adapter import AzureAdapter
from nodepool.driver.azure.bodies import generate_password
from nodepool.driver.azure.statemachines import AzureInstance
from tests.fakes.azure import SUBSCRIPTION
from tests.fixtures.adapters import AdapterEnv, label_of
from tests.fixtures.statemachines import (
    run_to_completion, run_until_error)
from tests.fixtures.waits import wait_for

LOG = logging.getLogger("tests.azure")

CONFIG = """
labels:
  - name: small
  - name: special
  - name: custom
  - name: filtered
  - name: gallery
  - name: shared
  - name: bad-size
diskimages:
  - name: custom-image
providers:
  - name: azure
    driver: azure
    location: centralus
    resource-group: nodepool
    resource-group-location: centralus
    auth-path: {auth_path}
    network: np-net
    rate: {rate}
    tags:
      owner: ci
      team: provider
    cloud-images:
      - name: ubuntu
        username: zuul
        key: ssh-rsa AAAAkey
        image-reference:
          sku: 22_04-lts
          publisher: Canonical
          version: latest
          offer: ubuntu
      - name: windows
        username: Administrator
        password: Secret123secret
        image-id: /subscriptions/x/images/win
      - name: filtered
        username: zuul
        generate-password: true
        image-filter:
          name: np-*
          tags:
            team: ci
      - name: community
        username: zuul
        community-gallery-image:
          gallery-name: public-gallery
          name: debian
          version: "1.0"
      - name: shared
        username: zuul
        shared-gallery-image:
          gallery-name: private-gallery
          name: fedora
    diskimages:
      - name: custom-image
        username: builder
        key: ssh-rsa AAAAcustom
    pools:
      - name: main
        max-servers: 10
        labels:
          - name: small
            cloud-image: ubuntu
            hardware-profile:
              vm-size: Standard_B1ls
            tags:
              team: label
              nodepool_node_id: forged
            dynamic-tags:
              tenant: "{{request.tenant_name}}"
              broken: "{{request.nothing.here}}"
            user-data: "#cloud-config"
            custom-data: "#!/bin/sh"
            volume-size: 64
          - name: special
            cloud-image: windows
            hardware-profile:
              vm-size: Standard_D2s_v3
            use-spot: true
            volume-type: Premium_LRS
            dedicated-host-group: /subscriptions/x/hostGroups/hg
          - name: custom
            diskimage: custom-image
            hardware-profile:
              vm-size: Standard_B2s
          - name: filtered
            cloud-image: filtered
            hardware-profile:
              vm-size: Standard_B1ls
          - name: gallery
            cloud-image: community
            hardware-profile:
              vm-size: Standard_B1ls
          - name: shared
            cloud-image: shared
            hardware-profile:
              vm-size: Standard_B1ls
          - name: bad-size
            cloud-image: ubuntu
            hardware-profile:
              vm-size: Standard_Z99
      - name: private
        max-servers: 10
        public-ipv4: false
        labels:
          - name: small
            cloud-image: ubuntu
            hardware-profile:
              vm-size: Standard_B1ls
      - name: dual
        max-servers: 10
        public-ipv6: true
        labels:
          - name: small
            cloud-image: ubuntu
            hardware-profile:
              vm-size: Standard_B1ls
      - name: internal
        max-servers: 10
        use-internal-ip: true
        labels:
          - name: small
            cloud-image: ubuntu
            hardware-profile:
              vm-size: Standard_B1ls
"""


@pytest.fixture
def fake(azure_fake):
    """The fake cloud with its virtual network ``np-net``."""
    return azure_fake


class Env(AdapterEnv):
    provider = "azure"
    rate = 1000
    adapter_defaults = dict(AdapterEnv.adapter_defaults, listing_gap=0.02)

    def __init__(self, fake, tmp_path):
        super().__init__(tmp_path, CONFIG)
        self.fake = fake
        self.auth_path = tmp_path / "azure.json"
        self.auth_path.write_text(json.dumps(fake.auth_data()))

    def values(self):
        return dict(auth_path=self.auth_path)

    def make_adapter(self, provider, **kwargs):
        return AzureAdapter(provider, **kwargs)


@pytest.fixture
def env(fake, tmp_path):
    env = Env(fake, tmp_path)
    yield env
    env.close()


def create_sm(adapter, label_name, node_id, pool="main", image=None,
              request=None, az=None):
    metadata = {"nodepool_node_id": str(node_id),
                "nodepool_pool_name": pool,
                "nodepool_provider_name": "azure"}
    return adapter.get_create_state_machine(
        "np%s" % node_id, label_of(adapter, label_name, pool), image,
        metadata, request, az, LOG)


def delete(adapter, external_id):
    sm = adapter.get_delete_state_machine(external_id, LOG)
    run_to_completion([sm])
    assert sm.state == "complete"


def vm_props(fake, name):
    return fake.get("virtualMachines", name)["properties"]


# Creating ---------------------------------------------------------------

def test_create_and_delete_node(env, fake):
    adapter = env.adapter()
    request = types.SimpleNamespace(id="200-1", tenant_name="tenant-one")
    sm = create_sm(adapter, "small", 1, request=request)
    [instance] = run_to_completion([sm])
    assert isinstance(instance, AzureInstance)
    assert sm.external_id == instance.external_id == "np1"
    assert instance.ready and instance.cloud == "Azure"
    assert instance.region == "centralus" and instance.az is None
    pip = fake.get("publicIPAddresses", "np1-pip-v4")
    nic = fake.get("networkInterfaces", "np1-nic")
    assert instance.public_ipv4 == pip["properties"]["ipAddress"]
    assert instance.private_ipv4 == nic["properties"]["ipConfigurations"][
        0]["properties"]["privateIPAddress"]
    assert instance.interface_ip == instance.public_ipv4
    assert instance.public_ipv6 is None
    assert instance.node_properties == {"spot": False}
    assert instance.get_quota_information().get_resources() == {
        "cores": 1, "instances": 1, "ram": 512, "standardBSFamily": 1}
    # What was sent: the NIC on the subnet with the public IP, the VM on
    # the NIC with the image, key, data and disk of the label.
    config = nic["properties"]["ipConfigurations"][0]
    assert config["properties"]["subnet"]["id"].endswith(
        "/virtualNetworks/np-net/subnets/default")
    assert config["properties"]["publicIPAddress"]["id"] == pip["id"]
    assert pip["sku"]["name"] == "Standard"
    assert pip["properties"]["publicIPAllocationMethod"] == "Static"
    props = vm_props(fake, "np1")
    assert props["hardwareProfile"] == {"vmSize": "Standard_B1ls"}
    assert props["storageProfile"]["imageReference"] == {
        "publisher": "Canonical", "offer": "ubuntu", "sku": "22_04-lts",
        "version": "latest"}
    os_disk = props["storageProfile"]["osDisk"]
    assert os_disk["name"] == "np1-disk" and os_disk["diskSizeGB"] == 64
    assert os_disk["deleteOption"] == "Delete"
    os_profile = props["osProfile"]
    assert os_profile["computerName"] == "np1"
    assert os_profile["adminUsername"] == "zuul"
    assert "adminPassword" not in os_profile
    assert os_profile["linuxConfiguration"] == {
        "disablePasswordAuthentication": True,
        "ssh": {"publicKeys": [{
            "path": "/home/zuul/.ssh/authorized_keys",
            "keyData": "ssh-rsa AAAAkey"}]}}
    assert base64.b64decode(os_profile["customData"]) == b"#!/bin/sh"
    assert base64.b64decode(props["userData"]) == b"#cloud-config"
    assert props["networkProfile"]["networkInterfaces"][0]["id"] == nic["id"]
    assert "priority" not in props
    assert fake.names("disks") == ["np1-disk"]
    # One PUT per resource, the resource group once.
    for key in ("PUT publicIPAddresses", "PUT networkInterfaces",
                "PUT virtualMachines", "PUT resourceGroups"):
        assert fake.counts[key] == 1, key
    assert fake.counts["token"] == 1
    assert fake.counts["GET virtualMachines"] == 0
    delete(adapter, instance.external_id)
    assert fake.all_names() == {}
    for key in ("DELETE virtualMachines", "DELETE networkInterfaces",
                "DELETE disks"):
        assert fake.counts[key] == 1, key


def test_tags_on_every_resource(env, fake):
    adapter = env.adapter()
    request = types.SimpleNamespace(id="200-1", tenant_name="tenant-one")
    run_to_completion([create_sm(adapter, "small", 7, request=request)])
    expected = {"owner": "ci", "team": "label", "tenant": "tenant-one",
                "nodepool_node_id": "7", "nodepool_pool_name": "main",
                "nodepool_provider_name": "azure"}
    for rtype, name in (("virtualMachines", "np7"),
                        ("networkInterfaces", "np7-nic"),
                        ("publicIPAddresses", "np7-pip-v4")):
        assert fake.get(rtype, name)["tags"] == expected, rtype
    [instance] = adapter.list_instances()
    assert instance.metadata == expected


def test_private_pool_has_no_public_ip(env, fake):
    adapter = env.adapter()
    sm = create_sm(adapter, "small", 2, pool="private")
    [instance] = run_to_completion([sm])
    assert fake.names("publicIPAddresses") == []
    assert fake.counts["PUT publicIPAddresses"] == 0
    assert instance.public_ipv4 is None and instance.public_ipv6 is None
    assert instance.private_ipv4
    assert instance.interface_ip == instance.private_ipv4
    nic = fake.get("networkInterfaces", "np2-nic")
    assert "publicIPAddress" not in nic["properties"]["ipConfigurations"][
        0]["properties"]
    delete(adapter, "np2")
    assert fake.all_names() == {}
    assert fake.counts["DELETE publicIPAddresses"] == 0


def test_dual_stack_pool(env, fake):
    adapter = env.adapter()
    sm = create_sm(adapter, "small", 3, pool="dual")
    [instance] = run_to_completion([sm])
    assert fake.names("publicIPAddresses") == ["np3-pip-v4", "np3-pip-v6"]
    assert instance.public_ipv4 and ":" in instance.public_ipv6
    assert instance.private_ipv4 and ":" in instance.private_ipv6
    configs = fake.get("networkInterfaces", "np3-nic")["properties"][
        "ipConfigurations"]
    assert [c["properties"]["privateIPAddressVersion"] for c in configs] == [
        "IPv4", "IPv6"]
    assert [c["properties"]["primary"] for c in configs] == [True, False]
    assert instance.interface_ip == instance.public_ipv4
    delete(adapter, "np3")
    assert fake.all_names() == {}


def test_internal_ip_pool_instance_offers_both_addresses(env, fake):
    # The instance offers its public address; the launcher picks the
    # private one for use-internal-ip pools (test_parity_drivers.py).
    adapter = env.adapter()
    sm = create_sm(adapter, "small", 4, pool="internal")
    [instance] = run_to_completion([sm])
    assert instance.public_ipv4 and instance.private_ipv4
    assert instance.interface_ip == instance.public_ipv4


def test_spot_disk_type_host_group_and_password(env, fake):
    adapter = env.adapter()
    [instance] = run_to_completion([create_sm(adapter, "special", 5, az="2")])
    props = vm_props(fake, "np5")
    assert props["priority"] == "Spot"
    assert props["evictionPolicy"] == "Delete"
    assert props["billingProfile"] == {"maxPrice": -1}
    assert props["hostGroup"] == {"id": "/subscriptions/x/hostGroups/hg"}
    assert props["storageProfile"]["osDisk"]["managedDisk"][
        "storageAccountType"] == "Premium_LRS"
    assert props["storageProfile"]["imageReference"] == {
        "id": "/subscriptions/x/images/win"}
    assert props["osProfile"]["adminPassword"] == "Secret123secret"
    assert "linuxConfiguration" not in props["osProfile"]
    assert fake.get("virtualMachines", "np5")["zones"] == ["2"]
    assert fake.get("publicIPAddresses", "np5-pip-v4")["zones"] == ["2"]
    assert instance.az == "2" and instance.node_properties == {"spot": True}
    assert instance.get_quota_information().get_resources() == {
        "cores": 2, "instances": 1, "ram": 8192, "lowPriorityCores": 2}


def test_image_sources(env, fake):
    adapter = env.adapter()
    fake.add_resource("images", "np-image-1", tags={"team": "ci"})
    fake.add_resource("images", "np-image-3", tags={"team": "ci"})
    fake.add_resource("images", "np-image-9", tags={"team": "other"})
    fake.add_resource("images", "zz-image", tags={"team": "ci"})
    fake.add_resource("images", "np-image-5", {"provisioningState": "Failed"},
                      tags={"team": "ci"})
    run_to_completion([
        create_sm(adapter, "custom", 10, image="custom-image-123"),
        create_sm(adapter, "filtered", 11),
        create_sm(adapter, "gallery", 12),
        create_sm(adapter, "shared", 13)])
    prefix = "/subscriptions/%s/resourceGroups/nodepool/providers/" \
        "Microsoft.Compute/images/" % SUBSCRIPTION

    def reference(name):
        return vm_props(fake, name)["storageProfile"]["imageReference"]
    assert reference("np10") == {"id": prefix + "custom-image-123"}
    assert vm_props(fake, "np10")["osProfile"]["adminUsername"] == "builder"
    assert reference("np11") == {"id": prefix + "np-image-3"}
    password = vm_props(fake, "np11")["osProfile"]["adminPassword"]
    assert len(password) == 64
    assert reference("np12") == {"communityGalleryImageId":
                                 "/CommunityGalleries/public-gallery/Images/"
                                 "debian/Versions/1.0"}
    assert reference("np13") == {"sharedGalleryImageId":
                                 "/SharedGalleries/private-gallery/Images/"
                                 "fedora"}
    assert adapter.label_ready(label_of(adapter, "filtered"))
    assert adapter.label_ready(label_of(adapter, "small"))


def test_image_filter_without_match_is_not_ready(env, fake):
    adapter = env.adapter()
    assert not adapter.label_ready(label_of(adapter, "filtered"))
    error = run_until_error(create_sm(adapter, "filtered", 14))
    assert isinstance(error, exceptions.LaunchNodepoolException)


def test_generated_password():
    password = generate_password()
    assert len(password) == 64
    assert any(c.isupper() for c in password)
    assert any(c.islower() for c in password)
    assert any(c.isdigit() for c in password)


def test_slow_provisioning_waits(env, fake):
    adapter = env.adapter()
    fake.hold("virtualMachines")
    sm = create_sm(adapter, "small", 20)
    wait_for(lambda: sm.advance() or sm.state == "waiting for vm")
    fetches = adapter.vms.fetches
    # Still Creating through several listings: the machine keeps waiting.
    wait_for(lambda: sm.advance() or adapter.vms.fetches >= fetches + 3)
    assert not sm.complete
    fake.release()
    [instance] = run_to_completion([sm])
    assert instance.ready
    assert fake.counts["PUT virtualMachines"] == 1


# Failures ---------------------------------------------------------------

def test_provisioning_failure_is_classified_and_cleaned_up(env, fake):
    adapter = env.adapter()
    fake.fail_provisioning("virtualMachines", "AllocationFailed",
                           "Allocation failed. We do not have sufficient "
                           "capacity for the requested VM size.")
    sm = create_sm(adapter, "small", 30)
    error = run_until_error(sm)
    assert isinstance(error, exceptions.CapacityException), error
    assert "AllocationFailed" in str(error)
    assert fake.counts["GET instanceView"] == 1
    assert sm.external_id == "np30"
    delete(adapter, sm.external_id)
    assert fake.all_names() == {}


def test_provisioning_failure_without_reason(env, fake):
    adapter = env.adapter()
    fake.fail_provisioning("networkInterfaces")
    error = run_until_error(create_sm(adapter, "small", 31))
    assert isinstance(error, exceptions.LaunchStatusException)
    assert fake.counts["PUT virtualMachines"] == 0
    delete(adapter, "np31")
    assert fake.all_names() == {}


def test_quota_refusal_is_quota_exception(env, fake):
    adapter = env.adapter()
    fake.fail_put("virtualMachines", "OperationNotAllowed",
                  "Operation could not be completed as it results in "
                  "exceeding approved Total Regional Cores quota.")
    sm = create_sm(adapter, "small", 32)
    error = run_until_error(sm)
    assert isinstance(error, exceptions.QuotaException), error
    # The public IP and NIC made before are left for the delete.
    assert fake.names("networkInterfaces") == ["np32-nic"]
    delete(adapter, sm.external_id)
    assert fake.all_names() == {}


def test_public_ip_limit_is_quota_exception(env, fake):
    adapter = env.adapter()
    fake.fail_put("publicIPAddresses", "PublicIPCountLimitReached",
                  "Cannot create more than 10 public IP addresses",
                  status=400)
    error = run_until_error(create_sm(adapter, "small", 33))
    assert isinstance(error, exceptions.QuotaException)


def test_unavailable_size_is_capacity_error(env, fake):
    adapter = env.adapter()
    error = run_until_error(create_sm(adapter, "bad-size", 34))
    assert isinstance(error, exceptions.CapacityException)
    assert "SkuNotAvailable" in str(error)


def test_other_refusal_is_launch_error(env, fake):
    adapter = env.adapter()
    fake.fail_put("virtualMachines", "InvalidParameter", "bad",
                  status=400)
    error = run_until_error(create_sm(adapter, "small", 35))
    assert type(error) is exceptions.LaunchStatusException


def test_error_classes():
    classify = errors.classify_code
    assert classify("OperationNotAllowed", "exceeding quota") is \
        errors.ErrorClass.QUOTA
    assert classify("OperationNotAllowed", "disk attached") is \
        errors.ErrorClass.OTHER
    assert classify("SkuNotAvailable") is errors.ErrorClass.CAPACITY
    assert classify("Whatever", status=404) is errors.ErrorClass.NOT_FOUND
    assert classify("Whatever", status=429) is errors.ErrorClass.THROTTLE
    assert classify(None, status=503) is errors.ErrorClass.SERVER
    failure = errors.provisioning_failure("VM x", [
        {"code": "ProvisioningState/failed/QuotaExceeded", "message": "m"}])
    assert isinstance(failure, exceptions.QuotaException)


# Deleting ---------------------------------------------------------------

def test_delete_of_missing_node_completes(env, fake):
    adapter = env.adapter()
    delete(adapter, "np404")
    assert fake.counts["DELETE virtualMachines"] == 1
    assert fake.counts["DELETE publicIPAddresses"] == 0


def test_delete_finds_public_ips_of_a_half_made_node(env, fake):
    adapter = env.adapter()
    fake.fail_put("networkInterfaces", "InvalidParameter", status=400)
    run_until_error(create_sm(adapter, "small", 405, pool="dual"))
    assert fake.names("publicIPAddresses") == ["np405-pip-v4",
                                               "np405-pip-v6"]
    delete(adapter, "np405")
    assert fake.all_names() == {}


def test_delete_waits_for_vm_before_nic(env, fake):
    adapter = env.adapter()
    run_to_completion([create_sm(adapter, "small", 40)])
    # The fake refuses to delete an attached NIC or disk or a public IP in
    # use, so a completed delete proves the order.
    delete(adapter, "np40")
    assert fake.all_names() == {}
    assert fake.counts["DELETE publicIPAddresses"] == 1


# Shared listings and rate limiting --------------------------------------

def test_parallel_creates_share_listings(env, fake):
    adapter = env.adapter(listing_interval=0.5)
    machines = [create_sm(adapter, "small", 100 + i) for i in range(6)]
    results = run_to_completion(machines)
    assert all(r.ready for r in results)
    assert fake.counts["PUT virtualMachines"] == 6
    # One listing serves many machines (without sharing, 6 machines polling
    # every 10 ms would make hundreds of calls).
    assert fake.counts["LIST virtualMachines"] < 20
    assert fake.counts["GET virtualMachines"] == 0
    run_to_completion([adapter.get_delete_state_machine(r.external_id, LOG)
                       for r in results])
    assert fake.all_names() == {}


def test_listing_pages(env, fake):
    fake.page_size = 2
    for i in range(5):
        fake.add_resource("virtualMachines", "other-%d" % i, {
            "hardwareProfile": {"vmSize": "Standard_B1ls"}})
    adapter = env.adapter()
    instances = adapter.list_instances()
    assert sorted(i.external_id for i in instances) == [
        "other-%d" % i for i in range(5)]
    assert fake.counts["LIST virtualMachines"] == 3


def test_calls_are_rate_limited(env, fake):
    adapter = env.adapter(rate=10)
    waits = []
    original = adapter.limiter.wait

    def wait():
        waits.append(original())
        return waits[-1]
    adapter.limiter.wait = wait
    run_to_completion([create_sm(adapter, "small", 50)])
    arm_calls = len(fake.requests)
    assert len(waits) >= arm_calls - 1  # the subnet lookup is cached
    assert sum(waits) > 0


def test_sdk_retries_of_throttled_calls_go_through_the_limiter(env, fake):
    """azure-core retries a 429 by itself: the limiter hears of each one
    and paces the retries like any other call."""
    adapter = env.adapter(rate=4)
    limiter = adapter.limiter
    assert limiter.adaptive  # the default
    fake.fail("LIST virtualMachines", 429, "SubscriptionRequestsThrottled",
              times=2, retry_after=0)
    started = time.monotonic()
    assert adapter.list_instances() == []
    took = time.monotonic() - started
    assert fake.counts["LIST virtualMachines"] == 1  # the one handled
    assert limiter.throttle_count == 2
    assert limiter.current_rate < 4
    # Each retry waited for its turn (the cloud asked for no wait at
    # all): the first at 2/s after the first cut, the second at 1/s.
    assert took >= 1.0


def test_fixed_rate_counts_sdk_throttles(env, fake):
    adapter = env.adapter(rate=4, adaptive_rate=False)
    fake.fail("LIST virtualMachines", 429, "SubscriptionRequestsThrottled",
              times=1, retry_after=0)
    assert adapter.list_instances() == []
    assert adapter.limiter.throttle_count == 1
    assert adapter.limiter.current_rate == 4


# Quota ------------------------------------------------------------------

def test_quota_limits_and_label_quota(env, fake):
    fake.limits.update({"cores": 40, "virtualMachines": 30,
                        "lowPriorityCores": 8})
    adapter = env.adapter()
    limits = adapter.get_quota_limits().get_resources()
    assert limits["cores"] == 40 and limits["instances"] == 30
    assert limits["standardBSFamily"] == 100
    assert limits["lowPriorityCores"] == 8
    adapter.get_quota_limits()
    assert fake.counts["LIST usages"] == 1
    assert adapter.get_quota_for_label(
        label_of(adapter, "custom")).get_resources() == {
        "cores": 2, "instances": 1, "ram": 4096, "standardBSFamily": 2}
    with pytest.raises(exceptions.RuntimeConfigurationException):
        adapter.get_quota_for_label(label_of(adapter, "bad-size"))
    assert fake.counts["LIST skus"] == 1


def test_list_instances_includes_unmanaged(env, fake):
    adapter = env.adapter()
    run_to_completion([create_sm(adapter, "small", 60)])
    fake.add_resource("virtualMachines", "somebody-else", {
        "hardwareProfile": {"vmSize": "Standard_D4s_v3"}})
    fake.add_resource("virtualMachines", "odd-size", {
        "hardwareProfile": {"vmSize": "Standard_Odd"}})
    # Quota accounting takes listings up to ten seconds old.
    assert adapter.vms.wait_newer(timeout=10)
    by_id = {i.external_id: i for i in adapter.list_instances()}
    assert set(by_id) == {"np60", "somebody-else", "odd-size"}
    assert by_id["odd-size"].get_quota_information().get_resources() == {
        "cores": 0, "instances": 1, "ram": 0}
    assert by_id["np60"].metadata["nodepool_node_id"] == "60"
    assert by_id["somebody-else"].metadata == {}
    assert by_id["somebody-else"].get_quota_information().get_resources() \
        == {"cores": 4, "instances": 1, "ram": 16384,
            "standardDSv3Family": 4}


# Leaks and images -------------------------------------------------------

def test_leaked_resources_listed_and_deleted(env, fake):
    adapter = env.adapter()
    tags = {"nodepool_provider_name": "azure", "nodepool_node_id": "999"}
    run_to_completion([create_sm(adapter, "small", 70)])
    fake.add_resource("networkInterfaces", "stray-nic", tags=tags)
    fake.add_resource("publicIPAddresses", "stray-pip", tags=tags)
    fake.add_resource("disks", "stray-disk", tags=tags)
    fake.add_resource("images", "stray-image", tags={
        "nodepool_provider_name": "azure", "nodepool_build_id": "1",
        "nodepool_upload_id": "2"})
    resources = {(r.type, r.id): r for r in adapter.list_resources()}
    assert set(resources) == {
        ("INSTANCE", "np70"), ("nic", "np70-nic"), ("pip", "np70-pip-v4"),
        ("disk", "np70-disk"), ("nic", "stray-nic"), ("pip", "stray-pip"),
        ("disk", "stray-disk"), ("image", "stray-image")}
    assert resources[("INSTANCE", "np70")].plural_metric_name == "INSTANCEs"
    assert resources[("nic", "stray-nic")].metadata == tags
    for key in (("nic", "stray-nic"), ("pip", "stray-pip"),
                ("disk", "stray-disk"), ("image", "stray-image"),
                ("INSTANCE", "np70")):
        adapter.delete_resource(resources[key])
    assert fake.all_names() == {}
    # Already gone: nothing to do.
    adapter.delete_resource(resources[("nic", "stray-nic")])


def test_image_hooks(env, fake):
    adapter = env.adapter()
    tags = {"nodepool_build_id": "0000000001", "nodepool_upload_id": "1",
            "nodepool_provider_name": "azure"}
    fake.add_resource("images", "custom-image-1", tags=tags)
    fake.add_resource("images", "foreign")
    images = {i.name: i for i in adapter.list_images()}
    assert set(images) == {"custom-image-1", "foreign"}
    assert images["custom-image-1"].metadata == tags
    adapter.delete_image("custom-image-1")
    assert fake.names("images") == ["foreign"]
    adapter.delete_image("/subscriptions/%s/resourceGroups/nodepool/"
                         "providers/Microsoft.Compute/images/foreign"
                         % SUBSCRIPTION)
    assert fake.names("images") == []
    adapter.delete_image("never-there")


def write_vhd(path):
    """A 'VHD' of 9 MiB + 512 bytes: data, 4 MiB of zeros, data."""
    mib = 1024 * 1024
    content = (bytes(range(256)) * (4 * mib // 256) + bytes(4 * mib)
               + b"tail" * (mib // 4) + b"f" * 512)
    path.write_bytes(content)
    return content


def test_upload_image(env, fake, tmp_path):
    adapter = env.adapter(poll_interval=0.01)
    content = write_vhd(tmp_path / "image.vhd")
    metadata = {"nodepool_build_id": "0000000007", "nodepool_upload_id": "3",
                "nodepool_provider_name": "azure"}
    provider_image = adapter.provider.diskimages["custom-image"]
    external_id = adapter.upload_image(
        provider_image, "custom-image-7-3", str(tmp_path / "image.vhd"),
        "vhd", metadata, "md5", "sha256")
    assert external_id == "custom-image-7-3"
    # The zero chunk was skipped; the image holds the whole file.
    assert fake.counts["PUT page"] == 2
    assert fake.image_data["custom-image-7-3"] == content
    image = fake.get("images", "custom-image-7-3")
    assert image["tags"] == dict(metadata, owner="ci", team="provider")
    assert image["properties"]["storageProfile"]["osDisk"]["osState"] == \
        "Generalized"
    # The upload disk is gone and its write access was revoked first.
    assert fake.names("disks") == []
    assert fake.counts["POST endGetAccess"] == 1
    # Nodes boot from it by name.
    run_to_completion([create_sm(adapter, "custom", 8, image=external_id)])
    assert vm_props(fake, "np8")["storageProfile"]["imageReference"][
        "id"].endswith("/images/custom-image-7-3")
    assert [i.name for i in adapter.list_images()] == ["custom-image-7-3"]


def test_failed_upload_leaves_no_disk(env, fake, tmp_path):
    adapter = env.adapter(poll_interval=0.01)
    write_vhd(tmp_path / "image.vhd")
    fake.fail_put("images", "InvalidParameter", "bad image", status=400)
    with pytest.raises(Exception, match="bad image"):
        adapter.upload_image(
            adapter.provider.diskimages["custom-image"], "img-1",
            str(tmp_path / "image.vhd"), "vhd", {}, "", "")
    assert fake.all_names() == {}
    (tmp_path / "odd.vhd").write_bytes(b"x" * 1000)
    with pytest.raises(exceptions.ImageCreateException, match="512"):
        adapter.upload_image(
            adapter.provider.diskimages["custom-image"], "img-2",
            str(tmp_path / "odd.vhd"), "vhd", {}, "", "")


# Credentials ------------------------------------------------------------

def test_bad_secret_fails_calls(env, fake, tmp_path):
    env.auth_path.write_text(json.dumps(fake.auth_data(
        clientSecret="wrong")))
    adapter = env.adapter()
    with pytest.raises(Exception, match="invalid_client|secret"):
        adapter.get_quota_limits()


def test_auth_file_must_name_the_principal(env, fake):
    env.auth_path.write_text(json.dumps({"clientId": "x"}))
    with pytest.raises(exceptions.ConfigError, match="clientSecret"):
        env.adapter()
