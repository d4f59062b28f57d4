# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Which provider serves a request: provider hints, provider priorities,
labels that only some providers have, zones changing in the cloud and a
provider that cannot start."""

from nodepool.zk.models import RequestState
from tests.fakes.test_driver import FakeCloud
from tests.fixtures.waits import wait_for
from tests.functional.conftest import idle_ready, served_by


TWO_PROVIDERS = """
labels:
  - name: small
    min-ready: {min_ready}
  - name: large
    min-ready: {large_min_ready}
providers:
  - name: first
    driver: test
    priority: {first_priority}
    pools:
      - name: main
        max-servers: {first_max}
        labels:
          - name: small
          - name: large
            cores: 4
  - name: second
    driver: test
    priority: 50
    pools:
      - name: main
        labels:
          - name: small
"""


def two_providers(launcher_factory, **params):
    values = dict(min_ready=0, large_min_ready=0, first_priority=100,
                  first_max=10)
    values.update(params)
    launcher = launcher_factory(TWO_PROVIDERS, **values)
    # Yielding to the better pool needs both pools registered.
    wait_for(lambda: len(launcher.services.registry.pools()) == 2)
    return launcher


def test_unknown_provider_hint_still_fulfilled(launcher_factory, zuul):
    two_providers(launcher_factory)
    done, nodes = served_by(zuul, zuul.submit(["small"],
                                              provider="no-such-provider"))
    assert nodes[0].provider in ("first", "second")
    zuul.finish(nodes)


def test_hinted_provider_without_the_label_leaves_it_to_others(
        launcher_factory, zuul):
    two_providers(launcher_factory)
    done, nodes = served_by(zuul, zuul.submit(["large"], provider="second"))
    assert [n.provider for n in nodes] == ["first"]
    zuul.finish(nodes)


def test_priority_provider_used_until_paused(launcher_factory, zuul):
    # "first" has the better priority but room for one node only.
    launcher = two_providers(launcher_factory, first_priority=1,
                             first_max=1)
    done, first_nodes = served_by(zuul, zuul.submit(["small"]))
    assert [n.provider for n in first_nodes] == ["first"]
    # The next request pauses "first"; only then may "second" take the
    # requests after it.
    waiting = zuul.submit(["small"])
    worker = launcher.pool_workers[("first", "main")]
    wait_for(lambda: worker.paused, message="first pool never paused")
    wait_for(lambda: any(p.paused for p in launcher.services.registry.pools()
                         if p.provider_name == "first"))
    done, nodes = served_by(zuul, zuul.submit(["small"]))
    assert [n.provider for n in nodes] == ["second"]
    zuul.finish(nodes)
    zuul.finish(first_nodes)
    done, nodes = served_by(zuul, waiting)
    assert [n.provider for n in nodes] == ["first"]
    zuul.finish(nodes)


def test_only_providers_defining_a_label_serve_it(launcher_factory, zuul):
    # "second" has the better priority but no "large": min-ready comes
    # from "first", and so do requests.
    two_providers(launcher_factory, large_min_ready=1)
    (node,) = wait_for(lambda: idle_ready(zuul, "large") or None)
    assert node.provider == "first"
    assert FakeCloud.get("second").created == 0
    for _ in range(2):
        done, nodes = served_by(zuul, zuul.submit(["large", "large"]))
        assert {n.provider for n in nodes} == {"first"}
        zuul.finish(nodes)
    assert FakeCloud.get("second").created == 0


def test_zone_change_in_the_cloud_is_followed(launcher_factory, zuul):
    cloud = FakeCloud.get("fake")
    cloud.azs = ["old-a", "old-b"]
    launcher_factory()
    done, nodes = served_by(zuul, zuul.submit(["small"]))
    assert nodes[0].az in ("old-a", "old-b")
    zuul.finish(nodes)
    cloud.azs = ["new-a", "new-b"]
    # Upstream tolerates one failed request here; we recover at once.
    for _ in range(3):
        done, nodes = served_by(zuul, zuul.submit(["small", "small"]))
        assert {n.az for n in nodes} <= {"new-a", "new-b"}
        zuul.finish(nodes)


BROKEN_AND_HEALTHY = """
labels:
  - name: small
  - name: large
providers:
  - name: broken
    driver: test
    pools:
      - name: main
        labels:
          - name: large
  - name: healthy
    driver: test
    pools:
      - name: main
        labels:
          - name: small
"""


def test_provider_that_cannot_start_fails_only_its_labels(
        launcher_factory, zuul):
    FakeCloud.get("broken").unreachable = "fake: cannot reach this cloud"
    launcher = launcher_factory(BROKEN_AND_HEALTHY)
    assert sorted(launcher.providers) == ["healthy"]
    done = zuul.wait_for_request(zuul.submit(["large"]))
    assert done.state == RequestState.FAILED
    done, nodes = served_by(zuul, zuul.submit(["small"]))
    assert nodes[0].provider == "healthy"
    zuul.finish(nodes)
