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
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kazoo.client import KazooClient  # noqa: E402

from nodepool.zk.client import ZooKeeperClient  # noqa: E402
from tests.fakes.aws_proxy import (  # noqa: E402
    AwsProxy, MotoServer, free_port)
from tests.fixtures import zkserver  # noqa: E402
from tests.fixtures.zuul import ZuulClient  # noqa: E402

REGION = "us-west-2"
IMAGE_ID = "ami-03cf127a"  # in the small AMI set of tests.fakes.aws
SETTLE = 5.0

CONFIG = """
labels:
  - name: small
providers:
  - name: ec2
    driver: aws
    region-name: {region}
    rate: {rate}
    cloud-images:
      - name: base
        username: ubuntu
        image-id: {image}
    pools:
      - name: main
        max-servers: 1000
        host-key-checking: false
        labels:
          - name: small
            cloud-image: base
            instance-type: t3.medium
            key-name: bench
"""


class ZooKeeper:
    """The test ZooKeeper (tools/test-setup.sh) or a private one."""

    def __init__(self):
        self.server = None
        state = zkserver.recorded_server()
        if state is None:
            directory = tempfile.mkdtemp(prefix="bench-aws-zk-")
            certs = zkserver.make_certs(os.path.join(directory, "certs"))
            self.server = zkserver.ZooKeeperServer(
                os.path.join(directory, "zk"), certs=certs)
            self.server.start()
            state = {"host": self.server.host,
                     "port": self.server.client_port,
                     "secure_port": self.server.secure_port,
                     "certs": certs}
        self.state = state

    @property
    def plain(self):
        return "%s:%d" % (self.state["host"], self.state["port"])

    def stop(self):
        if self.server is not None:
            self.server.stop()


def launcher_env(proxy_url):
    env = dict(os.environ)
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION=REGION, AWS_ENDPOINT_URL=proxy_url)
    env.pop("AWS_PROFILE", None)
    return env


def start_launcher(config_path, log_path, proxy_url, workdir):
    binary = os.path.join(os.path.dirname(sys.executable),
                          "nodepool-launcher")
    pidfile = os.path.join(workdir, "launcher.pid")
    with open(log_path, "w") as out:
        return subprocess.Popen(
            [binary, "-d", "-c", config_path, "-p", pidfile],
            stdout=out, stderr=subprocess.STDOUT,
            env=launcher_env(proxy_url))


def stop_launcher(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def live_instances(moto_url):
    import boto3
    ec2 = boto3.client("ec2", endpoint_url=moto_url, region_name=REGION,
                       aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    alive = []
    for reservation in ec2.describe_instances()["Reservations"]:
        for instance in reservation["Instances"]:
            if instance["State"]["Name"] != "terminated":
                alive.append(instance["InstanceId"])
    return alive


def run_rate(zk, moto, proxy, rate, count, workdir):
    chroot = "/bench-aws-%s" % uuid.uuid4().hex
    admin = KazooClient(hosts=zk.plain)
    admin.start(timeout=30)
    admin.ensure_path(chroot)
    config_path = os.path.join(workdir, "nodepool-%s.yaml" % rate)
    with open(config_path, "w") as f:
        f.write(zkserver.client_config(
            zk.state["host"], zk.state["secure_port"], chroot,
            zk.state["certs"], web_port=free_port()))
        f.write(CONFIG.format(region=REGION, rate=rate, image=IMAGE_ID))
    moto.reset()
    log_path = os.path.join(workdir, "launcher-%s.log" % rate)
    proc = start_launcher(config_path, log_path, proxy.url, workdir)
    zuul_zk = ZooKeeperClient(zk.plain + chroot, timeout=30)
    zuul_zk.connect()
    zuul = ZuulClient(zuul_zk)
    try:
        # Wait for the pool worker to register before timing anything.
        deadline = time.monotonic() + 60
        while not (admin.exists(chroot + "/nodepool/components/pool")
                   and admin.get_children(
                       chroot + "/nodepool/components/pool")):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("launcher did not start; see %s"
                                   % log_path)
            time.sleep(0.1)
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
