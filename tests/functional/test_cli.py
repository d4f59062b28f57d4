# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The ``nodepool`` admin CLI against a real ZooKeeper (doc/source/cli.rst)."""

import io
import json
import os
import socket
import stat
import subprocess
import sys

import pytest

from nodepool.cmd import nodepoolcmd, recorded_pid
from nodepool.version import __version__
from nodepool.zk import paths
from nodepool.zk.images import ImageStore
from nodepool.zk.models import (ImageBuild, ImageUpload, Node, NodeRequest,
                                NodeState)
from nodepool.zk.nodes import NodeStore
from nodepool.zk.requests import RequestStore
from tests.fakes.test_driver import FakeCloud, FakeInstance
from tests.fixtures import processes, zkserver
from tests.functional.conftest import SMALL_PROVIDER

SCRIPT = processes.console_script("nodepool")

NODE_HEADERS = ["ID", "Provider", "Label", "Server ID", "Public IPv4",
                "IPv6", "State", "Age", "Locked"]
DETAIL_HEADERS = NODE_HEADERS + [
    "Pool", "Hostname", "Private IPv4", "AZ", "Username", "Port",
    "Launcher", "Allocated To", "Hold Job", "Comment", "User Data",
    "Driver Data"]

EXTRA_CONFIG = """
labels:
  - name: small
diskimages:
  - name: ubuntu
  - name: frozen
    pause: true
""" + SMALL_PROVIDER
# For the console script, which does not know the test driver.
SCRIPT_CONFIG = """
labels: []
providers: []
"""


def zk_config(zk_server, chroot, port=None, timeout=10):
    return zkserver.client_config(
        zk_server.host, port or zk_server.secure_port, chroot,
        zk_server.certs, timeout=timeout)


@pytest.fixture
def config(tmp_path, zk_server, zk_chroot):
    path = tmp_path / "nodepool.yaml"
    path.write_text(zk_config(zk_server, zk_chroot) + EXTRA_CONFIG)
    return str(path)


@pytest.fixture
def cli(config, capsys):
    """Run ``nodepool -c CONFIG <args>`` in-process: (status, out, err)."""
    def run(*args, **kwargs):
        capsys.readouterr()
        status = nodepoolcmd.main(["-c", config] + list(args), **kwargs)
        out, err = capsys.readouterr()
        return status, out, err
    return run


@pytest.fixture
def stores(zk_client):
    class Stores:
        nodes = NodeStore(zk_client)
        requests = RequestStore(zk_client)
        images = ImageStore(zk_client)
        kazoo = zk_client.kazoo
    return Stores


def table(text, title=None):
    """Rows (lists of cells) of the first table in ``text`` (after a line
    equal to ``title`` if given), header row first."""
    lines = text.splitlines()
    if title is not None:
        lines = lines[lines.index(title) + 1:]
    rows = []
    for line in lines:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows and not line.startswith("+"):
            break
    return rows


def make_node(store, provider="fake", state=NodeState.READY, **attrs):
    node = Node()
    node.state = state
    node.provider = provider
    node.pool = "main"
    node.type = ["small"]
    node.external_id = "srv-%s" % provider
    node.public_ipv4 = "203.0.113.7"
    for key, value in attrs.items():
        setattr(node, key, value)
    store.store_node(node)
    return node


def make_build(images, image="ubuntu", state="ready", formats=("qcow2",)):
    build = ImageBuild(image)
    build.state = state
    build.builder = "builder01"
    build.formats = list(formats)
    build_id = images.store_build(image, build)
    return build_id


def make_upload(images, image, build_id, provider="fake", state="ready",
                external_id="img-1"):
    upload = ImageUpload()
    upload.state = state
    upload.external_id = external_id
    upload.external_name = "%s-%s" % (image, build_id[:6])
    return images.store_upload(image, build_id, provider, upload)


# -- listings ------------------------------------------------------------------

def test_list_and_detail(cli, stores, zk_factory):
    a = make_node(stores.nodes, public_ipv6="2001:db8::1",
                  connection_port="token", comment="keep")
    b = make_node(stores.nodes, provider="other", state=NodeState.IN_USE)
    other = NodeStore(zk_factory())
    other.lock_node(b)

    status, out, _ = cli("list")
    assert status == 0
    rows = table(out)
    assert rows[0] == NODE_HEADERS
    by_id = {row[0]: row for row in rows[1:]}
    assert by_id[a.id][:7] == [a.id, "fake", "small", "srv-fake",
                               "203.0.113.7", "2001:db8::1", "ready"]
    assert by_id[a.id][8] == "unlocked"
    assert by_id[b.id][6:9:2] == ["in-use", "locked"]
    assert by_id[a.id][7].count(":") == 3

    status, out, _ = cli("list", "--detail")
    rows = table(out)
    assert rows[0] == DETAIL_HEADERS
    detail = dict(zip(rows[0], [r for r in rows if r[0] == a.id][0]))
    assert detail["Port"] == "redacted"
    assert detail["Comment"] == "keep"
    assert detail["Username"] == "zuul"
    assert detail["Pool"] == "main"
    assert detail["Hostname"] == ""


def test_request_list(cli, stores):
    request = NodeRequest.new(["small", "small"], "zuul01",
                              relative_priority=2, event_id="ev42")
    request.declined_by = ["l1", "l2"]
    stores.requests.submit_request(request, priority="200")
    status, out, _ = cli("request-list")
    assert status == 0
    rows = table(out)
    assert rows[0] == ["Request ID", "Priority", "State", "Requestor",
                       "Node Types", "Nodes", "Declined By", "Event ID"]
    assert rows[1] == [request.id, "2", "requested", "zuul01",
                       "small,small", "", "l1,l2", "ev42"]


def test_image_listings(cli, stores, zk_factory):
    images = stores.images
    build_id = make_build(images, formats=("raw", "qcow2"))
    upload_id = make_upload(images, "ubuntu", build_id)
    images.pause_image("frozen")
    frozen_build = make_build(images, image="frozen", state="building")

    status, out, _ = cli("image-list")
    assert status == 0
    rows = table(out)
    assert rows[0] == ["Build ID", "Upload ID", "Provider", "Image",
                       "Provider Image Name", "Provider Image ID", "State",
                       "Age"]
    assert rows[1][:7] == [build_id, upload_id, "fake", "ubuntu",
                           "ubuntu-" + build_id[:6], "img-1", "ready"]
    assert len(rows) == 2

    status, out, _ = cli("dib-image-list")
    rows = table(out)
    assert rows[0] == ["ID", "Image", "Builder", "Formats", "State", "Age"]
    by_id = {row[0]: row for row in rows[1:]}
    assert by_id["ubuntu-" + build_id][1:5] == [
        "ubuntu", "builder01", "qcow2,raw", "ready"]
    assert by_id["frozen-" + frozen_build][4] == "paused"

    # image-status: pending request, then building while the build lock
    # is held and a build exists.
    assert cli("image-build", "ubuntu")[0] == 0
    status, out, _ = cli("image-status")
    rows = table(out)
    assert rows[0] == ["Image", "Paused", "Build Request",
                       "Build Request Age"]
    by_image = {row[0]: row for row in rows[1:]}
    assert by_image["frozen"][1:3] == ["True", ""]
    assert by_image["ubuntu"][1:3] == ["False", "pending"]
    assert by_image["ubuntu"][3].startswith("00:00:")

    builder = ImageStore(zk_factory())
    lock = builder.acquire_image_build_lock("ubuntu", blocking=False)
    make_build(images, state="building")
    try:
        rows = table(cli("image-status")[1])
        assert {r[0]: r[2] for r in rows[1:]}["ubuntu"] == "building"
    finally:
        builder.release_lock(lock)
    rows = table(cli("image-status")[1])
    assert {r[0]: r[2] for r in rows[1:]}["ubuntu"] == "pending"


def test_image_build(cli, stores):
    assert cli("image-build", "ubuntu")[0] == 0
    assert stores.images.has_build_request("ubuntu")

    status, out, err = cli("image-build", "nope")
    assert status == 1
    assert err.strip() == ("nodepool: error: Trying to build a non "
                           "disk-image-builder image: nope")
    status, _, err = cli("image-build", "frozen")
    assert status == 1
    assert "Skipping build request for image frozen; paused" in err
    assert not stores.images.has_build_request("frozen")


def test_image_pause_unpause(cli, stores):
    for _ in range(2):  # idempotent
        assert cli("image-pause", "ubuntu")[0] == 0
        assert stores.images.is_image_paused("ubuntu")
    for _ in range(2):
        assert cli("image-unpause", "ubuntu")[0] == 0
        assert not stores.images.is_image_paused("ubuntu")


def test_image_delete(cli, stores):
    images = stores.images
    build_id = make_build(images)
    ready = make_upload(images, "ubuntu", build_id)
    busy = make_upload(images, "ubuntu", build_id, state="uploading")

    def delete(upload_id):
        return cli("image-delete", "--provider", "fake", "--image", "ubuntu",
                   "--build-id", build_id, "--upload-id", upload_id)

    status, out, _ = delete("0000009999")
    assert (status, out.strip()) == (1, "Image upload not found")
    status, out, _ = delete(busy)
    assert (status, out.strip()) == (
        1, "Cannot delete because image upload in progress")
    assert delete(ready)[0] == 0
    assert images.get_upload("ubuntu", build_id, "fake",
                             ready).state == "deleting"

    with pytest.raises(SystemExit) as exc:
        nodepoolcmd.main(["image-delete", "--provider", "fake"])
    assert exc.value.code == 2


def test_dib_image_delete(cli, stores):
    images = stores.images
    ready = make_build(images)
    busy = make_build(images, state="building")
    status, out, _ = cli("dib-image-delete", "ubuntu-nope")
    assert (status, out.strip()) == (1, "Build ubuntu-nope not found")
    status, out, _ = cli("dib-image-delete", "ubuntu-" + busy)
    assert (status, out.strip()) == (1, "Cannot delete a build in progress")
    assert cli("dib-image-delete", "ubuntu-" + ready)[0] == 0
    assert images.get_build("ubuntu", ready).state == "deleting"
    assert images.get_build("ubuntu", busy).state == "building"


# -- node changes --------------------------------------------------------------

def test_hold_and_delete(cli, stores):
    node = make_node(stores.nodes)
    status, out, _ = cli("hold", node.id)
    assert status == 0
    rows = table(out)
    assert rows[0] == NODE_HEADERS
    assert rows[1][0] == node.id and rows[1][6] == "hold"
    assert stores.nodes.get_node(node.id).state == "hold"
    assert stores.nodes.node_lock_contenders(node.id) == []

    status, out, _ = cli("delete", node.id)
    assert status == 0
    assert table(out)[1][6] == "deleting"
    assert stores.nodes.get_node(node.id).state == "deleting"

    status, out, err = cli("delete", "0000099999")
    assert status == 1
    assert err.strip() == "nodepool: error: Node id 0000099999 not found"
    assert cli("hold", "0000099999")[0] == 1


def test_locked_node_times_out(cli, stores, zk_factory):
    node = make_node(stores.nodes)
    NodeStore(zk_factory()).lock_node(node)
    for command in ("hold", "delete"):
        status, out, err = cli(command, node.id, lock_timeout=0.5)
        assert status == 1
        assert err.strip() == (
            "nodepool: error: Timed out after 0.5s waiting for the lock "
            "of node %s" % node.id)
        assert "Traceback" not in out + err
    assert stores.nodes.get_node(node.id).state == "ready"


def test_delete_now(cli, stores):
    cloud = FakeCloud.get("fake")
    cloud.instances["fake-7"] = FakeInstance("fake-7", {}, 1, 1024)
    node = make_node(stores.nodes, external_id="fake-7")
    status, out, _ = cli("delete", "--now", node.id)
    assert status == 0
    assert table(out) == [NODE_HEADERS]
    assert "fake-7" not in cloud.instances
    assert stores.nodes.get_node(node.id) is None

    cloud.fail_deletes = 1
    cloud.instances["fake-8"] = FakeInstance("fake-8", {}, 1, 1024)
    failing = make_node(stores.nodes, external_id="fake-8")
    status, out, err = cli("delete", "--now", failing.id)
    assert status == 1
    assert "Traceback" not in err
    assert "Deleting node %s failed" % failing.id in err
    assert stores.nodes.get_node(failing.id).state == "deleting"
    assert stores.nodes.node_lock_contenders(failing.id) == []

    foreign = make_node(stores.nodes, provider="elsewhere")
    status, out, _ = cli("delete", "--now", foreign.id)
    assert status == 1
    assert out.strip() == ("Provider elsewhere for node %s not defined on "
                           "this launcher" % foreign.id)
    assert stores.nodes.get_node(foreign.id).state == "ready"
    assert stores.nodes.node_lock_contenders(foreign.id) == []


def test_info_and_erase(cli, stores, monkeypatch):
    images = stores.images
    build_id = make_build(images)
    first = make_upload(images, "ubuntu", build_id)
    second = make_upload(images, "ubuntu", build_id, external_id="img-2")
    make_upload(images, "ubuntu", build_id, provider="keep")
    node = make_node(stores.nodes)
    kept = make_node(stores.nodes, provider="keep")

    status, out, _ = cli("info", "fake")
    assert status == 0
    lines = out.splitlines()
    assert lines[:3] == ["ZooKeeper data for provider fake", "",
                         "Image data:"]
    assert table(out, "Image data:") == [
        ["Image Name", "Build ID", "Upload IDs"],
        ["ubuntu", build_id, "%s,%s" % (first, second)]]
    assert table(out, "Nodes:") == [["ID", "Server ID"],
                                    [node.id, "srv-fake"]]

    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    status, out, _ = cli("erase", "fake")
    assert status == 0
    assert out.splitlines() == [
        "WARNING! This action is not reversible!",
        "Erase ZooKeeper data for provider fake? [N/y] "
        "Aborting. No data erased."]
    assert stores.nodes.get_node(node.id) is not None

    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    status, out, _ = cli("erase", "fake")
    assert status == 0
    assert out.splitlines()[-2:] == [
        "Erase ZooKeeper data for provider fake? [N/y] "
        "Erasing build data for fake...",
        "Erasing node data for fake..."]
    assert stores.nodes.get_node(node.id) is None
    assert stores.nodes.get_node(kept.id) is not None
    assert images.get_build_providers("ubuntu", build_id) == ["keep"]

    kept2 = make_node(stores.nodes, provider="keep")
    status, out, _ = cli("erase", "--force", "keep")
    assert status == 0
    assert out.splitlines() == ["Erasing build data for keep...",
                                "Erasing node data for keep..."]
    assert stores.nodes.get_node(kept2.id) is None
    assert images.get_build("ubuntu", build_id) is not None


def test_export_import_round_trip(cli, stores, tmp_path):
    images = stores.images
    build_id = make_build(images)
    make_upload(images, "ubuntu", build_id)
    last = make_upload(images, "ubuntu", build_id, external_id="img-2")
    images.pause_image("frozen")
    path = tmp_path / "export.json"
    assert cli("export-image-data", str(path))[0] == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    exported = json.loads(path.read_text())
    assert paths.image_pause_path("frozen") in exported
    assert paths.upload_path("ubuntu", build_id, "fake", last) in exported

    stores.kazoo.delete(paths.IMAGE_ROOT, recursive=True)
    assert cli("import-image-data", str(path))[0] == 0
    again = tmp_path / "again.json"
    assert cli("export-image-data", str(again))[0] == 0
    assert json.loads(again.read_text()) == exported
    # The sequence moved past the imported uploads.
    assert int(make_upload(images, "ubuntu", build_id)) > int(last)

    path.write_text("not json")
    status, _, err = cli("import-image-data", str(path))
    assert status == 1 and err.startswith("nodepool: error: ")


ALIEN_HEADERS = ["Provider", "Name", "Image ID"]


def test_alien_image_list(cli, stores):
    status, out, _ = cli("alien-image-list")
    assert (status, table(out)) == (0, [ALIEN_HEADERS])  # lists nothing

    build_id = make_build(stores.images)
    make_upload(stores.images, "ubuntu", build_id, external_id="img-1")
    # A READY upload of another provider (in the same cloud account).
    make_upload(stores.images, "ubuntu", build_id, provider="other",
                external_id="img-2")
    make_upload(stores.images, "ubuntu", build_id, state="deleting",
                external_id="img-3")
    cloud = FakeCloud.get("fake")
    cloud.add_image("img-1", "known", {"nodepool_build_id": build_id})
    cloud.add_image("img-9", "zz alien", {"nodepool_build_id": "x"})
    cloud.add_image("img-2", "other's", {"nodepool_build_id": build_id})
    cloud.add_image("img-3", "deleting", {"nodepool_build_id": build_id})
    cloud.add_image("img-5", "user image", {})
    status, out, _ = cli("alien-image-list")
    assert table(out) == [ALIEN_HEADERS, ["fake", "deleting", "img-3"],
                          ["fake", "zz alien", "img-9"]]
    assert table(cli("alien-image-list", "fake")[1])[1:] == [
        ["fake", "deleting", "img-3"], ["fake", "zz alien", "img-9"]]
    assert cli("alien-image-list", "nope")[0] == 1


def test_alien_image_list_listing_fails(cli, caplog):
    FakeCloud.get("fake").fail_image_listing = RuntimeError("cloud down")
    status, out, _ = cli("alien-image-list")
    assert (status, table(out)) == (0, [ALIEN_HEADERS])
    [record] = [r for r in caplog.records if r.name == "nodepool.cmd"]
    # One line, no traceback (unless --debug).
    assert record.getMessage() == (
        "Listing images of provider fake failed: cloud down")
    assert record.exc_info is None


AWS_REGIONS = {"west": "us-west-2", "east": "us-east-1"}
AWS_CONFIG = """
labels: []
providers:
  - name: west
    driver: aws
    region-name: us-west-2
    pools: []
  - name: east
    driver: aws
    region-name: us-east-1
    pools: []
"""


@pytest.fixture
def aws_proxy():
    """moto_server on loopback behind the counting proxy (which also
    answers the Service Quotas calls the adapter makes on start)."""
    pytest.importorskip("moto")
    from tests.fakes.aws_proxy import AwsProxy, MotoServer
    server = MotoServer().start()
    proxy = AwsProxy(server.port).start()
    proxy.moto_url = server.url
    yield proxy
    proxy.stop()
    server.stop()


@pytest.fixture
def aws_script(tmp_path, zk_server, zk_chroot, aws_proxy):
    """``aws_script(*args)``: the ``nodepool`` script with ``args`` on a
    config of AWS_CONFIG, its AWS calls going to ``aws_proxy``."""
    config = tmp_path / "aws.yaml"
    config.write_text(zk_config(zk_server, zk_chroot) + AWS_CONFIG)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-west-2", AWS_ENDPOINT_URL=aws_proxy.url)
    env.pop("AWS_PROFILE", None)

    def run(*args):
        return subprocess.run([SCRIPT, "-c", str(config)] + list(args),
                              capture_output=True, text=True, timeout=120,
                              env=env)
    return run


def test_alien_image_list_aws_script(stores, aws_proxy, aws_script):
    import boto3

    def register(region, name, **tags):
        ec2 = boto3.client("ec2", endpoint_url=aws_proxy.moto_url,
                           region_name=region, aws_access_key_id="testing",
                           aws_secret_access_key="testing")
        image_id = ec2.register_image(Name=name)["ImageId"]
        if tags:
            ec2.create_tags(Resources=[image_id], Tags=[
                {"Key": k, "Value": v} for k, v in tags.items()])
        return image_id

    def tags(provider, build_id, upload_id):
        return dict(nodepool_build_id=build_id, nodepool_upload_id=upload_id,
                    nodepool_provider_name=provider, Name="ubuntu-x")

    build_id = make_build(stores.images)
    known = register("us-west-2", "ubuntu-known",
                     **tags("west", build_id, "0000000001"))
    make_upload(stores.images, "ubuntu", build_id, provider="west",
                external_id=known)
    alien = register("us-west-2", "ubuntu-alien",
                     **tags("west", "gone", "0000000007"))
    register("us-west-2", "hand-made")
    register("us-west-2", "hand-made-tagged", team="ci")
    east_alien = register("us-east-1", "ubuntu-east",
                          **tags("east", "gone", "0000000003"))

    result = aws_script("alien-image-list")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert table(result.stdout) == [
        ALIEN_HEADERS, ["west", "ubuntu-alien", alien],
        ["east", "ubuntu-east", east_alien]]
    assert aws_proxy.counts["DescribeImages"] == 2

    aws_proxy.reset_counts()
    result = aws_script("alien-image-list", "east")
    assert result.returncode == 0, result.stderr
    assert table(result.stdout) == [ALIEN_HEADERS,
                                    ["east", "ubuntu-east", east_alien]]
    assert aws_proxy.counts["DescribeImages"] == 1

    result = aws_script("alien-image-list", "north")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == ("nodepool: error: Provider north is not "
                             "defined in the config\n")


def test_alien_image_list_aws_quiet_unless_debug(stores, aws_script):
    """botocore's INFO lines (credentials and endpoint found, for every
    client of every provider) stay off stderr unless --debug."""
    result = aws_script("alien-image-list")
    assert result.returncode == 0, result.stderr
    assert table(result.stdout) == [ALIEN_HEADERS]
    assert result.stderr == ""
    result = aws_script("--debug", "alien-image-list")
    assert result.returncode == 0, result.stderr
    assert "botocore" in result.stderr


# -- errors and the console script ---------------------------------------------

def test_usage_errors(capsys, config):
    assert nodepoolcmd.main([]) == 1
    assert "usage: nodepool" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        nodepoolcmd.main(["-c", config, "bogus"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        nodepoolcmd.main(["hold"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        nodepoolcmd.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == \
        "Nodepool version: %s" % __version__


def test_bad_logging_config(capsys, config, tmp_path):
    status = nodepoolcmd.main(["-c", config, "-l",
                               str(tmp_path / "nope.conf"), "list"])
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("nodepool: error: bad logging config")
    assert len(err.splitlines()) == 1


def test_missing_config(capsys, tmp_path):
    status = nodepoolcmd.main(["-c", str(tmp_path / "none.yaml"), "list"])
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("nodepool: error: ")
    assert "Traceback" not in err


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_zookeeper_script(tmp_path, zk_server, zk_chroot):
    path = tmp_path / "down.yaml"
    path.write_text(zk_config(zk_server, zk_chroot, port=_free_port(),
                              timeout=1) + SCRIPT_CONFIG)
    result = subprocess.run([SCRIPT, "-c", str(path), "list"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nodepool: error: could not connect to "
                               "ZooKeeper")
    assert result.stdout == ""


def test_console_script(tmp_path, zk_server, zk_chroot, stores):
    config = str(tmp_path / "script.yaml")
    with open(config, "w") as f:
        f.write(zk_config(zk_server, zk_chroot) + SCRIPT_CONFIG)
    node = make_node(stores.nodes)
    result = subprocess.run([SCRIPT, "-c", config, "list"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = table(result.stdout)
    assert rows[0] == NODE_HEADERS and rows[1][0] == node.id

    result = subprocess.run([SCRIPT, "-c", config, "delete", "0000077777"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == ("nodepool: error: Node id 0000077777 not "
                             "found\n")

    result = subprocess.run([SCRIPT, "-c", config, "frobnicate"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


# -- daemon options (doc/source/operation.rst) ---------------------------------

def test_daemon_options(capsys):
    from nodepool.cmd import builder, daemon_parser, launcher
    args = daemon_parser("nodepool-launcher", "", "nodepool").parse_args([])
    assert args.pidfile == "/var/run/nodepool/nodepool.pid"
    assert not (args.debug or args.foreground or args.repl)
    args = daemon_parser("nodepool-builder", "", "nodepool-builder") \
        .parse_args(["-d"])
    assert args.pidfile == "/var/run/nodepool/nodepool-builder.pid"
    assert args.debug and not args.foreground
    for main in (launcher.main, builder.main):
        with pytest.raises(SystemExit) as exc:
            main(["--version"])
        assert exc.value.code == 0
        assert capsys.readouterr().out == \
            "Nodepool version: %s\n" % __version__


def test_default_logging_config():
    from nodepool.cmd import default_logging_config
    config = default_logging_config("nodepool", True, True)
    assert config["handlers"]["main"]["stream"] == "ext://sys.stdout"
    assert config["loggers"]["nodepool"]["level"] == "DEBUG"
    assert config["loggers"]["kazoo"]["level"] == "WARN"
    config = default_logging_config("nodepool-builder", False, False)
    assert config["handlers"]["main"]["filename"] == \
        "/var/log/nodepool/nodepool-builder.log"
    assert config["loggers"]["nodepool"]["level"] == "INFO"


def test_logging_config_files(tmp_path):
    import logging
    from nodepool.cmd import load_logging_config
    name = "nodepool.test_cli_logging"
    yaml_path = tmp_path / "log.yaml"
    yaml_path.write_text(
        "version: 1\ndisable_existing_loggers: false\n"
        "loggers:\n  %s:\n    level: ERROR\n" % name)
    load_logging_config(str(yaml_path))
    assert logging.getLogger(name).level == logging.ERROR
    ini_path = tmp_path / "log.conf"
    ini_path.write_text(
        "[loggers]\nkeys=root,x\n[handlers]\nkeys=\n[formatters]\nkeys=\n"
        "[logger_root]\nhandlers=\n"
        "[logger_x]\nlevel=CRITICAL\nhandlers=\nqualname=%s\n" % name)
    load_logging_config(str(ini_path))
    assert logging.getLogger(name).level == logging.CRITICAL


def test_pidfile_stale_and_live(tmp_path):
    from nodepool.cmd import check_pidfile, remove_pidfile, write_pidfile
    path = tmp_path / "run" / "nodepool.pid"
    done = subprocess.run([sys.executable, "-c", "import os; "
                           "print(os.getpid())"], capture_output=True,
                          text=True)
    path.parent.mkdir()
    path.write_text(done.stdout)           # that process is gone: stale
    write_pidfile(str(path))
    assert int(path.read_text()) == os.getpid()
    remove_pidfile(str(path))
    assert not path.exists()
    path.write_text("%d\n" % os.getppid())  # alive and not us
    with pytest.raises(RuntimeError, match="held by running process"):
        check_pidfile(str(path))


class _Service:
    def __init__(self, signum, pidfile=None):
        self.signum = signum
        self.pidfile = pidfile
        self.calls = []
        self.pid_at_start = None

    def start(self):
        self.calls.append("start")
        if self.pidfile is not None:
            self.pid_at_start = recorded_pid(str(self.pidfile))
        os.kill(os.getpid(), self.signum)

    def stop(self):
        self.calls.append("stop")

    def join(self):
        self.calls.append("join")


@pytest.mark.parametrize("name", ["SIGINT", "SIGUSR1", "SIGTERM"])
def test_run_daemon_graceful_signals(tmp_path, name):
    import signal
    from nodepool.cmd import daemon_parser, run_daemon
    logconfig = tmp_path / "log.yaml"
    logconfig.write_text("version: 1\ndisable_existing_loggers: false\n")
    pidfile = tmp_path / "d.pid"
    args = daemon_parser("x", "", "nodepool").parse_args(
        ["-f", "-p", str(pidfile), "-l", str(logconfig)])
    service = _Service(getattr(signal, name))
    saved = {s: signal.getsignal(s) for s in (
        signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)}
    try:
        assert run_daemon(args, lambda: service) == 0
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    assert service.calls == ["start", "stop", "join"]
    assert not pidfile.exists()


def test_run_daemon_foreground_ignores_pidfile(tmp_path):
    # nodepool 11 uses the pid file only when it daemonizes: a foreground
    # daemon neither writes it nor minds a live process recorded in it.
    import signal
    from nodepool.cmd import daemon_parser, run_daemon
    logconfig = tmp_path / "log.yaml"
    logconfig.write_text("version: 1\ndisable_existing_loggers: false\n")
    saved = {s: signal.getsignal(s) for s in (
        signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)}
    held = tmp_path / "held.pid"
    held.write_text("%d\n" % os.getppid())
    try:
        for option, pidfile, recorded in (
                ("-f", tmp_path / "new.pid", None),
                ("-d", held, os.getppid())):
            args = daemon_parser("x", "", "nodepool").parse_args(
                [option, "-p", str(pidfile), "-l", str(logconfig)])
            service = _Service(signal.SIGINT, pidfile)
            assert run_daemon(args, lambda: service) == 0
            assert service.calls == ["start", "stop", "join"]
            assert service.pid_at_start == recorded
            assert recorded_pid(str(pidfile)) == recorded
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _repl_session(path, source: bytes) -> str:
    """What the console at ``path`` answers to ``source``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(30)
        conn.connect(str(path))
        stream = conn.makefile("rwb")
        stream.write(source)
        stream.flush()
        conn.shutdown(socket.SHUT_WR)
        return stream.read().decode()


def test_repl_server(tmp_path):
    from nodepool.cmd import ReplServer
    path = tmp_path / "run" / "nodepool-repl.sock"
    old = os.umask(0o022)
    try:
        server = ReplServer({"x": 41}, str(path))
    finally:
        os.umask(old)
    server.start()
    try:
        st = path.lstat()
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert os.listdir(path.parent) == [path.name]
        assert _repl_session(path, b"print(x + 1)\n") == \
            "nodepool REPL\n>>> 42\n>>> \n"
        # A second server on a live socket is refused.
        with pytest.raises(FileExistsError):
            ReplServer({}, str(path))
    finally:
        server.stop()
    assert not path.exists()


def test_repl_server_socket_path_checks(tmp_path):
    from nodepool.cmd import ReplServer
    # A stale socket (its process is gone) is replaced.
    path = tmp_path / "repl.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    server = ReplServer({"x": 1}, str(path))
    server.start()
    try:
        assert _repl_session(path, b"x\n") == "nodepool REPL\n>>> 1\n>>> \n"
    finally:
        server.stop()
    # Any other file is left alone.
    path.write_text("precious")
    with pytest.raises(FileExistsError):
        ReplServer({}, str(path))
    assert path.read_text() == "precious"


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


def test_without_subcommand(config, capsys):
    assert nodepoolcmd.main(["-c", config]) == 1
    assert "usage: nodepool" in capsys.readouterr().out
