# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Entry point of the ``nodepool`` command line tool.

Global options (``-c``, ``-s``, ``--debug``, ``-l``) come before the
subcommand.  Each subcommand is a function ``(ctx) -> exit status``
(those about nodes and requests in :mod:`nodepool.cmd.node_commands`,
those about images in :mod:`nodepool.cmd.image_commands`) registered in
:func:`build_parser`; ``ctx`` is a :class:`~nodepool.cmd.context.Context`
holding the parsed arguments and, for every command but
``config-validate``, the loaded config and the ZooKeeper stores (direct
reads, no caches).

Failures (config errors, no ZooKeeper, lock timeouts, unknown ids, lost
connections) print one line on stderr and exit with status 1; argparse
exits with status 2 on bad arguments.  No tracebacks unless ``--debug``.
"""

import argparse
import logging
import os
import sys

from kazoo.exceptions import KazooException

from nodepool.cmd.context import LOCK_TIMEOUT, CommandError, Context
from nodepool.cmd.image_commands import (
    cmd_alien_image_list, cmd_dib_image_delete, cmd_dib_image_list,
    cmd_export_image_data, cmd_image_build, cmd_image_delete,
    cmd_image_list, cmd_image_pause, cmd_image_status, cmd_image_unpause,
    cmd_import_image_data)
from nodepool.cmd.node_commands import (
    cmd_delete, cmd_erase, cmd_hold, cmd_info, cmd_list, cmd_request_list)
from nodepool.config import DEFAULT_CONFIG_PATH, DEFAULT_SECURE_PATH
from nodepool.exceptions import NodepoolError
from nodepool.version import __version__

log = logging.getLogger("nodepool.cmd")


def secure_path(args):
    """The secure file to use: ``-s`` if given, else the default if present.

    An explicitly given file must exist (the loader reports it otherwise).
    """
    if args.secure:
        return args.secure
    if os.path.exists(DEFAULT_SECURE_PATH):
        return DEFAULT_SECURE_PATH
    return None


def cmd_config_validate(ctx) -> int:
    """Validate the config file; 0 if valid, 1 otherwise."""
    from nodepool.cmd.config_validator import ConfigValidator
    args = ctx.args
    validator = ConfigValidator(args.config, secure_path(args))
    result = validator.validate()
    if result == 0:
        print("Configuration file %s is valid" % args.config)
    return result


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
    cmd = add("request-list", cmd_request_list, "list node requests")
    cmd.add_argument("--detail", action="store_true",
                     help="add why each waiting request waits (from the "
                     "launchers' pool records)")

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
QUIET_LOGGERS = ("kazoo", "nodepool.zk.registry", "nodepool.zk.client",
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
