# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Serving one accepted node request in one provider pool.

The pool worker creates a :class:`RequestHandler` for a request it has
locked and decided to take, calls :meth:`RequestHandler.start` once and
then :meth:`RequestHandler.poll` on every pass until it returns True.
"""

import logging

from kazoo.exceptions import KazooException, NoNodeError

from nodepool import exceptions
from nodepool.zk.models import Node, NodeState, RequestState
from nodepool.zk.paths import request_path

MIN_READY_REQUESTOR = "NodePool:min-ready"


class RequestLog(logging.LoggerAdapter):
    """Prefixes log lines with the request (and event) they concern."""

    def process(self, msg, kwargs):
        return "[e: %s] [node_request: %s] %s" % (
            self.extra["event_id"], self.extra["request_id"], msg), kwargs


class RequestHandler:
    """Accept, launch or reuse nodes for, and complete one request.

    The handler holds the request lock from creation to completion and the
    lock of every node it assigns until it hands them over.
    """

    def __init__(self, worker, request):
        self.worker = worker
        self.provider = worker.provider
        self.pool = worker.pool
        self.services = worker.services
        self.request = request
        logger = logging.getLogger("nodepool.RequestHandler.%s-%s" % (
            self.provider.name, self.pool.name))
        self.log = RequestLog(logger, {"event_id": request.event_id,
                                       "request_id": request.id})
        self.slots: list = [None] * len(request.node_types)
        self.launchers: dict = {}
        self.paused = False
        self.done = False
        self.chosen_az = None
        self.starting = None  # future of start() when run in a pool
        # The request lock lives and dies with this ZooKeeper session.
        self.session_id = self.services.zk_client.session_id

    @property
    def is_min_ready(self) -> bool:
        return self.request.requestor == MIN_READY_REQUESTOR

    # Entry points -------------------------------------------------------

    def start(self) -> None:
        """Accept the locked request and start filling it."""
        self.services.requests.accept_request(self.request)
        self.log.info("Accepted by %s", self.worker.launcher_id)
        self._assign()

    def poll(self) -> bool:
        """Advance; True once the request is finished (lock released)."""
        if self.done:
            return True
        if self.services.zk_client.session_id != self.session_id:
            self._abandon()
            return True
        try:
            return self._poll()
        except Exception:
            self.log.exception("Error handling request")
            self.decline("an error occurred")
            return True

    def _poll(self) -> bool:
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
                self._release_node(node, keep_allocation=False)
                self.slots[index] = None
                self.launchers.pop(index, None)
                self.paused = True
        if self.paused:
            return False
        failed = [n for n in self.slots if n.state == NodeState.FAILED]
        if failed:
            self.decline("node launch failed")
            return True
        self._fulfill()
        return True

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
                token = self.provider.reserve_quota(label_name, self.pool)
                if token is None:
                    if self.is_min_ready:
                        self.decline("it would exceed quota")
                        return
                    if not self.paused:
                        self.log.info("Pausing: no quota for %s",
                                      label_name)
                    self.paused = True
                    self._free_idle_node()
                    return
                node = None
                try:
                    node = self._launch_node(index, label_name)
                finally:
                    self.provider.claim_node(token, node)
            self.slots[index] = node
        self.paused = False

    def _free_idle_node(self) -> None:
        """Delete the oldest idle ready node of this pool to make room.

        Without this a pool full of ready nodes nobody asks for (min-ready
        of other labels) would keep this request waiting forever.  One
        node at a time: while one of the pool's nodes is being deleted,
        the freed quota may be enough already.
        """
        mine = [n for n in self.services.node_cache.values()
                if n.provider == self.provider.name
                and n.pool == self.pool.name]
        if any(n.state == NodeState.DELETING for n in mine):
            return
        idle = sorted((n for n in mine if n.state == NodeState.READY
                       and not n.allocated_to and not n.lock_contenders
                       and not n.is_locked),
                      key=lambda n: n.state_time or 0)
        for node in idle:
            try:
                self.services.nodes.lock_node(node, blocking=False)
            except exceptions.LockError:
                continue
            try:
                if node.state != NodeState.READY or node.allocated_to:
                    continue
                node.state = NodeState.DELETING
                self.services.nodes.store_node(node)
                self.log.info("Deleting idle ready node %s (%s) to make "
                              "room", node.id, ",".join(node.type or ()))
                return
            finally:
                self.services.nodes.unlock_node(node)

    def _reuse_node(self, label_name: str):
        ready = self.services.nodes.get_ready_nodes_of_types([label_name])
        candidates = ready.get(label_name, [])
        if not self.provider.launches_nodes:
            # Existing hosts are not interchangeable: keep the ones that
            # offer other labels too for requests that need those.
            candidates = sorted(candidates, key=lambda n: len(n.type))
        for node in candidates:
            if (node.provider != self.provider.name
                    or node.pool != self.pool.name
                    or node.lock_contenders or node.is_locked):
                continue
            if self.chosen_az is not None and node.az != self.chosen_az:
                continue
            try:
                self.services.nodes.lock_node(node, blocking=False)
            except exceptions.LockError:
                continue
            if (node.state != NodeState.READY or node.allocated_to
                    or node.provider != self.provider.name):
                self.services.nodes.unlock_node(node)
                continue
            node.allocated_to = self.request.id
            node.tenant_name = self.request.tenant_name
            node.requestor = self.request.requestor
            self.services.nodes.store_node(node)
            if self.chosen_az is None:
                self.chosen_az = node.az
            self.log.info("Reusing ready node %s", node.id)
            return node
        return None

    def _launch_node(self, index: int, label_name: str) -> Node:
        label = self.pool.labels[label_name]
        node = Node()
        node.state = NodeState.INIT
        node.provider = self.provider.name
        node.pool = self.pool.name
        node.type = [label_name]
        node.launcher = self.worker.launcher_id
        node.allocated_to = self.request.id
        node.tenant_name = self.request.tenant_name
        node.requestor = self.request.requestor
        node.attributes = dict(self.pool.node_attributes or {}) or None
        node.cloud = getattr(self.provider.config, "cloud_name", None)
        node.region = getattr(self.provider.config, "region_name", None)
        if self.chosen_az is None:
            self.chosen_az = self.provider.choose_az(self.pool)
        node.az = self.chosen_az
        nodes = self.services.nodes
        # Stored unlocked in "init", then locked and moved to "building":
        # an unlocked "building" node is garbage to the cleanup worker.
        nodes.store_node(node)
        nodes.lock_node(node, blocking=True, timeout=30)
        node.state = NodeState.BUILDING
        nodes.store_node(node)
        self.log.info("Launching node %s (%s)", node.id, label_name)
        self.launchers[index] = self.provider.launch(
            node, label, self.pool, self.request, self.log)
        return node

    # Completion ---------------------------------------------------------

    def _fulfill(self) -> None:
        request = self.request
        requests = self.services.requests
        if not self._request_exists():
            self.log.info("Request vanished; releasing its nodes")
            for node in self.slots:
                self._release_node(node, keep_allocation=False)
            self._finish()
            return
        requests.fulfill_request(request, [n.id for n in self.slots])
        self.log.info("Fulfilled with nodes %s", request.nodes)
        for node in self.slots:
            self._release_node(node, keep_allocation=True)
        self._finish()

    def decline(self, reason: str) -> None:
        """Free our nodes, add this pool to ``declined_by`` (the request
        fails once every registered pool declined it) and unlock."""
        self.log.info("Declining: %s", reason)
        for node in self.slots:
            if node is not None:
                self._release_node(node, keep_allocation=False)
        if self._request_exists():
            state = self.services.requests.decline_request(
                self.request, self.worker.launcher_id,
                self.worker.registered_pool_ids())
            if state == RequestState.FAILED:
                self.log.info("Failed: declined by every pool")
        self._finish()

    def _release_request(self, label_name: str) -> None:
        """Give the request back without declining it.

        Assigned nodes are freed and the request returns to ``requested``
        so it is picked up again (by anyone) once capacity frees.
        """
        self.log.info("No free node of %s; releasing the request",
                      label_name)
        for node in self.slots:
            if node is not None:
                self._release_node(node, keep_allocation=False)
        if self._request_exists():
            self.services.requests.requeue_request(self.request)
        self._finish()

    def _request_exists(self) -> bool:
        try:
            return self.services.requests.kazoo.exists(
                request_path(self.request.id)) is not None
        except KazooException:
            return False

    def _release_node(self, node: Node, keep_allocation: bool) -> None:
        nodes = self.services.nodes
        try:
            if not keep_allocation and node.state == NodeState.READY:
                node.allocated_to = None
                nodes.store_node(node)
        except NoNodeError:
            pass
        except KazooException:
            self.log.exception("Could not release node %s", node.id)
        if node.lock is not None:
            nodes.unlock_node(node)

    def _abandon(self) -> None:
        """The session that held our locks is gone: drop everything.

        The request is unlocked (by the server) and still pending, so the
        lost-request cleanup hands it back; our nodes are unlocked and get
        deleted or freed by the deleted-node worker.
        """
        self.log.warning("ZooKeeper session lost; abandoning the request")
        self.request.lock = None
        for node in self.slots:
            if node is not None:
                node.lock = None
        self.done = True

    def _finish(self) -> None:
        try:
            self.services.requests.unlock_request(self.request)
        except exceptions.LockError:
            pass
        self.done = True
