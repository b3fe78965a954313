#!/usr/bin/env bash
# The JavaScript client's tests and the chat demo's browser test, from a fresh clone:
# installs what is missing (Chromium with apt-get, playwright-core with npm ci, cached in
# .cache/npm), builds wsbridge-local, runs the client's tests against the real binary, then
# the browser test, and ends with one line `js tests: N passed, M failed`.
#
#   scripts/test-js.sh            everything
#   CHROMIUM=/path/to/chromium    another Chromium binary (default /usr/bin/chromium)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

step() { printf '\n==> %s\n' "$*"; }
fail() {
    echo "scripts/test-js.sh: $*" >&2
    exit 1
}

step "tools"
command -v node >/dev/null || fail "node is required (Node.js 20.10 or later)"
command -v npm >/dev/null || fail "npm is required (it comes with Node.js)"
command -v cargo >/dev/null || fail "cargo is required (a Rust toolchain, 1.88 or later)"
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 10) ? 0 : 1)' ||
    fail "Node.js 20.10 or later is required, found $(node --version)"
# Node 22+ has a global WebSocket; Node 20 needs the flag.
node_flags=()
if ! node -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)'; then
    node_flags+=(--experimental-websocket)
fi
echo "node $(node --version) ${node_flags[*]}"

step "Chromium"
chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
    [ "$chromium" = /usr/bin/chromium ] || fail "CHROMIUM=$chromium is not an executable"
    command -v apt-get >/dev/null || fail "$chromium is missing and there is no apt-get to install it"
    sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update
    $sudo apt-get install -y chromium
    [ -x "$chromium" ] || fail "apt-get installed chromium, but $chromium is still missing"
fi
"$chromium" --version 2>/dev/null | head -n 1 || fail "$chromium does not run"
export CHROMIUM=$chromium

step "npm ci (clients/js: playwright-core, pinned by package-lock.json)"
npm ci --prefix clients/js --cache "$root/.cache/npm" --prefer-offline --no-audit --no-fund

step "cargo build -p wsbridge-local"
cargo build -p wsbridge-local --locked
export WSBRIDGE_LOCAL_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/wsbridge-local"
[ -x "$WSBRIDGE_LOCAL_BIN" ] || fail "$WSBRIDGE_LOCAL_BIN was not built"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
run() {
    step "$1"
    shift
    (cd clients/js && node "${node_flags[@]}" --test --test-reporter=spec "$@") 2>&1 | tee -a "$log" ||
        status=1
}
run "client tests (node --test, against the real gateway)" \
    test/client.test.mjs test/recovery.test.mjs test/resubscribe.test.mjs test/connection.test.mjs \
    test/unregistered.test.mjs
run "browser test (headless Chromium, the chat demo)" test/browser.test.mjs

summary=$(awk '/^ℹ pass / { p += $3 } /^ℹ fail / { f += $3 } END { printf "js tests: %d passed, %d failed", p, f }' "$log")
printf '\n%s\n' "$summary"
echo "screenshots: clients/js/test-output/browser/"
exit "$status"
