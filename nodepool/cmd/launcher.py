# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Entry point of ``nodepool-launcher``."""

import sys

from nodepool.cmd import daemon_parser, run_daemon


def main(argv=None) -> int:
    parser = daemon_parser(
        "nodepool-launcher", "Serve node requests from ZooKeeper.",
        "nodepool")
    parser.add_argument("--no-webapp", action="store_true",
                        help="do not start the HTTP status server")
    args = parser.parse_args(argv)

    def make():
        from nodepool.launcher.server import NodePoolLauncher
        from nodepool.stats import StatsReporter
        return NodePoolLauncher(args.config, args.secure,
                                stats=StatsReporter.from_environment(),
                                webapp=not args.no_webapp)
    return run_daemon(args, make)


if __name__ == "__main__":
    sys.exit(main())
