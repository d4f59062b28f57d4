# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The OpenStack adapter against the loopback fake cloud, through the real
openstacksdk: create/delete state machines, floating IPs, boot from volume,
failures, quota, leak cleanup, images."""

import base64
import logging
import math
import threading
import time
import types

import pytest

from nodepool import exceptions
from nodepool.driver import get_driver
from nodepool.driver.openstack.adapter import OpenStackAdapter
from nodepool.driver.openstack.statemachines import server_addresses
from nodepool.driver.quota import QuotaInformation
from tests.fakes.openstack import IMAGE_ID
from tests.fixtures.adapters import AdapterEnv, label_of
from tests.fixtures.statemachines import (
    run_to_completion, run_until_error)
from tests.fixtures.waits import wait_for

LOG = logging.getLogger("tests.openstack")

CONFIG = """
labels:
  - name: small
  - name: bfv
  - name: custom
  - name: v6
  - name: bad-flavor
  - name: gone
diskimages:
  - name: custom-image
providers:
  - name: os
    driver: openstack
    cloud: fake
    region-name: RegionOne
    rate: {rate}
    clean-floating-ips: true
    port-cleanup-interval: 60
    cloud-images:
      - name: base
        image-name: Fake Image
        username: ubuntu
        config-drive: true
      - name: by-id
        image-id: {image_id}
      - name: missing
        image-name: No Such Image
    diskimages:
      - name: custom-image
        meta:
          team: ci
    pools:
      - name: main
        max-servers: 10
        networks: [private]
        security-groups: [default]
        availability-zones: [az2]
        labels:
          - name: small
            cloud-image: base
            min-ram: 2000
            key-name: np-key
            userdata: "#!/bin/sh"
            instance-properties:
              team: ci
              number: 3
            dynamic-instance-properties:
              req: "{{request.id}}"
              broken: "{{request.nothing.here}}"
          - name: bfv
            cloud-image: by-id
            flavor-name: m1.medium
            boot-from-volume: true
            volume-size: 30
          - name: custom
            diskimage: custom-image
            flavor-name: m1.small
          - name: v6
            cloud-image: base
            flavor-name: m1.small
            networks: [ipv6]
          - name: bad-flavor
            cloud-image: base
            flavor-name: m1.nope
          - name: gone
            cloud-image: missing
            flavor-name: m1.small
      - name: nofip
        auto-floating-ip: false
        labels:
          - name: small
            cloud-image: base
            min-ram: 1
            flavor-name: large
"""


class Clock:
    """Monotonic time that a test can move forward."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self):
        return time.monotonic() + self.offset


@pytest.fixture
def cloud(openstack_cloud):
    """The fake OpenStack, ``fake`` in the clouds.yaml of the test."""
    return openstack_cloud


class Env(AdapterEnv):
    provider = "os"
    rate = 0

    def __init__(self, tmp_path, cloud):
        super().__init__(tmp_path, CONFIG)
        self.cloud = cloud

    def values(self):
        return dict(image_id=IMAGE_ID)

    def make_adapter(self, provider, **kwargs):
        return OpenStackAdapter(provider, **kwargs)


@pytest.fixture
def env(tmp_path, cloud):
    env = Env(tmp_path, cloud)
    yield env
    env.close()


def create_sm(adapter, label, node_id, pool="main", image=None, az=None,
              request_id="200-0000000001"):
    metadata = {"nodepool_node_id": str(node_id),
                "nodepool_pool_name": pool,
                "nodepool_provider_name": "os"}
    request = types.SimpleNamespace(id=request_id, tenant_name="t")
    return adapter.get_create_state_machine(
        "np%s" % node_id, label, image, metadata, request, az, LOG)


# Create and delete ---------------------------------------------------------

def test_create_with_floating_ip_and_delete(env, cloud):
    adapter = env.adapter()
    sm = create_sm(adapter, label_of(adapter, "small"), 1)
    [instance] = run_to_completion([sm])
    assert sm.state == sm.COMPLETE and sm.external_id == instance.external_id
    [body] = cloud.create_bodies
    assert body["name"] == "np1"
    assert body["flavorRef"] == "f-small"  # smallest flavor >= 2000 MiB
    assert body["imageRef"] == IMAGE_ID
    assert body["networks"] == [{"uuid": "net-private"}]
    assert body["security_groups"] == [{"name": "default"}]
    assert body["key_name"] == "np-key"
    assert body["availability_zone"] == "az2"
    assert body["config_drive"] is True
    assert base64.b64decode(body["user_data"]) == b"#!/bin/sh"
    meta = body["metadata"]
    assert meta == {"team": "ci", "number": "3", "req": "200-0000000001",
                    "groups": "os,base,small", "nodepool_node_id": "1",
                    "nodepool_pool_name": "main",
                    "nodepool_provider_name": "os"}
    [fip] = cloud.floating_ips.values()
    assert instance.public_ipv4 == fip["floating_ip_address"]
    assert instance.interface_ip == instance.public_ipv4
    assert instance.private_ipv4.startswith("10.0.0.")
    assert instance.public_ipv6 is None
    assert instance.az == "az2" and instance.region == "RegionOne"
    assert instance.cloud == "fake"
    assert instance.metadata["nodepool_node_id"] == "1"
    assert instance.get_quota_information() == QuotaInformation(
        instances=1, cores=2, ram=2048)
    # State comes from the shared listing, never one GET per server.
    assert cloud.counts["GET server"] == 0

    delete = adapter.get_delete_state_machine(instance.external_id, LOG)
    run_to_completion([delete])
    assert delete.state == delete.COMPLETE
    assert cloud.live_servers() == {}
    assert cloud.floating_ips == {}
    assert cloud.counts["DELETE floatingip"] == 1
    assert cloud.unknown == []


def test_many_machines_share_the_listing(env, cloud):
    adapter = env.adapter()
    label = label_of(adapter, "small", pool="nofip")
    cloud.boot_paused = True
    machines = [create_sm(adapter, label, n, pool="nofip")
                for n in range(6)]
    wait_for(lambda: [sm.advance() for sm in machines] and all(
        sm.state == sm.CREATING for sm in machines), interval=0.02)
    listings = cloud.counts["GET servers/detail"]
    cloud.boot_paused = False
    instances = run_to_completion(machines)
    assert len({i.external_id for i in instances}) == 6
    # A handful of listings served all six machines.
    assert cloud.counts["GET servers/detail"] - listings < 20
    assert cloud.counts["GET server"] == 0
    assert cloud.counts["POST servers"] == 6
    for instance in instances:
        assert instance.public_ipv4 is None
        assert instance.interface_ip == instance.private_ipv4
    assert cloud.floating_ips == {}
    assert {b["flavorRef"] for b in cloud.create_bodies} == {"f-large"}
    run_to_completion([adapter.get_delete_state_machine(i.external_id, LOG)
                       for i in instances])
    assert cloud.live_servers() == {}
    # Without floating IPs in the listing, Neutron is not asked.
    assert cloud.counts["GET floatingips"] == 0


def test_boot_from_volume(env, cloud):
    adapter = env.adapter()
    label = label_of(adapter, "bfv")
    [instance] = run_to_completion([create_sm(adapter, label, 2)])
    [body] = cloud.create_bodies
    assert "imageRef" not in body
    assert body["block_device_mapping_v2"] == [{
        "boot_index": 0, "uuid": IMAGE_ID, "source_type": "image",
        "destination_type": "volume", "volume_size": 30,
        "delete_on_termination": True}]
    assert body["flavorRef"] == "f-medium"
    assert adapter.get_quota_for_label(label) == QuotaInformation(
        instances=1, cores=4, ram=8192, volumes=1, **{"volume-gb": 30})
    assert instance.get_quota_information() == QuotaInformation(
        instances=1, cores=4, ram=8192, volumes=1)


def test_diskimage_upload_id_is_booted(env, cloud):
    adapter = env.adapter()
    image_id = cloud.add_image("custom-image-0001")
    label = label_of(adapter, "custom")
    sm = create_sm(adapter, label, 3, image=image_id)
    [instance] = run_to_completion([sm])
    assert cloud.create_bodies[0]["imageRef"] == image_id
    assert cloud.create_bodies[0]["metadata"]["groups"] == \
        "os,custom-image,custom"


def test_ipv6_only_server_gets_no_floating_ip(env, cloud):
    adapter = env.adapter()
    sm = create_sm(adapter, label_of(adapter, "v6"), 4)
    [instance] = run_to_completion([sm])
    assert instance.public_ipv6.startswith("2001:db8::")
    assert instance.interface_ip == instance.public_ipv6
    assert instance.public_ipv4 is None
    assert cloud.floating_ips == {}


def test_explicit_az_wins(env, cloud):
    adapter = env.adapter()
    sm = create_sm(adapter, label_of(adapter, "v6"), 5, az="az1")
    [instance] = run_to_completion([sm])
    assert instance.az == "az1"
    assert adapter.get_azs() == ["az1", "az2"]


def test_nodes_of_a_request_share_an_az(env, cloud):
    adapter = env.adapter()
    label = label_of(adapter, "small", pool="nofip")
    zones = set()
    for request in range(4):
        machines = [create_sm(adapter, label, "%d%d" % (request, n),
                              pool="nofip", request_id="200-%d" % request)
                    for n in range(3)]
        instances = run_to_completion(machines)
        assert len({i.az for i in instances}) == 1
        zones.add(instances[0].az)
    assert zones <= {"az1", "az2"}


# Failures ------------------------------------------------------------------

def test_error_state_fails_with_fault(env, cloud):
    adapter = env.adapter()
    cloud.error_faults = ["Build of instance aborted: disk error"]
    sm = create_sm(adapter, label_of(adapter, "v6"), 6)
    error = run_until_error(sm)
    assert isinstance(error, exceptions.LaunchStatusException)
    assert "Build of instance aborted" in str(error)
    assert sm.external_id  # recorded, so the launcher cleans it up
    run_to_completion([adapter.get_delete_state_machine(sm.external_id, LOG)])
    assert cloud.live_servers() == {}


def test_no_valid_host_is_a_capacity_failure(env, cloud):
    adapter = env.adapter()
    cloud.error_faults = ["No valid host was found. There are not enough "
                          "hosts available."]
    sm = create_sm(adapter, label_of(adapter, "v6"), 6)
    error = run_until_error(sm)
    assert isinstance(error, exceptions.CapacityException)
    assert not isinstance(error, exceptions.LaunchStatusException)
    assert "No valid host was found" in str(error)
    # The stat of nodepool 11, which saw any server in ERROR alike.
    assert error.statsd_key == "error.status"
    assert sm.external_id
    run_to_completion([adapter.get_delete_state_machine(sm.external_id, LOG)])
    assert cloud.live_servers() == {}


def test_quota_fault_is_quota_exception(env, cloud):
    adapter = env.adapter()
    cloud.error_faults = ["Quota exceeded for cores"]
    error = run_until_error(create_sm(adapter, label_of(adapter, "v6"), 7))
    assert isinstance(error, exceptions.QuotaException)


def test_nova_quota_refusal_is_quota_exception(env, cloud):
    adapter = env.adapter()
    cloud.limits["instances"] = 0
    sm = create_sm(adapter, label_of(adapter, "v6"), 8)
    error = run_until_error(sm)
    assert isinstance(error, exceptions.QuotaException)
    assert "Quota exceeded for instances" in str(error)
    assert sm.external_id is None
    cloud.limits["instances"] = 20
    cloud.create_errors = [(413, "Quota exceeded for ram")]
    error = run_until_error(create_sm(adapter, label_of(adapter, "v6"), 9))
    assert isinstance(error, exceptions.QuotaException)


def test_bad_request_fails_and_clears_caches(env, cloud):
    adapter = env.adapter()
    adapter.flavors()
    assert cloud.counts["GET flavors/detail"] == 1
    cloud.create_errors = [(400, "Invalid something")]
    error = run_until_error(create_sm(adapter, label_of(adapter, "v6"), 10))
    assert isinstance(error, exceptions.LaunchStatusException)
    adapter.flavors()
    assert cloud.counts["GET flavors/detail"] >= 2


def test_missing_cloud_image(env, cloud):
    adapter = env.adapter()
    assert adapter.label_ready(label_of(adapter, "small"))
    assert adapter.label_ready(label_of(adapter, "bfv"))
    assert not adapter.label_ready(label_of(adapter, "gone"))
    calls = sum(cloud.counts.values())
    # Missing images are remembered too (for IMAGE_TTL).
    assert not adapter.label_ready(label_of(adapter, "gone"))
    assert sum(cloud.counts.values()) == calls
    error = run_until_error(create_sm(adapter, label_of(adapter, "gone"),
                                      11))
    assert "No Such Image" in str(error)


def test_vanished_server_fails_the_launch(env, cloud):
    adapter = env.adapter()
    cloud.boot_paused = True
    sm = create_sm(adapter, label_of(adapter, "v6"), 19)
    wait_for(lambda: sm.advance() or sm.state == sm.CREATING, interval=0.02)
    with cloud.lock:
        del cloud.servers[sm.external_id]
    error = run_until_error(sm)
    assert "disappeared" in str(error)


def test_delete_of_missing_server_completes(env, cloud):
    adapter = env.adapter()
    sm = adapter.get_delete_state_machine("no-such-server", LOG)
    run_to_completion([sm])
    assert sm.complete


def test_server_listed_as_deleted_counts_as_gone(env, cloud):
    adapter = env.adapter()
    sm = create_sm(adapter, label_of(adapter, "v6"), 12)
    [instance] = run_to_completion([sm])
    cloud.deleted_listings = 1000
    delete = adapter.get_delete_state_machine(instance.external_id, LOG)
    run_to_completion([delete])
    assert instance.external_id in cloud.servers
    assert [i for i in adapter.list_instances()
            if i.external_id == instance.external_id] == []


def test_delete_error_raises(env, cloud):
    adapter = env.adapter()
    sm = create_sm(adapter, label_of(adapter, "v6"), 13)
    [instance] = run_to_completion([sm])
    cloud.delete_errors = [(500, "Internal error")]
    sm = adapter.get_delete_state_machine(instance.external_id, LOG)
    error = run_until_error(sm)
    assert "Internal error" in str(error)
    delete = adapter.get_delete_state_machine(instance.external_id, LOG)
    run_to_completion([delete])
    assert cloud.live_servers() == {}


# Quota ---------------------------------------------------------------------

def test_quota_limits_cached(env, cloud):
    adapter = env.adapter()
    assert adapter.get_quota_limits() == QuotaInformation(
        instances=20, cores=100, ram=1000000, volumes=100,
        default=math.inf, **{"volume-gb": 1000000})
    cloud.limits["cores"] = -1
    limits = adapter.get_quota_limits()
    assert limits.get("cores") == 100
    assert cloud.counts["GET limits"] == 1
    assert cloud.counts["GET volume limits"] == 1
    fresh = env.adapter()
    assert fresh.get_quota_limits().get("cores") == math.inf


def test_quota_limits_without_cinder(env, cloud):
    cloud.volume_service = False
    adapter = env.adapter()
    assert adapter.get_quota_limits() == QuotaInformation(
        instances=20, cores=100, ram=1000000, default=math.inf)
    assert cloud.counts["GET volume limits"] == 0


def test_quota_refusal_refreshes_limits(env, cloud):
    adapter = env.adapter()
    assert adapter.get_quota_limits().get("instances") == 20
    cloud.limits["instances"] = 0
    error = run_until_error(create_sm(adapter, label_of(adapter, "v6"), 20))
    assert isinstance(error, exceptions.QuotaException)
    assert adapter.get_quota_limits().get("instances") == 0


def test_quota_for_label(env, cloud):
    adapter = env.adapter()
    assert adapter.get_quota_for_label(label_of(adapter, "small")) == \
        QuotaInformation(instances=1, cores=2, ram=2048)
    assert adapter.get_quota_for_label(
        label_of(adapter, "small", pool="nofip")) == \
        QuotaInformation(instances=1, cores=8, ram=16384)
    with pytest.raises(exceptions.RuntimeConfigurationException):
        adapter.get_quota_for_label(label_of(adapter, "bad-flavor"))
    assert cloud.counts["GET flavors/detail"] == 1


def test_list_instances_includes_foreign_servers(env, cloud):
    adapter = env.adapter()
    sm = create_sm(adapter, label_of(adapter, "v6"), 14)
    [instance] = run_to_completion([sm])
    other = env.adapter()
    label = label_of(other, "v6")
    sm = create_sm(other, label, 15)
    sm.metadata = {}
    run_to_completion([sm])
    # list_instances may answer from a listing up to 10 s old.
    assert adapter.servers.wait_newer(timeout=10) is not None
    listed = {i.external_id: i for i in adapter.list_instances()}
    assert set(listed) == set(cloud.live_servers())
    assert listed[instance.external_id].metadata["nodepool_node_id"] == "14"
    quota = QuotaInformation()
    for item in listed.values():
        quota.add(item.get_quota_information())
    assert quota == QuotaInformation(instances=2, cores=4, ram=4096)


def test_rate_is_seconds_between_calls(env, cloud):
    adapter = env.adapter(rate=0.25)
    assert adapter.compute_limiter.rate == 4.0
    assert adapter.network_limiter.rate == 4.0
    assert env.adapter(rate=0).compute_limiter.delta == 0


# Leak cleanup ---------------------------------------------------------------

def test_leak_listing_and_deletion(env, cloud):
    adapter = env.adapter()
    sm = create_sm(adapter, label_of(adapter, "small"), 16)
    [instance] = run_to_completion([sm])
    image_id = cloud.add_image("custom-image-0002",
                               nodepool_build_id="0000000002",
                               nodepool_upload_id="0000000001",
                               nodepool_provider_name="os")
    resources = {(r.type, r.id): r for r in adapter.list_resources()}
    assert set(resources) == {("instance", instance.external_id),
                              ("image", image_id)}
    assert resources[("instance", instance.external_id)].metadata[
        "nodepool_node_id"] == "16"
    assert resources[("image", image_id)].metadata[
        "nodepool_build_id"] == "0000000002"
    for resource in resources.values():
        adapter.delete_resource(resource)
    assert cloud.live_servers() == {}
    assert image_id not in cloud.images
    assert cloud.floating_ips == {}
    # Deleting what is already gone is fine.
    adapter.delete_resource(resources[("instance", instance.external_id)])


def test_down_ports_deleted_after_interval(env, cloud):
    clock = Clock()
    adapter = env.adapter(clock=clock)
    old = [cloud.add_port(), cloud.add_port(device_owner="compute:az1")]
    cloud.add_port(device_owner="network:dhcp")
    cloud.add_port(status="ACTIVE", device_owner="compute:az1")
    assert adapter.cleanup_down_ports() == 0  # first sighting
    clock.offset += 30
    assert adapter.cleanup_down_ports() == 0  # before the interval
    late = cloud.add_port()
    clock.offset += 31
    assert adapter.cleanup_down_ports() == 2
    assert not set(old) & set(cloud.ports)
    assert late in cloud.ports and len(cloud.ports) == 3
    clock.offset += 61
    assert adapter.cleanup_down_ports() == 1
    assert late not in cloud.ports


def test_unattached_floating_ips_deleted(env, cloud):
    adapter = env.adapter()
    sm = create_sm(adapter, label_of(adapter, "small"), 17)
    [instance] = run_to_completion([sm])
    loose = cloud.add_floating_ip()
    assert adapter.cleanup_floating_ips() == 1
    assert loose not in cloud.floating_ips
    assert len(cloud.floating_ips) == 1


# Images and console ----------------------------------------------------------

def test_image_upload_list_delete(env, cloud, tmp_path):
    adapter = env.adapter()
    path = tmp_path / "custom-image.qcow2"
    path.write_bytes(b"\0" * 4096)
    provider_image = adapter.provider.diskimages["custom-image"]
    image_id = adapter.upload_image(
        provider_image, "custom-image-0000000001", str(path), "qcow2",
        {"nodepool_build_id": "0000000001", "nodepool_upload_id": "0000000007",
         "nodepool_provider_name": "os"}, "md5sum", "sha256sum")
    image = cloud.images[image_id]
    assert image["status"] == "active" and image["size"] == 4096
    assert image["name"] == "custom-image-0000000001"
    assert image["disk_format"] == "qcow2"
    [body] = cloud.image_bodies
    assert body["visibility"] == "private"
    assert body["container_format"] == "bare"
    assert image["team"] == "ci" and image["nodepool_upload_id"] == \
        "0000000007"
    listed = {i.id: i for i in adapter.list_images()}
    # The public "Fake Image" belongs to another project.
    assert list(listed) == [image_id]
    assert listed[image_id].name == "custom-image-0000000001"
    assert listed[image_id].metadata["nodepool_build_id"] == "0000000001"
    adapter.delete_image(image_id)
    assert image_id not in cloud.images
    adapter.delete_image(image_id)  # already gone: no error


def test_console_log(env, cloud):
    adapter = env.adapter()
    sm = create_sm(adapter, label_of(adapter, "v6"), 18)
    [instance] = run_to_completion([sm])
    assert adapter.get_console_log(label_of(adapter, "v6"),
                                   instance.external_id) == \
        "fake console output\n"


def test_driver_builds_the_adapter(env, cloud):
    adapter = get_driver("openstack").get_adapter(env.config())
    try:
        assert isinstance(adapter, OpenStackAdapter)
        assert adapter.get_quota_limits().get("instances") == 20
    finally:
        adapter.stop()


def test_image_type_from_clouds_yaml(env, cloud, tmp_path, monkeypatch):
    assert env.config().image_type == "qcow2"
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", cloud.write_clouds(
        tmp_path / "vhd-clouds.yaml", image_format="vhd"))
    assert env.config().image_type == "vhd"
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "nothing"))
    assert env.config().image_type == "qcow2"


def test_server_addresses():
    ips = server_addresses({
        "private": [{"addr": "10.0.0.5", "version": 4,
                     "OS-EXT-IPS:type": "fixed"},
                    {"addr": "172.24.4.9", "version": 4,
                     "OS-EXT-IPS:type": "floating"}],
        "v6": [{"addr": "fe80::1", "version": 6},
               {"addr": "2001:db8::5", "version": 6}]})
    assert ips["public_ipv4"] == "172.24.4.9"
    assert ips["private_ipv4"] == "10.0.0.5"
    assert ips["public_ipv6"] == "2001:db8::5"
    assert ips["floating"]
    ips = server_addresses({"public": [{"addr": "203.0.113.4",
                                        "OS-EXT-IPS:type": "fixed"}]},
                           external_networks={"public"})
    assert ips["public_ipv4"] == ips["private_ipv4"] == "203.0.113.4"
    assert server_addresses({"net": [{"addr": "8.8.4.4"}]})[
        "public_ipv4"] == "8.8.4.4"


def test_stop_fails_pending_work(env, cloud):
    adapter = env.adapter(api_workers=1)
    release = threading.Event()
    busy = adapter.submit(release.wait, 30)
    queued = adapter.submit(lambda: "never")
    adapter.stop()
    release.set()
    with pytest.raises(exceptions.LaunchNodepoolException):
        queued.result(timeout=10)
    assert busy.result(timeout=10) is True
    with pytest.raises(exceptions.LaunchNodepoolException):
        adapter.submit(lambda: "late").result(timeout=10)
