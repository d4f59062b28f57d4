# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The launcher daemon's core: configuration, providers and threads.

:class:`NodePoolLauncher` owns every thread of the launcher:

* its main loop (reload the config when the file changes, restart the
  providers whose config changed, keep one pool worker per provider pool,
  submit min-ready requests);
* one :class:`PoolWorker` per provider pool;
* per provider, the create and delete runners (and what the provider and
  its adapter own);
* the deleted-node, cleanup and stats workers and the node scanner;
* the retirement of a provider whose config changed (a short-lived task
  waiting for its old pool workers and runners to finish);
* the ZooKeeper caches and, when asked, the web app.

:meth:`NodePoolLauncher.stop` asks all of them to stop without waiting;
:meth:`NodePoolLauncher.join` waits for each (with a timeout).
"""

import logging
import threading
from dataclasses import dataclass
from typing import Optional

from nodepool import driver
from nodepool.config.loader import ConfigWatcher, changed_providers
from nodepool.driver.base import ProviderServices
from nodepool.launcher.cleanup import (
    DELETABLE_STATES, CleanupWorker, DeletedNodeWorker)
from nodepool.launcher.min_ready import MinReadyManager
from nodepool.launcher.pool_worker import PoolWorker
from nodepool.launcher.stats_worker import StatsWorker
from nodepool.launcher.view import LauncherView, RunningSet
from nodepool.launcher.why import RequestJournal
from nodepool.nodescan import NodeScanner
from nodepool.service import ServiceThread, TaskThreads
from nodepool.stats import StatsReporter
from nodepool.zk.cache import ImageCache, NodeCache, RequestCache
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.components import LAUNCHER, LauncherComponent
from nodepool.zk.images import ImageStore
from nodepool.zk.nodes import NodeStore
from nodepool.zk.registry import ComponentRegistry
from nodepool.zk.requests import RequestStore

log = logging.getLogger("nodepool.NodePool")

# How often a retirement checks whether the old provider is done, and
# how long it waits for a thread once that is stopped.
RETIRE_POLL = 1.0
RETIRE_JOIN_TIMEOUT = 60.0


@dataclass
class Intervals:
    """How often each loop runs, in seconds (tests shorten them)."""

    main: float = 1.0
    pool: float = 1.0
    runner: float = 1.0
    deleted_nodes: float = 5.0
    cleanup: float = 60.0
    stats: float = 5.0
    zk_queues: float = 10.0


class LauncherServices(ProviderServices):
    """The ZooKeeper views and services shared by the launcher's parts
    (the component ``registry`` is there once :meth:`start` returned)."""

    def __init__(self, zk_client: ZooKeeperClient, scanner, stats):
        node_cache = NodeCache(zk_client)
        request_cache = RequestCache(zk_client)
        super().__init__(
            zk_client, NodeStore(zk_client, cache=node_cache),
            RequestStore(zk_client, cache=request_cache),
            ImageStore(zk_client), node_cache=node_cache,
            request_cache=request_cache, image_cache=ImageCache(zk_client),
            scanner=scanner, stats=stats)
        self.registry: Optional[ComponentRegistry] = None

    def start(self, timeout: float = 60.0) -> None:
        for cache in (self.node_cache, self.request_cache, self.image_cache):
            cache.start()
        for cache in (self.node_cache, self.request_cache, self.image_cache):
            if not cache.ensure_ready(timeout):
                raise TimeoutError("%s not ready" % cache.name)
        self.registry = ComponentRegistry(self.zk_client)

    def stop(self) -> None:
        if self.registry is not None:
            self.registry.stop()
        for cache in (self.node_cache, self.request_cache, self.image_cache):
            cache.stop()


class MainLoop(ServiceThread):
    """The launcher's main loop (see :meth:`NodePoolLauncher._main_pass`)."""

    def __init__(self, launcher, interval: float):
        super().__init__("NodePool", interval, log)
        self.launcher = launcher

    def run_once(self) -> None:
        self.launcher._main_pass()

    def on_error(self, error: Exception) -> None:
        self.log.exception("Error in main loop")


class NodePoolLauncher:
    """The launcher: start it, let it run, stop and join it.

    :param config_path, secure_path: config files (reloaded on change).
    :param zk_client: an already connected client (tests); by default one
        is made from the config's ``zookeeper-*`` keys.
    :param scanner: the host-key scanner (default: a
        :class:`~nodepool.nodescan.NodeScanner`).
    :param stats: where metrics go; by default none are sent (the daemon
        passes :meth:`StatsReporter.from_environment`).
    :param webapp: serve the status web app on the config's ``webapp``
        address (the daemon does; tests start their own).
    """

    def __init__(self, config_path: str, secure_path: Optional[str] = None,
                 zk_client: Optional[ZooKeeperClient] = None,
                 intervals: Optional[Intervals] = None,
                 scanner: Optional[NodeScanner] = None,
                 stats: Optional[StatsReporter] = None,
                 webapp: bool = False):
        self.watcher = ConfigWatcher(config_path, secure_path)
        # The config, providers and pool workers in use; the workers read
        # them through ``view``, never through the launcher.
        self.running = RunningSet()
        self.view = LauncherView(self.running)
        self.intervals = intervals or Intervals()
        self._own_client = zk_client is None
        self.zk_client = zk_client
        self.scanner = scanner or NodeScanner()
        self.stats = stats if stats is not None else StatsReporter(None)
        self.services: Optional[LauncherServices] = None
        self.component: Optional[LauncherComponent] = None
        self.ready = threading.Event()  # set after the first main pass
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._first = True
        self.main_loop = MainLoop(self, self.intervals.main)
        self.workers: list = []
        # (provider, pool workers) being retired; each entry goes once
        # its retirement finished.  Guarded by _lock.
        self.retiring: list = []
        self._retirements = TaskThreads(log)
        self.want_webapp = webapp
        self.webapp = None
        # Why requests wait: written by the pool workers and their
        # handlers, read by the web app (doc/source/request-status.rst).
        self.journal = RequestJournal()

    # What runs now (see RunningSet: the main thread replaces each map as a
    # whole, never changes one in place) ---------------------------------

    @property
    def config(self):
        return self.running.config

    @property
    def providers(self) -> dict:
        return self.running.providers

    @property
    def pool_workers(self) -> dict:
        return self.running.pool_workers

    # Life cycle ---------------------------------------------------------

    def start(self) -> None:
        self.running.config = self.watcher.load()
        if self.want_webapp:
            # First, so that a busy port fails the start before any thread
            # runs; until the launcher is ready it answers 503.
            from nodepool.web.app import WebApp
            self.webapp = WebApp(self)
            self.webapp.start()
        if self.zk_client is None:
            self.zk_client = ZooKeeperClient.from_config(self.config)
            self.zk_client.connect()
        self.scanner.start()
        self.services = LauncherServices(
            self.zk_client, self.scanner, self.stats)
        self.services.start()
        self.component = LauncherComponent(self.zk_client)
        self.component.register()
        view, services, intervals = self.view, self.services, self.intervals
        self.min_ready = MinReadyManager(view, services)
        self.deleted_node_worker = DeletedNodeWorker(
            view, services, intervals.deleted_nodes)
        self.cleanup_worker = CleanupWorker(view, services, intervals.cleanup)
        self.workers = [
            self.deleted_node_worker,
            self.cleanup_worker,
            StatsWorker(services, intervals.stats, intervals.zk_queues),
        ]
        for worker in self.workers:
            worker.start()
        # Wake the pool workers as soon as requests change, the deleted-node
        # worker as soon as a node is done with.
        self.services.request_cache.add_listener(self._on_request_event)
        self.services.node_cache.add_listener(self._on_node_event)
        self.services.node_cache.add_lock_listener(self._on_node_lock)
        # Another launcher gone (stopped, or its session expired with it):
        # its pending requests are unlocked now; hand them back at once
        # rather than at the next cleanup pass.
        self.services.registry.add_departure_listener(
            self._on_component_departure)
        self.main_loop.start()

    def stop(self) -> None:
        """Ask every thread to stop; never blocks.  :meth:`join` waits
        for them.

        Pool workers stop without draining, also those of a provider
        being retired: the launcher is going away, what they still
        handle is abandoned (another launcher takes the requests).
        """
        self._stop.set()
        if self._own_client and self.zk_client is not None:
            # Threads waiting for ZooKeeper must not hold up the exit.
            self.zk_client.close_on_outage()
        self.main_loop.stop()
        self._stop_threads()

    def _stop_threads(self) -> None:
        for worker in self.workers:
            worker.stop()
        with self._lock:
            retiring = list(self.retiring)
        for worker in list(self.pool_workers.values()):
            worker.stop()
        for _, workers in retiring:
            for worker in workers:
                worker.stop()
        for provider in list(self.providers.values()):
            provider.stop()
        for provider, _ in retiring:
            provider.stop()
        self._retirements.stop()

    def join(self, timeout: float = 60.0) -> None:
        """Wait for every thread (``timeout`` seconds each), then let go
        of ZooKeeper.  Call :meth:`stop` first."""
        if self.webapp is not None:
            self.webapp.stop()
        self.main_loop.join(timeout)
        # The main loop may have started a provider after stop() looked.
        self._stop_threads()
        for worker in list(self.pool_workers.values()):
            worker.join(timeout)
        for worker in self.workers:
            worker.join(timeout)
        for provider in list(self.providers.values()):
            provider.join(timeout)
        self._retirements.join(timeout)
        self.scanner.stop()
        if self.component is not None:
            self.component.unregister()
        if self.services is not None:
            self.services.stop()
        if self._own_client and self.zk_client is not None:
            self.zk_client.disconnect()

    def _on_component_departure(self, kind, name) -> None:
        if kind == LAUNCHER:
            self.cleanup_worker.wake()

    def _on_node_event(self, key, obj, event_type) -> None:
        if obj is not None and obj.state in DELETABLE_STATES:
            self.deleted_node_worker.node_changed(obj)

    def _on_node_lock(self, node, contender, locked) -> None:
        # Zuul marks a node used, then unlocks it: the unlock is when the
        # node becomes deletable.
        if not locked and node.state in DELETABLE_STATES:
            self.deleted_node_worker.node_changed(node)

    def _on_request_event(self, key, obj, event_type) -> None:
        for worker in list(self.pool_workers.values()):
            worker.wake()

    # Main loop ----------------------------------------------------------

    def _main_pass(self) -> None:
        """One pass of the main loop (its thread only)."""
        self._pass(self._first)
        self._first = False
        self.ready.set()

    def _pass(self, first: bool) -> None:
        config, changed = self.watcher.reload()
        if first or changed:
            old = None if first else self.config
            self.running.config = config
            if old is not None:
                self._reconfigure_zookeeper(old, config)
            self._reconfigure(old, config)
        if not self.zk_client.connected:
            return
        if self.component.to_dict().get("state") != "running":
            self.component.update(state="running")
        self.min_ready.run()

    def _reconfigure_zookeeper(self, old, new) -> None:
        # A changed zookeeper-servers list is applied to the running client
        # (kazoo moves to a listed server on its next reconnection; the
        # session is kept).  TLS and timeout changes need a restart.
        if not self._own_client:
            return
        if (old.zookeeper_tls, old.zookeeper_timeout) != (
                new.zookeeper_tls, new.zookeeper_timeout):
            log.warning("zookeeper-tls or zookeeper-timeout changed; "
                        "restart the launcher to apply it")
        if old.zookeeper_hosts == new.zookeeper_hosts:
            return
        try:
            self.zk_client.set_hosts(new.zookeeper_hosts)
        except ValueError as exc:
            log.error("Cannot use the new zookeeper-servers: %s; restart "
                      "the launcher to apply it", exc)

    def _reconfigure(self, old, new) -> None:
        restart = changed_providers(old, new) if old is not None \
            else set(new.providers)
        for name in sorted(restart):
            self._stop_provider(name)
        for name in sorted(restart):
            if name in new.providers:
                self._start_provider(new.providers[name])

    def _start_provider(self, config) -> None:
        try:
            provider = driver.get_driver(config.driver).get_provider(
                config, self.services, interval=self.intervals.runner)
        except Exception:
            log.exception("Could not start provider %s", config.name)
            return
        provider.start()
        running = self.running
        running.providers = {**running.providers, config.name: provider}
        workers = {}
        for pool in config.pools.values():
            workers[(config.name, pool.name)] = PoolWorker(
                self.view, self.services, provider, pool,
                interval=self.intervals.pool, journal=self.journal)
        running.pool_workers = {**running.pool_workers, **workers}
        for worker in workers.values():
            worker.start()
        log.info("Started provider %s", config.name)

    def _stop_provider(self, name: str) -> None:
        running = self.running
        workers = [w for key, w in running.pool_workers.items()
                   if key[0] == name]
        running.pool_workers = {key: w for key, w
                                in running.pool_workers.items()
                                if key[0] != name}
        for worker in workers:
            # Serve what was accepted, take nothing new.
            worker.stop(drain=True)
        provider = running.providers.get(name)
        running.providers = {key: p for key, p in running.providers.items()
                             if key != name}
        if provider is not None:
            log.info("Retiring provider %s", name)
            entry = (provider, workers)
            with self._lock:
                self.retiring.append(entry)
            if self._retirements.spawn("Retire.%s" % name, self._retire,
                                       entry) is None:
                # The launcher is stopping: no draining, and join() no
                # longer sees these.
                with self._lock:
                    self.retiring.remove(entry)
                for worker in workers:
                    worker.stop()
                for worker in workers:
                    worker.join(RETIRE_JOIN_TIMEOUT)
                provider.stop()
                provider.join(RETIRE_JOIN_TIMEOUT)

    def _retire(self, entry) -> None:
        """Wait for the old pool workers to finish what they accepted
        and for the provider's runners to be idle, then stop it."""
        provider, workers = entry
        try:
            for worker in workers:
                # Draining may take a launch timeout; the launcher's stop
                # ends it.
                while worker.is_alive() and not self._stop.wait(
                        RETIRE_POLL):
                    pass
                worker.join(RETIRE_JOIN_TIMEOUT)
            while not provider.idle() and not self._stop.wait(RETIRE_POLL):
                pass
            provider.stop()
            provider.join(RETIRE_JOIN_TIMEOUT)
            log.info("Provider %s retired", provider.name)
        finally:
            with self._lock:
                self.retiring.remove(entry)
