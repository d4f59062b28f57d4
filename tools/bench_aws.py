#!/usr/bin/env python3
# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Benchmark the AWS driver end to end against a slow fake EC2.

A real ZooKeeper, ``nodepool-launcher`` as a separate process, and
moto_server behind a loopback proxy that delays RunInstances by 1.2 s and
every other call by 0.05 s and counts calls by action.  For each rate, 40
one-node requests are submitted at once; each node is accepted when its
request is fulfilled; once all are, every node is marked ``used`` at once.

Prints per rate: instances/s (first submit -> last fulfilled), request ->
fulfilled p50/p95, API calls by action, the time from marking the nodes
used until all node records are gone, the TerminateInstances calls, and
instances left running (leaks).

Usage: tools/bench_aws.py [--requests 40] [--rates 2,10]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kazoo.client import KazooClient  # noqa: E402

from launcher_bed import (  # noqa: E402
    ZooKeeper, aws_config, live_instances, start_launcher, stop_launcher,
    wait_component, zk_config)
from nodepool.zk.client import ZooKeeperClient  # noqa: E402
from tests.fakes.aws_proxy import (  # noqa: E402
    AwsProxy, MotoServer, free_port)
from tests.fixtures.zuul import ZuulClient  # noqa: E402

SETTLE = 5.0


def run_rate(zk, moto, proxy, rate, count, workdir):
    chroot = "/bench-aws-%s" % uuid.uuid4().hex
    admin = KazooClient(hosts=zk.plain)
    admin.start(timeout=30)
    admin.ensure_path(chroot)
    config_path = os.path.join(workdir, "nodepool-%s.yaml" % rate)
    with open(config_path, "w") as f:
        f.write(zk_config(zk.tls_servers, chroot, zk.state["certs"],
                          web_port=free_port()))
        f.write(aws_config(rate=rate))
    moto.reset()
    log_path = os.path.join(workdir, "launcher-%s.log" % rate)
    proc = start_launcher(config_path, log_path, proxy.url, workdir)
    zuul_zk = ZooKeeperClient(zk.plain + chroot, timeout=30)
    zuul_zk.connect()
    zuul = ZuulClient(zuul_zk)
    try:
        # Wait for the pool worker to register before timing anything.
        wait_component(admin, chroot, "pool", proc, log_path)
        # A production launcher has been up for a while when a rush of
        # requests comes: let it warm its quota and image caches first.
        time.sleep(SETTLE)
        proxy.reset_counts()
        latencies = []
        nodes = []
        lock = threading.Lock()

        def serve(request, submitted):
            done = zuul.wait_for_request(request, timeout=300)
            fulfilled = time.monotonic()
            accepted = zuul.accept_nodes(done)
            with lock:
                latencies.append(fulfilled - submitted)
                nodes.extend(accepted)
                last[0] = max(last[0], fulfilled)

        last = [0.0]
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
        elapsed = last[0] - start
        create_counts = dict(proxy.counts)
        backend = {action: statistics.mean(values) for action, values
                   in proxy.backend.items() if values}
        terminates_before = proxy.counts["TerminateInstances"]
        marked = time.monotonic()
        zuul.return_nodes(nodes)
        while admin.get_children(chroot + "/nodepool/nodes"):
            if time.monotonic() - marked > 120:
                break
            time.sleep(0.05)
        deleted_after = time.monotonic() - marked
        terminates = proxy.counts["TerminateInstances"] - terminates_before
        leaks = live_instances(moto.url)
        return dict(rate=rate, elapsed=elapsed, latencies=sorted(latencies),
                    create_counts=create_counts, backend=backend, counts=dict(proxy.counts),
                    deleted_after=deleted_after, terminates=terminates,
                    leaks=leaks, log=log_path)
    finally:
        zuul.close()
        zuul_zk.disconnect()
        stop_launcher(proc)
        admin.delete(chroot, recursive=True)
        admin.stop()
        admin.close()


def report(result, count):
    lat = result["latencies"]
    p95 = lat[max(0, int(len(lat) * 0.95) - 1)]
    print("== rate %s ==" % result["rate"])
    print("instances/s (first submit -> last fulfilled): %.2f  (%.1f s)" % (
        count / result["elapsed"], result["elapsed"]))
    print("request -> fulfilled p50 %.2f s, p95 %.2f s" % (
        statistics.median(lat), p95))
    print("API calls until all fulfilled, by action:")
    for action, value in sorted(result["create_counts"].items(),
                                key=lambda kv: -kv[1]):
        print("  %-28s %5d" % (action, value))
    print("mean moto time per call (on top of the injected delay): %s"
          % ", ".join("%s %.3fs" % kv for kv in sorted(
              result["backend"].items())))
    print("all %d nodes gone %.2f s after being marked used; "
          "TerminateInstances calls: %d" % (
              count, result["deleted_after"], result["terminates"]))
    print("API calls in total, by action: %s" % json.dumps(
        result["counts"], sort_keys=True))
    print("leaked instances: %d %s" % (len(result["leaks"]),
                                       result["leaks"][:5]))
    print("launcher log: %s" % result["log"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--rates", default="2,10")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-aws-")
    zk = ZooKeeper()
    moto = MotoServer().start()
    proxy = AwsProxy(moto.port, delays={"RunInstances": 1.2},
                     default_delay=0.05).start()
    try:
        for rate in args.rates.split(","):
            result = run_rate(zk, moto, proxy, float(rate), args.requests,
                              workdir)
            report(result, args.requests)
    finally:
        proxy.stop()
        moto.stop()
        zk.stop()


if __name__ == "__main__":
    main()
