#!/usr/bin/env python3
# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""A working nodepool on this machine, with nothing but loopback services.

Starts, each in a scratch directory:

* ZooKeeper on loopback, spoken to over TLS (certificates made here);
* moto_server, standing in for EC2;
* an OpenSSH server on 127.0.0.1, standing in for a static build host;
* ``nodepool-launcher`` with an AWS provider pointed at moto and a static
  provider for the sshd, both with ``min-ready`` labels.

Once the ready nodes are there it prints ``nodepool list`` and the web
app's ``/label-list`` and keeps running until Ctrl-C (or SIGTERM), then
stops everything it started and removes the scratch directory.

``--check`` stops right after printing (used by the test suite).
Run it through ``tools/demo.sh``, which installs what is missing first.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOP)

from tests.fakes.aws_proxy import MotoServer  # noqa: E402
from tests.fixtures import zkserver  # noqa: E402
from tests.fixtures.sshd import SshServer  # noqa: E402

REGION = "us-west-2"
IMAGE_ID = "ami-000c540e28953ace2"  # Amazon Linux, in moto's AMI set
MIN_READY = {"aws-small": 2, "static-host": 1}

CONFIG = """\
# Written by tools/demo.py.
zookeeper-servers:
  - host: {zk_host}
    port: {zk_port}
zookeeper-tls:
  ca: {ca}
  cert: {cert}
  key: {key}
webapp:
  port: {web_port}
  listen_address: 127.0.0.1

labels:
  - name: aws-small
    min-ready: {aws_ready}
  - name: static-host
    min-ready: {static_ready}

providers:
  - name: aws-demo
    driver: aws
    region-name: {region}
    rate: 10
    cloud-images:
      - name: amazon-linux
        image-id: {image}
        username: ec2-user
    pools:
      - name: main
        max-servers: 4
        # moto's instances have no reachable address to scan.
        host-key-checking: false
        labels:
          - name: aws-small
            cloud-image: amazon-linux
            instance-type: t3.small
            key-name: demo

  - name: static-demo
    driver: static
    pools:
      - name: main
        nodes:
          - name: 127.0.0.1
            labels: [static-host]
            username: zuul
            connection-port: {ssh_port}
            host-key-checking: true
            timeout: 10
"""


def say(message: str) -> None:
    print("demo: " + message, flush=True)


class DemoError(Exception):
    pass


class Demo:
    """Everything the demo runs; :meth:`stop` undoes :meth:`start`."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.bindir = os.path.dirname(sys.executable)
        self.zk = None
        self.moto = None
        self.sshd = None
        self.launcher = None
        self.web_port = None
        self.config_path = os.path.join(workdir, "nodepool.yaml")
        self.launcher_log = os.path.join(workdir, "launcher.log")

    # -- start --------------------------------------------------------------

    def start(self) -> None:
        say("starting ZooKeeper (TLS) on loopback")
        certs = zkserver.make_certs(os.path.join(self.workdir, "certs"))
        self.zk = zkserver.ZooKeeperServer(
            os.path.join(self.workdir, "zookeeper"), certs=certs)
        self.zk.start()

        say("starting moto_server as the EC2 cloud")
        self.moto = MotoServer().start()
        self._prepare_ec2()

        say("starting sshd on 127.0.0.1 as the static host")
        self.sshd = SshServer(os.path.join(self.workdir, "sshd")).start()

        self.web_port = zkserver.free_port()
        with open(self.config_path, "w") as f:
            f.write(CONFIG.format(
                zk_host=self.zk.host, zk_port=self.zk.secure_port,
                ca=certs["ca.pem"], cert=certs["client.crt"],
                key=certs["client.key"], web_port=self.web_port,
                aws_ready=MIN_READY["aws-small"],
                static_ready=MIN_READY["static-host"], region=REGION,
                image=IMAGE_ID, ssh_port=self.sshd.port))
        self._run_cli("config-validate")

        say("starting nodepool-launcher (log: %s)" % self.launcher_log)
        with open(self.launcher_log, "w") as log:
            self.launcher = subprocess.Popen(
                [os.path.join(self.bindir, "nodepool-launcher"), "-d",
                 "-c", self.config_path,
                 "-p", os.path.join(self.workdir, "launcher.pid")],
                stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self._aws_env(),
                start_new_session=True)

    def _aws_env(self) -> dict:
        env = dict(os.environ)
        env.update(AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo",
                   AWS_DEFAULT_REGION=REGION,
                   AWS_ENDPOINT_URL=self.moto.url)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN",
                     "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
            env.pop(name, None)
        return env

    def _prepare_ec2(self) -> None:
        import boto3
        ec2 = boto3.client("ec2", endpoint_url=self.moto.url,
                           region_name=REGION, aws_access_key_id="demo",
                           aws_secret_access_key="demo")
        ec2.create_key_pair(KeyName="demo")

    # -- wait and show --------------------------------------------------------

    def _get(self, path: str, accept: str = "text/plain") -> str:
        request = urllib.request.Request(
            "http://127.0.0.1:%d%s" % (self.web_port, path),
            headers={"Accept": accept})
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read().decode()

    def ready_counts(self) -> dict:
        counts = dict.fromkeys(MIN_READY, 0)
        for row in json.loads(self._get("/node-list", "application/json")):
            if row.get("state") == "ready":
                for label in row.get("label") or ():
                    if label in counts:
                        counts[label] += 1
        return counts

    def wait_ready(self, timeout: float) -> dict:
        say("waiting for %s" % ", ".join(
            "%d ready %s" % (n, label) for label, n in MIN_READY.items()))
        deadline = time.monotonic() + timeout
        counts = None
        while time.monotonic() < deadline:
            if self.launcher.poll() is not None:
                raise DemoError("nodepool-launcher exited with %s:\n%s" % (
                    self.launcher.returncode, self.log_tail()))
            try:
                counts = self.ready_counts()
            except OSError:
                counts = None  # the web app is not up yet
            if counts and all(counts[label] >= n
                              for label, n in MIN_READY.items()):
                return counts
            time.sleep(0.5)
        raise DemoError("no ready nodes after %ss (have %s):\n%s"
                        % (timeout, counts, self.log_tail()))

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.launcher_log) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def _run_cli(self, *args: str) -> str:
        result = subprocess.run(
            [os.path.join(self.bindir, "nodepool"), "-c", self.config_path]
            + list(args), capture_output=True, text=True,
            stdin=subprocess.DEVNULL)
        if result.returncode:
            raise DemoError("nodepool %s failed (%d): %s" % (
                " ".join(args), result.returncode,
                (result.stderr or result.stdout).strip()))
        return result.stdout

    def show(self) -> None:
        print("\n$ nodepool -c %s list" % self.config_path)
        print(self._run_cli("list"), flush=True)
        print("$ curl http://127.0.0.1:%d/label-list" % self.web_port)
        print(self._get("/label-list"), flush=True)

    def hints(self) -> None:
        nodepool = os.path.join(self.bindir, "nodepool")
        print("Nodepool is running.  Try, in another shell:\n"
              "  %s -c %s list --detail\n"
              "  %s -c %s request-list\n"
              "  curl http://127.0.0.1:%d/node-list\n"
              "  tail -f %s\n"
              "Press Ctrl-C here to stop everything."
              % (nodepool, self.config_path, nodepool, self.config_path,
                 self.web_port, self.launcher_log), flush=True)

    # -- stop -----------------------------------------------------------------

    def stop(self) -> None:
        if self.launcher is not None and self.launcher.poll() is None:
            say("stopping nodepool-launcher")
            self.launcher.send_signal(signal.SIGTERM)
            try:
                self.launcher.wait(60)
            except subprocess.TimeoutExpired:
                say("nodepool-launcher did not stop in 60 s; killing it")
                self.launcher.kill()
                self.launcher.wait()
        for name, service in (("sshd", self.sshd), ("moto_server", self.moto),
                              ("ZooKeeper", self.zk)):
            if service is not None:
                say("stopping %s" % name)
                service.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="stop after printing the listings")
    parser.add_argument("--timeout", type=float, default=180,
                        help="seconds to wait for the ready nodes")
    parser.add_argument("--keep", action="store_true",
                        help="keep the scratch directory (logs, config)")
    args = parser.parse_args(argv)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    workdir = tempfile.mkdtemp(prefix="nodepool-demo-")
    demo = Demo(workdir)
    status = 0
    try:
        demo.start()
        demo.wait_ready(args.timeout)
        demo.show()
        if not args.check:
            demo.hints()
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print(flush=True)
    except DemoError as e:
        say("failed: %s" % e)
        status = 1
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.stop()
        if args.keep or status:
            say("logs and config kept in %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    say("stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
