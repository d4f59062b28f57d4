# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The README's demo (tools/demo.py, behind tools/demo.sh) runs here.

It starts its own ZooKeeper, moto_server, sshd and nodepool-launcher,
waits for the min-ready nodes, prints the listings and, on Ctrl-C, stops
everything and removes its scratch directory.
"""

import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from tests.fixtures.sshd import sshd_available

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

pytestmark = pytest.mark.skipif(not sshd_available(),
                                reason="OpenSSH server not installed")


class Output:
    """Collects a process's output lines; lets a test wait for one."""

    def __init__(self, stream):
        self.lines = []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(stream,),
                                       daemon=True)
        self.thread.start()

    def _read(self, stream):
        for line in stream:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()

    def wait_for(self, text, timeout):
        with self.changed:
            found = self.changed.wait_for(
                lambda: any(text in line for line in self.lines)
                or not self.thread.is_alive(), timeout=timeout)
            return found and any(text in line for line in self.lines)

    @property
    def text(self):
        with self.changed:
            return "\n".join(self.lines)


def live_processes_mentioning(text):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(
                    errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append((int(pid), cmdline))
    return found


def test_demo_runs_until_ctrl_c_and_cleans_up():
    proc = subprocess.Popen(
        [sys.executable, os.path.join(TOP, "tools", "demo.py"),
         "--timeout", "150"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        stdin=subprocess.DEVNULL, cwd=TOP, start_new_session=True)
    output = Output(proc.stdout)
    try:
        assert output.wait_for("Press Ctrl-C", timeout=200), output.text
        text = output.text
        workdir = re.search(r"(/\S+/nodepool-demo-[^/\s]+)/", text).group(1)
        assert os.path.isdir(workdir)
        # The operator's view: nodepool list with the ready nodes of both
        # providers, and the web app's label list.
        listing = text.split("$ nodepool", 1)[1].split("$ curl", 1)[0]
        assert "| ID " in listing and "| Provider " in listing
        rows = [line for line in listing.splitlines()
                if re.match(r"\| \d{10} ", line)]
        assert sum("aws-demo" in r and "aws-small" in r and "ready" in r
                   for r in rows) >= 2, listing
        assert sum("static-demo" in r and "static-host" in r
                   and "ready" in r for r in rows) == 1, listing
        labels = text.split("/label-list", 1)[1]
        assert "| aws-small " in labels and "| static-host " in labels
        assert live_processes_mentioning(workdir)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends
        returncode = proc.wait(120)
        output.thread.join(10)
    assert returncode == 0, output.text
    assert output.text.rstrip().endswith("demo: stopped"), output.text
    for name in ("nodepool-launcher", "sshd", "moto_server", "ZooKeeper"):
        assert "stopping %s" % name in output.text
    assert not os.path.exists(workdir)
    assert live_processes_mentioning(workdir) == []
