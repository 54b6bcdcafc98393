#!/usr/bin/env bash
# Wheels for launch/gpu_check.sh on an accelerator machine WITHOUT network: run it here (where
# pip reaches an index, with launch/setup.sh's .venv), carry the folder, pass it as WHEELS.
#
#   bash launch/gpu_wheels.sh [OUT] [HAVE]     # default OUT=.whl
#   PY_TARGET=3.12 bash launch/gpu_wheels.sh .whl have.txt
#
# It fetches, for the target's Python (PY_TARGET, default 3.12, manylinux x86-64), the packages
# of launch/gpu_packages.py and every dependency they need, at the versions of this machine's
# .venv (requirements.txt's pins), except what the target already has: HAVE, a file of the
# target's `python3 -m pip list --format=freeze` (or one name per line). A wheel comes from the
# index when it has one for the target, else it is built here from the source distribution
# (pure-Python packages only; a built wheel that is not pure is an error). Then, there:
#   WHEELS=.whl PYTHON=python3 bash launch/gpu_check.sh runs/gpu_check
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${1:-.whl}"
have="${2:-}"
py="${PYTHON:-$root/.venv/bin/python}"
target="${PY_TARGET:-3.12}"
mkdir -p "$out"
if [ -n "$have" ] && [ ! -f "$have" ]; then
  echo "gpu_wheels: HAVE file $have does not exist" >&2
  exit 2
fi

wanted="$("$py" - "$target" "$have" <<'EOF'
import importlib.metadata as md
import re
import sys

from packaging.requirements import Requirement

from launch.gpu_packages import PACKAGES


def norm(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


target, have_file = sys.argv[1], sys.argv[2]
have = set()
if have_file:
    have = {norm(re.split(r"[=<> @]", line.strip(), maxsplit=1)[0])
            for line in open(have_file) if line.strip() and not line.startswith("#")}
env = {"python_version": target, "python_full_version": target + ".0", "extra": "",
       "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
       "implementation_name": "cpython", "platform_python_implementation": "CPython",
       "os_name": "posix"}
todo = [dist for dist, _ in PACKAGES]
seen, wanted = set(), []
while todo:
    name = todo.pop()
    if norm(name) in seen or norm(name) in have:
        continue
    seen.add(norm(name))
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        sys.exit(f"gpu_wheels: {name} is not installed in {sys.prefix} (run launch/setup.sh)")
    wanted.append(f"{dist.metadata['Name']}=={dist.version}")
    for spec in dist.requires or []:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate(env):
            todo.append(req.name)
print("\n".join(sorted(wanted)))
EOF
)"

platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64 any; do
  platforms+=(--platform "$p")
done
n=0
for req in $wanted; do
  if "$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version "$target" --implementation cp "${platforms[@]}" -d "$out" "$req" \
      >/dev/null 2>&1; then
    echo "gpu_wheels: $req (wheel)"
  else
    "$py" -m pip wheel -q --disable-pip-version-check --no-deps -w "$out" "$req" >/dev/null
    name="${req%%==*}"
    built="$(ls "$out" | grep -i "^${name//-/_}-${req##*==}-" || true)"
    if ! echo "$built" | grep -q -- "-none-any.whl$"; then
      echo "gpu_wheels: $req has no wheel for Python $target and is not pure Python" >&2
      exit 1
    fi
    echo "gpu_wheels: $req (built here: $built)"
  fi
  n=$((n + 1))
done
echo "gpu_wheels: $n packages in $out ($(du -sh "$out" | cut -f1)); carry it and run there:"
echo "  WHEELS=$out PYTHON=python3 bash launch/gpu_check.sh runs/gpu_check"
