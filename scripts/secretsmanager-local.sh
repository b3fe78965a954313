#!/usr/bin/env bash
# Installs (once, cached) and starts a local Secrets Manager on a free loopback port: moto's
# server (PyPI package moto[server]), which answers the real SDK's Secrets Manager calls.
#
#   scripts/secretsmanager-local.sh start   prints "http://127.0.0.1:PORT PID" once it answers
#   scripts/secretsmanager-local.sh stop PID
#
# The cache lives in $WSBRIDGE_CACHE (default: .cache/ in the repository).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/python-tools.sh
source "$root/scripts/python-tools.sh"
cache=$python_tools_cache

fail() { echo "secretsmanager-local: $*" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local venv port pid log
  venv=$(moto_venv) || fail "cannot install moto[server] (pip)"
  port=$(free_port)
  mkdir -p "$cache"
  log=$cache/secretsmanager-local-$port.log
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 150); do
    if ! kill -0 "$pid" 2>/dev/null; then
      cat "$log" >&2
      fail "moto_server exited during start-up"
    fi
    if curl -s -o /dev/null "http://127.0.0.1:$port/moto-api/" 2>/dev/null; then
      echo "http://127.0.0.1:$port $pid"
      return 0
    fi
    sleep 0.2
  done
  kill "$pid" 2>/dev/null || true
  cat "$log" >&2
  fail "moto_server did not answer on port $port within 30 s"
}

case "${1:-}" in
  start) start ;;
  stop) [ -n "${2:-}" ] && kill "$2" 2>/dev/null || true ;;
  install) moto_venv ;;
  *) echo "usage: $0 start | stop PID | install" >&2; exit 2 ;;
esac
