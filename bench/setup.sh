#!/usr/bin/env bash
# Set up the benchmark suite on a Debian machine (as root, or with sudo on PATH):
# the native tools (redis-benchmark drives the echo servers, wrk will drive HTTP,
# strace counts syscalls) and the peers for the interpreter given (default python3):
#
#   bash bench/setup.sh                      # CPython: pip install -e '.[bench]'
#   bash bench/setup.sh /tmp/pypybench/bin/python   # a PyPy venv: trio and curio
#
# (A PyPy run also runs uvloop's echo server under CPython: set up python3 as well.)
#
# Then: python3 -m bench   (or: /tmp/pypybench/bin/python -m bench)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${1:-python3}"

missing=()
command -v redis-benchmark >/dev/null || missing+=(redis-tools)
command -v wrk >/dev/null || missing+=(wrk)
command -v strace >/dev/null || missing+=(strace)
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}"
fi

# The bench extra's markers leave out uvloop and gevent on PyPy.
"$PYTHON" -m pip install -e '.[bench]'
