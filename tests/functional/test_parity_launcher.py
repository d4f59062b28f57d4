# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Launcher behaviours that must match nodepool 11 (issue 11): pool
priority 0, max-concurrency per provider, launch result names, max-ready-age
of multi-label nodes, OpenStack ``groups`` metadata and the static driver's
winrm port."""

import logging
import socket
import threading

import pytest

from nodepool import stats
from nodepool.driver.errors import CloudApiError
from nodepool.zk.components import PoolComponent
from nodepool.zk.models import Node, NodeState, RequestState
from tests.fakes.test_driver import FakeCloud
from tests.fixtures import zkserver
from tests.fixtures.waits import wait_for
from tests.functional.conftest import read_nodes

# Our pool serves both labels; another launcher's pool (a record planted
# by the test) serves only ``small``.
PRIORITY = """
labels:
  - name: small
  - name: large
providers:
  - name: fake
    driver: test
    pools:
      - name: main
        priority: 1
        labels:
          - name: small
          - name: large
"""


def test_pool_priority_zero_is_the_highest(launcher_factory, zuul,
                                           zk_factory):
    other = PoolComponent(zk_factory(), hostname="elsewhere")
    other.register()
    other.update(id="elsewhere-PoolWorker.remote-main", name="main",
                 provider_name="remote", supported_labels=["small"],
                 priority=0, paused=False, state="running")
    launcher = launcher_factory(PRIORITY)
    wait_for(lambda: other.id in {
        p.id for p in launcher.services.registry.pools()})
    yielded = zuul.submit(["small"])
    # Only our pool serves "large": once that request (submitted later,
    # so already known to the pool worker's pass that took it) is done,
    # the pool has passed over the "small" one.
    mine = zuul.wait_for_request(zuul.submit(["large"]))
    assert mine.state == RequestState.FULFILLED
    assert zuul.get_request(yielded).state == RequestState.REQUESTED
    # Once the priority-0 pool pauses, ours is next in line.
    other.update(paused=True)
    done = zuul.wait_for_request(yielded)
    assert done.state == RequestState.FULFILLED
    other.unregister()


CONCURRENCY = """
labels:
  - name: small
  - name: large
providers:
  - name: fake
    driver: test
    max-concurrency: 1
    launch-retries: 1
    pools:
      - name: a
        labels:
          - name: small
      - name: b
        labels:
          - name: large
"""


def test_max_concurrency_counts_every_pool_of_the_provider(
        launcher_factory, zuul, caplog):
    caplog.set_level(logging.DEBUG, logger="nodepool.PoolWorker.fake-b")
    cloud = FakeCloud.get("fake")
    cloud.paused.set()  # creates make no progress for now
    launcher = launcher_factory(CONCURRENCY)
    provider = launcher.providers["fake"]
    first = zuul.submit(["small"])
    wait_for(lambda: zuul.get_request(first).state == RequestState.PENDING)
    second = zuul.submit(["large"])
    # Pool b saw the request and held back (pool a's request counts), or
    # took it (the bug: a count per pool).
    wait_for(lambda: any("max-concurrency" in r.getMessage()
                         for r in caplog.records
                         if r.name == "nodepool.PoolWorker.fake-b")
             or zuul.get_request(second).state != RequestState.REQUESTED)
    assert zuul.get_request(second).state == RequestState.REQUESTED
    assert provider.quota.requests_handled == 1

    # A handler ending by session loss, and one ending by declining (its
    # launch fails), give their count back: with max-concurrency 1 a
    # count kept by mistake would stall the other request for good.
    lost = threading.Event()
    launcher.zk_client.add_session_listener(lost.set)
    zkserver.expire_session(launcher.zk_client.kazoo)
    assert lost.wait(30)
    cloud.fail_creates = 1
    cloud.paused.clear()
    done = [zuul.wait_for_request(r, timeout=60) for r in (first, second)]
    assert sorted(r.state for r in done) == sorted(
        [RequestState.FAILED, RequestState.FULFILLED])
    wait_for(lambda: provider.quota.requests_handled == 0)
    for request in done:
        if request.state == RequestState.FULFILLED:
            zuul.return_nodes(zuul.accept_nodes(request))


SCANNED = """
labels:
  - name: small
providers:
  - name: fake
    driver: test
    boot-timeout: 1
    launch-retries: 2
    pools:
      - name: main
        labels:
          - name: small
            host-key-checking: true
"""


def test_unanswered_host_key_scan_is_a_keyscan_error(
        launcher_factory, zuul, statsd):
    cloud = FakeCloud.get("fake")
    cloud.address = ("127.0.0.1", zkserver.free_port())  # nothing listens
    launcher_factory(SCANNED)
    done = zuul.wait_for_request(zuul.submit(["small"]), timeout=60)
    assert done.state == RequestState.FAILED
    # One result per failed attempt, under nodepool 11's name.
    for key in ("nodepool.launch.error.keyscan",
                "nodepool.launch.provider.fake.error.keyscan",
                "nodepool.launch.provider.fake.az1.error.keyscan"):
        statsd.wait_for_metric(key, "c")
        statsd.wait_for_metric(key, "ms")
    wait_for(lambda: len(statsd.values("nodepool.launch.error.keyscan",
                                       "c")) == 2)
    statsd.sync()
    launch = {name for name in statsd.names()
              if name.startswith("nodepool.launch.")}
    assert launch == {
        "nodepool.launch.error.keyscan",
        "nodepool.launch.provider.fake.error.keyscan",
        "nodepool.launch.provider.fake.az1.error.keyscan",
        "nodepool.launch.requestor.zuul-scheduler.error.keyscan"}


def test_launch_results_outside_the_contract_are_unknown(statsd):
    reporter = stats.StatsReporter(stats.get_client())
    node = Node("0000000001")
    node.provider = "fake"
    # A cloud API that kept failing has no result name in nodepool 11.
    error = CloudApiError("throttled for good")
    reporter.record_node_launch(node, error.statsd_key, 0.5)
    assert stats.launch_result(error) == stats.RESULT_UNKNOWN
    statsd.wait_for_metric("nodepool.launch.error.unknown", "c")
    statsd.wait_for_metric("nodepool.launch.provider.fake.error.unknown",
                           "ms", 500)
    statsd.sync()
    assert not any("api" in name for name in statsd.names())


# Static hosts that are never contacted (no host-key checking).  The
# multi-label host's *second* label has a max-ready-age.
STATIC_AGES = """
labels:
  - name: static-a
  - name: static-b
    max-ready-age: 1
providers:
  - name: static
    driver: static
    pools:
      - name: main
        nodes:
          - name: 127.0.0.2
            labels: [static-a, static-b]
            host-key-checking: false
          - name: 127.0.0.4
            labels: [static-a]
            host-key-checking: false
"""


def test_max_ready_age_applies_to_every_label_of_a_node(
        launcher_factory, zuul):
    launcher_factory(STATIC_AGES)

    def ready_by_host():
        return {n.hostname: n.id for n in read_nodes(zuul.kazoo)
                if n.state == NodeState.READY}
    first = wait_for(lambda: len(ready_by_host()) == 2 and ready_by_host())
    # The two-label host's node ages out and its slot is registered
    # again; the other host's label has no max-ready-age.
    replaced = wait_for(lambda: (
        ready_by_host().get("127.0.0.2") not in (None, first["127.0.0.2"])
        and ready_by_host()))
    assert replaced["127.0.0.4"] == first["127.0.0.4"]


OPENSTACK_GROUPS = """
labels:
  - name: mine
  - name: plain
providers:
  - name: os
    driver: openstack
    cloud: fake
    region-name: RegionOne
    rate: 0
    cloud-images:
      - name: base
        image-name: Fake Image
    pools:
      - name: main
        host-key-checking: false
        networks: [private]
        labels:
          - name: mine
            cloud-image: base
            flavor-name: m1.small
            instance-properties:
              groups: web,db
              team: ci
          - name: plain
            cloud-image: base
            flavor-name: m1.small
"""


def test_openstack_instance_properties_groups_win(launcher_factory, zuul,
                                                  openstack_cloud):
    launcher_factory(OPENSTACK_GROUPS)
    done = zuul.wait_for_request(zuul.submit(["mine", "plain"]), timeout=60)
    assert done.state == RequestState.FULFILLED
    mine, plain = zuul.accept_nodes(done)
    servers = openstack_cloud.live_servers()
    meta = servers[mine.external_id]["metadata"]
    assert meta["groups"] == "web,db"
    assert meta["team"] == "ci"
    assert meta["nodepool_node_id"] == mine.id
    # Without one of the user's, nodepool's own groups.
    assert servers[plain.external_id]["metadata"]["groups"] == \
        "os,base,plain"
    zuul.return_nodes([mine, plain])


# A winrm host without a port; the second host says which port it wants.
STATIC_WINRM = """
labels:
  - name: windows
providers:
  - name: static
    driver: static
    pools:
      - name: main
        nodes:
          - name: {host}
            labels: [windows]
            connection-type: winrm
          - name: 127.0.0.23
            labels: [windows]
            connection-type: winrm
            connection-port: 5986
"""

WINRM_HOST = "127.0.0.22"


def test_static_winrm_host_without_port_uses_22(launcher_factory):
    launcher = launcher_factory(STATIC_WINRM, host="192.0.2.1")
    first, second = launcher.providers["static"].config.pools["main"].nodes
    assert (first.connection_type, first.connection_port) == ("winrm", 22)
    assert second.connection_port == 5986


@pytest.fixture
def port_22_listener():
    """A TCP listener on WINRM_HOST port 22 (needs the right to bind a
    privileged port); it accepts and closes connections."""
    sock = socket.socket()
    try:
        sock.bind((WINRM_HOST, 22))
    except PermissionError:
        sock.close()
        pytest.skip("cannot bind port 22 here")
    sock.listen(16)
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conn.close()
    thread = threading.Thread(target=serve, name="port-22-listener",
                              daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()
    sock.close()


def test_static_winrm_host_checked_on_port_22(launcher_factory, zuul,
                                              port_22_listener):
    launcher_factory(STATIC_WINRM, host=WINRM_HOST)
    node = wait_for(lambda: [n for n in read_nodes(zuul.kazoo)
                             if n.hostname == WINRM_HOST
                             and n.state == NodeState.READY])[0]
    assert (node.connection_type, node.connection_port) == ("winrm", 22)
