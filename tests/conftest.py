# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Shared fixtures: a real ZooKeeper (TLS and plain), a chroot per test."""

import os
import uuid

import pytest
from kazoo.client import KazooClient

from nodepool.zk.client import ZooKeeperClient
from tests.fixtures import zkserver
from tests.fixtures.clouds import (  # noqa: F401
    azure_fake, gce_fake, ibmvpc_fake, k8s_fake, openstack_cloud)
from tests.fixtures.sshd import sshd, sshd_factory  # noqa: F401
from tests.fixtures.statsd import statsd  # noqa: F401


class ZooKeeperInfo:
    """Where the test ZooKeeper is and how to reach it."""

    def __init__(self, host, port, secure_port, certs):
        self.host = host
        self.port = port
        self.secure_port = secure_port
        self.certs = certs

    @property
    def plain_hosts(self):
        return "%s:%d" % (self.host, self.port)

    @property
    def tls_hosts(self):
        return "%s:%d" % (self.host, self.secure_port)

    def tls_args(self):
        return dict(tls_ca=self.certs["ca.pem"],
                    tls_cert=self.certs["client.crt"],
                    tls_key=self.certs["client.key"])


def _shared_server():
    # tools/test-setup.sh starts one long-lived server and records it; when
    # it is absent (or dead) each pytest worker starts its own.
    state = zkserver.recorded_server(os.environ.get("NODEPOOL_TEST_ZK_STATE"))
    if state is None:
        return None
    return ZooKeeperInfo(state["host"], state["port"], state["secure_port"],
                         state["certs"])


@pytest.fixture(scope="session")
def zk_certs(tmp_path_factory):
    info = _shared_server()
    if info is not None:
        return info.certs
    return zkserver.make_certs(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="session")
def zk_server(tmp_path_factory, zk_certs):
    """The ZooKeeper shared by the whole session (or xdist worker)."""
    info = _shared_server()
    if info is not None:
        yield info
        return
    server = zkserver.ZooKeeperServer(
        str(tmp_path_factory.mktemp("zookeeper")), certs=zk_certs)
    server.start()
    yield ZooKeeperInfo(server.host, server.client_port, server.secure_port,
                        zk_certs)
    server.stop()


@pytest.fixture
def zk_chroot(zk_server):
    """A fresh random chroot; removed with everything below it afterwards."""
    chroot = "/nodepool-test-%s" % uuid.uuid4().hex
    admin = KazooClient(hosts=zk_server.plain_hosts)
    admin.start(timeout=30)
    try:
        admin.create(chroot)
        yield chroot
        admin.delete(chroot, recursive=True)
    finally:
        admin.stop()
        admin.close()


def _make_client(zk_server, chroot, tls=True, **kwargs):
    if tls:
        client = ZooKeeperClient(zk_server.tls_hosts + chroot,
                                 **zk_server.tls_args(), **kwargs)
    else:
        client = ZooKeeperClient(zk_server.plain_hosts + chroot, **kwargs)
    client.connect()
    return client


@pytest.fixture
def zk_factory(zk_server, zk_chroot):
    """Make more clients on the test's chroot: ``zk_factory(tls=True)``."""
    clients = []

    def factory(tls=True, **kwargs):
        client = _make_client(zk_server, zk_chroot, tls=tls, **kwargs)
        clients.append(client)
        return client
    yield factory
    for client in clients:
        client.disconnect()


@pytest.fixture
def zk_client(zk_factory):
    """A connected :class:`ZooKeeperClient` (TLS) on the test's chroot."""
    return zk_factory(tls=True)


@pytest.fixture
def own_zk_server(tmp_path, zk_certs):
    """A private ZooKeeper the test may stop and restart (not started)."""
    server = zkserver.ZooKeeperServer(str(tmp_path / "zk"), certs=zk_certs)
    yield server
    server.stop(kill=True)


@pytest.fixture
def zk_ensemble(tmp_path):
    """A running three-member ensemble on loopback (plain ports)."""
    ensemble = zkserver.Ensemble(str(tmp_path / "ensemble")).start()
    yield ensemble
    ensemble.stop()
