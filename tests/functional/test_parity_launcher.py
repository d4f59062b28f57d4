# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Launcher behaviours that must match nodepool 11 (issue 11): pool
priority 0, max-concurrency per provider, launch result names, max-ready-age
of multi-label nodes, OpenStack ``groups`` metadata and the static driver's
winrm port."""

from nodepool.zk.components import PoolComponent
from nodepool.zk.models import RequestState
from tests.fixtures.waits import wait_for

# Our pool serves both labels; another launcher's pool (a record planted
# by the test) serves only ``small``.
PRIORITY = """
labels:
  - name: small
  - name: large
providers:
  - name: fake
    driver: test
    pools:
      - name: main
        priority: 1
        labels:
          - name: small
          - name: large
"""


def test_pool_priority_zero_is_the_highest(launcher_factory, zuul,
                                           zk_factory):
    other = PoolComponent(zk_factory(), hostname="elsewhere")
    other.register()
    other.update(id="elsewhere-PoolWorker.remote-main", name="main",
                 provider_name="remote", supported_labels=["small"],
                 priority=0, paused=False, state="running")
    launcher = launcher_factory(PRIORITY)
    wait_for(lambda: other.id in {
        p.id for p in launcher.services.registry.pools()})
    yielded = zuul.submit(["small"])
    # Only our pool serves "large": once that request (submitted later,
    # so already known to the pool worker's pass that took it) is done,
    # the pool has passed over the "small" one.
    mine = zuul.wait_for_request(zuul.submit(["large"]))
    assert mine.state == RequestState.FULFILLED
    assert zuul.get_request(yielded).state == RequestState.REQUESTED
    # Once the priority-0 pool pauses, ours is next in line.
    other.update(paused=True)
    done = zuul.wait_for_request(yielded)
    assert done.state == RequestState.FULFILLED
    other.unregister()
