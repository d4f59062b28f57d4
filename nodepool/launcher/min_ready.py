# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Keeping ``min-ready`` nodes of each label warm.

The launcher asks for missing nodes the way Zuul would, with ordinary
requests: one per missing node, priority ``900``, ``reuse: false``, made
ephemeral so they vanish with the launcher.  Completed ones are cleaned up
here: a fulfilled request's nodes are released (``allocated_to`` cleared,
so they are ready for anyone) and the request deleted; a failed request is
deleted.
"""

import logging

from nodepool import exceptions
from nodepool.launcher.request_handler import MIN_READY_REQUESTOR
from nodepool.zk.models import NodeRequest, NodeState, RequestState
from nodepool.zk.paths import PRIORITY_MIN_READY

log = logging.getLogger("nodepool.MinReady")


class MinReadyManager:
    """Runs from the launcher's main loop.

    :param view: the launcher's :class:`~nodepool.launcher.view.LauncherView`
        (current config and providers).
    :param services: the launcher's ZooKeeper stores and caches.
    """

    def __init__(self, view, services):
        self.view = view
        self.services = services
        self.submitted: dict = {}  # request id -> label

    def run(self) -> None:
        self._complete_requests()
        self._submit_requests()

    def _served_labels(self) -> set:
        """Labels some provider of this launcher can launch now: a label
        whose image is nowhere available yet (no ready upload) is left
        alone, or its request would only be declined, deleted and asked
        again on every pass."""
        labels = set()
        for provider in self.view.providers.values():
            for pool in provider.config.pools.values():
                for name, label in pool.labels.items():
                    if name in labels:
                        continue
                    try:
                        if provider.images_available(label):
                            labels.add(name)
                    except Exception:
                        log.exception("Checking images of label %s", name)
        return labels

    def _complete_requests(self) -> None:
        requests = self.services.requests
        for request_id in list(self.submitted):
            # The cache's copy while it has one (a request waiting for
            # capacity costs no read per pass; a state change reaches us
            # with the cache's delay); ZooKeeper before the cache saw our
            # new request, and after it saw it go.
            request = requests.get_request(request_id)
            if request is None:
                del self.submitted[request_id]
                continue
            if request.state == RequestState.FULFILLED:
                for node_id in request.nodes:
                    self._release(node_id, request_id)
            elif request.state != RequestState.FAILED:
                continue
            requests.delete_request(request)
            del self.submitted[request_id]

    def _release(self, node_id: str, request_id: str) -> None:
        nodes = self.services.nodes
        node = nodes.get_node(node_id, cached=False)
        if node is None or node.allocated_to != request_id:
            return
        try:
            nodes.lock_node(node, blocking=True, timeout=10)
        except exceptions.LockError:
            log.warning("Could not lock node %s to release it", node_id)
            return
        try:
            if node.allocated_to == request_id:
                node.allocated_to = None
                nodes.store_node(node)
        finally:
            nodes.unlock_node(node)

    def _pending_labels(self) -> set:
        """Labels with a min-ready request under way: ours, and those of
        other launchers sharing the labels (else each of them would add
        its own node and min-ready would be met once per launcher)."""
        pending = set(self.submitted.values())
        for request in self.services.request_cache.values():
            if (request.requestor == MIN_READY_REQUESTOR
                    and request.state != RequestState.FAILED):
                pending.update(request.node_types)
        return pending

    def _submit_requests(self) -> None:
        pending = self._pending_labels()
        ready = {}
        requests = self.services.request_cache
        for node in self.services.node_cache.values():
            # A node allocated to a request that is gone is about to be
            # released: its launcher fulfilled a min-ready request, then
            # released the node and deleted the request, and our request
            # cache may show the delete before our node cache shows the
            # release (two caches, no order between them).
            if node.state == NodeState.READY and (
                    not node.allocated_to
                    or requests.get(node.allocated_to) is None):
                for label in node.type:
                    ready[label] = ready.get(label, 0) + 1
        served = self._served_labels()
        for label in self.view.config.labels.values():
            if (label.min_ready <= 0 or label.name in pending
                    or label.name not in served):
                continue
            missing = label.min_ready - ready.get(label.name, 0)
            for _ in range(max(0, missing)):
                request = NodeRequest.new([label.name],
                                          requestor=MIN_READY_REQUESTOR,
                                          reuse=False)
                request_id = self.services.requests.submit_request(
                    request, priority=PRIORITY_MIN_READY, ephemeral=True)
                self.submitted[request_id] = label.name
                log.info("Requested min-ready node of %s (%s)",
                         label.name, request_id)
