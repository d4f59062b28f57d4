# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""nodepool-launcher as a real process: start, register, signals, stop,
pid file."""

import json
import os
import signal
import socket
import stat

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from nodepool.cmd import recorded_pid
from tests.fixtures import processes
from tests.fixtures.waits import wait_for


def launchers_running(kazoo):
    """How many launcher components registered in state running."""
    path = "/nodepool/components/launcher"
    try:
        children = kazoo.get_children(path)
    except NoNodeError:
        return 0
    count = 0
    for child in children:
        try:
            data, _ = kazoo.get(path + "/" + child)
        except NoNodeError:
            continue  # gone since the listing
        count += json.loads(data)["state"] == "running"
    return count


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
        # In the foreground there is no pid file (as in nodepool 11).
        assert not pidfile.exists()
        proc.send_signal(signal.SIGUSR2)
        wait_for(lambda: "Thread stacks" in log.read_text())
        assert "NodePool" in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert processes.exit_status(proc, log) == 0
        wait_for(lambda: not kazoo.get_children(
            "/nodepool/components/launcher"))
    finally:
        processes.stop(proc)


def test_two_foreground_launchers_share_a_pid_file_path(
        tmp_path, zk_server, zk_chroot, zk_client):
    config = processes.write_config(tmp_path / "nodepool.yaml",
                                    zk_server, zk_chroot)
    pidfile = tmp_path / "nodepool.pid"
    procs = []
    try:
        for index, option in enumerate(("-f", "-d")):
            procs.append(processes.start(
                "nodepool-launcher",
                [option, "--no-webapp", "-c", str(config),
                 "-p", str(pidfile)], tmp_path / ("launcher%d.log" % index)))
        wait_for(lambda: launchers_running(zk_client.kazoo) == 2,
                 timeout=60)
        assert all(proc.poll() is None for proc in procs)
        assert not pidfile.exists()
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        assert [proc.wait(60) for proc in procs] == [0, 0]
    finally:
        for proc in procs:
            processes.stop(proc)


def test_detached_daemon_pid_file(tmp_path, zk_server, zk_chroot,
                                  zk_client):
    config = processes.write_config(tmp_path / "nodepool.yaml",
                                    zk_server, zk_chroot)
    logconfig = tmp_path / "logging.yaml"
    logconfig.write_text(
        "version: 1\nhandlers:\n  file:\n    class: logging.FileHandler\n"
        "    filename: %s\nroot:\n  handlers: [file]\n  level: INFO\n"
        % (tmp_path / "daemon.log"))
    pidfile = tmp_path / "run" / "nodepool.pid"
    args = ["--no-webapp", "-c", str(config), "-l", str(logconfig),
            "-p", str(pidfile)]

    # A live process recorded in the pid file: refused before detaching.
    pidfile.parent.mkdir()
    pidfile.write_text("%d\n" % os.getpid())
    proc = processes.start("nodepool-launcher", args,
                           tmp_path / "refused.log")
    try:
        assert proc.wait(60) == 1
    finally:
        processes.stop(proc)
    assert "held by running process" in (
        tmp_path / "refused.log").read_text()
    assert recorded_pid(str(pidfile)) == os.getpid()

    # Gone: the detached daemon writes its own pid and removes it at exit.
    pidfile.unlink()
    proc = processes.start("nodepool-launcher", args,
                           tmp_path / "detach.log")
    daemon_pid = None
    try:
        assert proc.wait(60) == 0  # the first fork's parent leaves at once
        daemon_pid = wait_for(lambda: recorded_pid(str(pidfile)),
                              timeout=60)
        assert daemon_pid != proc.pid
        wait_for(lambda: launchers_running(zk_client.kazoo) == 1,
                 timeout=60)
        os.kill(daemon_pid, signal.SIGTERM)
        wait_for(lambda: not pidfile.exists(), timeout=60)
        wait_for(lambda: not zk_client.kazoo.get_children(
            "/nodepool/components/launcher"))
    finally:
        if daemon_pid is not None and recorded_pid(str(pidfile)):
            os.kill(daemon_pid, signal.SIGKILL)


def listening_tcp_ports(pid):
    """Ports of the TCP sockets in LISTEN state that ``pid`` holds."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with open("/proc/%d/net/%s" % (pid, table)) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_repl_on_private_unix_socket(tmp_path, zk_server, zk_chroot,
                                     zk_client):
    config = processes.write_config(tmp_path / "nodepool.yaml",
                                    zk_server, zk_chroot)
    repl = tmp_path / "run" / "launcher-repl.sock"
    log = tmp_path / "launcher.log"
    proc = processes.start("nodepool-launcher",
                           ["-d", "--no-webapp", "--repl", "--repl-socket",
                            str(repl), "-c", str(config)], log)
    try:
        wait_for(lambda: processes.component_running(zk_client.kazoo,
                                                     "launcher"),
                 timeout=60)
        # The log line follows the socket: wait for it, not the file.
        wait_for(lambda: "REPL listening on %s" % repl in log.read_text())
        assert stat.S_ISSOCK(repl.lstat().st_mode)
        assert stat.S_IMODE(repl.lstat().st_mode) == 0o600
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(30)
            conn.connect(str(repl))
            stream = conn.makefile("rwb")
            stream.write(b"import os\n"
                         b"print(type(service).__name__, os.getpid())\n")
            stream.flush()
            conn.shutdown(socket.SHUT_WR)
            answer = stream.read().decode()
        assert answer == "nodepool REPL\n>>> >>> NodePoolLauncher %d\n" \
            ">>> \n" % proc.pid
        # No TCP port at all (no web app here): in particular not 3000.
        assert listening_tcp_ports(proc.pid) == set()
        proc.send_signal(signal.SIGTERM)
        assert processes.exit_status(proc, log) == 0
        assert not repl.exists()
    finally:
        processes.stop(proc)


def test_sigterm_while_zookeeper_is_down(tmp_path, own_zk_server):
    """An operator stops the launcher during a ZooKeeper outage: it exits
    instead of waiting for ZooKeeper to delete its component record (the
    record is ephemeral and goes with the session)."""
    own_zk_server.start()
    config = processes.write_config(tmp_path / "nodepool.yaml",
                                    own_zk_server, "/np-sigterm")
    log = tmp_path / "launcher.log"
    proc = processes.start("nodepool-launcher",
                           ["-d", "--no-webapp", "-c", str(config)], log)
    try:
        watcher = KazooClient(hosts=own_zk_server.hosts + "/np-sigterm")
        watcher.start(30)
        try:
            wait_for(lambda: processes.component_running(
                watcher, "launcher"), timeout=60)
        finally:
            watcher.stop()
            watcher.close()
        own_zk_server.stop(kill=True)
        wait_for(lambda: "Connection dropped" in log.read_text(),
                 timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert processes.exit_status(proc, log) == 0
        assert "ZooKeeper is not connected" in log.read_text()
    finally:
        processes.stop(proc)
