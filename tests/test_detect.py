"""launch.detect end to end (.npz, real .c3d, marker-only .c3d) through the GenGait front door,
and its one-line errors on bad input."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import gait_synth as g
from gengait_jax import calibration, data as data_lib, inputs
from gengait_jax.gengait import GenGait
from tfds_gait.errors import GaitDataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMB = os.path.join(ROOT, "tfds_gait", "data", "embedded")
C3D = os.path.join(EMB, "biomechzoo", "HC031A", "Straight_HC031A06.c3d")
MARKERS_ONLY = os.path.join(EMB, "fukuchi2018", "WBDS19", "WBDS19walkT01.c3d")
SWING_DEFICIT = 25.0 * np.sin(np.pi * np.arange(30) / 30)  # deg over 30 % of the cycle


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A trained synthetic model's workdir with its calibration."""
    return str(g.write_workdir(tmp_path_factory.mktemp("wd") / "run"))


def _detect(*args: str) -> subprocess.CompletedProcess:
    """Runs the launcher in a fresh process (with the session's XLA cache, tests/conftest.py)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "launch.detect", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


def test_detect_npz_end_to_end(workdir, tmp_path):
    data = g.strides(3, 52)
    x = data["angles"]
    x[:, 55:85, g.NAMES.index("RKnee"), 0] -= SWING_DEFICIT  # right strides: its own cycle
    x[:, 10:80, g.NAMES.index("LAnkle")] = np.nan  # too little valid data: not scored
    np.savez(tmp_path / "trial.npz", angles=x, side=data["side"])
    r = _detect(f"--workdir={workdir}", f"--input={tmp_path / 'trial.npz'}",
                f"--output={tmp_path / 'out'}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.search(r"flagged: [^\n]*right knee", r.stdout), r.stdout
    assert "not scored" in r.stdout and "left ankle" in r.stdout
    assert r.stderr.count("\n") < 25  # the console stays short (library INFO lines off)
    s = json.loads((tmp_path / "out" / "scores.json").read_text())
    z = {n: v["z"] for n, v in s["joints"].items() if v["z"] is not None}
    assert "RKnee" in s["flagged"] and max(z, key=z.get) == "RKnee"  # flagged, and the top
    assert s["n_strides"] == 3 and s["not_scored"] == ["LAnkle"]
    assert s["model_id"] == "gengait-synth-test" and s["calibration_id"].startswith("cal-")
    assert s["threshold"]["strides"] == 3
    knee, ankle = s["joints"]["RKnee"], s["joints"]["LAnkle"]
    assert knee["name"] == "right knee" and knee["flagged"] and knee["z"] > s["threshold"]["z"]
    assert len(knee["per_stride"]) == 3 and set(knee["channels"]) == {"sagittal", "frontal",
                                                                       "transverse"}
    assert len(knee["phase_z"]) == g.T
    assert ankle["z"] is None and not ankle["flagged"]
    tw = np.load(tmp_path / "out" / "twin.npz")
    assert tw["twin"].shape == tw["input"].shape == tw["band"].shape == (3, g.T, g.J, g.C)
    assert list(tw["joint_names"]) == list(g.NAMES)
    assert os.path.getsize(tmp_path / "out" / "report.png") > 50_000
    assert (tmp_path / "out" / "twin.csv").read_text().count("\n") == 1 + 3 * g.T * g.J * g.C
    page = (tmp_path / "out" / "report.html").read_text()
    assert re.search(r"Flagged: [^<]*right knee", page)
    assert "<script" not in page and "http" not in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_report_html_renders_in_a_headless_browser(workdir, tmp_path):
    data = g.strides(3, 53)
    data["angles"][:, 55:85, g.NAMES.index("RKnee"), 0] -= SWING_DEFICIT
    res = GenGait.from_workdir(workdir).detect(
        g.as_strides(data))
    page = res.write(str(tmp_path / "out"))["html"]
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                        "--dump-dom", f"file://{page}"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout  # the page as the browser built it (parsed HTML + inline SVG)
    assert re.search(r"Flagged: [^<]*right knee", dom) and dom.count("<svg") >= 3
    assert "left knee" in dom  # every joint has its row


def test_front_door_restores_parameters_only_and_reads_real_c3d(workdir, tmp_path):
    gg = GenGait.from_workdir(workdir)
    assert not hasattr(gg.model, "opt") and gg.calibration["model_id"] == gg.meta["model_id"]
    for path in (C3D, MARKERS_ONLY):  # Plug-in-Gait outputs; Fukuchi's raw markers
        res = gg.detect(path)
        assert len(res.strides) >= 2 and set(res.strides.side.tolist()) <= {"L", "R"}
        paths = res.write(str(tmp_path / os.path.basename(path)))
        assert os.path.exists(paths["report"]) and os.path.exists(paths["html"])
    assert any("fukuchi_lower markers" in n for n in res.notes)


def _bad(tmp_path, name: str, **arrays) -> str:
    """Writes an .npz and returns its path."""
    path = str(tmp_path / f"{name}.npz")
    np.savez(path, **arrays)
    return path


def test_bad_inputs_are_one_line_errors(workdir, tmp_path):
    x = g.strides(2, 53)["angles"]
    gg = GenGait.from_workdir(workdir)
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
        "noside": (dict(angles=x), "no 'side' array"),  # silently wrong without: the layout
        "huge": (dict(angles=x * np.array([1e6, 1.0, 1.0]), side=np.array(["L", "R"])),
                 "not joint angles in degrees"),  # one channel off: the median spread is fine
    }
    for name, (arrays, msg) in cases.items():
        path = _bad(tmp_path, name, **arrays)
        with pytest.raises(GaitDataError, match=msg) as e:
            gg.detect(path)
        assert str(e.value).startswith(path) and "\n" not in str(e.value), name
    ok, notes = inputs.load(_bad(tmp_path, "t101", angles=np.concatenate([x, x[:, :1]], 1),
                                 side=np.array(["L", "R"])), gg.meta)
    assert ok.x.shape[1] == g.T and "dropped the last" in notes[0]
    spelled, _ = inputs.load(_bad(tmp_path, "spelled", angles=x, side=np.array(["left", "R "])),
                             gg.meta)
    assert spelled.side.tolist() == ["L", "R"]
    with pytest.raises(GaitDataError, match="'side' must hold 'L' or 'R'"):
        inputs.load(_bad(tmp_path, "sideless", angles=x, side=np.array(["L", "up"])), gg.meta)
    with pytest.raises(GaitDataError, match="'side' has 1 entries for 2 strides"):
        inputs.load(_bad(tmp_path, "short", angles=x, side=np.array(["L"])), gg.meta)
    for call in (gg.detect, gg.pass1):  # strides from the Python API need their sides too
        with pytest.raises(GaitDataError, match=r"^<strides>: 1 of 2 strides have no side"):
            call(data_lib.from_arrays(x, side=["L", ""], joint_names=gg.joint_names))


def test_angle_planes_out_of_order_are_refused(workdir):
    gg = GenGait.from_workdir(workdir)
    real, _ = inputs.load(C3D, gg.meta)  # the synthetic training data: the rule does not apply
    swapped = inputs.spread(real.x[..., [1, 0, 2]], real.valid)
    assert inputs.check_channel_order(C3D, swapped, gg.meta) is None
    x = np.where(real.valid[..., None], real.x, np.nan)
    meta = dict(gg.meta, stats=dict(mean=np.nanmean(x, (0, 1)).tolist(),  # trained on real walks
                                    std=np.nanstd(x, (0, 1)).tolist()))
    inputs.check_channel_order(C3D, inputs.spread(real.x, real.valid), meta)  # in order: passes
    for order, most in (([1, 0, 2], 2), ([2, 1, 0], 3), ([1, 2, 0], 3)):
        with pytest.raises(GaitDataError, match=rf"^{re.escape(C3D)}: the angle channels look "
                                                rf"out of order: .* channel {most}, not 1"):
            inputs.check_channel_order(C3D, inputs.spread(real.x[..., order], real.valid), meta)


def test_bad_input_and_missing_calibration_exit_non_zero_in_one_line(workdir, tmp_path):
    path = _bad(tmp_path, "rad", angles=np.deg2rad(g.strides(2, 54)["angles"]))
    r = _detect(f"--workdir={workdir}", f"--input={path}", f"--output={tmp_path / 'o'}")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and path in r.stderr
    nocal = str(tmp_path / "nocal")
    shutil.copytree(workdir, nocal, ignore=shutil.ignore_patterns("calibration.json"))
    with pytest.raises(GaitDataError, match="calibrate first"):
        GenGait.from_workdir(nocal)
    with pytest.raises(GaitDataError, match="no such workdir"):
        GenGait.from_workdir(str(tmp_path / "nope"))


def test_help_lists_the_launchers_own_flags_and_exits_zero():
    r = subprocess.run([sys.executable, "-m", "launch.detect", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--input" in r.stdout and "--calibrate" in r.stdout and "scores.json" in r.stdout


def test_a_two_stage_flag_must_survive_pass1_without_the_primary_joints(workdir):
    """A joint flagged only by its own threshold is kept when pass 1 with the family-wise
    flagged joint withheld still sees it (its deviation is in the data) and dropped when it
    does not (the deviation was only in the first residuals: a leak of the primary joint)."""
    gg = GenGait.from_workdir(workdir)
    gg.calibration = g.calibration_of(joint_alpha=0.05)
    d = g.strides(3, 91)
    clean = g.as_strides(d)
    knee, hip = g.NAMES.index("RKnee"), g.NAMES.index("RHip")
    swing = np.zeros(clean.x.shape[1])
    swing[60:90] = SWING_DEFICIT
    base = gg.pass1(clean).residual
    base[:, :, knee, 0] -= swing  # the primary: far above the family-wise threshold
    entry = calibration.size_entry(gg.calibration, 3)
    for amp in np.linspace(0.1, 1.5, 141):  # a hip deviation between its own and the family's
        res = base.copy()
        res[:, :, hip, 0] += amp * swing
        d = calibration.decide(res, clean.side, gg.calibration, clean.x)
        if d["joint_threshold"][hip] + 0.3 < d["z"][hip] < entry["threshold"]:
            break
    else:
        pytest.fail("no hip deviation between its own and the family-wise threshold")
    calls = []
    real = gg.pass1
    gg.pass1 = lambda s: calls.append(s.valid) or real(s)
    leak = gg.decide_residual(clean, res)  # the data hold no hip deviation
    assert leak.flagged.tolist() == [j == knee for j in range(len(g.NAMES))]
    assert not calls[0][:, :, knee].any() and calls[0][:, :, hip].all()  # knee withheld
    x = clean.x.copy()
    x[:, :, hip, 0] += 2.0 * amp * swing
    x[:, :, knee, 0] -= swing
    real_hip = gg.decide_residual(clean.replace(x=x), res)  # the data hold it: kept
    assert real_hip.flagged.tolist() == [j in (knee, hip) for j in range(len(g.NAMES))]
    gg.cfg.calibration.confirm = False
    assert gg.decide_residual(clean, res).flagged[hip]  # unconfirmed: the leak would stay
