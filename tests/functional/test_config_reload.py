# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The daemons reject configs as ``config-validate`` does: at start they
exit with the problem, on reload they log it and keep the running config;
a valid change reaches the pool registrations."""

import os
import time

from nodepool.builder.server import NodePoolBuilder
from nodepool.zk.models import RequestState
from tests.fixtures import processes
from tests.fixtures.waits import wait_for


def rewrite(path, text):
    with open(path, "w") as f:
        f.write(text)
    future = time.time() + 5
    os.utime(path, (future, future))


def test_launcher_keeps_config_on_invalid_reload(launcher_factory, zuul,
                                                 caplog):
    launcher = launcher_factory()
    running = launcher.config
    # "providers:" with nothing after it: null, not an empty list.
    rewrite(launcher.watcher.path, "labels:\n  - name: small\nproviders:\n")
    wait_for(lambda: "Keeping the running configuration" in caplog.text)
    assert "providers: expected a list; found null" in caplog.text
    assert launcher.config is running
    assert ("fake", "main") in launcher.pool_workers
    done = zuul.wait_for_request(zuul.submit(["small"]), timeout=30)
    assert done.state == RequestState.FULFILLED
    zuul.return_nodes(zuul.accept_nodes(done))


def test_launcher_refuses_to_start(tmp_path, zk_server, zk_chroot):
    config = processes.write_config(
        tmp_path / "nodepool.yaml", zk_server, zk_chroot,
        "labels: []\nproviders:\n")
    log = tmp_path / "launcher.log"
    proc = processes.start("nodepool-launcher",
                           ["-f", "--no-webapp", "-c", str(config)], log)
    try:
        assert proc.wait(60) == 1
    finally:
        processes.stop(proc)
    assert "providers: expected a list; found null" in log.read_text()


def test_builder_refuses_to_start(tmp_path, zk_server, zk_chroot):
    config = processes.write_config(
        tmp_path / "nodepool.yaml", zk_server, zk_chroot,
        "images-dir: %s\nlabels: []\nproviders: []\n"
        "diskimages:\n  - name: img\n    release: 9.10\n"
        % (tmp_path / "images"))
    log = tmp_path / "builder.log"
    proc = processes.start("nodepool-builder", ["-f", "-c", str(config)],
                           log)
    try:
        assert proc.wait(60) == 1
    finally:
        processes.stop(proc)
    assert "diskimages[0].release: expected a string or an integer" in \
        log.read_text()


def test_builder_keeps_config_on_invalid_reload(tmp_path, zk_server,
                                                zk_chroot, caplog):
    path = processes.write_config(
        tmp_path / "nodepool.yaml", zk_server, zk_chroot,
        "images-dir: %s\nlabels: []\nproviders: []\n" % (tmp_path / "images"))
    valid = path.read_text()
    builder = NodePoolBuilder(str(path), build_interval=0.05,
                              upload_interval=0.05, cleanup_interval=0.05)
    builder.start()
    try:
        wait_for(lambda: all(w.config is not None for w in builder.workers))
        running = [w.config for w in builder.workers]
        rewrite(path, valid + "diskimages:\n  - name: img\n"
                "    env-vars:\n      DIB_DEBUG_TRACE: 1\n")
        wait_for(lambda: caplog.text.count(
            "Keeping the running configuration") >= len(running))
        assert "diskimages[0].env-vars.DIB_DEBUG_TRACE: expected str" in \
            caplog.text
        assert [w.config for w in builder.workers] == running
        assert builder.zk_client.connected
    finally:
        builder.stop()
        builder.join()


def test_config_change_updates_registered_labels(launcher_factory, zuul,
                                                 tmp_path):
    launcher = launcher_factory()
    registry = launcher.services.registry

    def labels():
        return [sorted(p.supported_labels or ()) for p in registry.pools()
                if p.provider_name == "fake"]
    wait_for(lambda: labels() == [["large", "small"]])
    path = tmp_path / "nodepool-0.yaml"
    text = path.read_text()
    text = text.replace("  - name: large\n",
                        "  - name: large\n  - name: extra\n", 1)
    text = text.replace("          - name: small\n",
                        "          - name: small\n          - name: extra\n")
    path.write_text(text)
    os.utime(path, (time.time() + 5, time.time() + 5))
    wait_for(lambda: labels() == [["extra", "large", "small"]], timeout=30,
             message="pool component still lists the old labels")
