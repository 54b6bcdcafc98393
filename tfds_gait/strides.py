"""Stride segmentation: foot strike to the next foot strike of the same side, resampled."""

from __future__ import annotations

import logging

import numpy as np

from tfds_gait import events as events_lib
from tfds_gait import joints as joints_lib
from tfds_gait import skeleton
from tfds_gait.c3d import Trial
from tfds_gait.errors import GaitDataError

MIN_STRIDE_S, MAX_STRIDE_S = 0.4, 3.0
MAX_GAP_FRAMES = 10           # NaN gaps up to this long are linearly interpolated
MAX_HEADING_CHANGE_DEG = 10.0  # strides turning more than this are not straight walking
TREADMILL_SPEED_M_S = 0.1      # pelvis slower than this over a stride: on a treadmill
MAX_LAB_ROTATION_DEG = 45.0  # |mean pelvis rotation or foot progression| above: off lab axis


def resample(x: np.ndarray, num_points: int, start: float = 0.0,
             stop: float | None = None) -> np.ndarray:
    """Samples x [F, ...] linearly at num_points times start + (stop - start) * k / num_points."""
    stop = len(x) - 1 if stop is None else stop
    t = start + (stop - start) * np.arange(num_points) / num_points
    i0 = np.clip(np.floor(t).astype(int), 0, len(x) - 1)
    i1 = np.clip(i0 + 1, 0, len(x) - 1)
    w = (t - i0).reshape((-1,) + (1,) * (x.ndim - 1))
    return (1.0 - w) * x[i0] + w * x[i1]


def fill_short_gaps(x: np.ndarray, max_gap: int = MAX_GAP_FRAMES) -> np.ndarray:
    """Interpolates interior NaN runs of at most max_gap frames, per column of x [F, ...]."""
    out = np.array(x, np.float64)
    flat = out.reshape(len(out), -1)
    t = np.arange(len(out))
    for k in range(flat.shape[1]):
        bad = ~np.isfinite(flat[:, k])
        if not bad.any() or bad.all():
            continue
        edges = np.flatnonzero(np.diff(np.concatenate([[0], bad.astype(int), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):
            if b - a <= max_gap and a > 0 and b < len(out):
                flat[a:b, k] = np.interp(t[a:b], [a - 1, b], [flat[a - 1, k], flat[b, k]])
    return out.reshape(x.shape)


def trial_events(trial: Trial) -> tuple[dict, dict[str, str]]:
    """Marked events completed by detected ones; also which sides used detection."""
    marked = trial.events
    try:
        detected = events_lib.detect_events(trial)
    except GaitDataError:
        if all(marked[s]["strike"].size >= 2 for s in ("L", "R")):
            return marked, {"L": "marked", "R": "marked"}
        raise
    merged = {s: {k: events_lib.merge_events(marked[s][k], detected[s][k], trial.rate)
                  for k in ("strike", "off")} for s in ("L", "R")}
    return merged, {s: ("marked" if marked[s]["strike"].size else "detected") for s in "LR"}


def _heading_change_deg(axis: np.ndarray, a: int, b: int, vertical: int = 2) -> float:
    """Heading change (deg) between the mean pelvis axis of a stride's two halves, in the
    horizontal plane (the two lab axes other than `vertical`).
    Half-stride means keep the normal pelvic rotation (up to ~8 deg on the shipped straight
    walks) apart from turning (9-54 deg per stride in the shipped turn trials).
    """
    h = [k for k in range(3) if k != vertical]
    m = (a + b) // 2
    h1, h2 = axis[a:m].mean(axis=0)[h], axis[m:b + 1].mean(axis=0)[h]
    d = np.arctan2(h2[1], h2[0]) - np.arctan2(h1[1], h1[0])
    return float(np.degrees(abs(np.angle(np.exp(1j * d)))))


def _off_axis(stride: dict, joint_names: tuple[str, ...]) -> bool:
    """True when lab-referenced rotations say the subject walks off the trial's lab axis.

    Plug-in-Gait references pelvis rotation and foot progression to one progression axis
    per trial, so strides after a turn carry ~90 deg offsets there.
    """
    lab = [i for i, j in enumerate(joint_names) if j.endswith(("Pelvis", "FootProgress"))]
    rot = stride["angles"][:, lab, 2]
    return bool(lab) and float(np.abs(rot.mean(axis=0)).max()) > MAX_LAB_ROTATION_DEG


def _positions(trial: Trial, points: np.ndarray | None, axis: np.ndarray, s0: float,
               s1: float, num_points: int) -> tuple[np.ndarray, np.ndarray]:
    """The stride's skeleton (tfds_gait.skeleton) [T, J, 3] and its validity [T, J]; all
    invalid where the trial has no joint centres or no leg length."""
    j = len(joints_lib.joint_names(skeleton.JOINT_SET))
    none = np.zeros((num_points, j, 3), np.float32), np.zeros((num_points, j), bool)
    if points is None:
        return none
    a, b = int(np.floor(s0)), min(int(np.ceil(s1)), len(points) - 1)
    leg = skeleton.leg_length_mm(trial.kinematics.centres, a, b)
    pelvis = points[a:b + 1, joints_lib.joint_names(skeleton.JOINT_SET).index("PELVIS")]
    if not (leg > 0 and np.isfinite(pelvis).all(-1).sum() >= 2):
        return none
    body = skeleton.body_frame(points[a:b + 1], pelvis, axis[a:b + 1], trial.vertical, leg)
    pos = resample(body, num_points, s0 - a, s1 - a).astype(np.float32)
    return np.nan_to_num(pos), np.isfinite(pos).all(-1)


def _stride(trial: Trial, side: str, s0: float, s1: float, offs: np.ndarray,
            angles: np.ndarray, centre: np.ndarray, num_points: int, marked: bool,
            index: int, points: np.ndarray | None, axis: np.ndarray) -> dict:
    """One resampled stride (angles and skeleton) with its metadata."""
    ang = resample(angles, num_points, s0, s1).astype(np.float32)
    valid = np.isfinite(ang).all(axis=-1)
    duration = (s1 - s0) / trial.rate
    inside = offs[(offs > s0) & (offs < s1)]
    foot_off = 100.0 * (inside[0] - s0) / (s1 - s0) if inside.size else np.nan
    a, b = int(round(s0)), int(round(s1))
    horizontal = [k for k in range(3) if k != trial.vertical]
    dist = np.linalg.norm((centre[b] - centre[a])[horizontal]) / 1000.0
    speed = dist / duration if dist / duration > TREADMILL_SPEED_M_S else np.nan
    pos, pos_valid = _positions(trial, points, axis, s0, s1, num_points)
    return dict(angles=np.nan_to_num(ang), valid=valid, positions=pos,
                positions_valid=pos_valid, subject=trial.subject,
                trial=trial.trial, side=side, stride_index=index,
                events="marked" if marked else "detected", duration_s=float(duration),
                foot_off_pct=float(foot_off), speed_m_s=float(speed),
                angle_source=trial.angle_source, marker_set=trial.marker_set or "")


def segment_strides(trial: Trial, num_points: int = 100,
                    max_gap_frames: int = MAX_GAP_FRAMES,
                    max_heading_change_deg: float = MAX_HEADING_CHANGE_DEG,
                    skipped_counts: dict | None = None,
                    require: str = "valid") -> list[dict]:
    """Cuts a trial into strides of both sides (see module docstring); skips are logged, or
    added to `skipped_counts` (a folder's reader logs one line for all its files). A stride
    needs half of its `require` values ("valid": angles, "positions_valid": the skeleton)."""
    evs, _ = trial_events(trial)
    centre, axis = events_lib.pelvis_frame(trial)
    angles = fill_short_gaps(trial.angles, max_gap_frames)
    points = (None if trial.kinematics is None else
              fill_short_gaps(skeleton.points(trial.kinematics.centres), max_gap_frames))
    out, skipped = [], {"duration": 0, "turning": 0, "missing": 0, "off_axis": 0}
    for side in ("L", "R"):
        strikes, marked = evs[side]["strike"], set(trial.events[side]["strike"].tolist())
        for s0, s1 in zip(strikes[:-1], strikes[1:]):
            duration = (s1 - s0) / trial.rate
            if not MIN_STRIDE_S <= duration <= MAX_STRIDE_S:
                skipped["duration"] += 1
            elif (_heading_change_deg(axis, int(s0), int(s1), trial.vertical)
                  > max_heading_change_deg):
                skipped["turning"] += 1
            else:
                st = _stride(trial, side, s0, s1, evs[side]["off"], angles, centre, num_points,
                             s0 in marked and s1 in marked, len(out), points, axis)
                if st[require].mean() < 0.5:
                    skipped["missing"] += 1
                elif _off_axis(st, trial.joint_names):
                    skipped["off_axis"] += 1
                else:
                    out.append(st)
    if skipped_counts is not None:
        for k, v in skipped.items():
            skipped_counts[k] = skipped_counts.get(k, 0) + v
    elif any(skipped.values()):
        logging.warning("%s: skipped strides: %d implausible duration (outside %.1f-%.1f s), "
                        "%d turning (> %.0f deg), %d mostly missing, %d off the lab axis (pelvis "
                        "rotation or foot progression > %.0f deg)", trial.path, skipped["duration"], MIN_STRIDE_S,
                        MAX_STRIDE_S, skipped["turning"], max_heading_change_deg,
                        skipped["missing"], skipped["off_axis"], MAX_LAB_ROTATION_DEG)
    return out
