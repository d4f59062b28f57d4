#!/bin/bash
# Prepare this machine for nodepool's test suite and demo:
#   tools/test-setup.sh [start]   install missing system packages, make test
#                                 certificates and start a loopback ZooKeeper
#                                 (plain and TLS ports) recorded in .test-env/
#   tools/test-setup.sh stop      stop the ZooKeeper started by 'start'
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
action=${1:-start}
python=${PYTHON:-$top/.venv/bin/python}
[ -x "$python" ] || python=python3

if [ "$action" = stop ]; then
    exec "$python" -m tests.fixtures.zkserver stop .test-env
fi

need=()
[ -f /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}"
fi
# A root sshd refuses to start without its privilege separation directory.
[ "$(id -u)" != 0 ] || mkdir -p /run/sshd

mkdir -p .test-env
if "$python" -m tests.fixtures.zkserver status .test-env >/dev/null 2>&1; then
    echo "ZooKeeper already running (.test-env/server.json)"
else
    "$python" -m tests.fixtures.zkserver start .test-env
fi
