# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Launcher behaviour under faults, limits and operator settings."""

import os
import socket
import threading
import time

from nodepool.driver.quota import QuotaInformation
from nodepool.launcher.server import NodePoolLauncher
from nodepool.stats import StatsReporter
from nodepool.zk.models import NodeState, RequestState
from nodepool.zk.requests import RequestStore
from tests.fakes.scanner import FakeScanner
from tests.fakes.test_driver import FakeCloud
from tests.fixtures import zkserver
from tests.fixtures.waits import wait_for
from tests.functional.conftest import (
    FAST, SMALL_PROVIDER, idle_ready, nodes_of, read_nodes)

TWO_PROVIDERS = """
labels:
  - name: small
providers:
  - name: first
    driver: test
    priority: {first_priority}
    pools:
      - name: main
        labels:
          - name: small
  - name: second
    driver: test
    priority: 50
    pools:
      - name: main
        labels:
          - name: small
"""

TENANTS = """
labels:
  - name: small
tenant-resource-limits:
  - tenant-name: tenant-a
    max-cores: 2
""" + SMALL_PROVIDER

AGES = """
labels:
  - name: small
    max-ready-age: 1
max-hold-age: 1
""" + SMALL_PROVIDER

NO_HOLD_LIMIT = """
labels:
  - name: small
max-hold-age: -1
""" + SMALL_PROVIDER


def all_nodes(zuul):
    """Every readable node record, as a Zuul-side observer sees them."""
    return read_nodes(zuul.kazoo)


def test_quota_exception_aborts_and_relaunches(launcher_factory, zuul):
    launcher_factory()
    cloud = FakeCloud.get("fake")
    cloud.quota_failures = 1
    done = zuul.wait_for_request(zuul.submit(["small"]))
    assert done.state == RequestState.FULFILLED
    assert cloud.created == 1
    # The aborted node record is cleaned up.
    wait_for(lambda: [n.id for n in all_nodes(zuul)] == done.nodes)


def test_label_that_can_never_work_is_declined(launcher_factory, zuul):
    FakeCloud.get("fake").bad_labels.add("large")
    launcher_factory()
    done = zuul.wait_for_request(zuul.submit(["large"]))
    assert done.state == RequestState.FAILED
    ok = zuul.wait_for_request(zuul.submit(["small"]))
    assert ok.state == RequestState.FULFILLED


def test_provider_quota_exceeded_request_declined(launcher_factory, zuul):
    FakeCloud.get("fake").limits = QuotaInformation(cores=3,
                                                    default=float("inf"))
    launcher_factory()
    done = zuul.wait_for_request(zuul.submit(["large"]))  # needs 4 cores
    assert done.state == RequestState.FAILED
    ok = zuul.wait_for_request(zuul.submit(["small", "small"]))
    assert ok.state == RequestState.FULFILLED


def test_delete_errors_are_retried(launcher_factory, zuul):
    launcher_factory()
    cloud = FakeCloud.get("fake")
    cloud.fail_deletes = 2
    nodes = zuul.accept_nodes(zuul.wait_for_request(zuul.submit(["small"])))
    zuul.return_nodes(nodes)
    wait_for(lambda: not all_nodes(zuul) and not cloud.list())
    assert cloud.fail_deletes == 0


def test_session_loss_mid_launch_leaks_nothing(launcher_factory, zuul):
    launcher = launcher_factory()
    cloud = FakeCloud.get("fake")
    cloud.create_steps = 3
    cloud.paused.set()  # creates make no progress for now
    request = zuul.submit(["small"])
    wait_for(lambda: any(n.state == NodeState.BUILDING
                         for n in all_nodes(zuul)))
    lost = threading.Event()
    launcher.zk_client.add_session_listener(lost.set)
    zkserver.expire_session(launcher.zk_client.kazoo)
    assert lost.wait(30)
    cloud.paused.clear()
    done = zuul.wait_for_request(request, timeout=60)
    assert done.state == RequestState.FULFILLED
    nodes = zuul.accept_nodes(done)
    zuul.return_nodes(nodes)
    # Every instance ever created is gone again; every record too.
    wait_for(lambda: not all_nodes(zuul) and not cloud.list(), timeout=60)


def test_provider_hint_and_priority(launcher_factory, zuul):
    launcher = launcher_factory(TWO_PROVIDERS, first_priority=100)
    # A pool yields only to pools it sees registered: until the second
    # one's record shows up, the first serves whatever comes.
    wait_for(lambda: {p.provider_name for p in
                      launcher.services.registry.pools()}
             == {"first", "second"})

    def served_by(**kwargs):
        done = zuul.wait_for_request(zuul.submit(["small"], **kwargs))
        assert done.state == RequestState.FULFILLED
        return {n.provider for n in all_nodes(zuul)
                if n.id in done.nodes}
    # The provider with the lower priority value wins...
    assert served_by() == {"second"}
    # ...unless the request names a provider.
    assert served_by(provider="first") == {"first"}


def test_tenant_limits_defer_requests(launcher_factory, zuul):
    launcher_factory(TENANTS)
    first = zuul.wait_for_request(zuul.submit(["small", "small"],
                                              tenant_name="tenant-a"))
    assert first.state == RequestState.FULFILLED
    nodes = zuul.accept_nodes(first)
    deferred = zuul.submit(["small"], tenant_name="tenant-a")
    other = zuul.wait_for_request(zuul.submit(["small"],
                                              tenant_name="tenant-b"))
    assert other.state == RequestState.FULFILLED
    assert zuul.get_request(deferred).state == RequestState.REQUESTED
    zuul.return_nodes(nodes)
    done = zuul.wait_for_request(deferred, timeout=30)
    assert done.state == RequestState.FULFILLED


def test_lost_pending_request_is_requeued(launcher_factory, zuul, zk_factory):
    # A pending request nobody holds (its launcher died) goes back to
    # requested and is then served.
    client = zk_factory()
    store = RequestStore(client)
    request = zuul.submit(["small"])
    raw = store.get_request(request.id, cached=False)
    raw.state = RequestState.PENDING
    store.store_request(raw)
    launcher_factory()
    done = zuul.wait_for_request(request, timeout=30)
    assert done.state == RequestState.FULFILLED


def test_pending_request_released_by_its_holder_is_requeued(
        launcher_factory, zuul, zk_factory):
    """A pending request's lock held by a live launcher is read once, not
    on every cleanup pass; when that launcher lets go of it without
    leaving (no component departs), the request is still handed back."""
    store = RequestStore(zk_factory())
    request = zuul.submit(["small"])
    raw = store.get_request(request.id, cached=False)
    store.lock_request(raw)
    raw.state = RequestState.PENDING
    store.store_request(raw)
    launcher = launcher_factory()
    cleanup = launcher.cleanup_worker
    wait_for(lambda: cleanup.held_locks.reads >= 1)
    passes = cleanup.passes
    wait_for(lambda: cleanup.passes >= passes + 3)
    assert cleanup.held_locks.reads == 1
    assert zuul.get_request(request).state == RequestState.PENDING
    store.unlock_request(raw)
    done = zuul.wait_for_request(request, timeout=30)
    assert done.state == RequestState.FULFILLED


def test_max_ready_age_and_max_hold_age(launcher_factory, zuul):
    launcher_factory(AGES)
    cloud = FakeCloud.get("fake")
    done = zuul.wait_for_request(zuul.submit(["small", "small"]))
    nodes = zuul.accept_nodes(done)
    zuul.hold_nodes(nodes[:1], hold_job="tenant project job",
                    comment="debugging")
    zuul.return_nodes(nodes[1:])
    # The held node goes after max-hold-age (1 s).
    wait_for(lambda: not all_nodes(zuul), timeout=30)
    # An unused ready node goes after max-ready-age (1 s).
    created = cloud.created
    request = zuul.submit(["small"])
    done = zuul.wait_for_request(request)
    zuul.cancel(done)
    # The request is gone: the node is freed, then aged out.
    wait_for(lambda: cloud.created == created + 1 and not all_nodes(zuul),
             timeout=30)


def test_negative_max_hold_age_keeps_held_nodes(launcher_factory, zuul):
    """max-hold-age (and hold_expiration) <= 0 means no limit."""
    launcher = launcher_factory(NO_HOLD_LIMIT)
    cleanup = launcher.cleanup_worker
    done = zuul.wait_for_request(zuul.submit(["small", "small"]))
    nodes = zuul.accept_nodes(done)
    zuul.hold_nodes(nodes[:1], hold_job="tenant project job")
    zuul.hold_nodes(nodes[1:], hold_job="tenant project job",
                    hold_expiration=-1)
    held = sorted(n.id for n in nodes)

    def states():
        return {n.id: n.state for n in all_nodes(zuul)}

    def cached_held():
        return sorted(n.id for n in launcher.services.node_cache.values()
                      if n.state == NodeState.HOLD)
    wait_for(lambda: cached_held() == held)
    # Three more cleanup passes (the first may have read the cache before
    # the holds showed), or a node deleted.
    seen = cleanup.passes
    wait_for(lambda: cleanup.passes >= seen + 3
             or any(s != NodeState.HOLD for s in states().values()),
             timeout=30)
    assert states() == {i: NodeState.HOLD for i in held}
    assert FakeCloud.get("fake").deleted == 0


def test_stats_emitted(launcher_factory, zuul, statsd):
    launcher_factory()
    done = zuul.wait_for_request(zuul.submit(["small"]))
    assert done.state == RequestState.FULFILLED
    statsd.wait_for_metric("nodepool.launch.ready", "ms")
    statsd.wait_for_metric("nodepool.launch.provider.fake.ready", "c")
    statsd.wait_for_metric("nodepool.nodes.ready", "g")
    statsd.wait_for_metric("nodepool.provider.fake.nodes.ready", "g")
    statsd.wait_for_metric("nodepool.label.small.nodes.ready", "g")


REALISTIC = """
webapp:
  listen_address: 127.0.0.1
  port: 0
labels:
  - name: small
  - name: large
  - name: os-small
  - name: static-a
providers:
  - name: fake
    driver: test
    pools:
      - name: main
        max-servers: {max_servers}
        labels:
          - name: small
      - name: second
        labels:
          - name: large
            cores: 4
  - name: os
    driver: openstack
    cloud: fake
    region-name: RegionOne
    rate: 0
    cloud-images:
      - name: base
        image-name: Fake Image
        username: zuul
    pools:
      - name: main
        host-key-checking: false
        networks: [private]
        labels:
          - name: os-small
            cloud-image: base
            min-ram: 2048
      - name: spare
        host-key-checking: false
        networks: [private]
        labels: []
  - name: static
    driver: static
    pools:
      - name: main
        nodes:
          - name: 127.0.0.1
            labels: [static-a]
            host-key-checking: false
            host-key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIStaticKeyOnly
      - name: other
        nodes: []
"""


def test_stop_and_join_leave_no_thread_behind(tmp_path, zk_factory, zuul,
                                              statsd, openstack_cloud):
    """Every thread the launcher started is gone once stop() and join()
    returned, whatever its name.

    The ZooKeeper client is the test's: it is connected (kazoo's
    connection and callback threads, our dispatcher) before the snapshot,
    and the launcher neither owns nor closes it.
    """
    path = tmp_path / "nodepool.yaml"
    path.write_text(REALISTIC.format(max_servers=10))
    zk_client = zk_factory()
    before = set(threading.enumerate())
    launcher = NodePoolLauncher(str(path), zk_client=zk_client,
                                intervals=FAST, scanner=FakeScanner(),
                                stats=StatsReporter.from_environment(),
                                webapp=True)
    launcher.start()
    try:
        assert launcher.ready.wait(30)
        assert launcher.webapp.port
        requests = [zuul.submit(labels) for labels in (
            ["small"], ["large"], ["os-small"], ["static-a"])]
        for request in requests:
            done = zuul.wait_for_request(request, timeout=60)
            assert done.state == RequestState.FULFILLED
            zuul.return_nodes(zuul.accept_nodes(done))
        # Each pool's start threads are told apart by provider and pool.
        names = [t.name for t in threading.enumerate()]
        for pool in ("main", "second"):
            assert any(n.startswith("start-fake-%s_" % pool) for n in names)
        statsd.wait_for_metric("nodepool.launcher.%s.zk.client.connection_queue"
                               % socket.gethostname(), "g")
        # A launch that never ends keeps the old pool worker of a changed
        # provider draining while its provider is being retired.
        FakeCloud.get("fake").paused.set()
        zuul.submit(["small"])
        wait_for(lambda: any(n.state == NodeState.BUILDING
                             for n in read_nodes(zuul.kazoo)))
        old = launcher.providers["fake"]
        path.write_text(REALISTIC.format(max_servers=20))
        os.utime(path, (time.time() + 5, time.time() + 5))
        wait_for(lambda: launcher.providers.get("fake") not in (None, old))
        assert launcher.retiring
    finally:
        launcher.stop()
        launcher.join(timeout=10)
    extra = [t for t in set(threading.enumerate()) - before
             if not t.name.endswith("(process_request_thread)")]
    assert extra == []
    # The fake cloud's own thread for a connection ends once it reads the
    # close the launcher sent: on a loaded machine that may come a moment
    # after join() returned.  A connection left open would keep it.
    wait_for(lambda: not set(threading.enumerate()) - before)
    assert launcher.retiring == []


def test_reload_keeps_in_flight_launches(launcher_factory, zuul):
    launcher = launcher_factory()
    cloud = FakeCloud.get("fake")
    cloud.paused.set()
    request = zuul.submit(["small"])
    wait_for(lambda: any(n.state == NodeState.BUILDING
                         for n in all_nodes(zuul)))
    old_worker = launcher.pool_workers[("fake", "main")]
    path = launcher.watcher.path
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("max-servers: 10", "max-servers: 20"))
    os.utime(path, (time.time() + 5, time.time() + 5))

    def replaced():
        worker = launcher.pool_workers.get(("fake", "main"))
        return worker is not None and worker is not old_worker
    wait_for(replaced)
    assert launcher.providers["fake"].config.pools["main"].max_servers == 20
    cloud.paused.clear()
    done = zuul.wait_for_request(request)
    assert done.state == RequestState.FULFILLED
    assert cloud.created == 1
    # The old pool worker finished its request, then went away.
    wait_for(lambda: not old_worker._thread.is_alive())


SCANNED = """
labels:
  - name: small
providers:
  - name: fake
    driver: test
    boot-timeout: {boot_timeout}
    launch-retries: 1
    pools:
      - name: main
        labels:
          - name: small
            host-key-checking: true
"""


def test_host_keys_scanned_from_real_sshd(launcher_factory, zuul, sshd):
    FakeCloud.get("fake").address = ("127.0.0.1", sshd.port)
    launcher_factory(SCANNED, boot_timeout=30)
    done = zuul.wait_for_request(zuul.submit(["small"]))
    assert done.state == RequestState.FULFILLED
    (node,) = zuul.accept_nodes(done)
    assert sorted(node.host_keys) == sorted(sshd.host_keys())
    assert node.interface_ip == "127.0.0.1"
    assert node.connection_port == sshd.port
    zuul.return_nodes([node])


def test_unreachable_instance_fails_and_is_deleted(launcher_factory, zuul):
    cloud = FakeCloud.get("fake")
    cloud.address = ("127.0.0.1", zkserver.free_port())  # nothing listens
    launcher_factory(SCANNED, boot_timeout=2)
    done = zuul.wait_for_request(zuul.submit(["small"]), timeout=60)
    assert done.state == RequestState.FAILED
    wait_for(lambda: not all_nodes(zuul) and not cloud.list(), timeout=30)


def test_request_canceled_while_its_node_launches(launcher_factory, zuul):
    """Zuul deletes a request whose node is still booting: once the node
    is ready the launcher finds the request gone (the fulfilling write
    fails), frees the node for other requests and creates no record."""
    cloud = FakeCloud.get("fake")
    cloud.paused.set()
    launcher_factory()
    request = zuul.submit(["small"])
    wait_for(lambda: nodes_of(zuul, label="small"))
    assert zuul.cancel(request)
    cloud.paused.clear()
    (node,) = wait_for(lambda: idle_ready(zuul) or None, timeout=30)
    assert node.allocated_to is None
    assert not zuul.kazoo.exists("/nodepool/requests/" + request.id)
