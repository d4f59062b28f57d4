# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""tools/chaos.py runs: the quick ZooKeeper restart row (about 15 s), and
Ctrl-C leaves no process behind.  The other rows take minutes (session
expiry, kill -9 and leak cleanup wait for the launcher's 60 s cleanup
interval); they are run by hand."""

import json
import os
import signal
import subprocess
import sys

from tests.fixtures.waits import wait_for

TOOL = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "tools", "chaos.py")


def _children(pid):
    """Pids of the live processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _running_with(text):
    return [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
            if text in _cmdline(pid)]


def test_quick_zk_restart_row(tmp_path):
    # ZooKeeper stopped with launches in flight and started again: kazoo
    # goes SUSPENDED, then CONNECTED with the same session.  Every request
    # is fulfilled and everything is cleaned up afterwards.
    results = tmp_path / "results.json"
    workdir = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, TOOL, "--quick", "--scenarios", "zk-restart",
         "--workdir", str(workdir), "--json", str(results)],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [row] = json.loads(results.read_text())
    assert row["scenario"] == "zk-restart"
    summary = {key: row[key] for key in (
        "submitted", "fulfilled", "failed", "hung", "bad", "leaked", "left")}
    assert summary == {"submitted": 5, "fulfilled": 5, "failed": 0,
                       "hung": 0, "bad": 0, "leaked": 0, "left": 0}, (
        proc.stdout)
    assert row["clean"] is not None
    # The table: a header, a rule, then the row.
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines)
                  if line.startswith("scenario "))
    assert lines[header + 2].split()[:9] == [
        "zk-restart", "1", "5", "5", "0", "0", "0", "0", "0"]
    # ZooKeeper and the launcher name files of the work dir.
    assert _running_with(str(workdir)) == []


def test_interrupt_stops_every_process(tmp_path):
    workdir = tmp_path / "work"
    proc = subprocess.Popen(
        [sys.executable, TOOL, "--scenarios", "baseline", "--requests", "2",
         "--settle", "120", "--workdir", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # ZooKeeper, moto_server and the launcher are its children; the
        # launcher starts last, then the tool settles for two minutes.
        def launcher_up():
            children = _children(proc.pid)
            if any("nodepool-launcher" in _cmdline(pid) for pid in children):
                return children
            return None
        children = wait_for(launcher_up, timeout=120, interval=0.1)
        assert len(children) >= 3, [_cmdline(pid) for pid in children]
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=90)
        assert proc.returncode == 130, output
        wait_for(lambda: not any(_alive(pid) for pid in children),
                 timeout=30, message="left running: %s" % [
                     _cmdline(pid) for pid in children if _alive(pid)])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
