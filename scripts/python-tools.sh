#!/usr/bin/env bash
# Python command-line tools for the template checks and the SAM build, installed once into
# virtual environments under the cache and reused while their pinned versions stay the same.
#
#   source scripts/python-tools.sh
#   sam_venv        prints the venv with aws-sam-cli, cfn-lint, cargo-lambda and ziglang
#   checkov_venv    prints the venv with checkov
#   moto_venv       prints the venv with moto's server (a local Secrets Manager for the tests)
#
# checkov gets a venv of its own: it pins boto3 to a version aws-sam-cli's own pin excludes,
# so pip cannot put the two in one environment.
# The cache lives in $WSBRIDGE_CACHE (default: .cache/ in the repository).

python_tools_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python_tools_cache=${WSBRIDGE_CACHE:-$python_tools_root/.cache}

SAM_TOOLS=(aws-sam-cli==1.170.0 cfn-lint==1.58.0 cargo-lambda==1.9.2 ziglang==0.17.1)
CHECKOV_TOOLS=(checkov==3.3.30)
MOTO_TOOLS=("moto[server]==5.2.5")

# ensure_venv DIR PACKAGE...: creates DIR and installs the packages unless DIR already holds
# exactly this list (recorded in DIR/wsbridge-requirements.txt after a complete install).
ensure_venv() {
  local dir=$1
  shift
  local wanted stamp=$dir/wsbridge-requirements.txt
  wanted=$(printf '%s\n' "$@")
  if [ -x "$dir/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
    return 0
  fi
  command -v python3 >/dev/null || { echo "python-tools: python3 is required" >&2; return 1; }
  echo "python-tools: installing $* into $dir" >&2
  rm -rf "$dir"
  python3 -m venv "$dir" >&2 \
    || { echo "python-tools: python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)" >&2; return 1; }
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@" >&2 \
    || { echo "python-tools: pip install $* failed" >&2; return 1; }
  printf '%s\n' "$wanted" >"$stamp"
}

sam_venv() {
  local dir=$python_tools_cache/venv
  ensure_venv "$dir" "${SAM_TOOLS[@]}" || return 1
  # cargo-lambda links with zig; ziglang ships it as a Python module, so give it a `zig` on
  # PATH (SAM CLI runs cargo-lambda from its own process, which only searches PATH).
  if [ ! -x "$dir/bin/zig" ]; then
    printf '#!/bin/sh\nexec "%s" -m ziglang "$@"\n' "$dir/bin/python" >"$dir/bin/zig"
    chmod +x "$dir/bin/zig"
  fi
  echo "$dir"
}

checkov_venv() {
  local dir=$python_tools_cache/venv-checkov
  ensure_venv "$dir" "${CHECKOV_TOOLS[@]}" || return 1
  echo "$dir"
}

moto_venv() {
  local dir=$python_tools_cache/venv-moto
  ensure_venv "$dir" "${MOTO_TOOLS[@]}" || return 1
  echo "$dir"
}
