# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Entry point of ``nodepool-builder``."""

import sys

from nodepool.cmd import daemon_parser, run_daemon


def main(argv=None) -> int:
    parser = daemon_parser(
        "nodepool-builder",
        "Build disk images and upload them to providers.",
        "nodepool-builder")
    parser.add_argument("--build-workers", type=int, default=1,
                        help="number of build workers (default: "
                        "%(default)s)")
    parser.add_argument("--upload-workers", type=int, default=4,
                        help="number of upload workers (default: "
                        "%(default)s)")
    args = parser.parse_args(argv)
    if args.build_workers < 1:
        parser.error("--build-workers must be at least 1")
    if args.upload_workers < 1:
        parser.error("--upload-workers must be at least 1")

    def make():
        from nodepool.builder.server import NodePoolBuilder
        from nodepool.stats import StatsReporter
        return NodePoolBuilder(args.config, args.secure,
                               num_builders=args.build_workers,
                               num_uploaders=args.upload_workers,
                               stats=StatsReporter.from_environment())
    return run_daemon(args, make)


if __name__ == "__main__":
    sys.exit(main())
