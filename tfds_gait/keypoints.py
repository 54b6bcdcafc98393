"""3D keypoints of a pose estimator or a markerless system -> a Trial with joint centres.

Input: `points` [frames, K, 3], the K keypoint names and the frame rate (an .npz with
`keypoints`, `joint_names`, `rate`, or a wide CSV: `read_csv`). Names are matched to
the skeleton's points through ALIASES (OpenPose / Halpe / COCO / MediaPipe spellings, the
skeleton's own names; case, spaces, dots and underscores ignored); the pelvis centre is the
`MidHip` keypoint or else the mean of the hips. Units are found from the leg length (m, cm or
mm); the vertical axis is the one along which the hips lie above the ankles. The heading comes
from the hips (left-to-right line x up), events from the feet (`tfds_gait.events`).
"""

from __future__ import annotations

import os

import numpy as np

from tfds_gait import joints as joints_lib
from tfds_gait import kinematics as kin_lib
from tfds_gait import skeleton
from tfds_gait.c3d import MIN_FRAMES, Trial
from tfds_gait.errors import GaitDataError

ALIASES = {
    "HJC": ("hjc", "hip"), "KJC": ("kjc", "knee"), "AJC": ("ajc", "ankle"),
    "HEEL": ("heel",), "TOE": ("toe", "bigtoe", "foot_index", "footindex"),
}
PELVIS_ALIASES = ("pelvis", "midhip", "hip", "chip", "root")
SIDE_WORDS = {"L": ("l", "left"), "R": ("r", "right")}
LEG_MM = (300.0, 1300.0)  # plausible leg lengths: the units follow from the file's
UNIT_SCALES = (("m", 1000.0), ("cm", 10.0), ("mm", 1.0))


def read_csv(path: str) -> tuple[np.ndarray, list[str], float]:
    """(points [frames, K, 3], names, rate) of a wide keypoint CSV: a `time` column (seconds)
    and `<name>_x`, `<name>_y`, `<name>_z` columns per keypoint (empty cells: missing)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            head = [h.strip() for h in f.readline().split(",")]
            rows = [line.rstrip("\r\n").split(",") for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise GaitDataError(path, f"cannot read as CSV text ({type(e).__name__})") from None
    lower = [h.lower() for h in head]
    if "time" not in lower:
        raise GaitDataError(path, "no 'time' column (seconds) to give the frame rate")
    names = [h[:-2] for h in head if h.lower().endswith("_x")]
    cols = {h.lower(): i for i, h in enumerate(head)}
    missing = [f"{n}_{a}" for n in names for a in "yz" if f"{n}_{a}".lower() not in cols]
    if not names or missing:
        raise GaitDataError(path, "expected <name>_x, <name>_y, <name>_z columns per keypoint"
                                  + (f" (missing: {', '.join(missing[:6])})" if missing else ""))
    num = lambda r, i: float(r[i]) if i < len(r) and r[i].strip() else np.nan
    try:
        t = np.array([num(r, cols["time"]) for r in rows])
        pts = np.array([[[num(r, cols[f"{n}_{a}".lower()]) for a in "xyz"] for n in names]
                        for r in rows])
    except ValueError as e:
        raise GaitDataError(path, f"a value is not a number ({e})") from None
    dt = np.diff(t[np.isfinite(t)])
    if dt.size == 0 or not np.all(dt > 0):
        raise GaitDataError(path, "the time column does not increase")
    return pts, names, float(1.0 / np.median(dt))


def _key(name: str) -> str:
    """A name without case, spaces, dots, dashes and underscores."""
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def _spellings(side: str, aliases: tuple[str, ...]) -> set[str]:
    """Every accepted spelling of one sided point ('LKnee', 'left_knee', 'l.knee', ...)."""
    return {_key(w + a) for w in SIDE_WORDS[side] for a in aliases}


def match_names(names) -> dict[str, int]:
    """Skeleton point -> index into `names` (points that have no keypoint are left out)."""
    index = {_key(n): i for i, n in enumerate(names)}
    out = {}
    for side in joints_lib.SIDES:
        for point, aliases in ALIASES.items():
            hit = next((index[k] for k in _spellings(side, aliases) if k in index), None)
            if hit is not None:
                out[side + point] = hit
    pelvis = next((index[_key(a)] for a in PELVIS_ALIASES if _key(a) in index), None)
    if pelvis is not None:
        out["PELVIS"] = pelvis
    return out


def _units(path: str, leg: float) -> float:
    """mm per file unit from the median leg length (hip-knee + knee-ankle, file units)."""
    for _, scale in UNIT_SCALES:
        if LEG_MM[0] <= leg * scale <= LEG_MM[1]:
            return scale
    raise GaitDataError(path, f"leg length {leg:.3g} (hip-knee-ankle) fits no unit (m, cm, mm):"
                              " wrong units or wrong joint names?")


def _unit_name(scale: float) -> str:
    """'m' / 'cm' / 'mm' of a scale of UNIT_SCALES."""
    return next(u for u, s in UNIT_SCALES if s == scale)


def _vertical(path: str, hips: np.ndarray, ankles: np.ndarray) -> int:
    """The lab axis along which the hips are above the ankles (error if it points down)."""
    d = np.nanmean(hips - ankles, axis=0)
    axis = int(np.argmax(np.abs(d)))
    if d[axis] < 0:
        raise GaitDataError(path, f"axis {'xyz'[axis]} points down (the hips are below the "
                                  "ankles): flip it so that the vertical axis points up")
    return axis


def trial_from_points(path: str, points: np.ndarray, names, rate: float) -> Trial:
    """A Trial (no angles; joint centres, heel/toe and hip roles for events) of keypoints."""
    pts = np.asarray(points, np.float64)
    if pts.ndim != 3 or pts.shape[-1] != 3 or pts.shape[1] != len(names):
        raise GaitDataError(path, f"keypoints have shape {pts.shape}; expected [frames, "
                                  f"{len(names)} joints, 3]")
    if not np.isfinite(rate) or rate <= 0:
        raise GaitDataError(path, f"invalid frame rate {rate}")
    if len(pts) < MIN_FRAMES:
        raise GaitDataError(path, f"only {len(pts)} frames; at least {MIN_FRAMES} needed")
    found = match_names(names)
    sided = [s + p for s in joints_lib.SIDES for p in ALIASES]
    missing = [p for p in sided if p not in found]
    if missing:
        raise GaitDataError(path, f"no keypoint for {', '.join(joints_lib.pretty(p) for p in missing)}"
                                  f" (names: {', '.join(map(str, names))})")
    c = {p: pts[:, i] for p, i in found.items()}
    for p, x in c.items():
        ok = np.isfinite(x).all(-1)
        if ok.mean() < 0.5:
            raise GaitDataError(path, f"{joints_lib.pretty(p)} is missing in "
                                      f"{100 * (1 - ok.mean()):.0f} % of the frames")
        if ok.sum() > 1 and np.ptp(x[ok], axis=0).max() == 0:
            raise GaitDataError(path, f"{joints_lib.pretty(p)} is frozen (the same position "
                                      "in every frame)")
    scale = _units(path, skeleton.leg_length_mm(c, 0, len(pts) - 1))  # file units here
    c = {p: x * scale for p, x in c.items()}
    c.setdefault("PELVIS", (c["LHJC"] + c["RHJC"]) / 2)
    vertical = _vertical(path, c["PELVIS"], (c["LAJC"] + c["RAJC"]) / 2)
    kin = kin_lib.Kinematics("keypoints", c, {}, np.full((len(pts), 10, 3), np.nan), vertical,
                             ())
    markers = {f"{s}{k}": c[f"{s}{k}"] for s in joints_lib.SIDES for k in ("HEEL", "TOE", "HJC")}
    names10 = joints_lib.joint_names("lower")
    stem = os.path.splitext(os.path.basename(path))[0]
    return Trial(path=path, subject=stem, trial=stem, rate=float(rate), first_frame=1,
                 joint_names=names10, angles=np.full((len(pts), len(names10), 3), np.nan,
                                                     np.float32),
                 markers=markers, events={s: {"strike": np.zeros(0), "off": np.zeros(0)}
                                          for s in joints_lib.SIDES},
                 angle_source="keypoints", marker_set="keypoints", vertical=vertical,
                 kinematics=kin, notes=(f"keypoints in {_unit_name(scale)}, vertical axis "
                                        f"{'xyz'[vertical]}; events detected from the feet",))
