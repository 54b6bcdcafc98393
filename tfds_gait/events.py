"""Gait events from markers (Zeni et al. 2008) and their merge with the marked events.

Zeni JA, Richards JG, Higginson JS. Two simple methods for determining gait events during
treadmill and overground walking using kinematic data. Gait Posture 2008;27(4):710-714.
Foot strike = the heel is furthest in front of the pelvis; foot off = the toe is furthest
behind it, both along the pelvis' own anterior axis (ASIS midpoint minus the sacrum or PSIS
midpoint, horizontal), so the same rule works on a treadmill, overground and through turns.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from tfds_gait.c3d import Trial
from tfds_gait.errors import GaitDataError

MIN_STEP_S = 0.35      # two same-foot events are at least this far apart
MERGE_TOL_S = 0.15     # a detected event this close to a marked one is the same event


def _fill(x: np.ndarray) -> np.ndarray:
    """Linearly fills NaN frames of a [F, ...] signal (edges held)."""
    x = np.array(x, np.float64)
    flat = x.reshape(len(x), -1)
    t = np.arange(len(x))
    for k in range(flat.shape[1]):
        ok = np.isfinite(flat[:, k])
        if ok.sum() >= 2:
            flat[:, k] = np.interp(t, t[ok], flat[ok, k])
    return flat.reshape(x.shape)


def pelvis_frame(trial: Trial) -> tuple[np.ndarray, np.ndarray]:
    """Pelvis centre [F, 3] and horizontal unit anterior axis [F, 3] from the pelvis markers
    (roles of `tfds_gait.marker_sets`: ASIS, and PSIS or the sacrum), or for keypoints from the
    hip centres (`LHJC`, `RHJC`: forward = left-to-right x up)."""
    m = trial.markers
    if "LASIS" not in m and "LHJC" in m and "RHJC" in m:  # keypoints: the hip line
        up = np.zeros(3)
        up[trial.vertical] = 1.0
        left, right = _fill(m["LHJC"]), _fill(m["RHJC"])
        axis = np.cross(left - right, up)
        norm = np.linalg.norm(axis, axis=-1, keepdims=True)
        if not np.all(np.isfinite(norm)) or np.any(norm < 1e-6):
            raise GaitDataError(trial.path, "hip keypoints are missing or degenerate")
        return (left + right) / 2.0, axis / norm
    if "LASIS" not in m or "RASIS" not in m:
        raise GaitDataError(trial.path, "no left/right ASIS markers (LASI/RASI or the marker "
                                        "set's equivalent) to find the walking direction")
    front = (m["LASIS"] + m["RASIS"]) / 2.0
    if "SACRUM" in m:
        back = m["SACRUM"]
    elif "LPSIS" in m and "RPSIS" in m:
        back = (m["LPSIS"] + m["RPSIS"]) / 2.0
    else:
        raise GaitDataError(trial.path, "no PSIS or sacrum markers to find the walking "
                                        "direction")
    front, back = _fill(front), _fill(back)
    axis = front - back
    axis[:, trial.vertical] = 0.0
    norm = np.linalg.norm(axis, axis=-1, keepdims=True)
    if not np.all(np.isfinite(norm)) or np.any(norm < 1e-6):
        raise GaitDataError(trial.path, "pelvis markers are missing or degenerate")
    return (front + back) / 2.0, axis / norm


def _peaks(x: np.ndarray, rate: float) -> np.ndarray:
    """Prominent local maxima of x, at least MIN_STEP_S apart (data indices)."""
    span = np.nanpercentile(x, 95) - np.nanpercentile(x, 5)
    idx, _ = signal.find_peaks(x, distance=max(1, int(MIN_STEP_S * rate)),
                               prominence=0.3 * span)
    return idx.astype(np.float64)


def detect_events(trial: Trial) -> dict[str, dict[str, np.ndarray]]:
    """Foot strikes and foot offs per side from heel/toe markers relative to the pelvis."""
    centre, axis = pelvis_frame(trial)
    out = {}
    for side in ("L", "R"):
        heel, toe = trial.markers.get(f"{side}HEEL"), trial.markers.get(f"{side}TOE")
        if heel is None or toe is None:
            raise GaitDataError(trial.path, f"no {side} heel/toe markers to detect events")
        if np.isfinite(heel).all(axis=-1).mean() < 0.5:
            raise GaitDataError(trial.path, f"the {side} heel marker is missing in most frames")
        h = np.sum((_fill(heel) - centre) * axis, axis=-1)
        t = np.sum((_fill(toe) - centre) * axis, axis=-1)
        out[side] = {"strike": _peaks(h, trial.rate), "off": _peaks(-t, trial.rate)}
    return out


def merge_events(marked: np.ndarray, detected: np.ndarray, rate: float) -> np.ndarray:
    """Marked events plus the detected ones not within MERGE_TOL_S of a marked event."""
    tol = MERGE_TOL_S * rate
    extra = [d for d in detected if marked.size == 0 or np.min(np.abs(marked - d)) > tol]
    return np.sort(np.concatenate([marked, np.asarray(extra, np.float64)]))


def frame_errors(marked: np.ndarray, detected: np.ndarray, rate: float) -> np.ndarray:
    """Signed detected - marked frame differences of the marked events that were detected."""
    tol = 2 * MERGE_TOL_S * rate
    errs = []
    for m in marked:
        if detected.size:
            d = detected[np.argmin(np.abs(detected - m))]
            if abs(d - m) <= tol:
                errs.append(d - m)
    return np.asarray(errs, np.float64)
