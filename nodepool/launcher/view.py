# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""What the launcher runs now, and the read-only view its workers get.

The launcher's main thread is the only writer of :class:`RunningSet`:
on a (re)load it replaces the config, the providers map and the pool
workers map, each as a whole, never changing one in place.  Any other
thread may read them through a :class:`LauncherView` and gets whichever
snapshot was current; a worker holds the view, never the launcher, so
data flows one way: launcher -> workers -> ZooKeeper stores.
"""

import types
from typing import Mapping, Optional


class RunningSet:
    """The config, providers and pool workers the launcher runs now.

    ``providers`` maps a provider name to its running provider;
    ``pool_workers`` maps ``(provider name, pool name)`` to the pool's
    worker.  Written by the launcher's main thread only (by replacing a
    field, see the module docstring).
    """

    def __init__(self):
        self.config = None
        self.providers: dict = {}
        self.pool_workers: dict = {}


class LauncherView:
    """Read-only access to a :class:`RunningSet` for the launcher's
    workers (any thread; every answer is a snapshot)."""

    def __init__(self, running: RunningSet):
        self._running = running

    @property
    def config(self):
        """The config loaded last (None before the first load)."""
        return self._running.config

    @property
    def providers(self) -> Mapping:
        """Provider name -> running provider (a read-only snapshot)."""
        return types.MappingProxyType(self._running.providers)

    def pool_launcher_id(self, provider_name: str,
                         pool_name: str) -> Optional[str]:
        """The ``launcher_id`` of the worker serving that pool now, or
        None if no worker serves it."""
        worker = self._running.pool_workers.get((provider_name, pool_name))
        return None if worker is None else worker.launcher_id

    def handled_request_ids(self) -> set:
        """Ids of the requests the current pool workers are handling."""
        return {handler.request.id
                for worker in list(self._running.pool_workers.values())
                for handler in list(worker.handlers)}
