# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Entry point of ``nodepool-builder``."""

import argparse
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="nodepool-builder",
        description="Run the nodepool builder daemon.")
    parser.add_argument("-c", dest="config",
                        default="/etc/nodepool/nodepool.yaml",
                        help="path to the config file")
    parser.add_argument("-s", dest="secure",
                        help="path to the secure file")
    parser.add_argument("-l", dest="logconfig",
                        help="path to the logging config file")
    parser.add_argument("-p", dest="pidfile",
                        default="/var/run/nodepool/builder.pid",
                        help="path to the pid file")
    parser.add_argument("-d", "-f", "--nodaemon", dest="nodaemon",
                        action="store_true", help="run in the foreground")
    return parser.parse_args(argv)


def main(argv=None):
    parse_args(argv)
    print("nodepool-builder: the daemon is not implemented yet", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
