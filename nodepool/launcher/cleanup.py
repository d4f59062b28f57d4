# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The launcher's housekeeping threads.

* :class:`DeletedNodeWorker` (every few seconds) deletes nodes nobody
  holds any more: used, failed, aborted, orphaned building/in-use nodes;
  and frees ready nodes allocated to requests that are gone.
* :class:`CleanupWorker` (every minute) runs independent tasks, each
  isolated from the others' failures: orphan request locks (see
  :mod:`~nodepool.launcher.request_locks`), lost
  requests, leaked cloud resources, max-ready-age, max-hold-age and empty
  node records.
"""

import threading
import time
from typing import Iterable, Optional

from kazoo.exceptions import KazooException

from nodepool import exceptions
from nodepool.launcher.request_locks import OrphanRequestLocks
from nodepool.service import ServiceThread
from nodepool.zk.client import CONNECTION_ERRORS
from nodepool.zk.held_locks import HeldRequestLocks
from nodepool.zk.models import NodeState, RequestState

DELETABLE_STATES = frozenset((
    NodeState.USED, NodeState.IN_USE, NodeState.BUILDING, NodeState.FAILED,
    NodeState.DELETING, NodeState.DELETED, NodeState.ABORTED))
# A node is stored in "init" unlocked and locked right after (the lock
# wait is bounded by 30 s); one still unlocked long after was left behind
# by a handler interrupted by a ZooKeeper fault.
INIT_MAX_AGE = 60.0
# Seconds a deletable node of a provider that several launchers serve is
# left to the launcher that launched it (while that one is registered),
# so that the others do not all race for its lock.
LAUNCHER_DELETE_GRACE = 30.0


class _PeriodicWorker(ServiceThread):
    """A named thread calling :meth:`run_pass` every ``interval`` seconds
    while ZooKeeper is connected.

    :param view: the launcher's :class:`~nodepool.launcher.view.LauncherView`
        (current config and providers).
    :param services: the launcher's ZooKeeper stores and caches.
    """

    name = "PeriodicWorker"

    def __init__(self, view, services, interval: float):
        super().__init__(self.name, interval)
        self.view = view
        self.services = services

    def run_once(self) -> None:
        if self.services.zk_client.connected:
            self.run_pass()

    def on_error(self, error: Exception):
        if isinstance(error, CONNECTION_ERRORS):
            self.log.warning("%s pass interrupted by ZooKeeper: %r",
                             self.name, error)
        else:
            self.log.exception("Error in %s pass", self.name)
        return None

    def run_pass(self) -> None:
        raise NotImplementedError


class DeletedNodeWorker(_PeriodicWorker):
    """Starts the deletion of every node that is done with.

    Every ``interval`` seconds (and on a plain :meth:`wake`) a pass looks
    at every cached node.  In between, :meth:`node_changed` asks for a
    pass over just the nodes whose record or lock changed: those are the
    ones that may have become deletable, and looking at all nodes on each
    of them made busy periods quadratic in the number of nodes.
    """

    name = "DeletedNodeWorker"

    def __init__(self, view, services, interval: float,
                 clock=time.monotonic):
        super().__init__(view, services, interval)
        self._clock = clock
        self._changed_lock = threading.Lock()
        self._changed: set = set()
        self._full_pass_due = True
        self._next_full_pass = 0.0
        #: Passes over every node so far (the others look at changed
        #: nodes only).
        self.full_passes = 0

    def wake(self) -> None:
        """Run a pass over every node as soon as possible."""
        with self._changed_lock:
            self._full_pass_due = True
        super().wake()

    def node_changed(self, node) -> None:
        """The record or the lock of ``node`` (a cached node) changed:
        look at it as soon as possible.

        Not while somebody holds or waits for its lock: a pass would skip
        it, and the last contender's going is a change of its own.
        """
        if node.lock_contenders:
            return
        with self._changed_lock:
            self._changed.add(node.id)
        super().wake()

    def run_once(self) -> Optional[float]:
        if not self.services.zk_client.connected:
            return None
        now = self._clock()
        with self._changed_lock:
            changed, self._changed = self._changed, set()
            full = self._full_pass_due or now >= self._next_full_pass
            self._full_pass_due = False
        if full:
            self._next_full_pass = now + self.interval
            self.full_passes += 1
            self.run_pass()
        elif changed:
            self.run_pass(changed)
        return max(0.0, self._next_full_pass - self._clock())

    def run_pass(self, node_ids: Optional[Iterable[str]] = None) -> None:
        """Look at the nodes ``node_ids`` (default: every cached node)."""
        cache = self.services.node_cache
        if node_ids is None:
            nodes = cache.values()
        else:
            nodes = [n for n in map(cache.get, node_ids) if n is not None]
        providers = self.view.providers
        # The ids each provider is deleting, listed once per pass (not
        # once per node: that made a pass quadratic in busy periods).
        deleting: dict = {}
        launchers = _LaunchersOf(self.services.registry)
        for node in nodes:
            provider = providers.get(node.provider)
            if provider is None:
                continue  # another launcher's provider
            if self._left_to_its_launcher(node, launchers):
                continue
            if node.state == NodeState.READY and node.allocated_to:
                self._check_allocation(node)
                continue
            if node.state not in DELETABLE_STATES and not self._stale_init(
                    node):
                continue
            if node.lock_contenders or node.is_locked:
                continue
            if node.provider not in deleting:
                deleting[node.provider] = {
                    d.node.id for d in provider.delete_runner.items()}
            if node.id in deleting[node.provider] or \
                    provider.launching(node.id):
                continue
            try:
                self.services.nodes.lock_node(node, blocking=False)
            except exceptions.LockError:
                continue
            if node.state not in DELETABLE_STATES and not self._stale_init(
                    node):
                self.services.nodes.unlock_node(node)
                continue
            if node.state == NodeState.DELETED:
                self._remove_tombstone(node)
                continue
            self.log.info("Deleting %s node %s", node.state, node.id)
            provider.start_node_cleanup(node)

    def _remove_tombstone(self, node) -> None:
        """A ``deleted`` record is written after the node's instance is
        gone, right before the record is removed: remove it (its deleter,
        in another launcher perhaps, died in between, or is removing it
        this moment) without deleting the instance again."""
        nodes = self.services.nodes
        try:
            self.log.info("Removing the record of deleted node %s", node.id)
            nodes.delete_raw_node(node.id)
        except KazooException as e:
            self.log.warning("Could not remove deleted node %s: %r",
                             node.id, e)
        finally:
            nodes.unlock_node(node)

    def _left_to_its_launcher(self, node, launchers) -> bool:
        """Whether another launcher, the one that launched ``node``, is
        to delete it: a provider may be served by several launchers, and
        each would otherwise try to lock each node the moment it is done
        with (one wins, the others pay three ZooKeeper requests each).
        Only while that launcher's pool is registered for the node's
        provider, and for :data:`LAUNCHER_DELETE_GRACE` seconds since the
        node's last state change; then anybody deletes it."""
        owner = node.launcher
        if not owner or owner == self.view.pool_launcher_id(node.provider,
                                                            node.pool):
            return False
        if node.state_time is None or \
                time.time() - node.state_time > LAUNCHER_DELETE_GRACE:
            return False
        return owner in launchers.serving(node.provider)

    @staticmethod
    def _stale_init(node) -> bool:
        return (node.state == NodeState.INIT and node.state_time is not None
                and time.time() - node.state_time > INIT_MAX_AGE)

    def _check_allocation(self, node) -> None:
        if self.services.request_cache.get(node.allocated_to) is not None:
            return
        if self.services.requests.get_request(node.allocated_to,
                                              cached=False) is not None:
            return
        try:
            self.services.nodes.lock_node(node, blocking=False)
        except exceptions.LockError:
            return
        try:
            if (node.state == NodeState.READY and node.allocated_to
                    and self.services.requests.get_request(
                        node.allocated_to, cached=False) is None):
                self.log.info("Freeing node %s allocated to vanished "
                              "request %s", node.id, node.allocated_to)
                node.allocated_to = None
                self.services.nodes.store_node(node)
        finally:
            self.services.nodes.unlock_node(node)


class _LaunchersOf:
    """The registered pools' launcher ids per provider, read from the
    registry once per pass and only if asked."""

    def __init__(self, registry):
        self._registry = registry
        self._by_provider: Optional[dict] = None

    def serving(self, provider_name: str) -> set:
        if self._by_provider is None:
            self._by_provider = {}
            pools = self._registry.pools() if self._registry else ()
            for info in pools:
                self._by_provider.setdefault(info.provider_name,
                                             set()).add(info.id)
        return self._by_provider.get(provider_name, set())


class CleanupWorker(_PeriodicWorker):
    """Runs the slow housekeeping tasks, each isolated."""

    name = "CleanupWorker"

    def __init__(self, view, services, interval: float):
        super().__init__(view, services, interval)
        self.request_locks = OrphanRequestLocks(services.requests,
                                                services.request_cache)
        # Who holds the locks of pending requests, read once per change.
        self.held_locks = HeldRequestLocks(services.zk_client)

    def run_pass(self) -> None:
        for task in (self.cleanup_request_locks, self.cleanup_lost_requests,
                     self.cleanup_leaked_resources, self.cleanup_max_ready_age,
                     self.cleanup_max_hold_age, self.cleanup_empty_nodes):
            if self.stopping:
                return
            try:
                task()
            except CONNECTION_ERRORS as e:
                self.log.warning("Cleanup task %s interrupted by ZooKeeper: "
                                 "%r", task.__name__, e)
            except Exception:
                self.log.exception("Cleanup task %s failed", task.__name__)

    def cleanup_request_locks(self) -> None:
        self.request_locks.run()

    def cleanup_lost_requests(self) -> None:
        """Put pending requests nobody works on back to requested."""
        requests = self.services.requests
        # A handler of ours whose lock went with a lost session takes its
        # request back itself (keeping the launches it began).
        ours = self.view.handled_request_ids()
        pending = [r for r in self.services.request_cache.values()
                   if r.state == RequestState.PENDING]
        self.held_locks.retain(r.id for r in pending)
        for request in pending:
            if request.is_locked or request.id in ours:
                continue
            if self.held_locks.is_held(request.id):
                continue
            try:
                requests.lock_request(request, blocking=False)
            except exceptions.LockError:
                continue
            try:
                if request.state != RequestState.PENDING:
                    continue
                self.log.info("Resetting lost request %s", request.id)
                self._deallocate(request.id)
                requests.requeue_request(request)
            finally:
                requests.unlock_request(request)

    def _deallocate(self, request_id: str) -> None:
        nodes = self.services.nodes
        for node in self.services.node_cache.values():
            if node.allocated_to != request_id:
                continue
            try:
                nodes.lock_node(node, blocking=False)
            except exceptions.LockError:
                continue
            try:
                node.allocated_to = None
                if node.state == NodeState.INIT:
                    node.state = NodeState.DELETING
                nodes.store_node(node)
            finally:
                nodes.unlock_node(node)

    def cleanup_leaked_resources(self) -> None:
        known_nodes = set(self.services.node_cache.ids())
        image_cache = self.services.image_cache
        known_uploads = {"%s-%s" % (u.build_id, u.id)
                         for u in image_cache.uploads()}
        # An upload whose record is unreadable still owns its image: an
        # operator may repair the record; only its removal frees it.
        known_uploads.update("%s-%s" % (key[1], key[3])
                             for key in image_cache.invalid()
                             if len(key) == 4)
        for provider in list(self.view.providers.values()):
            try:
                provider.cleanup_leaked_resources(known_nodes, known_uploads)
            except Exception:
                self.log.exception("Leak cleanup of %s failed",
                                   provider.name)

    def cleanup_max_ready_age(self) -> None:
        """Delete unallocated ready nodes that waited too long.

        A node is judged against every label it carries (a static host
        may offer several): it goes once it is older than the
        ``max-ready-age`` of any of them, as in nodepool 11.
        """
        labels = self.view.config.labels
        providers = self.view.providers
        now = time.time()
        for node in self.services.node_cache.values():
            if (node.state != NodeState.READY or node.allocated_to
                    or node.provider not in providers):
                continue
            # 0 (the default) or less: no limit, as upstream.
            ages = [labels[name].max_ready_age for name in node.type or ()
                    if name in labels and labels[name].max_ready_age > 0]
            age = now - (node.state_time or now)
            if any(age > limit for limit in ages):
                self._delete_unlocked(node, "exceeded max-ready-age")

    def cleanup_max_hold_age(self) -> None:
        max_hold_age = self.view.config.max_hold_age
        now = time.time()
        for node in self.services.node_cache.values():
            if node.state != NodeState.HOLD:
                continue
            # Unset, zero or negative means no limit (as upstream).
            limits = [x for x in (max_hold_age, node.hold_expiration)
                      if x is not None and x > 0]
            if not limits:
                continue
            if now - (node.state_time or now) > min(limits):
                self._delete_unlocked(node, "hold expired")

    def _delete_unlocked(self, node, why: str) -> None:
        nodes = self.services.nodes
        try:
            nodes.lock_node(node, blocking=False)
        except exceptions.LockError:
            return
        try:
            self.log.info("Deleting node %s: %s", node.id, why)
            node.state = NodeState.DELETING
            nodes.store_node(node)
        finally:
            nodes.unlock_node(node)

    def cleanup_empty_nodes(self) -> None:
        nodes = self.services.nodes
        for node_id in nodes.empty_node_ids():
            try:
                nodes.delete_raw_node(node_id)
                self.log.info("Removed empty node record %s", node_id)
            except KazooException:
                self.log.exception("Removing empty node %s failed", node_id)
