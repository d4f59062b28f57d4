#!/bin/bash
# One command for a working nodepool on this machine: installs what is
# missing (tools/install.sh), then runs tools/demo.py, which starts
# ZooKeeper, moto_server (as EC2), sshd (as a static host) and
# nodepool-launcher on loopback, shows the ready nodes and runs until
# Ctrl-C.  Extra arguments go to tools/demo.py (--check, --keep, --timeout).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
tools/install.sh --if-needed
exec .venv/bin/python tools/demo.py "$@"
