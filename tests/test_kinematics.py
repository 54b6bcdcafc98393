"""Marker kinematics: PiG geometry, every marker set on a shipped trial, Vicon agreement."""

import glob
import os
import subprocess
import sys

import ezc3d
import numpy as np
import pytest

from tfds_gait import c3d, joints, kinematics, marker_sets, strides
from tfds_gait.errors import GaitDataError
from tfds_gait.kinematics import __main__ as kin_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMB = os.path.join(ROOT, "tfds_gait", "data", "embedded")
PIG = os.path.join(EMB, "biomechzoo", "HC036A", "Straight_HC036A10.c3d")
TREADMILL = os.path.join(EMB, "gaitalytics", "SI02", "treadmill_events.c3d")
ISB = os.path.join(EMB, "schreiber2019", "2014001", "2014001_C4_05.c3d")
ISB_NO_MEDIAL = os.path.join(EMB, "schreiber2019", "2015032", "2015032_C4_03.c3d")
FUKUCHI = os.path.join(EMB, "fukuchi2018", "WBDS42", "WBDS42walkT03.c3d")
NAMES = joints.joint_names("lower")
PIG_TRIALS = sorted(glob.glob(os.path.join(EMB, "biomechzoo", "*", "Straight_*.c3d"))) + [TREADMILL]


def _rewrite(src, dst, edit) -> str:
    c = ezc3d.c3d(src)
    edit(c)
    c.write(str(dst))
    return str(dst)


def _rename(c, fn):
    """Renames POINT:LABELS with fn(label)."""
    c["parameters"]["POINT"]["LABELS"]["value"] = [fn(s) for s in
                                                   c["parameters"]["POINT"]["LABELS"]["value"]]


def test_chord_rule_geometry():
    rng = np.random.default_rng(0)
    wand, prox, lat = (rng.normal(size=(50, 3)) * 100 for _ in range(3))
    prox = prox + [0, 0, 400]
    j = kinematics.chord(wand, prox, lat, 50.0)
    np.testing.assert_allclose(np.linalg.norm(j - lat, axis=-1), 50.0, rtol=1e-6)
    np.testing.assert_allclose(np.sum((prox - j) * (lat - j), -1), 0.0, atol=1e-6)
    normal = np.cross(wand - lat, prox - lat)  # J lies in the plane of the three markers
    np.testing.assert_allclose(np.sum((j - lat) * kinematics.unit(normal), -1), 0.0, atol=1e-6)


def test_chord_centre_makes_the_wand_offset_angle_about_the_segment_axis():
    rng = np.random.default_rng(1)
    prox = np.array([[0.0, 0.0, 400.0]]) + rng.normal(size=(20, 3)) * 10
    lat = np.array([[60.0, 0.0, 0.0]]) + rng.normal(size=(20, 3)) * 5
    wand = np.array([[90.0, 40.0, 200.0]]) + rng.normal(size=(20, 3)) * 5
    j = kinematics.chord_centre(wand, prox, lat, 55.0, np.radians(12.0))
    k = kinematics.unit(j - prox)
    flat = lambda v: kinematics.unit(v - np.sum(v * k, -1, keepdims=True) * k)
    a, b = flat(lat - prox), flat(wand - prox)
    angle = np.degrees(np.arctan2(np.sum(np.cross(a, b) * k, -1), np.sum(a * b, -1)))
    np.testing.assert_allclose(np.abs(angle), 12.0, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(j - lat, axis=-1), 55.0, rtol=1e-6)


@pytest.mark.parametrize("path", PIG_TRIALS, ids=lambda p: os.path.basename(p))
def test_marker_angles_agree_with_vicon_plugin_gait(path):
    """Regression bound on every shipped straight-walk / treadmill Plug-in-Gait trial.

    Measured (BUILD_NOTES "Kinematics"): sagittal RMS <= 0.83 deg for hip, knee, ankle;
    frontal / transverse <= 2.89 deg after removing the offset."""
    res = kin_cli.compare(path)
    assert res["marker_set"] == "plugin_gait"
    for side in "LR":
        for joint in ("Pelvis", "Hip", "Knee", "Ankle"):
            sag = res["rms_deg"][side + joint][0]
            front, trans = res["rms_offset_removed_deg"][side + joint][1:]
            assert sag <= 1.0 and front <= 3.0 and trans <= 3.0, (side + joint, sag, front, trans)


def test_compare_cli_prints_one_json_object():
    out = subprocess.run([sys.executable, "-m", "tfds_gait.kinematics", PIG, "--compare"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    import json
    res = json.loads(lines[0])
    assert res["marker_set"] == "plugin_gait" and set(res["rms_deg"]) == set(NAMES)
    assert set(res["offset_deg"]) == set(NAMES) and len(res["rms_deg"]["LKnee"]) == 3


def test_compare_cli_on_a_file_without_plugin_gait_outputs_is_one_line():
    out = subprocess.run([sys.executable, "-m", "tfds_gait.kinematics", FUKUCHI, "--compare"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: {FUKUCHI}: no Plug-in-Gait")


def _hbm_only(tmp_path) -> str:
    """The gaitalytics trial without its Plug-in-Gait markers and outputs: the HBM set."""
    labels = lambda name: {lab.upper() for labs in marker_sets.by_name(name).labels.values()
                           for lab in labs}
    pig = labels("plugin_gait") - labels("lowerlimb_hbm")
    return _rewrite(TREADMILL, tmp_path / "hbm.c3d", lambda c: _rename(
        c, lambda s: f"x{s}" if s.upper() in pig or "Angles" in s else s))


@pytest.mark.parametrize("which", ["plugin_gait", "isb_full_body", "fukuchi_lower",
                                   "lowerlimb_hbm"])
def test_each_marker_set_gives_plausible_symmetric_gait(which, tmp_path):
    path = {"plugin_gait": PIG, "isb_full_body": ISB, "fukuchi_lower": FUKUCHI,
            "lowerlimb_hbm": None}[which] or _hbm_only(tmp_path)
    trial = c3d.read_trial(path, angles="markers")
    assert trial.marker_set == which and trial.angle_source == "markers"
    rows = strides.segment_strides(trial)
    assert rows
    x = np.stack([r["angles"] for r in rows])
    side = np.array([r["side"] for r in rows])
    assert np.isfinite(x).all() and all(r["valid"].all() for r in rows)
    j = {n: NAMES.index(n) for n in NAMES}
    for s in "LR":
        own = x[side == s]
        knee, hip, ankle = (own[:, :, j[s + n], 0] for n in ("Knee", "Hip", "Ankle"))
        assert 45 <= knee.max(1).mean() <= 80 and -12 <= knee.min(1).mean() <= 15
        assert 30 <= np.ptp(hip, 1).mean() <= 65 and 15 <= np.ptp(ankle, 1).mean() <= 50
    # Left and right knees of a healthy person: the same curve in their own cycles.
    mean_l = x[side == "L"][:, :, j["LKnee"], 0].mean(0)
    mean_r = x[side == "R"][:, :, j["RKnee"], 0].mean(0)
    assert np.sqrt(np.mean((mean_l - mean_r) ** 2)) < 8.0


def test_static_trial_rebuilds_missing_medial_markers(tmp_path):
    """Walk with the medial markers dropped + its static trial ~ the walk with them."""
    st = os.path.join(os.path.dirname(ISB), "2014001_ST.c3d")
    os.makedirs(tmp_path / "s")
    walk = _rewrite(ISB, tmp_path / "s" / "walk.c3d", lambda c: _rename(
        c, lambda s: f"x{s}" if s.endswith(("_FME", "_TAM")) else s))
    full = c3d.read_trial(ISB, static=st)
    rebuilt = c3d.read_trial(walk, static=st)
    assert any("KNEE_MED rebuilt from the static trial" in n for n in rebuilt.notes)
    for s in "LR":
        err = np.linalg.norm(rebuilt.kinematics.centres[s + "KJC"]
                             - full.kinematics.centres[s + "KJC"], axis=-1)
        assert np.nanmedian(err) < 10.0  # mm (skin markers move against the cluster)
    sag = [NAMES.index(s + n) for s in "LR" for n in ("Hip", "Knee", "Ankle")]
    d = rebuilt.angles[:, sag, 0] - full.angles[:, sag, 0]
    assert np.sqrt(np.nanmean(d ** 2)) < 3.0


def test_shipped_walk_without_medial_markers_uses_its_static_trial():
    trial = c3d.read_trial(ISB_NO_MEDIAL)
    assert "static calibration: 2015032_ST.c3d" in trial.notes
    assert np.isfinite(trial.angles).all()


def test_lab_axes_do_not_change_the_angles(tmp_path):
    """Fukuchi's lab has Y up; the same trial with Z up gives the same angles."""
    def swap(c):
        p = c["data"]["points"]
        p[[1, 2]] = p[[2, 1]]
        p[1] *= -1  # keep the frame right-handed
    base = c3d.read_trial(FUKUCHI)
    turned = c3d.read_trial(_rewrite(FUKUCHI, tmp_path / "z.c3d", swap))
    assert base.vertical == 1 and turned.vertical == 2
    np.testing.assert_allclose(turned.angles, base.angles, atol=1e-3)


def test_markers_in_metres(tmp_path):
    def metres(c):
        c["data"]["points"][:3] /= 1000.0
    bad = _rewrite(FUKUCHI, tmp_path / "m.c3d", metres)
    with pytest.raises(GaitDataError, match=r"m.c3d: the ASIS markers are 0.2\d+ mm apart .* "
                                            r"look like metres"):
        c3d.read_trial(bad)

    def declared(c):
        metres(c)
        c["parameters"]["POINT"]["UNITS"]["value"] = ["m"]
    ok = c3d.read_trial(_rewrite(FUKUCHI, tmp_path / "m2.c3d", declared))
    np.testing.assert_allclose(ok.angles, c3d.read_trial(FUKUCHI).angles, atol=1e-2)


def test_unknown_marker_set_names_the_labels_and_the_known_sets(tmp_path):
    path = _rewrite(FUKUCHI, tmp_path / "odd.c3d", lambda c: _rename(c, lambda s: "Q" + s))
    with pytest.raises(GaitDataError) as e:
        c3d.read_trial(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: no Plug-in-Gait angle outputs and no known marker set")
    assert "QL.ASIS" in msg and "plugin_gait lacks LASI" in msg and "fukuchi_lower" in msg
    assert "\n" not in msg


def test_static_trial_given_as_a_walk(tmp_path):
    st = os.path.join(os.path.dirname(ISB), "2014001_ST.c3d")
    with pytest.raises(GaitDataError, match=r"only 1 frames; at least 20 needed \(a static"):
        c3d.read_trial(st)

    def standing(c):  # the one static frame held for 2 s
        c["data"]["points"] = np.ascontiguousarray(np.repeat(c["data"]["points"], 200, axis=2))
        for k, v in c["data"].get("meta_points", {}).items():
            c["data"]["meta_points"][k] = np.ascontiguousarray(np.repeat(v, 200, axis=-1))
    long = _rewrite(st, tmp_path / "stand.c3d", standing)
    with pytest.raises(GaitDataError, match=r"stand.c3d: the heels move only 0 mm .*static"):
        c3d.read_trial(long)


def test_a_marker_missing_throughout_invalidates_only_its_joints(tmp_path):
    def gap(c):
        labels = list(c["parameters"]["POINT"]["LABELS"]["value"])
        c["data"]["points"][:3, labels.index("L.MT1")] = 0.0  # Vicon gap: every frame
    trial = c3d.read_trial(_rewrite(FUKUCHI, tmp_path / "g.c3d", gap))
    assert any("L.MT1" in n and "missing in every frame" in n for n in trial.notes)
    bad = ~np.isfinite(trial.angles).all((0, 2))
    assert {NAMES[i] for i in np.flatnonzero(bad)} == {"LAnkle", "LFootProgress"}


def test_pelvis_marker_missing_throughout_is_one_line(tmp_path):
    def gap(c):
        labels = list(c["parameters"]["POINT"]["LABELS"]["value"])
        c["data"]["points"][:3, labels.index("R.ASIS")] = 0.0
    path = _rewrite(FUKUCHI, tmp_path / "p.c3d", gap)
    with pytest.raises(GaitDataError, match=r"p.c3d: pelvis marker\(s\) R.ASIS missing in every"):
        c3d.read_trial(path)
