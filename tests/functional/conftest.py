# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Fixtures for launcher tests: an in-process launcher on the test driver
and a Zuul-like client."""

import textwrap

import pytest
from kazoo.exceptions import NoNodeError

from nodepool.launcher.server import Intervals, NodePoolLauncher
from nodepool.stats import StatsReporter
from nodepool.zk.models import Node, NodeState, RequestState
from tests.fakes import test_driver
from tests.fakes.scanner import FakeScanner
from tests.fakes.test_driver import FakeCloud
from tests.fixtures.zuul import ZuulClient

BASE_CONFIG = """
labels:
  - name: small
    min-ready: {min_ready}
  - name: large
providers:
  - name: fake
    driver: test
    launch-retries: {retries}
    launch-timeout: {launch_timeout}
    pools:
      - name: main
        max-servers: {max_servers}
        labels:
          - name: small
          - name: large
            cores: 4
"""

# The values BASE_CONFIG is filled with unless a test says otherwise.
BASE_DEFAULTS = dict(min_ready=0, retries=3, max_servers=10,
                     launch_timeout=60)


def base_config(**params) -> str:
    """BASE_CONFIG filled from BASE_DEFAULTS and ``params``."""
    return textwrap.dedent(BASE_CONFIG).format(**dict(BASE_DEFAULTS,
                                                      **params))


# The providers section of a config whose one provider, ``fake`` on the
# test driver, serves label ``small`` from pool ``main``.
SMALL_PROVIDER = """
providers:
  - name: fake
    driver: test
    pools:
      - name: main
        labels:
          - name: small
"""

FAST = Intervals(main=0.1, pool=0.05, runner=0.02, deleted_nodes=0.1,
                 cleanup=0.2, stats=0.1)


@pytest.fixture(autouse=True)
def fake_driver():
    test_driver.register()
    FakeCloud.reset_all()
    yield
    FakeCloud.reset_all()
    test_driver.unregister()


@pytest.fixture
def launcher_factory(tmp_path, zk_factory):
    launchers = []

    def factory(config=None, **params):
        """Start a launcher on ``config`` (default BASE_CONFIG), a format
        template filled from defaults and ``params``."""
        intervals = params.pop("intervals", FAST)
        values = dict(BASE_DEFAULTS, **params)
        text = textwrap.dedent(config or BASE_CONFIG).format(**values)
        path = tmp_path / ("nodepool-%d.yaml" % len(launchers))
        path.write_text(text)
        launcher = NodePoolLauncher(str(path), zk_client=zk_factory(),
                                    intervals=intervals,
                                    scanner=FakeScanner(),
                                    stats=StatsReporter.from_environment())
        launcher.start()
        assert launcher.ready.wait(30)
        launchers.append(launcher)
        return launcher
    yield factory
    for launcher in launchers:
        launcher.stop()
    for launcher in launchers:
        launcher.join()


@pytest.fixture
def zuul(zk_factory):
    client = ZuulClient(zk_factory(tls=False))
    yield client
    client.close()


def node_ids(kazoo):
    """The ids of all node records (none before the first one)."""
    try:
        return kazoo.get_children("/nodepool/nodes")
    except NoNodeError:
        return []


def read_nodes(kazoo):
    """All node records with data (records vanishing meanwhile skipped)."""
    try:
        ids = kazoo.get_children("/nodepool/nodes")
    except NoNodeError:
        return []
    nodes = []
    for node_id in ids:
        try:
            data, _ = kazoo.get("/nodepool/nodes/" + node_id)
        except NoNodeError:
            continue
        if data:
            nodes.append(Node.from_bytes(data, id=node_id))
    return nodes


def nodes_of(zuul, state=None, label=None, provider=None):
    """Node records with the given state, label and provider (each
    ``None`` for any)."""
    return [n for n in read_nodes(zuul.kazoo)
            if (state is None or n.state == state)
            and (label is None or label in (n.type or ()))
            and (provider is None or n.provider == provider)]


def idle_ready(zuul, label="small"):
    """Ready nodes of ``label`` allocated to no request."""
    return [n for n in nodes_of(zuul, NodeState.READY, label)
            if not n.allocated_to]


def served_by(zuul, request, timeout=30):
    """Wait for ``request`` to be fulfilled; accept its nodes.  Returns
    ``(request, nodes)``."""
    done = zuul.wait_for_request(request, timeout=timeout)
    assert done.state == RequestState.FULFILLED, done.declined_by
    nodes = zuul.accept_nodes(done)
    return done, nodes
