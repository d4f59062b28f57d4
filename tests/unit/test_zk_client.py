# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
import threading

import pytest
from kazoo.exceptions import KazooException
from kazoo.protocol.states import KazooState

from nodepool.exceptions import ZooKeeperConnectionError
from nodepool.zk.client import ZooKeeperClient
from tests.fixtures import zkserver
from tests.fixtures.waits import wait_for


@pytest.mark.parametrize("tls", [True, False])
def test_connect_and_chroot(zk_factory, zk_chroot, zk_server, tls):
    client = zk_factory(tls=tls)
    client.kazoo.create("/hello", b"world")
    other = zk_factory(tls=not tls)
    assert other.kazoo.get("/hello")[0] == b"world"
    assert client.connected


def test_tls_requires_all_files(zk_server):
    with pytest.raises(ValueError):
        ZooKeeperClient(zk_server.tls_hosts, tls_ca=zk_server.certs["ca.pem"])


def test_tls_port_rejects_plain_client(zk_server):
    client = ZooKeeperClient(zk_server.tls_hosts, timeout=2)
    with pytest.raises(ZooKeeperConnectionError):
        client.connect(timeout=2)
    client.disconnect()


def test_reconnect_after_restart(own_zk_server):
    own_zk_server.start()
    client = ZooKeeperClient(own_zk_server.hosts, timeout=10)
    states = []
    client.add_state_listener(states.append)
    client.connect()
    client.kazoo.create("/eph", ephemeral=True)
    own_zk_server.stop()
    wait_for(lambda: KazooState.SUSPENDED in states)
    own_zk_server.start()
    wait_for(lambda: states[-1] == KazooState.CONNECTED, timeout=60)
    # Same session: the ephemeral node survived the restart.
    assert KazooState.LOST not in states
    assert client.kazoo.exists("/eph") is not None
    client.disconnect()


@pytest.mark.parametrize("down_before", [True, False])
def test_close_on_outage_ends_waiting_calls(own_zk_server, down_before):
    """A stopping daemon's calls that wait for a connection fail at once
    once it asks for it, whether the outage began before or after."""
    own_zk_server.start()
    client = ZooKeeperClient(own_zk_server.hosts, timeout=10)
    states = []
    client.add_state_listener(states.append)
    client.connect()
    try:
        if down_before:
            own_zk_server.stop(kill=True)
            wait_for(lambda: KazooState.SUSPENDED in states)
            # Waits for the connection to come back: without the close,
            # for ever.
            waiting = client.kazoo.get_async("/")
            client.close_on_outage()
        else:
            client.close_on_outage()
            assert client.connected  # nothing happens while connected
            own_zk_server.stop(kill=True)
            wait_for(lambda: KazooState.SUSPENDED in states)
            waiting = client.kazoo.get_async("/")
        waiting.wait(30)
        assert waiting.ready()
        assert isinstance(waiting.exception, KazooException)
        with pytest.raises(KazooException):
            client.kazoo.get("/")
    finally:
        client.disconnect()


def test_session_listener_after_session_loss(zk_client):
    states = []
    new_session = threading.Event()
    zk_client.add_state_listener(states.append)
    zk_client.add_session_listener(new_session.set)
    zk_client.kazoo.create("/eph", ephemeral=True)
    old = zk_client.session_id
    zkserver.expire_session(zk_client.kazoo)
    assert new_session.wait(60)
    assert KazooState.LOST in states
    assert states[-1] == KazooState.CONNECTED
    assert zk_client.session_id != old
    assert zk_client.kazoo.exists("/eph") is None
