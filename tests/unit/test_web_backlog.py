# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The age of the oldest open request per label (web app /metrics)."""

import types

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

from nodepool.web import backlog
from nodepool.web.app import WebApp
from nodepool.zk.models import NodeRequest, RequestState

NOW = 1_700_000_000.0


def request(labels, state=RequestState.REQUESTED, created=None,
            state_time=None):
    req = NodeRequest.new(labels, "zuul", created_time=created)
    req.state = state
    req.state_time = state_time
    return req


def test_oldest_open_request_per_label():
    requests = [
        request(["small"], created=NOW - 100),
        request(["small", "large"], RequestState.PENDING, created=NOW - 50),
        # Finished requests do not wait, however old.
        request(["large"], RequestState.FULFILLED, created=NOW - 900),
        request(["gpu"], RequestState.FAILED, created=NOW - 900),
        # Without created_time: since the last state change.
        request(["medium"], state_time=NOW - 30),
        # Clock skew: not negative.
        request(["tiny", "tiny"], created=NOW + 5),
        # No time at all: left out.
        request(["odd"]),
    ]
    assert backlog.oldest_request_ages(requests, NOW) == {
        "small": 100.0, "large": 50.0, "medium": 30.0, "tiny": 0.0}


def test_gauge_on_the_web_app():
    requests = [request(["small"], created=NOW - 100)]
    services = types.SimpleNamespace(
        registry=types.SimpleNamespace(pools=lambda: []), node_cache={},
        request_cache={"200-0000000001": requests[0]})
    launcher = types.SimpleNamespace(services=services, providers={})
    text = prometheus_client.generate_latest(WebApp(launcher).registry)
    samples = {(sample.name, tuple(sample.labels.items())): sample.value
               for family in text_string_to_metric_families(text.decode())
               for sample in family.samples}
    age = samples[("nodepool_label_oldest_request_age_seconds",
                   (("label", "small"),))]
    # Scraped with the real clock, some time after NOW.
    assert age >= 100
    requests[0].state = RequestState.FULFILLED
    text = prometheus_client.generate_latest(WebApp(launcher).registry)
    assert b"nodepool_label_oldest_request_age_seconds{" not in text
