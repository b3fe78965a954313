#!/usr/bin/env bash
# Offline checks of template.yaml: `sam validate --lint`, `cfn-lint` and `checkov`, each with
# its time. The tools are installed once into virtual environments under .cache/ (see
# scripts/python-tools.sh). Nothing here talks to AWS: the checks run with a fixed region,
# dummy credentials and telemetry off.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/python-tools.sh
source scripts/python-tools.sh

# Seconds since $1 (from `date +%s%N`), to a tenth.
since() {
  local tenths=$((($(date +%s%N) - $1) / 100000000))
  printf '%d.%d s' $((tenths / 10)) $((tenths % 10))
}

timed() {
  local name=$1 start status
  shift
  start=$(date +%s%N)
  set +e
  "$@"
  status=$?
  set -e
  if [ "$status" = 0 ]; then
    echo "$name: ok in $(since "$start")"
  else
    echo "$name: FAILED (exit $status) in $(since "$start")"
  fi
  return "$status"
}

start=$(date +%s%N)
sam=$(sam_venv)
checkov=$(checkov_venv)
echo "tools ready in $(since "$start")"

export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=offline \
  AWS_SECRET_ACCESS_KEY=offline SAM_CLI_TELEMETRY=0
unset AWS_SESSION_TOKEN AWS_PROFILE

failed=0
timed "sam validate --lint" "$sam/bin/sam" validate --lint --template template.yaml || failed=1
timed "cfn-lint" "$sam/bin/cfn-lint" template.yaml || failed=1
# --skip-download: no call to Prisma Cloud for guidelines (there is no network here, and the
# checks themselves ship with checkov).
timed "checkov" "$checkov/bin/checkov" -f template.yaml --framework cloudformation \
  --skip-download --compact --quiet || failed=1
exit "$failed"
