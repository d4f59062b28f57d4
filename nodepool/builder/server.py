# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The builder daemon's core (see "What the builder does" in
doc/source/operation.rst).

:class:`NodePoolBuilder` loads the config (``zookeeper-servers`` and
``images-dir`` are required), reads or creates ``builder_id.txt``,
connects to ZooKeeper without caches, registers a ``builder`` component
and runs ``num_builders`` build workers, ``num_uploaders`` upload workers
and one cleanup worker (none when ``cleanup_interval`` <= 0).

Stopping: every worker is told to stop; build workers kill a running DIB
(its build is recorded FAILED) and the cleanup worker finishes its current
step.  Upload workers do not start new uploads but an upload in progress
is not interrupted: :meth:`NodePoolBuilder.join` waits for them only for
``upload_join_timeout`` seconds (their threads are daemons; a killed
upload leaves an ``uploading`` record that cleanup removes later).
"""

import logging
import socket
import threading
from typing import List, Optional

from nodepool import driver
from nodepool.builder import dib
from nodepool.builder.build_worker import BuildWorker
from nodepool.builder.cleanup import CleanupWorker
from nodepool.builder.common import AdapterPool
from nodepool.builder.upload_worker import UploadWorker
from nodepool.config.loader import load_config
from nodepool.stats import StatsReporter
from nodepool.zk.client import ZooKeeperClient
from nodepool.zk.components import BuilderComponent
from nodepool.zk.images import ImageStore

log = logging.getLogger("nodepool.builder.NodePoolBuilder")


class BuilderStartError(RuntimeError):
    """The builder cannot start with this config."""


class NodePoolBuilder:
    """The builder: :meth:`start`, let it run, :meth:`stop`, :meth:`join`.

    :param zk_client: an already connected client (tests); by default one
        is made from the config (TLS required) and closed on join.
    :param build_interval, upload_interval, cleanup_interval: seconds
        between worker passes (tests make them tiny).
    :param dib_poll: how often a running DIB is checked for timeout/stop.
    """

    def __init__(self, config_path: str, secure_path: Optional[str] = None,
                 zk_client: Optional[ZooKeeperClient] = None,
                 num_builders: int = 1, num_uploaders: int = 4,
                 build_interval: float = 10.0,
                 upload_interval: float = 10.0,
                 cleanup_interval: float = 60.0,
                 dib_poll: float = 1.0,
                 upload_join_timeout: float = 5.0,
                 stats: Optional[StatsReporter] = None,
                 hostname: Optional[str] = None):
        self.config_path = config_path
        self.secure_path = secure_path
        self.zk_client = zk_client
        self._own_client = zk_client is None
        self.num_builders = num_builders
        self.num_uploaders = num_uploaders
        self.build_interval = build_interval
        self.upload_interval = upload_interval
        self.cleanup_interval = cleanup_interval
        self.dib_poll = dib_poll
        self.upload_join_timeout = upload_join_timeout
        # Without a reporter no metrics are sent; the daemon passes
        # StatsReporter.from_environment().
        self.stats = stats if stats is not None else StatsReporter(None)
        self.hostname = hostname or socket.getfqdn()
        self.builder_id: Optional[str] = None
        self.images: Optional[ImageStore] = None
        self.adapters = AdapterPool(driver.get_driver)
        self.component: Optional[BuilderComponent] = None
        self.build_workers: List[BuildWorker] = []
        self.upload_workers: List[UploadWorker] = []
        self.cleanup_worker: Optional[CleanupWorker] = None
        self._stopped = threading.Event()
        self._hosts_lock = threading.Lock()

    @property
    def workers(self) -> list:
        workers = list(self.build_workers) + list(self.upload_workers)
        if self.cleanup_worker is not None:
            workers.append(self.cleanup_worker)
        return workers

    def start(self, timeout: float = 60.0) -> None:
        config = load_config(self.config_path, self.secure_path)
        if self.zk_client is None and not config.zookeeper_servers:
            raise BuilderStartError(
                "No ZooKeeper servers specified in config.")
        if not config.images_dir:
            raise BuilderStartError("No images-dir specified in config.")
        # Build logs hold the diskimages' env-vars (DIB runs with -x): keep
        # them, and the images, from other users (see dib.py).  The log
        # directory is made by the first build.
        dib.make_private_dir(config.images_dir)
        for path in (config.images_dir, config.build_log_dir):
            if dib.world_accessible(path):
                log.warning("%s is open to every user of this host; build "
                            "logs and images may hold secrets (chmod o-rwx "
                            "%s)", path, path)
        self.builder_id = dib.read_builder_id(config.images_dir)
        if self.zk_client is None:
            tls = config.zookeeper_tls
            if tls is None:
                raise BuilderStartError(
                    "A TLS ZooKeeper connection is required; please supply "
                    "the zookeeper-tls config values.")
            self.zk_client = ZooKeeperClient.from_config(config)
            self.zk_client.connect()
        self.images = ImageStore(self.zk_client)
        self.component = BuilderComponent(self.zk_client)
        self.component.register()
        log.info("Starting builder %s (id %s): %d build and %d upload "
                 "workers", self.hostname, self.builder_id,
                 self.num_builders, self.num_uploaders)
        self.build_workers = [BuildWorker(self, self.build_interval, i)
                              for i in range(self.num_builders)]
        self.upload_workers = [UploadWorker(self, self.upload_interval, i)
                               for i in range(self.num_uploaders)]
        if self.cleanup_interval and self.cleanup_interval > 0:
            self.cleanup_worker = CleanupWorker(self, self.cleanup_interval)
        try:
            for worker in self.workers:
                worker.start()
            for worker in self.workers:
                if not worker.running.wait(timeout):
                    raise BuilderStartError("%s did not start"
                                            % worker.name)
            self.component.update(state="running")
        except BaseException:
            self.stop()
            self.join(timeout)
            raise

    def set_zookeeper_hosts(self, hosts: str) -> None:
        """Use a changed ``zookeeper-servers`` list (own client only).

        The session is kept; kazoo moves to a listed server on its next
        reconnection.  Several workers notice the same change; setting the
        same hosts again is harmless.
        """
        with self._hosts_lock:
            if not self._own_client or self.zk_client is None:
                return
            try:
                self.zk_client.set_hosts(hosts)
            except ValueError as e:
                log.error("Cannot use the new zookeeper-servers: %s; "
                          "restart the builder to apply it", e)

    def stop(self) -> None:
        """Ask every worker to stop; :meth:`join` waits for them."""
        self._stopped.set()
        if self._own_client and self.zk_client is not None:
            # Threads waiting for ZooKeeper must not hold up the exit.
            self.zk_client.close_on_outage()
        for worker in self.workers:
            worker.stop()

    def join(self, timeout: float = 60.0) -> None:
        for worker in self.build_workers:
            worker.join(timeout)
        if self.cleanup_worker is not None:
            self.cleanup_worker.join(timeout)
        for worker in self.upload_workers:
            worker.join(self.upload_join_timeout)
            if worker.is_alive():
                log.warning("%s is still uploading; leaving it behind",
                            worker.name)
        self.adapters.close()
        if self.component is not None:
            try:
                self.component.unregister()
            except Exception:
                log.exception("Could not unregister the builder component")
        if self._own_client and self.zk_client is not None:
            self.zk_client.disconnect()
        log.info("Builder stopped")
