#!/usr/bin/env bash
# The Python client's checks, from a fresh machine: a virtual environment under the cache with
# clients/python installed editable with its test extras (reinstalled only when
# pyproject.toml changes), the local gateway built, `ruff` (format and lint), `mypy --strict`
# on the package and the README's FastAPI example, then pytest against the real gateway
# binary.
#
#   scripts/test-python.sh [pytest arguments]
#
# Needs python3 (3.9+) with venv and pip, and a Rust toolchain. The cache lives in
# $WSBRIDGE_CACHE (default: .cache/ in the repository).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${WSBRIDGE_CACHE:-$root/.cache}
venv=$cache/venv-python
package=$root/clients/python

fail() {
  echo "test-python: $*" >&2
  exit 1
}

command -v python3 >/dev/null || fail "python3 is required"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
  || fail "python3 is $(python3 -V 2>&1); the client needs 3.9 or newer"
command -v cargo >/dev/null || fail "cargo is required (the tests run the local gateway)"

# Reinstall when the package's metadata (dependencies, extras) changes; its code is
# installed editable, so edits need nothing.
stamp=$venv/wsbridge-client.stamp
wanted=$(sha256sum "$package/pyproject.toml" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "test-python: installing clients/python[test] into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" \
    || fail "python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -e "$package[test]" \
    || fail "pip install -e clients/python[test] failed"
  echo "$wanted" >"$stamp"
fi

echo "test-python: building wsbridge-local" >&2
(cd "$root" && cargo build -p wsbridge-local --locked) || fail "cargo build -p wsbridge-local failed"
target_dir=$(cd "$root" && cargo metadata --format-version 1 --no-deps \
  | "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export WSBRIDGE_LOCAL_BIN=$target_dir/debug/wsbridge-local
[ -x "$WSBRIDGE_LOCAL_BIN" ] || fail "$WSBRIDGE_LOCAL_BIN was not built"

cd "$package"
echo "test-python: ruff" >&2
"$venv/bin/ruff" format --check . || fail "ruff format found unformatted files (run: ruff format clients/python)"
"$venv/bin/ruff" check . || fail "ruff check found problems"
# The package is checked as the oldest Python it supports; the example, which uses FastAPI
# and pydantic (newer Pythons only in their latest releases), as the Python running here.
echo "test-python: mypy --strict" >&2
"$venv/bin/mypy" --strict --cache-dir "$cache/mypy-python" src \
  || fail "mypy --strict found errors in the package"
"$venv/bin/mypy" --strict --cache-dir "$cache/mypy-python" \
  --python-version "$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
  examples || fail "mypy --strict found errors in the example"

echo "test-python: pytest" >&2
"$venv/bin/python" -m pytest "$@"
