# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The launcher's statsd gauges that are not tied to one pool.

* Global node and request gauges, emitted by the one launcher that wins
  the stats election.
* This launcher's ZooKeeper backlogs (client send queue, cache queues),
  emitted by every launcher every ``Intervals.zk_queues`` seconds.

Provider and tenant limits are emitted by the pool workers.
"""

import logging
import socket
import threading
from typing import Dict, Tuple

from nodepool.zk.components import StatsElection

log = logging.getLogger("nodepool.StatsWorker")


def zk_queue_sizes(services) -> Tuple[int, Dict[str, Tuple[int, int]]]:
    """``(connection queue, {cache name: (event queue, playback queue)})``
    of a launcher's services, cache names as in
    :data:`nodepool.stats.ZK_CACHES`."""
    caches = {
        "node_cache": services.node_cache,
        "request_cache": services.request_cache,
        "image_cache": services.image_cache,
    }
    return (services.zk_client.connection_queue_size,
            {name: (cache.event_queue_size, cache.playback_queue_size)
             for name, cache in caches.items()})


class StatsWorker:
    """Stands for the stats election; while leading, emits the node and
    request gauges whenever the node cache changed (at most every
    ``interval`` seconds).  Independently of the election it reports the
    ZooKeeper queue lengths every ``zk_interval`` seconds, starting at
    once."""

    def __init__(self, server, interval: float, zk_interval: float):
        self.server = server
        self.services = server.services
        self.interval = interval
        self.zk_interval = zk_interval
        self.hostname = socket.gethostname()
        self._stop = threading.Event()
        self.election = StatsElection(self.services.zk_client)
        self._thread = threading.Thread(target=self._run, name="StatsWorker",
                                        daemon=True)
        self._zk_thread = threading.Thread(
            target=self._run_zk_queues, name="StatsWorkerZK", daemon=True)

    def start(self) -> None:
        if self.services.stats is None or not self.services.stats.enabled:
            return  # no statsd configured: don't even stand for election
        self._thread.start()
        self._zk_thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.election.cancel()

    def join(self, timeout=None) -> None:
        for thread in (self._thread, self._zk_thread):
            if thread.is_alive():
                thread.join(timeout)

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
        self.services.stats.update_global_gauges(
            self.services.node_cache.values(),
            self.services.request_cache.values(),
            self.services.registry.pools())

    def _run_zk_queues(self) -> None:
        while True:
            try:
                self.emit_zk_queues()
            except Exception:
                log.exception("Emitting ZooKeeper queue stats failed")
            if self._stop.wait(self.zk_interval):
                return

    def emit_zk_queues(self) -> None:
        """Send this launcher's ZooKeeper queue gauges now."""
        connection_queue, caches = zk_queue_sizes(self.services)
        self.services.stats.update_zk_queues(connection_queue, caches,
                                             hostname=self.hostname)
