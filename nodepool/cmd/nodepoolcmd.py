# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Entry point of the ``nodepool`` command line tool."""

import argparse
import sys


def build_parser():
    parser = argparse.ArgumentParser(
        prog="nodepool", description="Inspect and manage a nodepool cluster.")
    parser.add_argument("-c", dest="config",
                        default="/etc/nodepool/nodepool.yaml",
                        help="path to the config file")
    parser.add_argument("-s", dest="secure",
                        help="path to the secure file")
    parser.add_argument("--debug", action="store_true",
                        help="show debug output")
    parser.add_subparsers(dest="command", metavar="command")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
