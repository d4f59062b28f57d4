# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Serving one accepted node request in one provider pool.

The pool worker creates a :class:`RequestHandler` for a request it has
locked and decided to take, calls :meth:`RequestHandler.start` once and
then :meth:`RequestHandler.poll` on every pass until it returns True.
"""

import logging
from dataclasses import dataclass
from typing import Callable, Optional

from kazoo.exceptions import (
    KazooException,
    NoNodeError,
    SessionExpiredError,
)

from nodepool import exceptions
from nodepool.launcher import why
from nodepool.launcher.ready_nodes import free_idle_node, reuse_ready_node
from nodepool.launcher.request_recovery import RequestRecovery
from nodepool.zk import locks
from nodepool.zk.client import CONNECTION_ERRORS, is_connection_error
from nodepool.zk.models import Node, NodeState, RequestState

MIN_READY_REQUESTOR = "NodePool:min-ready"


class RequestLog(logging.LoggerAdapter):
    """Prefixes log lines with the request (and event) they concern.

    With a ``journal``, every line is also an entry of the request's
    timeline there (whatever the log level, so that the journal does not
    depend on the logging config).  The handler gives such a log to the
    launches of its nodes: what the launch code and the driver's state
    machines already log about the request (attempts failing, quota
    refusals, instances running or gone) then reaches the journal without
    any change to the drivers.
    """

    def __init__(self, logger, extra, journal=None,
                 pool: Optional[str] = None):
        super().__init__(logger, extra)
        self.journal = journal
        self.pool = pool

    def process(self, msg, kwargs):
        return "[e: %s] [node_request: %s] %s" % (
            self.extra["event_id"], self.extra["request_id"], msg), kwargs

    def log(self, level, msg, *args, **kwargs):
        if self.journal is not None:
            try:
                text = str(msg) % args if args else str(msg)
            except (TypeError, ValueError):
                text = str(msg)
            self.journal.note(self.extra["request_id"], text, self.pool)
        super().log(level, msg, *args, **kwargs)


@dataclass(frozen=True)
class PoolContext:
    """What a request handler gets from the pool worker that made it.

    ``launcher_id`` is the pool's id in ``declined_by`` and on launched
    nodes; ``registered_pool_ids`` returns the ids of every registered
    pool now (a request fails once all of them declined it); ``journal``
    is the launcher's :class:`~nodepool.launcher.why.RequestJournal`,
    where the handler says why its request waits.
    """

    services: object
    provider: object
    pool: object
    launcher_id: str
    registered_pool_ids: Callable[[], set]
    journal: why.RequestJournal

    @property
    def pool_key(self) -> str:
        """The pool's name in the journal: ``provider/pool``."""
        return "%s/%s" % (self.provider.name, self.pool.name)


class RequestHandler(RequestRecovery):
    """Accept, launch or reuse nodes for, and complete one request.

    The handler holds the request lock from creation to completion and the
    lock of every node it assigns until it hands them over.

    ZooKeeper faults: a step that fails because the connection dropped is
    repeated by a later :meth:`poll` (the pool worker polls only while
    connected).  If the session was lost, and with it the locks, the
    handler locks the request (and its finished nodes) again and carries
    on if nobody changed them meanwhile; otherwise it cancels its launches
    and leaves the request to whoever has it now.
    """

    def __init__(self, context: PoolContext, request, guard=None):
        self.context = context
        self.provider = context.provider
        self.pool = context.pool
        self.services = context.services
        self.launcher_id = context.launcher_id
        self.request = request
        logger = logging.getLogger("nodepool.RequestHandler.%s-%s" % (
            self.provider.name, self.pool.name))
        extra = {"event_id": request.event_id, "request_id": request.id}
        self.log = RequestLog(logger, extra)
        self.trace = why.RequestTrace(context.journal, request.id,
                                      context.pool_key)
        # What the launches log goes to the request's timeline too.
        self.launch_log = RequestLog(logger, extra, context.journal,
                                     context.pool_key)
        self.slots: list = [None] * len(request.node_types)
        self.launchers: dict = {}
        self.paused = False
        self.done = False
        self.chosen_az = None
        self.starting = None  # future of start() when run in a pool
        self.started = False
        self.accepted = False
        self.declining = None  # the reason, once a decline has begun
        self.counted = False  # counted for the provider's max-concurrency
        self.orphans: list = []  # "init" nodes stored but never locked
        # A fulfilling transaction was sent and its outcome is unknown;
        # the (record, lock) pairs it was to release.
        self.fulfil_sent = False
        self.fulfil_locks: list = []
        # The request lock lives and dies with the session of this guard
        # (taken by the pool worker before it locked the request).
        self.guard = guard or self.services.zk_client.guard()

    @property
    def is_min_ready(self) -> bool:
        return self.request.requestor == MIN_READY_REQUESTOR

    # Entry points -------------------------------------------------------

    def start(self) -> None:
        """Accept the locked request and start filling it.

        May be called again (by :meth:`poll`) after a ZooKeeper connection
        error interrupted it.
        """
        if self.guard.lost:
            raise SessionExpiredError()
        if not self.accepted:
            if self.request.state == RequestState.REQUESTED:
                self.services.requests.accept_request(self.request)
            else:  # an earlier attempt's write may not have happened
                self.services.requests.store_request(self.request)
            self.accepted = True
            self.log.info("Accepted by %s", self.launcher_id)
            self.trace.reason(why.ACCEPTED, "by %s" % self.launcher_id)
        self._assign()
        self.trace.observe(self.slots, self.launchers, self.paused)
        self.started = True

    def poll(self) -> bool:
        """Advance; True once the request is finished (lock released)."""
        if self.done:
            return True
        if self.guard.lost:
            if not self.services.zk_client.connected:
                return False
            if not self._take_back():
                return True
        try:
            self._remove_orphans()
            if self.declining is not None:
                self.decline(self.declining)
                return True
            if not self.started:
                self.start()
            return self._poll()
        except Exception as e:
            if is_connection_error(e):
                self.log.info("ZooKeeper unavailable (%r); will retry", e)
                return False
            self.log.exception("Error handling request")
            try:
                self.decline("an error occurred")
            except CONNECTION_ERRORS:
                return False
            return True

    def _poll(self) -> bool:
        self.trace.observe(self.slots, self.launchers, self.paused)
        if self.paused:
            self._assign()
            if self.paused:
                return False
        if any(not launcher.complete
               for launcher in self.launchers.values()):
            return False
        for index, node in enumerate(self.slots):
            if node is not None and node.state == NodeState.ABORTED:
                # Quota ran out after all: forget the node (unlocked, the
                # deleted-node worker removes it) and try again later.
                self.log.info("Node %s aborted; relaunching", node.id)
                self.trace.note("node %s aborted (quota); relaunching"
                                % node.id)
                self._release_node(node, keep_allocation=False)
                self.slots[index] = None
                self.launchers.pop(index, None)
                self.paused = True
        if self.paused:
            return False
        failed = [n for n in self.slots if n.state == NodeState.FAILED]
        if failed:
            self.decline(self._failure_reason())
            return True
        self._fulfill()
        return True

    def _failure_reason(self) -> str:
        """Why the request is declined after a failed launch: a launch
        that ran out of capacity options says so (another provider may
        have some), else "node launch failed"."""
        for launcher in self.launchers.values():
            if launcher.no_capacity:
                return launcher.no_capacity
        return "node launch failed"

    # Assigning nodes ----------------------------------------------------

    def _assign(self) -> None:
        for index, label_name in enumerate(self.request.node_types):
            if self.slots[index] is not None:
                continue
            reuse = self.request.reuse or not self.provider.launches_nodes
            node = self._reuse_node(label_name) if reuse else None
            if node is None and not self.provider.launches_nodes:
                # Nothing to launch (static hosts): let the request wait
                # for a free slot instead of holding on to it here.
                self._release_request(label_name)
                return
            if node is None:
                token = self.provider.quota.reserve(label_name, self.pool)
                if token is None:
                    if self.is_min_ready:
                        self.decline("it would exceed quota")
                        return
                    if not self.paused:
                        self.log.info("Pausing: no quota for %s",
                                      label_name)
                        self.trace.paused(self.provider.quota, self.pool,
                                          label_name, self.log)
                    self.paused = True
                    self._free_idle_node()
                    return
                node = None
                try:
                    node = self._launch_node(index, label_name)
                finally:
                    self.provider.quota.claim_node(token, node)
            self.slots[index] = node
        self.trace.unpaused()
        self.paused = False

    def _free_idle_node(self) -> None:
        free_idle_node(self.services, self.provider.name, self.pool.name,
                       self.log)

    def _reuse_node(self, label_name: str):
        node = reuse_ready_node(self.services, self.provider, self.pool.name,
                                self.request, label_name, self.chosen_az,
                                self.log)
        if node is not None and self.chosen_az is None:
            self.chosen_az = node.az
        if node is not None:
            self.trace.reused(node)
        return node

    def _launch_node(self, index: int, label_name: str) -> Node:
        label = self.pool.labels[label_name]
        node = Node()
        node.state = NodeState.INIT
        node.provider = self.provider.name
        node.pool = self.pool.name
        node.type = [label_name]
        node.launcher = self.launcher_id
        node.allocated_to = self.request.id
        node.tenant_name = self.request.tenant_name
        node.requestor = self.request.requestor
        node.attributes = dict(self.pool.node_attributes or {}) or None
        node.cloud = self.provider.config.node_cloud
        node.region = self.provider.config.node_region
        if self.chosen_az is None:
            self.chosen_az = self.provider.choose_az(self.pool)
        node.az = self.chosen_az
        nodes = self.services.nodes
        if self.guard.lost:
            raise SessionExpiredError()
        # What the label uses, at once: tenant quota counts the record.
        node.resources = self.provider.quota.quota_for_label(
            label_name, self.pool.name).get_resources()
        # Stored unlocked in "init", then locked and moved to "building"
        # (one step): an unlocked "building" node is garbage to the
        # cleanup worker, and so is an "init" node left unlocked for long
        # (a launch interrupted here by a ZooKeeper fault).
        nodes.store_node(node)
        try:
            nodes.lock_new_node(node, NodeState.BUILDING, timeout=30)
        except Exception:
            # Not ours: remove it once ZooKeeper answers again (the
            # cleanup worker deletes it after a while otherwise).
            self.orphans.append(node)
            raise
        if self.guard.lost:
            # Locked under a newer session than our request lock: this
            # launch must not start; the node goes to the cleanup worker.
            node.state = NodeState.DELETING
            node.allocated_to = None
            nodes.store_node(node)
            nodes.unlock_node(node)
            raise SessionExpiredError()
        self.log.info("Launching node %s (%s)", node.id, label_name)
        self.launchers[index] = self.provider.launch(
            node, label, self.pool, self.request, self.launch_log,
            guard=self.guard)
        return node

    # Completion ---------------------------------------------------------

    def _fulfill(self) -> None:
        request = self.request
        requests = self.services.requests
        if self.fulfil_sent:
            # The connection dropped during the last attempt.  It was one
            # transaction that also released our request lock: if our
            # contender is gone, it applied (Zuul may own the nodes now).
            if not requests.holds_lock(request):
                self._fulfilled(at_once=True)
                return
            self.fulfil_sent = False
        try:
            # One transaction writes the request and releases every lock;
            # no exists() first: the write itself says whether the request
            # is still there.
            self.fulfil_sent = True
            self.fulfil_locks = [(record, record.lock)
                                 for record in self.slots + [request]]
            at_once = requests.fulfill_and_unlock(request, self.slots)
            self.fulfil_sent = False
            if not at_once:
                requests.fulfill_request(request, [n.id for n in self.slots])
        except NoNodeError:
            self.fulfil_sent = False
            self.log.info("Request vanished; releasing its nodes")
            for node in self.slots:
                self._release_node(node, keep_allocation=False)
            self._finish()
            return
        self._fulfilled(at_once)

    def _fulfilled(self, at_once: bool) -> None:
        request = self.request
        self.log.info("Fulfilled with nodes %s", request.nodes)
        self.trace.reason(why.FULFILLED, "nodes %s" % ", ".join(request.nodes))
        if at_once:
            # Every lock went with the transaction (the references to them
            # too, unless the answer was lost).
            for record, lock in self.fulfil_locks:
                locks.forget_lock(record, lock)
            self.done = True
            return
        for node in self.slots:
            self._release_node(node, keep_allocation=True)
        self._finish()

    def decline(self, reason: str, code: str = why.DECLINED) -> None:
        """Free our nodes, add this pool to ``declined_by`` (the request
        fails once every registered pool declined it) and unlock.

        ``code`` is the journal's reason code (``label-not-served`` when
        the pool lacks a label).  A ZooKeeper connection error propagates;
        :meth:`poll` calls this again until it went through."""
        if self.declining is None:
            self.log.info("Declining: %s", reason)
            self.trace.reason(code, reason)
        self.declining = reason
        for node in self.slots:
            if node is not None:
                self._release_node(node, keep_allocation=False)
        if self._request_exists():
            state = self.services.requests.decline_request(
                self.request, self.launcher_id,
                self.context.registered_pool_ids())
            if state == RequestState.FAILED:
                self.log.info("Failed: declined by every pool")
                self.trace.reason(why.FAILED, "declined by every pool")
        self._finish()

    def _release_request(self, label_name: str) -> None:
        """Give the request back without declining it.

        Assigned nodes are freed and the request returns to ``requested``
        so it is picked up again (by anyone) once capacity frees.
        """
        self.log.info("No free node of %s; releasing the request",
                      label_name)
        self.trace.reason(why.WAITING_NODE,
                          "no free node of %s" % label_name)
        for node in self.slots:
            if node is not None:
                self._release_node(node, keep_allocation=False)
        if self._request_exists():
            self.services.requests.requeue_request(self.request)
        self._finish()

    def _request_exists(self) -> bool:
        try:
            return self.services.requests.request_exists(self.request.id)
        except CONNECTION_ERRORS:
            raise  # not an answer: poll() asks again
        except KazooException:
            return False

    def _release_node(self, node: Node, keep_allocation: bool) -> None:
        if node.lock is None:
            return  # not (or no longer) ours: its holder decides
        nodes = self.services.nodes
        try:
            if not keep_allocation and node.state == NodeState.READY:
                node.allocated_to = None
                nodes.store_node(node)
        except NoNodeError:
            pass
        except CONNECTION_ERRORS:
            raise  # retried by poll() while we still hold the lock
        except KazooException:
            self.log.exception("Could not release node %s", node.id)
        nodes.unlock_node(node)

    def _finish(self) -> None:
        try:
            self.services.requests.unlock_request(self.request)
        except exceptions.LockError:
            pass
        self.done = True
