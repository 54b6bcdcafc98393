r"""Detects abnormal joints in a gait trial and writes the normative twin and a report.

  python -m launch.detect --workdir=runs/demo --input=trial.c3d --output=out/
  python -m launch.detect --workdir=runs/demo --input=strides.npz --output=out/
  python -m launch.detect --workdir=runs/demo --calibrate   # (re)fit calibration.json
  python -m launch.detect --workdir=runs/demo --calibrate --normals=our_lab/  # + our healthy

Input: a .c3d trial (Plug-in-Gait outputs, or the markers of a known marker set; a static
trial next to it calibrates the marker model), or an .npz with `angles` [N, T, J, 3] in degrees
(optional `valid` [N, T, J], `side` [N], `joint_names` [J]). Writes OUT/scores.json,
OUT/twin.npz, OUT/twin.csv, OUT/report.png and OUT/report.html, and prints a short summary.
Bad input: one line, exit 1.
"""

from absl import flags

from gengait_jax import calibrate, cli, compilation_cache
from gengait_jax.gengait import GenGait
from tfds_gait.errors import GaitDataError

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (checkpoint + calibration).",
                               required=True)
_INPUT = flags.DEFINE_string("input", None, "A .c3d trial or an .npz of strides.")
_OUTPUT = flags.DEFINE_string("output", None, "Output folder (default: next to the input).")
_STATIC = flags.DEFINE_string("static", "auto", "Static trial of a marker C3D ('auto': the "
                              "one in the input's folder; 'none': no static calibration).")
_KEEP = flags.DEFINE_bool("keep_observed", True,
                          "Twin keeps the observed values of what it does not withhold.")
_SAMPLES = flags.DEFINE_integer("num_samples", None, "Random-context reconstructions (band); "
                                "default: the model config's twin.num_samples.")
_CALIBRATE = flags.DEFINE_bool("calibrate", False, "Refit WORKDIR/calibration.json from the "
                               "fold models' out-of-fold residuals first.")
_ALPHA = flags.DEFINE_float("alpha", None, "False-flag rate of --calibrate (default: config).")
_NORMALS = flags.DEFINE_string("normals", None, "With --calibrate: a folder of this lab's "
                               "healthy trials (one sub-folder per person) that the "
                               "calibration adds to its normative people.")


def main() -> None:
    """Runs (re)calibration and/or detection."""
    compilation_cache.enable()  # a new trial of the same size does not recompile
    static = None if _STATIC.value.lower() == "none" else _STATIC.value
    if _NORMALS.value is not None and not _CALIBRATE.value:
        raise GaitDataError("--normals", "only with --calibrate (it recalibrates the model)")
    if _CALIBRATE.value:
        cal = calibrate.calibrate_workdir(_WORKDIR.value, alpha=_ALPHA.value,
                                          normals=_NORMALS.value, static=static)
        lab = cal.get("normals")
        extra = (f" (with {lab['n_strides']} of {len(lab['subjects'])} people from "
                 f"{lab['folder']})") if lab else ""
        print(f"calibration {cal['id']}: {cal['n_strides']} out-of-sample strides of "
              f"{cal['n_subjects']} subjects{extra}, one-stride threshold z > "
              f"{cal['sizes'][0]['threshold']:.2f}")
    if _INPUT.value is None:
        if not _CALIBRATE.value:
            raise GaitDataError("--input", "missing: give a .c3d or .npz file")
        return
    result = GenGait.from_workdir(_WORKDIR.value).detect(
        _INPUT.value, keep_observed=_KEEP.value, num_samples=_SAMPLES.value, static=static)
    out = _OUTPUT.value or _INPUT.value.rsplit(".", 1)[0] + "_gengait"
    paths = result.write(out)
    print(result.summary())
    print(f"  wrote {', '.join(paths.values())}")


def run() -> None:
    """Console entry point (gengait-detect)."""
    cli.run(main)


if __name__ == "__main__":
    run()
