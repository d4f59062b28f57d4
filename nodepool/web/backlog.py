# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""How long open node requests have waited, for the web app's
``/metrics`` (gauge ``nodepool_label_oldest_request_age_seconds``); see
doc/source/webapp.rst.  Not a statsd metric: nodepool 11 has none like it.
"""

from typing import Any, Dict, Iterable

from prometheus_client.core import GaugeMetricFamily

from nodepool.zk.models import RequestState

OPEN_STATES = (RequestState.REQUESTED, RequestState.PENDING)


def oldest_request_ages(requests: Iterable[Any],
                        now: float) -> Dict[str, float]:
    """Per label, the age in seconds of the oldest open (``requested`` or
    ``pending``) request asking for it.

    A request's age counts from its ``created_time`` (set by Zuul), or,
    without one, from its last state change; a time in the future counts
    as age 0.  A request asking for a label twice counts once.
    """
    ages: Dict[str, float] = {}
    for request in requests:
        if request.state not in OPEN_STATES:
            continue
        since = request.created_time or request.state_time
        if since is None:
            continue
        age = max(0.0, now - since)
        for label in set(request.node_types or ()):
            ages[label] = max(age, ages.get(label, 0.0))
    return ages


def request_age_gauge(launcher, now: float) -> GaugeMetricFamily:
    """The gauge of :func:`oldest_request_ages` over the launcher's
    request cache (labels without an open request are left out)."""
    gauge = GaugeMetricFamily(
        "nodepool_label_oldest_request_age_seconds",
        "Age of the oldest open node request asking for a label",
        labels=["label"])
    for label, age in sorted(oldest_request_ages(
            launcher.services.request_cache.values(), now).items()):
        gauge.add_metric([label], age)
    return gauge
