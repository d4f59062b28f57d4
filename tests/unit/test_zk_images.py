# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
import json
import logging
import re
import threading
import uuid

import pytest
from kazoo.client import KazooClient

from nodepool.exceptions import LockError, TimeoutException
from nodepool.zk import paths
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.images import ImageStore
from nodepool.zk.models import BuildState, ImageBuild, ImageUpload, UploadState
from tests.fixtures.locks import holding
from tests.fixtures.waits import wait_for


@pytest.fixture
def store(zk_client):
    return ImageStore(zk_client)


@pytest.fixture
def other_store(zk_factory):
    return ImageStore(zk_factory())


@pytest.fixture
def fresh_store(zk_server):
    """An ImageStore on a second, empty chroot."""
    chroot = "/nodepool-test-%s" % uuid.uuid4().hex
    client = ZooKeeperClient(zk_server.tls_hosts + chroot,
                             **zk_server.tls_args())
    client.connect()
    client.kazoo.ensure_path("/")
    yield ImageStore(client)
    client.disconnect()
    admin = KazooClient(hosts=zk_server.plain_hosts)
    admin.start(timeout=30)
    try:
        admin.delete(chroot, recursive=True)
    finally:
        admin.stop()
        admin.close()


def make_build(state=BuildState.READY, formats=("qcow2",), when=None):
    build = ImageBuild()
    build.state = state
    if when is not None:
        build.state_time = when
    build.builder = "builder.example.com"
    build.builder_id = "1b2c3d4e-0000-4000-8000-000000000000"
    build.formats = list(formats)
    return build


def make_upload(state=UploadState.READY, when=None, external_id=None):
    upload = ImageUpload()
    upload.state = state
    if when is not None:
        upload.state_time = when
    upload.external_id = external_id
    upload.external_name = "img-123"
    upload.format = "qcow2"
    return upload


def raw_json(store, path):
    data, _ = store._zk.kazoo.get(path)
    return json.loads(data)


# Images, pause and build requests -------------------------------------

def test_pause_and_unpause(store, other_store):
    assert store.get_image_names() == []
    assert not store.is_image_paused("img")
    store.pause_image("img")
    store.pause_image("img")
    assert other_store.is_image_paused("img")
    assert store._zk.kazoo.get(paths.image_pause_path("img"))[0] == b""
    assert store.get_image_names() == ["img"]
    store.unpause_image("img")
    store.unpause_image("img")
    assert not other_store.is_image_paused("img")


def test_build_request(store, other_store):
    assert not store.has_build_request("img")
    store.submit_build_request("img")
    store.submit_build_request("img")
    assert other_store.has_build_request("img")
    assert store._zk.kazoo.exists(
        "/nodepool/images/img/request-build") is not None
    other_store.remove_build_request("img")
    other_store.remove_build_request("img")
    assert not store.has_build_request("img")


# Builds -----------------------------------------------------------------

def test_build_round_trip(store, other_store):
    build = make_build(BuildState.BUILDING, formats=("raw", "qcow2"))
    build_id = store.store_build("img", build)
    assert re.fullmatch(r"[0-9a-f]{32}", build_id)
    assert build.id == build_id and build.image_name == "img"
    assert build.stat is not None
    path = "/nodepool/images/img/builds/%s" % build_id
    assert raw_json(store, path) == {
        "state": "building", "state_time": build.state_time,
        "builder": "builder.example.com",
        "builder_id": "1b2c3d4e-0000-4000-8000-000000000000",
        "formats": "qcow2,raw", "username": "zuul", "python_path": None,
        "shell_type": None}

    read = other_store.get_build("img", build_id)
    assert read == build
    assert read.formats == ["qcow2", "raw"]
    assert read.stat.version == 0

    build.state = BuildState.READY
    assert store.store_build("img", build, build_id) == build_id
    assert other_store.get_build("img", build_id).state == BuildState.READY
    assert other_store.get_build_ids("img") == [build_id]
    # A second build gets a different random id.
    assert store.store_build("img", make_build()) != build_id
    assert store.get_build("img", "0" * 32) is None
    assert store.get_build("nope", build_id) is None


def test_store_build_with_new_id_creates(store):
    assert store.store_build("img", make_build(), "0000000001") == \
        "0000000001"
    assert store.get_build("img", "0000000001").state == BuildState.READY


def test_get_builds_and_most_recent(store):
    ids = {}
    for name, state, when in (("old", BuildState.READY, 100.0),
                              ("new", BuildState.READY, 300.0),
                              ("mid", BuildState.READY, 200.0),
                              ("failed", BuildState.FAILED, 400.0),
                              ("building", BuildState.BUILDING, 500.0)):
        ids[name] = store.store_build("img", make_build(state, when=when))
    all_builds = store.get_builds("img")
    assert sorted(b.id for b in all_builds) == sorted(ids.values())
    ready = store.get_builds("img", [BuildState.READY])
    assert {b.id for b in ready} == {ids["old"], ids["mid"], ids["new"]}
    assert {b.id for b in store.get_builds(
        "img", ["failed", BuildState.BUILDING])} == \
        {ids["failed"], ids["building"]}

    [newest] = store.get_most_recent_builds("img")
    assert newest.id == ids["new"]
    assert [b.id for b in store.get_most_recent_builds("img", 2)] == \
        [ids["new"], ids["mid"]]
    assert [b.id for b in store.get_most_recent_builds("img", 10)] == \
        [ids["new"], ids["mid"], ids["old"]]
    assert [b.id for b in store.get_most_recent_builds(
        "img", 1, BuildState.FAILED)] == [ids["failed"]]
    assert [b.id for b in store.get_most_recent_builds(
        "img", 1, None)] == [ids["building"]]
    assert store.get_most_recent_builds("other") == []


def test_invalid_payloads_are_skipped(store, caplog):
    good = store.store_build("img", make_build())
    kazoo = store._zk.kazoo
    kazoo.create(paths.build_path("img", "badjson"), b"{nope")
    kazoo.create(paths.build_path("img", "badstate"),
                 json.dumps({"state": "melted"}).encode())
    kazoo.create(paths.build_path("img", "empty"), b"")
    with caplog.at_level(logging.WARNING, logger="nodepool.zk.images"):
        assert [b.id for b in store.get_builds("img")] == [good]
    assert "badjson" in caplog.text and "badstate" in caplog.text
    assert store.get_build("img", "badjson") is None
    assert [b.id for b in store.get_most_recent_builds("img")] == [good]

    upload_id = store.store_upload("img", good, "p", make_upload())
    kazoo.create(paths.upload_path("img", good, "p", "0000000099"),
                 b"[1]")
    assert [u.id for u in store.get_uploads("img", good, "p")] == \
        [upload_id]


def test_delete_build(store):
    build_id = store.store_build("img", make_build())
    upload_id = store.store_upload("img", build_id, "p", make_upload())
    with holding(store.acquire_build_id_lock("img", build_id)):
        pass
    assert store.delete_build("img", build_id) is False
    assert store.get_build("img", build_id) is not None
    store.delete_upload("img", build_id, "p", upload_id)
    # Empty provider trees and lock directories do not count as uploads.
    assert store.get_build_providers("img", build_id) == ["p"]
    assert store.delete_build("img", build_id) is True
    assert store._zk.kazoo.exists(paths.build_path("img", build_id)) is None
    assert store.delete_build("img", build_id) is True


def test_delete_build_forced(store):
    build_id = store.store_build("img", make_build())
    store.store_upload("img", build_id, "p", make_upload())
    assert store.delete_build("img", build_id, force=True) is True
    assert store.get_build_ids("img") == []


# Uploads ------------------------------------------------------------------

def test_upload_round_trip(store, other_store):
    build_id = store.store_build("img", make_build())
    upload = make_upload(UploadState.UPLOADING)
    upload.username = "ubuntu"
    upload.python_path = "/usr/bin/python3"
    with holding(store.acquire_upload_lock("img", build_id, "prov")):
        upload_id = store.store_upload("img", build_id, "prov", upload)
    # The lock directory bumped the parent's sequence first.
    assert upload_id == "0000000001"
    assert (upload.image_name, upload.build_id, upload.provider_name,
            upload.id) == ("img", build_id, "prov", "0000000001")
    path = ("/nodepool/images/img/builds/%s/providers/prov/images/"
            "0000000001" % build_id)
    assert raw_json(store, path) == {
        "state": "uploading", "state_time": upload.state_time,
        "external_id": None, "external_name": "img-123", "format": "qcow2",
        "username": "ubuntu", "python_path": "/usr/bin/python3",
        "shell_type": None}

    read = other_store.get_upload("img", build_id, "prov", upload_id)
    assert read == upload
    read.state = UploadState.READY
    read.external_id = "ami-1"
    assert other_store.store_upload("img", build_id, "prov", read,
                                    upload_id) == upload_id
    assert store.get_upload("img", build_id, "prov", upload_id) \
        .external_id == "ami-1"

    second = store.store_upload("img", build_id, "prov", make_upload())
    assert second == "0000000002"
    assert store.get_upload_ids("img", build_id, "prov") == \
        ["0000000001", "0000000002"]
    assert store.get_build_providers("img", build_id) == ["prov"]
    assert store.get_upload("img", build_id, "prov", "0000000003") is None

    assert store.delete_upload("img", build_id, "prov", second) is True
    assert store.delete_upload("img", build_id, "prov", second) is True
    assert store.get_upload_ids("img", build_id, "prov") == ["0000000001"]


def test_upload_without_lock_starts_at_zero(store):
    build_id = store.store_build("img", make_build())
    assert store.store_upload("img", build_id, "p", make_upload()) == \
        "0000000000"


def test_get_uploads_by_state(store):
    b1 = store.store_build("img", make_build())
    b2 = store.store_build("img", make_build())
    u_old = store.store_upload("img", b1, "p", make_upload(when=100.0))
    store.store_upload("img", b2, "p", make_upload(when=300.0))
    u_failed = store.store_upload(
        "img", b1, "p", make_upload(UploadState.FAILED, when=900.0))
    u_mid = store.store_upload("img", b1, "p", make_upload(when=200.0))
    store.store_upload("img", b1, "q", make_upload(when=999.0))

    assert [u.id for u in store.get_uploads("img", b1, "p")] == \
        [u_old, u_failed, u_mid]
    assert [u.id for u in store.get_uploads(
        "img", b1, "p", [UploadState.READY])] == [u_old, u_mid]


# Locks ----------------------------------------------------------------------

def lock_cases(store, build_id, upload_id):
    """``(name, hold, args)`` per lock: ``hold(*args, **options)`` takes
    the lock for a ``with`` block."""
    def held(acquire):
        return lambda *args, **kwargs: holding(acquire(*args, **kwargs))
    return [
        ("image build", held(store.acquire_image_build_lock), ("img",)),
        ("build id", held(store.acquire_build_id_lock), ("img", build_id)),
        ("upload", held(store.acquire_upload_lock), ("img", build_id, "p")),
        ("upload number", held(store.acquire_upload_number_lock),
         ("img", build_id, "p", upload_id)),
    ]


@pytest.mark.parametrize("which", range(4))
def test_locks_are_exclusive_between_clients(store, other_store, which):
    build_id = store.store_build("img", make_build())
    upload_id = store.store_upload("img", build_id, "p", make_upload())
    name, lock_one, args = lock_cases(store, build_id, upload_id)[which]
    _, lock_two, _ = lock_cases(other_store, build_id, upload_id)[which]

    with lock_one(*args, identifier="one"):
        with pytest.raises(LockError):
            with lock_two(*args, blocking=False):
                pytest.fail("%s lock taken twice" % name)
        with pytest.raises(TimeoutException):
            with lock_two(*args, timeout=0.2):
                pytest.fail("%s lock taken twice" % name)

        # A blocking waiter gets the lock once the holder lets go.
        got = threading.Event()
        release = threading.Event()

        def waiter():
            with lock_two(*args, timeout=30):
                got.set()
                release.wait(30)
        thread = threading.Thread(target=waiter, daemon=True)
        thread.start()
        wait_for(lambda: len(store._zk.kazoo.get_children(
            lock_path(which, build_id, upload_id))) == 2)
        assert not got.is_set()
    wait_for(got.is_set)
    with pytest.raises(LockError):
        with lock_one(*args, blocking=False):
            pass
    release.set()
    thread.join(30)
    with lock_one(*args, blocking=False):
        pass


def lock_path(which, build_id, upload_id):
    return [paths.build_lock_path("img"),
            paths.build_id_lock_path("img", build_id),
            paths.upload_lock_path("img", build_id, "p"),
            paths.upload_number_lock_path("img", build_id, "p",
                                          upload_id)][which]


def test_acquire_and_release_functions(store, other_store):
    build_id = store.store_build("img", make_build())
    lock = store.acquire_upload_lock("img", build_id, "p", blocking=False)
    assert other_store.is_upload_locked("img", build_id, "p")
    with pytest.raises(LockError):
        other_store.acquire_upload_lock("img", build_id, "p", blocking=False)
    store.release_lock(lock)
    store.release_lock(lock)
    assert not other_store.is_upload_locked("img", build_id, "p")
    other_store.release_lock(other_store.acquire_upload_lock(
        "img", build_id, "p", blocking=False))


def test_locking_missing_records_fails_without_creating(store):
    with pytest.raises(LockError):
        store.acquire_build_id_lock("img", "f" * 32, blocking=False)
    assert store._zk.kazoo.exists(paths.build_path("img", "f" * 32)) is None
    build_id = store.store_build("img", make_build())
    with pytest.raises(LockError):
        store.acquire_upload_number_lock("img", build_id, "p", "0000000007")
    assert store._zk.kazoo.exists(
        paths.upload_path("img", build_id, "p", "0000000007")) is None


# Export and import ----------------------------------------------------------

def populate(store):
    b1 = store.store_build("img", make_build(when=100.0))
    b2 = store.store_build("img", make_build(BuildState.BUILDING, when=5.0))
    with holding(store.acquire_upload_lock("img", b1, "p")):
        for _ in range(3):
            store.store_upload("img", b1, "p", make_upload(when=50.0))
    store.delete_upload("img", b1, "p", "0000000002")
    store.store_upload("img", b1, "q", make_upload(external_id="x"))
    store.pause_image("img")
    store.submit_build_request("img")
    store.store_build("other", make_build())
    with holding(store.acquire_image_build_lock("other")):
        pass
    with holding(store.acquire_upload_number_lock("img", b1, "p",
                                                  "0000000003")):
        pass
    return b1, b2


def test_export(store):
    b1, b2 = populate(store)
    [b3] = store.get_build_ids("other")
    data = store.export_image_data()
    base = "/nodepool/images/img/builds/"
    assert set(data) == {
        "/nodepool/images/img/pause",
        base + b1, base + b2, "/nodepool/images/other/builds/" + b3,
        base + b1 + "/providers/p/images/0000000001",
        base + b1 + "/providers/p/images/0000000003",
        base + b1 + "/providers/q/images/0000000000",
    }
    assert data["/nodepool/images/img/pause"] == ""
    assert all(isinstance(v, str) for v in data.values())
    assert json.loads(data[base + b1]) == store.get_build("img", b1).to_dict()
    assert json.loads(data[base + b1 + "/providers/q/images/0000000000"])[
        "external_id"] == "x"
    # The export is plain JSON.
    assert json.loads(json.dumps(data)) == data


def test_import_round_trip_and_sequence_rule(store, fresh_store):
    b1, b2 = populate(store)
    data = store.export_image_data()
    fresh_store.import_image_data(data)
    assert fresh_store.export_image_data() == data
    assert fresh_store.is_image_paused("img")
    assert not fresh_store.has_build_request("img")
    assert fresh_store.get_build("img", b1) == store.get_build("img", b1)
    assert fresh_store.get_upload_ids("img", b1, "p") == \
        ["0000000001", "0000000003"]
    assert fresh_store.get_upload("img", b1, "p", "0000000003") == \
        store.get_upload("img", b1, "p", "0000000003")
    # New uploads are numbered after every imported one.
    new_p = fresh_store.store_upload("img", b1, "p", make_upload())
    new_q = fresh_store.store_upload("img", b1, "q", make_upload())
    assert int(new_p) > 3
    assert int(new_q) > 0
    assert fresh_store.get_upload_ids("img", b1, "p") == \
        ["0000000001", "0000000003", new_p]
    # Importing again over existing data overwrites it.
    fresh_store.import_image_data(data)
    assert fresh_store.get_upload("img", b1, "p", "0000000001") == \
        store.get_upload("img", b1, "p", "0000000001")


def test_import_into_tree_with_higher_counter(store, fresh_store):
    build_id = store.store_build("img", make_build())
    store.store_upload("img", build_id, "p", make_upload())
    data = store.export_image_data()
    for _ in range(5):
        fresh_store.store_upload("img", build_id, "p", make_upload())
    fresh_store.import_image_data(data)
    assert fresh_store.get_upload_ids("img", build_id, "p") == \
        ["%010d" % n for n in range(5)]
    assert fresh_store.store_upload("img", build_id, "p",
                                    make_upload()) > "0000000004"


def test_import_rejects_foreign_paths(fresh_store):
    with pytest.raises(ValueError):
        fresh_store.import_image_data({"/nodepool/nodes/0000000001": "{}"})
    with pytest.raises(ValueError):
        fresh_store.import_image_data({"/nodepool/images/x/pause": None})
    assert fresh_store.get_image_names() == []


def test_upload_ids_increase_and_build_ids_are_unique(store):
    build_ids = {store.store_build("img", make_build()) for _ in range(5)}
    assert len(build_ids) == 5
    build_id = sorted(build_ids)[0]
    ids = [store.store_upload("img", build_id, "p", make_upload())
           for _ in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert store.get_upload_ids("img", build_id, "p") == ids


def test_delete_build_refused_while_uploads_exist(store):
    build_id = store.store_build("img", make_build())
    ready = store.store_upload("img", build_id, "p", make_upload())
    failed = store.store_upload("img", build_id, "q",
                                make_upload(UploadState.FAILED))
    assert store.delete_build("img", build_id) is False
    store.delete_upload("img", build_id, "p", ready)
    # An upload in any state still counts.
    assert store.delete_build("img", build_id) is False
    assert store.get_build("img", build_id) is not None
    store.delete_upload("img", build_id, "q", failed)
    assert store.delete_build("img", build_id) is True
    assert store.get_build_ids("img") == []


def test_delete_upload_under_its_lock(store):
    """Cleanup deletes an upload while holding its upload-number lock;
    the lock goes with the record and releasing it afterwards is fine."""
    build_id = store.store_build("img", make_build())
    upload_id = store.store_upload("img", build_id, "p", make_upload())
    with holding(store.acquire_upload_number_lock("img", build_id, "p",
                                                  upload_id)):
        assert store.delete_upload("img", build_id, "p", upload_id)
    assert store.get_upload_ids("img", build_id, "p") == []
    assert store._kazoo.exists(paths.upload_path(
        "img", build_id, "p", upload_id)) is None
    assert store.delete_build("img", build_id) is True


# -- status reads and provider erasure (the CLI's image-status, erase) --------

def ctime(zk_client, path):
    return zk_client.kazoo.exists(path).ctime


def test_build_request_ctime(store, zk_client):
    assert store.build_request_ctime("img") is None
    store.submit_build_request("img")
    assert store.build_request_ctime("img") == ctime(
        zk_client, paths.image_build_request_path("img"))
    store.remove_build_request("img")
    assert store.build_request_ctime("img") is None


def test_build_lock_ctime_only_while_contended(store, other_store,
                                               zk_client):
    assert store.build_lock_ctime("img") is None
    with holding(other_store.acquire_image_build_lock("img")):
        lock_ctime = store.build_lock_ctime("img")
        assert lock_ctime == ctime(zk_client, paths.build_lock_path("img"))
    # The lock directory stays behind, but nobody holds or wants it.
    assert zk_client.kazoo.exists(paths.build_lock_path("img")) is not None
    assert store.build_lock_ctime("img") is None


def test_build_ctimes_skip_the_lock(store, zk_client):
    assert store.build_ctimes("img") == {}
    first = store.store_build("img", make_build())
    with holding(store.acquire_image_build_lock("img")):
        second = store.store_build("img", make_build())
    assert store.build_ctimes("img") == {
        build_id: ctime(zk_client, paths.build_path("img", build_id))
        for build_id in (first, second)}


def test_image_status_read_through_the_store(store, other_store):
    from nodepool import status
    store.store_build("img", make_build())
    store.submit_build_request("img")
    store.pause_image("other")
    (img, other) = status.read_image_status(store)
    assert (img.image, img.paused, img.build_request) == (
        "img", False, "pending")
    assert img.build_request_age == store.build_request_ctime("img")
    assert (other.image, other.paused, other.build_request) == (
        "other", True, None)
    # Locked for a build older than the lock: still pending.
    with holding(other_store.acquire_image_build_lock("img")):
        assert status.read_image_status(store)[0].build_request == "pending"
        store.store_build("img", make_build(BuildState.BUILDING))
        assert status.read_image_status(store)[0].build_request == \
            "building"
    assert status.read_image_status(store)[0].build_request == "pending"


def test_delete_build_provider(store, zk_client):
    build_id = store.store_build("img", make_build())
    store.store_upload("img", build_id, "p", make_upload())
    kept = store.store_upload("img", build_id, "q", make_upload())
    with holding(store.acquire_upload_lock("img", build_id, "p")):
        pass  # leaves the upload lock directory below "p"
    store.delete_build_provider("img", build_id, "p")
    assert zk_client.kazoo.exists(
        paths.build_provider_path("img", build_id, "p")) is None
    assert store.get_build_providers("img", build_id) == ["q"]
    assert store.get_upload_ids("img", build_id, "q") == [kept]
    # Nothing left to delete, or no such build: fine either way.
    store.delete_build_provider("img", build_id, "p")
    store.delete_build_provider("img", "0" * 32, "p")
