# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""nodepool-launcher as a real process: start, register, signals, stop."""

import signal

from tests.fixtures import processes
from tests.fixtures.waits import wait_for


def test_daemon_lifecycle(tmp_path, zk_server, zk_chroot, zk_client):
    config = processes.write_config(tmp_path / "nodepool.yaml",
                                    zk_server, zk_chroot)
    pidfile = tmp_path / "launcher.pid"
    log = tmp_path / "launcher.log"
    proc = processes.start("nodepool-launcher",
                           ["-d", "--no-webapp", "-c", str(config), "-p",
                            str(pidfile)], log)
    try:
        kazoo = zk_client.kazoo
        wait_for(lambda: processes.component_running(kazoo, "launcher"),
                 timeout=60)
        assert int(pidfile.read_text()) == proc.pid
        proc.send_signal(signal.SIGUSR2)
        wait_for(lambda: "Thread stacks" in log.read_text())
        assert "NodePool" in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not pidfile.exists()
        wait_for(lambda: not kazoo.get_children(
            "/nodepool/components/launcher"))
    finally:
        processes.stop(proc)
