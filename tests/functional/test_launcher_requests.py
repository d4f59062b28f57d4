# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The order in which the launcher serves requests, and requests served
despite odd node records."""

import json

from nodepool.zk.models import RequestState
from tests.functional.conftest import served_by


def test_relative_priority_orders_requests(launcher_factory, zuul):
    # Both wait before any launcher runs; with room for one node the one
    # with the lower relative priority is served first.
    later = zuul.submit(["small"], relative_priority=2)
    sooner = zuul.submit(["small"], relative_priority=1)
    launcher_factory(max_servers=1)
    done, nodes = served_by(zuul, sooner)
    assert zuul.get_request(later).state != RequestState.FULFILLED
    zuul.finish(nodes)
    done_later, nodes = served_by(zuul, later)
    assert done.state_time < done_later.state_time
    zuul.finish(nodes)


def test_servable_requests_not_held_up_by_unservable_ones(
        launcher_factory, zuul):
    bad = [zuul.submit(["no-such-label"]) for _ in range(3)]
    good = zuul.submit(["small"])
    launcher_factory()
    for request in bad:
        assert zuul.wait_for_request(request).state == RequestState.FAILED
    done, nodes = served_by(zuul, good)
    zuul.finish(nodes)


def test_records_without_type_or_pool_do_not_break_launching(
        launcher_factory, zuul):
    kazoo = zuul.kazoo
    kazoo.create("/nodepool/nodes/9000000020", json.dumps({
        "state": "ready", "provider": "fake", "pool": "main",
        "external_id": "i-none"}).encode(), makepath=True)
    kazoo.create("/nodepool/nodes/9000000021", json.dumps({
        "state": "ready", "provider": "fake", "type": ["small"],
        "external_id": "i-none"}).encode(), makepath=True)
    launcher_factory()
    for _ in range(2):
        done, nodes = served_by(zuul, zuul.submit(["small"]))
        assert nodes[0].id not in ("9000000020", "9000000021")
        zuul.finish(nodes)
