#!/usr/bin/env bash
# Sets up the environment and runs the whole test suite (what CI runs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/launch/setup.sh"
cd "$root"
exec .venv/bin/python -m pytest -q tests "$@"
