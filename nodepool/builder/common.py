# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""What the builder's workers share: config questions and the worker loop.

Config questions (pure functions of a :class:`nodepool.config.models.Config`):

* which providers take part in image management (:func:`image_providers`);
* the image type a provider uploads (:func:`provider_image_type`);
* the formats a diskimage must be built in (:func:`image_types`).
"""

import logging
import os
import threading
from typing import Dict, List

from nodepool.config.loader import ConfigWatcher
from nodepool.driver.cloud import CloudProviderConfig
from nodepool.service import ServiceThread

ZK_DOWN_SLEEP = 30.0
ERROR_SLEEP = 10.0


def image_providers(config) -> List:
    """Providers that manage images, in file order.

    A provider manages images when its driver knows provider
    ``diskimages`` (openstack, aws, azure, the test driver; not static),
    even with an empty list: ``diskimages: []`` is how an operator asks
    the builder to remove a provider's uploads.
    """
    return [p for p in config.providers.values()
            if isinstance(p, CloudProviderConfig)]


def provider_image_type(provider: CloudProviderConfig) -> str:
    """The file format a provider uploads (extension of the file)."""
    return provider.image_type


def image_types(config, image: str) -> List[str]:
    """Formats to build ``image`` in: its ``formats`` plus the image type
    of every provider listing it; sorted."""
    diskimage = config.diskimages.get(image)
    types = set(diskimage.formats or ()) if diskimage is not None else set()
    for provider in image_providers(config):
        if image in provider.diskimages:
            types.add(provider_image_type(provider))
    return sorted(types)


class BuilderWorker(ServiceThread):
    """A thread running :meth:`run_once` every ``interval`` seconds.

    It owns a config watcher (each worker reloads the files on its own)
    and sleeps while ZooKeeper is unreachable.  Subclasses implement
    :meth:`run_once` and may override :meth:`on_config`.  The thread is
    named after the class's :attr:`name` and the worker's index.
    """

    name = "BuilderWorker"

    def __init__(self, builder, interval: float, index: int = 0):
        super().__init__("%s.%d" % (self.name, index), interval,
                         logging.getLogger("nodepool.builder.%s.%d"
                                           % (self.name, index)))
        self.builder = builder
        self.watcher = ConfigWatcher(builder.config_path,
                                     builder.secure_path, logger=self.log)
        self.config = None
        #: Set once the thread runs.
        self.running = threading.Event()
        self.passes = 0
        self._stamp = None

    @property
    def stop_event(self) -> threading.Event:
        """Set once the worker is asked to stop (for waits that must end
        then, such as a running DIB)."""
        return self._stop_event

    @property
    def images(self):
        return self.builder.images

    @property
    def zk_client(self):
        return self.builder.zk_client

    def reload(self) -> bool:
        """Reload the config if its files changed; True if it changed."""
        self._stamp = file_stamp(self.builder.config_path,
                                 self.builder.secure_path)
        if self.config is None:
            self.config = self.watcher.load()
            self.on_config(None, self.config)
            return True
        config, changed = self.watcher.reload()
        if changed:
            old, self.config = self.config, config
            if old.zookeeper_hosts != config.zookeeper_hosts:
                self.builder.set_zookeeper_hosts(config.zookeeper_hosts)
            self.on_config(old, config)
        return changed

    def config_changed(self) -> bool:
        """Whether the config files changed since the last (re)load."""
        return file_stamp(self.builder.config_path,
                          self.builder.secure_path) != self._stamp

    def on_config(self, old, new) -> None:
        """Called after each (re)load with the old (None at first) config."""

    def loop(self) -> None:
        self.running.set()
        while not self.stopping:
            delay = self.interval
            try:
                self.reload()
                if not self.zk_client.connected:
                    self.log.debug("ZooKeeper unavailable; waiting")
                    delay = min(ZK_DOWN_SLEEP, max(self.interval, 1.0))
                else:
                    self.run_once()
                    self.passes += 1
            except Exception:
                self.log.exception("Error in %s", self.name)
                delay = max(self.interval, min(ERROR_SLEEP,
                                               self.interval * 10))
            if self.wait(delay):
                break

    def run_once(self) -> None:
        raise NotImplementedError


class AdapterPool:
    """Shared provider adapters, one per provider config.

    A provider whose config changed gets a new adapter; the old one is
    stopped when the pool is closed (an upload may still be using it).
    Thread-safe.
    """

    def __init__(self, get_driver):
        self._get_driver = get_driver
        self._lock = threading.Lock()
        self._adapters: Dict[str, tuple] = {}
        self._retired: list = []
        self.log = logging.getLogger("nodepool.builder.AdapterPool")

    def get(self, provider):
        with self._lock:
            entry = self._adapters.get(provider.name)
            if entry is not None and entry[0] == provider:
                return entry[1]
            if entry is not None:
                self._retired.append(entry[1])
            driver = self._get_driver(provider.driver)
            adapter = driver.get_adapter(provider, warm=False)
            self._adapters[provider.name] = (provider, adapter)
            return adapter

    def close(self) -> None:
        with self._lock:
            adapters = [a for _, a in self._adapters.values()]
            adapters += self._retired
            self._adapters.clear()
            self._retired = []
        for adapter in adapters:
            try:
                adapter.stop()
            except Exception:
                self.log.exception("Error stopping adapter %r", adapter)


def file_stamp(*paths) -> tuple:
    """Modification times of ``paths`` (None for unset, -1 if missing)."""
    stamp = []
    for path in paths:
        if not path:
            stamp.append(None)
            continue
        try:
            stamp.append(os.stat(path).st_mtime_ns)
        except OSError:
            stamp.append(-1)
    return tuple(stamp)
