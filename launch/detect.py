r"""Detects abnormal joints in a gait trial and writes the normative twin and a report.

  python -m launch.detect --workdir=runs/demo --input=trial.c3d --output=out/
  python -m launch.detect --workdir=runs/demo --input=strides.npz --output=out/
  python -m launch.detect --workdir=runs/demo --calibrate   # (re)fit calibration.json

Input: a Plug-in-Gait .c3d trial, or an .npz with `angles` [N, T, J, 3] in degrees (optional
`valid` [N, T, J], `side` [N], `joint_names` [J]). Writes OUT/scores.json, OUT/twin.npz,
OUT/twin.csv and OUT/report.png, and prints a short summary. Bad input: one line, exit 1.
"""

import sys

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (checkpoint + calibration).",
                               required=True)
_INPUT = flags.DEFINE_string("input", None, "A .c3d trial or an .npz of strides.")
_OUTPUT = flags.DEFINE_string("output", None, "Output folder (default: next to the input).")
_KEEP = flags.DEFINE_bool("keep_observed", True,
                          "Twin keeps the observed values of unflagged joints.")
_SAMPLES = flags.DEFINE_integer("num_samples", 8, "Random-context reconstructions (band).")
_CALIBRATE = flags.DEFINE_bool("calibrate", False,
                               "Fit WORKDIR/calibration.json on the validation split first.")
_ALPHA = flags.DEFINE_float("alpha", 0.05, "False-flag rate of --calibrate.")


def main(argv) -> None:
    """Runs detection (and optionally calibration); errors end in one line, exit 1."""
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
    from gengait_jax import calibration, compilation_cache, detection
    compilation_cache.enable()  # a new trial of the same size does not recompile
    try:
        if _CALIBRATE.value:
            cal = calibration.calibrate_workdir(_WORKDIR.value, alpha=_ALPHA.value)
            print(f"calibration {cal['id']}: {cal['n_strides']} validation strides, "
                  f"z threshold {next(iter(cal['z_threshold'].values())):.2f} "
                  f"({cal['threshold_method']})")
        if _INPUT.value is None:
            if not _CALIBRATE.value:
                raise detection.InputError("--input", "missing: give a .c3d or .npz file")
            return
        out = _OUTPUT.value or _INPUT.value.rsplit(".", 1)[0] + "_gengait"
        scores, paths = detection.run(_WORKDIR.value, _INPUT.value, out,
                                      keep_observed=_KEEP.value, num_samples=_SAMPLES.value)
    except (ValueError, FileNotFoundError, KeyError, OSError) as e:
        logging.vlog(1, "traceback", exc_info=True)  # --verbosity=1 shows it
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(1)
    print(detection.summary(scores))
    print(f"  wrote {paths['scores']}, {paths['twin_npz']}, {paths['twin_csv']}, "
          f"{paths['report']}")


if __name__ == "__main__":
    app.run(main)
