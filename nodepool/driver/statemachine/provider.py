# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Per-provider runtime: the runners that drive every state machine of one
provider.  Its quota bookkeeping (:mod:`.quota`) and leak cleanup
(:mod:`.leaks`) are classes of their own that the provider owns."""

import itertools
import logging
import random
import threading
import time
from typing import Optional

from nodepool.driver.capacity import CapacityMemory, CapacityPlan, \
    ordered_zones
from nodepool.driver.statemachine.deleter import NodeDeleter
from nodepool.driver.statemachine.launcher import NodeLauncher
from nodepool.driver.statemachine.leaks import LeakSweeper
from nodepool.driver.statemachine.quota import ProviderQuota
from nodepool.service import ServiceThread, TaskThreads
from nodepool.zk.models import UploadState


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
        adapter.set_wake_callback(self.wake_runners)
        # Console-log fetches (API calls the runners must not wait for).
        self.tasks = TaskThreads(self.log)
        self.quota = self.quota_class(
            config, adapter, getattr(services, "node_cache", None),
            log=self.log)
        self.leak_sweeper = LeakSweeper(self.name, adapter, services,
                                        log=self.log)
        self._launch_listeners: list = []
        # Capacity fallback: made on first use, since only cloud configs
        # (with ``capacity-cooldown``) have labels that opt in.
        self._capacity: Optional[CapacityMemory] = None
        self._capacity_lock = threading.Lock()
        self._zone_turn = itertools.count()

    #: Whether the provider makes nodes on demand.  Providers of existing
    #: hosts (static) only hand out the ready nodes they registered, and
    #: requests wait for a free one instead of pausing the pool.
    launches_nodes = True

    #: Quota bookkeeping (``provider.quota``): drivers whose nodes are not
    #: launched replace it.
    quota_class = ProviderQuota

    def label_available(self, label_name: str) -> bool:
        """Whether a request wanting the label should be taken now.

        Pool workers leave requests alone (without declining) while this
        is False; the default is always True.
        """
        return True

    # Launch settings ----------------------------------------------------
    # Only a provider that launches nodes reads these; its config has the
    # keys (``CloudProviderConfig``, defaults in the driver's schema).

    @property
    def launch_timeout(self) -> float:
        return self.config.launch_timeout

    @property
    def boot_timeout(self) -> float:
        return self.config.boot_timeout

    @property
    def launch_retries(self) -> int:
        return max(1, self.config.launch_retries)

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

    def api_rates(self) -> list:
        """The adapter's rate limiters, each a dict of ``limiter`` (its
        short name) and the limiter's ``status()``."""
        return [dict(limiter=name, **limiter.status()) for name, limiter
                in sorted(self.adapter.rate_limiters().items())]

    def wake_runners(self) -> None:
        self.create_runner.wake()
        self.delete_runner.wake()

    # Launch and delete --------------------------------------------------

    def launch(self, node, label, pool, request, log,
               guard=None) -> NodeLauncher:
        """Start launching a locked ``building`` node; returns its tracker.

        ``guard`` is the :class:`~nodepool.zk.client.SessionGuard` of the
        session the node was locked in (default: the current one).  Called
        by the request handler, never by a runner: the capacity plan may
        look the zones up.
        """
        single = len(getattr(request, "node_types", None) or ()) <= 1
        plan = self.capacity_plan(label, pool, node.az, single)
        launcher = NodeLauncher(self, node, label, pool, request, log,
                                guard=guard, plan=plan)
        self.create_runner.add(launcher)
        return launcher

    # Capacity fallback (doc/source/capacity-fallback.rst) ---------------

    @property
    def capacity(self) -> CapacityMemory:
        """The provider's :class:`CapacityMemory` (made on first use)."""
        with self._capacity_lock:
            if self._capacity is None:
                self._capacity = CapacityMemory(
                    self.config.capacity_cooldown)
            return self._capacity

    def capacity_entries(self) -> list:
        """What :meth:`CapacityMemory.entries` says; empty when no launch
        needed the memory yet."""
        with self._capacity_lock:
            memory = self._capacity
        return memory.entries() if memory is not None else []

    def _capacity_zones(self, pool) -> list:
        try:
            return list(self.adapter.capacity_zones(pool))
        except Exception:
            self.log.exception("Listing the zones of pool %s failed",
                               pool.name)
            return []

    def capacity_plan(self, label, pool, az: Optional[str],
                      single: bool) -> Optional[CapacityPlan]:
        """The options of a launch of ``label``; None when the label has
        no fallback key.  ``az`` is the zone the request handler chose;
        a launch for a request of one node (``single``) may move to any
        zone of the pool, the nodes of a bigger request stay in the
        request's zone."""
        types = label.capacity_types
        if types is None:
            return None
        zones = self._capacity_zones(pool)
        if single:
            order = ordered_zones(zones, az, next(self._zone_turn))
        elif az in zones:
            order = [az]
        else:
            order = zones if len(zones) == 1 else [None]
        return CapacityPlan(types, order, self.capacity)

    def capacity_left(self, label, pool) -> bool:
        """Whether a launch of ``label`` has an option that is not
        cooling down (always, for labels without a fallback key)."""
        types = label.capacity_types
        if types is None or not self.capacity_entries():
            return True
        zones = self._capacity_zones(pool) or [None]
        return self.capacity.any_left(
            [(t, z) for t in types for z in zones])

    def launching(self, node_id: str) -> bool:
        """Whether a launch of this process still works on the node (the
        deleted-node worker leaves such a node alone even when its lock
        went with a lost session: the launch takes it back)."""
        return any(item.node.id == node_id and not item.complete
                   for item in self.create_runner.items())

    def start_node_cleanup(self, node, log=None,
                           report_deleted: bool = True) -> NodeDeleter:
        """Start deleting a locked node; returns its tracker.

        With ``report_deleted`` false, :meth:`node_deleted` is not called
        once the record is gone (a one-off deletion outside a launcher).
        """
        deleter = NodeDeleter(self, node, log or self.log,
                              report_deleted=report_deleted)
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
        checking = label.checks_host_keys
        if checking is None:
            checking = pool.checks_host_keys
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
                         self.config.driver)
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
        zones = list(pool.zone_choices)
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
        """The provider image config (cloud image or diskimage) of a label,
        None for a label that names none."""
        return self.config.label_image(label)

    def current_upload(self, image_name: str):
        """Newest READY upload of a diskimage to this provider, or None."""
        uploads = [u for u in self.services.image_cache.uploads(
            image_name, provider=self.name) if u.state == UploadState.READY]
        if not uploads:
            return None
        return max(uploads, key=lambda u: u.state_time or 0)

    def images_available(self, label) -> bool:
        diskimage = label.diskimage_name
        if diskimage:
            return self.current_upload(diskimage) is not None
        return self.adapter.label_ready(label)

    # Quota and leaks ----------------------------------------------------

    def cleanup_leaked_resources(self, known_node_ids: set,
                                 known_uploads: set) -> int:
        """Delete resources tagged for this provider whose node or upload is
        gone (see :meth:`LeakSweeper.sweep`); drivers with leaks the
        metadata cannot show add their own cleanup here.

        Returns the number of resources deleted.
        """
        return self.leak_sweeper.sweep(known_node_ids, known_uploads)
