# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Entry point of ``nodepool-builder``."""

import sys

from nodepool.cmd import daemon_parser


def main(argv=None) -> int:
    daemon_parser("nodepool-builder",
                  "Build disk images and upload them to providers.",
                  "/var/run/nodepool/builder.pid").parse_args(argv)
    print("nodepool-builder: the builder is not implemented yet",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
