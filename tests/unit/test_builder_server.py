# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""NodePoolBuilder start-up checks and ZooKeeper host changes (no server
needed: every case fails or ends before connecting)."""

import os

import pytest

from nodepool.builder.server import BuilderStartError, NodePoolBuilder
from nodepool.cmd import builder as builder_cmd
from nodepool.zk.client import ZooKeeperClient

ZK = """
zookeeper-servers:
  - host: zk.example.org
    port: 2281
    chroot: /nodepool
"""
TLS = """
zookeeper-tls:
  ca: /ca.pem
  cert: /cert.pem
  key: /key.pem
"""


def start(tmp_path, text):
    path = tmp_path / "nodepool.yaml"
    path.write_text(text + "labels: []\nproviders: []\n")
    builder = NodePoolBuilder(str(path))
    with pytest.raises(BuilderStartError) as info:
        builder.start()
    return str(info.value)


def test_start_requires_zookeeper_servers(tmp_path):
    assert start(tmp_path, "images-dir: %s\n" % tmp_path) == \
        "No ZooKeeper servers specified in config."


def test_start_requires_images_dir(tmp_path):
    assert start(tmp_path, ZK + TLS) == "No images-dir specified in config."


def test_start_requires_tls(tmp_path):
    message = start(tmp_path, ZK + "images-dir: %s/images\n" % tmp_path)
    assert message.startswith("A TLS ZooKeeper connection is required")
    # The builder id was made before connecting.
    assert (tmp_path / "images" / "builder_id.txt").exists()


def test_start_makes_images_dir_private(tmp_path, caplog):
    old = os.umask(0o022)
    try:
        start(tmp_path, ZK + "images-dir: %s/images\n" % tmp_path)
    finally:
        os.umask(old)
    assert (tmp_path / "images").stat().st_mode & 0o777 == 0o750
    assert "open to every user" not in caplog.text
    # Existing directories keep their modes, with a warning when anybody
    # may look inside.
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o755)
    logs.chmod(0o755)
    start(tmp_path, ZK + "images-dir: %s/images\nbuild-log-dir: %s\n"
          % (tmp_path, logs))
    assert logs.stat().st_mode & 0o777 == 0o755
    assert "%s is open to every user" % logs in caplog.text


def test_zookeeper_hosts_change(tmp_path):
    builder = NodePoolBuilder(str(tmp_path / "unused.yaml"))
    client = ZooKeeperClient("zk1:2281/nodepool")
    builder.zk_client = client
    builder.set_zookeeper_hosts("zk2:2281,zk3:2281/nodepool")
    assert client.hosts == "zk2:2281,zk3:2281/nodepool"
    assert client.kazoo.hosts == [("zk2", 2281), ("zk3", 2281)]
    # A new chroot (or none) cannot be applied while running; the servers
    # are not changed either (kazoo's set_hosts would change them first).
    for hosts in ("zk4:2281/other", "zk4:2281", ""):
        builder.set_zookeeper_hosts(hosts)
        assert client.hosts == "zk2:2281,zk3:2281/nodepool"
        assert client.kazoo.hosts == [("zk2", 2281), ("zk3", 2281)]


def test_zookeeper_hosts_change_ignored_for_given_client(tmp_path):
    client = ZooKeeperClient("zk1:2281/nodepool")
    builder = NodePoolBuilder(str(tmp_path / "unused.yaml"),
                              zk_client=client)
    builder.set_zookeeper_hosts("zk2:2281/nodepool")
    assert client.hosts == "zk1:2281/nodepool"


def test_cli_worker_counts(capsys):
    with pytest.raises(SystemExit):
        builder_cmd.main(["--build-workers", "0"])
    assert "--build-workers must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        builder_cmd.main(["--upload-workers", "0"])
    assert "--upload-workers must be at least 1" in capsys.readouterr().err


def test_builder_without_reporter_sends_nothing(tmp_path, monkeypatch):
    # Only the daemon's entry point reads STATSD_HOST.
    monkeypatch.setenv("STATSD_HOST", "127.0.0.1")
    builder = NodePoolBuilder(str(tmp_path / "unused.yaml"))
    assert not builder.stats.enabled
