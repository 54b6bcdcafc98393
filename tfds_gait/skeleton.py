"""Skeleton strides: 3D joint-centre trajectories [T, J, 3] in a per-stride body frame.

The joint set is `joints.joint_names("skeleton")` (pelvis centre; hip, knee and ankle centres,
heel and toe of both sides), the centres of `tfds_gait.kinematics` (any known marker set).
Each stride is expressed so that people and labs are comparable:
- **origin**: the pelvis centre moving at the stride's mean velocity (a least-squares line
  through its horizontal path), at its mean height: the pelvis keeps its forward surge, its
  lateral sway and its vertical bob, every other point is relative to that walking line;
- **axes**: x forward (the stride's mean pelvis heading), y to the left, z up (the lab
  vertical); a treadmill and an overground walk in any lab direction give the same frame;
- **scale**: percent of the subject's leg length (hip-knee plus knee-ankle centre distance,
  the stride's median over both sides), so children and adults move on one scale.
BUILD_NOTES "Skeletons" has the measured effect of the scale on the between-person spread.
"""

from __future__ import annotations

import numpy as np

from tfds_gait import joints as joints_lib

JOINT_SET = "skeleton"
UNITS = "% leg length"
AXES = ("forward", "left", "up")


def leg_length_mm(centres: dict[str, np.ndarray], a: int, b: int) -> float:
    """Median over frames a..b and both sides of |HJC - KJC| + |KJC - AJC| (mm; NaN if none)."""
    per_side = []
    for s in joints_lib.SIDES:
        hip, knee, ankle = (centres[f"{s}{k}"][a:b + 1] for k in ("HJC", "KJC", "AJC"))
        per_side.append(np.linalg.norm(hip - knee, axis=-1) + np.linalg.norm(knee - ankle,
                                                                            axis=-1))
    legs = np.concatenate(per_side)
    legs = legs[np.isfinite(legs)]
    return float(np.median(legs)) if legs.size else float("nan")


def body_frame(points_fj3: np.ndarray, pelvis_f3: np.ndarray, heading_f3: np.ndarray,
               vertical: int, leg_mm: float) -> np.ndarray:
    """Points [F, J, 3] (lab, mm) of one stride -> the body frame of the module docstring."""
    f = len(points_fj3)
    up = np.zeros(3)
    up[vertical] = 1.0
    fwd = np.nanmean(heading_f3, axis=0)
    fwd = fwd - fwd @ up * up
    fwd = fwd / np.linalg.norm(fwd)
    rot = np.stack([fwd, np.cross(up, fwd), up])  # rows: x forward, y left, z up
    t = np.arange(f, dtype=np.float64)
    ok = np.isfinite(pelvis_f3).all(-1)
    origin = np.empty((f, 3))
    for k in range(3):  # the walking line: a straight fit per axis (the height: its mean)
        if k == vertical:
            origin[:, k] = pelvis_f3[ok, k].mean()
        else:
            origin[:, k] = np.polyval(np.polyfit(t[ok], pelvis_f3[ok, k], 1), t)
    return 100.0 * np.einsum("ck,fjk->fjc", rot, points_fj3 - origin[:, None]) / leg_mm


def points(centres: dict[str, np.ndarray]) -> np.ndarray:
    """The joint set's centres [F, J, 3] (lab, mm) in canonical order."""
    return np.stack([centres[n] for n in joints_lib.joint_names(JOINT_SET)], axis=1)


SAGITTAL = ("hip", "knee", "ankle")


def _pitch(v: np.ndarray) -> np.ndarray:
    """Sagittal direction (deg) of body-frame vectors [..., 3]: 0 = pointing down, + = the
    distal end forward (x forward, z up)."""
    return np.degrees(np.arctan2(v[..., 0], -v[..., 2]))


def sagittal_angles(pos_tj3: np.ndarray, side: str) -> np.ndarray:
    """[T, 3] hip, knee and ankle sagittal angles (deg) of one side from the segment directions
    in the body frame: hip = the thigh's angle to the vertical (flexion +; the pelvis tilt is
    not in a skeleton), knee = thigh minus shank (flexion +), ankle = foot (heel -> toe)
    against the shank's perpendicular (dorsiflexion +)."""
    names = joints_lib.joint_names(JOINT_SET)
    p = {k: pos_tj3[:, names.index(f"{side}{k}")] for k in ("HJC", "KJC", "AJC", "HEEL", "TOE")}
    thigh, shank = _pitch(p["KJC"] - p["HJC"]), _pitch(p["AJC"] - p["KJC"])
    foot = np.degrees(np.arctan2(p["TOE"][..., 2] - p["HEEL"][..., 2],
                                 p["TOE"][..., 0] - p["HEEL"][..., 0]))  # 0 = level, + = toe up
    return np.stack([thigh, thigh - shank, foot - shank], axis=-1)
