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
trap 'scripts/dynamodb-local.sh stop "$pid"; [ -z "$secrets_pid" ] || scripts/secretsmanager-local.sh stop "$secrets_pid"' EXIT
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
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
