# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The test bed the AWS benchmarks share: ZooKeeper, a slow fake EC2 and
``nodepool-launcher`` as a separate process.

Imported by tools/bench_aws.py and tools/chaos.py (run as scripts, so this
directory is on ``sys.path``).  The pieces:

* :class:`ZooKeeper`: the server of tools/test-setup.sh, or a private TLS
  one when none runs (``private=True`` always starts one: a tool that
  stops or pauses the server must never do that to the shared one);
* :func:`aws_config`: the labels/providers part of a launcher config for
  one AWS provider on moto;
* :func:`zk_config`: the ``zookeeper-*`` part, for one or more servers;
* :func:`start_launcher`/:func:`stop_launcher`: the console script with
  the environment that points boto3 at the proxy;
* :func:`live_instances`: what is not terminated in moto.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOP)

from tests.fixtures import zkserver  # noqa: E402

REGION = "us-west-2"
IMAGE_ID = "ami-03cf127a"  # in the small AMI set of tests.fakes.aws

AWS_CONFIG = """
labels:
  - name: {label}
providers:
  - name: {provider}
    driver: aws
    region-name: {region}
    rate: {rate}{adaptive}
    cloud-images:
      - name: base
        username: ubuntu
        image-id: {image}
    pools:
      - name: main
        max-servers: {max_servers}
        host-key-checking: false
        labels:
          - name: {label}
            cloud-image: base
            instance-type: t3.medium
            key-name: bench
"""


def aws_config(rate=2.0, max_servers=1000, label="small", provider="ec2",
               adaptive=None):
    """The labels and providers of a launcher with one AWS pool on moto
    (``adaptive``: the provider's ``adaptive-rate``, default unset)."""
    extra = "" if adaptive is None else (
        "\n    adaptive-rate: %s" % ("true" if adaptive else "false"))
    return AWS_CONFIG.format(region=REGION, rate=rate, image=IMAGE_ID,
                             max_servers=max_servers, label=label,
                             provider=provider, adaptive=extra)


def zk_config(servers, chroot, certs, timeout=None, web_port=None):
    """The ``zookeeper-*`` (and optional ``webapp``) part of a config.

    ``servers`` is a list of ``(host, tls_port)``; every one is listed, so
    the launcher may connect to any member of an ensemble.
    """
    text = "zookeeper-servers:\n" + "".join(
        "  - host: %s\n    port: %d\n    chroot: %s\n" % (host, port, chroot)
        for host, port in servers)
    text += "zookeeper-tls:\n  ca: %s\n  cert: %s\n  key: %s\n" % (
        certs["ca.pem"], certs["client.crt"], certs["client.key"])
    if timeout is not None:
        text += "zookeeper-timeout: %s\n" % timeout
    if web_port is not None:
        text += "webapp:\n  port: %d\n  listen_address: 127.0.0.1\n" % (
            web_port)
    return text


class ZooKeeper:
    """The test ZooKeeper (tools/test-setup.sh) or a private TLS one.

    ``state`` describes it as tools/test-setup.sh records it (host, port,
    secure_port, certs); ``server`` is the private
    :class:`~tests.fixtures.zkserver.ZooKeeperServer` or ``None``.
    """

    def __init__(self, private=False, directory=None, certs=None):
        self.server = None
        state = None if private else zkserver.recorded_server()
        if state is None:
            directory = directory or tempfile.mkdtemp(prefix="bench-zk-")
            certs = certs or zkserver.make_certs(
                os.path.join(directory, "certs"))
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

    @property
    def tls_servers(self):
        return [(self.state["host"], self.state["secure_port"])]

    def stop(self):
        if self.server is not None:
            self.server.stop(kill=True)


def launcher_env(proxy_url):
    """The environment that makes boto3 in the launcher talk to the proxy.

    ``PYTHONPATH`` names this checkout first: the console script of a
    shared virtualenv would otherwise import whatever checkout the
    virtualenv was installed from.
    """
    env = dict(os.environ)
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION=REGION, AWS_ENDPOINT_URL=proxy_url,
               PYTHONPATH=os.pathsep.join(
                   [TOP] + [p for p in env.get("PYTHONPATH", "").split(
                       os.pathsep) if p]))
    env.pop("AWS_PROFILE", None)
    return env


def start_launcher(config_path, log_path, proxy_url, workdir, debug=True,
                   extra_args=(), intervals=None):
    """Start the launcher in the foreground, output to ``log_path``
    (appended, so a restarted launcher keeps one log).

    The console script ``nodepool-launcher`` runs the production loop
    intervals.  ``intervals`` (``{"cleanup": 5, ...}``, names of
    :class:`~nodepool.launcher.server.Intervals`) runs the same daemon
    through ``tests.fixtures.launcher_process`` instead, which can shorten
    them.  The process gets its own session: a Ctrl-C in the terminal
    reaches only the tool, which then stops the launcher itself.
    """
    if intervals:
        args = [sys.executable, "-m", "tests.fixtures.launcher_process"]
        for name, seconds in sorted(intervals.items()):
            args += ["--interval", "%s=%s" % (name, seconds)]
    else:
        args = [os.path.join(os.path.dirname(sys.executable),
                             "nodepool-launcher")]
    pidfile = os.path.join(workdir, "launcher.pid")
    args += ["-d" if debug else "-f", "-c", config_path, "-p", pidfile]
    args += list(extra_args)
    with open(log_path, "a") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=TOP,
                                env=launcher_env(proxy_url),
                                start_new_session=True)


def stop_launcher(proc, timeout=60):
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_component(kazoo, chroot, kind, proc, log_path, timeout=60):
    """Wait until a component of ``kind`` (e.g. ``pool``) registered."""
    path = chroot + "/nodepool/components/" + kind
    deadline = time.monotonic() + timeout
    while not (kazoo.exists(path) and kazoo.get_children(path)):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("launcher did not start; see %s" % log_path)
        time.sleep(0.1)


def ec2_client(moto_url):
    import boto3
    return boto3.client("ec2", endpoint_url=moto_url, region_name=REGION,
                        aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def live_instances(moto_url):
    """Ids of the instances moto holds that are not terminated."""
    alive = []
    paginator = ec2_client(moto_url).get_paginator("describe_instances")
    for page in paginator.paginate():
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                if instance["State"]["Name"] != "terminated":
                    alive.append(instance["InstanceId"])
    return alive
