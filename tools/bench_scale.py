#!/usr/bin/env python3
# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Benchmark several launchers sharing one request stream on an ensemble.

A three-member ZooKeeper ensemble on loopback; 1, 2, 3... launcher
processes (each the real launcher with the test driver: instances run on
the first state-machine step, so ZooKeeper and the launchers are what is
measured); a Zuul-like client in this process submits N one-node
requests at once, accepts each node when its request is fulfilled and
returns it at once.  Two layouts:

* ``own``: each launcher has a provider of its own;
* ``shared``: all launchers serve the same provider (same config).

Each provider has ``max-servers`` (``--max-servers``): a watcher counts
the provider's live node records all along and reports the largest count
seen.  Printed per run: requests/s, request -> fulfilled p50/p95, the
largest node count of a provider against its max-servers, nodes handed to
two requests (must be 0), and the launchers' ZooKeeper requests (and
writes) per node lifecycle, summed over all launchers.

On a two-core machine the launchers share the cores with the ensemble:
throughput cannot add up there; the other columns are what must hold.

Usage: tools/bench_scale.py [--launchers 1,2,3] [--requests 300]
       [--max-servers 40] [--layouts own,shared]
"""

import argparse
import collections
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kazoo.client import KazooClient  # noqa: E402
from kazoo.exceptions import NoNodeError  # noqa: E402

from bench_launcher import (  # noqa: E402
    WRITES, CountingClient, serve_requests)
from nodepool.zk.client import ZooKeeperClient  # noqa: E402
from nodepool.zk.models import Node  # noqa: E402
from tests.fixtures import zkserver  # noqa: E402
from tests.fixtures.zuul import ZuulClient  # noqa: E402

PROVIDER = """
  - name: {name}
    driver: test
    pools:
      - name: main
        max-servers: {max_servers}
        labels:
          - name: small
"""


def config_text(providers, max_servers):
    return "labels:\n  - name: small\nproviders:" + "".join(
        PROVIDER.format(name=name, max_servers=max_servers)
        for name in providers)


def launcher_process(hosts, providers, max_servers, ready, stop, results):
    """One launcher in a process of its own; reports its ZooKeeper
    request counts (by type) when told to stop."""
    from nodepool.launcher.server import Intervals, NodePoolLauncher
    from tests.fakes import test_driver
    from tests.fakes.scanner import FakeScanner
    from tests.fakes.test_driver import FakeCloud
    test_driver.register()
    FakeCloud.reset_all()
    for name in providers:
        FakeCloud.get(name).create_steps = 1
    config = config_text(providers, max_servers)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml",
                                     delete=False) as f:
        f.write(config)
    zk = CountingClient(hosts, timeout=30)
    zk.connect()
    launcher = NodePoolLauncher(f.name, zk_client=zk, intervals=Intervals(),
                                scanner=FakeScanner())
    launcher.start()
    launcher.ready.wait(60)
    baseline = collections.Counter(zk.counts)
    kinds_baseline = collections.Counter(zk.by_kind)
    ready.set()
    stop.wait()
    counts = zk.counts - baseline
    kinds = zk.by_kind - kinds_baseline
    launcher.stop()
    launcher.join()
    zk.disconnect()
    os.unlink(f.name)
    results.put((dict(counts), dict(kinds)))


class Watcher:
    """Counts the live node records of each provider, keeping the most
    seen at once."""

    def __init__(self, hosts):
        self.kazoo = KazooClient(hosts=hosts)
        self.kazoo.start(30)
        self.most = collections.Counter()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.wait(0.05):
            try:
                ids = self.kazoo.get_children("/nodepool/nodes")
            except NoNodeError:
                continue
            pending = [self.kazoo.get_async("/nodepool/nodes/" + i)
                       for i in ids]
            live = collections.Counter()
            for result in pending:
                try:
                    data, _ = result.get()
                except NoNodeError:
                    continue
                if not data:
                    continue
                node = Node.from_bytes(data)
                if node.state != "deleted":
                    live[node.provider] += 1
            for provider, count in live.items():
                self.most[provider] = max(self.most[provider], count)

    def close(self):
        self._stop.set()
        self.thread.join()
        self.kazoo.stop()
        self.kazoo.close()


def run(ensemble_hosts, count, launchers, layout, max_servers):
    chroot = "/scale-%s-%d-%d" % (layout, launchers, int(time.time()))
    admin = KazooClient(hosts=ensemble_hosts)
    admin.start(30)
    admin.ensure_path(chroot)
    hosts = ensemble_hosts + chroot
    ctx = multiprocessing.get_context("spawn")
    stop, results = ctx.Event(), ctx.Queue()
    procs, readies = [], []
    for i in range(launchers):
        providers = ["p%d" % i] if layout == "own" else ["shared"]
        ready = ctx.Event()
        proc = ctx.Process(target=launcher_process, args=(
            hosts, providers, max_servers, ready, stop, results))
        proc.start()
        procs.append(proc)
        readies.append(ready)
    for ready in readies:
        if not ready.wait(120):
            raise SystemExit("a launcher did not start")
    watcher = Watcher(hosts)
    zuul_zk = ZooKeeperClient(hosts, timeout=30)
    zuul_zk.connect()
    zuul = ZuulClient(zuul_zk)
    elapsed, _, latencies, handed = serve_requests(zuul, count, timeout=900)
    stop.set()
    counts, kinds = collections.Counter(), collections.Counter()
    for _ in procs:
        launcher_counts, launcher_kinds = results.get(timeout=120)
        counts.update(launcher_counts)
        kinds.update(launcher_kinds)
    for proc in procs:
        proc.join(60)
    watcher.close()
    zuul.close()
    zuul_zk.disconnect()
    admin.delete(chroot, recursive=True)
    admin.stop()
    admin.close()
    return dict(
        elapsed=elapsed, p50=statistics.median(latencies),
        p95=latencies[int(len(latencies) * 0.95) - 1],
        most=max(watcher.most.values()) if watcher.most else 0,
        twice=sum(1 for n in handed.values() if n > 1),
        requests=sum(counts.values()) / count,
        writes=sum(v for k, v in counts.items() if k in WRITES) / count,
        kinds={k: v / count for k, v in kinds.items()})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launchers", default="1,2,3")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--max-servers", type=int, default=40)
    parser.add_argument("--layouts", default="own,shared")
    parser.add_argument("--detail", action="store_true",
                        help="print each run's requests per node by "
                        "operation and path kind")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="bench-scale-")
    ensemble = zkserver.Ensemble(directory).start()
    try:
        print("%d requests, max-servers %d per provider, 3-member ensemble"
              % (args.requests, args.max_servers))
        print("%-7s %-9s %10s %8s %8s %14s %6s %9s %8s" % (
            "layout", "launchers", "requests/s", "p50 s", "p95 s",
            "most/provider", "twice", "zk req/n", "writes/n"))
        for layout in args.layouts.split(","):
            for n in [int(x) for x in args.launchers.split(",")]:
                r = run(ensemble.hosts, args.requests, n, layout,
                        args.max_servers)
                print("%-7s %-9d %10.1f %8.2f %8.2f %10d/%-3d %6d %9.1f "
                      "%8.1f" % (
                          layout, n, args.requests / r["elapsed"], r["p50"],
                          r["p95"], r["most"], args.max_servers, r["twice"],
                          r["requests"], r["writes"]))
                if args.detail:
                    for (name, kind), value in sorted(
                            r["kinds"].items(), key=lambda kv: -kv[1]):
                        if value >= 0.05:
                            print("    %-12s %-40s %6.2f"
                                  % (name, kind, value))
                sys.stdout.flush()
    finally:
        ensemble.stop()


if __name__ == "__main__":
    main()
