#!/usr/bin/env bash
# `sam build` for x86_64, as a deployment would run it, and a check of what it produced:
# the four functions' `bootstrap` executables. CI runs this after scripts/test.sh.
#
# SAM CLI, cargo-lambda and zig (the ziglang package) are installed once into .cache/venv
# (see scripts/python-tools.sh). The build is a release build (LTO): minutes on 2 cores.
# x86_64 only: an arm64 build needs `rustup target add aarch64-unknown-linux-gnu`, which
# a machine without access to the Rust toolchain servers cannot fetch.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/python-tools.sh
source scripts/python-tools.sh

fail() { echo "sam-build: $*" >&2; exit 1; }
since() {
  local tenths=$((($(date +%s%N) - $1) / 100000000))
  printf '%d.%d s' $((tenths / 10)) $((tenths % 10))
}

command -v cargo >/dev/null || fail "cargo is required (rustup.rs)"
start=$(date +%s%N)
venv=$(sam_venv)
echo "tools ready in $(since "$start")"

# SAM CLI finds cargo, cargo-lambda and zig on PATH. Nothing here talks to AWS.
export PATH="$venv/bin:$PATH" SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 \
  AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=offline AWS_SECRET_ACCESS_KEY=offline
unset AWS_SESSION_TOKEN AWS_PROFILE

functions=(ConnectFunction DisconnectFunction DefaultFunction BroadcastFunction)
for function in "${functions[@]}"; do
  rm -f ".aws-sam/build/$function/bootstrap"
done

start=$(date +%s%N)
sam build --parameter-overrides Architecture=x86_64 "$@"
echo "sam build: done in $(since "$start")"

# Each function must be a Linux x86-64 executable that runs on provided.al2023, whose glibc
# is 2.34: a binary needing a newer symbol version fails there at start-up, not here.
"$venv/bin/python" - "${functions[@]}" <<'PY'
import re, sys
failed = False
for function in sys.argv[1:]:
    path = f".aws-sam/build/{function}/bootstrap"
    try:
        data = open(path, "rb").read()
    except OSError as e:
        print(f"sam-build: {function}: no bootstrap ({e})", file=sys.stderr)
        failed = True
        continue
    # ELF, 64-bit, little-endian; e_machine (offset 18) 62 = x86-64.
    if data[:4] != b"\x7fELF" or data[4] != 2 or int.from_bytes(data[18:20], "little") != 62:
        print(f"sam-build: {function}: {path} is not an x86-64 ELF executable", file=sys.stderr)
        failed = True
        continue
    versions = {tuple(map(int, v.split(b"."))) for v in re.findall(rb"GLIBC_(\d+\.\d+(?:\.\d+)?)", data)}
    newest = max(versions, default=(0,))
    if newest > (2, 34):
        print(f"sam-build: {function}: needs glibc {'.'.join(map(str, newest))}, provided.al2023 has 2.34",
              file=sys.stderr)
        failed = True
        continue
    print(f"{function}: {path}, {len(data) / 1e6:.1f} MB, x86-64, glibc >= {'.'.join(map(str, newest))}")
sys.exit(1 if failed else 0)
PY
