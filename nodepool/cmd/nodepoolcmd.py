# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Entry point of the ``nodepool`` command line tool.

Global options (``-c``, ``-s``, ``--debug``, ``-l``) come before the
subcommand.  Each subcommand is a function ``(ctx) -> exit status``
registered in :func:`build_parser`; ``ctx`` is a :class:`Context` holding
the parsed arguments and, for every command but ``config-validate``, the
loaded config and a ZooKeeper connection (direct reads, no caches).

Failures (config errors, no ZooKeeper, lock timeouts, unknown ids, lost
connections) print one line on stderr and exit with status 1; argparse
exits with status 2 on bad arguments.  No tracebacks unless ``--debug``.
"""

import argparse
import json
import logging
import os
import sys
import threading

from kazoo.exceptions import KazooException

from nodepool import status
from nodepool.config import DEFAULT_CONFIG_PATH, DEFAULT_SECURE_PATH
from nodepool.exceptions import NodepoolError, TimeoutException
from nodepool.version import __version__

log = logging.getLogger("nodepool.cmd")

# How long delete and hold wait for a node lock (as nodepool does).
LOCK_TIMEOUT = 5
# Pause between steps of a synchronous ``delete --now``.
DELETE_STEP_INTERVAL = 0.2


class CommandError(Exception):
    """A failure reported as one line on stderr (exit status 1)."""


class Context:
    """What a subcommand works with: arguments, config and stores.

    ``lock_timeout``: seconds ``hold`` and ``delete`` wait for a node's
    lock.
    """

    def __init__(self, args, config=None, zk_client=None,
                 lock_timeout: float = LOCK_TIMEOUT):
        self.args = args
        self.config = config
        self.zk_client = zk_client
        self.lock_timeout = lock_timeout
        if zk_client is not None:
            from nodepool.zk.images import ImageStore
            from nodepool.zk.nodes import NodeStore
            from nodepool.zk.requests import RequestStore
            self.nodes = NodeStore(zk_client)
            self.requests = RequestStore(zk_client)
            self.images = ImageStore(zk_client)


def secure_path(args):
    """The secure file to use: ``-s`` if given, else the default if present.

    An explicitly given file must exist (the loader reports it otherwise).
    """
    if args.secure:
        return args.secure
    if os.path.exists(DEFAULT_SECURE_PATH):
        return DEFAULT_SECURE_PATH
    return None


def print_table(listing, fields=None) -> None:
    headers, rows = listing
    print(status.render_table(headers, rows, fields))


# -- read-only listings --------------------------------------------------------

def cmd_config_validate(ctx) -> int:
    """Validate the config file; 0 if valid, 1 otherwise."""
    from nodepool.cmd.config_validator import ConfigValidator
    args = ctx.args
    validator = ConfigValidator(args.config, secure_path(args))
    result = validator.validate()
    if result == 0:
        print("Configuration file %s is valid" % args.config)
    return result


def show_nodes(ctx, node_id=None, detail=False) -> None:
    nodes = status.read_nodes(ctx.nodes, node_id)
    fields = None if detail else status.NODE_LIST_FIELDS
    print_table(status.node_list(nodes, node_id), fields)


def cmd_list(ctx) -> int:
    show_nodes(ctx, detail=ctx.args.detail)
    return 0


def cmd_image_list(ctx) -> int:
    print_table(status.image_list(status.read_uploads(ctx.images)))
    return 0


def cmd_dib_image_list(ctx) -> int:
    builds, paused = status.read_builds(ctx.images)
    print_table(status.dib_image_list(builds, paused))
    return 0


def cmd_image_status(ctx) -> int:
    print_table(status.image_status(status.read_image_status(ctx.images)))
    return 0


def cmd_request_list(ctx) -> int:
    print_table(status.request_list(ctx.requests.iter_requests(cached=False)))
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


def cmd_alien_image_list(ctx) -> int:
    """Cloud images tagged by nodepool that no READY upload knows.

    Asks each provider's adapter for its own images
    (:meth:`Adapter.list_images`; drivers that cannot list images
    contribute nothing) and shows those carrying ``nodepool_build_id``
    whose id is the external id of no READY upload.  The ids of every
    provider's uploads count, so providers sharing a cloud account do
    not call each other's images alien.  A provider whose listing fails
    is logged (one line unless ``--debug``) and skipped.
    """
    from nodepool import driver
    from nodepool.zk.models import UploadState
    wanted = ctx.args.provider
    if wanted and wanted not in ctx.config.providers:
        raise CommandError("Provider %s is not defined in the config"
                           % wanted)
    errors = log if ctx.args.debug else _OneLineLog(log)
    known = {upload.external_id
             for upload in status.read_uploads(ctx.images)
             if upload.state == UploadState.READY}
    rows = []
    for name, provider in ctx.config.providers.items():
        if wanted and name != wanted:
            continue
        try:
            adapter = driver.get_driver(provider.driver).get_adapter(
                provider, warm=False)
        except NotImplementedError:
            log.info("Provider %s: driver %s cannot list images", name,
                     provider.driver)
            continue
        except Exception:
            errors.exception("Cannot talk to provider %s" % name)
            continue
        try:
            images = [image for image in adapter.list_images()
                      if "nodepool_build_id" in image.metadata
                      and image.id not in known]
        except Exception:
            errors.exception("Listing images of provider %s failed" % name)
            images = []
        finally:
            try:
                adapter.stop()
            except Exception:
                log.debug("Stopping the adapter of %s failed", name,
                          exc_info=True)
        images.sort(key=lambda image: (image.name or "", str(image.id)))
        rows.extend({"provider": name, "name": image.name, "id": image.id}
                    for image in images)
    print(status.render_table(
        [status.Column("provider", "Provider"), status.Column("name", "Name"),
         status.Column("id", "Image ID")], rows))
    return 0


# -- node changes --------------------------------------------------------------

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


def cmd_hold(ctx) -> int:
    from nodepool.zk.models import NodeState
    node = _locked_node(ctx, ctx.args.id)
    try:
        node.state = NodeState.HOLD
        ctx.nodes.store_node(node)
    finally:
        ctx.nodes.unlock_node(node)
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
        try:
            node.state = NodeState.DELETING
            ctx.nodes.store_node(node)
        finally:
            ctx.nodes.unlock_node(node)
    show_nodes(ctx, node.id)
    return 0


class _OneLineLog:
    """A logger whose ``exception()`` logs the message without the
    traceback, so a failing ``delete --now`` stays readable (``--debug``
    uses the real logger)."""

    def __init__(self, logger):
        self._logger = logger

    def exception(self, msg, *args, **kwargs):
        kwargs.pop("exc_info", None)
        error = sys.exc_info()[1]
        if error is not None:
            msg = "%s: %s" % (msg, str(error) or type(error).__name__)
        self._logger.error(msg, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._logger, name)


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
            node, log if ctx.args.debug else _OneLineLog(log),
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


# -- image changes -------------------------------------------------------------

def cmd_image_build(ctx) -> int:
    image = ctx.args.image
    diskimage = ctx.config.diskimages.get(image)
    if diskimage is None or diskimage.abstract:
        raise CommandError("Trying to build a non disk-image-builder "
                           "image: %s" % image)
    if diskimage.pause:
        raise CommandError("Skipping build request for image %s; paused"
                           % image)
    ctx.images.submit_build_request(image)
    return 0


def cmd_image_delete(ctx) -> int:
    from nodepool.zk.models import UploadState
    args = ctx.args
    upload = ctx.images.get_upload(args.image, args.build_id, args.provider,
                                   args.upload_id)
    if upload is None:
        print("Image upload not found")
        return 1
    if upload.state == UploadState.UPLOADING:
        print("Cannot delete because image upload in progress")
        return 1
    upload.state = UploadState.DELETING
    ctx.images.store_upload(args.image, args.build_id, args.provider,
                            upload, args.upload_id)
    return 0


def cmd_dib_image_delete(ctx) -> int:
    from nodepool.zk.models import BuildState
    label = ctx.args.id
    try:
        image, build_id = status.split_build_label(label)
    except ValueError:
        build = None
    else:
        build = ctx.images.get_build(image, build_id)
    if build is None:
        print("Build %s not found" % label)
        return 1
    if build.state == BuildState.BUILDING:
        print("Cannot delete a build in progress")
        return 1
    build.state = BuildState.DELETING
    ctx.images.store_build(image, build, build_id)
    return 0


def cmd_image_pause(ctx) -> int:
    ctx.images.pause_image(ctx.args.image)
    return 0


def cmd_image_unpause(ctx) -> int:
    ctx.images.unpause_image(ctx.args.image)
    return 0


def cmd_export_image_data(ctx) -> int:
    data = ctx.images.export_image_data()
    # Owner-only: the records name cloud image ids.  Truncated, unlike
    # upstream, so a shorter export never leaves a tail of an older one.
    fd = os.open(ctx.args.path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC,
                 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    return 0


def cmd_import_image_data(ctx) -> int:
    try:
        with open(ctx.args.path) as f:
            data = json.load(f)
    except ValueError as e:
        raise CommandError("%s is not valid JSON: %s" % (ctx.args.path, e))
    if not isinstance(data, dict):
        raise CommandError("%s does not hold exported image data"
                           % ctx.args.path)
    try:
        ctx.images.import_image_data(data)
    except ValueError as e:
        raise CommandError("Cannot import %s: %s" % (ctx.args.path, e))
    return 0


# -- parser and main -----------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        prog="nodepool", description="Inspect and manage a nodepool cluster.")
    parser.add_argument("-c", dest="config",
                        default=DEFAULT_CONFIG_PATH,
                        help="path to the config file (default: %(default)s)")
    parser.add_argument("-s", dest="secure",
                        help="path to the secure file (default: %s if it "
                        "exists)" % DEFAULT_SECURE_PATH)
    parser.add_argument("--debug", action="store_true",
                        help="show debug output")
    parser.add_argument("-l", dest="logconfig",
                        help="logging config file (ignored with --debug)")
    parser.add_argument("--version", action="version",
                        version="Nodepool version: %s" % __version__)
    subparsers = parser.add_subparsers(dest="command", metavar="command")

    def add(name, func, help, **kwargs):
        cmd = subparsers.add_parser(name, help=help, description=help,
                                    **kwargs)
        cmd.set_defaults(func=func)
        return cmd

    add("config-validate", cmd_config_validate, "validate the config file "
        "(and the secure file) the way the daemons load it")

    cmd = add("list", cmd_list, "list nodes")
    cmd.add_argument("--detail", action="store_true",
                     help="show all node columns")
    add("image-list", cmd_image_list, "list image uploads")
    add("dib-image-list", cmd_dib_image_list, "list image builds")
    add("image-status", cmd_image_status,
        "show pause flags and build requests of images")
    add("request-list", cmd_request_list, "list node requests")

    cmd = add("image-build", cmd_image_build, "request a diskimage build")
    cmd.add_argument("image", help="diskimage name")
    cmd = add("image-delete", cmd_image_delete, "delete an image upload")
    for option, what in (("--provider", "provider name"),
                         ("--image", "image name"),
                         ("--build-id", "build id"),
                         ("--upload-id", "upload id")):
        cmd.add_argument(option, required=True, help=what)
    cmd = add("dib-image-delete", cmd_dib_image_delete, "delete an image "
              "build (and its uploads)")
    cmd.add_argument("id", help="build id as <image>-<build id>")
    cmd = add("alien-image-list", cmd_alien_image_list,
              "list cloud images tagged by nodepool that it does not know")
    cmd.add_argument("provider", nargs="?", help="only this provider")

    cmd = add("delete", cmd_delete, "delete a node")
    cmd.add_argument("id", help="node id")
    cmd.add_argument("--now", action="store_true",
                     help="delete the instance here and now instead of "
                     "leaving it to a launcher")
    cmd = add("hold", cmd_hold, "hold a node")
    cmd.add_argument("id", help="node id")

    cmd = add("info", cmd_info, "show the ZooKeeper data of a provider")
    cmd.add_argument("provider", metavar="PROVIDER", help="provider name")
    cmd = add("erase", cmd_erase, "erase the ZooKeeper data of a provider")
    cmd.add_argument("provider", metavar="PROVIDER", help="provider name")
    cmd.add_argument("--force", action="store_true",
                     help="do not ask for confirmation")

    cmd = add("image-pause", cmd_image_pause, "pause builds of an image")
    cmd.add_argument("image", help="image name")
    cmd = add("image-unpause", cmd_image_unpause,
              "resume builds of an image")
    cmd.add_argument("image", help="image name")
    cmd = add("export-image-data", cmd_export_image_data,
              "write the image data in ZooKeeper to a file")
    cmd.add_argument("path", help="output file")
    cmd = add("import-image-data", cmd_import_image_data,
              "restore image data from an export (quiescent system only)")
    cmd.add_argument("path", help="input file")
    return parser


# Loggers held to WARNING unless --debug (or a logging config) says else.
QUIET_LOGGERS = ("kazoo", "nodepool.ComponentRegistry", "nodepool.zk.client",
                 "botocore", "boto3", "urllib3", "openstack", "keystoneauth",
                 "azure")


def setup_logging(args):
    if args.debug:
        logging.basicConfig(
            level=logging.DEBUG,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    elif args.logconfig:
        from nodepool.cmd import load_logging_config
        load_logging_config(args.logconfig)
    else:
        logging.basicConfig(level=logging.INFO)
        # Connection chatter would drown the one line a command prints
        # (botocore alone says where it found credentials and endpoints
        # for every client of every AWS provider).
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def connect(args, config):
    """A connected :class:`ZooKeeperClient` for ``config``.

    Unless debugging, kazoo's per-attempt connection warnings (and our
    log line about a failed TLS handshake) are muted meanwhile: the single
    failure line says it all, including why the last attempt failed.
    """
    from nodepool.zk.client import ZooKeeperClient
    if not config.zookeeper_servers:
        raise CommandError("No ZooKeeper servers specified in config.")
    client = ZooKeeperClient.from_config(config)
    loggers = [logging.getLogger(name)
               for name in ("kazoo", "nodepool.zk.client")]
    levels = [logger.level for logger in loggers]
    if not (args.debug or args.logconfig):
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
    try:
        client.connect()
    except Exception:
        _quietly_disconnect(client)
        raise
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
    return client


def _quietly_disconnect(client) -> None:
    try:
        client.disconnect()
    except Exception:
        log.debug("Disconnecting from ZooKeeper failed", exc_info=True)


def run(args, lock_timeout: float = LOCK_TIMEOUT) -> int:
    if args.func is cmd_config_validate:
        return args.func(Context(args))
    from nodepool.config import load_config
    config = load_config(args.config, secure_path(args))
    client = connect(args, config)
    try:
        return args.func(Context(args, config, client,
                                 lock_timeout=lock_timeout))
    finally:
        _quietly_disconnect(client)


def main(argv=None, lock_timeout: float = LOCK_TIMEOUT):
    """Run one command; returns the exit status.  ``lock_timeout``: see
    :class:`Context`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 1
    try:
        setup_logging(args)
    except Exception as e:
        print("nodepool: error: bad logging config %s: %s"
              % (args.logconfig, e), file=sys.stderr)
        return 1
    try:
        return run(args, lock_timeout)
    except KeyboardInterrupt:
        print("nodepool: interrupted", file=sys.stderr)
        return 1
    except (CommandError, NodepoolError, KazooException, OSError) as e:
        if args.debug:
            log.exception("%s failed", args.command)
        message = str(e) or type(e).__name__
        print("nodepool: error: %s" % message, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
