#!/usr/bin/env bash
# Plots a soak's samples: RSS, deliveries per second and open connections over time.
#
#   bench/plot-soak.sh bench/results/soak.json bench/results/soak.png
#
# matplotlib (pinned) is installed once into a virtual environment under the cache, as the
# template tools are (scripts/python-tools.sh); it ships its own fonts, so nothing else is
# needed on the machine but python3 with venv.
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 RESULTS.json OUT.png" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../scripts/python-tools.sh
source "$here/../scripts/python-tools.sh"

PLOT_TOOLS=(matplotlib==3.11.2)
venv=$python_tools_cache/venv-plot
ensure_venv "$venv" "${PLOT_TOOLS[@]}"
MPLBACKEND=Agg MPLCONFIGDIR="$venv/mplconfig" "$venv/bin/python" "$here/plot_soak.py" "$1" "$2"
