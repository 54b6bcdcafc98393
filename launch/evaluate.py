r"""Evaluates a trained GenGait model against clinical baselines on simulated abnormalities.

  python -m launch.evaluate --workdir=runs/demo --output=runs/demo/evaluation
  python -m launch.evaluate --workdir=runs/demo --output=OUT --compare_workdir=runs/loco
  python -m launch.evaluate --workdir=runs/demo --output=OUT --bilateral

Writes OUT/evaluation.json, OUT/evaluation.md (one table per abnormality) and PNG plots, then
prints the summary table. --compare_workdir adds a second setting (e.g. a leave-one-cohort-out
model, or the synthetic cohort). --bilateral perturbs both sides of every recording.
"""

from absl import flags

from gengait_jax import cli, compilation_cache, evaluation, evaluation_report

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (model + calibration).",
                               required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Output folder (default: WORKDIR/evaluation).")
_SPLIT = flags.DEFINE_string("split", "test", "Held-out split the abnormalities are added to.")
_DATA_NAME = flags.DEFINE_string("data_name", None, "TFDS name (default: the model's config).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: the model's config).")
_SEVERITIES = flags.DEFINE_list("severities", ["0.5", "1.0"], "Simulator severities.")
_SEED = flags.DEFINE_integer("seed", 0, "Simulator / chance seed.")
_COMPARE = flags.DEFINE_string("compare_workdir", None, "Optional second setting to report.")
_BILATERAL = flags.DEFINE_bool("bilateral", False, "Every abnormality on both sides of each "
                               "recording (a bilateral patient) instead of one side.")


def main() -> None:
    """Runs the evaluation, writes json/markdown/plots, prints the summary table."""
    compilation_cache.enable()
    out = _OUTPUT.value or f"{_WORKDIR.value}/evaluation"
    kw = dict(split=_SPLIT.value, severities=tuple(float(s) for s in _SEVERITIES.value),
              seed=_SEED.value, bilateral=_BILATERAL.value)
    ev = evaluation.evaluate(_WORKDIR.value, data_name=_DATA_NAME.value,
                             data_dir=_DATA_DIR.value, **kw)
    if _COMPARE.value:
        ev["other_settings"] = [evaluation.evaluate(_COMPARE.value, **kw)]
    paths = evaluation.write_outputs(ev, out)
    print(evaluation_report.summary_table(ev))
    if _COMPARE.value:
        print("\n" + evaluation_report.compare_table(ev))
    print(f"\nreport: {paths['markdown']}  json: {paths['json']}  plots: {paths['plots']}")


def run() -> None:
    """Console entry point (gengait-evaluate)."""
    cli.run(main)


if __name__ == "__main__":
    run()
