# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
import json
import math
from types import SimpleNamespace

import pytest

from nodepool.config import load_config
from nodepool.driver.openstack import config as openstack_config
from nodepool.driver.openstack.config import OpenStackPool
from nodepool.driver.quota import (
    QuotaInformation, pool_limits, tenant_limits_quota, tenant_usage)
from tests.configs import corpus

INF = math.inf


def node(provider="p1", pool="main", labels=("small",), resources=None,
         tenant_name=None):
    return SimpleNamespace(provider=provider, pool=pool, type=list(labels),
                           resources=resources, tenant_name=tenant_name)


LABELS = {
    "small": QuotaInformation(cores=2, instances=1, ram=2048),
    "large": QuotaInformation(cores=8, instances=1, ram=16384,
                              **{"volume-gb": 80}),
}


def test_none_takes_default():
    q = QuotaInformation(cores=4, default=INF)
    assert q.get_resources() == {"cores": 4, "instances": INF, "ram": INF}
    assert QuotaInformation().get_resources() == {
        "cores": 0, "instances": 0, "ram": 0}


def test_reference_example():
    limits = QuotaInformation(cores=8, ram=8192, default=INF)
    limits.subtract(QuotaInformation(cores=2, instances=1))
    assert limits.get_resources() == {"cores": 6, "instances": INF,
                                      "ram": 8192}
    assert limits == QuotaInformation(cores=6, ram=8192, default=INF)
    assert limits.non_negative()


def test_add_in_place():
    q = QuotaInformation(cores=1, instances=1, ram=512)
    result = q.add(QuotaInformation(cores=2, instances=1, ram=1024))
    assert result is None
    assert q.get_resources() == {"cores": 3, "instances": 2, "ram": 1536}


def test_union_of_names_with_each_sides_default():
    limits = QuotaInformation(default=INF, volumes=10)
    needed = QuotaInformation(cores=2, instances=1, ram=1024,
                              **{"volume-gb": 50})
    remaining = limits - needed
    # "volume-gb" is missing on the left: the left default (inf) applies.
    # "volumes" is missing on the right: the right default (0) applies.
    assert remaining.get_resources() == {
        "cores": INF, "instances": INF, "ram": INF, "volumes": 10,
        "volume-gb": INF}
    assert remaining.default == INF

    usage = QuotaInformation(cores=1)
    usage.add(QuotaInformation(**{"L-1216C47A": 4}))
    assert usage.get_resources() == {"cores": 1, "instances": 0, "ram": 0,
                                     "L-1216C47A": 4}


def test_operators_do_not_modify_operands():
    a = QuotaInformation(cores=4)
    b = QuotaInformation(cores=1)
    assert (a + b).get("cores") == 5
    assert (a - b).get("cores") == 3
    assert a.get("cores") == 4 and b.get("cores") == 1


def test_extra_resources_and_get():
    q = QuotaInformation(cores=1, default=INF, volumes=3,
                         **{"volume-gb": 100})
    assert q.get("volumes") == 3
    assert q.get("volume-gb") == 100
    assert q.get("unknown") == INF
    assert q.names() == ["cores", "instances", "ram", "volumes", "volume-gb"]


def test_non_negative():
    assert QuotaInformation().non_negative()
    assert QuotaInformation(default=INF).non_negative()
    q = QuotaInformation(cores=1, instances=5)
    q.subtract(QuotaInformation(cores=2))
    assert not q.non_negative()
    q = QuotaInformation(default=INF)
    q.subtract(QuotaInformation(**{"L-1": 1}))
    assert q.non_negative()
    q = QuotaInformation(volumes=0)
    q.subtract(QuotaInformation(volumes=1))
    assert not q.non_negative()


def test_inf_minus_inf_is_exhausted():
    q = QuotaInformation(default=INF)
    q.subtract(QuotaInformation(default=INF))
    assert not q.non_negative()


def test_resources_round_trip_through_json():
    q = QuotaInformation(cores=4, instances=1, ram=8192, **{"volume-gb": 40})
    resources = q.get_resources()
    assert resources == {"cores": 4, "instances": 1, "ram": 8192,
                         "volume-gb": 40}
    back = QuotaInformation.from_resources(json.loads(json.dumps(resources)))
    assert back == q
    assert back.default == 0
    # The dict handed out is a copy.
    resources["cores"] = 99
    assert q.get("cores") == 4


def test_from_resources_missing_names_take_default():
    q = QuotaInformation.from_resources({"cores": 2})
    assert q.get_resources() == {"cores": 2, "instances": 0, "ram": 0}
    q = QuotaInformation.from_resources({"ram": None}, default=INF)
    assert q.get("ram") == INF


def test_add_resources_is_add_of_from_resources():
    for base in (QuotaInformation(cores=2, instances=1, ram=10),
                 QuotaInformation(default=math.inf, cores=4)):
        resources = {"ram": 5, "volume-gb": None, "gpus": 1.5, "cores": 1}
        expected = base.copy()
        expected.add(QuotaInformation.from_resources(resources))
        got = base.copy()
        got.add_resources(resources)
        assert got == expected
        assert got.names() == expected.names()
        assert got.get_resources() == expected.get_resources()


def test_copy_is_independent():
    q = QuotaInformation(cores=2, default=INF, volumes=1)
    c = q.copy()
    assert c == q and c is not q
    c.subtract(QuotaInformation(cores=1))
    assert q.get("cores") == 2
    assert c.default == INF


def test_equality():
    assert QuotaInformation(cores=1) == QuotaInformation(cores=1)
    # Listing a name at its default value changes nothing.
    assert QuotaInformation(cores=1) == QuotaInformation(cores=1, volumes=0)
    assert QuotaInformation(cores=1) != QuotaInformation(cores=2)
    assert QuotaInformation() != QuotaInformation(default=INF)
    assert QuotaInformation() != {"cores": 0}
    with pytest.raises(TypeError):
        hash(QuotaInformation())


def test_repr():
    r = repr(QuotaInformation(cores=1, default=INF))
    assert r == ("QuotaInformation({'cores': 1, 'instances': inf, "
                 "'ram': inf}, default=inf)")


def load_pool(scenario, provider, pool):
    """A pool of one of the config corpus' valid files."""
    scenario = corpus.read_scenario(corpus.valid_path(scenario))
    config = load_config(scenario.path, scenario.secure, env=scenario.env)
    return config.providers[provider].pools[pool]


def make_pool(max_servers=INF, **keys):
    """An OpenStack pool from its schema (``max_cores=10``: ``max-cores``)."""
    data = openstack_config.POOL(dict(
        {key.replace("_", "-"): value for key, value in keys.items()},
        name="main", **{"max-servers": max_servers}))
    return OpenStackPool(**dict(data, priority=100, labels={}))


def test_pool_limits_openstack():
    limits = pool_limits(load_pool("openstack", "cloud1", "main"))
    assert limits.get_resources() == {
        "cores": 400, "instances": 100, "ram": 819200, "volumes": 20,
        "volume-gb": 2000}
    assert limits.default == INF


def test_pool_limits_aws_resolve_against_the_provider():
    # max-ram and the L-43DA4232 resource come from the provider.
    limits = pool_limits(load_pool("aws", "ec2-us-west-2", "main"))
    assert limits.get_resources() == {
        "cores": 80, "instances": 10, "ram": 512000, "L-1216C47A": 20,
        "L-43DA4232": 50}


def test_pool_limits_unset_are_unlimited():
    limits = pool_limits(make_pool())
    assert limits.get_resources() == {
        "cores": INF, "instances": INF, "ram": INF, "volumes": INF,
        "volume-gb": INF}
    # An Azure pool has only max-servers.
    limits = pool_limits(load_pool("azure", "azure-east", "main"))
    assert limits.get("instances") == 10
    assert limits.get("cores") == INF
    assert limits.get("volume-gb") == INF


def test_pool_limits_check():
    pool = make_pool(max_servers=2, max_cores=10)
    remaining = pool_limits(pool) - LABELS["small"] - LABELS["small"]
    assert remaining.get("cores") == 6
    assert not (remaining - LABELS["small"]).non_negative()  # instances


def test_tenant_usage():
    nodes = [
        node(provider="p1", tenant_name="t1",
             resources={"cores": 2, "instances": 1, "ram": 100}),
        node(provider="p2", tenant_name="t1",
             resources={"cores": 3, "instances": 1, "ram": 200}),
        node(tenant_name="t2",
             resources={"cores": 50, "instances": 1, "ram": 1}),
        node(tenant_name="t1", resources=None),
    ]
    assert tenant_usage(nodes, "t1").get_resources() == {
        "cores": 5, "instances": 2, "ram": 300}
    assert tenant_usage(nodes, "nobody") == QuotaInformation()


def test_tenant_limits_quota():
    limits = tenant_limits_quota({"cores": 8, "instances": 2,
                                  "volume-gb": 100, "L-1216C47A": 4})
    assert limits.default == INF
    assert limits.get_resources() == {
        "cores": 8, "instances": 2, "ram": INF, "volume-gb": 100,
        "L-1216C47A": 4}
    assert tenant_limits_quota({}) == QuotaInformation(default=INF)


def test_tenant_limit_check():
    limits = tenant_limits_quota({"cores": 8})
    used = QuotaInformation(cores=6, instances=3)
    needed = LABELS["small"]
    assert (limits - used - needed).non_negative()
    assert not (limits - used - needed - needed).non_negative()
