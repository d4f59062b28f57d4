#!/usr/bin/env python3
# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Soak a launcher under a big ZooKeeper tree.

Before the launcher starts, ZooKeeper gets ``--nodes`` node records (half
``ready``, half ``in-use``) of a provider another launcher runs, and
``--pending`` requests for a label only that other launcher's pool
serves (its pool record is registered here), so they stay pending
(``requested``; or, with ``--pending-state pending``, accepted: in state
``pending`` and locked by that launcher's session).  The
launcher under test (a separate process; the test driver, instances
running on the first step) serves label ``small``.  Then, for
``--minutes``, a new ``small`` request every few seconds, accepted and
returned at once.  Printed: the launcher's start time (cache sync
included), each request's time to fulfilled, the launcher's RSS over
time, and its ZooKeeper requests per second while idle, with what it
asked by request type and kind of path (kazoo's session pings apart).  An
idle window starts once the returned node's record is gone (its deletion
finished) and ``--grace`` seconds more have passed, and lasts ``--gap``
seconds.  The default grace covers the last write a request causes: its
pool's ``waiting`` list, rewritten at most every
``WaitingPublisher.INTERVAL`` seconds, may be due a few seconds after the
request was served.

Usage: tools/bench_soak.py [--nodes 10000] [--pending 1000] [--minutes 3]
                           [--pending-state requested|pending]
                           [--gap 10] [--grace 6]
"""

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kazoo.client import KazooClient  # noqa: E402

from bench_launcher import CountingClient  # noqa: E402
from nodepool.launcher.why import WaitingPublisher  # noqa: E402
from nodepool.zk.paths import node_path  # noqa: E402
from nodepool.zk.client import ZooKeeperClient  # noqa: E402
from nodepool.zk.components import PoolComponent  # noqa: E402
from tests.fixtures import zkserver  # noqa: E402
from tests.fixtures.zuul import ZuulClient  # noqa: E402

CONFIG = """
labels:
  - name: small
  - name: big
providers:
  - name: fake
    driver: test
    pools:
      - name: main
        max-servers: 1000
        labels:
          - name: small
"""


def launcher_process(hosts, commands, answers):
    """The launcher under test; answers ``counts`` and ``stop``."""
    from nodepool.launcher.server import Intervals, NodePoolLauncher
    from tests.fakes import test_driver
    from tests.fakes.scanner import FakeScanner
    from tests.fakes.test_driver import FakeCloud
    test_driver.register()
    FakeCloud.reset_all()
    FakeCloud.get("fake").create_steps = 1
    with tempfile.NamedTemporaryFile("w", suffix=".yaml",
                                     delete=False) as f:
        f.write(CONFIG)
    zk = CountingClient(hosts, timeout=30)
    zk.connect()
    started = time.monotonic()
    launcher = NodePoolLauncher(f.name, zk_client=zk, intervals=Intervals(),
                                scanner=FakeScanner())
    launcher.start()
    launcher.ready.wait(300)
    answers.put(("started", time.monotonic() - started))
    while True:
        command = commands.get()
        if command == "counts":
            answers.put(("counts", dict(zk.by_kind, pings=zk.pings)))
        elif command == "stop":
            break
    launcher.stop()
    launcher.join()
    zk.disconnect()
    os.unlink(f.name)


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def wait_gone(kazoo, paths, timeout=120):
    """Wait until none of ``paths`` exists any more."""
    deadline = time.monotonic() + timeout
    while any(kazoo.exists(path) for path in paths):
        if time.monotonic() > deadline:
            raise TimeoutError("%s still there" % paths)
        time.sleep(0.05)


def print_breakdown(counts, seconds):
    """What the launcher asked while idle, by type and kind of path."""
    total = sum(counts.values())
    print("idle, all windows (%.0f s): %d requests, %.3f per second"
          % (seconds, total, total / seconds if seconds else 0.0))
    for (name, kind), count in counts.most_common():
        print("  %-14s %-22s %6d  %.3f/s" % (name, kind, count,
                                             count / seconds))


def populate(kazoo, nodes, pending, state="requested"):
    """Write the records, pipelined; return the ids of the requests."""
    now = time.time()
    results = []
    for i in range(nodes):
        record = {"state": "ready" if i % 2 else "in-use",
                  "provider": "elsewhere", "pool": "main",
                  "type": ["other"], "external_id": "i-%d" % i,
                  "interface_ip": "203.0.113.%d" % (i % 250 + 1),
                  "state_time": now, "created_time": now}
        if i % 2 == 0:
            record["allocated_to"] = "100-%010d" % i
        results.append(kazoo.create_async(
            "/nodepool/nodes/", json.dumps(record).encode(),
            sequence=True))
        if len(results) >= 500:
            for r in results:
                r.get()
            results = []
    for i in range(pending):
        request = {"state": state, "node_types": ["big"],
                   "requestor": "soak", "declined_by": [],
                   "state_time": now, "created_time": now,
                   "event_id": "soak-%d" % i, "reuse": True}
        results.append(kazoo.create_async(
            "/nodepool/requests/100-", json.dumps(request).encode(),
            sequence=True))
    return [r.get().rpartition("/")[2] for r in results
            if r.get().startswith("/nodepool/requests/")]


def hold_locks(kazoo, request_ids):
    """Lock the requests in ``kazoo``'s session (one contender each, as
    the lock recipe makes), as the launcher handling them would."""
    results = [kazoo.create_async(
        "/nodepool/requests-lock/%s/%s__lock__" % (request_id,
                                                   uuid.uuid4().hex),
        ephemeral=True, sequence=True, makepath=True)
        for request_id in request_ids]
    for r in results:
        r.get()


def main():
    import multiprocessing
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10000)
    parser.add_argument("--pending", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--pending-state", default="requested",
                        choices=("requested", "pending"),
                        help="the waiting requests' state: pending ones "
                        "are locked by the other launcher's session")
    parser.add_argument("--gap", type=float, default=10.0,
                        help="seconds of each idle window")
    parser.add_argument("--grace", type=float,
                        default=WaitingPublisher.INTERVAL + 1.0,
                        help="seconds between a node's deletion and the "
                        "start of the idle window")
    args = parser.parse_args()
    with zkserver.scratch_hosts("soak") as hosts:
        kazoo = KazooClient(hosts=hosts)
        kazoo.start(30)
        for path in ("/nodepool/nodes", "/nodepool/requests"):
            kazoo.ensure_path(path)
        request_ids = populate(kazoo, args.nodes, args.pending,
                               args.pending_state)
        other = ZooKeeperClient(hosts, timeout=30)
        other.connect()
        if args.pending_state == "pending":
            hold_locks(other.kazoo, request_ids)
        pool = PoolComponent(other, hostname="other-launcher")
        pool.update(id="other-launcher-elsewhere-main", name="main",
                    provider_name="elsewhere", supported_labels=["big"],
                    state="running")
        pool.register()
        ctx = multiprocessing.get_context("spawn")
        commands, answers = ctx.Queue(), ctx.Queue()
        proc = ctx.Process(target=launcher_process,
                           args=(hosts, commands, answers))
        proc.start()
        _, start_time = answers.get(timeout=600)
        print("%d node records, %d pending requests; launcher ready after "
              "%.1f s, RSS %.0f MB"
              % (args.nodes, args.pending, start_time, rss_mb(proc.pid)))
        zuul_zk = ZooKeeperClient(hosts, timeout=30)
        zuul_zk.connect()
        zuul = ZuulClient(zuul_zk)
        latencies, rss, idle_rates = [], [], []
        idle_total, idle_seconds, pings = collections.Counter(), 0.0, 0
        deadline = time.monotonic() + args.minutes * 60
        while time.monotonic() < deadline:
            submitted = time.monotonic()
            request = zuul.submit(["small"])
            done = zuul.wait_for_request(request, timeout=120)
            latencies.append(time.monotonic() - submitted)
            nodes = zuul.accept_nodes(done)
            zuul.return_nodes(nodes)
            wait_gone(zuul_zk.kazoo, [node_path(n.id) for n in nodes])
            time.sleep(args.grace)  # the cache events of the delete settle
            commands.put("counts")
            before = collections.Counter(answers.get(timeout=60)[1])
            window = time.monotonic()
            time.sleep(args.gap)
            commands.put("counts")
            after = collections.Counter(answers.get(timeout=60)[1])
            seconds = time.monotonic() - window
            idle = after - before
            pings += idle.pop("pings", 0)
            idle_total.update(idle)
            idle_seconds += seconds
            idle_rates.append(sum(idle.values()) / seconds)
            rss.append(rss_mb(proc.pid))
        commands.put("stop")
        proc.join(120)
        zuul.close()
        zuul_zk.disconnect()
        pool.unregister()
        other.disconnect()
        kazoo.stop()
        kazoo.close()
    print("requests: %d; time to fulfilled p50 %.3f s, max %.3f s"
          % (len(latencies), statistics.median(latencies), max(latencies)))
    print("launcher RSS MB: first %.0f, last %.0f, max %.0f"
          % (rss[0], rss[-1], max(rss)))
    print("idle ZooKeeper requests/s between requests: median %.2f, "
          "max %.2f" % (statistics.median(idle_rates), max(idle_rates)))
    print_breakdown(idle_total, idle_seconds)
    print("  (and %d session pings, %.3f per second, not counted above)"
          % (pings, pings / idle_seconds))


if __name__ == "__main__":
    main()
