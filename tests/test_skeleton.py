"""Skeleton strides: the body frame (origin, axes, scale) and the positions of real trials."""

import glob
import os

import numpy as np
import pytest

from gengait_jax import data, inputs
from tfds_gait import c3d, gait_cycles, joints, skeleton, strides

NAMES = joints.joint_names("skeleton")
EMB = gait_cycles.EMBEDDED_DIR


def _walker(frames: int = 120, vertical: int = 2, heading_deg: float = 0.0,
            speed_mm: float = 12.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points [F, J, 3] lab mm, pelvis [F, 3], heading [F, 3]) of a made-up walker: pelvis
    moving forward at constant speed with a 10 mm vertical bob, legs of 800 mm straight down,
    the left one 100 mm to the left."""
    t = np.arange(frames, dtype=float)
    body = np.zeros((frames, len(NAMES), 3))  # x forward, y left, z up (body frame, mm)
    body[:, :, 0] = speed_mm * t[:, None]
    body[:, :, 2] = 900.0 + 10.0 * np.sin(2 * np.pi * t / frames)[:, None]
    for k, name in enumerate(NAMES):  # legs of 800 mm: knee 400 below the hip, ankle 800
        body[:, k, 2] -= {"KJC": 400.0, "AJC": 800.0}.get(name[1:], 0.0)
        if name in ("LHJC", "LKJC", "LAJC"):
            body[:, k, 1] += 100.0  # the left leg 100 mm to the left
    a = np.radians(heading_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    if vertical == 1:  # a right-handed lab with y up: lab (x, y, z) = (x, z, -y)
        rot = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]]) @ rot
    lab = body @ rot.T + np.array([3000.0, -1500.0, 200.0])
    heading = np.broadcast_to(rot[:, 0], (frames, 3)).copy()
    return lab, lab[:, 0], heading


@pytest.mark.parametrize("heading_deg,vertical", [(0.0, 2), (37.0, 2), (-120.0, 1)])
def test_body_frame_is_the_same_for_any_lab_direction_and_vertical_axis(heading_deg, vertical):
    pts, pelvis, heading = _walker(vertical=vertical, heading_deg=heading_deg)
    centres = {n: pts[:, k] for k, n in enumerate(NAMES)}
    leg = skeleton.leg_length_mm(centres, 0, len(pts) - 1)
    assert leg == pytest.approx(800.0)
    body = skeleton.body_frame(pts, pelvis, heading, vertical, leg)
    ankle = body[:, NAMES.index("LAJC")]
    np.testing.assert_allclose(ankle[:, 0], 0.0, atol=1e-6)  # moves with the pelvis
    np.testing.assert_allclose(ankle[:, 1], 100.0 / 8.0, atol=1e-6)  # 100 mm left: 12.5 %
    np.testing.assert_allclose(body[:, 0, 2], 10.0 / 8.0 * np.sin(  # the pelvis keeps its bob
        2 * np.pi * np.arange(len(pts)) / len(pts)), atol=1e-6)
    np.testing.assert_allclose(body[:, 0, :2], 0.0, atol=1e-6)  # on its walking line


def test_real_strides_of_both_kinds_of_file_have_a_plausible_skeleton():
    files = {"plugin_gait": os.path.join(EMB, "biomechzoo", "HC031A", "Straight_HC031A06.c3d"),
             "markers": sorted(p for p in glob.glob(os.path.join(EMB, "schreiber2019", "*", "*.c3d"))
                               if not c3d.is_static_name(p))[0]}
    for source, path in files.items():
        trial = c3d.read_trial(path)
        assert trial.angle_source == source and trial.kinematics is not None
        rows = strides.segment_strides(trial)
        pos = np.stack([r["positions"] for r in rows])
        assert pos.shape[1:] == (100, len(NAMES), 3)
        assert np.stack([r["positions_valid"] for r in rows]).all()
        mean = pos.mean((0, 1))  # [J, 3], % leg length
        for s, sign in (("L", 1), ("R", -1)):
            ankle = mean[NAMES.index(f"{s}AJC")]
            assert -100 < ankle[2] < -80 and sign * ankle[1] > 0  # below the pelvis, its side
            toe = pos[:, :, NAMES.index(f"{s}TOE"), 0]
            assert 60 < np.ptp(toe, axis=1).mean() < 130  # the foot travels ~a leg per stride


def _skeleton_meta(path: str) -> tuple[dict, np.ndarray]:
    """(the meta of a skeleton model whose stats are this trial's own, its positions)."""
    pos = np.stack([r["positions"] for r in strides.segment_strides(c3d.read_trial(path))])
    return dict(joint_names=list(NAMES), num_frames=100, num_channels=3, modality="positions",
                stats=dict(mean=pos.mean((0, 1)).tolist(), std=pos.std((0, 1)).tolist())), pos


def _save_keypoints(path, kp: np.ndarray, labels: list[str], rate: float) -> str:
    """A keypoint .npz (keypoints, joint_names, rate)."""
    np.savez(path, keypoints=kp, joint_names=np.array(labels), rate=rate)
    return str(path)


def test_c3d_input_of_a_skeleton_model_gives_its_positions():
    path = os.path.join(EMB, "biomechzoo", "HC031A", "Straight_HC031A06.c3d")
    meta, _ = _skeleton_meta(path)
    st, notes = inputs.load(path, meta)
    assert st.x.shape[1:] == (100, len(NAMES), 3) and st.joint_names == NAMES
    assert any("joint centres from the plugin_gait markers" in n for n in notes)
    assert data.VALID_FEATURE["positions"] == "positions_valid"


# gaitalytics' HBM labels (without the side letter) -> OpenCap's augmented marker names
OPENCAP = {"ASIS": "ASIS_study", "PSIS": "PSIS_study", "LEK": "knee_study", "MEK": "mknee_study",
           "LM": "ankle_study", "MM": "mankle_study", "HEE": "calc_study", "MT2": "toe_study",
           "MT5": "5meta_study"}


def _write_trc(path, labels, pts_mm, rate):
    """An OpenCap-style .trc: metres, Y up (lab z -> y, lab y -> -z), OpenCap marker names."""
    pts = pts_mm[..., [0, 2, 1]] * np.array([1, 1, -1]) / 1000.0
    lines = [f"PathFileType\t4\t(X/Y/Z)\t{os.path.basename(path)}",
             "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\t"
             "OrigDataStartFrame\tOrigNumFrames",
             f"{rate:g}\t{rate:g}\t{len(pts)}\t{len(labels)}\tm\t{rate:g}\t1\t{len(pts)}",
             "Frame#\tTime\t" + "\t\t\t".join(labels),
             "\t\t" + "\t".join(f"{a}{k + 1}" for k in range(len(labels)) for a in "XYZ"), ""]
    for f, row in enumerate(pts):
        vals = ["" if not np.isfinite(v) else f"{v:.6f}" for v in row.ravel()]
        lines.append(f"{f + 1}\t{f / rate:.5f}\t" + "\t".join(vals))
    open(path, "w").write("\n".join(lines) + "\n")


def _gaitalytics_as_opencap() -> tuple[list[str], np.ndarray, float]:
    """gaitalytics' treadmill trial (20 strides) with its HBM markers renamed as OpenCap's."""
    path = os.path.join(EMB, "gaitalytics", "SI02", "treadmill_events.c3d")
    _, _, pts, labels, rate = c3d._read_points(path)
    keep, names = [], []
    for i, lab in enumerate(labels):
        side, role = lab[:1], lab[1:]
        if side in "LR" and role in OPENCAP:
            keep.append(i)
            sep = "." if role in ("ASIS", "PSIS") else "_"
            names.append(("L" if side == "L" else "r") + sep + OPENCAP[role])
    assert len(names) == 18
    return names, pts[:, keep], rate


def test_opencap_trc_gives_a_skeleton_with_events_from_the_feet(tmp_path):
    names, pts, rate = _gaitalytics_as_opencap()
    trc_path = tmp_path / "walk.trc"
    _write_trc(trc_path, names, pts, rate)
    from_trc = c3d.read_trial(str(trc_path), static=None)
    assert from_trc.marker_set == "opencap" and from_trc.vertical == 1
    assert not any(from_trc.events[s]["strike"].size for s in "LR")  # a .trc has no events
    rows = strides.segment_strides(from_trc)  # events detected from the feet
    assert len(rows) >= 10
    pos = np.stack([r["positions"] for r in rows])
    assert np.stack([r["positions_valid"] for r in rows]).all()
    ankle = pos[:, :, NAMES.index("LAJC")].mean((0, 1))
    assert -100 < ankle[2] < -80 and ankle[1] > 0
    bad = tmp_path / "bad.trc"
    bad.write_text("not a trc\n")
    with pytest.raises(c3d.GaitDataError, match="bad.trc: not a .trc marker file"):
        c3d.read_trial(str(bad))


@pytest.mark.parametrize("labels,units,match", [
    (["Nose", "Neck", "RHip"], "m", "no known marker set"),
    (None, "furlong", "POINT:UNITS is 'furlong'"),
])
def test_bad_trc_files_are_one_line_errors(tmp_path, labels, units, match):
    names, pts, rate = _gaitalytics_as_opencap()
    labels = labels or names
    trc_path = tmp_path / "walk.trc"
    _write_trc(trc_path, labels, pts[:, :len(labels)], rate)
    trc_path.write_text(trc_path.read_text().replace("\tm\t", f"\t{units}\t", 1))
    with pytest.raises(c3d.GaitDataError, match=match) as e:
        c3d.read_trial(str(trc_path), static=None)
    assert "\n" not in str(e.value) and "walk.trc" in str(e.value)


def _keypoints_of(path: str) -> tuple[np.ndarray, list[str], float]:
    """A pose estimator's view of a marker trial: its joint centres, heels and toes as 3D
    keypoints in metres with OpenPose names (pelvis as MidHip)."""
    t = c3d.read_trial(path)
    names = {"PELVIS": "MidHip", "HJC": "Hip", "KJC": "Knee", "AJC": "Ankle", "HEEL": "Heel",
             "TOE": "BigToe"}
    out, labels = [], []
    for p, x in t.kinematics.centres.items():
        labels.append(names[p] if p == "PELVIS" else p[0] + names[p[1:]])
        out.append(x / 1000.0)
    return np.stack(out, axis=1), labels, t.rate


def test_keypoints_npz_gives_the_skeleton_of_the_same_trial(tmp_path):
    path = os.path.join(EMB, "gaitalytics", "SI02", "treadmill_events.c3d")
    kp, labels, rate = _keypoints_of(path)
    meta, ref = _skeleton_meta(path)
    st, notes = inputs.load(_save_keypoints(tmp_path / "kp.npz", kp, labels, rate), meta)
    assert len(st) >= 10 and st.x.shape[1:] == (100, len(NAMES), 3)
    assert any("keypoints in m" in n for n in notes)
    # the same body frame as the C3D's own skeleton (events detected, not marked: ~1 frame)
    assert np.abs(st.x.mean((0, 1)) - ref.mean((0, 1))).max() < 2.0
    bad = {"frozen": dict(keypoints=np.where(np.arange(len(labels))[None, :, None] == 3,
                                             kp[:1], kp)),
           "mm_as_m": dict(keypoints=kp * 1e4),
           "no_rate": {}}
    for name, change in bad.items():
        arrays = {**dict(keypoints=kp, joint_names=np.array(labels), rate=rate), **change}
        if name == "no_rate":
            arrays.pop("rate")
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(c3d.GaitDataError) as e:
            inputs.load(str(tmp_path / f"{name}.npz"), meta)
        msg = str(e.value)
        assert f"{name}.npz" in msg and "\n" not in msg
        assert {"frozen": "frozen", "mm_as_m": "fits no unit", "no_rate": "'rate'"}[name] in msg
    with pytest.raises(c3d.GaitDataError, match="reads joint angles"):
        inputs.load(str(tmp_path / "kp.npz"), dict(meta, modality="angles"))


def test_keypoints_csv_reads_like_the_npz(tmp_path):
    path = os.path.join(EMB, "gaitalytics", "SI02", "treadmill_events.c3d")
    kp, labels, rate = _keypoints_of(path)
    meta, _ = _skeleton_meta(path)
    npz = _save_keypoints(tmp_path / "kp.npz", kp, labels, rate)
    head = "time," + ",".join(f"{n}_{a}" for n in labels for a in "xyz")
    rows = [f"{f / rate:.6f}," + ",".join("" if not np.isfinite(v) else f"{v:.7f}"
                                          for v in kp[f].ravel()) for f in range(len(kp))]
    (tmp_path / "kp.csv").write_text(head + "\n" + "\n".join(rows) + "\n")
    a, _ = inputs.load(npz, meta)
    b, _ = inputs.load(str(tmp_path / "kp.csv"), meta)
    assert len(a) == len(b) and np.abs(a.x - b.x).max() < 1e-3
    (tmp_path / "bad.csv").write_text("frame,LHip_x\n1,0.1\n")
    with pytest.raises(c3d.GaitDataError, match="bad.csv: no 'time' column"):
        inputs.load(str(tmp_path / "bad.csv"), meta)


def test_sagittal_angles_from_the_skeleton_follow_the_marker_angles():
    path = os.path.join(EMB, "biomechzoo", "HC031A", "Straight_HC031A06.c3d")
    lower = joints.joint_names("lower")
    for r in strides.segment_strides(c3d.read_trial(path)):
        side = r["side"]
        a = skeleton.sagittal_angles(r["positions"], side)
        pig = r["angles"][:, [lower.index(side + j) for j in ("Hip", "Knee", "Ankle")], 0]
        for k in range(3):  # the same curves; the hip lacks the pelvis tilt (an offset)
            assert np.corrcoef(a[:, k], pig[:, k])[0, 1] > 0.98
        assert np.abs(a[:, 1] - pig[:, 1]).max() < 3.0  # knee: thigh minus shank, as PiG
