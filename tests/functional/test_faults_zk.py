# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The launcher through ZooKeeper faults: a restarted server (the session
survives a suspended connection), an expired session (locks are lost and
taken back), and ZooKeeper errors in the middle of a launch."""

import threading
import time
from dataclasses import replace

import pytest
from kazoo.protocol.states import KazooState

from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.models import NodeState, RequestState
from tests.fakes.scanner import FakeScanner
from tests.fakes.test_driver import FakeCloud
from tests.fixtures import zkserver
from tests.fixtures.waits import wait_for
from tests.fixtures.zuul import ZuulClient
from tests.functional.conftest import FAST, base_config, read_nodes

# create_steps that keeps an instance "creating" until a test lowers it.
HOLD = 10 ** 9


@pytest.fixture
def restartable(own_zk_server, tmp_path):
    """A private TLS ZooKeeper, a launcher and a Zuul client on it."""
    own_zk_server.start()
    hosts = own_zk_server.tls_hosts + "/np"
    certs = own_zk_server.certs
    tls = dict(tls_ca=certs["ca.pem"], tls_cert=certs["client.crt"],
               tls_key=certs["client.key"])
    admin = ZooKeeperClient(own_zk_server.tls_hosts, **tls)
    admin.connect()
    admin.kazoo.ensure_path("/np")
    admin.disconnect()
    clients = []
    launchers = []

    def client():
        c = ZooKeeperClient(hosts, timeout=10.0, **tls)
        c.connect()
        clients.append(c)
        return c

    def launcher(intervals=FAST, **params):
        from nodepool.launcher.server import NodePoolLauncher
        path = tmp_path / ("nodepool-%d.yaml" % len(launchers))
        path.write_text(base_config(**params))
        launcher = NodePoolLauncher(str(path), zk_client=client(),
                                    intervals=intervals,
                                    scanner=FakeScanner())
        launcher.start()
        assert launcher.ready.wait(30)
        launchers.append(launcher)
        return launcher

    env = type("Env", (), {})()
    env.server = own_zk_server
    env.launcher = launcher
    env.zuul = ZuulClient(client())
    yield env
    env.zuul.close()
    for one in launchers:
        one.stop()
    for one in launchers:
        one.join()
    for c in clients:
        try:
            c.disconnect()
        except Exception:
            pass


def submit_and_wait_building(zuul, count):
    requests = [zuul.submit(["small"]) for _ in range(count)]
    wait_for(lambda: sum(1 for n in read_nodes(zuul.kazoo)
                         if n.state == NodeState.BUILDING
                         and n.external_id) == count, timeout=60)
    return requests


def check_served_and_clean(zuul, requests, cloud):
    """Every request fulfilled with ready nodes of its own; after release
    nothing is left in the cloud or in ZooKeeper."""
    seen = set()
    for request in requests:
        done = zuul.wait_for_request(request, timeout=60)
        assert done.state == RequestState.FULFILLED, done.to_dict()
        assert not seen & set(done.nodes), "a node in two requests"
        seen.update(done.nodes)
        nodes = zuul.accept_nodes(done)
        assert all(n.state == NodeState.IN_USE for n in nodes)
        zuul.return_nodes(nodes)
    wait_for(lambda: not read_nodes(zuul.kazoo) and not cloud.list(),
             timeout=60)


def test_zookeeper_restart_keeps_launches_in_flight(restartable):
    """A few seconds without ZooKeeper (the session survives): every
    launch carries on, no request fails, no instance is launched twice."""
    restartable.launcher(launch_timeout=120)
    cloud = FakeCloud.get("fake")
    cloud.create_steps = HOLD  # still creating when ZooKeeper goes
    zuul = restartable.zuul
    requests = submit_and_wait_building(zuul, 8)
    restartable.server.stop()
    cloud.create_steps = 1  # launches finish while ZooKeeper is away
    time.sleep(3)  # the fault: ZooKeeper is down this long
    restartable.server.start()
    check_served_and_clean(zuul, requests, cloud)
    assert cloud.created == 8


def test_session_expiry_resumes_launches_in_the_cloud(restartable):
    """The session expires mid-launch: the launcher locks its nodes and
    requests again and finishes the launches it began; no second
    instance is created for any node."""
    launcher = restartable.launcher(launch_timeout=120)
    cloud = FakeCloud.get("fake")
    cloud.create_steps = HOLD
    zuul = restartable.zuul
    requests = submit_and_wait_building(zuul, 5)
    lost = threading.Event()
    launcher.zk_client.add_session_listener(lost.set)
    zkserver.expire_session(launcher.zk_client.kazoo)
    assert lost.wait(30)
    cloud.create_steps = 1
    check_served_and_clean(zuul, requests, cloud)
    assert cloud.created == 5


def test_node_taken_meanwhile_is_abandoned_and_its_instance_deleted(
        restartable):
    """After a lost session someone else got the node's lock first: the
    launch stops and deletes its instance at once; the request is served
    again with a fresh node."""
    launcher = restartable.launcher(launch_timeout=120)
    cloud = FakeCloud.get("fake")
    cloud.create_steps = HOLD
    zuul = restartable.zuul
    [request] = submit_and_wait_building(zuul, 1)
    [node] = read_nodes(zuul.kazoo)
    first_instance = node.external_id
    kazoo = launcher.zk_client.kazoo
    intruder = ZooKeeperClient(
        launcher.zk_client.hosts, tls_ca=kazoo.ca, tls_cert=kazoo.certfile,
        tls_key=kazoo.keyfile)
    intruder.connect()
    try:
        # Queued behind the launcher, the intruder gets the lock the
        # moment the launcher's session (and lock) is gone.
        lock = intruder.kazoo.Lock("/nodepool/nodes/%s/lock" % node.id)
        got = threading.Event()
        threading.Thread(target=lambda: lock.acquire(timeout=60)
                         and got.set(), daemon=True).start()
        wait_for(lambda: len(lock.contenders()) == 2)
        zkserver.expire_session(kazoo)
        assert got.wait(30)
        cloud.create_steps = 1
        wait_for(lambda: first_instance not in cloud.instances, timeout=30)
        lock.release()
    finally:
        intruder.disconnect()
    check_served_and_clean(zuul, [request], cloud)


def test_cleanup_of_failed_attempt_is_bounded(launcher_factory, zuul):
    """A failed attempt whose instance cannot be deleted does not keep
    the request waiting: after the launch timeout the node fails naming
    the instance, and the deleted-node worker deletes it later."""
    launcher_factory(retries=2, launch_timeout=2)
    cloud = FakeCloud.get("fake")
    cloud.create_steps = HOLD  # the create times out
    cloud.fail_deletes = 10 ** 6  # ... and its instance will not go
    request = zuul.submit(["small"])
    done = zuul.wait_for_request(request, timeout=60)
    assert done.state == RequestState.FAILED
    assert cloud.list()
    cloud.fail_deletes = 0
    wait_for(lambda: not read_nodes(zuul.kazoo) and not cloud.list(),
             timeout=60)


def test_handler_keeps_nodes_its_launches_took_back(restartable):
    """After a lost session the launches take their nodes back and finish
    before the handlers look at their requests (slow pool passes): the
    handlers keep those nodes (locked anew by the launches) rather than
    relaunching and leaving them locked and allocated for good."""
    launcher = restartable.launcher(
        launch_timeout=120,
        intervals=replace(FAST, pool=0.5))
    cloud = FakeCloud.get("fake")
    cloud.create_steps = HOLD
    zuul = restartable.zuul
    requests = submit_and_wait_building(zuul, 4)

    def on_state(state):
        if state == KazooState.LOST:
            cloud.create_steps = 1  # launches finish once they resume
    launcher.zk_client.add_state_listener(on_state)
    lost = threading.Event()
    launcher.zk_client.add_session_listener(lost.set)
    zkserver.expire_session(launcher.zk_client.kazoo)
    assert lost.wait(30)
    check_served_and_clean(zuul, requests, cloud)
    assert cloud.created == 4


def test_dead_launchers_requests_are_handed_back_at_once(
        launcher_factory, zuul):
    """A launcher whose session ends mid-launch (killed) leaves pending
    requests; another launcher hands them back as soon as the dead one's
    registration goes, not at its next (here: hour-long) cleanup pass."""
    slow = replace(FAST, cleanup=3600.0)
    victim = launcher_factory(intervals=slow)
    cloud = FakeCloud.get("fake")
    cloud.create_steps = HOLD
    request = zuul.submit(["small"])
    wait_for(lambda: zuul.get_request(request).state == RequestState.PENDING)
    survivor = launcher_factory(intervals=slow)
    wait_for(lambda: survivor.cleanup_worker.passes >= 1)
    # The victim dies: its session (locks, registrations) ends with it.
    for worker in victim.pool_workers.values():
        worker.stop()
    victim.zk_client.kazoo.stop()
    cloud.create_steps = 1
    done = zuul.wait_for_request(request, timeout=30)
    assert done.state == RequestState.FULFILLED
    zuul.return_nodes(zuul.accept_nodes(done))
