# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Per-provider runtime: the runners that drive every state machine of one
provider, its quota accounting and its leak cleanup."""

import logging
import random
import threading
import time
from typing import Optional

import cachetools

from nodepool import exceptions
from nodepool.driver.quota import QuotaInformation, pool_limits
from nodepool.driver.statemachine.deleter import NodeDeleter
from nodepool.driver.statemachine.launcher import NodeLauncher
from nodepool.service import ServiceThread, TaskThreads
from nodepool.zk.models import UploadState

PROVIDER_QUOTA_TTL = 300.0
FRESH_NODE_TTL = 60.0


class _NoScan:
    """A finished scan, for nodes whose host keys are not checked."""

    complete = True
    result: list = []
    exception = None

    def cancel(self):
        pass


_NO_SCAN = _NoScan()


class Runner(ServiceThread):
    """A named thread that steps a list of work items until each is done.

    Items have ``step()``, ``complete`` and ``abort(error)``; an error that
    escapes ``step()`` is handed to ``abort()``, which must leave the item
    in a terminal state its owner understands and set ``complete``.  The
    thread sleeps ``interval`` between passes, or until :meth:`add` (or
    :meth:`wake`) wakes it.
    """

    def __init__(self, name: str, interval: float, log):
        super().__init__(name, interval, log)
        self._items: list = []
        self._lock = threading.Lock()

    def add(self, item) -> None:
        with self._lock:
            self._items.append(item)
        self.wake()

    def items(self) -> list:
        with self._lock:
            return list(self._items)

    def _abort(self, item, error) -> None:
        try:
            item.abort(error)
        except Exception:
            self.log.exception("%s: could not abort %r", self.name, item)
        item.complete = True

    def run_once(self) -> float:
        start = time.monotonic()
        for item in self.items():
            if self.stopping:
                return 0
            try:
                item.step()
            except Exception as e:
                self.log.exception("%s: unhandled error stepping %r",
                                   self.name, item)
                self._abort(item, e)
        with self._lock:
            self._items = [i for i in self._items if not i.complete]
            busy = bool(self._items)
        if busy:
            return max(0.0, self.interval - (time.monotonic() - start))
        return max(self.interval, 1.0)


class StateMachineProvider:
    """Everything one provider config needs at run time.

    :param config: the provider's config object.
    :param adapter: the driver's :class:`Adapter` for it.
    :param services: the launcher's shared services (``nodes`` NodeStore,
        ``node_cache``, ``image_cache``, ``scanner``, ``stats``).
    """

    def __init__(self, config, adapter, services, interval: float = 1.0):
        self.config = config
        self.name = config.name
        self.adapter = adapter
        self.services = services
        self.nodes = services.nodes
        self.log = logging.getLogger("nodepool.driver.%s" % self.name)
        self.create_runner = Runner("CreateRunner.%s" % self.name, interval,
                                    self.log)
        self.delete_runner = Runner("DeleteRunner.%s" % self.name, interval,
                                    self.log)
        adapter.wake_runners = self.wake_runners
        # Console-log fetches (API calls the runners must not wait for).
        self.tasks = TaskThreads(self.log)
        self._quota_cache = cachetools.TTLCache(1, PROVIDER_QUOTA_TTL)
        self._quota_lock = threading.Lock()
        self._label_quota: dict = {}
        self.error_labels: set = set()
        self._possibly_leaked: set = set()
        self._launch_listeners: list = []
        self._claims_lock = threading.RLock()
        self._reservations: list = []
        self._fresh_nodes: dict = {}
        # Requests being handled by all pools of this provider together
        # (max-concurrency); pool workers run in threads of their own.
        self._requests_lock = threading.Lock()
        self._requests_handled = 0

    #: Whether the provider makes nodes on demand.  Providers of existing
    #: hosts (static) only hand out the ready nodes they registered, and
    #: requests wait for a free one instead of pausing the pool.
    launches_nodes = True

    def label_available(self, label_name: str) -> bool:
        """Whether a request wanting the label should be taken now.

        Pool workers leave requests alone (without declining) while this
        is False; the default is always True.
        """
        return True

    # Settings with driver-neutral defaults ------------------------------

    @property
    def launch_timeout(self) -> float:
        return getattr(self.config, "launch_timeout", 3600)

    @property
    def boot_timeout(self) -> float:
        return getattr(self.config, "boot_timeout", 60)

    @property
    def launch_retries(self) -> int:
        return max(1, getattr(self.config, "launch_retries", 3))

    # Life cycle ---------------------------------------------------------

    def start(self) -> None:
        self.create_runner.start()
        self.delete_runner.start()

    def stop(self) -> None:
        """Ask the runners and tasks to stop; never blocks."""
        self.create_runner.stop()
        self.delete_runner.stop()
        self.tasks.stop()

    def join(self, timeout=None) -> None:
        """Wait for the runners and tasks (``timeout`` seconds each), then
        stop the adapter and its threads."""
        self.create_runner.join(timeout)
        self.delete_runner.join(timeout)
        self.tasks.join(timeout)
        self.adapter.stop()

    def idle(self) -> bool:
        return not (self.create_runner.items() or self.delete_runner.items())

    def wake_runners(self) -> None:
        self.create_runner.wake()
        self.delete_runner.wake()

    # Request handling ---------------------------------------------------

    @property
    def requests_handled(self) -> int:
        """How many requests the provider's pools are handling now."""
        with self._requests_lock:
            return self._requests_handled

    def begin_request(self) -> bool:
        """Count one more request handled by one of the pools, unless
        ``max-concurrency`` (when above 0) is reached; False then.

        Thread-safe.  Each True must be matched by one :meth:`end_request`
        whatever way the handling ends.
        """
        limit = self.config.max_concurrency
        with self._requests_lock:
            if limit > 0 and self._requests_handled >= limit:
                return False
            self._requests_handled += 1
            return True

    def end_request(self) -> None:
        """A request counted by :meth:`begin_request` is no longer
        handled."""
        with self._requests_lock:
            self._requests_handled = max(0, self._requests_handled - 1)

    # Launch and delete --------------------------------------------------

    def launch(self, node, label, pool, request, log,
               guard=None) -> NodeLauncher:
        """Start launching a locked ``building`` node; returns its tracker.

        ``guard`` is the :class:`~nodepool.zk.client.SessionGuard` of the
        session the node was locked in (default: the current one).
        """
        launcher = NodeLauncher(self, node, label, pool, request, log,
                                guard=guard)
        self.create_runner.add(launcher)
        return launcher

    def launching(self, node_id: str) -> bool:
        """Whether a launch of this process still works on the node (the
        deleted-node worker leaves such a node alone even when its lock
        went with a lost session: the launch takes it back)."""
        return any(item.node.id == node_id and not item.complete
                   for item in self.create_runner.items())

    def start_node_cleanup(self, node, log=None) -> NodeDeleter:
        """Start deleting a locked node; returns its tracker."""
        deleter = NodeDeleter(self, node, log or self.log)
        self.delete_runner.add(deleter)
        return deleter

    def node_deleted(self, node) -> None:
        """Called by a deleter once the node record is gone."""

    def add_launch_listener(self, listener) -> None:
        """Call ``listener(node_launcher)`` when a launch completes (from
        the create runner: it must not block)."""
        self._launch_listeners.append(listener)

    def notify_launch_complete(self, launcher: NodeLauncher) -> None:
        for listener in list(self._launch_listeners):
            try:
                listener(launcher)
            except Exception:
                self.log.exception("Launch listener failed")

    def start_scan(self, node, label, pool):
        """Begin the host-key scan of a freshly created instance."""
        checking = getattr(label, "host_key_checking", None)
        if checking is None:
            checking = getattr(pool, "host_key_checking", True)
        if not checking:
            return _NO_SCAN
        return self.services.scanner.submit(
            node.interface_ip, node.connection_port, self.boot_timeout,
            gather_keys=checking,
            connection_type=node.connection_type or "ssh")

    def log_console(self, label, external_id, log) -> None:
        """Log the instance's console output (``console-log: true`` labels,
        after a failed host-key scan), from a short-lived thread of the
        provider's :attr:`tasks`: fetching it is an API call and the
        runners must not wait for it."""
        def fetch():
            try:
                output = self.adapter.get_console_log(label, external_id)
            except NotImplementedError:
                log.info("The %s driver cannot fetch console logs",
                         getattr(self.config, "driver", "?"))
                return
            except Exception as e:
                log.warning("Could not fetch the console log of %s: %s",
                            external_id, e)
                return
            log.info("Console log of %s:\n%s", external_id,
                     (output or "").rstrip() or "(empty)")
        self.tasks.spawn("ConsoleLog.%s" % external_id, fetch)

    def choose_az(self, pool) -> Optional[str]:
        """The availability zone for a new request's nodes: one of the
        pool's ``availability-zones`` if it lists any, else of the
        adapter's zones; None when the cloud has none.  Nodes of one
        request share it (the handler asks once)."""
        zones = [z for z in (getattr(pool, "availability_zones", None)
                             or ()) if z]
        if not zones:
            try:
                zones = [z for z in self.adapter.get_azs() if z]
            except Exception:
                self.log.exception("Listing availability zones failed")
                zones = []
        return random.choice(zones) if zones else None

    def report_launch(self, launcher: NodeLauncher, result_key: str) -> None:
        stats = self.services.stats
        if stats is None:
            return
        try:
            stats.record_node_launch(launcher.node, result_key,
                                     launcher.duration)
        except Exception:
            self.log.exception("Launch stats failed")

    # Images -------------------------------------------------------------

    def label_image(self, label):
        """The provider image config (cloud image or diskimage) of a label."""
        for attr, table in (("diskimage", "diskimages"),
                            ("cloud_image", "cloud_images")):
            name = getattr(label, attr, None)
            if name:
                return getattr(self.config, table, {}).get(name)
        return None

    def current_upload(self, image_name: str):
        """Newest READY upload of a diskimage to this provider, or None."""
        uploads = [u for u in self.services.image_cache.uploads(
            image_name, provider=self.name) if u.state == UploadState.READY]
        if not uploads:
            return None
        return max(uploads, key=lambda u: u.state_time or 0)

    def images_available(self, label) -> bool:
        diskimage = getattr(label, "diskimage", None)
        if diskimage:
            return self.current_upload(diskimage) is not None
        return self.adapter.label_ready(label)

    # Quota --------------------------------------------------------------

    def quota_for_label(self, label_name: str, pool_name: str
                        ) -> QuotaInformation:
        """Resources one node of the label needs (cached per label)."""
        key = (pool_name, label_name)
        quota = self._label_quota.get(key)
        if quota is None:
            label = self.config.pools[pool_name].labels[label_name]
            try:
                quota = self.adapter.get_quota_for_label(label)
            except exceptions.RuntimeConfigurationException:
                self.error_labels.add(label_name)
                raise
            self._label_quota[key] = quota
        return quota.copy()

    def invalidate_quota_cache(self) -> None:
        with self._quota_lock:
            self._quota_cache.clear()

    def provider_quota(self) -> QuotaInformation:
        """Provider limits minus what others use, cached for 5 minutes."""
        with self._quota_lock:
            cached = self._quota_cache.get("quota")
            if cached is not None:
                return cached.copy()
        try:
            quota = self.adapter.get_quota_limits()
            quota.subtract(self._unmanaged_quota_used())
        except Exception:
            self.log.exception("Could not compute provider quota")
            return QuotaInformation(default=float("inf"))
        with self._quota_lock:
            self._quota_cache["quota"] = quota
        return quota.copy()

    def _unmanaged_quota_used(self) -> QuotaInformation:
        used = QuotaInformation()
        known = set(self.services.node_cache.ids())
        for instance in self.adapter.list_instances():
            meta = instance.metadata or {}
            if (meta.get("nodepool_provider_name") == self.name
                    and meta.get("nodepool_node_id") in known):
                continue
            used.add(instance.get_quota_information())
        return used

    def reserve_quota(self, label_name: str, pool) -> Optional[object]:
        """Claim room for one node of the label, or None if there is none.

        The node cache lags behind our own writes, and several threads
        start launches at once; a claim counts as used until
        :meth:`claim_node` replaces it with the stored node.
        """
        needed = self.quota_for_label(label_name, pool.name)
        with self._claims_lock:
            if not self.has_remaining_quota(label_name, pool):
                return None
            token = (pool.name, needed)
            self._reservations.append(token)
            return token

    def claim_node(self, token, node) -> None:
        """Replace a reservation by the node created for it."""
        with self._claims_lock:
            if token in self._reservations:
                self._reservations.remove(token)
            if node is not None:
                self._fresh_nodes[node.id] = (node, time.monotonic())

    def forget_node(self, node_id: str) -> None:
        """The node's record is gone: stop counting it as just created.

        A node deleted before the node cache ever listed it (a launch
        refused at once for quota, deleted within milliseconds) would
        otherwise be counted forever and wedge a small pool.
        """
        with self._claims_lock:
            self._fresh_nodes.pop(node_id, None)

    def _nodes_used(self, pool_name: Optional[str] = None
                    ) -> QuotaInformation:
        used = QuotaInformation()
        cached = self.services.node_cache.values()
        cached_ids = {node.id for node in cached}
        with self._claims_lock:
            # Once the cache has a node it is the source of truth; one it
            # never listed is gone after FRESH_NODE_TTL at the latest
            # (deleted elsewhere: the cache lags by far less).
            now = time.monotonic()
            for node_id, (_, added) in list(self._fresh_nodes.items()):
                if node_id in cached_ids or now - added > FRESH_NODE_TTL:
                    del self._fresh_nodes[node_id]
            extra = [node for node, _ in self._fresh_nodes.values()]
            for reserved_pool, quota in self._reservations:
                if pool_name is None or reserved_pool == pool_name:
                    used.add(quota)
        for node in cached + extra:
            if node.provider != self.name:
                continue
            if pool_name is not None and node.pool != pool_name:
                continue
            if node.resources:
                used.add(QuotaInformation.from_resources(node.resources))
                continue
            pool = self.config.pools.get(node.pool)
            if pool is None:
                continue
            for label in node.type:
                if label in pool.labels:
                    used.add(self.quota_for_label(label, node.pool))
        return used

    def _needed(self, labels, pool) -> QuotaInformation:
        needed = QuotaInformation()
        for label in labels:
            needed.add(self.quota_for_label(label, pool.name))
        return needed

    def has_provider_quota(self, labels, pool) -> bool:
        """Could the pool ever hold these labels at once (ignoring usage)?"""
        needed = self._needed(labels, pool)
        if not getattr(pool, "ignore_provider_quota", False):
            remaining = self.provider_quota()
            remaining.subtract(needed)
            if not remaining.non_negative():
                return False
        limits = pool_limits(pool)
        limits.subtract(needed)
        return limits.non_negative()

    def has_remaining_quota(self, label_name: str, pool) -> bool:
        """Is there room right now for one more node of the label?"""
        needed = self.quota_for_label(label_name, pool.name)
        if not getattr(pool, "ignore_provider_quota", False):
            remaining = self.provider_quota()
            remaining.subtract(self._nodes_used())
            remaining.subtract(needed)
            if not remaining.non_negative():
                return False
        limits = pool_limits(pool)
        limits.subtract(self._nodes_used(pool.name))
        limits.subtract(needed)
        return limits.non_negative()

    # Leak cleanup -------------------------------------------------------

    def cleanup_leaked_resources(self, known_node_ids: set,
                                 known_uploads: set) -> int:
        """Delete resources tagged for this provider whose node or upload is
        gone; each only once two consecutive passes found it leaked.

        ``known_uploads`` holds ``"<build_id>-<upload_id>"`` strings.
        Returns the number of resources deleted.
        """
        leaked = set()
        deleted = 0
        for resource in self.adapter.list_resources():
            meta = resource.metadata or {}
            if meta.get("nodepool_provider_name") != self.name:
                continue
            node_id = meta.get("nodepool_node_id")
            build_id = meta.get("nodepool_build_id")
            upload_id = meta.get("nodepool_upload_id")
            if node_id is not None:
                if node_id in known_node_ids:
                    continue
            elif build_id is not None and upload_id is not None:
                if "%s-%s" % (build_id, upload_id) in known_uploads:
                    continue
            else:
                continue
            key = (resource.type, resource.id, node_id, build_id, upload_id)
            leaked.add(key)
            if key not in self._possibly_leaked:
                continue
            try:
                self.log.info("Deleting leaked %s %s", resource.type,
                              resource.id)
                self.adapter.delete_resource(resource)
                deleted += 1
                if self.services.stats is not None:
                    self.services.stats.record_leaked(
                        self.name, resource.plural_metric_name)
            except Exception:
                self.log.exception("Deleting leaked %r failed", resource)
        self._possibly_leaked = leaked
        return deleted
