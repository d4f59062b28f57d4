# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The builder in-process against a real ZooKeeper, the fake DIB script
and the test driver's fake image uploads."""

import json
import os
import textwrap
import threading

import pytest

from nodepool.builder.server import NodePoolBuilder
from nodepool.cmd import nodepoolcmd
from nodepool.config import ConfigValidationError, load_config
from nodepool.stats import StatsReporter
from nodepool.zk import paths
from nodepool.zk.images import ImageStore
from nodepool.zk.models import (BuildState, ImageBuild, ImageUpload,
                                UploadState)
from tests.configs import corpus
from tests.fakes.fake_dib import DIB_CMD
from tests.fakes.test_driver import FakeCloud
from tests.fixtures import zkserver
from tests.fixtures.waits import wait_for

CONFIG = """
images-dir: {images_dir}
build-log-dir: {log_dir}
build-log-retention: {retention}
images-dir-required-free: {required_free}
labels: []
diskimages:
  - name: fake-image
    dib-cmd: {dib_cmd}
    elements: [fedora, vm]
    release: 21
    formats: [qcow2]
    rebuild-age: {rebuild_age}
    build-timeout: {build_timeout}
    pause: {image_pause}
    delete-after-upload: {delete_after_upload}
    keep-formats: {keep_formats}
    metadata:
      team: infra
    env-vars:
      FAKE_DIB_RECORD_DIR: {record_dir}
      FAKE_DIB_FAIL: "{fail}"
      TMPDIR: /opt/dib_tmp
providers:
  - name: fake
    driver: test
    diskimages: {provider_images}
    post-upload-hook: {hook}
    post-upload-hook-timeout: {hook_timeout}
    pools: []
"""

DEFAULTS = dict(retention=3, rebuild_age=86400, build_timeout=60,
                image_pause="false", fail=0, required_free=0,
                delete_after_upload="false", keep_formats="[]", hook="null",
                hook_timeout=3600,
                provider_images="[{name: fake-image, meta: {team: qa}}]")


class Env:
    """Paths and config writing for one test."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.images_dir = tmp_path / "images"
        self.log_dir = tmp_path / "logs"
        self.record_dir = tmp_path / "records"
        self.config = tmp_path / "nodepool.yaml"
        self.values = dict(DEFAULTS)

    def write(self, text=None, **values):
        self.values.update(values)
        self.write_raw(textwrap.dedent(text or CONFIG).format(
            images_dir=self.images_dir, log_dir=self.log_dir,
            record_dir=self.record_dir, dib_cmd=DIB_CMD, **self.values))

    def write_raw(self, body):
        """Replace the config file atomically with a newer mtime."""
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(body)
        # A new mtime even within the file system's timestamp granularity.
        if self.config.exists():
            st = os.stat(self.config)
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
        os.replace(tmp, self.config)

    def pause_dib(self):
        """Make the fake DIB wait (with its build BUILDING) until the
        returned file is removed."""
        self.images_dir.mkdir()
        pause = self.images_dir / "fake-dib.pause"
        pause.write_text("")
        return pause


@pytest.fixture
def env(tmp_path):
    env = Env(tmp_path)
    env.write()
    return env


@pytest.fixture
def builder_factory(env, zk_factory):
    builders = []

    def factory(config=None, **kwargs):
        params = dict(num_builders=1, num_uploaders=1, build_interval=0.05,
                      upload_interval=0.05, cleanup_interval=0.1,
                      dib_poll=0.02, upload_join_timeout=10)
        params.update(kwargs)
        builder = NodePoolBuilder(str(config or env.config),
                                  zk_client=zk_factory(),
                                  stats=StatsReporter.from_environment(),
                                  **params)
        builder.start()
        builders.append(builder)
        return builder
    yield factory
    for builder in builders:
        builder.stop()
    for builder in builders:
        builder.join()


@pytest.fixture
def store(zk_client):
    return ImageStore(zk_client)


def raw(kazoo, path):
    data, _ = kazoo.get(path)
    return json.loads(data)


def ready_builds(store, image="fake-image"):
    return store.get_builds(image, [BuildState.READY])


def ready_uploads(store, build_id, provider="fake", image="fake-image"):
    return store.get_uploads(image, build_id, provider, [UploadState.READY])


def wait_for_upload(store, count=1, image="fake-image", provider="fake"):
    """The READY builds once ``count`` of them have a READY upload."""
    def done():
        builds = ready_builds(store, image)
        uploaded = [b for b in builds
                    if ready_uploads(store, b.id, provider, image)]
        return uploaded if len(uploaded) >= count else None
    return wait_for(done, timeout=30)


def wait_for_building(store):
    """The first build of fake-image in state BUILDING, once there is one."""
    return wait_for(
        lambda: store.get_builds("fake-image", [BuildState.BUILDING]))[0]


def passes(worker, more=2):
    """Wait until ``worker`` completed ``more`` further passes."""
    target = worker.passes + more
    wait_for(lambda: worker.passes >= target, timeout=30)


def test_build_and_upload(env, builder_factory, store, zk_client, statsd):
    builder = builder_factory()
    build = wait_for_upload(store)[0]
    kazoo = zk_client.kazoo
    builder_id = (env.images_dir / "builder_id.txt").read_text()
    assert builder.builder_id == builder_id

    record = raw(kazoo, paths.build_path("fake-image", build.id))
    assert record["state"] == "ready"
    assert isinstance(record["state_time"], float)
    assert record["builder"] == builder.hostname
    assert record["builder_id"] == builder_id
    assert record["formats"] == "qcow2,raw"
    assert record["username"] == "zuul"
    assert record["python_path"] == "auto"
    assert len(build.id) == 32 and int(build.id, 16) >= 0

    upload = ready_uploads(store, build.id)[0]
    assert upload.id == "0000000001"
    record = raw(kazoo, paths.upload_path("fake-image", build.id, "fake",
                                          upload.id))
    assert record["state"] == "ready"
    assert record["format"] == "raw"
    assert record["external_name"].startswith("fake-image-")
    assert record["username"] == "zuul"
    cloud = FakeCloud.get("fake")
    image = cloud.images[record["external_id"]]
    assert image.name == record["external_name"]
    assert image.format == "raw"
    base = env.images_dir / ("fake-image-%s" % build.id)
    assert image.filename == str(base) + ".raw"
    assert image.metadata == {
        "team": "qa", "nodepool_build_id": build.id,
        "nodepool_upload_id": upload.id, "nodepool_provider_name": "fake"}
    assert len(image.md5) == 32 and len(image.sha256) == 64

    # DIB's files, command line and environment.
    for ext in ("qcow2", "raw"):
        assert (env.images_dir / ("fake-image-%s.%s" % (build.id, ext))
                ).exists()
        assert (env.images_dir / ("fake-image-%s.%s.md5" % (build.id, ext))
                ).exists()
    assert (env.images_dir / ("fake-image-%s.d" % build.id)).is_dir()
    call = json.loads((env.record_dir / ("fake-image-%s.json" % build.id))
                      .read_text())
    assert call["argv"] == [
        "-x", "-t", "qcow2,raw", "--checksum", "--no-tmpfs",
        "--qemu-img-options", "compat=0.10", "-o", str(base),
        "fedora", "vm"]
    assert call["env"]["DIB_RELEASE"] == "21"
    assert call["env"]["DIB_IMAGE_NAME"] == "fake-image"
    assert call["env"]["DIB_IMAGE_FILENAME"] == str(base)
    assert call["env"]["TMPDIR"] == "/opt/dib_tmp"
    assert "ELEMENTS_PATH" not in call["env"]
    log = (env.log_dir / ("fake-image-%s.log" % build.id)).read_text()
    assert "fake-dib wrote qcow2,raw" in log
    assert log.endswith("Exit code: 0\n")

    # The builder component.
    names = kazoo.get_children("/nodepool/components/builder")
    assert len(names) == 1
    component = raw(kazoo, "/nodepool/components/builder/" + names[0])
    assert component["kind"] == "builder"
    assert component["state"] == "running"

    statsd.wait_for_metric("nodepool.dib_image_build.fake-image.status.rc",
                           "g", 0)
    statsd.wait_for_metric(
        "nodepool.dib_image_build.fake-image.qcow2.size", "g",
        lambda v: float(v) >= 0)
    statsd.wait_for_metric("nodepool.image_update.fake-image.fake", "c", 1)
    statsd.wait_for_metric("nodepool.image_build_requests", "g", 0)
    statsd.wait_for_metric(
        "nodepool.builder.%s.image.fake-image.build.state"
        % builder.hostname, "g", 0)
    statsd.wait_for_metric(
        "nodepool.builder.%s.image.fake-image.provider.fake.upload.state"
        % builder.hostname, "g", 0)

    # Nothing more happens while everything is current.
    passes(builder.build_workers[0])
    passes(builder.upload_workers[0])
    assert len(store.get_build_ids("fake-image")) == 1
    assert len(cloud.upload_calls) == 1


def test_image_build_request(env, builder_factory, store, tmp_path,
                             zk_server, zk_chroot):
    builder_factory()
    first = wait_for_upload(store)[0]
    cli_config = tmp_path / "cli.yaml"
    cli_config.write_text(
        zkserver.client_config(zk_server.host, zk_server.secure_port,
                               zk_chroot, zk_server.certs)
        + env.config.read_text())
    assert nodepoolcmd.main(["-c", str(cli_config), "image-build",
                             "fake-image"]) == 0
    builds = wait_for_upload(store, count=2)
    assert first.id in {b.id for b in builds}
    wait_for(lambda: not store.has_build_request("fake-image"))


def test_build_request_kept_while_failing(env, builder_factory, store):
    env.write(fail=127)
    builder = builder_factory(cleanup_interval=0)
    store.submit_build_request("fake-image")
    wait_for(lambda: store.get_builds("fake-image", [BuildState.FAILED]))
    passes(builder.build_workers[0])
    assert store.has_build_request("fake-image")
    env.write(fail=0)
    wait_for(lambda: ready_builds(store))
    wait_for(lambda: not store.has_build_request("fake-image"))


def test_failed_build(env, builder_factory, store, zk_client, statsd):
    env.write(fail=127)
    builder = builder_factory(cleanup_interval=0)
    failed = wait_for(
        lambda: store.get_builds("fake-image", [BuildState.FAILED]))[0]
    record = raw(zk_client.kazoo, paths.build_path("fake-image", failed.id))
    assert record["state"] == "failed"
    assert record["builder_id"] == builder.builder_id
    statsd.wait_for_metric("nodepool.dib_image_build.fake-image.status.rc",
                           "g", 127)
    log = (env.log_dir / ("fake-image-%s.log" % failed.id)).read_text()
    assert log.endswith("Exit code: 127\n")
    assert not ready_builds(store)
    assert not FakeCloud.get("fake").upload_calls


def test_failed_builds_cleaned_up(env, builder_factory, store):
    env.write(fail=127)
    builder_factory()
    first = wait_for(
        lambda: store.get_builds("fake-image", [BuildState.FAILED]))[0]
    wait_for(lambda: store.get_build("fake-image", first.id) is None)
    wait_for(lambda: not list(env.images_dir.glob(
        "fake-image-%s.*" % first.id)))


def test_build_timeout(env, builder_factory, store):
    env.write(build_timeout=1)
    pause = env.pause_dib()
    builder_factory(cleanup_interval=0)
    failed = wait_for(
        lambda: store.get_builds("fake-image", [BuildState.FAILED]))[0]
    log = (env.log_dir / ("fake-image-%s.log" % failed.id)).read_text()
    assert "timed out" in log
    env.write(build_timeout=60)
    pause.unlink()
    wait_for_upload(store)


def test_pause(env, builder_factory, store):
    # The ZooKeeper pause flag stops builds.
    store.pause_image("fake-image")
    builder = builder_factory()
    passes(builder.build_workers[0], 3)
    assert not store.get_build_ids("fake-image")
    store.unpause_image("fake-image")
    wait_for_upload(store)

    # So does the config's pause, manual requests included.
    env.write(image_pause="true")
    passes(builder.build_workers[0], 3)
    store.submit_build_request("fake-image")
    passes(builder.build_workers[0], 3)
    assert len(store.get_build_ids("fake-image")) == 1


def test_provider_pause(env, builder_factory, store):
    env.write(provider_images="[{name: fake-image, pause: true}]")
    builder = builder_factory()
    build = wait_for(lambda: ready_builds(store))[0]
    passes(builder.upload_workers[0], 3)
    assert not store.get_build_providers("fake-image", build.id)
    assert not FakeCloud.get("fake").upload_calls
    env.write(provider_images="[{name: fake-image}]")
    wait_for_upload(store)


def test_upload_failure_retried(env, builder_factory, store):
    cloud = FakeCloud.get("fake")
    cloud.fail_uploads = 1
    builder_factory(cleanup_interval=0)
    build = wait_for_upload(store)[0]
    uploads = store.get_uploads("fake-image", build.id, "fake")
    assert [u.state for u in uploads] == [UploadState.FAILED,
                                          UploadState.READY]
    assert len(cloud.images) == 1


def test_failed_upload_records_cleaned(env, builder_factory, store):
    cloud = FakeCloud.get("fake")
    cloud.fail_uploads = 1
    builder_factory()
    build = wait_for_upload(store)[0]
    wait_for(lambda: [u.state for u in store.get_uploads(
        "fake-image", build.id, "fake")] == [UploadState.READY])
    assert len(cloud.upload_calls) == 2


def test_rotation(env, builder_factory, store):
    """Two READY builds are kept; older builds lose their uploads (cloud
    images deleted), records, files and logs."""
    env.write(retention=1)
    builder_factory()
    cloud = FakeCloud.get("fake")

    def uploaded_build(index):
        if len(cloud.upload_calls) <= index:
            return None
        build_id = cloud.upload_calls[index][3]["nodepool_build_id"]
        return build_id if ready_uploads(store, build_id) else None
    build_ids = []
    for index in range(3):
        if index:
            store.submit_build_request("fake-image")
        build_ids.append(wait_for(lambda: uploaded_build(index)))
    assert len(set(build_ids)) == 3
    kept = set(build_ids[1:])
    wait_for(lambda: set(store.get_build_ids("fake-image")) == kept)
    wait_for(lambda: len(cloud.images) == 2)
    assert len(cloud.image_delete_calls) == 1
    assert {i.metadata["nodepool_build_id"]
            for i in cloud.images.values()} == kept
    wait_for(lambda: {p.name.split(".")[0] for p in
                      env.images_dir.glob("fake-image-*")}
             == {"fake-image-%s" % b for b in kept})
    # build-log-retention 1: older logs go when a build starts.
    assert not (env.log_dir / ("fake-image-%s.log" % build_ids[0])).exists()
    assert (env.log_dir / ("fake-image-%s.log" % build_ids[2])).exists()


def test_image_removed_from_config(env, builder_factory, store):
    builder_factory()
    build = wait_for_upload(store)[0]
    cloud = FakeCloud.get("fake")
    config = env.config.read_text()
    env.write_raw(
        config[:config.index("diskimages:")]
        + "diskimages: []\nproviders:\n  - name: fake\n    driver: test\n"
        "    pools: []\n")
    wait_for(lambda: not store.get_build_ids("fake-image"))
    wait_for(lambda: not list(env.images_dir.glob("fake-image-*")))
    assert not cloud.images
    assert cloud.image_delete_calls == ["img-1"]
    assert cloud.upload_calls[0][3]["nodepool_build_id"] == build.id


def test_provider_stops_listing_image(env, builder_factory, store):
    builder_factory()
    build = wait_for_upload(store)[0]
    cloud = FakeCloud.get("fake")
    env.write(provider_images="[]")
    wait_for(lambda: not store.get_build_providers("fake-image", build.id)
             or not store.get_uploads("fake-image", build.id, "fake"))
    assert not cloud.images
    # The build itself stays: the image is still configured.
    assert store.get_build("fake-image", build.id).state == BuildState.READY
    assert list(env.images_dir.glob("fake-image-%s.*" % build.id))


def test_image_delete_failures_retried(env, builder_factory, store):
    builder_factory()
    build = wait_for_upload(store)[0]
    cloud = FakeCloud.get("fake")
    cloud.fail_image_deletes = 2
    env.write(provider_images="[]")
    wait_for(lambda: not store.get_uploads("fake-image", build.id, "fake"))
    assert len(cloud.image_delete_calls) == 3
    assert not cloud.images


def test_stale_records_cleaned(env, builder_factory, store, zk_client):
    """A build left ``building`` by a builder that is gone and an
    ``uploading`` record nobody uploads are removed."""
    builder = builder_factory()
    build = wait_for_upload(store)[0]
    stale = ImageBuild(image_name="fake-image")
    stale.state = BuildState.BUILDING
    stale.builder_id = "gone"
    stale_id = store.store_build("fake-image", stale)
    stray = ImageUpload()
    stray.state = UploadState.UPLOADING
    stray_id = store.store_upload("fake-image", build.id, "fake", stray)
    wait_for(lambda: store.get_build("fake-image", stale_id) is None)
    wait_for(lambda: store.get_upload("fake-image", build.id, "fake",
                                      stray_id) is None)
    assert ready_uploads(store, build.id)
    assert builder.cleanup_worker.passes > 0


def test_in_progress_build_not_cleaned(env, builder_factory, store):
    pause = env.pause_dib()
    builder = builder_factory()
    building = wait_for_building(store)
    passes(builder.cleanup_worker, 3)
    assert store.get_build("fake-image", building.id).state == \
        BuildState.BUILDING
    pause.unlink()
    assert wait_for_upload(store)[0].id == building.id


def test_stop_during_build(env, builder_factory, store):
    env.pause_dib()
    builder = builder_factory(cleanup_interval=0)
    building = wait_for_building(store)
    builder.stop()
    builder.join()
    assert store.get_build("fake-image", building.id).state == \
        BuildState.FAILED


def test_build_deleted_by_cli(env, builder_factory, store):
    """``dib-image-delete`` marks a build ``deleting``: its uploads,
    record and files go (and a new build replaces it)."""
    builder_factory()
    build = wait_for_upload(store)[0]
    record = store.get_build("fake-image", build.id)
    record.state = BuildState.DELETING
    store.store_build("fake-image", record, build.id)
    wait_for(lambda: store.get_build("fake-image", build.id) is None)
    wait_for(lambda: not list(env.images_dir.glob("fake-image-%s.*"
                                                  % build.id)))
    assert FakeCloud.get("fake").image_delete_calls == ["img-1"]
    wait_for(lambda: [b for b in wait_for_upload(store) if b.id != build.id])


def test_record_vanished_during_build(env, builder_factory, store):
    """A build whose record disappeared while DIB ran (session loss) is
    not recreated and its files are removed."""
    pause = env.pause_dib()
    builder_factory(cleanup_interval=0)
    building = wait_for_building(store)
    store.delete_build("fake-image", building.id)
    pause.unlink()
    # The next build proves the first one finished.
    wait_for(lambda: [b for b in store.get_builds("fake-image")
                      if b.id != building.id])
    assert store.get_build("fake-image", building.id) is None
    assert not list(env.images_dir.glob("fake-image-%s.*" % building.id))


def test_not_enough_free_space(env, builder_factory, store):
    env.write(required_free=2 ** 40)
    builder = builder_factory()
    passes(builder.build_workers[0], 3)
    assert not store.get_build_ids("fake-image")
    env.write(required_free=1)
    wait_for(lambda: ready_builds(store))


def test_delete_after_upload(env, builder_factory, store):
    env.write(delete_after_upload="true", keep_formats="[qcow2]")
    builder_factory()
    build = wait_for_upload(store)[0]
    raw_file = env.images_dir / ("fake-image-%s.raw" % build.id)
    wait_for(lambda: not raw_file.exists())
    assert not (env.images_dir / ("fake-image-%s.raw.md5" % build.id)
                ).exists()
    assert (env.images_dir / ("fake-image-%s.qcow2" % build.id)).exists()
    assert (env.images_dir / ("fake-image-%s.d" % build.id)).is_dir()


def _hook(tmp_path, rc):
    hook = tmp_path / "hook.sh"
    hook.write_text("#!/bin/sh\necho \"$@\" > \"$3.post\"\n"
                    "echo hook output\nexit %d\n" % rc)
    hook.chmod(0o755)
    return str(hook)


def test_post_upload_hook(env, builder_factory, store, tmp_path):
    env.write(hook=_hook(tmp_path, 0))
    builder_factory()
    build = wait_for_upload(store)[0]
    upload = ready_uploads(store, build.id)[0]
    raw_file = env.images_dir / ("fake-image-%s.raw" % build.id)
    assert (env.images_dir / (raw_file.name + ".post")).read_text() == \
        "fake %s %s\n" % (upload.external_id, raw_file)


def test_post_upload_hook_failure(env, builder_factory, store, tmp_path):
    env.write(hook=_hook(tmp_path, 1))
    builder_factory(cleanup_interval=0)
    cloud = FakeCloud.get("fake")
    wait_for(lambda: len(cloud.image_delete_calls) >= 2)
    build = ready_builds(store)[0]
    uploads = store.get_uploads("fake-image", build.id, "fake")
    assert uploads and all(u.state == UploadState.FAILED for u in uploads)
    assert cloud.image_delete_calls[:2] == ["img-1", "img-2"]


@pytest.mark.parametrize("name", ["openstack", "aws", "azure"])
def test_post_upload_hook_timeout_config(tmp_path, name):
    scenario = corpus.read_scenario(corpus.valid_path(name))
    config = load_config(scenario.path, scenario.secure, env=scenario.env)
    hooked = [p for p in config.providers.values() if p.post_upload_hook]
    assert hooked
    assert all(p.post_upload_hook_timeout == 3600 for p in hooked)
    text = open(scenario.path).read().replace(
        "    post-upload-hook: ",
        "    post-upload-hook-timeout: 0\n    post-upload-hook: ")
    path = tmp_path / "nodepool.yaml"
    path.write_text(text)
    with pytest.raises(ConfigValidationError) as info:
        load_config(str(path), scenario.secure, env=scenario.env)
    assert "post-upload-hook-timeout" in str(info.value)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as dead)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _hanging_hook(tmp_path):
    """A hook that records its pid and its child's and never ends."""
    pids = tmp_path / "pids"
    hook = tmp_path / "hook.sh"
    hook.write_text("#!/bin/sh\nsleep 300 &\necho $$ $! >> %s\n"
                    "echo hanging\nwait\n" % pids)
    hook.chmod(0o755)
    return str(hook), pids


def test_post_upload_hook_timeout(env, builder_factory, store, tmp_path):
    """A hung hook is killed with its process group after
    post-upload-hook-timeout; the upload fails and the image is deleted."""
    hook, pids = _hanging_hook(tmp_path)
    env.write(hook=hook, hook_timeout=1)
    builder = builder_factory(cleanup_interval=0)
    cloud = FakeCloud.get("fake")
    wait_for(lambda: cloud.image_delete_calls)
    assert cloud.image_delete_calls[0] == "img-1"
    build = ready_builds(store)[0]
    uploads = store.get_uploads("fake-image", build.id, "fake")
    assert uploads and all(u.state in (UploadState.FAILED,
                                       UploadState.UPLOADING)
                           for u in uploads)
    assert UploadState.FAILED in {u.state for u in uploads}
    # Stopping waits for a hook still running to be killed as well.
    builder.stop()
    builder.join()
    recorded = [int(p) for p in pids.read_text().split()]
    assert len(recorded) >= 2
    wait_for(lambda: not any(_running(pid) for pid in recorded))


def test_post_upload_hook_killed_on_stop(env, builder_factory, store,
                                         tmp_path):
    hook, pids = _hanging_hook(tmp_path)
    env.write(hook=hook)  # the default timeout: an hour
    builder = builder_factory(cleanup_interval=0)
    wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2)
    builder.stop()
    builder.join()
    assert not builder.upload_workers[0].is_alive()
    recorded = [int(p) for p in pids.read_text().split()]
    wait_for(lambda: not any(_running(pid) for pid in recorded))
    build = ready_builds(store)[0]
    assert [u.state for u in store.get_uploads("fake-image", build.id,
                                               "fake")] == \
        [UploadState.FAILED]
    assert FakeCloud.get("fake").image_delete_calls == ["img-1"]


def test_two_builders(env, builder_factory, store, tmp_path):
    """Only the builder holding a build's files uploads it or removes
    them; any builder may remove the records."""
    first = builder_factory()
    build = wait_for_upload(store)[0]
    other = Env(tmp_path / "other")
    other.tmp_path.mkdir()
    other.write()
    second = builder_factory(config=other.config)
    assert second.builder_id != first.builder_id
    passes(second.build_workers[0], 3)
    passes(second.upload_workers[0], 3)
    cloud = FakeCloud.get("fake")
    assert len(cloud.upload_calls) == 1
    assert store.get_build_ids("fake-image") == [build.id]
    assert store.get_build("fake-image", build.id).builder_id == \
        first.builder_id
    assert not list(other.images_dir.glob("fake-image-*"))

    # A manual build may be made by either; it is uploaded by its maker.
    store.submit_build_request("fake-image")
    builds = wait_for_upload(store, count=2)
    new = [b for b in builds if b.id != build.id][0]
    owner = first if new.builder_id == first.builder_id else second
    owner_env = env if owner is first else other
    assert list(owner_env.images_dir.glob("fake-image-%s.*" % new.id))
    assert len(cloud.upload_calls) == 2


def test_session_replaced_during_build(env, builder_factory, store):
    """A build during which the ZooKeeper session expired is FAILED even
    though DIB succeeded: its locks were lost meanwhile."""
    pause = env.pause_dib()
    builder = builder_factory(cleanup_interval=0)
    building = wait_for_building(store)
    lost = threading.Event()
    builder.zk_client.add_session_listener(lost.set)
    zkserver.expire_session(builder.zk_client.kazoo)
    assert lost.wait(30)
    pause.unlink()
    wait_for(lambda: store.get_build("fake-image", building.id).state
             == BuildState.FAILED)


TWO_PROVIDERS = CONFIG.replace("""    pools: []
""", """    pools: []
  - name: fake2
    driver: test
    diskimages: [{{name: fake-image}}]
    pools: []
""")


def test_stop_and_join_leave_no_thread_behind(env, zk_factory, store):
    """Every thread the builder started is gone once stop() and join()
    returned, whatever its name (the ZooKeeper client is the test's and
    connected before the snapshot)."""
    env.write(TWO_PROVIDERS)
    zk_client = zk_factory()
    before = set(threading.enumerate())
    builder = NodePoolBuilder(
        str(env.config), zk_client=zk_client, num_builders=2,
        num_uploaders=2, build_interval=0.05, upload_interval=0.05,
        cleanup_interval=0.1, dib_poll=0.02, upload_join_timeout=10)
    builder.start()
    try:
        wait_for_upload(store, provider="fake")
        wait_for_upload(store, provider="fake2")
        passes(builder.cleanup_worker)
    finally:
        builder.stop()
        builder.join(timeout=10)
    assert [t for t in set(threading.enumerate()) - before] == []
