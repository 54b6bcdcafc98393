#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then data -> train -> calibrate -> evaluate ->
# detect + report under runs/demo (see README.md). Extra arguments go to launch.main.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/launch/setup.sh"
cd "$root"
exec .venv/bin/python -m launch.main --workdir=runs/demo "$@"
