# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Capacity fallback: the provider's memory, a launch's plan and the
fallback keys of the AWS, OpenStack and Azure labels."""

import threading

import pytest

from nodepool.config import ConfigValidationError, load_config
from nodepool.driver.capacity import (
    CapacityMemory, CapacityPlan, ordered_zones, type_order)


class Clock:
    """Monotonic seconds that only move when the test says so."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


# CapacityMemory ----------------------------------------------------------

def test_memory_remembers_a_pair_for_the_cooldown():
    clock = Clock()
    memory = CapacityMemory(300, clock=clock)
    assert not memory.cooling("t3.medium", "us-west-2a")
    memory.failed("t3.medium", "us-west-2a")
    assert memory.cooling("t3.medium", "us-west-2a")
    # Only that pair: the type elsewhere, another type there are fine.
    assert not memory.cooling("t3.medium", "us-west-2b")
    assert not memory.cooling("t3.large", "us-west-2a")
    clock.now += 299
    assert memory.cooling("t3.medium", "us-west-2a")
    clock.now += 1
    assert not memory.cooling("t3.medium", "us-west-2a")
    assert memory.entries() == []


def test_memory_entries_count_failures_and_time_left():
    clock = Clock()
    memory = CapacityMemory(300, clock=clock)
    memory.failed("t3.medium", "us-west-2a")
    clock.now += 100
    memory.failed("t3.medium", "us-west-2a")  # extends the cooldown
    memory.failed("m5.large", None)
    clock.now += 50
    assert memory.entries() == [
        dict(type="m5.large", zone=None, failures=1, seconds_left=250.0),
        dict(type="t3.medium", zone="us-west-2a", failures=2,
             seconds_left=250.0)]
    clock.now += 250
    memory.failed("t3.medium", "us-west-2a")  # a new cooldown: count anew
    assert memory.entries() == [
        dict(type="t3.medium", zone="us-west-2a", failures=1,
             seconds_left=300.0)]


def test_memory_any_left():
    memory = CapacityMemory(300, clock=Clock())
    options = [("a", "z1"), ("a", "z2")]
    assert memory.any_left(options)
    memory.failed("a", "z1")
    assert memory.any_left(options)
    memory.failed("a", "z2")
    assert not memory.any_left(options)
    assert not memory.any_left([])


def test_memory_cooldown_zero_remembers_nothing():
    memory = CapacityMemory(0, clock=Clock())
    memory.failed("a", None)
    assert not memory.cooling("a", None)


def test_memory_is_thread_safe():
    memory = CapacityMemory(300, clock=Clock())
    start = threading.Barrier(8)

    def work(n):
        start.wait()
        for i in range(200):
            memory.failed("type-%d" % (i % 10), "zone-%d" % n)
            memory.cooling("type-%d" % (i % 7), "zone-%d" % n)
            memory.entries()
    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = memory.entries()
    assert len(entries) == 80
    assert sum(e["failures"] for e in entries) == 8 * 200


# Zones and types -------------------------------------------------------

def test_ordered_zones():
    zones = ["c", "a", "b", "a", ""]
    assert ordered_zones(zones, "b") == ["b", "c", "a"]
    assert ordered_zones(zones, None, start=0) == ["a", "b", "c"]
    assert ordered_zones(zones, None, start=4) == ["b", "c", "a"]
    # A zone the pool does not offer is not kept.
    assert ordered_zones(zones, "x", start=2) == ["c", "a", "b"]
    assert ordered_zones([], "x") == [None]
    assert ordered_zones([None], None) == [None]


def test_type_order():
    assert type_order("a", None) is None
    assert type_order("a", []) == ("a",)
    assert type_order("a", ["b", "a", "c", "b"]) == ("a", "b", "c")


# CapacityPlan ----------------------------------------------------------

def test_plan_tries_each_zone_then_the_next_type():
    memory = CapacityMemory(300, clock=Clock())
    plan = CapacityPlan(("small", "large"), ["z1", "z2"], memory)
    seen = []
    while True:
        option = plan.next_option()
        if option is None:
            break
        plan.attempt(option)
        plan.no_capacity(option)
        seen.append(option)
    assert seen == [("small", "z1"), ("small", "z2"), ("large", "z1"),
                    ("large", "z2")]
    assert plan.tried == seen
    assert plan.describe() == ("small in z1, small in z2, large in z1, "
                               "large in z2")
    assert len(memory.entries()) == 4


def test_plan_skips_what_the_memory_remembers():
    memory = CapacityMemory(300, clock=Clock())
    memory.failed("small", "z1")
    plan = CapacityPlan(("small", "large"), ["z1", "z2"], memory)
    assert plan.next_option() == ("small", "z2")
    memory.failed("small", "z2")
    assert plan.next_option() == ("large", "z1")
    # Nothing refused in this launch itself.
    assert plan.describe() == "none"


def test_plan_keeps_an_option_that_failed_otherwise():
    """Only capacity failures move the plan on: a retry after another
    error uses the same option."""
    plan = CapacityPlan(("small",), [None], CapacityMemory(300))
    option = plan.next_option()
    plan.attempt(option)
    assert plan.next_option() == ("small", None)


# Config ------------------------------------------------------------------

AWS = """
labels:
  - name: small
providers:
  - name: ec2
    driver: aws
    region-name: us-west-2
    {provider_extra}
    cloud-images:
      - name: base
        username: ubuntu
        image-id: ami-1
    pools:
      - name: main
        labels:
          - name: small
            cloud-image: base
            key-name: np
            {label_extra}
"""

OPENSTACK = """
labels:
  - name: small
providers:
  - name: os
    cloud: fake
    cloud-images:
      - name: base
        image-name: base
    pools:
      - name: main
        labels:
          - name: small
            cloud-image: base
            {label_extra}
"""

AZURE = """
labels:
  - name: small
providers:
  - name: az
    driver: azure
    location: westeurope
    resource-group: nodepool
    resource-group-location: westeurope
    auth-path: /etc/azure.json
    subnet-id: /subscriptions/s/subnets/default
    cloud-images:
      - name: base
        username: zuul
        image-reference:
          publisher: Canonical
          offer: UbuntuServer
          sku: 22_04-lts
          version: latest
    pools:
      - name: main
        labels:
          - name: small
            cloud-image: base
            hardware-profile:
              vm-size: Standard_B2s
            {label_extra}
"""


def load_text(tmp_path, text):
    path = tmp_path / "nodepool.yaml"
    path.write_text(text)
    return load_config(str(path), env={})


def label_of(config, provider):
    pool = config.providers[provider].pools["main"]
    return pool.labels["small"]


def test_aws_fallback_instance_types(tmp_path):
    config = load_text(tmp_path, AWS.format(
        provider_extra="capacity-cooldown: 60",
        label_extra="instance-type: t3.medium\n"
                    "            fallback-instance-types: [t3.large, "
                    "m5.large]"))
    assert config.providers["ec2"].capacity_cooldown == 60
    label = label_of(config, "ec2")
    assert label.capacity_types == ("t3.medium", "t3.large", "m5.large")
    fallback = label.for_capacity_type("m5.large")
    assert fallback.instance_type == "m5.large"
    assert fallback.name == "small" and fallback.key_name == "np"
    assert label.instance_type == "t3.medium"  # unchanged


def test_aws_without_fallback_key_keeps_nodepool_11_behaviour(tmp_path):
    config = load_text(tmp_path, AWS.format(
        provider_extra="", label_extra="instance-type: t3.medium"))
    assert config.providers["ec2"].capacity_cooldown == 300
    label = label_of(config, "ec2")
    assert label.fallback_instance_types is None
    assert label.capacity_types is None


def test_aws_fallback_needs_an_instance_type(tmp_path):
    with pytest.raises(ConfigValidationError) as e:
        load_text(tmp_path, AWS.format(
            provider_extra="",
            label_extra="fleet:\n"
                        "              instance-types: [t3.small]\n"
                        "              allocation-strategy: prioritized\n"
                        "            fallback-instance-types: [t3.large]"))
    assert "fallback-instance-types" in str(e.value)


def test_aws_negative_cooldown_refused(tmp_path):
    with pytest.raises(ConfigValidationError) as e:
        load_text(tmp_path, AWS.format(
            provider_extra="capacity-cooldown: -1",
            label_extra="instance-type: t3.medium"))
    assert "capacity-cooldown" in str(e.value)


def test_openstack_fallback_flavor_names(tmp_path):
    config = load_text(tmp_path, OPENSTACK.format(
        label_extra="flavor-name: m1.small\n"
                    "            fallback-flavor-names: [m1.medium]"))
    label = label_of(config, "os")
    assert label.capacity_types == ("m1.small", "m1.medium")
    assert label.for_capacity_type("m1.small") is label
    assert label.for_capacity_type("m1.medium").flavor_name == "m1.medium"


def test_openstack_min_ram_label_falls_back_to_exact_flavors(tmp_path):
    config = load_text(tmp_path, OPENSTACK.format(
        label_extra="min-ram: 2048\n"
                    "            flavor-name: general\n"
                    "            fallback-flavor-names: [m1.large]"))
    label = label_of(config, "os")
    assert label.capacity_types == ("min-ram=2048,general", "m1.large")
    fallback = label.for_capacity_type("m1.large")
    assert (fallback.min_ram, fallback.flavor_name) == (None, "m1.large")
    assert label.for_capacity_type("min-ram=2048,general") is label
    config = load_text(tmp_path, OPENSTACK.format(
        label_extra="min-ram: 2048"))
    assert label_of(config, "os").capacity_types is None


def test_azure_fallback_hardware_profiles(tmp_path):
    config = load_text(tmp_path, AZURE.format(
        label_extra="fallback-hardware-profiles:\n"
                    "              - vm-size: Standard_D2s_v5\n"
                    "              - vm-size: Standard_B2ms"))
    label = label_of(config, "az")
    assert label.capacity_types == ("Standard_B2s", "Standard_D2s_v5",
                                    "Standard_B2ms")
    fallback = label.for_capacity_type("Standard_B2ms")
    assert fallback.hardware_profile["vm_size"] == "Standard_B2ms"
    assert label.hardware_profile["vm_size"] == "Standard_B2s"
    config = load_text(tmp_path, AZURE.format(label_extra=""))
    assert label_of(config, "az").capacity_types is None
