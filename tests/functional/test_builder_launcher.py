# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The builder -> launcher contract, end to end.

One config, one ZooKeeper: the builder (in-process, fake DIB) builds the
top-level diskimage ``fake-image`` and uploads it to the test driver's
provider ``fake``; the launcher (in-process) serves label ``dib-label``
(``diskimage: fake-image``) from those uploads and label ``plain`` (no
image) regardless.  What the launcher must do (as nodepool 11 does; the
node's ``image_id`` as nodepool 11 records it):

* while no upload of the image to the provider is READY (an upload in
  progress does not count) a pool declines a request for the label
  ("images are not available": with every pool declining it the request
  fails) and launches nothing for it, min-ready included;
* once one is READY a node is booted from the newest READY upload: the
  cloud gets its external id and the node's ``image_id`` is the upload's
  ZooKeeper path;
* a newer build's upload replaces it for the next node.
"""

import textwrap

import pytest

from nodepool.builder.server import NodePoolBuilder
from nodepool.cmd import nodepoolcmd
from nodepool.zk import paths
from nodepool.zk.images import ImageStore
from nodepool.zk.models import BuildState, NodeState, RequestState, \
    UploadState
from tests.fakes.fake_dib import DIB_CMD
from tests.fakes.test_driver import FakeCloud
from tests.fixtures import zkserver
from tests.fixtures.waits import wait_for
from tests.functional.conftest import read_nodes

IMAGE = "fake-image"
PROVIDER = "fake"

CONFIG = """
images-dir: {images_dir}
build-log-dir: {log_dir}
labels:
  - name: dib-label
    min-ready: {min_ready}
  - name: plain
    min-ready: {min_ready}
diskimages:
  - name: fake-image
    dib-cmd: {dib_cmd}
    elements: [fedora, vm]
    release: 21
    formats: [raw]
    username: builder-user
providers:
  - name: fake
    driver: test
    diskimages:
      - name: fake-image
    pools:
      - name: main
        max-servers: 10
        labels:
          - name: dib-label
            diskimage: fake-image
          - name: plain
"""


class Env:
    """The shared config (one file for the builder; the launcher fixture
    writes the same text to its own file) and handles on both sides."""

    def __init__(self, tmp_path, zk_factory, launcher_factory):
        self.tmp_path = tmp_path
        self.zk_factory = zk_factory
        self.launcher_factory = launcher_factory
        self.config_path = tmp_path / "nodepool.yaml"
        self.text = None
        self.builders = []
        self.cloud = FakeCloud.get(PROVIDER)
        self.store = ImageStore(zk_factory())

    def write(self, min_ready=0):
        # Filled in here, so no braces remain for the launcher fixture's
        # own str.format of the text.
        self.text = textwrap.dedent(CONFIG).format(
            images_dir=self.tmp_path / "images",
            log_dir=self.tmp_path / "logs", dib_cmd=DIB_CMD,
            min_ready=min_ready)
        assert "{" not in self.text
        self.config_path.write_text(self.text)

    def start_launcher(self):
        return self.launcher_factory(self.text)

    def start_builder(self):
        builder = NodePoolBuilder(
            str(self.config_path), zk_client=self.zk_factory(),
            num_builders=1, num_uploaders=1, build_interval=0.05,
            upload_interval=0.05, cleanup_interval=0.2, dib_poll=0.02,
            upload_join_timeout=10)
        builder.start()
        self.builders.append(builder)
        return builder

    def stop(self):
        # A held upload would keep the uploader (and so stop()) waiting.
        self.cloud.hold_uploads.clear()
        for builder in self.builders:
            builder.stop()
        for builder in self.builders:
            builder.join()

    # ZooKeeper views ----------------------------------------------------

    def ready_uploads(self):
        """READY uploads of the image to the provider, oldest build first
        (the store's view, i.e. what the builder wrote)."""
        uploads = []
        for build in self.store.get_builds(IMAGE, [BuildState.READY]):
            uploads.extend(self.store.get_uploads(IMAGE, build.id, PROVIDER,
                                                  [UploadState.READY]))
        return sorted(uploads, key=lambda u: u.state_time)

    def wait_for_ready_upload(self, count=1):
        """The newest READY upload once there are ``count`` of them."""
        def newest():
            uploads = self.ready_uploads()
            return uploads[-1] if len(uploads) >= count else None
        return wait_for(newest, timeout=30)


@pytest.fixture
def env(tmp_path, zk_factory, launcher_factory):
    env = Env(tmp_path, zk_factory, launcher_factory)
    yield env
    env.stop()


def launcher_sees(launcher, upload):
    """Wait until the launcher's image cache offers ``upload`` as the
    provider's current upload (its cache lags behind ZooKeeper)."""
    provider = launcher.providers[PROVIDER]

    def current():
        seen = provider.current_upload(IMAGE)
        return seen is not None and (seen.build_id, seen.id) == (
            upload.build_id, upload.id)
    wait_for(current, timeout=30)


def upload_path(upload):
    return paths.upload_path(upload.image_name, upload.build_id,
                             upload.provider_name, upload.id)


def assert_booted_from(env, node, upload):
    assert node.image_id == upload_path(upload)
    assert node.image_id == "/nodepool/images/%s/builds/%s/providers/%s/" \
        "images/%s" % (IMAGE, upload.build_id, PROVIDER, upload.id)
    instance = env.cloud.instances[node.external_id]
    assert instance.image_external_id == upload.external_id
    assert upload.external_id in env.cloud.images
    # Connection data comes from the (top-level) diskimage.
    assert node.username == "builder-user"


def held_upload(env):
    """Wait until the builder built the image and its upload to the
    provider is in progress (held by the fake cloud); return that
    upload's record (state ``uploading``)."""
    wait_for(lambda: env.cloud.upload_calls, timeout=30)
    build = env.store.get_builds(IMAGE, [BuildState.READY])[0]
    uploads = env.store.get_uploads(IMAGE, build.id, PROVIDER)
    assert [u.state for u in uploads] == [UploadState.UPLOADING]
    return uploads[0]


def test_request_waits_for_a_ready_upload(env, zuul):
    env.write()
    env.cloud.hold_uploads.set()
    launcher = env.start_launcher()
    env.start_builder()
    uploading = held_upload(env)
    # The launcher knows of the upload: only its state keeps it unused.
    wait_for(lambda: [u for u in launcher.services.image_cache.uploads(
        IMAGE, provider=PROVIDER) if u.id == uploading.id])
    assert launcher.providers[PROVIDER].current_upload(IMAGE) is None

    # The image-less label is served meanwhile.
    nodes = zuul.run_job(["plain"])
    assert nodes[0].image_id is None
    assert env.cloud.instances[nodes[0].external_id].image_external_id \
        is None
    zuul.finish(nodes)
    created = env.cloud.created

    # The diskimage label is declined by the only pool, so it fails,
    # and nothing is launched for it.
    request = zuul.submit(["dib-label"])
    result = zuul.wait_for_request(request)
    assert result.state == RequestState.FAILED
    assert len(result.declined_by) == 1
    assert result.nodes == []
    zuul.delete_request(result)
    assert not [n for n in read_nodes(zuul.kazoo) if "dib-label" in n.type]
    assert env.cloud.created == created

    # Once the upload is READY the label is served from it.
    env.cloud.hold_uploads.clear()
    upload = env.wait_for_ready_upload()
    assert (upload.build_id, upload.id) == (uploading.build_id,
                                            uploading.id)
    launcher_sees(launcher, upload)
    nodes = zuul.run_job(["dib-label"])
    assert len(nodes) == 1
    assert nodes[0].type == ["dib-label"]
    assert_booted_from(env, nodes[0], upload)
    zuul.finish(nodes)


def test_new_build_used_by_next_node(env, zuul, zk_server, zk_chroot,
                                     tmp_path):
    env.write()
    launcher = env.start_launcher()
    env.start_builder()
    first = env.wait_for_ready_upload()
    launcher_sees(launcher, first)
    nodes = zuul.run_job(["dib-label"])
    assert_booted_from(env, nodes[0], first)
    zuul.finish(nodes)

    # A manual build, as an operator asks for it.
    cli_config = tmp_path / "cli.yaml"
    cli_config.write_text(zkserver.client_config(
        zk_server.host, zk_server.secure_port, zk_chroot, zk_server.certs)
        + env.text)
    assert nodepoolcmd.main(["-c", str(cli_config), "image-build",
                             IMAGE]) == 0
    second = env.wait_for_ready_upload(count=2)
    assert second.build_id != first.build_id
    assert second.external_id != first.external_id
    assert second.state_time > first.state_time
    launcher_sees(launcher, second)

    nodes = zuul.run_job(["dib-label"])
    assert_booted_from(env, nodes[0], second)
    zuul.finish(nodes)


def test_min_ready_waits_for_a_ready_upload(env, zuul):
    env.write(min_ready=1)
    env.cloud.hold_uploads.set()
    launcher = env.start_launcher()
    main = launcher.main_loop  # its passes run min-ready
    env.start_builder()
    held_upload(env)

    # min-ready serves the image-less label; after a few more passes of
    # the main loop (each a chance to ask for a dib-label node) nothing
    # was launched for the diskimage label.
    wait_for(lambda: [n for n in read_nodes(zuul.kazoo)
                      if n.type == ["plain"]
                      and n.state == NodeState.READY
                      and not n.allocated_to], timeout=30)
    target = main.passes + 5
    wait_for(lambda: main.passes >= target, timeout=30)
    assert not [n for n in read_nodes(zuul.kazoo)
                if "dib-label" in n.type]
    assert env.cloud.created == 1
    assert [i.image_external_id for i in env.cloud.list()] == [None]

    # The upload becomes READY: min-ready launches from it.
    env.cloud.hold_uploads.clear()
    upload = env.wait_for_ready_upload()
    node = wait_for(lambda: [n for n in read_nodes(zuul.kazoo)
                             if n.type == ["dib-label"]
                             and n.state == NodeState.READY
                             and not n.allocated_to], timeout=30)[0]
    # Booted from a READY upload (a second upload of the build may have
    # become the newest meanwhile on a loaded machine).
    upload = {upload_path(u): u for u in env.ready_uploads()}.get(
        node.image_id, upload)
    assert_booted_from(env, node, upload)
    assert node.created_time >= upload.state_time
    assert len([n for n in read_nodes(zuul.kazoo)
                if "dib-label" in n.type]) == 1


def test_min_ready_asks_nothing_without_an_image(env, zuul):
    env.write(min_ready=1)
    env.cloud.hold_uploads.set()
    launcher = env.start_launcher()
    main = launcher.main_loop  # its passes run min-ready
    env.start_builder()
    held_upload(env)
    wait_for(lambda: [n for n in read_nodes(zuul.kazoo)
                      if n.type == ["plain"]
                      and n.state == NodeState.READY
                      and not n.allocated_to], timeout=30)
    target = main.passes + 5
    wait_for(lambda: main.passes >= target, timeout=30)
    # Every request created or deleted changes the parent's cversion:
    # the only min-ready request should have been plain's (created, then
    # deleted once fulfilled).
    _, stat = zuul.kazoo.get("/nodepool/requests")
    assert stat.cversion <= 2
