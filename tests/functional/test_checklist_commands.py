# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Upstream ``test_commands.py`` scenarios not covered by test_cli.py:
the CLI together with a running launcher (hold, delete, held nodes not
reused), pause shown in listings, empty-tree commands and the upload
sequence after an export/import round trip."""


import pytest

from nodepool.cmd import nodepoolcmd
from nodepool.zk import paths
from nodepool.zk.images import ImageStore
from nodepool.zk.models import ImageBuild, ImageUpload, NodeState
from nodepool.zk.nodes import NodeStore
from tests.fixtures.waits import wait_for
from tests.functional.conftest import base_config, read_nodes
from tests.functional.test_cli import zk_config
from tests.functional import test_webapp as web

IMAGES = """
diskimages:
  - name: ubuntu
  - name: frozen
    pause: true
"""


@pytest.fixture
def cli_config(tmp_path, zk_server, zk_chroot):
    """A CLI config with the launcher's providers and labels (min-ready
    as given) and two diskimages."""
    def make(min_ready=0):
        path = tmp_path / ("cli-%d.yaml" % min_ready)
        body = base_config(min_ready=min_ready)
        path.write_text(zk_config(zk_server, zk_chroot) + body + IMAGES)
        return str(path)
    return make


@pytest.fixture
def cli(cli_config, capsys):
    config = cli_config()

    def run(*args):
        capsys.readouterr()
        status = nodepoolcmd.main(["-c", config] + list(args))
        out, err = capsys.readouterr()
        return status, out, err
    return run


@pytest.fixture
def images(zk_client):
    return ImageStore(zk_client)


def table(text):
    rows = []
    for line in text.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def node_state(zk_client, node_id):
    node = NodeStore(zk_client).get_node(node_id, cached=False)
    return None if node is None else node.state


def make_build(images, image="ubuntu", state="ready"):
    build = ImageBuild(image)
    build.state = state
    build.builder = "builder01"
    build.formats = ["qcow2"]
    return images.store_build(image, build)


def make_upload(images, image, build_id, provider="fake", state="ready"):
    upload = ImageUpload()
    upload.state = state
    upload.external_id = "img-x"
    upload.external_name = image
    return images.store_upload(image, build_id, provider, upload)


# -- CLI against a running launcher ----------------------------------------

def test_held_node_not_reused_by_requests(launcher_factory, zuul, cli,
                                          zk_client):
    """attempt_request_held_node: a held READY node is never handed out;
    the next request gets a new node."""
    launcher_factory()
    first = zuul.wait_for_request(zuul.submit(["small"]))
    zuul.delete_request(first)
    (held_id,) = first.nodes
    # Zuul let go of the request without locking: the node stays READY
    # and allocated until the launcher de-allocates it; hold it now.
    status, out, _ = cli("hold", held_id)
    assert status == 0
    assert table(out)[1][6] == "hold"

    done = zuul.wait_for_request(zuul.submit(["small"]))
    assert done.state == "fulfilled"
    assert done.nodes != [held_id]
    taken = zuul.accept_nodes(done)
    assert node_state(zk_client, held_id) == NodeState.HOLD
    zuul.finish(taken)
    # The held node survives the launcher's cleanup passes untouched.
    wait_for(lambda: node_state(zk_client, taken[0].id) is None)
    assert node_state(zk_client, held_id) == NodeState.HOLD


def test_hold_then_delete_replaced_by_min_ready(launcher_factory, zuul,
                                                cli_config, capsys,
                                                zk_client):
    """hold: a held min-ready node no longer counts as ready, so a
    replacement is built; ``delete`` of the held node removes it and a
    new request is served."""
    launcher_factory(min_ready=1)
    config = cli_config(min_ready=1)

    def cli(*args):
        capsys.readouterr()
        status = nodepoolcmd.main(["-c", config] + list(args))
        return status, capsys.readouterr().out

    def ready_ids():
        return [n.id for n in read_nodes(zk_client.kazoo)
                if n.state == NodeState.READY and not n.allocated_to]
    (original,) = wait_for(ready_ids)
    status, out = cli("hold", original)
    assert status == 0 and table(out)[1][6] == "hold"
    replacement = wait_for(lambda: [i for i in ready_ids() if i != original])
    assert original not in replacement

    status, out = cli("delete", original)
    assert status == 0 and table(out)[1][6] == "deleting"
    wait_for(lambda: node_state(zk_client, original) is None)
    status, out = cli("list")
    assert original not in [row[0] for row in table(out)[1:]]

    nodes = zuul.run_job(["small"])
    assert nodes[0].id != original
    zuul.finish(nodes)


def test_hold_node_locked_by_zuul_fails_cleanly(launcher_factory, zuul, cli,
                                                zk_client, monkeypatch):
    """attempt_hold_busy_node: the node is locked by its user; hold and
    delete give up with a clear error and change nothing."""
    monkeypatch.setattr(nodepoolcmd, "LOCK_TIMEOUT", 0.5)
    launcher_factory()
    (node,) = zuul.run_job(["small"])
    for command in ("hold", "delete"):
        status, out, err = cli(command, node.id)
        assert status == 1
        assert "Traceback" not in out + err
        assert err.strip() == ("nodepool: error: Timed out after 0.5s "
                               "waiting for the lock of node %s" % node.id)
    assert node_state(zk_client, node.id) == NodeState.IN_USE
    # Our failed attempts left no contender behind: Zuul is the only one.
    assert len(NodeStore(zk_client).node_lock_contenders(node.id)) == 1
    zuul.finish([node])


# -- image pause as seen by the listings ------------------------------------

def test_image_pause_shown_in_dib_image_list(cli, images):
    """dib_image_cmd_pause: builds of a paused image show ``paused``;
    pause/unpause are idempotent and unpausing shows the real state."""
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


def test_image_build_of_config_paused_image_refused(cli, images):
    """dib_image_build_pause: the message of cli.md and no request."""
    status, out, err = cli("image-build", "frozen")
    assert status == 1
    assert err.strip() == ("nodepool: error: Skipping build request for "
                           "image frozen; paused")
    assert not images.has_build_request("frozen")
    assert images.get_image_names() == []


# -- empty trees -------------------------------------------------------------

def test_commands_on_an_empty_tree(cli, zk_client):
    """image_list_empty, image_delete_invalid, request_list, info of an
    unknown provider: headers only or a message, never a crash."""
    for command, headers in [
            ("list", ["ID", "Provider", "Label", "Server ID", "Public IPv4",
                      "IPv6", "State", "Age", "Locked"]),
            ("image-list", ["Build ID", "Upload ID", "Provider", "Image",
                            "Provider Image Name", "Provider Image ID",
                            "State", "Age"]),
            ("dib-image-list", ["ID", "Image", "Builder", "Formats", "State",
                                "Age"]),
            ("image-status", ["Image", "Paused", "Build Request",
                              "Build Request Age"]),
            ("request-list", ["Request ID", "Priority", "State", "Requestor",
                              "Node Types", "Nodes", "Declined By",
                              "Event ID"])]:
        status, out, err = cli(command)
        assert (status, table(out)) == (0, [headers]), command
        assert err == ""

    status, out, err = cli("image-delete", "--provider", "fake", "--image",
                           "fake-image", "--build-id", "1", "--upload-id",
                           "1")
    assert (status, out.strip()) == (1, "Image upload not found")
    assert "Traceback" not in err
    status, out, err = cli("dib-image-delete", "fake-image-1")
    assert (status, out.strip()) == (1, "Build fake-image-1 not found")
    assert "Traceback" not in err
    # Neither left anything behind.
    assert not zk_client.kazoo.exists(paths.IMAGE_ROOT) or \
        zk_client.kazoo.get_children(paths.IMAGE_ROOT) == []

    status, out, _ = cli("info", "nope")
    assert status == 0
    assert out.splitlines()[:3] == ["ZooKeeper data for provider nope", "",
                                    "Image data:"]
    assert "Nodes:" in out


def test_without_subcommand(cli_config, capsys):
    assert nodepoolcmd.main(["-c", cli_config()]) == 1
    assert "usage: nodepool" in capsys.readouterr().out


# -- export / import ---------------------------------------------------------

def test_export_import_upload_sequence_continues(cli, images, tmp_path,
                                                 zk_client):
    """export_image_data: after wiping the tree and importing, the next
    upload of the same build and provider gets id 0000000003 (the
    builder's first uploads are 1 and 2 because the upload lock directory
    takes sequence 0); new builds and uploads work as usual."""
    build_id = make_build(images)
    with images.upload_lock("ubuntu", build_id, "fake"):
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
    with images.upload_lock("ubuntu", new_build, "fake"):
        assert make_upload(images, "ubuntu", new_build) == "0000000001"
    rows = table(cli("dib-image-list")[1])
    assert sorted(r[0] for r in rows[1:]) == sorted(
        ["ubuntu-" + build_id, "ubuntu-" + new_build])


# -- static driver (upstream test_driver_static.py) ---------------------------

@pytest.fixture
def events_only(monkeypatch):
    """Only the static provider's first full pass; later changes must
    come from the events."""
    from nodepool.driver.static import provider as static_provider
    monkeypatch.setattr(static_provider, "SYNC_FACTOR", 100000)


def _static(launcher_factory, sshd, hosts):
    from tests.functional import test_static as st
    return launcher_factory(st.render(hosts, port=sshd.port))


def test_static_multiname(launcher_factory, zuul, sshd, events_only):
    """One host listed twice with different usernames serves both."""
    from tests.functional import test_static as st
    _static(launcher_factory, sshd, [st.HOST_A, st.HOST_A_OTHER_USER])
    st.wait_ready(zuul, 2, username="alice")
    (bob,) = st.wait_ready(zuul, 1, username="bob")
    assert bob.hostname == "127.0.0.1" and bob.type == ["static-c"]
    nodes = zuul.run_job(["static-c", "static-a"])
    assert [(n.hostname, n.username) for n in nodes] == [
        ("127.0.0.1", "bob"), ("127.0.0.1", "alice")]
    zuul.finish(nodes)


def test_static_parallel_jobs_increase_and_decrease(launcher_factory, zuul,
                                                    sshd, events_only):
    from tests.functional import test_static as st
    launcher = _static(launcher_factory, sshd, [st.HOST_B])
    (first,) = st.wait_ready(zuul, 1, hostname="127.0.0.2")
    more = st.HOST_B + "            max-parallel-jobs: 2\n"
    st.rewrite_config(launcher, st.render([more], port=sshd.port))
    nodes = st.wait_ready(zuul, 2, hostname="127.0.0.2")
    assert sorted(n.slot for n in nodes) == [0, 1]
    assert first.id in [n.id for n in nodes]
    st.rewrite_config(launcher, st.render([st.HOST_B], port=sshd.port))
    wait_for(lambda: len(st.all_nodes(zuul)) == 1)
    nodes = st.stable_nodes(zuul, launcher)
    assert [(n.slot, n.state) for n in nodes] == [(0, NodeState.READY)]


def test_static_waiting_requests_served_by_priority(launcher_factory, zuul,
                                                    sshd, events_only):
    """With the only slot busy, a normal (200) request submitted after a
    low (300) one is served first once the slot frees."""
    from tests.functional import test_static as st
    _static(launcher_factory, sshd, [st.HOST_B])
    st.wait_ready(zuul, 1)
    busy = zuul.run_job(["static-b"])
    low = zuul.submit(["static-b"], priority="300")
    normal = zuul.submit(["static-b"], priority="200")
    zuul.finish(busy)
    done = zuul.wait_for_request(normal)
    assert done.state == "fulfilled"
    assert zuul.get_request(low).state == "requested"
    nodes = zuul.accept_nodes(done)
    zuul.finish(nodes)
    done = zuul.wait_for_request(low)
    assert done.state == "fulfilled"
    zuul.finish(zuul.accept_nodes(done))


def test_static_missing_node_re_added(launcher_factory, zuul, sshd,
                                      zk_client, monkeypatch):
    """A READY node record removed behind the driver's back comes back
    (as a new record for the same slot) with the periodic sync (every
    ``SYNC_FACTOR`` provider intervals: 1.2 s here, 60 s in production;
    upstream re-adds it in its equally periodic cleanup)."""
    from nodepool.driver.static import registrar
    from tests.functional import test_static as st
    # Our own creations are trusted over the cache for FRESH_GRACE; a
    # record deleted that early would otherwise wait that long.
    monkeypatch.setattr(registrar, "FRESH_GRACE", 0.5)
    _static(launcher_factory, sshd, [st.HOST_B])
    (node,) = st.wait_ready(zuul, 1)
    zk_client.kazoo.delete(paths.node_path(node.id), recursive=True)
    (again,) = st.wait_ready(zuul, 1)
    assert again.id != node.id
    assert (again.hostname, again.slot) == ("127.0.0.2", 0)
    zuul.finish(zuul.run_job(["static-b"]))


def test_static_unresolvable_host_registered(launcher_factory, zuul,
                                             events_only):
    """static_unresolvable: a host name that does not resolve, trusted
    without host-key checking, is registered without addresses."""
    from tests.functional import test_static as st
    host = """
          - name: nodepool-unresolvable.invalid
            labels: [static-c]
            host-key-checking: false
            host-key: {key}
"""
    launcher_factory(st.render([host]))
    (node,) = st.wait_ready(zuul, 1)
    assert node.hostname == node.interface_ip == \
        "nodepool-unresolvable.invalid"
    assert node.external_id == "nodepool-unresolvable.invalid"
    assert node.public_ipv4 is None and node.public_ipv6 is None
    assert node.host_keys == [st.CONFIGURED_KEY]
    assert node.connection_port == 22
    zuul.finish(zuul.run_job(["static-c"]))


def test_static_node_updated_at_startup(launcher_factory, zuul, sshd,
                                        events_only):
    """A config changed while the launcher was down updates the free
    node in place (same id) when it starts again."""
    from tests.functional import test_static as st
    launcher = _static(launcher_factory, sshd, [st.HOST_B])
    (before,) = st.wait_ready(zuul, 1)
    st.stop_launcher(launcher)
    changed = st.HOST_B.replace("static-b", "[static-b, static-c]") + \
        "            python-path: /usr/bin/python3\n"
    launcher = launcher_factory(st.render([changed], port=sshd.port))
    wait_for(lambda: [n.type for n in st.ready(zuul)] == [
        ["static-b", "static-c"]])
    (after,) = st.stable_nodes(zuul, launcher)
    assert after.id == before.id
    assert after.python_path == "/usr/bin/python3"


MULTI_PROVIDER = """
labels:
  - name: static-b
  - name: small
providers:
  - name: static
    driver: static
    pools:
      - name: main
        nodes:
          - name: 127.0.0.2
            labels: static-b
            connection-port: {port}
            host-key-checking: false
  - name: fake
    driver: test
    pools:
      - name: main
        labels:
          - name: small
"""


def test_static_and_cloud_provider_side_by_side(launcher_factory, zuul,
                                                sshd, events_only):
    """multiprovider: each label is served by the provider having it; a
    request mixing both cannot be served by any single pool."""
    from tests.functional import test_static as st
    launcher_factory(MULTI_PROVIDER.replace("{port}", str(sshd.port)))
    st.wait_ready(zuul, 1)
    (static_node,) = zuul.run_job(["static-b"])
    (cloud_node,) = zuul.run_job(["small"])
    assert (static_node.provider, static_node.hostname) == (
        "static", "127.0.0.2")
    assert cloud_node.provider == "fake"
    mixed = zuul.wait_for_request(zuul.submit(["static-b", "small"]))
    assert mixed.state == "failed"
    assert len(mixed.declined_by) == 2
    zuul.finish([static_node, cloud_node])


# -- web app (upstream test_webapp.py) ---------------------------------------

@pytest.fixture
def web_app(launcher_factory):
    from nodepool.web.app import WebApp
    app = WebApp(launcher_factory(), "127.0.0.1", 0, clock=web.Clock())
    app.start()
    yield app
    app.stop()


def test_web_image_status_pending_then_building(web_app, images, zk_factory):
    """image_status: null, then pending after a build request, building
    while the image build lock is held for an existing build."""
    app = web_app
    images.pause_image("ubuntu")
    images.unpause_image("ubuntu")   # leaves the image znode

    def status_of(image):
        rows = [r for r in web.fresh_json(app, "/image-status")
                if r["image"] == image]
        return rows[0] if rows else None
    assert status_of("ubuntu") == {"image": "ubuntu", "paused": False,
                                   "build_request": None,
                                   "build_request_age": None}
    images.submit_build_request("ubuntu")
    row = status_of("ubuntu")
    assert row["build_request"] == "pending"
    assert isinstance(row["build_request_age"], int)
    builder = ImageStore(zk_factory())
    lock = builder.acquire_image_build_lock("ubuntu", blocking=False)
    try:
        make_build(images, state="building")
        assert status_of("ubuntu")["build_request"] == "building"
    finally:
        builder.release_lock(lock)
    assert status_of("ubuntu")["build_request"] == "pending"
    images.remove_build_request("ubuntu")
    assert status_of("ubuntu")["build_request"] is None


def test_static_assigned_ready_node_not_taken(launcher_factory, zuul, sshd,
                                              zk_client, events_only,
                                              monkeypatch):
    """ignore_assigned_ready_nodes: a READY node allocated to another
    (still existing) request is not handed out; the new request waits,
    without being declined, until the allocation is gone."""
    from tests.functional import test_static as st
    launcher = _static(launcher_factory, sshd, [st.HOST_B])
    (node,) = st.wait_ready(zuul, 1)
    # A request nobody can serve, kept around (as Zuul would until it
    # notices the failure), owns the node.
    other = zuul.wait_for_request(zuul.submit(["static-a"]))
    assert other.state == "failed"
    store = NodeStore(zk_client)
    current = store.get_node(node.id, cached=False)
    store.lock_node(current, timeout=10)
    current.allocated_to = other.id
    store.store_node(current)
    store.unlock_node(current)
    wait_for(lambda: (launcher.services.node_cache.get(node.id) or
                      current).allocated_to == other.id)

    worker = launcher.pool_workers[("static", "main")]
    passes = []
    real_pass = worker._pass

    def counted_pass():
        real_pass()
        passes.append(1)
    monkeypatch.setattr(worker, "_pass", counted_pass)

    waiting = zuul.submit(["static-b"])
    # A few complete pool passes later: served nothing, declined nothing.
    seen = len(passes)
    wait_for(lambda: len(passes) >= seen + 3)
    request = zuul.get_request(waiting)
    assert request.state == "requested" and request.declined_by == []
    assert store.get_node(node.id, cached=False).allocated_to == other.id
    # Zuul deletes the failed request; the launcher de-allocates the node
    # and the waiting request gets it.
    zuul.delete_request(other)
    done = zuul.wait_for_request(waiting)
    assert done.state == "fulfilled" and done.nodes == [node.id]
    zuul.finish(zuul.accept_nodes(done))


# -- dib-image-delete with two builders (builder in-process) -------------------

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


def test_dib_image_delete_two_builders(builder_env, images):
    """The build's records are removed by the other builder; its owner
    removes the local files when it comes back."""
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
