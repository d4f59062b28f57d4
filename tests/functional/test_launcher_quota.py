# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Paused pools: a waiting request after max-servers shrinks or grows,
and an error while paused."""

import os
import time

from nodepool.zk.models import RequestState
from tests.fakes.test_driver import FakeCloud
from tests.fixtures.waits import wait_for
from tests.functional.conftest import served_by


def test_paused_request_declined_when_max_servers_shrinks(
        launcher_factory, zuul, tmp_path):
    launcher = launcher_factory(max_servers=2)
    first = zuul.run_job(["small", "small"])
    waiting = zuul.submit(["small", "small"])
    worker = launcher.pool_workers[("fake", "main")]
    wait_for(lambda: worker.paused, message="pool never paused")
    assert zuul.get_request(waiting).state == RequestState.PENDING
    # Two nodes at once no longer fit the pool: the request fails instead
    # of waiting for capacity that will never be there.
    path = tmp_path / "nodepool-0.yaml"
    path.write_text(path.read_text().replace("max-servers: 2",
                                             "max-servers: 1"))
    os.utime(path, (time.time() + 5, time.time() + 5))
    done = zuul.wait_for_request(waiting, timeout=30)
    assert done.state == RequestState.FAILED
    assert done.declined_by
    zuul.finish(first)
    assert FakeCloud.get("fake").created == 2


def test_paused_request_served_when_max_servers_grows(
        launcher_factory, zuul, tmp_path):
    launcher = launcher_factory(max_servers=1)
    first = zuul.run_job(["small"])
    waiting = zuul.submit(["small"])
    worker = launcher.pool_workers[("fake", "main")]
    wait_for(lambda: worker.paused, message="pool never paused")
    path = tmp_path / "nodepool-0.yaml"
    path.write_text(path.read_text().replace("max-servers: 1",
                                             "max-servers: 2"))
    os.utime(path, (time.time() + 5, time.time() + 5))
    done, nodes = served_by(zuul, waiting)
    assert done.declined_by  # the old pool gave it up
    zuul.finish(nodes + first)


def test_error_while_paused_fails_the_request_and_unpauses(
        launcher_factory, zuul):
    launcher = launcher_factory(max_servers=1)
    first = zuul.run_job(["small"])
    waiting = zuul.submit(["small"])
    worker = launcher.pool_workers[("fake", "main")]
    wait_for(lambda: worker.paused, message="pool never paused")
    cloud = FakeCloud.get("fake")
    cloud.reserve_error = RuntimeError("fake failure while paused")
    done = zuul.wait_for_request(waiting)
    assert done.state == RequestState.FAILED
    assert done.declined_by == [worker.launcher_id]
    wait_for(lambda: not worker.handlers and not worker.paused)
    cloud.reserve_error = None
    zuul.finish(first)
    zuul.finish(zuul.run_job(["small"]))
