# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Upstream ``test_zk.py`` scenarios not covered by the other test_zk_*
files: lock failure wording, force-unlock with a waiter, orphan lock
directories, not-found getters, multilabel ready nodes, port default."""

import json
import threading

import pytest
from kazoo.recipe.lock import Lock

from nodepool import status
from nodepool.exceptions import LockError, TimeoutException
from nodepool.zk import paths
from nodepool.zk.images import ImageStore
from nodepool.zk.models import (BuildState, ImageBuild, ImageUpload, Node,
                                NodeRequest, NodeState, UploadState)
from nodepool.zk.nodes import NodeStore
from nodepool.zk.requests import RequestStore
from tests.fixtures.waits import wait_for


def make_node(state=NodeState.READY, labels=("small",), **attrs):
    node = Node()
    node.state = state
    node.provider = "p1"
    node.pool = "main"
    node.type = list(labels)
    for key, value in attrs.items():
        setattr(node, key, value)
    return node


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


@pytest.fixture
def other_images(zk_factory):
    return ImageStore(zk_factory())


# -- lock failures -------------------------------------------------------------

def test_image_lock_failures_name_the_lock(images, other_images):
    """Non-blocking failure: ``Did not get lock on <path>``; a blocking
    attempt with a timeout raises TimeoutException."""
    build_id = images.store_build("img", make_build())
    upload_id = images.store_upload("img", build_id, "p", make_upload())
    cases = [
        (images.image_build_lock, other_images.acquire_image_build_lock,
         ("img",), paths.build_lock_path("img")),
        (images.build_id_lock, other_images.acquire_build_id_lock,
         ("img", build_id), paths.build_id_lock_path("img", build_id)),
        (images.upload_lock, other_images.acquire_upload_lock,
         ("img", build_id, "p"), paths.upload_lock_path("img", build_id,
                                                        "p")),
        (images.upload_number_lock, other_images.acquire_upload_number_lock,
         ("img", build_id, "p", upload_id),
         paths.upload_number_lock_path("img", build_id, "p", upload_id)),
    ]
    for held, acquire, args, path in cases:
        with held(*args):
            with pytest.raises(LockError) as exc:
                acquire(*args, blocking=False)
            assert not isinstance(exc.value, TimeoutException)
            assert str(exc.value) == "Did not get lock on %s" % path
            with pytest.raises(TimeoutException):
                acquire(*args, timeout=0.1)
            # Failed attempts leave only the holder.
            assert len(images._kazoo.get_children(path)) == 1
        other_images.release_lock(acquire(*args, blocking=False))


def test_node_and_request_lock_failures(zk_client, zk_factory):
    nodes, other_nodes = NodeStore(zk_client), NodeStore(zk_factory())
    node = make_node()
    nodes.store_node(node)
    nodes.lock_node(node, blocking=False)
    theirs = other_nodes.get_node(node.id)
    with pytest.raises(LockError) as exc:
        other_nodes.lock_node(theirs, blocking=False)
    assert str(exc.value) == "Did not get lock on %s" % \
        paths.node_lock_path(node.id)
    with pytest.raises(TimeoutException):
        other_nodes.lock_node(theirs, timeout=0.1)
    assert theirs.lock is None
    nodes.unlock_node(node)
    # Unlocking a node that is not locked is an error of its own.
    with pytest.raises(LockError):
        nodes.unlock_node(node)

    requests, other_requests = RequestStore(zk_client), \
        RequestStore(zk_factory())
    request = NodeRequest.new(["small"], "zuul01")
    requests.submit_request(request)
    requests.lock_request(request, blocking=False)
    with pytest.raises(LockError) as exc:
        other_requests.lock_request(other_requests.get_request(request.id),
                                    blocking=False)
    assert str(exc.value) == "Did not get lock on %s" % \
        paths.request_lock_path(request.id)
    requests.unlock_request(request)
    with pytest.raises(LockError):
        requests.unlock_request(request)


def test_force_unlock_node_removes_only_the_holder(zk_client, zk_factory):
    """forceUnlockNode: the lowest contender goes, a waiter then holds
    the lock."""
    store = NodeStore(zk_client)
    holder_store = NodeStore(zk_factory())
    waiter_store = NodeStore(zk_factory())
    node = make_node()
    store.store_node(node)
    held = holder_store.get_node(node.id)
    holder_store.lock_node(held, ephemeral=False)
    waiting = waiter_store.get_node(node.id)
    got = threading.Event()

    def wait_for_lock():
        waiter_store.lock_node(waiting, timeout=30)
        got.set()
    thread = threading.Thread(target=wait_for_lock, daemon=True)
    thread.start()
    wait_for(lambda: len(store.node_lock_contenders(node.id)) == 2)
    holder, waiter = store.node_lock_contenders(node.id)
    assert holder == held.lock.node

    assert store.force_unlock_node(node.id) == holder
    assert got.wait(30)
    thread.join(30)
    assert store.node_lock_contenders(node.id) == [waiter]
    assert waiting.lock.node == waiter
    # The broken holder's release does not disturb the new holder.
    holder_store.unlock_node(held)
    assert store.node_lock_contenders(node.id) == [waiter]
    waiter_store.unlock_node(waiting)
    assert store.node_lock_contenders(node.id) == []


# -- orphan lock directories ----------------------------------------------------

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
    assert images.get_most_recent_upload("img", "p").id == upload_id
    assert images.get_uploads("img", orphan_build, "q") == []
    assert images.get_most_recent_upload("img", "q") is None

    nodes = NodeStore(zk_client)
    assert nodes.get_node("0000000042") is None
    assert list(nodes.iter_nodes(cached=False)) == []

    # The CLI listings read the same tree.
    builds, paused = status.read_builds(images)
    assert [b.id for b in builds] == [good] and paused == []
    assert [u.id for u in status.read_uploads(images)] == [upload_id]
    assert [s.image for s in status.read_image_status(kz)] == ["img"]
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
    assert images.get_most_recent_upload("img", "p") is None
    assert not images.is_image_paused("img")
    assert not images.has_build_request("img")
    assert images.delete_upload("img", "0" * 32, "p", "0000000001")
    assert images.export_image_data() == {}
    assert nodes.get_node("0000000000") is None
    assert nodes.get_node_ids() == []
    assert nodes.get_ready_nodes_of_types(["small"], cached=False) == {}
    assert requests.get_request("100-0000000000") is None
    assert requests.sorted_requests(cached=False) == []
    # Nothing was created by asking.
    assert not zk_client.kazoo.exists(paths.IMAGE_ROOT)


# -- builds and uploads ------------------------------------------------------------

def test_upload_ids_increase_and_build_ids_are_unique(images):
    build_ids = {images.store_build("img", make_build()) for _ in range(5)}
    assert len(build_ids) == 5
    build_id = sorted(build_ids)[0]
    ids = [images.store_upload("img", build_id, "p", make_upload())
           for _ in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert images.get_upload_ids("img", build_id, "p") == ids


def test_delete_build_refused_while_uploads_exist(images):
    build_id = images.store_build("img", make_build())
    ready = images.store_upload("img", build_id, "p", make_upload())
    failed = images.store_upload("img", build_id, "q",
                                 make_upload(UploadState.FAILED))
    assert images.delete_build("img", build_id) is False
    images.delete_upload("img", build_id, "p", ready)
    # An upload in any state still counts.
    assert images.delete_build("img", build_id) is False
    assert images.get_build("img", build_id) is not None
    images.delete_upload("img", build_id, "q", failed)
    assert images.delete_build("img", build_id) is True
    assert images.get_build_ids("img") == []


# -- nodes ---------------------------------------------------------------------------

def test_ready_nodes_of_types_multilabel(zk_client):
    store = NodeStore(zk_client)
    multi = make_node(labels=("label1", "label2"))
    single = make_node(labels=("label2",))
    held = make_node(state=NodeState.HOLD, labels=("label1", "label2"))
    for node in (multi, single, held):
        store.store_node(node)
    ready = store.get_ready_nodes_of_types(["label1"], cached=False)
    assert {k: [n.id for n in v] for k, v in ready.items()} == {
        "label1": [multi.id]}
    ready = store.get_ready_nodes_of_types(["label1", "label2"],
                                           cached=False)
    assert {k: [n.id for n in v] for k, v in ready.items()} == {
        "label1": [multi.id], "label2": [multi.id, single.id]}


def test_connection_port_default_and_custom_on_the_wire(zk_client):
    store = NodeStore(zk_client)
    default = make_node()
    custom = make_node(connection_port=2222)
    for node in (default, custom):
        store.store_node(node)
    for node, port in ((default, 22), (custom, 2222)):
        data = json.loads(zk_client.kazoo.get(
            paths.node_path(node.id))[0])
        assert (data["connection_port"], data["ssh_port"]) == (port, port)
        assert "id" not in data
        assert store.get_node(node.id, cached=False).connection_port == port


def test_same_process_second_lock_attempt_fails(zk_client):
    """A node locked by this process cannot be locked again (no
    re-entrance); the first lock stays intact."""
    store = NodeStore(zk_client)
    node = make_node()
    store.store_node(node)
    store.lock_node(node, blocking=False)
    copy = store.get_node(node.id, cached=False)
    with pytest.raises(LockError):
        store.lock_node(copy, blocking=False)
    assert copy.lock is None
    assert store.node_lock_contenders(node.id) == [node.lock.node]
    store.unlock_node(node)


def test_delete_upload_under_its_lock(images):
    """Cleanup deletes an upload while holding its upload-number lock;
    the lock goes with the record and releasing it afterwards is fine."""
    build_id = images.store_build("img", make_build())
    upload_id = images.store_upload("img", build_id, "p", make_upload())
    with images.upload_number_lock("img", build_id, "p", upload_id):
        assert images.delete_upload("img", build_id, "p", upload_id)
    assert images.get_upload_ids("img", build_id, "p") == []
    assert images._kazoo.exists(paths.upload_path(
        "img", build_id, "p", upload_id)) is None
    assert images.delete_build("img", build_id) is True


# -- tree cache queue warnings ----------------------------------------------------

def test_cache_queue_size_warning_rate_limited(zk_client, caplog,
                                               monkeypatch):
    """A queue above QUEUE_WARNING_SIZE is logged at most once per
    QUEUE_WARNING_INTERVAL per queue, starting with the first time."""
    import queue
    from nodepool.zk import cache as cache_mod

    class Clock:
        now = 5.0  # shortly after boot

        @classmethod
        def monotonic(cls):
            return cls.now
    monkeypatch.setattr(cache_mod, "time", Clock)
    monkeypatch.setattr(cache_mod, "QUEUE_WARNING_SIZE", 3)
    cache = cache_mod.NodeCache(zk_client)   # never started
    full = queue.Queue()
    for item in range(4):
        full.put(item)
    small = queue.Queue()
    small.put(1)

    def warnings():
        return [r.getMessage() for r in caplog.records
                if r.levelname == "WARNING" and "queue has" in
                r.getMessage()]
    with caplog.at_level("WARNING"):
        cache._check_queue("event", small)
        assert warnings() == []
        cache._check_queue("event", full)
        assert warnings() == ["event queue has 4 entries"]
        Clock.now += 30
        cache._check_queue("event", full)
        cache._check_queue("playback", full)
        assert warnings() == ["event queue has 4 entries",
                              "playback queue has 4 entries"]
        Clock.now += cache_mod.QUEUE_WARNING_INTERVAL
        cache._check_queue("event", full)
        assert warnings()[-1] == "event queue has 4 entries"
        assert len(warnings()) == 3
