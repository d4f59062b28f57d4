# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Fixtures shared by the unit tests of the ZooKeeper layer."""

import pytest

from nodepool.zk.cache import NodeCache


@pytest.fixture
def writer(zk_factory):
    """A second client playing the other party (Zuul, another launcher)."""
    return zk_factory(tls=False).kazoo


@pytest.fixture
def node_cache(zk_client):
    """A started, synchronised node cache on the test's client."""
    cache = NodeCache(zk_client).start()
    assert cache.ensure_ready(30)
    yield cache
    cache.stop()
