#!/usr/bin/env bash
# The accelerator check: ONE script, under 8 minutes on one GPU. It
#   1. installs the Python packages of launch/gpu_packages.py that are missing: from PyPI with
#      requirements.txt's pins, or, where the machine has no network, every wheel of WHEELS (a
#      folder made by launch/gpu_wheels.sh; it goes ahead of the machine's own packages). Never
#      jax itself: the machine's CUDA/TPU build of jax is used as it is;
#   2. runs the tests that exercise sharding, the model and both passes on the real device;
#   3. runs launch.benchmark for `demo` (float32) and `paper` (bfloat16) (PRESETS), and the
#      `paper` train step's sharding report on every device (SHARDING);
#   4. writes OUT/gpu_check.json: device, jax version, per preset MFU (model FLOPs / step time /
#      the spec peak of the detected device), fraction of the same-run matmul peak, step time,
#      seq/s, memory, compile time, pass-1 throughput, and the test outcome.
#
#   bash launch/gpu_check.sh [OUT]            # default OUT=runs/gpu_check
#   PYTHON=python3 WHEELS=.whl bash launch/gpu_check.sh $OUT
#   PLATFORM=cpu QUICK=1 PRESETS="tiny demo" SHARDING=tiny PYTHON=.venv/bin/python \
#     XLA_FLAGS=--xla_force_host_platform_device_count=8 bash launch/gpu_check.sh /tmp/gc
#                                                # dry run of the script on a CPU
#
# BUILD_NOTES.md "Accelerators" says how to read the JSON.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${1:-runs/gpu_check}"
mkdir -p "$out"
py="${PYTHON:-python3}"
platform="${PLATFORM:-cuda}"
quick=(); [ -n "${QUICK:-}" ] && quick=(--quick)
presets="${PRESETS:-demo paper}"
sharding="${SHARDING:-paper}"
log() { echo "[gpu_check $(date +%H:%M:%S)] $*"; }
export JAX_PLATFORMS="$platform" XLA_FLAGS="${XLA_FLAGS:-}" PYTHONUNBUFFERED=1
start=$(date +%s)

log "1/4 packages ($py)"
missing_packages() {  # launch/gpu_packages.py's packages that do not import, pinned
  "$py" -m launch.gpu_packages
}
if [ -n "${WHEELS:-}" ]; then  # every wheel of the folder, ahead of the machine's packages
  log "installing the wheels of $WHEELS"
  "$py" -m pip install -q --no-index --no-deps --upgrade --target /tmp/gengait_site \
    "$WHEELS"/*.whl
  export PYTHONPATH="/tmp/gengait_site${PYTHONPATH:+:$PYTHONPATH}"
else
  missing="$(missing_packages)"
  if [ -n "$missing" ]; then
    log "installing: $missing"
    # shellcheck disable=SC2086  (one word per requirement)
    "$py" -m pip install -q $missing
  fi
fi
missing="$(missing_packages)"
if [ -n "$missing" ]; then
  echo "gpu_check: still missing after the install: $missing (launch/gpu_wheels.sh)" >&2
  exit 1
fi
"$py" -c "import jax; print('jax', jax.__version__, jax.devices())" | tee "$out/devices.txt"

log "2/4 tests on $platform"
# The tests check that two programs agree (to 1e-5, some bit for bit): full float32 products
# (a GPU's default for float32 is TF32) and, on a GPU, deterministic scatters and reductions.
test_env=(JAX_DEFAULT_MATMUL_PRECISION=highest)
if [ "$platform" = cuda ]; then
  test_env+=("XLA_FLAGS=$XLA_FLAGS --xla_gpu_deterministic_ops=true")
fi
set +e
env "${test_env[@]}" "$py" -m pytest -q -p no:cacheprovider tests/test_train.py \
  tests/test_model.py tests/test_scoring.py tests/test_twin.py tests/test_masking.py 2>&1 \
  | tee "$out/tests.log"
tests_rc=${PIPESTATUS[0]}
set -e

log "3/4 benchmarks"
for preset in $presets; do
  "$py" -m launch.benchmark --config="gengait_jax/configs/default.py:$preset" "${quick[@]}" \
    --notorch --nocache --output="$out/bench_$preset.json" 2>&1 | tail -n 25 | tee "$out/bench_$preset.txt"
done
"$py" -m launch.benchmark --config="gengait_jax/configs/default.py:$sharding" --sharding_only \
  --output="$out/sharding.json" 2>&1 | tail -n 60 | tee "$out/sharding.txt"

log "4/4 summary"
"$py" - "$out" "$tests_rc" "$start" $presets <<'EOF'
import json, os, sys, time
out, tests_rc, start, presets = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
summary = dict(tests_rc=tests_rc, wall_s=round(time.time() - start, 1), presets={})
for preset in presets:
    r = json.load(open(os.path.join(out, f"bench_{preset}.json")))
    t, s = r["train"], r["scoring"]
    summary.update(device_kind=r["device_kind"], backend=r["backend"], jax=r["jax"],
                   num_devices=r["num_devices"])
    summary["presets"][preset] = dict(
        mfu=t["mfu"], fraction_of_matmul_peak=t["fraction_of_peak"], step_s=t["step_s"],
        seq_per_s=t["seq_per_s"], batch_size=t["batch_size"], compile_s=t["compile_s"],
        peak_memory_gib=t["peak_memory_bytes"] / 2**30, matmul_peak_gflops=r["peak_gflops"],
        matmul_peak_gflops_bf16=r["peak_gflops_bf16"], pass1_strides_per_s=s["strides_per_s"],
        pass1_fraction_of_peak=s["fraction_of_peak"],
        pass1_fraction_of_peak_best_call=s["fraction_of_peak_best_call"],
        pass1_fraction_of_matmul_interleaved=s["fraction_of_matmul_interleaved"],
        pass1_other_plan=s["other_plan"],
        trial_latency_ms=s["trial_latency_ms"])
sh = json.load(open(os.path.join(out, "sharding.json")))
summary["sharding"] = {k: sh[k] for k in ("mesh", "batch_size", "dtype", "compile_s",
                                          "memory_per_device_bytes", "state_bytes_per_device")}
json.dump(summary, open(os.path.join(out, "gpu_check.json"), "w"), indent=2, default=float)
print(json.dumps(summary, indent=2, default=float))
EOF
log "done in $(( $(date +%s) - start )) s: $out/gpu_check.json"
