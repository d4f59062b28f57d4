# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""LeakSweeper on its own, against a fake adapter's resource list."""

from types import SimpleNamespace

from nodepool.driver.statemachine.adapter import Resource
from nodepool.driver.statemachine.leaks import LeakSweeper


class FakeAdapter:
    def __init__(self, resources=()):
        self.resources = list(resources)
        self.deleted: list = []
        self.failing: set = set()

    def list_resources(self):
        return list(self.resources)

    def delete_resource(self, resource):
        if resource.id in self.failing:
            raise RuntimeError("cloud refused")
        self.resources.remove(resource)
        self.deleted.append(resource.id)


class Stats:
    def __init__(self):
        self.leaked: list = []

    def record_leaked(self, provider, plural):
        self.leaked.append((provider, plural))


def tagged(id, type="instance", provider="p1", **meta):
    metadata = {"nodepool_provider_name": provider}
    metadata.update(("nodepool_%s" % k, v) for k, v in meta.items())
    return Resource(metadata, type, id)


def make_sweeper(resources, stats=None):
    adapter = FakeAdapter(resources)
    services = SimpleNamespace(stats=stats)
    return LeakSweeper("p1", adapter, services), adapter


def test_deletes_only_what_two_passes_found_leaked():
    stats = Stats()
    sweeper, adapter = make_sweeper([
        tagged("vm-known", node_id="1"),
        tagged("vm-leaked", node_id="2"),
        tagged("img-known", type="image", build_id="b1", upload_id="7"),
        tagged("img-leaked", type="image", build_id="b1", upload_id="8"),
        tagged("vm-other", provider="p2", node_id="2"),
        tagged("untagged"),  # ours, but neither node nor upload
        Resource(None, "volume", "no-metadata"),
    ], stats)
    assert sweeper.sweep({"1"}, {"b1-7"}) == 0
    assert adapter.deleted == []
    assert sweeper.sweep({"1"}, {"b1-7"}) == 2
    assert sorted(adapter.deleted) == ["img-leaked", "vm-leaked"]
    assert sorted(stats.leaked) == [("p1", "images"), ("p1", "instances")]


def test_resource_known_again_is_kept():
    sweeper, adapter = make_sweeper([tagged("vm", node_id="2")])
    assert sweeper.sweep(set(), set()) == 0
    # The record showed up (written after the first listing of nodes).
    assert sweeper.sweep({"2"}, set()) == 0
    # Leaked again: the count starts afresh.
    assert sweeper.sweep(set(), set()) == 0
    assert sweeper.sweep(set(), set()) == 1
    assert adapter.deleted == ["vm"]


def test_failed_delete_is_retried_on_the_next_pass():
    sweeper, adapter = make_sweeper([tagged("vm", node_id="2")])
    adapter.failing.add("vm")
    sweeper.sweep(set(), set())
    assert sweeper.sweep(set(), set()) == 0
    adapter.failing.clear()
    assert sweeper.sweep(set(), set()) == 1
    assert adapter.deleted == ["vm"]


def test_no_stats_is_fine():
    sweeper, adapter = make_sweeper([tagged("vm", node_id="2")])
    sweeper.sweep(set(), set())
    assert sweeper.sweep(set(), set()) == 1
