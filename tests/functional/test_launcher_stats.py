# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The launcher's own gauges over real UDP: provider and tenant limits from
every pool-worker loop, ZooKeeper queue lengths from every launcher."""

import os
import socket
import time
import types
from dataclasses import replace

from kazoo.protocol.states import KeeperState

from nodepool import stats
from nodepool.launcher.server import Intervals, NodePoolLauncher
from nodepool.launcher.stats_worker import StatsWorker, zk_queue_sizes
from nodepool.zk.cache import NodeCache
from nodepool.zk.client import ZooKeeperClient
from tests.fakes.scanner import FakeScanner
from tests.fixtures.waits import wait_for
from tests.functional.conftest import FAST, base_config

LIMITS = """
labels:
  - name: small
tenant-resource-limits:
  - tenant-name: tenant.a
    max-cores: 8
    max-ram: 16384
    max-servers: 4
    max-volumes: 2
    max-volume-gb: 500
    L-43DA4232: 224
  - tenant-name: "zuul:b"
    max-servers: 1
providers:
  - name: fake
    driver: test
    pools:
      - name: main
        max-servers: 10
        labels:
          - name: small
      - name: second
        max-servers: 5
        labels:
          - name: small
      - name: disabled
        max-servers: 0
        labels:
          - name: small
  - name: unlimited
    driver: test
    pools:
      - name: main
        labels:
          - name: small
"""

EXPECTED_LIMITS = {
    "nodepool.provider.fake.max_servers": 15,
    "nodepool.provider.unlimited.max_servers": float("inf"),
    "nodepool.tenant_limits.tenant_a.cores": 8,
    "nodepool.tenant_limits.tenant_a.ram": 16384,
    "nodepool.tenant_limits.tenant_a.instances": 4,
    "nodepool.tenant_limits.tenant_a.volumes": 2,
    "nodepool.tenant_limits.tenant_a.volume-gb": 500,
    "nodepool.tenant_limits.tenant_a.L-43DA4232": 224,
    "nodepool.tenant_limits.zuul_b.instances": 1,
}

ONE_PROVIDER = """
labels:
  - name: small
tenant-resource-limits:
  - tenant-name: {tenant}
    max-cores: {cores}
providers:
  - name: {provider}
    driver: test
    pools:
      - name: main
        max-servers: {max_servers}
        labels:
          - name: small
"""

ZK_BASE = "nodepool.launcher.%s.zk." % socket.gethostname()
ZK_GAUGES = [ZK_BASE + "client.connection_queue"] + [
    ZK_BASE + "%s.%s" % (cache, queue)
    for cache in ("node_cache", "request_cache", "image_cache")
    for queue in ("event_queue", "playback_queue")]


def limit_gauges(statsd):
    """The last value of every provider-limit and tenant-limit gauge."""
    return {name: value for name, value in statsd.gauges().items()
            if name.startswith("nodepool.tenant_limits.")
            or name.endswith(".max_servers")}


def stats_worker_of(launcher):
    return next(w for w in launcher.workers if isinstance(w, StatsWorker))


# -- provider and tenant limits ----------------------------------------------

def test_limit_gauges_names_and_values(statsd, launcher_factory):
    launcher_factory(LIMITS)
    for name, value in EXPECTED_LIMITS.items():
        statsd.wait_for_metric(name, "g", value)
    statsd.sync()
    assert limit_gauges(statsd) == EXPECTED_LIMITS
    assert set(statsd.values("nodepool.provider.unlimited.max_servers")) \
        == {"inf"}
    assert statsd.malformed() == []


def test_limit_gauges_from_every_launcher(statsd, launcher_factory):
    # Two launchers with different configs: only one of them can win the
    # stats election, yet each reports its own providers and tenants.
    launcher_factory(ONE_PROVIDER, tenant="t1", cores=3, provider="one",
                     max_servers=7)
    launcher_factory(ONE_PROVIDER, tenant="t2", cores=5, provider="two",
                     max_servers=9)
    statsd.wait_for_metric("nodepool.provider.one.max_servers", "g", 7)
    statsd.wait_for_metric("nodepool.provider.two.max_servers", "g", 9)
    statsd.wait_for_metric("nodepool.tenant_limits.t1.cores", "g", 3)
    statsd.wait_for_metric("nodepool.tenant_limits.t2.cores", "g", 5)


def test_limit_gauges_repeat_but_throttled(statsd, launcher_factory):
    started = time.monotonic()
    launcher = launcher_factory(LIMITS)
    assert launcher.intervals.pool <= 0.05  # ~20 pool passes a second
    key = "nodepool.provider.fake.max_servers"
    tenant_key = "nodepool.tenant_limits.tenant_a.cores"
    # Sent again on later loops (a second apart)...
    wait_for(lambda: len(statsd.values(key, "g")) >= 2, timeout=10)
    wait_for(lambda: len(statsd.values(tenant_key, "g")) >= 2, timeout=10)
    statsd.sync()
    elapsed = time.monotonic() - started
    # ... but at most once a second per provider and launcher, although
    # the provider has three pool workers looping every 50 ms.
    assert len(launcher.pool_workers) == 4
    assert len(statsd.values(key, "g")) <= elapsed + 1
    assert len(statsd.values(tenant_key, "g")) <= elapsed + 1
    assert set(statsd.values(key, "g")) == {"15"}


def test_limit_gauges_follow_config_reload(statsd, launcher_factory):
    launcher = launcher_factory(ONE_PROVIDER, tenant="t1", cores=3,
                                provider="one", max_servers=7)
    statsd.wait_for_metric("nodepool.tenant_limits.t1.cores", "g", 3)
    path = launcher.watcher.path
    with open(path) as f:
        text = f.read().replace("max-cores: 3", "max-cores: 6")
    with open(path, "w") as f:
        f.write(text)
    os.utime(path, (time.time() + 5, time.time() + 5))
    statsd.wait_for_metric("nodepool.tenant_limits.t1.cores", "g", 6,
                           timeout=30)


def test_limit_gauges_not_from_stats_election(statsd, launcher_factory):
    # max_servers comes from the pool workers now; the elected stats
    # worker only sends the global node and request gauges.
    launcher = launcher_factory(LIMITS)
    statsd.wait_for_metric("nodepool.provider.fake.max_servers", "g", 15)
    launcher.services.stats.pool_gauge_interval = 3600  # pools: quiet now
    statsd.wait_for_metric("nodepool.nodes.ready", "g")
    statsd.sync()
    statsd.clear()
    stats_worker_of(launcher)._emit()
    statsd.sync()
    names = statsd.names()
    assert "nodepool.nodes.ready" in names
    assert not [n for n in names if n.endswith(".max_servers")]


# -- ZooKeeper queues ---------------------------------------------------------

def test_zk_queue_gauges(statsd, launcher_factory):
    launcher = launcher_factory(intervals=replace(FAST, zk_queues=0.1))
    assert stats_worker_of(launcher).zk_interval == 0.1
    for name in ZK_GAUGES:
        statsd.wait_for_metric(name, "g", lambda v: v.isdigit())
    # Repeated every interval.
    wait_for(lambda: len(statsd.values(ZK_GAUGES[0], "g")) >= 3)
    statsd.sync()
    zk_names = {n for n in statsd.names("g")
                if n.startswith("nodepool.launcher.")}
    assert zk_names == set(ZK_GAUGES)
    for name in ZK_GAUGES:
        assert all(v.isdigit() for v in statsd.values(name))


def test_zk_queue_gauges_from_every_launcher(statsd, launcher_factory):
    # A long interval: each launcher sends once, when it starts.
    slow = replace(FAST, zk_queues=3600)
    launcher_factory(intervals=slow)
    launcher_factory(intervals=slow)
    for name in ZK_GAUGES:
        wait_for(lambda: len(statsd.values(name, "g")) >= 2)
    statsd.sync()
    for name in ZK_GAUGES:
        assert len(statsd.values(name, "g")) == 2


def test_zk_queue_default_interval(statsd, launcher_factory):
    launcher = launcher_factory(intervals=replace(FAST, zk_queues=10.0))
    worker = stats_worker_of(launcher)
    assert Intervals().zk_queues == 10.0
    assert worker.zk_interval == 10.0
    assert worker.hostname == socket.gethostname()
    # Sent at once on start, not only after the first ten seconds.
    statsd.wait_for_metric(ZK_GAUGES[0], "g")


def test_no_zk_queue_thread_without_statsd(launcher_factory, monkeypatch):
    monkeypatch.delenv("STATSD_HOST", raising=False)
    launcher = launcher_factory()
    worker = stats_worker_of(launcher)
    assert not launcher.services.stats.enabled
    assert not worker._zk_thread.is_alive()


def test_launcher_without_reporter_sends_nothing(tmp_path, zk_factory,
                                                 statsd):
    # The environment names a statsd server, but only the daemon's entry
    # point reads it: a launcher given no reporter has metrics off.
    path = tmp_path / "nodepool.yaml"
    path.write_text(base_config())
    launcher = NodePoolLauncher(str(path), zk_client=zk_factory(),
                                intervals=FAST, scanner=FakeScanner())
    launcher.start()
    try:
        assert launcher.ready.wait(30)
        assert launcher.services.stats is launcher.stats
        assert not launcher.stats.enabled
    finally:
        launcher.stop()
        launcher.join()


def test_queue_sizes_read_from_client_and_caches(zk_client):
    client = ZooKeeperClient("127.0.0.1:1")  # nobody listens there
    assert client.connection_queue_size == 0
    # Calls made while kazoo keeps trying to connect wait in its queue.
    client.kazoo.start_async()
    try:
        wait_for(lambda: client.kazoo.client_state == KeeperState.CONNECTING)
        pending = [client.kazoo.exists_async("/a"),
                   client.kazoo.get_children_async("/")]
        assert client.connection_queue_size == 2
    finally:
        client.kazoo.stop()
        client.kazoo.close()
    assert client.connection_queue_size == 0
    assert all(call.exception is not None for call in pending)

    caches = [NodeCache(zk_client) for _ in range(3)]  # not started
    for i, cache in enumerate(caches):
        assert cache.event_queue_size == cache.playback_queue_size == 0
        for _ in range(i):
            cache._event_queue.put(object())
        for _ in range(2 * i):
            cache._playback_queue.put(object())
    services = types.SimpleNamespace(
        zk_client=zk_client, node_cache=caches[0], request_cache=caches[1],
        image_cache=caches[2])
    connection, sizes = zk_queue_sizes(services)
    assert isinstance(connection, int)
    assert sizes == {"node_cache": (0, 0), "request_cache": (1, 2),
                     "image_cache": (2, 4)}
    assert tuple(sizes) == stats.ZK_CACHES
