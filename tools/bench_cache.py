#!/usr/bin/env python3
# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Benchmark the node tree cache against a real ZooKeeper.

(a) N node records written by another process while the cache runs: wall
    time and this process's CPU seconds until the cache holds all of them;
(b) initial synchronisation of a pre-populated tree of N nodes, each with
    its lock directory (as left behind by kazoo's Lock recipe);
(c) ZooKeeper reads the cache issued per record in both cases.

Uses the ZooKeeper started by tools/test-setup.sh when it runs, otherwise
starts a private one.  Usage: tools/bench_cache.py [--sizes 2000,10000]
"""

import argparse
import json
import multiprocessing
import os
import resource
import sys
import time

from kazoo.client import KazooClient

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nodepool.zk.cache import NodeCache  # noqa: E402
from nodepool.zk.client import ZooKeeperClient  # noqa: E402
from tests.fixtures import zkserver  # noqa: E402

NODE = json.dumps({
    "state": "ready", "state_time": 1700000000.0, "type": ["ubuntu-jammy"],
    "provider": "aws-us-east-1", "pool": "main", "cloud": "AWS",
    "region": "us-east-1", "az": "us-east-1a", "interface_ip": "203.0.113.5",
    "public_ipv4": "203.0.113.5", "private_ipv4": "10.0.0.5",
    "connection_port": 22, "ssh_port": 22, "connection_type": "ssh",
    "host_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample"],
    "username": "zuul", "launcher": "bench-PoolWorker.aws-main-0",
    "external_id": {"instance": "i-0123456789abcdef0"},
    "resources": {"cores": 2, "instances": 1, "ram": 8192},
}).encode()


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_nodes(hosts, count, with_locks):
    """Create ``count`` node records (and lock dirs), pipelined."""
    kazoo = KazooClient(hosts=hosts, timeout=30)
    kazoo.start(timeout=30)
    kazoo.ensure_path("/nodepool/nodes")
    batch = 500
    for start in range(0, count, batch):
        results = [kazoo.create_async("/nodepool/nodes/", NODE, sequence=True)
                   for _ in range(min(batch, count - start))]
        paths = [r.get() for r in results]
        if with_locks:
            for r in [kazoo.create_async(p + "/lock") for p in paths]:
                r.get()
    kazoo.stop()
    kazoo.close()


def bench_live(hosts, count):
    client = ZooKeeperClient(hosts, timeout=30)
    client.connect()
    cache = NodeCache(client).start()
    cache.ensure_ready(60)
    cpu0, t0 = cpu_seconds(), time.monotonic()
    writer = multiprocessing.Process(target=write_nodes,
                                     args=(hosts, count, False))
    writer.start()
    while len(cache.keys()) < count:
        time.sleep(0.005)
    elapsed, cpu = time.monotonic() - t0, cpu_seconds() - cpu0
    writer.join()
    ops = (cache.fetch_count, cache.list_count)
    cache.stop()
    client.disconnect()
    return elapsed, cpu, ops


def bench_initial_sync(hosts, count):
    writer = multiprocessing.Process(target=write_nodes,
                                     args=(hosts, count, True))
    writer.start()
    writer.join()
    client = ZooKeeperClient(hosts, timeout=30)
    client.connect()
    cpu0, t0 = cpu_seconds(), time.monotonic()
    cache = NodeCache(client).start()
    cache.ensure_ready(600)
    elapsed, cpu = time.monotonic() - t0, cpu_seconds() - cpu0
    assert len(cache.keys()) == count, len(cache.keys())
    ops = (cache.fetch_count, cache.list_count)
    cache.stop()
    client.disconnect()
    return elapsed, cpu, ops


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,10000")
    args = parser.parse_args()
    print("%-34s %8s %8s %7s %13s %13s" % (
        "scenario", "records", "wall s", "cpu s", "reads/record",
        "lists/record"))
    for count in [int(n) for n in args.sizes.split(",")]:
        for name, func in (("(a) live writes by another client",
                            bench_live),
                           ("(b) initial sync, with lock dirs",
                            bench_initial_sync)):
            with zkserver.scratch_hosts("bench") as hosts:
                elapsed, cpu, (reads, lists) = func(hosts, count)
            print("%-34s %8d %8.2f %7.2f %13.2f %13.2f" % (
                name, count, elapsed, cpu, reads / count, lists / count))


if __name__ == "__main__":
    main()
