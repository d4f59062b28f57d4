#!/usr/bin/env python3
# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Measure what an idle launcher asks of ZooKeeper.

One in-process launcher (the test driver, nothing requested) on a real
ZooKeeper; after it settled, every request its client sends during the
measuring window is counted by type and kind of path.  Prints requests
per second (kazoo's session pings apart).

Uses the ZooKeeper started by tools/test-setup.sh when it runs, otherwise
starts a private one.  Usage: tools/bench_idle.py [--seconds 60]
"""

import argparse
import collections
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nodepool.launcher.server import NodePoolLauncher  # noqa: E402
from tests.fakes import test_driver  # noqa: E402
from tests.fakes.scanner import FakeScanner  # noqa: E402
from tests.fakes.test_driver import FakeCloud  # noqa: E402
from tests.fixtures import zkserver  # noqa: E402
from tools.bench_launcher import CONFIG, CountingClient  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=5.0)
    args = parser.parse_args()
    test_driver.register()
    FakeCloud.reset_all()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml",
                                     delete=False) as f:
        f.write(CONFIG)
    with zkserver.scratch_hosts("bench-idle") as hosts:
        zk = CountingClient(hosts, timeout=30)
        zk.connect()
        launcher = NodePoolLauncher(f.name, zk_client=zk,
                                    scanner=FakeScanner())
        try:
            launcher.start()
            launcher.ready.wait(60)
            time.sleep(args.settle)
            before = collections.Counter(zk.by_kind)
            pings = zk.pings
            time.sleep(args.seconds)
            ops = zk.by_kind - before
            pings = zk.pings - pings
        finally:
            launcher.stop()
            launcher.join()
            zk.disconnect()
            os.unlink(f.name)
    total = sum(ops.values())
    print("idle launcher, %.0f s: %d ZooKeeper requests, %.3f per second"
          % (args.seconds, total, total / args.seconds))
    for (name, kind), count in ops.most_common():
        print("  %-14s %-22s %d" % (name, kind, count))
    print("  (and %d session pings, not counted above)" % pings)


if __name__ == "__main__":
    main()
