# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""ProviderQuota on its own: a fake adapter and a fixed node list stand in
for the cloud and the node cache."""

import math
import threading
from types import SimpleNamespace

import pytest

from nodepool import exceptions
from nodepool.driver.base import LabelConfig
from nodepool.driver.openstack import config as openstack_config
from nodepool.driver.openstack.config import OpenStackPool
from nodepool.driver.quota import QuotaInformation
from nodepool.driver.statemachine.adapter import Instance
from nodepool.driver.statemachine.quota import ProviderQuota
from nodepool.zk.usage import NodeUsageIndex

SMALL = QuotaInformation(cores=2, instances=1, ram=2048)
LARGE = QuotaInformation(cores=8, instances=1, ram=8192)


class FakeInstance(Instance):
    def __init__(self, provider, node_id, quota):
        super().__init__()
        self.metadata = {"nodepool_provider_name": provider,
                         "nodepool_node_id": node_id}
        self._quota = quota

    def get_quota_information(self):
        return self._quota.copy()


class FakeAdapter:
    """Answers the quota questions of the Adapter contract from plain
    attributes, counting how often the limits were read."""

    def __init__(self, limits=None):
        self.limits = limits or QuotaInformation(cores=100, instances=10,
                                                 ram=100000)
        self.instances: list = []
        self.limit_reads = 0
        self.label_reads = 0
        self.broken_limits = False

    def get_quota_limits(self):
        self.limit_reads += 1
        if self.broken_limits:
            raise RuntimeError("cloud API down")
        return self.limits.copy()

    def get_quota_for_label(self, label):
        self.label_reads += 1
        if label.name == "bad":
            raise exceptions.RuntimeConfigurationException("no such flavor")
        return {"small": SMALL, "large": LARGE}[label.name].copy()

    def list_instances(self):
        return list(self.instances)


class Nodes:
    """The part of the node cache the quota reads, over a list of nodes
    and the cache's own usage index; counts the usage reads."""

    def __init__(self, nodes=()):
        self.nodes = list(nodes)
        self.reads = 0

    def values(self):
        return list(self.nodes)

    def usage(self, provider):
        self.reads += 1
        index = NodeUsageIndex()
        for n in self.nodes:
            index.update(n.id, n)
        return index.groups(provider)

    def ids(self):
        return [n.id for n in self.nodes]


def node(node_id, provider="p1", pool="main", labels=("small",),
         resources=None):
    return SimpleNamespace(id=node_id, provider=provider, pool=pool,
                           type=list(labels), resources=resources)


def make_pool(name="main", max_servers=math.inf,
              ignore_provider_quota=False):
    """An OpenStack pool (the one kind that may ignore the cloud's quota),
    defaults from its schema."""
    data = openstack_config.POOL({
        "name": name, "max-servers": max_servers,
        "ignore-provider-quota": ignore_provider_quota})
    labels = {n: LabelConfig(name=n) for n in ("small", "large", "bad")}
    return OpenStackPool(**dict(data, priority=100, labels=labels))


def make_quota(pools=None, nodes=(), adapter=None, max_concurrency=0):
    pools = pools or {"main": make_pool()}
    config = SimpleNamespace(name="p1", pools=pools,
                             max_concurrency=max_concurrency)
    adapter = adapter or FakeAdapter()
    cache = Nodes(nodes)
    quota = ProviderQuota(config, adapter, cache)
    return quota, adapter, cache


# Provider limits -------------------------------------------------------------

def test_provider_quota_subtracts_instances_that_are_not_our_nodes():
    quota, adapter, _ = make_quota(nodes=[node("1")])
    adapter.instances = [
        FakeInstance("p1", "1", SMALL),      # ours, known: not subtracted
        FakeInstance("p1", "99", LARGE),     # ours, record gone (leaked)
        FakeInstance("other", "1", SMALL),   # another provider's node 1
    ]
    remaining = quota.provider_quota()
    assert remaining.get("cores") == 100 - 8 - 2
    assert remaining.get("instances") == 10 - 2


def test_provider_quota_is_cached_until_invalidated():
    quota, adapter, _ = make_quota()
    first = quota.provider_quota()
    first.subtract(QuotaInformation(cores=50))  # a copy: the cache is safe
    assert quota.provider_quota().get("cores") == 100
    assert adapter.limit_reads == 1
    adapter.limits = QuotaInformation(cores=1, instances=1, ram=1)
    assert quota.provider_quota().get("cores") == 100
    quota.invalidate()
    assert quota.provider_quota().get("cores") == 1
    assert adapter.limit_reads == 2


def test_unreadable_limits_count_as_unlimited_and_are_not_cached():
    quota, adapter, _ = make_quota()
    adapter.broken_limits = True
    assert quota.provider_quota().get("cores") == math.inf
    adapter.broken_limits = False
    assert quota.provider_quota().get("cores") == 100


# Label quota ----------------------------------------------------------------

def test_label_quota_is_cached_per_pool_and_label_and_copied():
    quota, adapter, _ = make_quota(
        pools={"main": make_pool(), "other": make_pool("other")})
    got = quota.quota_for_label("small", "main")
    got.add(LARGE)
    assert quota.quota_for_label("small", "main") == SMALL
    assert adapter.label_reads == 1
    quota.quota_for_label("small", "other")
    assert adapter.label_reads == 2


def test_label_the_cloud_cannot_size_becomes_an_error_label():
    quota, _, _ = make_quota()
    with pytest.raises(exceptions.RuntimeConfigurationException):
        quota.quota_for_label("bad", "main")
    assert quota.error_labels == {"bad"}


# Decisions -----------------------------------------------------------------

def test_has_provider_quota_ignores_usage():
    pool = make_pool(max_servers=2)
    quota, _, _ = make_quota(pools={"main": pool},
                             nodes=[node("1"), node("2")])
    assert quota.has_provider_quota(["small", "small"], pool)
    assert not quota.has_provider_quota(["small"] * 3, pool)
    assert not quota.has_remaining_quota("small", pool)


def test_has_provider_quota_checks_the_cloud_unless_ignored():
    adapter = FakeAdapter(QuotaInformation(cores=10, instances=10, ram=1e6))
    pool = make_pool()
    quota, _, _ = make_quota(pools={"main": pool}, adapter=adapter)
    assert quota.has_provider_quota(["large"], pool)
    assert not quota.has_provider_quota(["large", "small", "small"], pool)
    pool = pool.replace(ignore_provider_quota=True)
    assert quota.has_provider_quota(["large", "small", "small"], pool)


def test_remaining_quota_counts_this_providers_nodes_only():
    adapter = FakeAdapter(QuotaInformation(cores=10, instances=10, ram=1e6))
    pool = make_pool()
    quota, _, cache = make_quota(pools={"main": pool}, adapter=adapter)
    cache.nodes = [node("1", labels=["large"]),
                   node("2", provider="other", labels=["large"])]
    assert quota.has_remaining_quota("small", pool)    # 8 + 2 cores
    assert not quota.has_remaining_quota("large", pool)
    # Stored resources win over the label's quota.
    cache.nodes = [node("1", resources={"cores": 9, "instances": 1,
                                        "ram": 1})]
    assert not quota.has_remaining_quota("small", pool)


def test_pool_limits_count_the_pools_own_nodes():
    main, other = make_pool(max_servers=1), make_pool("other", max_servers=1)
    quota, _, _ = make_quota(pools={"main": main, "other": other},
                             nodes=[node("1", pool="other")])
    assert quota.has_remaining_quota("small", main)
    assert not quota.has_remaining_quota("small", other)
    assert quota.nodes_used().get("instances") == 1
    assert quota.nodes_used("main").get("instances") == 0


# Reservations and just created nodes ------------------------------------

def test_one_usage_read_per_decision():
    # Cloud quota (all pools) and pool limits from the same pass; what
    # each counts is as before: every pool's nodes and reservations for
    # the cloud, the pool's own for its limits.
    adapter = FakeAdapter(QuotaInformation(cores=14, instances=10, ram=1e6,
                                           default=math.inf))
    main, other = make_pool(max_servers=2), make_pool("other")
    quota, _, cache = make_quota(
        pools={"main": main, "other": other}, adapter=adapter,
        nodes=[node("1", pool="other", labels=["large"]),
               node("2", resources={"cores": 1, "instances": 1, "ram": 1,
                                    "volumes": None, "gpus": 0.5}),
               node("3", provider="p2", labels=["large"])])
    assert quota.reserve("small", other) is not None
    reads = cache.reads
    assert quota.exhausted_limits("small", main) == []
    assert cache.reads == reads + 1
    # 8 + 1 + 2 (reserved in "other") + 2 + 2 cores needed > 14.
    assert quota.exhausted_limits("large", main) == ["cloud quota (cores)"]
    assert quota.nodes_used().get_resources() == {
        "cores": 11, "instances": 3, "ram": 8192 + 1 + 2048, "volumes": 0,
        "gpus": 0.5}
    assert quota.nodes_used("main").get_resources() == {
        "cores": 1, "instances": 1, "ram": 1, "volumes": 0, "gpus": 0.5}
    cache.nodes.append(node("4"))
    assert quota.exhausted_limits("small", main) == [
        "cloud quota (cores)", "max-servers"]
    # A pool that ignores the cloud's quota reads only its own usage.
    main = main.replace(ignore_provider_quota=True)
    assert quota.exhausted_limits("small", main) == ["max-servers"]


def test_reservation_counts_until_the_node_is_claimed():
    pool = make_pool(max_servers=1)
    quota, _, cache = make_quota(pools={"main": pool})
    token = quota.reserve("small", pool)
    assert token is not None
    assert quota.reserve("small", pool) is None
    # The node store writes through to the cache before the claim: the
    # node counts from then on, the reservation no longer.
    stored = node("1")
    cache.nodes = [stored]
    assert quota.nodes_used().get("instances") == 2
    quota.claim_node(token, stored)
    assert quota.nodes_used().get("instances") == 1
    assert quota.reserve("small", pool) is None
    cache.nodes = []  # deleted
    assert quota.reserve("small", pool) is not None


def test_failed_launch_frees_its_reservation():
    pool = make_pool(max_servers=1)
    quota, _, _ = make_quota(pools={"main": pool})
    token = quota.reserve("small", pool)
    quota.claim_node(token, None)
    assert quota.nodes_used().get("instances") == 0
    assert quota.reserve("small", pool) is not None


class GatedNode:
    """A cached node whose resources are read at a barrier.  The quota
    reads them after the reservations: without the quota's lock every
    thread would have read those before any of them reserved.  With the
    lock the barrier times out once and breaks, and the threads go on one
    by one."""

    id = "1"
    provider = "p1"
    pool = "main"
    type = ["small"]

    def __init__(self, parties):
        self.gate = threading.Barrier(parties, timeout=0.5)

    @property
    def resources(self):
        try:
            self.gate.wait()
        except threading.BrokenBarrierError:
            pass
        return SMALL.get_resources()


def test_concurrent_reservations_never_exceed_the_pool():
    pool = make_pool(max_servers=3)
    quota, _, _ = make_quota(pools={"main": pool}, nodes=[GatedNode(8)])
    tokens = []

    def reserve():
        token = quota.reserve("small", pool)
        if token is not None:
            tokens.append(token)
    threads = [threading.Thread(target=reserve) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(tokens) == 2


# max-concurrency ------------------------------------------------------------

def test_requests_handled_stops_at_max_concurrency():
    quota, _, _ = make_quota(max_concurrency=2)
    assert quota.begin_request() and quota.begin_request()
    assert not quota.begin_request()
    assert quota.requests_handled == 2
    quota.end_request()
    assert quota.begin_request()
    for _ in range(5):
        quota.end_request()
    assert quota.requests_handled == 0


def test_no_max_concurrency_means_no_limit():
    quota, _, _ = make_quota(max_concurrency=0)
    assert all(quota.begin_request() for _ in range(50))
    assert quota.requests_handled == 50
