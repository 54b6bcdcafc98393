r"""The main job end to end on the embedded cohort (README's first command).

  python -m launch.main --workdir=runs/demo [--config=gengait_jax/configs/default.py:demo]

Builds the dataset, trains (resuming if the workdir has checkpoints), calibrates, evaluates
against the clinical baselines, runs detect on a held-out trial with a simulated abnormality,
and prints the evaluation table and where the report is.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from tfds_gait.errors import GaitDataError

_CONFIG = config_flags.DEFINE_config_file(
    "config", "gengait_jax/configs/default.py:demo", "Preset file:name.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where everything is written.")


def main(argv) -> None:
    """Runs the main job; bad input ends with one line, not a traceback."""
    del argv
    from gengait_jax import compilation_cache, main_job
    compilation_cache.enable()
    try:
        main_job.run(_CONFIG.value, _WORKDIR.value)
    except (GaitDataError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
