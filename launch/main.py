r"""The main job end to end on the embedded cohort (README's first command).

  python -m launch.main --workdir=runs/demo [--config=gengait_jax/configs/default.py:demo]

Builds the dataset, trains the model and its K fold models (resuming if the workdir has
checkpoints), writes the out-of-fold calibration, evaluates against the clinical baselines,
runs detect on a held-out trial with a simulated stiff knee, and prints the evaluation table
and the detect summary. Bad input: one line, exit 1.
"""

from absl import flags
from ml_collections import config_flags

from gengait_jax import cli, compilation_cache, configs, pipeline

_CONFIG = config_flags.DEFINE_config_file(
    "config", configs.DEMO, "Preset file:name (gengait_jax/configs/default.py:tiny|demo|paper).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where everything is written.")


def main() -> None:
    """Runs the main job."""
    compilation_cache.enable()
    pipeline.run(_CONFIG.value, _WORKDIR.value)


def run() -> None:
    """Console entry point."""
    cli.run(main)


if __name__ == "__main__":
    run()
