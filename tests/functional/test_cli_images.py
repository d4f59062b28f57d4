# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The image commands beyond test_cli.py's: pause shown in the listings,
a build of a paused image refused, the upload sequence after an
export/import round trip and ``dib-image-delete`` with two builders."""

import pytest

from nodepool.cmd import nodepoolcmd
from nodepool.zk import paths
from tests.fixtures.locks import holding
from tests.fixtures.waits import wait_for
from tests.functional import test_cli
from tests.functional.test_cli import (
    make_build, make_upload, table, zk_config)

# test_cli.py's fixtures: the CLI on its config, the stores.
cli, config, stores = test_cli.cli, test_cli.config, test_cli.stores


def test_image_pause_shown_in_dib_image_list(cli, stores):
    """dib_image_cmd_pause: builds of a paused image show ``paused``;
    pause/unpause are idempotent and unpausing shows the real state."""
    images = stores.images
    build_id = make_build(images)
    other = make_build(images, image="frozen", state="building")

    def states():
        rows = table(cli("dib-image-list")[1])
        return {row[0]: row[4] for row in rows[1:]}

    assert states() == {"ubuntu-" + build_id: "ready",
                        "frozen-" + other: "building"}
    for _ in range(2):
        assert cli("image-pause", "ubuntu")[0] == 0
        assert states()["ubuntu-" + build_id] == "paused"
        assert states()["frozen-" + other] == "building"
    rows = table(cli("image-status")[1])
    assert {r[0]: r[1] for r in rows[1:]} == {
        "ubuntu": "True", "frozen": "False"}
    for _ in range(2):
        assert cli("image-unpause", "ubuntu")[0] == 0
        assert states()["ubuntu-" + build_id] == "ready"
    # Pausing an image nobody built yet works too, and shows up.
    assert cli("image-pause", "newimage")[0] == 0
    assert images.is_image_paused("newimage")
    rows = table(cli("image-status")[1])
    assert ["newimage", "True", "", ""] in rows


def test_image_build_of_config_paused_image_refused(cli, stores):
    """dib_image_build_pause: the message of doc/source/cli.rst and no request."""
    images = stores.images
    status, out, err = cli("image-build", "frozen")
    assert status == 1
    assert err.strip() == ("nodepool: error: Skipping build request for "
                           "image frozen; paused")
    assert not images.has_build_request("frozen")
    assert images.get_image_names() == []


def test_export_import_upload_sequence_continues(cli, stores, tmp_path,
                                                 zk_client):
    """export_image_data: after wiping the tree and importing, the next
    upload of the same build and provider gets id 0000000003 (the
    builder's first uploads are 1 and 2 because the upload lock directory
    takes sequence 0); new builds and uploads work as usual."""
    images = stores.images
    build_id = make_build(images)
    with holding(images.acquire_upload_lock("ubuntu", build_id, "fake")):
        ids = [make_upload(images, "ubuntu", build_id) for _ in range(2)]
    assert ids == ["0000000001", "0000000002"]
    path = tmp_path / "export.json"
    assert cli("export-image-data", str(path))[0] == 0
    zk_client.kazoo.delete(paths.IMAGE_ROOT, recursive=True)

    assert cli("import-image-data", str(path))[0] == 0
    assert images.get_upload_ids("ubuntu", build_id, "fake") == ids
    assert make_upload(images, "ubuntu", build_id) == "0000000003"
    rows = table(cli("image-list")[1])
    assert [r[1] for r in rows[1:]] == ids + ["0000000003"]

    new_build = make_build(images)
    assert new_build != build_id
    with holding(images.acquire_upload_lock("ubuntu", new_build, "fake")):
        assert make_upload(images, "ubuntu", new_build) == "0000000001"
    rows = table(cli("dib-image-list")[1])
    assert sorted(r[0] for r in rows[1:]) == sorted(
        ["ubuntu-" + build_id, "ubuntu-" + new_build])


@pytest.fixture
def builder_env(tmp_path, zk_factory, zk_server, zk_chroot):
    """``(make_builder(env), make_env(name), cli(env, *args))`` for
    builders from tests/functional/test_builder.py's config."""
    from nodepool.builder.server import NodePoolBuilder
    from tests.functional import test_builder as tb
    builders = []

    def make_env(name):
        env = tb.Env(tmp_path / name)
        env.tmp_path.mkdir()
        env.write()
        return env

    def make_builder(env):
        builder = NodePoolBuilder(
            str(env.config), zk_client=zk_factory(), num_builders=1,
            num_uploaders=1, build_interval=0.05, upload_interval=0.05,
            cleanup_interval=0.1, dib_poll=0.02, upload_join_timeout=10)
        builder.start()
        builders.append(builder)
        return builder

    def cli(env, *args):
        config = env.tmp_path / "cli.yaml"
        config.write_text(zk_config(zk_server, zk_chroot) +
                          env.config.read_text())
        return nodepoolcmd.main(["-c", str(config)] + list(args))

    yield make_builder, make_env, cli
    for builder in builders:
        builder.stop()
    for builder in builders:
        builder.join()


def test_dib_image_delete_two_builders(builder_env, stores):
    """The build's records are removed by the other builder; its owner
    removes the local files when it comes back."""
    images = stores.images
    from tests.functional import test_builder as tb
    from tests.fakes.test_driver import FakeCloud
    make_builder, make_env, cli = builder_env
    first_env, other_env = make_env("first"), make_env("other")
    first = make_builder(first_env)
    (build,) = tb.wait_for_upload(images)
    files = list(first_env.images_dir.glob("fake-image-%s.*" % build.id))
    assert files
    first.stop()
    first.join()

    make_builder(other_env)
    assert cli(other_env, "dib-image-delete",
               "fake-image-" + build.id) == 0
    wait_for(lambda: images.get_build("fake-image", build.id) is None)
    assert FakeCloud.get("fake").image_delete_calls == ["img-1"]
    # Not its files: the other builder cannot remove them.
    assert all(f.exists() for f in files)

    make_builder(first_env)
    wait_for(lambda: not any(f.exists() for f in files))
