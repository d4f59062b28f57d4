# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The static driver's decisions, without ZooKeeper or hosts."""

import collections

import pytest

from nodepool import driver as registry
from nodepool.config.loader import load_config
from nodepool.config.models import FrozenDict
from nodepool.driver.base import ProviderServices
from nodepool.driver.static.adapter import StaticAdapter
from nodepool.driver.static.config import StaticNode
from nodepool.driver.static.provider import StaticProvider, slots_suffice
from nodepool.driver.static.registrar import (
    Registrar, free_nodes_of, node_identity, normalized_key, thaw)
from nodepool.zk.models import Node, NodeRequest, NodeState, RequestState
from tests.configs import corpus


def host(name, labels, slots=1, username="zuul", port=22, **extra):
    values = dict(name=name, labels=tuple(labels), username=username,
                  timeout=5, host_key_checking=True, host_key=(),
                  connection_port=port, connection_type="ssh",
                  shell_type=None, max_parallel_jobs=slots,
                  python_path="auto")
    values.update(extra)
    return StaticNode(**values)


def node(node_id, state=NodeState.READY, slot=0, labels=("a",),
         allocated_to=None, provider="static", hostname="h1"):
    n = Node(node_id)
    n.state = state
    n.slot = slot
    n.type = list(labels)
    n.allocated_to = allocated_to
    n.provider = provider
    n.hostname = n.external_id = hostname
    return n


class Cache:
    def __init__(self, values=()):
        self._values = list(values)

    def values(self):
        return list(self._values)


class Services(ProviderServices):
    """Just what the provider reads at construction and in decisions."""

    def __init__(self, nodes=(), requests=()):
        super().__init__(None, None, None, None, node_cache=Cache(nodes),
                         request_cache=Cache(requests))


def request(node_types, state=RequestState.REQUESTED):
    r = NodeRequest("200-0000000001")
    r.node_types = list(node_types)
    r.state = state
    return r


@pytest.fixture
def static_config():
    scenario = corpus.read_scenario(corpus.valid_path("static"))
    return load_config(scenario.path, scenario.secure,
                       env=scenario.env).providers["static-rack"]


# -- pure helpers ------------------------------------------------------------

def test_slots_suffice_per_label_and_combined():
    hosts = [host("h1", ["a"], slots=2), host("h2", ["a", "b"])]
    assert slots_suffice(collections.Counter(["a", "a", "b"]), hosts)
    # Three slots in all: four nodes never fit.
    assert not slots_suffice(collections.Counter(["a", "a", "a", "b"]),
                             hosts)
    # Only h2 offers b.
    assert not slots_suffice(collections.Counter(["b", "b"]), hosts)
    assert not slots_suffice(collections.Counter(["c"]), hosts)
    # A host listed twice counts once.
    assert not slots_suffice(collections.Counter(["b", "b"]),
                             hosts + [host("h2", ["a", "b"])])


def test_slots_suffice_needs_a_matching_not_just_label_sums():
    # Each label alone fits, but both compete for h1's single slot.
    hosts = [host("h1", ["a", "b"]), host("h2", ["c"])]
    assert slots_suffice(collections.Counter(["a", "c"]), hosts)
    assert not slots_suffice(collections.Counter(["a", "b"]), hosts)


def test_identity_and_keys():
    n = node("1")
    n.username = "alice"
    n.connection_port = 2222
    assert node_identity(n) == ("h1", "alice", 2222)
    assert normalized_key("ssh-ed25519  AAAA  comment") == "ssh-ed25519 AAAA"
    assert thaw(FrozenDict(a=FrozenDict(b=(1, 2)))) == {"a": {"b": [1, 2]}}


def test_slot_assignment_keeps_busy_nodes_first():
    busy = node("5", state=NodeState.IN_USE, slot=1)
    free = node("3", slot=0)
    stray = node("7", slot=None)
    by_slot, extras = Registrar._assign_slots([free, busy, stray], 1)
    # One slot left: the busy node keeps the host's only slot.
    assert by_slot == {0: busy}
    assert extras == [free, stray]
    by_slot, extras = Registrar._assign_slots([free, busy, stray], 3)
    assert by_slot == {0: free, 1: busy, 2: stray}
    assert extras == []
    # Duplicate slot numbers: the second one moves to a free slot.
    twin = node("4", slot=0)
    by_slot, extras = Registrar._assign_slots([free, twin], 2)
    assert by_slot == {0: free, 1: twin} and extras == []


def test_free_nodes_skip_busy_and_foreign():
    locked = node("4", labels=("a",))
    locked.lock_contenders = {"x"}
    nodes = [node("1", labels=("a", "b")), node("2", allocated_to="r"),
             node("3", state=NodeState.IN_USE), locked,
             node("5", provider="other")]
    assert [n.id for n in free_nodes_of(nodes, "static")] == ["1"]


def test_adapter_delete_completes_at_once(static_config):
    adapter = StaticAdapter(static_config)
    sm = adapter.get_delete_state_machine("host", None)
    assert sm.complete and sm.advance() is None
    assert list(adapter.list_instances()) == []
    assert adapter.get_quota_for_label(None).get("instances") == 1
    with pytest.raises(NotImplementedError):
        adapter.get_create_state_machine("h", None, None, {}, None, None,
                                         None)


# -- provider decisions --------------------------------------------------------

def make_provider(config, nodes=(), requests=()):
    provider = registry.get_driver("static").get_provider(
        config, Services(nodes, requests))
    assert isinstance(provider, StaticProvider)
    return provider


def test_provider_declines_only_beyond_slots(static_config):
    provider = make_provider(static_config)
    pool = static_config.pools["main"]
    assert provider.launches_nodes is False
    assert provider.quota.has_provider_quota(["trusty-static"] * 2, pool)
    assert not provider.quota.has_provider_quota(["trusty-static"] * 3, pool)
    assert provider.quota.has_provider_quota(["small", "big"], pool)
    assert not provider.quota.has_provider_quota(["small", "big", "small"], pool)
    assert not provider.quota.has_remaining_quota("small", pool)
    assert provider.cleanup_leaked_resources(set(), set()) == 0


def test_label_available_defers_unfillable_requests(static_config):
    free_small = node("1", labels=("small", "big"), provider="static-rack")
    waiting = request(["small", "small"])
    provider = make_provider(static_config, [free_small], [waiting])
    # One free node, the only request wants two: leave it alone.
    assert not provider.label_available("small")
    assert provider.label_available("small", count=1)
    assert not provider.label_available("small", count=2)
    # A request one free node can fill makes the label available.
    provider.services.request_cache = Cache([waiting, request(["big"])])
    assert provider.label_available("big")
    assert not provider.label_available("small")


def test_label_available_counts_each_free_node_once(static_config):
    # One free node carries both labels: it cannot serve small and big.
    both = node("1", labels=("small", "big"), provider="static-rack")
    provider = make_provider(static_config, [both],
                             [request(["small", "big"])])
    assert not provider.label_available("small")
    other = node("2", labels=("small",), provider="static-rack",
                 hostname="h2")
    provider.services.node_cache = Cache([both, other])
    assert provider.label_available("small")
    assert provider.label_available("big")


def test_label_available_lets_impossible_requests_be_declined(
        static_config):
    # Nothing free, but three trusty nodes can never fit in two slots:
    # the request must be taken so that it is declined.
    provider = make_provider(static_config, [],
                             [request(["trusty-static"] * 3)])
    assert provider.label_available("trusty-static")
    provider.services.request_cache = Cache([request(["trusty-static"])])
    assert not provider.label_available("trusty-static")
