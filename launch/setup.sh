#!/usr/bin/env bash
# Creates .venv (once) and installs the pinned requirements into it. Sourced by the other scripts.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -x "$root/.venv/bin/python" ]; then
  python3 -m venv "$root/.venv"
fi
stamp="$root/.venv/.requirements.sha"
want="$(sha256sum "$root/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$root/.venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/requirements.txt"
  echo "$want" > "$stamp"
fi
