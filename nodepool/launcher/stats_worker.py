# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Global gauges, emitted by the one launcher that wins the election."""

import logging
import threading

from nodepool.zk.components import StatsElection

log = logging.getLogger("nodepool.StatsWorker")


class StatsWorker:
    """Stands for the stats election; while leading, emits the node and
    request gauges whenever the node cache changed (at most every
    ``interval`` seconds)."""

    def __init__(self, server, interval: float):
        self.server = server
        self.services = server.services
        self.interval = interval
        self._stop = threading.Event()
        self.election = StatsElection(self.services.zk_client)
        self._thread = threading.Thread(target=self._run, name="StatsWorker",
                                        daemon=True)

    def start(self) -> None:
        if self.services.stats is None or not self.services.stats.enabled:
            return  # no statsd configured: don't even stand for election
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.election.cancel()

    def join(self, timeout=None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.election.run(self._lead)
            except Exception:
                log.exception("Stats election failed")
                self._stop.wait(self.interval)

    def _lead(self) -> None:
        log.info("Elected to emit global stats")
        cache = self.services.node_cache
        cache.stats_event.set()
        while not self.election.wait(self.interval):
            if not cache.stats_event.is_set():
                continue
            cache.stats_event.clear()
            try:
                self._emit()
            except Exception:
                log.exception("Emitting stats failed")

    def _emit(self) -> None:
        stats = self.services.stats
        stats.update_global_gauges(self.services.node_cache.values(),
                                   self.services.request_cache.values(),
                                   self.services.registry.pools())
        for provider in list(self.server.providers.values()):
            stats.update_provider_limits(provider.config)
