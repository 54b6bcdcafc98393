"""launch.detect end to end (.npz, real .c3d) and its one-line errors on bad input."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import gait_synth as g
from gengait_jax import calibration, detection

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C3D = os.path.join(ROOT, "tfds_gait/data/embedded/biomechzoo/HC031A/Straight_HC031A06.c3d")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A trained synthetic model's workdir, calibrated on 40 validation strides."""
    path = g.write_workdir(tmp_path_factory.mktemp("wd") / "run")
    calibration.calibrate_workdir(str(path), strides=g.strides(40, 51, dropout_every=4))
    return str(path)


def _detect(*args: str, cache: str = "") -> subprocess.CompletedProcess:
    """Runs the launcher in a fresh process (XLA cache in `cache`, else a throwaway one)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               GENGAIT_JAX_CACHE=cache or os.path.join(os.path.dirname(args[-1][9:]), "xla"))
    return subprocess.run([sys.executable, "-m", "launch.detect", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


def test_detect_npz_end_to_end(workdir, tmp_path):
    data = g.strides(3, 52)
    x = data["angles"]
    x[:, :, g.NAMES.index("RKnee"), 0] += 15.0
    x[:, 10:80, g.NAMES.index("LAnkle")] = np.nan  # too little valid data: not scored
    np.savez(tmp_path / "trial.npz", angles=x, side=data["side"])
    r = _detect(f"--workdir={workdir}", f"--input={tmp_path / 'trial.npz'}",
                f"--output={tmp_path / 'out'}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "flagged: right knee" in r.stdout and "not scored" in r.stdout and "left ankle" in r.stdout
    s = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert s["flagged"] == ["RKnee"] and s["n_strides"] == 3 and s["not_scored"] == ["LAnkle"]
    assert s["model_id"] == "gengait-synth-test" and s["calibration_id"].startswith("cal-")
    knee, ankle = s["joints"]["RKnee"], s["joints"]["LAnkle"]
    assert knee["name"] == "right knee" and knee["flagged"] and knee["score"] > 5
    assert len(knee["per_stride"]) == 3 and set(knee["channels"]) == {"sagittal", "frontal",
                                                                       "transverse"}
    assert ankle["score"] is None and ankle["z"] is None and not ankle["flagged"]
    tw = np.load(tmp_path / "out" / "twin.npz")
    assert tw["twin"].shape == tw["input"].shape == tw["band"].shape == (3, g.T, g.J, g.C)
    assert list(tw["joint_names"]) == list(g.NAMES)
    assert os.path.getsize(tmp_path / "out" / "report.png") > 50_000
    assert (tmp_path / "out" / "twin.csv").read_text().count("\n") == 1 + 3 * g.T * g.J * g.C


def test_detect_reads_a_real_c3d_trial(workdir, tmp_path):
    scores, paths = detection.run(workdir, C3D, str(tmp_path / "out"))
    assert scores["n_strides"] >= 2 and set(scores["sides"]) <= {"L", "R"}
    assert os.path.exists(paths["report"])


def _bad(tmp_path, name: str, **arrays) -> str:
    """Writes an .npz and returns its path."""
    path = str(tmp_path / f"{name}.npz")
    np.savez(path, **arrays)
    return path


def test_bad_inputs_are_one_line_errors(workdir, tmp_path):
    x = g.strides(2, 53)["angles"]
    cases = {
        "radians": (dict(angles=np.deg2rad(x)), "radians"),
        "joints": (dict(angles=x[:, :, :8]), "8 joints, but the model expects 10"),
        "names": (dict(angles=x, joint_names=np.array([f"j{i}" for i in range(10)])),
                  "joint set mismatch"),
        "dtype": (dict(angles=x.astype(str)), "dtype"),
        "shape": (dict(angles=x[0, :, :, 0]), "shape"),
        "short": (dict(angles=x[:, :12]), "too short"),
        "nan": (dict(angles=np.full_like(x, np.nan)), "no stride has any valid"),
        "valid": (dict(angles=x, valid=np.ones((2, 100), bool)), "'valid' has shape"),
        "other": (dict(strides=x), "no 'angles' array"),
    }
    for name, (arrays, msg) in cases.items():
        path = _bad(tmp_path, name, **arrays)
        with pytest.raises(detection.InputError, match=msg) as e:
            detection.run(workdir, path, str(tmp_path / "out"))
        assert str(e.value).startswith(path) and "\n" not in str(e.value), name
    ok = detection.load_input(_bad(tmp_path, "t101", angles=np.concatenate([x, x[:, :1]], 1)),
                              json.load(open(os.path.join(workdir, "model_meta.json"))))
    assert ok.angles.shape[1] == g.T and "dropped the last" in ok.notes[0]


def test_bad_input_and_missing_calibration_exit_non_zero_in_one_line(workdir, tmp_path):
    path = _bad(tmp_path, "rad", angles=np.deg2rad(g.strides(2, 54)["angles"]))
    r = _detect(f"--workdir={workdir}", f"--input={path}", f"--output={tmp_path / 'o'}")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and path in r.stderr
    nocal = str(tmp_path / "nocal")
    shutil.copytree(workdir, nocal, ignore=shutil.ignore_patterns(calibration.FILE))
    with pytest.raises(detection.InputError, match="calibrate first"):
        detection.run(nocal, path, str(tmp_path / "o"))
    with pytest.raises(detection.InputError, match="no such workdir"):
        detection.run(str(tmp_path / "nope"), path, str(tmp_path / "o"))
