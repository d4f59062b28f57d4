#!/bin/bash
# Run nodepool's test suite: installs what is missing, starts the loopback
# ZooKeeper (tools/test-setup.sh), then runs pytest on two workers.
# Extra arguments go to pytest, e.g. tools/run-tests.sh tests/unit -k cache
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
tools/install.sh --if-needed
tools/test-setup.sh
.venv/bin/flake8 nodepool tests tools
exec .venv/bin/pytest -n 2 -p no:cacheprovider "${@:-tests}"
