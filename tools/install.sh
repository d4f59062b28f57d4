#!/bin/bash
# Install everything nodepool and its test suite need on a Debian machine:
# system packages (ZooKeeper, OpenSSH server, openssl) and a virtualenv in
# .venv with nodepool installed in development mode.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

# --if-needed: do nothing when everything is in place and the virtualenv
# is newer than the files that say what goes into it.
stamp=.venv/.installed
if [ "${1:-}" = "--if-needed" ] && [ -f "$stamp" ] \
        && [ -f /usr/share/java/zookeeper.jar ] && [ -x /usr/sbin/sshd ] \
        && [ ! requirements.txt -nt "$stamp" ] \
        && [ ! test-requirements.txt -nt "$stamp" ] \
        && [ ! setup.cfg -nt "$stamp" ]; then
    exit 0
fi

packages=(zookeeper openssh-server openssl)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -r requirements.txt -r test-requirements.txt
.venv/bin/pip install -q --no-deps -e .
touch "$stamp"
