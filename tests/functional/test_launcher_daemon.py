# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""nodepool-launcher as a real process: start, register, signals, stop."""

import json
import os
import signal
import subprocess
import sys

from tests.fixtures import zkserver
from tests.fixtures.waits import wait_for


def write_config(path, zk_server, chroot):
    path.write_text(zkserver.client_config(
        zk_server.host, zk_server.secure_port, chroot, zk_server.certs)
        + "labels: []\nproviders: []\n")


def test_daemon_lifecycle(tmp_path, zk_server, zk_chroot, zk_client):
    config = tmp_path / "nodepool.yaml"
    write_config(config, zk_server, zk_chroot)
    pidfile = tmp_path / "launcher.pid"
    log = tmp_path / "launcher.log"
    launcher = os.path.join(os.path.dirname(sys.executable),
                            "nodepool-launcher")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [launcher, "-d", "--no-webapp", "-c", str(config), "-p",
             str(pidfile)],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        kazoo = zk_client.kazoo
        path = "/nodepool/components/launcher"

        def running():
            if not kazoo.exists(path):
                return False
            for child in kazoo.get_children(path):
                data = json.loads(kazoo.get(path + "/" + child)[0])
                if data["state"] == "running":
                    return True
            return False
        wait_for(running, timeout=60)
        assert int(pidfile.read_text()) == proc.pid
        proc.send_signal(signal.SIGUSR2)
        wait_for(lambda: "Thread stacks" in log.read_text())
        assert "NodePool" in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not pidfile.exists()
        wait_for(lambda: not kazoo.get_children(path))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
