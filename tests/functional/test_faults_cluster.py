# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Fault tolerance with more than one of everything: a ZooKeeper ensemble
losing members under load, two launchers of which one is ``kill -9``-ed,
and a launcher process killed mid-launch and restarted.

Each test checks the outcomes Zuul and the operator care about: every
request ends fulfilled with ready nodes, no node is handed to two
requests, and once the nodes are given back nothing is left running in the
cloud and nothing is left in ZooKeeper.
"""

import time

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException

from nodepool.launcher.server import NodePoolLauncher
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.models import NodeState, RequestState
from tests.fakes.test_driver import FakeCloud
from tests.fixtures.waits import wait_for
from tests.fixtures.zuul import ZuulClient
from tests.functional.conftest import FAST, base_config, read_nodes

CHROOT = "/nodepool-faults"


# -- playing Zuul -------------------------------------------------------------

class Outcomes:
    """What became of a batch of one-node requests, as Zuul saw it."""

    def __init__(self):
        self.final = {}      # request id -> NodeRequest in its end state
        self.node_of = {}    # request id -> node ids handed over

    def failed(self):
        return {rid: r.declined_by for rid, r in self.final.items()
                if r.state != RequestState.FULFILLED}

    def shared_nodes(self):
        """Node ids that were handed to more than one request."""
        seen, shared = set(), set()
        for ids in self.node_of.values():
            for node_id in ids:
                (shared if node_id in seen else seen).add(node_id)
        return shared


def serve_all(zuul, requests, timeout=60.0, on_accept=None) -> Outcomes:
    """Play Zuul until every request is done.

    Each fulfilled request's nodes are accepted at once (the client checks
    they are ready and allocated to it), then given back as ``used``, so
    the quota they held frees up for the requests still waiting.  ZooKeeper
    errors (a server going away under the client) are retried on the next
    pass.  ``on_accept(nodes)`` sees the accepted nodes before they go back.
    """
    outcomes = Outcomes()
    waiting = {r.id for r in requests}
    deadline = time.monotonic() + timeout
    while waiting:
        for request_id in sorted(waiting):
            try:
                current = zuul.get_request(request_id)
            except KazooException:
                break
            assert current is not None, "request %s vanished" % request_id
            if current.state == RequestState.FAILED:
                outcomes.final[request_id] = current
                waiting.discard(request_id)
            elif current.state == RequestState.FULFILLED:
                nodes = zuul.accept_nodes(current)
                outcomes.final[request_id] = current
                outcomes.node_of[request_id] = [n.id for n in nodes]
                if on_accept is not None:
                    on_accept(nodes)
                zuul.return_nodes(nodes)
                waiting.discard(request_id)
        if waiting:
            assert time.monotonic() < deadline, (
                "requests still waiting after %ss: %s" % (
                    timeout, {rid: getattr(zuul.get_request(rid), "state",
                                           None) for rid in waiting}))
            time.sleep(0.1)
    return outcomes


# -- scenario 6: a three-member ensemble loses its leader, then a follower ---

ENSEMBLE_REQUESTS = 20


def _ensemble_client(ensemble, timeout=10.0) -> ZooKeeperClient:
    client = ZooKeeperClient(ensemble.hosts + CHROOT, timeout=timeout)
    client.connect()
    return client


def _kill_and_restart(ensemble, member):
    """SIGKILL one member, wait for the other two to form a quorum, then
    bring it back and wait for the three of them."""
    member.stop(kill=True)
    ensemble.wait_quorum()
    member.start()
    ensemble.wait_quorum()


def test_ensemble_loses_leader_then_follower_under_load(tmp_path,
                                                        zk_ensemble):
    admin = KazooClient(hosts=zk_ensemble.hosts)
    admin.start(timeout=30)
    admin.ensure_path(CHROOT)
    admin.stop()
    admin.close()
    config = tmp_path / "nodepool.yaml"
    config.write_text(base_config(max_servers=ENSEMBLE_REQUESTS))
    cloud = FakeCloud.get("fake")
    # Long enough that launches are still running when the follower goes.
    cloud.create_steps = 25
    cloud.paused.set()
    launcher_zk = _ensemble_client(zk_ensemble)
    zuul_zk = _ensemble_client(zk_ensemble)
    launcher = NodePoolLauncher(str(config), zk_client=launcher_zk,
                                intervals=FAST)
    zuul = ZuulClient(zuul_zk)
    try:
        launcher.start()
        assert launcher.ready.wait(30)
        requests = [zuul.submit(["small"])
                    for _ in range(ENSEMBLE_REQUESTS)]
        # Every request has its node, locked and building, in a launch
        # that cannot finish yet.
        wait_for(lambda: len([n for n in read_nodes(zuul.kazoo)
                              if n.state == NodeState.BUILDING])
                 == ENSEMBLE_REQUESTS, timeout=30)
        session = launcher_zk.session_id

        # The leader goes: every member drops its clients until a new
        # leader is elected; the sessions survive.
        _kill_and_restart(zk_ensemble, zk_ensemble.leader())
        wait_for(lambda: launcher_zk.connected, timeout=30)
        assert launcher_zk.session_id == session

        # Launches resume and finish while the member the launcher talks
        # to (a follower if it is on one) is killed.
        leader = zk_ensemble.leader()
        member = zk_ensemble.member_of_session(session)
        if member is None or member is leader:
            member = next(m for m in zk_ensemble.members if m is not leader)
        cloud.paused.clear()
        _kill_and_restart(zk_ensemble, member)
        wait_for(lambda: launcher_zk.connected, timeout=30)
        assert launcher_zk.session_id == session

        outcomes = serve_all(zuul, requests, timeout=60)
        assert outcomes.failed() == {}
        assert not outcomes.shared_nodes()
        assert len(outcomes.node_of) == ENSEMBLE_REQUESTS
        # A server going away is no reason to give up a launch.
        assert cloud.created == ENSEMBLE_REQUESTS
        wait_for(lambda: not read_nodes(zuul.kazoo) and not cloud.list(),
                 timeout=30)
    finally:
        zuul.close()
        launcher.stop()
        launcher.join()
        zuul_zk.disconnect()
        launcher_zk.disconnect()
