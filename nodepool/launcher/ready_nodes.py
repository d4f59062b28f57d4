# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""What a request handler does with a pool's ready nodes: take one for
its request, or delete an idle one to make room for a launch.

Both work on the launcher's services (the node store and cache) and lock
a node only briefly with ``blocking=False``: a node somebody else holds
is skipped, never waited for.
"""

from typing import Optional

from nodepool import exceptions
from nodepool.zk.models import Node, NodeState


def reuse_ready_node(services, provider, pool_name: str, request,
                     label_name: str, az: Optional[str],
                     log) -> Optional[Node]:
    """Allocate a ready, unallocated node of ``label_name`` from the pool
    to ``request`` and return it, locked (the caller unlocks it when it
    hands the node over); None if there is none to take.

    :param az: only a node in this zone will do (None: any zone).
    """
    ready = services.nodes.get_ready_nodes_of_types([label_name])
    candidates = ready.get(label_name, [])
    if not provider.launches_nodes:
        # Existing hosts are not interchangeable: keep the ones that
        # offer other labels too for requests that need those.
        candidates = sorted(candidates, key=lambda n: len(n.type))
    for node in candidates:
        if (node.provider != provider.name or node.pool != pool_name
                or node.lock_contenders or node.is_locked):
            continue
        if az is not None and node.az != az:
            continue
        try:
            services.nodes.lock_node(node, blocking=False)
        except exceptions.LockError:
            continue
        if (node.state != NodeState.READY or node.allocated_to
                or node.provider != provider.name):
            services.nodes.unlock_node(node)
            continue
        node.allocated_to = request.id
        node.tenant_name = request.tenant_name
        node.requestor = request.requestor
        services.nodes.store_node(node)
        log.info("Reusing ready node %s", node.id)
        return node
    return None


def free_idle_node(services, provider_name: str, pool_name: str,
                   log) -> None:
    """Delete the oldest idle ready node of the pool to make room.

    Without this a pool full of ready nodes nobody asks for (min-ready
    of other labels) would keep a paused request waiting forever.  One
    node at a time: while one of the pool's nodes is being deleted, the
    freed quota may be enough already.
    """
    mine = [n for n in services.node_cache.values()
            if n.provider == provider_name and n.pool == pool_name]
    if any(n.state == NodeState.DELETING for n in mine):
        return
    idle = sorted((n for n in mine if n.state == NodeState.READY
                   and not n.allocated_to and not n.lock_contenders
                   and not n.is_locked),
                  key=lambda n: n.state_time or 0)
    for node in idle:
        try:
            services.nodes.lock_node(node, blocking=False)
        except exceptions.LockError:
            continue
        try:
            if node.state != NodeState.READY or node.allocated_to:
                continue
            node.state = NodeState.DELETING
            services.nodes.store_node(node)
            log.info("Deleting idle ready node %s (%s) to make room",
                     node.id, ",".join(node.type or ()))
            return
        finally:
            services.nodes.unlock_node(node)
