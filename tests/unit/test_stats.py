# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""statsd metrics: names, types and values over real UDP."""

import logging
import math
import socket
import types

import pytest
import statsd as statsd_lib

from nodepool import stats
from nodepool.config.models import FrozenDict, TenantResourceLimit
from nodepool.driver.base import PoolConfig, ProviderConfig
from nodepool.zk.registry import ComponentInfo
from nodepool.zk.models import Node, NodeRequest, NodeState
from tests.fixtures import statsd as statsd_fixture

# The fixture, under the name tests use (assigned rather than imported so
# that test arguments named ``statsd`` do not shadow an import).
statsd = statsd_fixture.statsd

ALL_NODE_STATES = ("building", "testing", "ready", "in-use", "used", "hold",
                   "deleting", "failed", "init", "aborted", "deleted")


@pytest.fixture
def reporter(statsd):
    client = stats.get_client()
    assert client is not None
    return stats.StatsReporter(client)


def make_node(state, provider="fake-provider", labels=("fake-label",),
              az=None, requestor=None, node_id="0000000001"):
    node = Node(node_id)
    if state is not None:
        node.state = state
    node.provider = provider
    node.pool = "main"
    node.type = list(labels)
    node.az = az
    node.requestor = requestor
    return node


def make_request(node_types, request_id="200-0000000001"):
    request = NodeRequest.new(node_types, "zuul")
    request.id = request_id
    return request


def pool_component(provider, pool, labels):
    return ComponentInfo("pool", "host0000000001", {
        "provider_name": provider, "name": pool,
        "supported_labels": list(labels)})


def pool_config(name, max_servers):
    return PoolConfig(name=name, max_servers=max_servers, priority=100,
                      node_attributes=FrozenDict(), labels=FrozenDict())


def provider_config(name, *pools):
    return ProviderConfig(name=name, driver="static", max_concurrency=0,
                          priority=None,
                          pools=FrozenDict((p.name, p) for p in pools))


# -- the client ---------------------------------------------------------------

def test_get_client_unset(monkeypatch):
    monkeypatch.delenv("STATSD_HOST", raising=False)
    monkeypatch.delenv("STATSD_PORT", raising=False)
    assert stats.get_client() is None
    monkeypatch.setenv("STATSD_PORT", "9999")
    assert stats.get_client() is None
    monkeypatch.setenv("STATSD_HOST", "")
    assert stats.get_client() is None


def test_get_client_default_port(monkeypatch):
    monkeypatch.setenv("STATSD_HOST", "127.0.0.1")
    monkeypatch.delenv("STATSD_PORT", raising=False)
    client = stats.get_client()
    assert client._addr == ("127.0.0.1", 8125)
    assert client._prefix is None


def test_get_client_bad_port(monkeypatch, caplog):
    monkeypatch.setenv("STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("STATSD_PORT", "not-a-port")
    with caplog.at_level(logging.ERROR, logger="nodepool.stats"):
        assert stats.get_client() is None
    assert "statsd disabled" in caplog.text


def test_fixture_points_environment_at_listener(statsd):
    reporter = stats.StatsReporter.from_environment()
    assert reporter.enabled
    assert isinstance(reporter.client, statsd_lib.StatsClient)
    reporter.record_leaked("p", "instances")
    assert statsd.wait_for_metric("nodepool.provider.p.leaked.instances",
                                  "c", 1)


# -- normalisation and results ------------------------------------------------

@pytest.mark.parametrize("raw,key", [
    ("NodePool:min-ready", "NodePool_min-ready"),
    ("zuul.example.com", "zuul_example_com"),
    ("a.b:c", "a_b_c"),
    ("plain-name_1", "plain-name_1"),
])
def test_normalize(raw, key):
    assert stats.normalize(raw) == key


class KeyedError(Exception):
    pass


def test_launch_result():
    assert stats.launch_result() == "ready"
    assert stats.launch_result(None) == stats.RESULT_READY
    assert stats.launch_result(RuntimeError("x")) == "error.unknown"
    exc = KeyedError()
    exc.statsd_key = "error.quota"
    assert stats.launch_result(exc) == "error.quota"
    exc.statsd_key = "capacity"
    assert stats.launch_result(exc) == "error.capacity"
    exc.statsd_key = None
    assert stats.launch_result(exc) == "error.unknown"
    assert stats.RESULT_ZKSESSION == "error.zksession"
    assert stats.RESULT_QUOTA == "error.quota"


def test_launch_result_from_nodepool_exceptions():
    # Exceptions carrying their key as a class attribute.
    class QuotaLike(Exception):
        statsd_key = "error.quota"
    assert stats.launch_result(QuotaLike()) == "error.quota"


# -- launches -----------------------------------------------------------------

def test_record_launch_all_keys(statsd, reporter):
    reporter.record_launch("ready", 1.5, provider="fake-provider", az="az1",
                           requestor="NodePool:min-ready")
    keys = ["nodepool.launch.ready",
            "nodepool.launch.provider.fake-provider.ready",
            "nodepool.launch.provider.fake-provider.az1.ready",
            "nodepool.launch.requestor.NodePool_min-ready.ready"]
    for key in keys:
        name, value, _ = statsd.wait_for_metric(key, "ms")
        assert float(value) == 1500.0
        assert value == "1500.000000"
        statsd.wait_for_metric(key, "c", "1")
    statsd.sync()
    assert statsd.names("ms") == set(keys)
    assert statsd.names("c") == set(keys)
    assert len(statsd.metrics()) == 8
    # One pipeline, one datagram.
    assert statsd.datagram_count() == 1


def test_record_launch_without_az_and_requestor(statsd, reporter):
    reporter.record_launch("error.quota", 0.25, provider="fake-provider")
    statsd.wait_for_metric(
        "nodepool.launch.provider.fake-provider.error.quota", "ms", 250)
    statsd.sync()
    assert statsd.names() == {
        "nodepool.launch.error.quota",
        "nodepool.launch.provider.fake-provider.error.quota"}


def test_record_launch_requestor_dots(statsd, reporter):
    reporter.record_launch(stats.RESULT_ZKSESSION, 2, provider="p",
                           requestor="zuul.example.com")
    statsd.wait_for_metric(
        "nodepool.launch.requestor.zuul_example_com.error.zksession", "c", 1)


def test_record_node_launch(statsd, reporter):
    node = make_node(NodeState.BUILDING, az="nova",
                     requestor="NodePool:min-ready")
    reporter.record_node_launch(node, "error.keyscan", 0.001)
    for key in ("nodepool.launch.error.keyscan",
                "nodepool.launch.provider.fake-provider.error.keyscan",
                "nodepool.launch.provider.fake-provider.nova.error.keyscan",
                "nodepool.launch.requestor.NodePool_min-ready.error.keyscan"):
        statsd.wait_for_metric(key, "ms", 1.0)
        statsd.wait_for_metric(key, "c", 1)


# -- leaks --------------------------------------------------------------------

def test_record_leaked(statsd, reporter):
    reporter.record_leaked("fake-provider", "instances")
    reporter.record_leaked("fake-provider", "ports", 3)
    reporter.record_leaked("azure-provider", "INSTANCEs")
    reporter.record_leaked("fake-provider", "floatingips", 0)
    statsd.wait_for_metric("nodepool.provider.fake-provider.leaked.instances",
                           "c", "1")
    statsd.wait_for_metric("nodepool.provider.fake-provider.leaked.ports",
                           "c", "3")
    statsd.wait_for_metric("nodepool.provider.azure-provider.leaked.INSTANCEs",
                           "c", "1")
    statsd.sync()
    assert len(statsd.metrics()) == 3


# -- node gauges --------------------------------------------------------------

def test_node_gauges_zeros_without_nodes(statsd, reporter):
    pools = [pool_component("fake-provider", "main", ["fake-label"])]
    reporter.update_node_gauges([], pools)
    statsd.sync()
    gauges = statsd.gauges()
    expected = {}
    for state in ALL_NODE_STATES:
        expected["nodepool.nodes.%s" % state] = 0
        expected["nodepool.provider.fake-provider.nodes.%s" % state] = 0
        expected["nodepool.label.fake-label.nodes.%s" % state] = 0
    assert gauges == expected
    assert all(kind == "g" for _, _, kind in statsd.metrics())
    assert all(value == "0" for _, value, _ in statsd.metrics())


def test_node_gauges_counts(statsd, reporter):
    pools = [
        pool_component("fake-provider", "main", ["fake-label", "small"]),
        pool_component("other-provider", "p1", ["big"]),
    ]
    nodes = [
        make_node(NodeState.READY, node_id="0000000001"),
        make_node(NodeState.READY, node_id="0000000002"),
        make_node(NodeState.IN_USE, labels=("fake-label", "small"),
                  node_id="0000000003"),
        make_node(NodeState.BUILDING, provider="gone-provider",
                  labels=("ancient",), node_id="0000000004"),
        make_node(NodeState.DELETED, provider=None, labels=(),
                  node_id="0000000005"),
        make_node(None, node_id="0000000006"),   # blank: skipped
    ]
    reporter.update_node_gauges(nodes, pools)
    statsd.sync()
    gauges = statsd.gauges()

    def check(prefix, **counts):
        for state in ALL_NODE_STATES:
            want = counts.get(state.replace("-", "_"), 0)
            assert gauges.pop("%s.nodes.%s" % (prefix, state)) == want, (
                prefix, state)

    check("nodepool", ready=2, in_use=1, building=1, deleted=1)
    check("nodepool.provider.fake-provider", ready=2, in_use=1)
    check("nodepool.provider.other-provider")
    check("nodepool.provider.gone-provider", building=1)
    check("nodepool.label.fake-label", ready=2, in_use=1)
    check("nodepool.label.small", in_use=1)
    check("nodepool.label.big")
    check("nodepool.label.ancient", building=1)
    # Nothing else: in particular no "nodepool.provider.None..." gauges.
    assert gauges == {}


def test_node_gauges_from_stored_records(statsd, reporter):
    # Records as the node cache holds them (read from JSON; an old record
    # with a bare string label).
    payload = b'{"state": "hold", "provider": "p", "type": "single-label"}'
    node = Node.from_bytes(payload, id="0000000009")
    reporter.update_node_gauges([node])
    statsd.wait_for_metric("nodepool.nodes.hold", "g", 1)
    statsd.wait_for_metric("nodepool.provider.p.nodes.hold", "g", 1)
    statsd.wait_for_metric("nodepool.label.single-label.nodes.hold", "g", 1)
    statsd.wait_for_metric("nodepool.label.single-label.nodes.ready", "g", 0)


def test_node_gauges_batched(statsd, reporter):
    pools = [pool_component("fake-provider", "main", ["fake-label"])]
    reporter.update_node_gauges([], pools)
    statsd.sync()
    # 33 gauges do not fit one 512-byte datagram; the pipeline splits them
    # and every line still arrives whole.
    assert len(statsd.metrics()) == 33
    assert 1 < statsd.datagram_count() < 33
    assert statsd.malformed() == []


# -- request gauges -----------------------------------------------------------

def test_request_gauges(statsd, reporter):
    pools = [
        pool_component("fake-provider", "main", ["a", "b"]),
        pool_component("fake-provider", "second", ["c"]),
        pool_component("other-provider", "main", ["a", "b", "c"]),
    ]
    requests = [make_request(["a"], "200-0000000001"),
                make_request(["a", "b", "a"], "200-0000000002"),
                make_request(["a", "c"], "100-0000000003"),
                make_request(["d"], "300-0000000004")]
    requests[1].state = "pending"
    reporter.update_request_gauges(requests, pools)
    statsd.sync()
    assert statsd.gauges() == {
        "nodepool.provider.fake-provider.pool.main.addressable_requests": 2,
        "nodepool.provider.fake-provider.pool.second.addressable_requests":
            0,
        "nodepool.provider.other-provider.pool.main.addressable_requests":
            3,
    }


def test_request_gauges_same_pool_twice(statsd, reporter):
    # Two launchers running the same provider pool: one gauge.
    pools = [pool_component("p", "main", ["a"]),
             pool_component("p", "main", ["a", "b"])]
    reporter.update_request_gauges([make_request(["b"])], pools)
    statsd.sync()
    assert statsd.metrics() == [
        ("nodepool.provider.p.pool.main.addressable_requests", "1", "g")]


def test_request_gauges_no_pools(statsd, reporter):
    reporter.update_request_gauges([make_request(["a"])], [])
    statsd.sync()
    assert statsd.metrics() == []


def test_global_gauges_one_call(statsd, reporter):
    pools = [pool_component("fake-provider", "main", ["fake-label"])]
    reporter.update_global_gauges([make_node(NodeState.READY)],
                                  [make_request(["fake-label"])], pools)
    statsd.sync()
    gauges = statsd.gauges()
    assert gauges["nodepool.nodes.ready"] == 1
    assert gauges["nodepool.provider.fake-provider.nodes.ready"] == 1
    assert gauges["nodepool.label.fake-label.nodes.ready"] == 1
    assert gauges[
        "nodepool.provider.fake-provider.pool.main.addressable_requests"] == 1
    assert len(gauges) == 34


# -- provider and tenant limits ----------------------------------------------

def test_provider_max_servers(statsd, reporter):
    reporter.update_provider_limits(provider_config(
        "fake-provider", pool_config("a", 10), pool_config("b", 0),
        pool_config("c", 5)))
    statsd.wait_for_metric("nodepool.provider.fake-provider.max_servers",
                           "g", "15")
    reporter.update_provider_limits(provider_config(
        "unlimited", pool_config("a", 10), pool_config("b", math.inf)))
    statsd.wait_for_metric("nodepool.provider.unlimited.max_servers",
                           "g", "inf")
    reporter.update_provider_limits(provider_config("empty"))
    statsd.wait_for_metric("nodepool.provider.empty.max_servers", "g", "0")


def test_tenant_limits(statsd, reporter):
    limits = FrozenDict({
        "tenant.one": TenantResourceLimit(
            tenant_name="tenant.one",
            limits=FrozenDict({"cores": 8, "instances": 2, "ram": 16384,
                               "volume-gb": 100, "L-1216C47A": 3})),
        "t:2": TenantResourceLimit(tenant_name="t:2",
                                   limits=FrozenDict({"volumes": 4})),
    })
    reporter.update_tenant_limits(limits)
    statsd.sync()
    assert statsd.gauges() == {
        "nodepool.tenant_limits.tenant_one.cores": 8,
        "nodepool.tenant_limits.tenant_one.instances": 2,
        "nodepool.tenant_limits.tenant_one.ram": 16384,
        "nodepool.tenant_limits.tenant_one.volume-gb": 100,
        "nodepool.tenant_limits.tenant_one.L-1216C47A": 3,
        "nodepool.tenant_limits.t_2.volumes": 4,
    }


def test_tenant_limits_plain_mapping(statsd, reporter):
    reporter.update_tenant_limits({"t": {"x.y": 1}})
    statsd.wait_for_metric("nodepool.tenant_limits.t.x_y", "g", 1)


# -- per-loop gauges, throttled ------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clocked(statsd):
    clock = FakeClock()
    return stats.StatsReporter(stats.get_client(), clock=clock), clock


def sent(statsd, name):
    """How many times the gauge ``name`` arrived so far (after a sync)."""
    statsd.sync()
    return len(statsd.values(name, "g"))


TENANTS = FrozenDict({"tenant.a": TenantResourceLimit(
    tenant_name="tenant.a", limits=FrozenDict({"cores": 8, "ram": 4096}))})


def test_pool_gauges_values(statsd, clocked):
    reporter, _ = clocked
    reporter.update_pool_gauges(provider_config(
        "fake-provider", pool_config("a", 10), pool_config("b", None),
        pool_config("c", 5)), TENANTS)
    statsd.sync()
    assert statsd.gauges() == {
        "nodepool.provider.fake-provider.max_servers": 15,
        "nodepool.tenant_limits.tenant_a.cores": 8,
        "nodepool.tenant_limits.tenant_a.ram": 4096,
    }


def test_pool_gauges_default_interval(statsd):
    reporter = stats.StatsReporter(stats.get_client())
    assert reporter.pool_gauge_interval == stats.POOL_GAUGE_INTERVAL == 1.0


def test_pool_gauges_throttled_per_provider(statsd, clocked):
    reporter, clock = clocked
    one = provider_config("one", pool_config("a", 1))
    two = provider_config("two", pool_config("a", 2))
    key_one = "nodepool.provider.one.max_servers"
    key_two = "nodepool.provider.two.max_servers"
    tenant_key = "nodepool.tenant_limits.tenant_a.cores"
    # Many pool-worker loops within one second: sent once each.
    for _ in range(20):
        reporter.update_pool_gauges(one, TENANTS)
        reporter.update_pool_gauges(two, TENANTS)
        clock.now += 0.03125  # binary fractions: exact sums
    assert sent(statsd, key_one) == 1
    assert sent(statsd, key_two) == 1
    # The tenant limits are one launcher-wide budget, not per provider.
    assert sent(statsd, tenant_key) == 1
    clock.now += 0.25  # 0.875 s after the first
    reporter.update_pool_gauges(one, TENANTS)
    assert sent(statsd, key_one) == 1
    clock.now += 0.125  # a second later: due again
    reporter.update_pool_gauges(one, TENANTS)
    assert sent(statsd, key_one) == 2
    assert sent(statsd, tenant_key) == 2
    # "two" was not sent meanwhile: it is due at once.
    reporter.update_pool_gauges(two, TENANTS)
    assert sent(statsd, key_two) == 2
    assert sent(statsd, tenant_key) == 2


def test_pool_gauges_interval_configurable(statsd):
    clock = FakeClock()
    reporter = stats.StatsReporter(stats.get_client(),
                                   pool_gauge_interval=0, clock=clock)
    provider = provider_config("p", pool_config("a", 3))
    for _ in range(3):
        reporter.update_pool_gauges(provider, TENANTS)
    assert sent(statsd, "nodepool.provider.p.max_servers") == 3
    assert statsd.values("nodepool.provider.p.max_servers") == ["3"] * 3


def test_pool_gauges_without_tenant_limits(statsd, clocked):
    reporter, _ = clocked
    reporter.update_pool_gauges(provider_config("p", pool_config("a", 3)),
                                FrozenDict())
    statsd.sync()
    assert statsd.gauges() == {"nodepool.provider.p.max_servers": 3}


# -- ZooKeeper queues ---------------------------------------------------------

def test_zk_queue_gauges(statsd, reporter):
    reporter.update_zk_queues(
        4, {"node_cache": (1, 2), "request_cache": (0, 0),
            "image_cache": (7, 8)}, hostname="launcher1")
    statsd.sync()
    base = "nodepool.launcher.launcher1.zk."
    assert statsd.gauges() == {
        base + "client.connection_queue": 4,
        base + "node_cache.event_queue": 1,
        base + "node_cache.playback_queue": 2,
        base + "request_cache.event_queue": 0,
        base + "request_cache.playback_queue": 0,
        base + "image_cache.event_queue": 7,
        base + "image_cache.playback_queue": 8,
    }
    assert tuple(stats.ZK_CACHES) == ("node_cache", "request_cache",
                                      "image_cache")


def test_zk_queue_gauges_default_hostname(statsd, reporter):
    reporter.update_zk_queues(0, {})
    statsd.wait_for_metric("nodepool.launcher.%s.zk.client.connection_queue"
                           % socket.gethostname(), "g", 0)


# -- builder ------------------------------------------------------------------

def test_image_build(statsd, reporter):
    reporter.record_image_build("fake-image", 12.5, 0, 1700000000.75,
                                sizes={"qcow2": 4096, "raw": 8192})
    statsd.sync()
    assert sorted(statsd.metrics()) == sorted([
        ("nodepool.dib_image_build.fake-image.qcow2.size", "4096", "g"),
        ("nodepool.dib_image_build.fake-image.raw.size", "8192", "g"),
        ("nodepool.dib_image_build.fake-image.status.duration",
         "12500.000000", "ms"),
        ("nodepool.dib_image_build.fake-image.status.rc", "0", "g"),
        ("nodepool.dib_image_build.fake-image.status.last_build",
         "1700000000", "g"),
    ])


def test_failed_image_build(statsd, reporter):
    reporter.record_image_build("fake-image", 3, 1, 1700000001)
    statsd.sync()
    assert statsd.names() == {
        "nodepool.dib_image_build.fake-image.status.duration",
        "nodepool.dib_image_build.fake-image.status.rc",
        "nodepool.dib_image_build.fake-image.status.last_build"}
    assert statsd.values(
        "nodepool.dib_image_build.fake-image.status.rc") == ["1"]


def test_image_upload(statsd, reporter):
    reporter.record_image_upload("fake-image", "fake-provider", 0.5)
    key = "nodepool.image_update.fake-image.fake-provider"
    statsd.wait_for_metric(key, "ms", 500)
    statsd.wait_for_metric(key, "c", 1)


def test_build_requests(statsd, reporter):
    reporter.update_build_requests({"a": True, "b": False, "c": True})
    statsd.sync()
    assert statsd.gauges() == {
        "nodepool.image_build_requests": 2,
        "nodepool.image.a.image_build_requests": 1,
        "nodepool.image.b.image_build_requests": 0,
        "nodepool.image.c.image_build_requests": 1,
    }


def test_builder_worker_states(statsd, reporter):
    reporter.update_builder_workers(
        [("a", stats.WORKER_IDLE), ("a", stats.WORKER_BUILDING),
         ("b", stats.WORKER_IDLE), ("c", stats.WORKER_PAUSED),
         ("c", stats.WORKER_BUILDING)],
        [("a", "p1", stats.WORKER_UPLOADING), ("a", "p1", stats.WORKER_IDLE),
         ("a", "p2", stats.WORKER_IDLE)],
        fqdn="builder.example.com")
    statsd.sync()
    base = "nodepool.builder.builder.example.com.image."
    assert statsd.gauges() == {
        base + "a.build.state": 1,
        base + "b.build.state": 0,
        base + "c.build.state": 3,
        base + "a.provider.p1.upload.state": 2,
        base + "a.provider.p2.upload.state": 0,
    }
    assert (stats.WORKER_IDLE, stats.WORKER_BUILDING, stats.WORKER_UPLOADING,
            stats.WORKER_PAUSED) == (0, 1, 2, 3)


def test_builder_worker_states_default_fqdn(statsd, reporter):
    reporter.update_builder_workers([("a", 0)], [])
    statsd.wait_for_metric("nodepool.builder.%s.image.a.build.state"
                           % socket.getfqdn(), "g", 0)


# -- disabled -----------------------------------------------------------------

def every_call(reporter):
    """Call every reporter method once with plausible arguments."""
    pools = [pool_component("p", "main", ["l"])]
    reporter.record_launch("ready", 1, provider="p", az="z", requestor="r")
    reporter.record_node_launch(make_node(NodeState.READY), "ready", 1)
    reporter.record_leaked("p", "instances")
    reporter.update_global_gauges([make_node(NodeState.READY)],
                                  [make_request(["l"])], pools)
    reporter.update_node_gauges([make_node(NodeState.READY)], pools)
    reporter.update_request_gauges([make_request(["l"])], pools)
    reporter.update_provider_limits(provider_config("p", pool_config("a", 1)))
    reporter.update_tenant_limits({"t": {"cores": 1}})
    reporter.update_pool_gauges(provider_config("q", pool_config("a", 1)),
                                {"t": {"cores": 1}})
    reporter.update_zk_queues(0, {"node_cache": (0, 0)}, hostname="h")
    reporter.record_image_build("i", 1, 0, 1, sizes={"raw": 1})
    reporter.record_image_upload("i", "p", 1)
    reporter.update_build_requests({"i": True})
    reporter.update_builder_workers([("i", 0)], [("i", "p", 0)], fqdn="f")


def test_disabled_reporter_sends_nothing(statsd, monkeypatch):
    monkeypatch.delenv("STATSD_HOST")
    reporter = stats.StatsReporter.from_environment()
    assert not reporter.enabled
    assert reporter.client is None
    every_call(reporter)
    every_call(stats.StatsReporter())
    statsd.sync()
    assert statsd.metrics() == []
    assert statsd.datagram_count() == 0


def test_disabled_reporter_does_not_look_at_arguments():
    # No work at all when disabled, not even reading the inputs.
    class Explodes:
        def __iter__(self):
            raise AssertionError("iterated")

        def __getattr__(self, name):
            raise AssertionError("read %s" % name)

    reporter = stats.StatsReporter(None)
    reporter.update_global_gauges(Explodes(), Explodes(), Explodes())
    reporter.update_node_gauges(Explodes(), Explodes())
    reporter.update_request_gauges(Explodes(), Explodes())
    reporter.update_provider_limits(Explodes())
    reporter.update_pool_gauges(Explodes(), Explodes())
    reporter.record_node_launch(Explodes(), "ready", 1)
    reporter.update_builder_workers(Explodes(), Explodes())


def test_every_call_enabled(statsd, reporter):
    every_call(reporter)
    statsd.sync()
    assert statsd.malformed() == []
    names = statsd.names()
    assert "nodepool.launch.ready" in names
    assert "nodepool.provider.q.max_servers" in names
    assert "nodepool.builder.f.image.i.provider.p.upload.state" in names


def test_non_ascii_name_is_dropped_not_raised(statsd, reporter, caplog):
    with caplog.at_level(logging.WARNING, logger="nodepool.stats"):
        reporter.record_leaked("prövider", "instances")
    assert "non-ASCII" in caplog.text
    reporter.record_leaked("p", "instances")
    statsd.wait_for_metric("nodepool.provider.p.leaked.instances")


# -- the listener -------------------------------------------------------------

@pytest.mark.parametrize("line,parsed", [
    ("a.b:1|c", ("a.b", "1", "c")),
    ("a.b:3|g", ("a.b", "3", "g")),
    ("t:12.000000|ms", ("t", "12.000000", "ms")),
    ("r:1|c|@0.5", ("r", "1", "c")),
    ("x:y:2|g", ("x:y", "2", "g")),
    ("garbage", None),
    (":1|c", None),
    ("a:1", None),
])
def test_parse_line(line, parsed):
    assert statsd_fixture.parse_line(line) == parsed


def test_listener_splits_datagrams(statsd):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"one:1|c\ntwo:2|g\nthree:3.000000|ms\n",
                    (statsd.host, statsd.port))
    statsd.wait_for_metric("three", "ms", 3)
    assert statsd.metrics() == [("one", "1", "c"), ("two", "2", "g"),
                                ("three", "3.000000", "ms")]
    assert statsd.datagram_count() == 1


def test_listener_with_statsd_pipeline(statsd):
    client = statsd_lib.StatsClient(statsd.host, statsd.port)
    with client.pipeline() as pipe:
        for i in range(100):
            pipe.incr("pipeline.counter.%03d" % i)
        pipe.gauge("pipeline.negative", -2)
    statsd.sync()
    counters = [m for m in statsd.metrics() if m[2] == "c"]
    assert counters == [("pipeline.counter.%03d" % i, "1", "c")
                        for i in range(100)]
    # A negative gauge is sent as a reset to 0 followed by the value.
    assert statsd.values("pipeline.negative") == ["0", "-2"]
    assert statsd.gauges()["pipeline.negative"] == -2
    assert 1 < statsd.datagram_count() < 101


def test_listener_wait_for_metric(statsd):
    client = statsd_lib.StatsClient(statsd.host, statsd.port)
    client.timing("timer", 2.5)
    client.gauge("g", 7)
    assert statsd.wait_for_metric("timer", "ms", 2.5) == (
        "timer", "2.500000", "ms")
    assert statsd.wait_for_metric("timer", value=lambda v: float(v) > 2)
    assert statsd.wait_for_metric("g", "g", "7")
    with pytest.raises(AssertionError):
        statsd.wait_for_metric("g", "c", timeout=0.05)
    with pytest.raises(AssertionError):
        statsd.wait_for_metric("g", value="7.0", timeout=0.05)
    with pytest.raises(AssertionError):
        statsd.wait_for_metric("missing", timeout=0.05)
    statsd.clear()
    assert statsd.metrics() == []
    with pytest.raises(AssertionError):
        statsd.wait_for_metric("g", timeout=0.05)


def test_listener_stop():
    listener = statsd_fixture.StatsdListener().start()
    port = listener.port
    listener.stop()
    listener.stop()
    assert not listener._thread.is_alive()
    # The port is free again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_listener_context_manager():
    with statsd_fixture.StatsdListener() as listener:
        client = statsd_lib.StatsClient(listener.host, listener.port)
        client.incr("cm")
        listener.wait_for_metric("cm", "c", 1)
    assert not listener._thread.is_alive()


def test_statsd_fixture_environment(statsd):
    import os
    assert os.environ["STATSD_HOST"] == "127.0.0.1"
    assert os.environ["STATSD_PORT"] == str(statsd.port)


def test_pool_component_shapes_are_accepted(statsd, reporter):
    # Anything with provider_name / name / supported_labels will do.
    pool = types.SimpleNamespace(provider_name="sp", name="pl",
                                 supported_labels=("x",))
    reporter.update_request_gauges([make_request(["x"])], [pool])
    statsd.wait_for_metric("nodepool.provider.sp.pool.pl.addressable_requests",
                           "g", 1)


def test_api_rates(statsd, clocked):
    reporter, clock = clocked
    rates = [dict(limiter="mutate", rate=2.5, ceiling=20.0, adaptive=True,
                  throttles=3),
             dict(limiter="read", rate=200.0, ceiling=200.0, adaptive=True,
                  throttles=0),
             dict(limiter="quota", rate=None, ceiling=None, adaptive=True,
                  throttles=0)]
    for _ in range(3):  # throttled like the pool gauges
        reporter.update_api_rates("ec2", rates)
    assert sent(statsd, "nodepool.provider.ec2.api_rate.mutate") == 1
    assert statsd.gauges() == {
        "nodepool.provider.ec2.api_rate.mutate": 2.5,
        "nodepool.provider.ec2.api_rate.read": 200,
    }
    clock.now += 1.0
    reporter.update_api_rates("ec2", rates)
    assert sent(statsd, "nodepool.provider.ec2.api_rate.mutate") == 2


def test_capacity_cooldowns(statsd, clocked):
    reporter, clock = clocked
    entries = [dict(type="t3.medium", zone="us-west-2a", failures=2,
                    seconds_left=120.0),
               dict(type="m5.large", zone=None, failures=1,
                    seconds_left=30.0)]
    for _ in range(3):  # throttled like the pool gauges
        reporter.update_capacity("ec2", entries)
    assert sent(statsd, "nodepool.provider.ec2.capacity_cooldowns") == 1
    assert statsd.gauges() == {
        "nodepool.provider.ec2.capacity_cooldowns": 2}
    clock.now += 1.0
    reporter.update_capacity("ec2", [])
    assert sent(statsd, "nodepool.provider.ec2.capacity_cooldowns") == 2
    assert statsd.gauges() == {
        "nodepool.provider.ec2.capacity_cooldowns": 0}
