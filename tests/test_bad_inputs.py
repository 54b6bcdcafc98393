"""Bad inputs (BUILD_NOTES "Reliability" table): one-line errors or documented graceful behaviour.

Row ids (R reader, S segmenter, B builder, D launch.detect, T launch.train) match the table.
Bad files are made in tmp_path from a shipped trial with ezc3d (or by editing its bytes); CLI
rows run the launcher in a subprocess (all of them at once, in a module fixture) and assert:
exit code != 0, no 'Traceback', and the last stderr line names the file and the problem.
"""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from concurrent import futures

import ezc3d
import numpy as np
import pytest

import gait_synth as g
from tfds_gait import c3d, gait_cycles, strides
from tfds_gait.errors import GaitDataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMB = os.path.join(ROOT, "tfds_gait", "data", "embedded")
STRAIGHT = os.path.join(EMB, "biomechzoo", "HC036A", "Straight_HC036A10.c3d")  # 208 frames, 3 strides
TINY = "gengait_jax/configs/default.py:tiny"


def _rewrite(dst, edit) -> str:
    """A copy of STRAIGHT written by ezc3d after `edit(c)`."""
    c = ezc3d.c3d(STRAIGHT)
    edit(c)
    c.write(str(dst))
    return str(dst)


def _label(c, name: str) -> int:
    return list(c["parameters"]["POINT"]["LABELS"]["value"]).index(name)


def _frames(n: int):
    """Keeps the first n frames (points and their residuals/masks)."""
    def edit(c):
        c["data"]["points"] = np.ascontiguousarray(c["data"]["points"][:, :, :n])
        for k, v in c["data"].get("meta_points", {}).items():
            c["data"]["meta_points"][k] = np.ascontiguousarray(v[..., :n])
    return edit


def _events(edit_times=None, repeat: int = 1):
    """Repeats the event list (duplicates) and/or edits its [2, E] (minutes, seconds) times."""
    def edit(c):
        ev = c["parameters"]["EVENT"]
        for k in ("LABELS", "CONTEXTS"):
            ev[k]["value"] = list(ev[k]["value"]) * repeat
        t = np.tile(np.asarray(ev["TIMES"]["value"], np.float64), (1, repeat))
        ev["TIMES"]["value"] = edit_times(t) if edit_times else t
        ev["USED"]["value"] = [t.shape[1]]
    return edit


def _no_markers(c):
    """Renames every marker (angles kept), so nothing can detect events."""
    labels = list(c["parameters"]["POINT"]["LABELS"]["value"])
    c["parameters"]["POINT"]["LABELS"]["value"] = [s if "Angle" in s else f"x{s}" for s in labels]


def _bytes(dst, edit) -> str:
    """A copy of STRAIGHT with its raw bytes edited."""
    raw = bytearray(open(STRAIGHT, "rb").read())
    with open(dst, "wb") as f:
        f.write(edit(raw))
    return str(dst)


def _set_frames_param(raw: bytearray, n: int, header: bool) -> bytearray:
    """POINT:FRAMES (int16) = n, and the header's last frame too when `header`."""
    i = raw.find(b"FRAMES") + len(b"FRAMES") + 4  # offset (2), type (1), ndims (1)
    assert raw[i:i + 2] == struct.pack("<h", 208)
    raw[i:i + 2] = struct.pack("<h", n)
    if header:
        first = struct.unpack("<H", raw[6:8])[0]
        raw[8:10] = struct.pack("<H", first + n - 1)
    return raw


def _nan_frames(c):
    c["data"]["points"][:3, :, 60:90] = 0.0  # a 0.3 s Vicon gap in every point


def _nan_joint(c):
    c["data"]["points"][:3, _label(c, "LAnkleAngles")] = 0.0


def _missing_label(c):
    labels = list(c["parameters"]["POINT"]["LABELS"]["value"])
    labels[labels.index("RHipAngles")] = "RHipAnglesX"
    c["parameters"]["POINT"]["LABELS"]["value"] = labels


def _radians(c):
    labels = list(c["parameters"]["POINT"]["LABELS"]["value"])
    angles = [i for i, lab in enumerate(labels) if lab.endswith("Angles")]
    c["data"]["points"][:3, angles] *= np.pi / 180.0


def _rad_units(c):
    c["parameters"]["POINT"]["ANGLE_UNITS"]["value"] = ["rad"]


def _nan_knees(c):
    for name in ("LKneeAngles", "RKneeAngles"):
        c["data"]["points"][:3, _label(c, name)] = 0.0


# Reader rows that must raise: id -> (make the file in tmp_path, problem regex).
READ_ERRORS = {
    "R3-missing-label-no-markers": (
        lambda d: _rewrite(d / "x.c3d", lambda c: (_missing_label(c), _no_markers(c))),
        r"no Plug-in-Gait angle outputs and no known marker set \(labels found: .*LHipAngles"),
    "R4-radians-values": (lambda d: _rewrite(d / "x.c3d", _radians),
                          r"knee flexion spans only .* look like radians"),
    "R5-radians-units": (lambda d: _rewrite(d / "x.c3d", _rad_units),
                         r"ANGLE_UNITS is radians"),
    "R6-one-frame": (lambda d: _rewrite(d / "x.c3d", _frames(1)), r"only 1 frames; at least 20"),
    "R7-knees-all-nan": (lambda d: _rewrite(d / "x.c3d", _nan_knees),
                         r"knee angles are all missing"),
    "R8-truncated-half": (lambda d: _bytes(d / "x.c3d", lambda r: r[:len(r) // 2]),
                          r"truncated or corrupt: holds 101 of the 208 frames"),
    "R9-truncated-in-params": (lambda d: _bytes(d / "x.c3d", lambda r: r[:600]),
                               r"truncated C3D: 600 bytes"),
    "R10-text-named-c3d": (lambda d: _bytes(d / "x.c3d", lambda r: b"walked fine\n"),
                           r"not a C3D file"),
    "R11-empty-file": (lambda d: _bytes(d / "x.c3d", lambda r: b""), r"not a C3D file"),
    "R12-enormous-frame-count": (
        lambda d: _bytes(d / "x.c3d", lambda r: _set_frames_param(r, 32767, header=True)),
        r"truncated or corrupt: holds 208 of the 32767 frames its header declares"),
    "R14-missing-file": (lambda d: str(d / "nope.c3d"), r"file not found"),
}


@pytest.mark.parametrize("row", sorted(READ_ERRORS))
def test_reader_rejects_in_one_line(row, tmp_path):
    make, problem = READ_ERRORS[row]
    path = make(tmp_path)
    with pytest.raises(GaitDataError, match=problem) as e:
        c3d.read_trial(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


def _strides_of(path: str) -> list[dict]:
    return strides.segment_strides(c3d.read_trial(path))


@pytest.fixture(scope="module")
def reference() -> list[dict]:
    """The strides of the unmodified trial."""
    return _strides_of(STRAIGHT)


def _same(a: list[dict], b: list[dict]) -> None:
    assert [(s["side"], s["duration_s"]) for s in a] == [(s["side"], s["duration_s"]) for s in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["angles"], y["angles"])


def test_r1_nan_frames_are_invalid_not_numbers(tmp_path, reference):
    got = _strides_of(_rewrite(tmp_path / "x.c3d", _nan_frames))
    assert len(got) == len(reference)
    hit = [s for s in got if not s["valid"].all()]
    assert hit and all(s["valid"].mean() >= 0.5 for s in hit)  # kept: half or more valid
    for s in got:
        assert np.isfinite(s["angles"]).all() and (s["angles"][~s["valid"]] == 0).all()
        assert s["angles"].shape == (100, 10, 3)


def test_r2_joint_all_nan_is_invalid_in_every_stride(tmp_path, reference):
    got = _strides_of(_rewrite(tmp_path / "x.c3d", _nan_joint))
    j = c3d.read_trial(STRAIGHT).joint_names.index("LAnkle")
    assert len(got) == len(reference)
    for s, r in zip(got, reference):
        assert not s["valid"][:, j].any() and np.delete(s["valid"], j, 1).all()
        np.testing.assert_array_equal(np.delete(s["angles"], j, 1), np.delete(r["angles"], j, 1))


def test_r3_missing_label_with_markers_uses_the_marker_kinematics(tmp_path, reference):
    trial = c3d.read_trial(_rewrite(tmp_path / "x.c3d", _missing_label))
    assert trial.angle_source == "markers" and trial.marker_set == "plugin_gait"
    assert "incomplete (9 of 10 joints)" in trial.notes[0]
    got = strides.segment_strides(trial)
    assert len(got) == len(reference)
    for s, r in zip(got, reference):  # marker model vs PiG outputs: measured max 1.60 deg
        assert np.abs(s["angles"] - r["angles"]).max() < 2.0


def test_r13_frames_param_larger_than_the_data_reads_the_data(tmp_path, reference):
    path = _bytes(tmp_path / "x.c3d", lambda r: _set_frames_param(r, 32767, header=False))
    assert c3d.read_trial(path).num_frames == 208
    _same(_strides_of(path), reference)


def test_s1_no_events_and_no_markers(tmp_path):
    def edit(c):
        _no_markers(c)
        c["parameters"]["EVENT"]["USED"]["value"] = [0]
    path = _rewrite(tmp_path / "x.c3d", edit)
    trial = c3d.read_trial(path)
    assert all(trial.events[s][k].size == 0 for s in "LR" for k in ("strike", "off"))
    with pytest.raises(GaitDataError, match=r"x.c3d: no left/right ASIS markers"):
        strides.segment_strides(trial)


def test_s2_no_events_detected_from_markers(tmp_path):
    path = _rewrite(tmp_path / "x.c3d", lambda c: c["parameters"]["EVENT"]["USED"].update(
        value=[0]))
    got = _strides_of(path)
    assert len(got) >= 2 and {s["events"] for s in got} == {"detected"}


def test_s3_duplicate_events_are_merged(tmp_path, reference):
    _same(_strides_of(_rewrite(tmp_path / "x.c3d", _events(repeat=2))), reference)


def test_s4_events_outside_the_data_are_ignored(tmp_path, reference):
    def shift(t):
        t = np.concatenate([t, t], axis=1)
        t[1, t.shape[1] // 2:] += 100.0  # a copy of every event 100 s after the trial ends
        return t
    _same(_strides_of(_rewrite(tmp_path / "x.c3d", _events(shift))), reference)
    late = _strides_of(_rewrite(tmp_path / "y.c3d", _events(lambda t: t + [[0], [100.0]])))
    assert late and {s["events"] for s in late} == {"detected"}  # all outside: detected


def test_s5_implausible_stride_durations_are_skipped(tmp_path, caplog):
    def close(c):  # extra left strikes 0.1 s after each marked one: 0.1 s "strides"
        ev = c["parameters"]["EVENT"]
        lab, ctx = list(ev["LABELS"]["value"]), list(ev["CONTEXTS"]["value"])
        t = np.asarray(ev["TIMES"]["value"], np.float64)
        add = [i for i, (a, b) in enumerate(zip(lab, ctx)) if a == "Foot Strike" and b == "Left"]
        ev["LABELS"]["value"] = lab + [lab[i] for i in add]
        ev["CONTEXTS"]["value"] = ctx + [ctx[i] for i in add]
        ev["TIMES"]["value"] = np.concatenate([t, t[:, add] + [[0], [0.1]]], axis=1)
        ev["USED"]["value"] = [len(lab) + len(add)]
    got = _strides_of(_rewrite(tmp_path / "x.c3d", close))
    assert all(strides.MIN_STRIDE_S <= s["duration_s"] <= strides.MAX_STRIDE_S for s in got)
    assert "implausible duration" in caplog.text and "x.c3d" in caplog.text


def test_b1_empty_c3d_dir(tmp_path):
    import tensorflow_datasets as tfds
    empty = tmp_path / "lab"
    empty.mkdir()
    for folder in (empty, tmp_path / "missing"):
        with pytest.raises(GaitDataError, match=f"{folder}: no .c3d files found"):
            tfds.builder("gait_cycles/c3d_dir", data_dir=str(tmp_path / "dd")).download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=str(folder)))


def test_b2_c3d_dir_of_bad_files_only(tmp_path):
    (tmp_path / "P1").mkdir()
    (tmp_path / "P1" / "a.c3d").write_text("not c3d")
    _rewrite(tmp_path / "P1" / "b.c3d", _radians)
    with pytest.raises(GaitDataError, match=r"no usable strides in 2 C3D files \(2 unreadable\)"):
        gait_cycles.read_folder(str(tmp_path))


def test_b3_bad_file_among_good_is_skipped_with_a_warning(tmp_path, caplog, reference):
    (tmp_path / "P1").mkdir()
    shutil.copy(STRAIGHT, tmp_path / "P1" / "good.c3d")
    _bytes(tmp_path / "P1" / "cut.c3d", lambda r: r[:len(r) // 2])
    got = gait_cycles.read_folder(str(tmp_path))
    assert len(got) == len(reference) and {s["trial"] for s in got} == {"good"}
    assert "skipping" in caplog.text and "cut.c3d: truncated" in caplog.text


# ---------------------------------------------------------------- command-line rows

@pytest.fixture(scope="module")
def detect_workdir(tmp_path_factory) -> str:
    """The calibrated workdir of the synthetic test model."""
    return str(g.write_workdir(tmp_path_factory.mktemp("detect") / "run"))


def _cli_cases(d, wd: str) -> dict:
    """Row id -> (argv after `python -m`, the file the message must name, problem regex)."""
    x = g.strides(2, 53)["angles"]
    npz = lambda name, **a: (np.savez(d / f"{name}.npz", **a), str(d / f"{name}.npz"))[1]
    c3d_in = lambda name, path: ["launch.detect", f"--workdir={wd}", f"--input={path}",
                                 f"--output={d / name}"]
    det = lambda name, path: c3d_in(name, path)
    other_cfg = str(d / "other_cfg")
    shutil.copytree(wd, other_cfg)
    cfg = json.loads(open(os.path.join(wd, "config.json")).read())
    cfg["model"]["width"] *= 2  # the checkpoint holds width-32 params
    open(os.path.join(other_cfg, "config.json"), "w").write(json.dumps(cfg))
    other_cal = str(d / "other_cal")
    shutil.copytree(wd, other_cal)
    meta = json.loads(open(os.path.join(wd, "model_meta.json")).read())
    open(os.path.join(other_cal, "model_meta.json"), "w").write(
        json.dumps(dict(meta, model_id="gengait-another-model")))
    old_cal = str(d / "old_cal")  # a calibration of the format before the band's moments
    shutil.copytree(wd, old_cal)
    cal = json.loads(open(os.path.join(wd, "calibration.json")).read())
    open(os.path.join(old_cal, "calibration.json"), "w").write(json.dumps(
        dict(cal, twin_fusion={"weight": [[1.0]], "mean_asym": [[0.0]], "sd": [[1.0]]})))
    old_rule = str(d / "old_rule")  # a calibration made by the previous flag rules
    shutil.copytree(wd, old_rule)
    open(os.path.join(old_rule, "calibration.json"), "w").write(json.dumps(
        dict(cal, method="oof-offset-shape")))
    text_c3d = _bytes(d / "notes.c3d", lambda r: b"walked fine\n")
    one = _rewrite(d / "one.c3d", _frames(1))
    nomark = _rewrite(d / "nomark.c3d", lambda c: (
        _no_markers(c), c["parameters"]["EVENT"]["USED"].update(value=[0])))
    fake_npz = d / "fake.npz"
    fake_npz.write_text("a,b\n1,2\n")
    csv = d / "trial.csv"  # a keypoint CSV needs a time column
    csv.write_text("a,b\n")
    xlsx = d / "trial.xlsx"
    xlsx.write_text("a,b\n")
    empty = d / "lab"
    empty.mkdir()
    train_wd = d / "train_wd"  # a workdir with checkpoints of a width-64 model
    (train_wd / "checkpoints" / "10").mkdir(parents=True)
    (train_wd / "config.json").write_text(json.dumps(
        {"model": {"width": 64}, "data": {"name": "gait_cycles/embedded"}}))
    (train_wd / "model_meta.json").write_text(json.dumps({"joint_names": list(g.NAMES)}))
    bad_lab = d / "bad_lab" / "P1"
    bad_lab.mkdir(parents=True)
    (bad_lab / "walk.npz").write_text("a,b\n1,2\n")
    p = npz("shape", angles=x[0, :, :, 0])
    folder = d / "trial.c3d"  # a folder named like a trial
    folder.mkdir()
    return {
        "D1-npz-wrong-shape": (det("o1", p), p, r"'angles' has shape \(100, 10\)"),
        "D2-npz-wrong-dtype": (det("o2", p := npz("dtype", angles=x.astype(str))), p,
                               "dtype <U.*expected float"),
        "D3-npz-joint-count": (det("o3", p := npz("joints", angles=x[:, :, :8])), p,
                               "8 joints, but the model expects 10"),
        "D4-npz-radians": (det("o4", p := npz("rad", angles=np.deg2rad(x))), p,
                           "look like radians|wrong units"),
        "D5-npz-all-nan": (det("o5", p := npz("nan", angles=np.full_like(x, np.nan))), p,
                           "no stride has any valid"),
        "D6-npz-not-a-zip": (det("o6", str(fake_npz)), str(fake_npz), "not a readable .npz"),
        "D7-npz-no-angles": (det("o7", p := npz("other", strides=x)), p, "no 'angles' array"),
        "D22-npz-without-side": (det("o22", p := npz("noside", angles=x)), p,
                                 "no 'side' array: each stride's side is needed"),
        "D8-text-named-c3d": (det("o8", text_c3d), text_c3d, "not a C3D file"),
        "D9-one-frame-c3d": (det("o9", one), one, "only 1 frames"),
        "D10-c3d-no-events-no-markers": (det("o10", nomark), nomark, "no left/right ASIS markers"),
        "D11-input-missing": (det("o11", str(d / "nope.c3d")), str(d / "nope.c3d"),
                              "no such file"),
        "D12-unknown-extension": (det("o12", str(xlsx)), str(xlsx), "unknown input type .xlsx"),
        "D25-input-is-a-folder": (det("o25", str(folder)), str(folder),
                                  "a folder, not a trial file"),
        "D16-keypoint-csv-without-time": (det("o16", str(csv)), str(csv), "no 'time' column"),
        "D13-missing-workdir": (["launch.detect", f"--workdir={d / 'nowd'}", f"--input={p}"],
                                str(d / "nowd"), "no such workdir"),
        "D14-checkpoint-of-another-config": (
            ["launch.detect", f"--workdir={other_cfg}", f"--input={npz('ok', angles=x)}",
             f"--output={d / 'o14'}"], other_cfg, "checkpoint does not match"),
        "D15-calibration-of-another-model": (
            ["launch.detect", f"--workdir={other_cal}", f"--input={p}"],
            os.path.join(other_cal, "calibration.json"), "recalibrate"),
        "D17-calibration-of-an-older-format": (
            ["launch.detect", f"--workdir={old_cal}", f"--input={p}"],
            os.path.join(old_cal, "calibration.json"), "older gengait-jax.*recalibrate"),
        "D21-calibration-of-an-older-method": (
            ["launch.detect", f"--workdir={old_rule}", f"--input={p}"],
            os.path.join(old_rule, "calibration.json"), "older gengait-jax.*method.*recalibrate"),
        "D18-normals-folder-without-trials": (
            ["launch.detect", f"--workdir={wd}", "--calibrate", f"--normals={empty}"],
            str(empty), "no trial"),
        "D19-normals-bad-file": (
            ["launch.detect", f"--workdir={wd}", "--calibrate", f"--normals={d / 'bad_lab'}"],
            str(bad_lab / "walk.npz"), "not a readable .npz"),
        "D20-normals-without-calibrate": (
            ["launch.detect", f"--workdir={wd}", f"--normals={d / 'bad_lab'}"], "--normals",
            "only with --calibrate"),
        "T1-resume-checkpoint-of-another-config": (
            ["launch.train", f"--config={TINY}", f"--workdir={train_wd}",
             f"--config.data.data_dir={d / 'dd'}"], str(train_wd),
            r"holds checkpoints of another config \(differs in model\)"),
        "T2-empty-c3d-dir": (
            ["launch.train", f"--config={TINY}", f"--workdir={d / 'wd_lab'}",
             "--config.data.name=gait_cycles/c3d_dir", f"--config.data.manual_dir={empty}",
             f"--config.data.data_dir={d / 'dd_lab'}"], str(empty), "no .c3d files found"),
    }


@pytest.fixture(scope="module")
def cli_results(detect_workdir, tmp_path_factory, embedded_data_dir):
    """Every CLI row run in its own process, three at a time: id -> (case, result)."""
    d = tmp_path_factory.mktemp("cli")
    cases = _cli_cases(d, detect_workdir)
    os.symlink(embedded_data_dir, d / "dd")  # T1 must get past data preparation
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    run = lambda argv: subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=env,
                                      capture_output=True, text=True, timeout=300)
    with futures.ThreadPoolExecutor(3) as pool:
        done = {k: pool.submit(run, v[0]) for k, v in cases.items()}
        return {k: (cases[k], f.result()) for k, f in done.items()}


CLI_ROWS = ["D1-npz-wrong-shape", "D2-npz-wrong-dtype", "D3-npz-joint-count", "D4-npz-radians",
            "D5-npz-all-nan", "D6-npz-not-a-zip", "D7-npz-no-angles", "D8-text-named-c3d",
            "D9-one-frame-c3d", "D10-c3d-no-events-no-markers", "D11-input-missing",
            "D12-unknown-extension", "D13-missing-workdir", "D14-checkpoint-of-another-config",
            "D15-calibration-of-another-model", "D16-keypoint-csv-without-time",
            "D17-calibration-of-an-older-format", "D18-normals-folder-without-trials",
            "D19-normals-bad-file", "D20-normals-without-calibrate",
            "D21-calibration-of-an-older-method", "D22-npz-without-side", "D25-input-is-a-folder",
            "T1-resume-checkpoint-of-another-config",
            "T2-empty-c3d-dir"]


@pytest.mark.parametrize("row", CLI_ROWS)
def test_cli_one_line_error(row, cli_results):
    (argv, path, problem), r = cli_results[row]
    lines = [s for s in r.stderr.splitlines() if s.strip()]
    assert r.returncode not in (0, None), (row, r.stdout[-500:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert lines and path in lines[-1] and re.search(problem, lines[-1]), r.stderr[-1500:]
