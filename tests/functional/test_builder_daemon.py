# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""nodepool-builder as a real process: start, register, build, stop."""

import os
import signal

from nodepool.zk.images import ImageStore
from nodepool.zk.models import BuildState
from tests.fakes.fake_dib import DIB_CMD
from tests.fixtures import processes
from tests.fixtures.waits import wait_for

CONFIG = """
images-dir: {images_dir}
build-log-dir: {log_dir}
labels: []
providers: []
diskimages:
  - name: daemon-image
    dib-cmd: {dib_cmd}
    formats: [raw]
"""


def write_config(tmp_path, zk_server, chroot):
    return processes.write_config(
        tmp_path / "nodepool.yaml", zk_server, chroot,
        CONFIG.format(images_dir=tmp_path / "images",
                      log_dir=tmp_path / "logs", dib_cmd=DIB_CMD))


def start(args, log):
    return processes.start("nodepool-builder", args, log)


def running(kazoo):
    return processes.component_running(kazoo, "builder")


def test_daemon_builds_and_stops(tmp_path, zk_server, zk_chroot, zk_client):
    config = write_config(tmp_path, zk_server, zk_chroot)
    pidfile = tmp_path / "builder.pid"
    log = tmp_path / "builder.log"
    proc = start(["-d", "-c", str(config), "-p", str(pidfile),
                  "--build-workers", "2", "--upload-workers", "1"], log)
    try:
        kazoo = zk_client.kazoo
        wait_for(lambda: running(kazoo), timeout=60)
        # In the foreground there is no pid file (as in nodepool 11).
        assert not pidfile.exists()
        store = ImageStore(zk_client)
        build = wait_for(lambda: store.get_builds(
            "daemon-image", [BuildState.READY]), timeout=60)[0]
        assert (tmp_path / "images" / ("daemon-image-%s.raw"
                                       % build.id)).exists()
        builder_id = (tmp_path / "images" / "builder_id.txt").read_text()
        assert build.builder_id == builder_id
        proc.send_signal(signal.SIGTERM)
        assert processes.exit_status(proc, log) == 0
        wait_for(lambda: not kazoo.get_children(
            "/nodepool/components/builder"))
        assert "Builder stopped" in log.read_text()
    finally:
        processes.stop(proc)

    # A second run keeps the builder id.
    proc = start(["-d", "-c", str(config), "-p", str(pidfile)], log)
    try:
        wait_for(lambda: running(kazoo), timeout=60)
        proc.send_signal(signal.SIGINT)
        assert processes.exit_status(proc, log) == 0
        assert (tmp_path / "images" / "builder_id.txt").read_text() == \
            builder_id
    finally:
        processes.stop(proc)


def test_foreground_builder_ignores_a_held_pid_file(
        tmp_path, zk_server, zk_chroot, zk_client):
    # Another live process (this test) is recorded in the pid file: only a
    # detaching builder would refuse to start.
    config = processes.write_config(
        tmp_path / "nodepool.yaml", zk_server, zk_chroot,
        "images-dir: %s\nlabels: []\nproviders: []\n"
        % (tmp_path / "images"))
    pidfile = tmp_path / "nodepool-builder.pid"
    pidfile.write_text("%d\n" % os.getpid())
    proc = start(["-f", "-c", str(config), "-p", str(pidfile)],
                 tmp_path / "builder.log")
    try:
        wait_for(lambda: running(zk_client.kazoo) or proc.poll() is not None,
                 timeout=60)
        assert proc.poll() is None, (tmp_path / "builder.log").read_text()
        proc.send_signal(signal.SIGINT)
        assert processes.exit_status(proc, tmp_path / "builder.log") == 0
        assert pidfile.read_text() == "%d\n" % os.getpid()
    finally:
        processes.stop(proc)


def test_daemon_refuses_config_without_images_dir(tmp_path, zk_server,
                                                  zk_chroot):
    config = processes.write_config(tmp_path / "nodepool.yaml",
                                    zk_server, zk_chroot)
    log = tmp_path / "builder.log"
    proc = start(["-d", "-c", str(config), "-p",
                  str(tmp_path / "builder.pid")], log)
    try:
        assert proc.wait(60) == 1
        assert "No images-dir specified in config." in log.read_text()
    finally:
        processes.stop(proc)
