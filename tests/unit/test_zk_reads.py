# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Reading records that are not there: lock directories left without
their record, and every getter of the stores on an empty tree."""

import pytest
from kazoo.recipe.lock import Lock

from nodepool import status
from nodepool.zk import paths
from nodepool.zk.images import ImageStore
from nodepool.zk.models import (BuildState, ImageBuild, ImageUpload,
                                UploadState)
from nodepool.zk.nodes import NodeStore
from nodepool.zk.requests import RequestStore


def make_build(state=BuildState.READY):
    build = ImageBuild()
    build.state = state
    build.formats = ["qcow2"]
    return build


def make_upload(state=UploadState.READY):
    upload = ImageUpload()
    upload.state = state
    upload.external_id = "img-1"
    return upload


@pytest.fixture
def images(zk_client):
    return ImageStore(zk_client)


def test_orphan_lock_dirs_do_not_break_reads(images, zk_client):
    """Lock directories whose record never existed (or is gone) leave
    empty parent znodes behind; readers treat them as absent."""
    kz = zk_client.kazoo
    good = images.store_build("img", make_build())
    upload_id = images.store_upload("img", good, "p", make_upload())
    orphan_build = "f" * 32
    for path in [paths.build_id_lock_path("img", orphan_build),
                 paths.upload_number_lock_path("img", good, "p",
                                               "0000000099"),
                 paths.node_lock_path("0000000042"),
                 paths.upload_lock_path("img", orphan_build, "q")]:
        lock = Lock(kz, path)
        assert lock.acquire(blocking=False)
        lock.release()

    assert images.get_build("img", orphan_build) is None
    assert [b.id for b in images.get_builds("img")] == [good]
    assert [b.id for b in images.get_most_recent_builds(
        "img", count=5, state=None)] == [good]
    assert images.get_upload("img", good, "p", "0000000099") is None
    assert [u.id for u in images.get_uploads("img", good, "p")] == [
        upload_id]
    assert images.get_uploads("img", orphan_build, "q") == []

    nodes = NodeStore(zk_client)
    assert nodes.get_node("0000000042") is None
    assert list(nodes.iter_nodes(cached=False)) == []

    # The CLI listings read the same tree.
    builds, paused = status.read_builds(images)
    assert [b.id for b in builds] == [good] and paused == []
    assert [u.id for u in status.read_uploads(images)] == [upload_id]
    assert [s.image for s in status.read_image_status(images)] == ["img"]
    assert status.read_nodes(nodes) == []


def test_not_found_getters(images, zk_client):
    nodes = NodeStore(zk_client)
    requests = RequestStore(zk_client)
    assert images.get_image_names() == []
    assert images.get_build_ids("img") == []
    assert images.get_build("img", "0" * 32) is None
    assert images.get_builds("img") == []
    assert images.get_most_recent_builds("img") == []
    assert images.get_build_providers("img", "0" * 32) == []
    assert images.get_upload_ids("img", "0" * 32, "p") == []
    assert images.get_upload("img", "0" * 32, "p", "0000000001") is None
    assert images.get_uploads("img", "0" * 32, "p") == []
    assert not images.is_image_paused("img")
    assert not images.has_build_request("img")
    assert images.delete_upload("img", "0" * 32, "p", "0000000001")
    assert images.export_image_data() == {}
    assert nodes.get_node("0000000000") is None
    assert nodes.get_node_ids() == []
    assert nodes.get_ready_nodes_of_types(["small"], cached=False) == {}
    assert requests.get_request("100-0000000000") is None
    assert list(requests.iter_requests(cached=False)) == []
    # Nothing was created by asking.
    assert not zk_client.kazoo.exists(paths.IMAGE_ROOT)
