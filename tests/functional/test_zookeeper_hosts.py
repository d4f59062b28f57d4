# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""A changed ``zookeeper-servers`` list is applied without a restart.

A launcher with its own client on a three-member ensemble: the new list is
set on the running client, the session is kept while its server is still
listed, and once the server it used is removed and stopped it carries on
from a listed one.  The builder applies a new list the same way; a new
chroot cannot be applied to a running session and is refused.
"""

import os
import time

from kazoo.client import KazooClient

from nodepool.builder.server import NodePoolBuilder
from nodepool.launcher.server import NodePoolLauncher
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.models import RequestState
from tests.fakes.scanner import FakeScanner
from tests.fixtures import zkserver
from tests.fixtures.waits import wait_for
from tests.fixtures.zuul import ZuulClient
from tests.functional.conftest import FAST

CHROOT = "/nodepool-hosts"

CONFIG = """
zookeeper-servers:
{servers}
zookeeper-timeout: 10
labels:
  - name: small
providers:
  - name: fake
    driver: test
    pools:
      - name: main
        labels:
          - name: small
"""


def config_text(members):
    servers = "".join(
        "  - host: %s\n    port: %d\n    chroot: %s\n"
        % (m.host, m.client_port, CHROOT) for m in members)
    return CONFIG.format(servers=servers)


def hosts_of(members):
    return ",".join(m.hosts for m in members) + CHROOT


def write(path, text):
    path.write_text(text)
    # A distinct modification time even on coarse clocks.
    future = time.time() + 5
    os.utime(path, (future, future))


def test_launcher_applies_new_zookeeper_servers(tmp_path, zk_ensemble,
                                                caplog):
    # The launcher starts on a follower, so that stopping it later needs no
    # leader election (which could outlast the session under load).
    leader = wait_for(zk_ensemble.leader)
    first, second = [m for m in zk_ensemble.members if m is not leader]
    third = leader
    admin = KazooClient(hosts=zk_ensemble.hosts)
    admin.start(timeout=30)
    admin.ensure_path(CHROOT)
    admin.stop()
    admin.close()
    path = tmp_path / "nodepool.yaml"
    write(path, config_text([first]))
    launcher = NodePoolLauncher(str(path), intervals=FAST,
                                scanner=FakeScanner())
    zuul_zk = ZooKeeperClient(third.hosts + CHROOT)
    zuul_zk.connect()
    zuul = ZuulClient(zuul_zk)
    launcher.start()
    try:
        assert launcher.ready.wait(30)
        client = launcher.zk_client
        session = client.session_id

        # The current server stays listed: same session, new list.
        write(path, config_text([first, second]))
        wait_for(lambda: client.hosts == hosts_of([first, second]))
        assert client.kazoo.hosts == [(m.host, m.client_port)
                                      for m in (first, second)]
        assert client.kazoo.chroot == CHROOT
        assert client.connected and client.session_id == session

        # The current server is dropped from the list, then stopped: the
        # launcher goes on from a listed server, in the same chroot.
        write(path, config_text([second, third]))
        wait_for(lambda: client.hosts == hosts_of([second, third]))
        assert client.connected and client.session_id == session
        first.stop()
        done = zuul.wait_for_request(zuul.submit(["small"]), timeout=60)
        assert done.state == RequestState.FULFILLED
        zuul.return_nodes(zuul.accept_nodes(done))
        # ZooKeeper moved the session along with the launcher.
        assert client.connected and client.session_id == session
        assert client.kazoo.chroot == CHROOT

        # A new session timeout is not applied to a running session.
        write(path, config_text([second, third]).replace(
            "zookeeper-timeout: 10", "zookeeper-timeout: 20"))
        wait_for(lambda: "restart the launcher to apply it" in caplog.text)
        assert client.connected and client.session_id == session
    finally:
        launcher.stop()
        launcher.join()
        zuul.close()
        zuul_zk.disconnect()


def builder_config(tmp_path, zk_server, servers):
    text = "zookeeper-servers:\n"
    for host, port, chroot in servers:
        text += "  - host: %s\n    port: %d\n    chroot: %s\n" % (
            host, port, chroot)
    certs = zk_server.certs
    text += ("zookeeper-tls:\n  ca: %s\n  cert: %s\n  key: %s\n"
             % (certs["ca.pem"], certs["client.crt"], certs["client.key"]))
    text += "images-dir: %s\nlabels: []\nproviders: []\n" % (
        tmp_path / "images")
    return text


def test_builder_applies_new_zookeeper_servers(tmp_path, zk_server,
                                               zk_chroot, caplog):
    here = (zk_server.host, zk_server.secure_port, zk_chroot)
    # Listed, never reached: the builder stays on the server it uses.
    elsewhere = ("127.0.0.1", zkserver.free_port(), zk_chroot)
    path = tmp_path / "nodepool.yaml"
    write(path, builder_config(tmp_path, zk_server, [here]))
    builder = NodePoolBuilder(str(path), build_interval=0.05,
                              upload_interval=0.05, cleanup_interval=0.05)
    builder.start()
    try:
        client = builder.zk_client
        session = client.session_id
        write(path, builder_config(tmp_path, zk_server, [here, elsewhere]))
        wanted = "%s:%d,%s:%d%s" % (here[:2] + elsewhere[:2] + (zk_chroot,))
        wait_for(lambda: client.hosts == wanted)
        assert client.kazoo.hosts == [here[:2], elsewhere[:2]]
        assert client.connected and client.session_id == session

        # Another chroot needs a restart: logged, nothing changed.
        moved = [here[:2] + ("/elsewhere",)]
        write(path, builder_config(tmp_path, zk_server, moved))
        wait_for(lambda: "restart the builder" in caplog.text)
        assert client.hosts == wanted
        assert client.kazoo.hosts == [here[:2], elsewhere[:2]]
        assert client.kazoo.chroot == zk_chroot
        assert client.connected and client.session_id == session
    finally:
        builder.stop()
        builder.join()
