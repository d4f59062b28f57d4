# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The driver contract: what every driver does for the launcher, checked
against each driver's cloud stand-in through the ``driver_bed`` fixture
(tests/contract/conftest.py).  An in-process launcher serves a Zuul-like
client; the tests look at the node records and at the cloud."""

from nodepool.zk.models import NodeState, RequestState
from tests.contract.conftest import (
    CREATE, IMAGES, LEAKS, LISTING, QUOTA, UPLOAD_METADATA)
from tests.functional.conftest import read_nodes
from tests.fixtures.waits import wait_for

LABEL = "small"


def serve_one(driver_bed, zuul):
    """Submit a request for one node and accept it once fulfilled."""
    done = zuul.wait_for_request(zuul.submit([LABEL]), timeout=60)
    assert done.state == RequestState.FULFILLED
    [node] = zuul.accept_nodes(done)
    return node


def test_launched_node_ready_listed_then_deleted(driver_bed, zuul):
    launcher = driver_bed.start()
    node = serve_one(driver_bed, zuul)
    assert node.state == NodeState.IN_USE
    assert node.provider == driver_bed.provider and node.pool == "main"
    assert node.type == [LABEL]
    assert node.external_id and node.interface_ip and node.launcher
    for field, value in driver_bed.node_fields.items():
        assert getattr(node, field) == value, field
    driver_bed.check_node(node)
    if CREATE in driver_bed.capabilities:
        assert driver_bed.instances() == {node.external_id: node.id}
        assert driver_bed.create_calls() == 1
    if LISTING in driver_bed.capabilities:
        # The adapter lists it (quota accounting and leak detection rely
        # on that) with the tags nodepool gave it.
        adapter = launcher.providers[driver_bed.provider].adapter
        instance = wait_for(lambda: listed(adapter).get(node.external_id),
                            timeout=30)
        assert instance.metadata["nodepool_node_id"] == node.id
        assert instance.metadata["nodepool_provider_name"] == \
            driver_bed.provider
        assert instance.metadata["nodepool_pool_name"] == "main"
        assert instance.get_quota_information().get_resources()[
            "instances"] == 1
    zuul.return_nodes([node])
    wait_for(lambda: driver_bed.released(zuul.kazoo, node), timeout=60,
             message="returned node not deleted")
    if LISTING in driver_bed.capabilities:
        wait_for(lambda: node.external_id not in listed(adapter), timeout=60)


def listed(adapter):
    """The adapter's instances by external id."""
    return {i.external_id: i for i in adapter.list_instances()}


def test_failed_create_retried_without_leak(driver_bed, zuul):
    driver_bed.require(CREATE)
    driver_bed.fail_creates(1)
    driver_bed.start()
    node = serve_one(driver_bed, zuul)
    assert driver_bed.create_calls() == 2
    # The failed attempt's instance (if the cloud made one) is deleted.
    wait_for(lambda: driver_bed.instances() == {node.external_id: node.id},
             timeout=60, message="failed attempt left an instance")
    zuul.return_nodes([node])
    wait_for(lambda: driver_bed.released(zuul.kazoo, node), timeout=60)


def test_creates_failing_past_retries_fail_the_request(driver_bed, zuul):
    driver_bed.require(CREATE)
    driver_bed.fail_creates(2)
    driver_bed.start(retries=2)
    done = zuul.wait_for_request(zuul.submit([LABEL]), timeout=60)
    assert done.state == RequestState.FAILED
    assert done.declined_by
    assert driver_bed.create_calls() == 2
    # The building node and every attempt's instance are cleaned up.
    wait_for(lambda: not read_nodes(zuul.kazoo) and
             not driver_bed.instances(), timeout=60,
             message="failed launch left a node or an instance")


def test_cloud_quota_pauses_the_pool_then_serves(driver_bed, zuul):
    driver_bed.require(QUOTA)
    driver_bed.limit_to_one_node()
    launcher = driver_bed.start()
    first = serve_one(driver_bed, zuul)
    second = zuul.submit([LABEL])
    worker = launcher.pool_workers[(driver_bed.provider, "main")]
    wait_for(lambda: worker.paused, timeout=60)
    assert zuul.get_request(second).state == RequestState.PENDING
    # Paused on the launcher's own accounting of the cloud's limits, not
    # on a refusal by the cloud.
    assert driver_bed.create_calls() == 1
    zuul.return_nodes([first])
    done = zuul.wait_for_request(second, timeout=60)
    assert done.state == RequestState.FULFILLED
    assert driver_bed.create_calls() == 2
    [node] = zuul.accept_nodes(done)
    zuul.return_nodes([node])
    wait_for(lambda: driver_bed.released(zuul.kazoo, node), timeout=60)


def test_leaked_instance_deleted_others_kept(driver_bed, zuul):
    driver_bed.require(LEAKS)
    leaked, other = driver_bed.plant_instances()
    driver_bed.start()
    wait_for(lambda: leaked not in driver_bed.instances(), timeout=60,
             message="leaked instance not deleted")
    assert other in driver_bed.instances()
    assert not read_nodes(zuul.kazoo)


def test_image_upload_listed_then_deleted(driver_bed):
    driver_bed.require(IMAGES)
    adapter, provider_image, path, image_format = driver_bed.image_adapter()
    metadata = dict(UPLOAD_METADATA,
                    nodepool_provider_name=driver_bed.provider)
    external_id = adapter.upload_image(
        provider_image, "contract-image-0000000001", path, image_format,
        metadata, "md5", "sha256")
    assert external_id
    listed = {i.id: i for i in adapter.list_images()}
    image = listed[external_id]
    for key, value in metadata.items():
        assert image.metadata[key] == value, key
    adapter.delete_image(external_id)
    wait_for(lambda: external_id not in {
        i.id for i in adapter.list_images()}, timeout=30)
