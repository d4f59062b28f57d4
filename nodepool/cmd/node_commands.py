# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The ``nodepool`` subcommands about nodes and requests: listings,
``hold``, ``delete`` (also ``--now``), ``info`` and ``erase``."""

import logging
import sys
import threading

from nodepool import status
from nodepool.cmd.context import CommandError, OneLineLog, print_table
from nodepool.exceptions import TimeoutException

log = logging.getLogger("nodepool.cmd")

# Pause between steps of a synchronous ``delete --now``.
DELETE_STEP_INTERVAL = 0.2


def show_nodes(ctx, node_id=None, detail=False) -> None:
    nodes = status.read_nodes(ctx.nodes, node_id)
    fields = None if detail else status.NODE_LIST_FIELDS
    print_table(status.node_list(nodes, node_id), fields)


def cmd_list(ctx) -> int:
    show_nodes(ctx, detail=ctx.args.detail)
    return 0


def cmd_request_list(ctx) -> int:
    requests = list(ctx.requests.iter_requests(cached=False))
    reasons = None
    if ctx.args.detail:
        # The launchers say why requests wait in their pool records.
        from nodepool.zk.registry import ComponentRegistry
        registry = ComponentRegistry(ctx.zk_client)
        try:
            reasons = status.request_reasons(requests, registry.pools())
        finally:
            registry.stop()
    print_table(status.request_list(requests, reasons))
    return 0


def cmd_info(ctx) -> int:
    provider = ctx.args.provider
    images = ctx.images
    image_rows = []
    for image in images.get_image_names():
        for build_id in images.get_build_ids(image):
            if provider not in images.get_build_providers(image, build_id):
                continue
            upload_ids = sorted(images.get_upload_ids(image, build_id,
                                                      provider))
            image_rows.append({"image": image, "build_id": build_id,
                               "upload_ids": upload_ids})
    node_rows = [{"id": node.id, "server_id": node.external_id}
                 for node in ctx.nodes.iter_nodes(cached=False)
                 if node.provider == provider]
    print("ZooKeeper data for provider %s" % provider)
    print()
    print("Image data:")
    print(status.render_table(
        [status.Column("image", "Image Name"),
         status.Column("build_id", "Build ID"),
         status.Column("upload_ids", "Upload IDs")], image_rows))
    print()
    print("Nodes:")
    print(status.render_table(
        [status.Column("id", "ID"), status.Column("server_id", "Server ID")],
        node_rows))
    return 0


def _locked_node(ctx, node_id):
    node = ctx.nodes.get_node(node_id, cached=False)
    if node is None:
        raise CommandError("Node id %s not found" % node_id)
    try:
        ctx.nodes.lock_node(node, blocking=True, timeout=ctx.lock_timeout)
    except TimeoutException:
        raise CommandError("Timed out after %ss waiting for the lock of "
                           "node %s" % (ctx.lock_timeout, node_id)) from None
    return node


def _store_state(ctx, node, state) -> None:
    """Write ``state`` to the locked ``node``, then unlock it."""
    try:
        node.state = state
        ctx.nodes.store_node(node)
    finally:
        ctx.nodes.unlock_node(node)


def cmd_hold(ctx) -> int:
    from nodepool.zk.models import NodeState
    node = _locked_node(ctx, ctx.args.id)
    _store_state(ctx, node, NodeState.HOLD)
    show_nodes(ctx, node.id)
    return 0


def cmd_delete(ctx) -> int:
    from nodepool.zk.models import NodeState
    node = _locked_node(ctx, ctx.args.id)
    if ctx.args.now:
        try:
            ok = delete_now(ctx, node)
        finally:
            if node.lock is not None:
                ctx.nodes.unlock_node(node)
        if not ok:
            return 1
    else:
        _store_state(ctx, node, NodeState.DELETING)
    show_nodes(ctx, node.id)
    return 0


def delete_now(ctx, node) -> bool:
    """Delete the locked ``node``'s instance and record synchronously.

    Runs the provider's node deleter in this thread without starting the
    provider's runner threads.  Returns whether it succeeded (the
    deleter logs why not).
    """
    from nodepool import driver
    from nodepool.driver.base import ProviderServices
    provider_config = ctx.config.providers.get(node.provider)
    if provider_config is None:
        print("Provider %s for node %s not defined on this launcher"
              % (node.provider, node.id))
        return False
    provider = driver.get_driver(provider_config.driver).get_provider(
        provider_config, ProviderServices(ctx.zk_client, ctx.nodes,
                                          ctx.requests, ctx.images))
    wait = threading.Event()
    try:
        # Refilling a static host's slot is the launchers' business: they
        # notice the missing node on their own.
        deleter = provider.start_node_cleanup(
            node, log if ctx.args.debug else OneLineLog(log),
            report_deleted=False)
        while True:
            deleter.step()
            if deleter.complete:
                break
            wait.wait(DELETE_STEP_INTERVAL)
    finally:
        try:
            provider.stop()
            provider.join(timeout=10)
        except Exception:
            log.debug("Stopping provider %s failed", provider_config.name,
                      exc_info=True)
    if not deleter.succeeded:
        print("nodepool: error: Deleting node %s failed" % node.id,
              file=sys.stderr)
    return deleter.succeeded


def cmd_erase(ctx) -> int:
    provider = ctx.args.provider
    if not ctx.args.force:
        print("WARNING! This action is not reversible!")
        try:
            answer = input("Erase ZooKeeper data for provider %s? [N/y] "
                           % provider)
        except EOFError:
            answer = ""
        if answer.strip() not in ("y", "Y"):
            print("Aborting. No data erased.")
            return 0
    print("Erasing build data for %s..." % provider)
    images = ctx.images
    for image in images.get_image_names():
        for build_id in images.get_build_ids(image):
            images.delete_build_provider(image, build_id, provider)
    print("Erasing node data for %s..." % provider)
    for node in list(ctx.nodes.iter_nodes(cached=False)):
        if node.provider == provider:
            ctx.nodes.delete_node(node)
    return 0
