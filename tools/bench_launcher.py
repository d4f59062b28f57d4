#!/usr/bin/env python3
# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Benchmark one launcher serving node requests with zero cloud latency.

A real ZooKeeper, one in-process launcher with the test driver (instances
run on the first state-machine step), and a Zuul-like client in a second
process that submits N one-node requests at once, then accepts and returns
each node as soon as its request is fulfilled.  Prints requests/s,
request -> fulfilled p50/p95, the launcher's CPU time per node lifecycle
and its ZooKeeper operations per node lifecycle, by operation and by
operation and kind of path.

The CPU figure is this process's user + system time (getrusage) from
launcher ready until every node record is deleted, divided by the number
of requests; the Zuul side runs in its own process and is not counted.
``--profile`` runs the same span under yappi (CPU clock, all threads) and
prints the functions with the most own time; the profiler inflates the
CPU figure, so read the two on separate runs.

Usage: tools/bench_launcher.py [--requests 500] [--intervals default|fast]
                               [--profile [N]]
"""

import argparse
import collections
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import threading
import time


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nodepool.launcher.server import Intervals, NodePoolLauncher  # noqa
from nodepool.zk.client import ZooKeeperClient  # noqa: E402
from tests.fakes import test_driver  # noqa: E402
from tests.fakes.scanner import FakeScanner  # noqa: E402
from tests.fakes.test_driver import FakeCloud  # noqa: E402
from tests.fixtures import zkserver  # noqa: E402
from tests.fixtures.zuul import ZuulClient  # noqa: E402

CONFIG = """
labels:
  - name: small
providers:
  - name: fake
    driver: test
    pools:
      - name: main
        max-servers: 10000
        labels:
          - name: small
"""


# Request types that change ZooKeeper (the rest read).
WRITES = frozenset(("Create", "Create2", "SetData", "Delete", "Transaction",
                    "SetACL"))


def path_kind(path):
    """What a znode path is, for the per-kind counts: ``node``,
    ``node-lock``, ``request``, ``request-lock``, ``component``..."""
    if not path:
        return "-"
    parts = [p for p in path.split("/") if p]
    if "nodepool" not in parts:
        return "other"
    parts = parts[parts.index("nodepool"):]  # past the chroot
    if len(parts) < 2:
        return "other"
    kind = {"nodes": "node", "requests": "request",
            "requests-lock": "request-lock", "components": "component",
            "images": "image"}.get(parts[1], parts[1])
    if kind == "request-lock":
        return kind
    if "lock" in parts[3:] or "lock" in parts[2:3]:
        return kind + "-lock"
    if len(parts) == 2:
        return kind + " (root)"
    return kind


def request_kind(request):
    """The path kind of a request; for a transaction, its operations and
    their path kinds (``Create node-lock + SetData node``)."""
    operations = getattr(request, "operations", None)
    if operations is None:
        return path_kind(getattr(request, "path", None))
    return " + ".join("%s %s" % (type(op).__name__.replace("Version", ""),
                                 path_kind(op.path)) for op in operations)


class CountingClient(ZooKeeperClient):
    """Counts every request the kazoo client sends, by type and by
    (type, path kind); and apart, in ``pings``, the session heartbeats
    kazoo sends when nothing else was sent for a third of the session
    timeout."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.counts = collections.Counter()
        self.by_kind = collections.Counter()
        self.pings = 0
        connection = self.kazoo._connection
        send_ping = connection._send_ping

        def ping(*args):
            self.pings += 1
            return send_ping(*args)
        connection._send_ping = ping
        original = self.kazoo._call

        def counted(request, async_object):
            name = type(request).__name__
            self.counts[name] += 1
            self.by_kind[(name, request_kind(request))] += 1
            return original(request, async_object)
        self.kazoo._call = counted


def serve_requests(zuul, count, timeout=600):
    """Submit ``count`` one-node requests at once; accept and return each
    node as soon as its request is fulfilled; wait until every node
    record is gone.  Returns ``(elapsed, lifecycle, latencies, handed)``:
    seconds until all were fulfilled and until all nodes were deleted,
    the sorted request -> fulfilled latencies, and how often each node
    id was handed out."""
    latencies, handed = [], collections.Counter()
    lock = threading.Lock()

    def serve(request, submitted):
        done = zuul.wait_for_request(request, timeout=timeout)
        fulfilled = time.monotonic()
        nodes = zuul.accept_nodes(done)
        with lock:
            latencies.append(fulfilled - submitted)
            handed.update(node.id for node in nodes)
        zuul.return_nodes(nodes)

    start = time.monotonic()
    threads = []
    for _ in range(count):
        request = zuul.submit(["small"])
        thread = threading.Thread(target=serve,
                                  args=(request, time.monotonic()))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    # Wait until every used node is deleted, to count the whole lifecycle.
    while zuul.kazoo.get_children("/nodepool/nodes"):
        time.sleep(0.05)
    return elapsed, time.monotonic() - start, sorted(latencies), handed


def zuul_side(hosts, count, results, tls_args=None):
    """Play Zuul in its own process: submit, accept, return, time it."""
    zuul_zk = ZooKeeperClient(hosts, timeout=30, **(tls_args or {}))
    zuul_zk.connect()
    zuul = ZuulClient(zuul_zk)
    elapsed, lifecycle, latencies, _ = serve_requests(zuul, count)
    zuul.close()
    zuul_zk.disconnect()
    results.put((elapsed, lifecycle, latencies))


def cpu_seconds():
    """(user, system) CPU seconds this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


class Profiler:
    """yappi over every thread, CPU clock; a no-op when not asked for."""

    def __init__(self, top):
        self.top = top
        self.yappi = None
        if top:
            import yappi
            self.yappi = yappi

    def start(self):
        if self.yappi:
            self.yappi.set_clock_type("cpu")
            self.yappi.start(builtins=True)

    def stop(self):
        if self.yappi:
            self.yappi.stop()

    def report(self, count):
        if not self.yappi:
            return
        stats = self.yappi.get_func_stats()
        stats.sort("tsub", "desc")
        print("profile, top %d by own CPU time (ms per node; calls per "
              "node):" % self.top)
        for entry in list(stats)[:self.top]:
            where = "%s:%d" % (os.path.relpath(entry.module)
                               if entry.module.startswith("/") else
                               entry.module, entry.lineno)
            print("  %8.3f %8.2f  %s  %s" % (
                entry.tsub * 1000 / count, entry.ncall / count,
                entry.name, where))


def run(hosts, count, intervals, profiler, tls_args=None):
    test_driver.register()
    FakeCloud.reset_all()
    FakeCloud.get("fake").create_steps = 1
    with tempfile.NamedTemporaryFile("w", suffix=".yaml",
                                     delete=False) as f:
        f.write(CONFIG)
    zk = CountingClient(hosts, timeout=30, **(tls_args or {}))
    zk.connect()
    launcher = NodePoolLauncher(f.name, zk_client=zk, intervals=intervals,
                                scanner=FakeScanner())
    launcher.start()
    launcher.ready.wait(60)
    profiler.start()
    cpu_start = cpu_seconds()
    baseline = collections.Counter(zk.counts)
    kinds_baseline = collections.Counter(zk.by_kind)
    results = multiprocessing.Queue()
    zuul = multiprocessing.Process(target=zuul_side,
                                   args=(hosts, count, results, tls_args))
    zuul.start()
    elapsed, lifecycle, latencies = results.get()
    cpu = [end - start for start, end in zip(cpu_start, cpu_seconds())]
    profiler.stop()
    zuul.join()
    ops = zk.counts - baseline
    kinds = zk.by_kind - kinds_baseline
    launcher.stop()
    launcher.join()
    zk.disconnect()
    os.unlink(f.name)
    return elapsed, lifecycle, latencies, ops, kinds, cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--intervals", choices=("default", "fast"),
                        default="default")
    parser.add_argument("--profile", type=int, nargs="?", const=25,
                        default=0, metavar="N",
                        help="profile with yappi and print the top N "
                        "functions by own CPU time (default 25)")
    parser.add_argument("--tls", action="store_true",
                        help="connect over ZooKeeper's TLS port")
    args = parser.parse_args()
    intervals = Intervals() if args.intervals == "default" else Intervals(
        main=0.1, pool=0.05, runner=0.02, deleted_nodes=0.1)
    profiler = Profiler(args.profile)
    with zkserver.scratch_chroot("bench", tls=args.tls) as scratch:
        elapsed, lifecycle, lat, ops, kinds, cpu = run(
            scratch.hosts, args.requests, intervals, profiler,
            scratch.tls_args)
    n = args.requests
    print("requests: %d, intervals: %s, ZooKeeper over %s" % (
        n, args.intervals, "TLS" if args.tls else "TCP"))
    print("requests/s (submit -> all fulfilled): %.1f" % (n / elapsed))
    print("request -> fulfilled p50 %.3f s, p95 %.3f s" % (
        statistics.median(lat), lat[int(len(lat) * 0.95) - 1]))
    print("all nodes deleted after %.1f s" % lifecycle)
    print("launcher CPU per node: %.1f ms (user %.1f, system %.1f)%s" % (
        sum(cpu) * 1000 / n, cpu[0] * 1000 / n, cpu[1] * 1000 / n,
        " (under the profiler)" if args.profile else ""))
    total = sum(ops.values())
    print("launcher ZooKeeper operations per node lifecycle: %.1f" % (
        total / n))
    for name, value in ops.most_common():
        print("  %-28s %7.2f" % (name, value / n))
    writes = sum(v for k, v in ops.items() if k in WRITES)
    print("of which writes: %.1f" % (writes / n))
    print("by operation and path kind:")
    for (name, kind), value in sorted(kinds.items()):
        print("  %-12s %-22s %7.2f" % (name, kind, value / n))
    profiler.report(n)


if __name__ == "__main__":
    main()
