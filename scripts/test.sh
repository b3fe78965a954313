#!/usr/bin/env bash
# The whole test suite, from a fresh clone: formatting, lints, and every test in the
# workspace, with DynamoDB Local (the store tests) and a local Secrets Manager (moto's server,
# the secrets tests) installed (cached), started on free loopback ports, and stopped again at
# the end.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "template.yaml: sam validate --lint, cfn-lint, checkov"
# Installs SAM CLI, cfn-lint and checkov into .cache/ on first use; offline checks only.
scripts/check-template.sh

step "DynamoDB Local"
# A failed start ends the run here: the store tests must never run without their database.
started=$(scripts/dynamodb-local.sh start)
read -r endpoint pid <<<"$started"
secrets_pid=
stop_servers() {
    scripts/dynamodb-local.sh stop "$pid"
    [ -z "$secrets_pid" ] || scripts/secretsmanager-local.sh stop "$secrets_pid"
}
trap stop_servers EXIT
echo "DynamoDB Local at $endpoint (pid $pid)"
export WSBRIDGE_TEST_DYNAMODB_ENDPOINT=$endpoint

step "Secrets Manager (moto)"
# Likewise: the secrets tests must never run without it.
started=$(scripts/secretsmanager-local.sh start)
read -r secrets_endpoint secrets_pid <<<"$started"
echo "Secrets Manager at $secrets_endpoint (pid $secrets_pid)"
export WSBRIDGE_TEST_SECRETSMANAGER_ENDPOINT=$secrets_endpoint

step "cargo test --workspace"
log=$(mktemp)
set +e
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One total over every test binary (cargo prints one line per binary, doc-tests last).
summary=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed", p, f }' "$log")
rm -f "$log"
# The fuzz step needs neither server.
trap - EXIT
stop_servers

step "fuzz targets: a short run of each over its seeds (cargo fuzz, nightly)"
# Installs cargo-fuzz on first use; a crash or a broken invariant fails the test command.
fuzz_status=0
if [ "$#" -eq 0 ]; then
    scripts/fuzz.sh || fuzz_status=$?
else
    echo "not run: arguments select tests ($*); scripts/fuzz.sh runs them alone"
fi

# The client libraries, each against the real local gateway binary (built by its script).
clients_status=0
run_client_suite() {
    local name=$1
    shift
    step "$name"
    if [ "$selected" -eq 0 ]; then
        "$@" || clients_status=$?
    else
        echo "not run: arguments select tests; $1 runs it alone"
    fi
}
selected=$#
run_client_suite "JavaScript client (clients/js) and the demo in headless Chromium" \
    scripts/test-js.sh
run_client_suite "Python client (clients/python): ruff, mypy --strict, pytest against the gateway" \
    scripts/test-python.sh -q

printf '\n%s\n' "$summary"
for code in "$status" "$fuzz_status" "$clients_status"; do
    if [ "$code" -ne 0 ]; then
        exit "$code"
    fi
done
