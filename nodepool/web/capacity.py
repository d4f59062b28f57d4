# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The capacity memory of a launcher's providers, for the web app.

``/capacity`` lists the (type, zone) pairs capacity fallback skips now
(:func:`capacity_list`) and ``/metrics`` has the gauge
``nodepool_provider_capacity_cooldowns`` (:func:`capacity_gauge`); see
doc/source/capacity-fallback.rst.
"""

from prometheus_client.core import GaugeMetricFamily


def capacity_list(launcher) -> list:
    """One dict per pair cooling down: ``provider`` and the memory's
    entry (``type``, ``zone``, ``failures``, ``seconds_left``)."""
    return [dict(provider=provider.name, **entry)
            for provider in list(launcher.providers.values())
            for entry in provider.capacity_entries()]


def capacity_gauge(launcher) -> GaugeMetricFamily:
    """How many pairs each provider skips now (0 for those without)."""
    gauge = GaugeMetricFamily(
        "nodepool_provider_capacity_cooldowns",
        "(type, zone) pairs a provider skips after capacity failures",
        labels=["provider"])
    for provider in list(launcher.providers.values()):
        gauge.add_metric([provider.name],
                         len(provider.capacity_entries()))
    return gauge
