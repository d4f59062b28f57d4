#!/usr/bin/env python3
# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Benchmark the node tree cache against a real ZooKeeper.

(a) N node records created by another process while the cache runs: wall
    time from the first write and this process's CPU seconds until the
    cache holds all of them, and the lag after the writer's last
    acknowledged write (the wall time is mostly the writer's own);
(b) initial synchronisation of a pre-populated tree of N nodes, each with
    its lock directory (as left behind by kazoo's Lock recipe);
(c) N records, already cached, each rewritten once by another process
    (pipelined): the lag from the writer's last acknowledged write to the
    cache holding the new data of every record (and wall time and this
    process's CPU seconds from the first write to then).

Each row also shows the ZooKeeper reads and child listings the cache issued
per record.  ``--tls`` runs every row over the server's TLS port as well
(both the cache and the writer).

Uses the ZooKeeper started by tools/test-setup.sh when it runs, otherwise
starts a private one.  Usage:
tools/bench_cache.py [--sizes 2000,10000] [--tls] [--runs 3]
"""

import argparse
import json
import multiprocessing
import os
import resource
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nodepool.zk.cache import NodeCache  # noqa: E402
from nodepool.zk.client import ZooKeeperClient  # noqa: E402
from tests.fixtures import zkserver  # noqa: E402

RECORD = {
    "state": "ready", "state_time": 1700000000.0, "type": ["ubuntu-jammy"],
    "provider": "aws-us-east-1", "pool": "main", "cloud": "AWS",
    "region": "us-east-1", "az": "us-east-1a", "interface_ip": "203.0.113.5",
    "public_ipv4": "203.0.113.5", "private_ipv4": "10.0.0.5",
    "connection_port": 22, "ssh_port": 22, "connection_type": "ssh",
    "host_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"],
    "username": "zuul", "launcher": "bench-PoolWorker.aws-main-0",
    "external_id": {"instance": "i-0123456789abcdef0"},
    "resources": {"cores": 2, "instances": 1, "ram": 8192},
}
NODE = json.dumps(RECORD).encode()
UPDATED = json.dumps(dict(RECORD, state="in-use",
                          state_time=1700000100.0)).encode()
ROOT = "/nodepool/nodes"
# Requests the writer keeps in flight.
WINDOW = 500


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def connect(scratch):
    client = ZooKeeperClient(scratch.hosts, timeout=30, **scratch.tls_args)
    client.connect(timeout=30)
    return client


def pipelined(calls):
    """Run the zero-argument async ``calls``, WINDOW at a time; results."""
    results = []
    for start in range(0, len(calls), WINDOW):
        pending = [call() for call in calls[start:start + WINDOW]]
        results.extend(r.get() for r in pending)
    return results


def write_nodes(scratch, count, with_locks, done=None):
    """Create ``count`` node records (and lock dirs); send the monotonic
    time of the last acknowledgement to ``done`` (CLOCK_MONOTONIC is
    system-wide on Linux)."""
    client = connect(scratch)
    kazoo = client.kazoo
    kazoo.ensure_path(ROOT)
    paths = pipelined([lambda: kazoo.create_async(ROOT + "/", NODE,
                                                  sequence=True)] * count)
    if with_locks:
        pipelined([lambda p=p: kazoo.create_async(p + "/lock")
                   for p in paths])
    if done is not None:
        done.send(time.monotonic())
    client.disconnect()


def update_nodes(scratch, done):
    """Rewrite every node record once; send the monotonic time of the last
    acknowledgement to ``done``."""
    client = connect(scratch)
    kazoo = client.kazoo
    names = kazoo.get_children(ROOT)
    pipelined([lambda n=n: kazoo.set_async(ROOT + "/" + n, UPDATED)
               for n in names])
    done.send(time.monotonic())
    client.disconnect()


def bench_live(scratch, count):
    client = connect(scratch)
    cache = NodeCache(client).start()
    cache.ensure_ready(60)
    receiver, sender = multiprocessing.Pipe(duplex=False)
    cpu0, t0 = cpu_seconds(), time.monotonic()
    writer = multiprocessing.Process(target=write_nodes,
                                     args=(scratch, count, False, sender))
    writer.start()
    while len(cache.keys()) < count:
        time.sleep(0.005)
    done_at, cpu = time.monotonic(), cpu_seconds() - cpu0
    last_ack = receiver.recv()
    writer.join()
    ops = (cache.fetch_count, cache.list_count)
    cache.stop()
    client.disconnect()
    return done_at - t0, done_at - last_ack, cpu, ops


def bench_initial_sync(scratch, count):
    writer = multiprocessing.Process(target=write_nodes,
                                     args=(scratch, count, True))
    writer.start()
    writer.join()
    client = connect(scratch)
    cpu0, t0 = cpu_seconds(), time.monotonic()
    cache = NodeCache(client).start()
    cache.ensure_ready(600)
    elapsed, cpu = time.monotonic() - t0, cpu_seconds() - cpu0
    assert len(cache.keys()) == count, len(cache.keys())
    ops = (cache.fetch_count, cache.list_count)
    cache.stop()
    client.disconnect()
    return elapsed, None, cpu, ops


def bench_update_lag(scratch, count):
    writer = multiprocessing.Process(target=write_nodes,
                                     args=(scratch, count, False))
    writer.start()
    writer.join()
    client = connect(scratch)
    cache = NodeCache(client).start()
    cache.ensure_ready(600)
    assert len(cache.keys()) == count, len(cache.keys())
    updated = set()
    all_updated = threading.Event()

    def listener(key, node, event_type):
        # Playback thread; cheaper than polling every record.
        if node is not None and node.stat.version > 0:
            updated.add(key)
            if len(updated) == count:
                all_updated.set()

    cache.add_listener(listener)
    fetches, lists = cache.fetch_count, cache.list_count
    receiver, sender = multiprocessing.Pipe(duplex=False)
    cpu0, t0 = cpu_seconds(), time.monotonic()
    writer = multiprocessing.Process(target=update_nodes,
                                     args=(scratch, sender))
    writer.start()
    all_updated.wait(600)
    done_at, cpu = time.monotonic(), cpu_seconds() - cpu0
    last_ack = receiver.recv()
    writer.join()
    assert all(n.stat.version > 0 for n in cache.values())
    ops = (cache.fetch_count - fetches, cache.list_count - lists)
    cache.stop()
    client.disconnect()
    return done_at - t0, done_at - last_ack, cpu, ops


SCENARIOS = (
    ("(a) creates by another client", bench_live),
    ("(b) initial sync, with lock dirs", bench_initial_sync),
    ("(c) updates by another client", bench_update_lag),
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,10000")
    parser.add_argument("--tls", action="store_true",
                        help="also run every row over TLS")
    parser.add_argument("--runs", type=int, default=1,
                        help="repeat every row this many times")
    args = parser.parse_args()
    print("%-35s %4s %7s %7s %7s %7s %13s %13s" % (
        "scenario", "port", "records", "wall s", "lag s", "cpu s",
        "reads/record", "lists/record"))
    for count in [int(n) for n in args.sizes.split(",")]:
        for name, func in SCENARIOS:
            for tls in (False, True) if args.tls else (False,):
                for _ in range(args.runs):
                    with zkserver.scratch_chroot("bench", tls) as scratch:
                        elapsed, lag, cpu, (reads, lists) = func(scratch,
                                                                 count)
                    print("%-35s %4s %7d %7.2f %7s %7.2f %13.2f %13.2f" % (
                        name, "tls" if tls else "tcp", count, elapsed,
                        "-" if lag is None else "%.2f" % lag, cpu,
                        reads / count, lists / count), flush=True)


if __name__ == "__main__":
    main()
