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
from typing import Dict, Tuple

from nodepool.service import ServiceThread
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


class ZkQueueReporter(ServiceThread):
    """Sends a launcher's ZooKeeper queue gauges every ``interval``
    seconds, starting at once."""

    def __init__(self, services, interval: float, hostname: str):
        super().__init__("StatsWorkerZK", interval, log)
        self.services = services
        self.hostname = hostname

    def run_once(self) -> None:
        self.emit()

    def on_error(self, error: Exception) -> None:
        self.log.exception("Emitting ZooKeeper queue stats failed")

    def emit(self) -> None:
        connection_queue, caches = zk_queue_sizes(self.services)
        self.services.stats.update_zk_queues(connection_queue, caches,
                                             hostname=self.hostname)


class StatsWorker(ServiceThread):
    """Stands for the stats election; while leading, emits the node and
    request gauges whenever the node cache changed (at most every
    ``interval`` seconds).  Independently of the election its
    :class:`ZkQueueReporter` reports the ZooKeeper queue lengths every
    ``zk_interval`` seconds, starting at once.  Neither thread runs
    without statsd."""

    def __init__(self, services, interval: float, zk_interval: float):
        super().__init__("StatsWorker", interval, log)
        self.services = services
        self.zk_interval = zk_interval
        self.hostname = socket.gethostname()
        self.election = StatsElection(self.services.zk_client)
        self._zk_thread = ZkQueueReporter(self.services, zk_interval,
                                          self.hostname)

    def start(self) -> None:
        if self.services.stats is None or not self.services.stats.enabled:
            return  # no statsd configured: don't even stand for election
        super().start()
        self._zk_thread.start()

    def on_stop(self) -> None:
        # Ends the leadership or the contention the thread waits in.
        self.election.close()
        self._zk_thread.stop()

    def join(self, timeout=None) -> bool:
        ended = super().join(timeout)
        return self._zk_thread.join(timeout) and ended

    def loop(self) -> None:
        while not self.stopping:
            try:
                self.election.run(self._lead)
            except Exception:
                self.log.exception("Stats election failed")
                self.wait(self.interval)

    def _lead(self) -> None:
        self.log.info("Elected to emit global stats")
        cache = self.services.node_cache
        cache.stats_event.set()
        while not self.election.wait(self.interval):
            if not cache.stats_event.is_set():
                continue
            cache.stats_event.clear()
            try:
                self._emit()
            except Exception:
                self.log.exception("Emitting stats failed")

    def _emit(self) -> None:
        self.services.stats.update_global_gauges(
            self.services.node_cache.values(),
            self.services.request_cache.values(),
            self.services.registry.pools())

    def emit_zk_queues(self) -> None:
        """Send this launcher's ZooKeeper queue gauges now."""
        self._zk_thread.emit()
