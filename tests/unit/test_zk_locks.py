# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
import re
import threading

import pytest
from kazoo.recipe.lock import Lock

from nodepool.exceptions import LockError, TimeoutException
from nodepool.zk import locks, paths
from nodepool.zk.images import ImageStore
from nodepool.zk.models import (BuildState, ImageBuild, ImageUpload, Node,
                                NodeRequest, NodeState, UploadState)
from nodepool.zk.nodes import NodeStore
from nodepool.zk.requests import RequestStore
from tests.fixtures import zkserver
from tests.fixtures.locks import holding
from tests.fixtures.waits import wait_for

PATH = "/nodepool/nodes/0000000000/lock"
CONTENDER = re.compile(r"^[0-9a-f]{32}__lock__\d{10}$")


def test_mutual_exclusion_between_clients(zk_factory):
    a = zk_factory()
    b = zk_factory()
    lock_a = locks.acquire_lock(a.kazoo, PATH)
    got_b = threading.Event()
    result = {}

    def take():
        result["lock"] = locks.acquire_lock(b.kazoo, PATH, timeout=30)
        got_b.set()
    t = threading.Thread(target=take, daemon=True)
    t.start()
    # B is queued behind A: its contender exists but is not the lowest.
    wait_for(lambda: len(locks.lock_contenders(a.kazoo, PATH)) == 2)
    assert not got_b.is_set()
    assert locks.lock_contenders(a.kazoo, PATH)[0] == lock_a.node
    locks.release_lock(lock_a)
    assert got_b.wait(30)
    t.join(30)
    assert locks.lock_contenders(a.kazoo, PATH) == [result["lock"].node]
    assert locks.is_lock_holder(result["lock"])
    assert not locks.is_lock_holder(lock_a)
    locks.release_lock(result["lock"])
    assert locks.lock_contenders(a.kazoo, PATH) == []
    assert not locks.lock_is_held(a.kazoo, PATH)


def test_non_blocking_fails_and_cleans_up(zk_factory):
    a = zk_factory()
    b = zk_factory()
    lock_a = locks.acquire_lock(a.kazoo, PATH)
    with pytest.raises(LockError) as exc:
        locks.acquire_lock(b.kazoo, PATH, blocking=False)
    assert not isinstance(exc.value, TimeoutException)
    assert locks.lock_contenders(b.kazoo, PATH) == [lock_a.node]
    locks.release_lock(lock_a)
    lock_b = locks.acquire_lock(b.kazoo, PATH, blocking=False)
    assert locks.is_lock_holder(lock_b)
    locks.release_lock(lock_b)


def test_timeout_raises_and_cleans_up(zk_factory):
    a = zk_factory()
    b = zk_factory()
    lock_a = locks.acquire_lock(a.kazoo, PATH)
    with pytest.raises(TimeoutException):
        locks.acquire_lock(b.kazoo, PATH, timeout=0.5)
    assert locks.lock_contenders(b.kazoo, PATH) == [lock_a.node]
    locks.release_lock(lock_a)


def test_locked_context_manager(zk_client):
    with locks.locked(zk_client.kazoo, PATH, identifier="me") as lock:
        assert locks.lock_is_held(zk_client.kazoo, PATH)
        assert lock.contenders() == ["me"]
        with pytest.raises(LockError):
            with locks.locked(zk_client.kazoo, PATH, blocking=False):
                pass  # pragma: no cover
    assert not locks.lock_is_held(zk_client.kazoo, PATH)


def test_locked_releases_on_exception(zk_client):
    with pytest.raises(RuntimeError):
        with locks.locked(zk_client.kazoo, PATH):
            raise RuntimeError("boom")
    assert locks.lock_contenders(zk_client.kazoo, PATH) == []


def test_contender_naming_compatible_with_plain_kazoo(zk_factory):
    ours = zk_factory()
    zuul = zk_factory()
    lock = locks.acquire_lock(ours.kazoo, PATH)
    (name,) = zuul.kazoo.get_children(PATH)
    assert CONTENDER.match(name)
    # Zuul uses kazoo's Lock directly: it must see our lock as held ...
    theirs = Lock(zuul.kazoo, PATH, "zuul")
    assert theirs.acquire(blocking=False) is False
    locks.release_lock(lock)
    # ... and we must see its lock as held.
    assert theirs.acquire(blocking=False) is True
    assert locks.lock_is_held(ours.kazoo, PATH)
    assert locks.lock_contenders(ours.kazoo, PATH) == [theirs.node]
    with pytest.raises(LockError):
        locks.acquire_lock(ours.kazoo, PATH, blocking=False)
    theirs.release()
    assert not locks.lock_is_held(ours.kazoo, PATH)


def test_contenders_ignore_other_children_and_missing_dir(zk_client):
    kz = zk_client.kazoo
    assert locks.lock_contenders(kz, PATH) == []
    kz.create(PATH + "/not-a-contender", makepath=True)
    assert locks.lock_contenders(kz, PATH) == []
    assert not locks.lock_is_held(kz, PATH)


def test_lock_released_on_session_loss(zk_factory):
    a = zk_factory()
    b = zk_factory()
    lock_a = locks.acquire_lock(a.kazoo, PATH)
    zkserver.expire_session(a.kazoo)
    lock_b = locks.acquire_lock(b.kazoo, PATH, timeout=30)
    assert locks.is_lock_holder(lock_b)
    wait_for(lambda: a.connected, timeout=60)
    assert not locks.is_lock_holder(lock_a)
    # Release after the loss must neither raise nor touch B's lock.
    locks.release_lock(lock_a)
    assert not lock_a.is_acquired
    assert locks.lock_contenders(b.kazoo, PATH) == [lock_b.node]
    locks.release_lock(lock_b)


def test_release_on_stopped_client_does_not_raise(zk_factory):
    a = zk_factory()
    lock = locks.acquire_lock(a.kazoo, PATH)
    a.kazoo.stop()
    locks.release_lock(lock)
    assert not lock.is_acquired
    locks.release_lock(None)


# -- record locks through the stores ----------------------------------------

def ready_node(state=NodeState.READY, labels=("small",), **attrs):
    node = Node()
    node.state = state
    node.provider = "p1"
    node.pool = "main"
    node.type = list(labels)
    for key, value in attrs.items():
        setattr(node, key, value)
    return node


def ready_build(state=BuildState.READY):
    build = ImageBuild()
    build.state = state
    build.formats = ["qcow2"]
    return build


def ready_upload(state=UploadState.READY):
    upload = ImageUpload()
    upload.state = state
    upload.external_id = "img-1"
    return upload


@pytest.fixture
def images(zk_client):
    """An ImageStore on the test's client."""
    return ImageStore(zk_client)


@pytest.fixture
def other_images(zk_factory):
    """An ImageStore on a second connection."""
    return ImageStore(zk_factory())


def test_image_lock_failures_name_the_lock(images, other_images):
    """Non-blocking failure: ``Did not get lock on <path>``; a blocking
    attempt with a timeout raises TimeoutException."""
    build_id = images.store_build("img", ready_build())
    upload_id = images.store_upload("img", build_id, "p", ready_upload())
    cases = [
        (images.acquire_image_build_lock, other_images.acquire_image_build_lock,
         ("img",), paths.build_lock_path("img")),
        (images.acquire_build_id_lock, other_images.acquire_build_id_lock,
         ("img", build_id), paths.build_id_lock_path("img", build_id)),
        (images.acquire_upload_lock, other_images.acquire_upload_lock,
         ("img", build_id, "p"), paths.upload_lock_path("img", build_id,
                                                        "p")),
        (images.acquire_upload_number_lock,
         other_images.acquire_upload_number_lock,
         ("img", build_id, "p", upload_id),
         paths.upload_number_lock_path("img", build_id, "p", upload_id)),
    ]
    for hold, acquire, args, path in cases:
        with holding(hold(*args)):
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
    node = ready_node()
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


def test_same_process_second_lock_attempt_fails(zk_client):
    """A node locked by this process cannot be locked again (no
    re-entrance); the first lock stays intact."""
    store = NodeStore(zk_client)
    node = ready_node()
    store.store_node(node)
    store.lock_node(node, blocking=False)
    copy = store.get_node(node.id, cached=False)
    with pytest.raises(LockError):
        store.lock_node(copy, blocking=False)
    assert copy.lock is None
    assert store.node_lock_contenders(node.id) == [node.lock.node]
    store.unlock_node(node)
