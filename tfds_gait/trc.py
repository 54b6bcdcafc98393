"""OpenSim / OpenCap `.trc` marker files: labels, points [F, P, 3] and the frame rate.

The format: a `PathFileType` line, a line of header names (`DataRate`, `CameraRate`,
`NumFrames`, `NumMarkers`, `Units`, ...) and one of their values, the marker names (every third
column from the third), a line of X1 Y1 Z1 ..., then one row per frame: frame number, time,
x y z of every marker (an empty or NaN field: missing). OpenCap writes metres with Y up; the
C3D reader's pipeline (`tfds_gait.c3d.read_trial`) takes it from here: units, vertical axis,
marker set (OpenCap's augmented `*_study` markers are the `opencap` set), events detected
from the feet (a .trc has none).
"""

from __future__ import annotations

import numpy as np

from tfds_gait.errors import GaitDataError


def _fields(line: str) -> list[str]:
    """Tab-separated fields (whitespace-separated where a writer used spaces)."""
    parts = line.rstrip("\r\n").split("\t")
    return parts if len(parts) > 1 else line.split()


def _number(text: str) -> float:
    """A data field as a float (empty or unreadable: NaN)."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def read_points(path: str) -> tuple[dict, np.ndarray, list[str], float, int]:
    """(C3D-like params with POINT:UNITS, points [F, P, 3], labels, rate, first frame)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise GaitDataError(path, f"cannot read ({e.strerror or e})") from None
    if len(lines) < 6 or not lines[0].startswith("PathFileType"):
        raise GaitDataError(path, "not a .trc marker file (no PathFileType header)")
    header = dict(zip(_fields(lines[1]), _fields(lines[2])))
    rate = _number(header.get("DataRate", header.get("CameraRate", "")))
    if not np.isfinite(rate) or rate <= 0:
        raise GaitDataError(path, f"no valid DataRate in the header ({header.get('DataRate')!r})")
    labels = [x.strip() for x in _fields(lines[3])[2:] if x.strip()]
    declared = int(_number(header.get("NumMarkers", "nan"))) if np.isfinite(
        _number(header.get("NumMarkers", "nan"))) else len(labels)
    if not labels or declared != len(labels):
        raise GaitDataError(path, f"{len(labels)} marker names for NumMarkers={declared}")
    rows, frames = [], []
    for line in lines[5:]:
        f = _fields(line)
        if len(f) < 3 or not f[0].strip():
            continue
        frames.append(_number(f[0]))
        vals = [_number(v) for v in f[2:2 + 3 * len(labels)]]
        rows.append(vals + [np.nan] * (3 * len(labels) - len(vals)))
    if not rows:
        raise GaitDataError(path, "no frames")
    pts = np.asarray(rows, np.float64).reshape(len(rows), len(labels), 3)
    first = int(frames[0]) if np.isfinite(frames[0]) else 1
    units = header.get("Units", "mm").strip().lower()
    return {"POINT": {"UNITS": {"value": [units]}}}, pts, labels, float(rate), first
