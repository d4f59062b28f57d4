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

import json
import threading
import time

import boto3
import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError

from nodepool.launcher.server import NodePoolLauncher
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.models import NodeState, RequestState
from tests.fakes.aws_proxy import AwsProxy, MotoServer
from tests.fakes.scanner import FakeScanner
from tests.fakes.test_driver import FakeCloud
from tests.fixtures import processes, zkserver
from tests.fixtures.launcher_process import LauncherProcess
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


def _building_batch(zuul, cloud, count):
    """Submit ``count`` one-node requests while the cloud holds every
    create; return them once each has its node locked and building."""
    cloud.paused.set()
    before = {n.id for n in read_nodes(zuul.kazoo)}
    requests = [zuul.submit(["small"]) for _ in range(count)]
    wait_for(lambda: len([n for n in read_nodes(zuul.kazoo)
                          if n.state == NodeState.BUILDING
                          and n.id not in before]) == count, timeout=30)
    return requests


def test_ensemble_loses_leader_then_follower_under_load(tmp_path,
                                                        zk_ensemble):
    admin = KazooClient(hosts=zk_ensemble.hosts)
    admin.start(timeout=30)
    admin.ensure_path(CHROOT)
    admin.stop()
    admin.close()
    config = tmp_path / "nodepool.yaml"
    config.write_text(base_config(max_servers=2 * ENSEMBLE_REQUESTS))
    cloud = FakeCloud.get("fake")
    # Launches take a few runner passes after the cloud lets them go, so
    # they finish, and write, while the ensemble is without a leader.
    cloud.create_steps = 25
    launcher_zk = _ensemble_client(zk_ensemble)
    zuul_zk = _ensemble_client(zk_ensemble)
    launcher = NodePoolLauncher(str(config), zk_client=launcher_zk,
                                intervals=FAST, scanner=FakeScanner())
    zuul = ZuulClient(zuul_zk)
    try:
        launcher.start()
        assert launcher.ready.wait(30)
        session = launcher_zk.session_id

        # The leader goes as the launches resume: every member drops its
        # clients until a new leader is elected; the sessions survive.
        first = _building_batch(zuul, cloud, ENSEMBLE_REQUESTS)
        cloud.paused.clear()
        _kill_and_restart(zk_ensemble, zk_ensemble.leader())
        wait_for(lambda: launcher_zk.connected, timeout=30)
        assert launcher_zk.session_id == session

        # A second batch; as it resumes, the member the launcher talks to
        # (a follower if it is on one) is killed.
        second = _building_batch(zuul, cloud, ENSEMBLE_REQUESTS // 2)
        leader = zk_ensemble.leader()
        member = zk_ensemble.member_of_session(session)
        if member is None or member is leader:
            member = next(m for m in zk_ensemble.members if m is not leader)
        cloud.paused.clear()
        _kill_and_restart(zk_ensemble, member)
        wait_for(lambda: launcher_zk.connected, timeout=30)
        assert launcher_zk.session_id == session

        requests = first + second
        outcomes = serve_all(zuul, requests, timeout=60)
        assert outcomes.failed() == {}
        assert not outcomes.shared_nodes()
        assert len(outcomes.node_of) == len(requests)
        # A server going away is no reason to give up a launch.
        assert cloud.created == len(requests)
        wait_for(lambda: not read_nodes(zuul.kazoo) and not cloud.list(),
                 timeout=30)
    finally:
        zuul.close()
        launcher.stop()
        launcher.join()
        zuul_zk.disconnect()
        launcher_zk.disconnect()


# -- launcher processes on moto: the AWS test bed -----------------------------

AWS_CONFIG = """
labels:
  - name: small
providers:
  - name: ec2
    driver: aws
    region-name: us-west-2
    rate: 20
    launch-retries: 3
    cloud-images:
      - name: base
        username: ubuntu
        image-id: ami-03cf127a
    pools:
      - name: main
        max-servers: {max_servers}
        host-key-checking: false
        labels:
          - name: small
            cloud-image: base
            instance-type: t3.medium
            key-name: np
"""

REGION = "us-west-2"
# The session timeout of the launcher processes: how long a killed
# launcher's locks outlive it.
SESSION_TIMEOUT = 4
# The daemon's own intervals (deleted nodes every 5 s, cleanup every 60 s)
# would make each test take minutes; see tests/fixtures/launcher_process.py.
PROCESS_INTERVALS = dict(main=0.2, pool=0.2, runner=0.2, deleted_nodes=0.5,
                         cleanup=1.0)


@pytest.fixture(scope="module")
def moto_server():
    server = MotoServer().start()
    yield server
    server.stop()


class AwsBed:
    """moto behind the delaying proxy, and launcher processes using it."""

    def __init__(self, tmp_path, zk_server, chroot, moto, proxy):
        self.tmp_path = tmp_path
        self.zk_server = zk_server
        self.chroot = chroot
        self.proxy = proxy
        # Straight to moto: what the test reads is not counted or delayed.
        self.ec2 = boto3.client("ec2", endpoint_url=moto.url,
                                region_name=REGION,
                                aws_access_key_id="testing",
                                aws_secret_access_key="testing")
        self.launchers = []

    def write_config(self, max_servers: int):
        path = self.tmp_path / "nodepool.yaml"
        path.write_text(zkserver.client_config(
            self.zk_server.host, self.zk_server.secure_port, self.chroot,
            self.zk_server.certs, timeout=SESSION_TIMEOUT)
            + AWS_CONFIG.format(max_servers=max_servers))
        return path

    def launcher(self, config, name: str) -> LauncherProcess:
        """A started launcher process; ``name`` names its log and pid
        file (a restart under the same name appends to the same log)."""
        env = dict(AWS_ACCESS_KEY_ID="testing",
                   AWS_SECRET_ACCESS_KEY="testing",
                   AWS_DEFAULT_REGION=REGION, AWS_ENDPOINT_URL=self.proxy.url)
        proc = LauncherProcess(config, self.tmp_path / (name + ".log"),
                               self.tmp_path / (name + ".pid"),
                               intervals=PROCESS_INTERVALS, env=env)
        self.launchers.append(proc)
        return proc.start()

    def live_instances(self) -> dict:
        """Instance id -> tags of every instance not terminated."""
        found = {}
        for reservation in self.ec2.describe_instances()["Reservations"]:
            for instance in reservation["Instances"]:
                if instance["State"]["Name"] != "terminated":
                    found[instance["InstanceId"]] = {
                        t["Key"]: t["Value"]
                        for t in instance.get("Tags", [])}
        return found

    def logs(self) -> str:
        return "\n".join("== %s\n%s" % (p.log, p.tail())
                         for p in self.launchers)

    def stop(self):
        for proc in self.launchers:
            proc.stop()


@pytest.fixture
def aws_bed(tmp_path, zk_server, zk_chroot, moto_server):
    moto_server.reset()
    proxy = AwsProxy(moto_server.port).start()
    bed = AwsBed(tmp_path, zk_server, zk_chroot, moto_server, proxy)
    yield bed
    bed.stop()
    proxy.stop()


def pool_ids(kazoo) -> set:
    """The launcher ids of the registered pool workers."""
    path = "/nodepool/components/pool"
    ids = set()
    try:
        children = kazoo.get_children(path)
    except NoNodeError:
        return ids
    for child in children:
        try:
            data, _ = kazoo.get(path + "/" + child)
        except NoNodeError:
            continue
        pool_id = json.loads(data).get("id")
        if pool_id:
            ids.add(pool_id)
    return ids


def wait_new_pool(kazoo, known: set, proc: LauncherProcess) -> str:
    """Wait until a pool worker not in ``known`` registers; its id."""
    def new():
        assert proc.alive(), proc.tail()
        return pool_ids(kazoo) - known
    [new_id] = wait_for(new, timeout=60)
    return new_id


class RecordCounter:
    """The most node records there ever were, from a children watch."""

    def __init__(self, kazoo):
        self.most = 0
        self.at_most = []
        kazoo.ensure_path("/nodepool/nodes")
        kazoo.ChildrenWatch("/nodepool/nodes", self._changed)

    def _changed(self, children):
        if len(children) > self.most:
            self.most = len(children)
            self.at_most = sorted(children)


class GoneTimes:
    """Notes when each of some cloud instances is first seen gone."""

    def __init__(self, bed, instance_ids, start):
        self.bed = bed
        self.start = start
        self.gone = {}
        self.pending = set(instance_ids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gone-times",
                                        daemon=True)
        self._thread.start()

    def _run(self):
        while self.pending and not self._stop.is_set():
            live = self.bed.live_instances()
            now = time.monotonic()
            for instance_id in list(self.pending):
                if instance_id not in live:
                    self.gone[instance_id] = now - self.start
                    self.pending.discard(instance_id)
            self._stop.wait(0.1)

    def wait(self, timeout):
        self._thread.join(timeout)
        self._stop.set()
        return not self.pending


def wait_on(bed, predicate, timeout):
    """:func:`wait_for`, failing with the launcher logs."""
    try:
        return wait_for(predicate, timeout=timeout)
    except AssertionError as e:
        raise AssertionError("%s\n%s" % (e, bed.logs())) from None


def building(kazoo, launcher_id=None):
    return [n for n in read_nodes(kazoo) if n.state == NodeState.BUILDING
            and launcher_id in (None, n.launcher)]


# -- scenario 7: two launchers serve one provider; one is killed --------------

TWO_LAUNCHERS_MAX = 4
TWO_LAUNCHERS_REQUESTS = 10


def test_two_launchers_one_killed(aws_bed, zuul):
    proxy = aws_bed.proxy
    config = aws_bed.write_config(max_servers=TWO_LAUNCHERS_MAX)
    kazoo = zuul.kazoo
    # The first launcher dies with all its launches in flight: its
    # RunInstances calls are held until it is dead.
    proxy.delays["RunInstances"] = 0.5
    proxy.hold("RunInstances")
    first = aws_bed.launcher(config, "first")
    first_id = wait_new_pool(kazoo, set(), first)
    records = RecordCounter(kazoo)
    requests = [zuul.submit(["small"])
                for _ in range(TWO_LAUNCHERS_REQUESTS)]
    wait_on(aws_bed, lambda: len(building(kazoo, first_id))
            == TWO_LAUNCHERS_MAX
            and proxy.counts["RunInstances"] == TWO_LAUNCHERS_MAX, 30)
    # The second launcher joins while the first fills the pool; it sees
    # the first one's nodes and launches nothing yet.
    second = aws_bed.launcher(config, "second")
    second_id = wait_new_pool(kazoo, {first_id}, second)
    assert not building(kazoo, second_id)

    first.kill()
    proxy.release("RunInstances")
    served_by = []
    outcomes = serve_all(
        zuul, requests, timeout=90,
        on_accept=lambda nodes: served_by.extend(n.launcher for n in nodes))
    assert outcomes.failed() == {}, aws_bed.logs()
    assert not outcomes.shared_nodes()
    assert second.alive()
    assert set(served_by) == {second_id}, aws_bed.logs()
    # The dead launcher's building nodes are deleted once its session is
    # gone; the instances its RunInstances calls made after it died are
    # leaked and removed by leak cleanup.
    wait_on(aws_bed, lambda: not read_nodes(kazoo)
            and not aws_bed.live_instances(), 60)
    # Both launchers counted every node of the provider: never more
    # records than max-servers, dead launcher's nodes included.
    assert records.most <= TWO_LAUNCHERS_MAX, (records.at_most,
                                               aws_bed.logs())
    print("\ntwo launchers, one killed: %d RunInstances for %d requests, at"
          " most %d node records (max-servers %d)" % (
              proxy.counts["RunInstances"], TWO_LAUNCHERS_REQUESTS,
              records.most, TWO_LAUNCHERS_MAX))


# -- scenario 3: kill -9 mid-launch, restarted a few seconds later ------------

@pytest.mark.parametrize("restart", ["while-session-lives",
                                     "after-session-expired"])
def test_killed_launcher_restarted_cleans_up(aws_bed, zuul, restart):
    proxy = aws_bed.proxy
    config = aws_bed.write_config(max_servers=10)
    kazoo = zuul.kazoo
    proxy.delays["RunInstances"] = 1.0
    launcher = aws_bed.launcher(config, "launcher")
    wait_new_pool(kazoo, set(), launcher)
    # First wave: instances created and named in their node records, but
    # still booting.
    proxy.boot_delay = 600.0
    first = [zuul.submit(["small"]) for _ in range(3)]
    wait_on(aws_bed, lambda: len([n for n in building(kazoo)
                                  if n.external_id]) == 3, 30)
    # Second wave: killed while RunInstances is under way, so the
    # instances appear after the launcher died, named by no record.
    proxy.hold("RunInstances")
    second = [zuul.submit(["small"]) for _ in range(3)]
    wait_on(aws_bed, lambda: len(building(kazoo)) == 6
            and proxy.counts["RunInstances"] == 6, 30)
    named = {n.external_id for n in building(kazoo) if n.external_id}
    assert len(named) == 3
    launcher.kill()
    killed = time.monotonic()
    proxy.boot_delay = 0.0
    proxy.release("RunInstances")

    # The dead process's six instances all exist before the restart.
    wait_on(aws_bed, lambda: len(aws_bed.live_instances()) == 6, 30)
    orphans = set(aws_bed.live_instances())
    unnamed = orphans - named
    assert len(unnamed) == 3
    if restart == "after-session-expired":
        # Its registration is ephemeral: gone with the session.
        wait_on(aws_bed, lambda: not processes.component_running(
            kazoo, "launcher"), 30)
    restarted = aws_bed.launcher(config, "launcher")
    started = time.monotonic()
    gone = GoneTimes(aws_bed, orphans, started)

    outcomes = serve_all(zuul, first + second, timeout=60)
    assert outcomes.failed() == {}, aws_bed.logs()
    assert not outcomes.shared_nodes()
    assert gone.wait(60), (gone.pending, aws_bed.logs())
    wait_on(aws_bed, lambda: not read_nodes(kazoo)
            and not aws_bed.live_instances(), 60)
    assert restarted.alive()
    named_s = max(gone.gone[i] for i in named)
    leaked_s = max(gone.gone[i] for i in unnamed)
    since_kill = started - killed
    print("\nkill -9 mid-launch, restart %s, %.1f s after the kill: the"
          " instances named by node records gone %.1f s after the restart"
          " (%.1f s after the kill), the leaked ones %.1f s (%.1f s)" % (
              restart, since_kill, named_s, named_s + since_kill, leaked_s,
              leaked_s + since_kill))
