r"""Trains GenGait: prepares the TFDS dataset if needed, trains the model and its K fold models
(resuming) in --workdir, and writes the out-of-fold calibration.json at the end.

  python -m launch.train --config=gengait_jax/configs/default.py:demo --workdir=runs/demo
  python -m launch.train --config=gengait_jax/configs/default.py:tiny --workdir=/tmp/t \
      --config.total_steps=50

Ctrl-C saves a checkpoint and exits (status 130); the same command resumes from it.
"""

import os

from absl import flags, logging
from ml_collections import config_flags

from gengait_jax import cli, compilation_cache, configs

_CONFIG = config_flags.DEFINE_config_file(
    "config", configs.DEMO, "Preset file:name (gengait_jax/configs/default.py:tiny|demo|paper).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (local or gs://).",
                               required=True)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() (multi-host TPU/GPU slices; "
    "elsewhere set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).")


def main() -> None:
    """Prepares data, trains, calibrates, logs the final metrics."""
    import jax  # noqa: PLC0415  (JAX must start after jax.distributed.initialize)
    if _DISTRIBUTED.value:  # TPU VM, SLURM, Open MPI detect themselves; else env variables
        env = lambda k: int(os.environ[k]) if os.environ.get(k) else None
        jax.distributed.initialize(  # (jax itself reads JAX_COORDINATOR_ADDRESS)
            num_processes=env("JAX_NUM_PROCESSES"), process_id=env("JAX_PROCESS_ID"))
    from gengait_jax import train  # noqa: PLC0415  (after initialize, see above)
    compilation_cache.enable()  # the fold models and a restart reuse the compiled steps
    cfg = configs.validate(_CONFIG.value)
    train.prepare_data(cfg)
    final = train.train_calibrated(cfg, _WORKDIR.value)
    logging.info("final: %s", {k: round(v, 5) if isinstance(v, float) else v
                               for k, v in final.items()})


def run() -> None:
    """Console entry point (gengait-train)."""
    cli.run(main)


if __name__ == "__main__":
    run()
