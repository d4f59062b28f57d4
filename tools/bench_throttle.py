#!/usr/bin/env python3
# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Benchmark fixed against adaptive API rates under an account limit.

A real ZooKeeper, ``nodepool-launcher`` as a separate process, and
moto_server behind a loopback proxy that delays RunInstances by 1.2 s and
every other call by 0.05 s, and that plays an account limit lower than the
provider's ``rate``: a token bucket over all EC2 calls (``--limit`` calls
per second, ``--burst`` at most); a call finding it empty is answered
``RequestLimitExceeded``.  For each mode (``adaptive-rate: false`` and
``true``), ``--requests`` one-node requests are submitted at once.

Prints per mode and run: the time from the first submit to the last
request done, the throttled calls (by action), the failed launch attempts
(from the launcher's log) and the failed requests.

Usage: tools/bench_throttle.py [--requests 40] [--rate 20] [--limit 4]
    [--burst 4] [--runs 1] [--modes fixed,adaptive]
"""

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kazoo.client import KazooClient  # noqa: E402

from launcher_bed import (  # noqa: E402
    ZooKeeper, aws_config, start_launcher, stop_launcher, wait_component,
    zk_config)
from nodepool.zk.client import ZooKeeperClient  # noqa: E402
from nodepool.zk.models import RequestState  # noqa: E402
from tests.fakes.aws_proxy import (  # noqa: E402
    AwsProxy, MotoServer, free_port)
from tests.fixtures.zuul import ZuulClient  # noqa: E402

# Seconds the launcher runs before the rush (caches warm, as in production).
SETTLE = 5.0
FAILED_ATTEMPT = "Launch attempt "


def failed_attempts(log_path: str) -> int:
    with open(log_path, errors="replace") as f:
        return sum(1 for line in f
                   if FAILED_ATTEMPT in line and " failed" in line)


def run_mode(zk, moto, proxy, args, adaptive, workdir, run):
    name = "%s-%d" % ("adaptive" if adaptive else "fixed", run)
    chroot = "/bench-throttle-%s" % uuid.uuid4().hex
    admin = KazooClient(hosts=zk.plain)
    admin.start(timeout=30)
    admin.ensure_path(chroot)
    config_path = os.path.join(workdir, "nodepool-%s.yaml" % name)
    with open(config_path, "w") as f:
        f.write(zk_config(zk.tls_servers, chroot, zk.state["certs"],
                          web_port=free_port()))
        f.write(aws_config(rate=args.rate, adaptive=adaptive))
    moto.reset()
    proxy.throttle(None)
    log_path = os.path.join(workdir, "launcher-%s.log" % name)
    proc = start_launcher(config_path, log_path, proxy.url, workdir)
    zuul_zk = ZooKeeperClient(zk.plain + chroot, timeout=30)
    zuul_zk.connect()
    zuul = ZuulClient(zuul_zk)
    try:
        wait_component(admin, chroot, "pool", proc, log_path)
        time.sleep(SETTLE)
        proxy.reset_counts()
        proxy.throttle(args.limit, args.burst)
        results = []
        lock = threading.Lock()

        def serve(request):
            done = zuul.wait_for_request(request, timeout=600)
            finished = time.monotonic()
            nodes = []
            if done.state == RequestState.FULFILLED:
                nodes = zuul.accept_nodes(done)
            with lock:
                results.append((finished, done.state, nodes))

        start = time.monotonic()
        threads = [threading.Thread(target=serve,
                                    args=(zuul.submit(["small"]),))
                   for _ in range(args.requests)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = max(r[0] for r in results) - start
        throttled = dict(proxy.throttled)
        calls = dict(proxy.counts)
        failed_requests = sum(1 for r in results
                              if r[1] != RequestState.FULFILLED)
        attempts = failed_attempts(log_path)
        # Clean up under the same limit (not measured).
        zuul.return_nodes([n for r in results for n in r[2]])
        deadline = time.monotonic() + 180
        while admin.get_children(chroot + "/nodepool/nodes") and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        return dict(name=name, elapsed=elapsed, throttled=throttled,
                    calls=calls, failed_requests=failed_requests,
                    failed_attempts=attempts, log=log_path)
    finally:
        proxy.throttle(None)
        zuul.close()
        zuul_zk.disconnect()
        stop_launcher(proc)
        admin.delete(chroot, recursive=True)
        admin.stop()
        admin.close()


def report(result, requests):
    throttled = result["throttled"]
    print("== %s ==" % result["name"])
    calls = result["calls"]
    print("  %d requests done in %.1f s; EC2 calls %d, throttled %d (%s)"
          % (requests, result["elapsed"], sum(calls.values()),
             sum(throttled.values()),
             ", ".join("%s %d" % kv for kv in sorted(throttled.items()))))
    print("  EC2 calls by action: %s" % ", ".join(
        "%s %d" % kv for kv in sorted(calls.items())))
    print("  failed launch attempts %d, failed requests %d" % (
        result["failed_attempts"], result["failed_requests"]))
    print("  launcher log: %s" % result["log"])
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--limit", type=float, default=4.0)
    parser.add_argument("--burst", type=int, default=4)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--modes", default="fixed,adaptive")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",")]
    if not set(modes) <= {"fixed", "adaptive"}:
        parser.error("modes are fixed and adaptive")
    workdir = tempfile.mkdtemp(prefix="bench-throttle-")
    print("rate %s, account limit %s calls/s (burst %d), %d requests" % (
        args.rate, args.limit, args.burst, args.requests))
    zk = ZooKeeper()
    moto = MotoServer().start()
    proxy = AwsProxy(moto.port, delays={"RunInstances": 1.2},
                     default_delay=0.05).start()
    try:
        for run in range(1, args.runs + 1):
            for mode in modes:
                report(run_mode(zk, moto, proxy, args, mode == "adaptive",
                                workdir, run), args.requests)
    finally:
        proxy.stop()
        moto.stop()
        zk.stop()


if __name__ == "__main__":
    main()
