"""The workdir contract on local paths and on gs:// (a local Cloud Storage server on 127.0.0.1:
train -> calibrate -> detect -> evaluate through the launchers, no mock of the file API)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from etils import epath

import gcs_emulator
from gengait_jax.configs import default
from gengait_jax.workdir import Workdir
from tfds_gait.errors import GaitDataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C3D = os.path.join(ROOT, "tfds_gait", "data", "embedded", "biomechzoo", "HC031A",
                   "Straight_HC031A06.c3d")
BUCKET = f"gs://{gcs_emulator.BUCKET}"


@pytest.fixture(scope="module")
def gcs():
    """The server, with this process's environment pointing gcsfs and tensorstore at it."""
    with gcs_emulator.serve() as env, pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        yield env


def _run(env: dict, *args: str) -> subprocess.CompletedProcess:
    """A launcher in a fresh process that talks to the server."""
    r = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu", **env), timeout=600)
    assert r.returncode == 0, f"{args[0]}: {r.stderr[-3000:]}"
    return r


@pytest.mark.parametrize("remote", [False, True])
def test_run_files_round_trip(remote, gcs, tmp_path):
    wd = Workdir(f"{BUCKET}/unit" if remote else tmp_path / "unit")
    assert wd.remote == remote
    with pytest.raises(GaitDataError, match="no such workdir"):
        wd.require()
    cfg = default.tiny()
    wd.write_config(cfg)
    wd.write_meta({"model_id": "m-1", "joint_names": ["LKnee"]})
    wd.write_arrays("oof.npz", residual=np.arange(6.0).reshape(2, 3))
    wd.require()
    assert wd.config().to_dict() == cfg.to_dict() and wd.meta()["model_id"] == "m-1"
    np.testing.assert_array_equal(wd.arrays("oof.npz")["residual"], np.arange(6.0).reshape(2, 3))
    with pytest.raises(GaitDataError, match="calibrate first"):
        wd.calibration()
    wd.write_calibration({"id": "cal-1", "joint_names": ["LKnee"], "model_id": "m-1"})
    assert wd.calibration()["id"] == "cal-1" and not wd.has_checkpoint()
    assert str(wd.fold(1).path).endswith("unit/folds/1")


def test_train_calibrate_detect_evaluate_on_gcs(gcs, embedded_data_dir, tmp_path):
    run = f"{BUCKET}/run"
    _run(gcs, "launch.train", "--config=gengait_jax/configs/default.py:tiny",
         f"--workdir={run}", "--config.total_steps=10", "--config.calibration.folds=2",
         f"--config.data.data_dir={embedded_data_dir}")
    wd = Workdir(run)
    assert wd.has_checkpoint() and wd.fold(1).has_checkpoint()
    cal = wd.calibration()
    assert cal["model_id"] == wd.meta()["model_id"] and cal["folds"]["k"] == 2
    r = _run(gcs, "launch.detect", f"--workdir={run}", "--calibrate")
    assert wd.calibration()["id"] == cal["id"] and cal["id"] in r.stdout + r.stderr
    r = _run(gcs, "launch.detect", f"--workdir={run}", f"--input={C3D}",
             f"--output={BUCKET}/detect")
    assert "flagged:" in r.stdout and f"{BUCKET}/detect/report.html" in r.stdout
    scores = json.loads(epath.Path(f"{BUCKET}/detect/scores.json").read_text())
    assert scores["calibration_id"] == cal["id"] and scores["n_strides"] >= 2
    assert epath.Path(f"{BUCKET}/detect/report.png").stat().length > 10_000
    _run(gcs, "launch.evaluate", f"--workdir={run}", f"--output={BUCKET}/eval",
         "--severities=1.0")
    ev = json.loads(epath.Path(f"{BUCKET}/eval/evaluation.json").read_text())
    assert ev["setting"]["split"] == "test" and ev["n_strides"] > 0
    assert not os.path.exists(os.path.join(ROOT, "gs:"))  # nothing landed on a local "gs:" path
