# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Entry point of the ``nodepool`` command line tool.

Global options (``-c``, ``-s``, ``--debug``) come before the subcommand.
Each subcommand is a function ``(args) -> exit status`` registered in
:func:`build_parser` with ``set_defaults(func=...)``.
"""

import argparse
import logging
import os
import sys

from nodepool.config import DEFAULT_CONFIG_PATH, DEFAULT_SECURE_PATH


def secure_path(args):
    """The secure file to use: ``-s`` if given, else the default if present.

    An explicitly given file must exist (the loader reports it otherwise).
    """
    if args.secure:
        return args.secure
    if os.path.exists(DEFAULT_SECURE_PATH):
        return DEFAULT_SECURE_PATH
    return None


def cmd_config_validate(args) -> int:
    """Validate the config file; 0 if valid, 1 otherwise."""
    from nodepool.cmd.config_validator import ConfigValidator
    validator = ConfigValidator(args.config, secure_path(args))
    status = validator.validate()
    if status == 0:
        print("Configuration file %s is valid" % args.config)
    return status


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
    subparsers = parser.add_subparsers(dest="command", metavar="command")

    cmd = subparsers.add_parser(
        "config-validate", help="validate the config file",
        description="Validate the config file (and the secure file) the "
        "way the daemons load it.")
    cmd.set_defaults(func=cmd_config_validate)
    return parser


def setup_logging(args):
    if args.debug:
        logging.basicConfig(
            level=logging.DEBUG,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    else:
        logging.basicConfig(level=logging.INFO)
        logging.getLogger("kazoo").setLevel(logging.WARNING)
        logging.getLogger("nodepool.ComponentRegistry").setLevel(
            logging.WARNING)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 1
    setup_logging(args)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
