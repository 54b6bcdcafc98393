r"""Throughput benchmark: matmul peak, train step, pass-1 scoring, PyTorch reference, input.

  python -m launch.benchmark --output=bench.json
  python -m launch.benchmark --output=bench.json --config=gengait_jax/configs/default.py:tiny \
      --quick
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m launch.benchmark \
      --config=gengait_jax/configs/default.py:paper --config.mesh_model=2 --sharding_only \
      --output=sharding.json

Prints a table and writes every figure to --output (JSON). --quick: under 2 minutes on 2 CPU
cores (shorter timing windows, a smaller scoring batch). The dataset of the
config is prepared in --config.data.data_dir first if needed. --sharding_only: compile (not
run) the train step on the devices at hand and print the mesh, compile time, memory per device
and the sharding of every parameter class (no dataset needed).
"""

import json
import sys

from absl import flags
from ml_collections import config_flags

from benchmarks import benchmarking
from gengait_jax import cli, configs

_CONFIG = config_flags.DEFINE_config_file(
    "config", configs.DEMO, "Preset file:name (gengait_jax/configs/default.py:tiny|demo|paper).",
    lock_config=True)
_OUTPUT = flags.DEFINE_string("output", None, "JSON file for the results.", required=True)
_QUICK = flags.DEFINE_bool("quick", False, "Short run (< 2 minutes on 2 CPU cores).")
_TORCH = flags.DEFINE_bool("torch", True, "Time the PyTorch reference (if torch is installed).")
_TORCH_COMPILE = flags.DEFINE_bool(
    "torch_compile", False, "Also try torch.compile for the reference (keeps the faster).")
_CACHE = flags.DEFINE_bool("cache", True, "Time detect latency with a cold/warm XLA cache.")
_PROFILE = flags.DEFINE_bool("profile", True, "Profile 5 train steps: time per op class.")
_SHARDING = flags.DEFINE_bool("sharding_only", False, "Only the train step's sharding report.")


def main() -> None:
    """Runs the benchmarks, prints the table, writes the JSON."""
    if _SHARDING.value:
        res = benchmarking.sharding_report(configs.validate(_CONFIG.value))
        print(benchmarking.sharding_table(res))
        with open(_OUTPUT.value, "w") as f:
            json.dump(res, f, indent=2, default=float)
        return
    res = benchmarking.run(_CONFIG.value, quick=_QUICK.value, torch_ref=_TORCH.value,
                           cache=_CACHE.value, torch_compile=_TORCH_COMPILE.value,
                           profile=_PROFILE.value)
    print(benchmarking.table(res))
    with open(_OUTPUT.value, "w") as f:
        json.dump(res, f, indent=2, default=float)
    print(f"wrote {_OUTPUT.value}", file=sys.stderr)


def run() -> None:
    """Console entry point (gengait-benchmark)."""
    cli.run(main)


if __name__ == "__main__":
    run()
