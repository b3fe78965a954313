#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/: cargo fuzz, libFuzzer, nightly) and runs each one a fixed,
# small number of executions over its committed seeds: the short run scripts/test.sh ends
# with. A crash or a broken invariant fails it; libFuzzer leaves the input in
# fuzz/artifacts/<target>/ and prints how to reproduce it.
#
#   scripts/fuzz.sh                 every target
#   scripts/fuzz.sh token gateway_events
#   FUZZ_RUNS=100000 scripts/fuzz.sh client_frame
#
# Long runs: README, "Fuzzing".
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

runs=${FUZZ_RUNS:-20000}
# The same flags as the long runs in the README, so that one build serves both: release with
# debug assertions (an overflow panics as in the tests), and no sanitizer (the fuzzed code is
# safe Rust, and AddressSanitizer halves the executions per second).
flags=(--release --debug-assertions --sanitizer none)

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "the fuzz targets need a nightly toolchain: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (once; about 5 minutes)"
    cargo install --locked cargo-fuzz
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

cargo +nightly fuzz build "${flags[@]}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in "${targets[@]}"; do
    # New inputs go to a scratch directory (libFuzzer writes to the first one it is given):
    # only the seeds are kept in the repository.
    scratch=$(mktemp -d)
    set +e
    cargo +nightly fuzz run "${flags[@]}" "$target" "$scratch" "fuzz/corpus/$target" -- \
        -runs="$runs" -max_total_time=120 >"$log" 2>&1
    status=$?
    set -e
    rm -rf "$scratch"
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$log"
        echo "fuzz target $target failed (exit $status): the input is in fuzz/artifacts/$target/" >&2
        exit "$status"
    fi
    # libFuzzer's last status line: executions, coverage, features, corpus, executions/s.
    printf '%-16s %s\n' "$target" "$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)"
done
echo "fuzz: ${#targets[@]} targets, up to $runs runs each, no crash"
