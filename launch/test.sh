#!/usr/bin/env bash
# Sets up the environment and runs the whole test suite (what CI runs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/launch/setup.sh"
cd "$root"
# Test files run side by side in up to 4 worker processes (GENGAIT_TEST_WORKERS=0: one process);
# a file's tests stay together, so its module fixtures are built once.
workers="${GENGAIT_TEST_WORKERS:-$(( $(nproc) < 4 ? $(nproc) : 4 ))}"
exec .venv/bin/python -m pytest -q tests -n "$workers" --dist loadfile --no-loadscope-reorder "$@"
