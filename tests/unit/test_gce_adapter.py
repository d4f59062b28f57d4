# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The GCE adapter and its state machines against the loopback fake
Compute API (tests/fakes/gce.py), through the real google-cloud-compute
clients with anonymous credentials."""

import logging
import textwrap
import types

import pytest
from google.auth.credentials import AnonymousCredentials

from nodepool import exceptions
from nodepool.config.loader import load_config
from nodepool.driver.gce.adapter import GceAdapter
from nodepool.driver.gce.client import GceClients
from nodepool.driver.gce.errors import GceApiError, make_retrier
from nodepool.driver.statemachine.leaks import LeakSweeper
from tests.fakes.gce import FakeGce, rate_limit_body
from tests.fixtures.clouds import QUICK_GCE
from tests.fixtures.waits import wait_for

LOG = logging.getLogger("tests.gce")

CONFIG = """
labels:
  - name: small
  - name: by-id
providers:
  - name: gce
    driver: gce
    project: nodepool-project
    region: us-central1
    zone: us-central1-a
    rate: 500
    cloud-images:
      - name: debian
        image-project: debian-cloud
        image-family: debian-12
        username: zuul
        key: ssh-ed25519 AAAAkey
      - name: fixed
        image-id: projects/debian-cloud/global/images/debian-12-bookworm-v1
    pools:
      - name: main
        labels:
          - name: small
            cloud-image: debian
            instance-type: e2-small
            volume-type: pd-ssd
            volume-size: 20
          - name: by-id
            cloud-image: fixed
            instance-type: f1-micro
"""


@pytest.fixture
def fake():
    fake = FakeGce(page_size=2).start()
    yield fake
    fake.stop()


@pytest.fixture
def provider(tmp_path):
    path = tmp_path / "nodepool.yaml"
    path.write_text(textwrap.dedent(CONFIG))
    return load_config(str(path)).providers["gce"]


@pytest.fixture
def adapter(fake, provider):
    adapter = GceAdapter(
        provider, GceClients(AnonymousCredentials(), fake.url), warm=False,
        retrier=make_retrier(LOG, sleep=lambda seconds: None), **QUICK_GCE)
    yield adapter
    adapter.stop()


def label(provider, name="small"):
    return provider.pools["main"].labels[name]


def create(adapter, provider, node_id="0000000001", name="small"):
    metadata = {"nodepool_node_id": node_id, "nodepool_pool_name": "main",
                "nodepool_provider_name": "gce"}
    return adapter.get_create_state_machine(
        "np" + node_id, label(provider, name), None, metadata, None, None,
        LOG)


def run(sm, timeout=20):
    """Advance ``sm`` until it completes; its result."""
    found = []

    def step():
        result = sm.advance()
        if result is not None:
            found.append(result)
        return sm.complete
    wait_for(step, timeout=timeout, interval=0.01)
    return found[0] if found else None


def test_create_sends_gce_body_and_gives_node_fields(fake, adapter,
                                                     provider):
    instance = run(create(adapter, provider))
    assert instance.external_id == "np0000000001"
    record = fake.instance("np0000000001")
    assert record["status"] == "RUNNING"
    assert instance.private_ipv4 == \
        record["networkInterfaces"][0]["networkIP"]
    assert instance.public_ipv4 == \
        record["networkInterfaces"][0]["accessConfigs"][0]["natIP"]
    assert instance.interface_ip == instance.public_ipv4
    assert (instance.cloud, instance.region, instance.az) == (
        "Google", "us-central1", "us-central1-a")
    assert fake.metadata("np0000000001") == {
        "nodepool_node_id": "0000000001", "nodepool_pool_name": "main",
        "nodepool_provider_name": "gce",
        "ssh-keys": "zuul:ssh-ed25519 AAAAkey"}
    assert instance.metadata["nodepool_node_id"] == "0000000001"
    disk = record["disks"][0]
    assert disk["boot"] and disk["autoDelete"] and disk["diskSizeGb"] == "20"
    assert record["machineType"].endswith("/machineTypes/e2-small")
    assert instance.get_quota_information().get_resources() == {
        "cores": 2, "instances": 1, "ram": 2048}


def test_image_id_used_verbatim_and_no_key(fake, adapter, provider):
    run(create(adapter, provider, name="by-id"))
    assert "ssh-keys" not in fake.metadata("np0000000001")
    assert fake.counts["GET imageFamily"] == 0


def test_capacity_error_of_the_operation(fake, adapter, provider):
    fake.fail_operations(count=1)
    with pytest.raises(exceptions.CapacityException,
                       match="ZONE_RESOURCE_POOL_EXHAUSTED"):
        run(create(adapter, provider))
    assert fake.names() == []


def test_operation_ending_in_other_error(fake, adapter, provider):
    fake.fail_operations("SERVICE_ACCOUNT_NOT_FOUND", "no account",
                         http_status=400)
    with pytest.raises(exceptions.LaunchStatusException,
                       match="SERVICE_ACCOUNT_NOT_FOUND"):
        run(create(adapter, provider))


def test_quota_refusal(fake, adapter, provider):
    fake.quotas["INSTANCES"] = 0.0
    with pytest.raises(exceptions.QuotaException, match="quotaExceeded"):
        run(create(adapter, provider))


def test_terminated_instance_fails_the_launch(fake, adapter, provider):
    fake.terminate_next()
    with pytest.raises(exceptions.LaunchStatusException, match="TERMINATED"):
        run(create(adapter, provider))


def test_throttled_insert_retried_through_the_limiter(fake, adapter,
                                                      provider):
    fake.http_faults.fail("POST instances", 429, rate_limit_body(), times=2)
    run(create(adapter, provider))
    assert fake.counts["POST instances"] == 3
    assert adapter.limiter.throttle_count == 2


def test_throttling_past_the_retries_is_an_api_error(fake, adapter,
                                                     provider):
    fake.http_faults.fail("POST instances", 429, rate_limit_body(), times=6)
    with pytest.raises(GceApiError, match="rateLimitExceeded"):
        run(create(adapter, provider))


def test_delete_waits_until_gone_then_not_found(fake, adapter, provider):
    run(create(adapter, provider))
    run(adapter.get_delete_state_machine("np0000000001", LOG))
    assert fake.names() == []
    with pytest.raises(exceptions.NotFound):
        run(adapter.get_delete_state_machine("np0000000001", LOG))


def test_listing_pages_and_leak_candidates(fake, adapter):
    for index in range(4):
        fake.add_instance("np000000000%d" % index, {
            "nodepool_provider_name": "gce",
            "nodepool_node_id": "000000000%d" % index})
    fake.add_instance("stopped", status="TERMINATED")
    listed = {i.external_id: i for i in adapter.list_instances()}
    assert len(listed) == 5
    assert listed["stopped"].get_quota_information().get_resources()[
        "cores"] == 2
    # Five instances, two a page.
    assert fake.counts["GET instances"] == 3
    resources = adapter.list_resources()
    assert sorted(r.id for r in resources) == [
        "np000000000%d" % i for i in range(4)]
    assert resources[0].metadata["nodepool_provider_name"] == "gce"
    adapter.delete_resource(resources[0])
    wait_for(lambda: resources[0].id not in fake.names(), timeout=10)


def test_quota_limits_from_region(fake, adapter, provider):
    fake.quotas.update(CPUS=8.0, INSTANCES=3.0)
    limits = adapter.get_quota_limits().get_resources()
    assert limits["cores"] == 8 and limits["instances"] == 3
    assert limits["ram"] == float("inf")


def test_unknown_machine_type_is_a_configuration_error(fake, adapter,
                                                       provider):
    del fake.machine_types["e2-small"]
    with pytest.raises(exceptions.RuntimeConfigurationException):
        adapter.get_quota_for_label(label(provider))


def test_machine_type_error_clears_the_cache(fake, adapter, provider):
    quota = adapter.get_quota_for_label(label(provider, "by-id"))
    assert quota.get_resources()["cores"] == 1
    # Malformed data for every type: the bad one raises KeyError, and so
    # does the type cached before, because the error emptied the cache.
    for name in list(fake.machine_types):
        fake.machine_types[name] = (None, 512)
    with pytest.raises(KeyError):
        adapter.get_quota_for_label(label(provider))
    with pytest.raises(KeyError):
        adapter.get_quota_for_label(label(provider, "by-id"))
    assert fake.counts["GET machineType"] == 3


def test_label_ready_resolves_the_family(fake, adapter, provider):
    assert adapter.label_ready(label(provider))
    del fake.images[("debian-cloud", "debian-12")]
    adapter._images.invalidate()
    assert not adapter.label_ready(label(provider))
    assert adapter.label_ready(label(provider, "by-id"))


def test_leaked_instance_deleted_at_its_second_sighting(fake, adapter):
    fake.add_instance("np0000000007", {"nodepool_provider_name": "gce",
                                       "nodepool_node_id": "0000000007"})
    fake.add_instance("np0000000008", {"nodepool_provider_name": "gce",
                                       "nodepool_node_id": "0000000008"})
    sweeper = LeakSweeper("gce", adapter, types.SimpleNamespace(stats=None))
    assert sweeper.sweep({"0000000008"}, set()) == 0
    assert fake.counts["DELETE instance"] == 0
    assert sweeper.sweep({"0000000008"}, set()) == 1
    wait_for(lambda: fake.names() == ["np0000000008"], timeout=10)
