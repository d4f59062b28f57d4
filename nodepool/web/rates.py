# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The API rate limiters of a launcher's providers, for the web app.

``/api-rates`` lists them (:func:`api_rate_list`) and ``/metrics`` has
the gauge ``nodepool_provider_api_rate`` (:func:`api_rate_gauge`); see
doc/source/adaptive-rate.rst.
"""

from prometheus_client.core import GaugeMetricFamily


def api_rate_list(launcher) -> list:
    """One dict per limiter of the launcher's providers: ``provider``
    and the limiter's status (``limiter``, ``rate``, ``ceiling``,
    ``adaptive``, ``throttles``)."""
    return [dict(provider=provider.name, **entry)
            for provider in list(launcher.providers.values())
            for entry in provider.api_rates()]


def api_rate_gauge(launcher) -> GaugeMetricFamily:
    """The calls per second each limited limiter allows now."""
    gauge = GaugeMetricFamily(
        "nodepool_provider_api_rate",
        "API calls per second a provider's rate limiter allows now",
        labels=["provider", "limiter"])
    for row in api_rate_list(launcher):
        if row["rate"] is not None:
            gauge.add_metric([row["provider"], row["limiter"]], row["rate"])
    return gauge
