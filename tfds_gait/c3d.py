"""Plug-in-Gait C3D reader: joint angles, the markers events need, and the marked events."""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from tfds_gait import joints as joints_lib
from tfds_gait.errors import GaitDataError

# Markers used for event detection and walking speed (any missing one is simply absent).
EVENT_MARKERS = ("LHEE", "RHEE", "LTOE", "RTOE", "LASI", "RASI", "LPSI", "RPSI", "SACR")
MIN_FRAMES = 20
_CONTEXT = {"left": "L", "right": "R"}
_EVENT = {"foot strike": "strike", "foot off": "off"}


@dataclasses.dataclass(frozen=True)
class Trial:
    """One C3D trial: angles in degrees (NaN = missing), markers in mm, marked events."""

    path: str
    subject: str
    trial: str
    rate: float
    first_frame: int
    joint_names: tuple[str, ...]
    angles: np.ndarray                  # float32 [F, J, 3], degrees, NaN where missing
    markers: dict[str, np.ndarray]      # name -> float32 [F, 3], mm, NaN where missing
    events: dict[str, dict[str, np.ndarray]]  # 'L'/'R' -> 'strike'/'off' -> data indices

    @property
    def num_frames(self) -> int:
        """Number of frames in the trial."""
        return self.angles.shape[0]


def _open(path: str):
    """Opens a C3D with ezc3d, turning every failure into a GaitDataError."""
    import ezc3d  # local import: the builder module imports without ezc3d installed

    if not os.path.isfile(path):
        raise GaitDataError(path, "file not found")
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 2 or raw[1] != 0x50:
        raise GaitDataError(path, "not a C3D file (no C3D header signature)")
    _check_parameters(path, raw)
    try:
        return ezc3d.c3d(path)
    except Exception as e:  # ezc3d raises plain RuntimeError/IOError on corrupt files
        raise GaitDataError(path, f"corrupt or truncated C3D ({type(e).__name__}: {e})") from None


_REQUIRED = ("USED", "SCALE", "RATE", "DATA_START", "FRAMES")  # POINT: ezc3d indexes them


def _check_parameters(path: str, raw: bytes) -> None:
    """Walks the parameter records; ezc3d segfaults on some corrupt ones (e.g. bad types).

    Each record must stay inside its own extent (the next record's offset) and the section.
    """
    start = (raw[0] - 1) * 512
    if raw[0] < 2 or start + 4 > len(raw):
        raise GaitDataError(path, "corrupt C3D: the parameter section is outside the file")
    order = "big" if raw[start + 3] == 86 else "little"  # 86: MIPS processor type
    end, pos = start + max(raw[start + 2], 1) * 512, start + 4
    if end > len(raw):  # ezc3d can loop forever on a cut parameter section
        raise GaitDataError(path, f"truncated C3D: {len(raw)} bytes, the parameter section "
                                  f"alone needs {end}")
    i8 = lambda b: b - 256 if b > 127 else b
    groups = {}
    while pos + 4 <= end and raw[pos] != 0:
        name_end = pos + 2 + abs(i8(raw[pos]))
        name = bytes(raw[pos + 2:name_end]).decode("latin-1").strip().upper()
        if name_end + 3 > end:
            raise GaitDataError(path, f"corrupt C3D: record at byte {pos} overruns the "
                                      "parameter section")
        offset = int.from_bytes(raw[name_end:name_end + 2], order, signed=True)
        stop = end if offset <= 0 else min(end, name_end + offset)
        body = name_end + 2
        if i8(raw[pos + 1]) > 0:  # a parameter (groups have negative ids)
            kind, ndims = i8(raw[body]), raw[body + 1] if body + 1 < end else 0
            if kind not in (-1, 1, 2, 4) or (kind == -1 and ndims == 0):  # ezc3d segfaults
                raise GaitDataError(path, f"corrupt C3D: parameter at byte {pos} has data "
                                          f"type {kind} with {ndims} dimensions")
            dims = list(raw[body + 2:body + 2 + ndims])
            size = abs(kind) * math.prod(dims)
            if size == 0 and groups.get(i8(raw[pos + 1])) == "POINT" and name in _REQUIRED:
                raise GaitDataError(path, f"corrupt C3D: POINT:{name} is empty")
            body += 2 + ndims + size
        else:
            groups[-i8(raw[pos + 1])] = name
        if body >= stop or raw[body] > 127 or body + 1 + raw[body] > stop:  # description
            raise GaitDataError(path, f"corrupt C3D: record at byte {pos} overruns its extent")
        if offset <= 0:
            break
        pos = name_end + offset
    if pos + 4 > end:
        raise GaitDataError(path, "corrupt C3D: the parameter records run past their section")


def _declared_frames(path: str) -> int:
    """Frame count the raw C3D header declares (last - first + 1; ezc3d reports what it read)."""
    with open(path, "rb") as f:
        head = f.read(10)
    first, last = int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    return last - first + 1 if len(head) == 10 and last >= first else 0


def _labels(params: dict) -> list[str]:
    """All point labels: POINT:LABELS then LABELS2, LABELS3, ..."""
    point = params["POINT"]
    labels = list(point["LABELS"]["value"])
    k = 2
    while f"LABELS{k}" in point:
        labels += list(point[f"LABELS{k}"]["value"])
        k += 1
    return [str(s).strip() for s in labels]


def _points(c, path: str) -> tuple[np.ndarray, list[str]]:
    """Point data [F, P, 3] float32 with Vicon gaps (exact zeros) as NaN, and labels."""
    data = np.asarray(c["data"]["points"], np.float64)[:3]  # 3 x P x F
    labels = _labels(c["parameters"])
    if data.shape[1] != len(labels):
        labels = labels[: data.shape[1]]
    pts = np.transpose(data, (2, 1, 0)).astype(np.float32)
    gap = np.all(pts == 0.0, axis=-1)
    pts[gap] = np.nan
    return pts, labels


def _angle_units(params: dict) -> str:
    """POINT:ANGLE_UNITS, lower case ('deg' when absent)."""
    units = params["POINT"].get("ANGLE_UNITS", {}).get("value", ["deg"])
    return str(units[0]).strip().lower() if len(units) else "deg"


def _angles(pts: np.ndarray, labels: list[str], names: tuple[str, ...], path: str) -> np.ndarray:
    """Stacks the joint angles [F, J, 3] in canonical order, or lists what is missing."""
    index = {lab: i for i, lab in enumerate(labels)}
    missing = [joints_lib.c3d_label(j) for j in names if joints_lib.c3d_label(j) not in index]
    if missing:
        found = sorted(lab for lab in labels if "Angle" in lab)
        raise GaitDataError(path, f"missing angle labels {missing}; angle labels found: "
                                  f"{found or 'none'}")
    return np.stack([pts[:, index[joints_lib.c3d_label(j)]] for j in names], axis=1)


def check_degrees(angles: np.ndarray, names: tuple[str, ...], path: str) -> None:
    """Rejects angles that look like radians (knee flexion range under 5 units)."""
    knees = [i for i, j in enumerate(names) if j.endswith("Knee")]
    if not knees:
        return
    sag = angles[:, knees, 0]
    if np.isfinite(sag).sum() < MIN_FRAMES:
        raise GaitDataError(path, "knee angles are all missing (NaN)")
    span = np.nanmax(sag, axis=0) - np.nanmin(sag, axis=0)
    if np.nanmax(span) < 5.0:
        raise GaitDataError(path, f"knee flexion spans only {np.nanmax(span):.2f} units over the "
                                  "trial: angles look like radians, degrees are expected")


def _events(params: dict, rate: float, first_frame: int, num_frames: int) -> dict:
    """Marked events inside the trial as sorted unique data indices, per side and type."""
    out = {s: {"strike": np.zeros(0), "off": np.zeros(0)} for s in ("L", "R")}
    ev = params.get("EVENT", {})
    if "TIMES" not in ev or "LABELS" not in ev or "CONTEXTS" not in ev:
        return out
    times = np.asarray(ev["TIMES"]["value"], np.float64).reshape(2, -1)
    seconds = times[0] * 60.0 + times[1]
    used = int(np.asarray(ev.get("USED", {}).get("value", [len(seconds)])).ravel()[0])
    contexts = [str(s).strip().lower() for s in ev["CONTEXTS"]["value"]][:used]
    kinds = [str(s).strip().lower() for s in ev["LABELS"]["value"]][:used]
    collected = {s: {"strike": [], "off": []} for s in ("L", "R")}
    for t, ctx, kind in zip(seconds[:used], contexts, kinds):
        if ctx in _CONTEXT and kind in _EVENT:
            idx = int(round(t * rate)) - first_frame
            if 0 <= idx < num_frames:
                collected[_CONTEXT[ctx]][_EVENT[kind]].append(idx)
    for s in collected:
        for k, v in collected[s].items():
            out[s][k] = np.unique(np.asarray(v, np.float64))
    return out


def subject_from_path(path: str) -> str:
    """Documented rule: the parent folder's name, or the stem before '_' for a bare file."""
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    stem = os.path.splitext(os.path.basename(path))[0]
    return parent or stem.split("_")[0]


def read_trial(path: str | os.PathLike, joint_set: str = "lower",
               subject: str | None = None) -> Trial:
    """Reads one Plug-in-Gait C3D trial (see module docstring); raises GaitDataError."""
    path = os.fspath(path)
    c = _open(path)
    params = c["parameters"]
    rate = float(np.asarray(params["POINT"]["RATE"]["value"]).ravel()[0])
    if not np.isfinite(rate) or rate <= 0:
        raise GaitDataError(path, f"invalid point rate {rate}")
    pts, labels = _points(c, path)
    declared = _declared_frames(path)
    if pts.shape[0] < declared:  # ezc3d silently returns the frames before the cut
        raise GaitDataError(path, f"truncated or corrupt: holds {pts.shape[0]} of the "
                                  f"{declared} frames its header declares")
    if pts.shape[0] < MIN_FRAMES:
        raise GaitDataError(path, f"only {pts.shape[0]} frames; at least {MIN_FRAMES} needed")
    names = joints_lib.joint_names(joint_set)
    angles = _angles(pts, labels, names, path)
    if _angle_units(params).startswith("rad"):
        raise GaitDataError(path, "POINT:ANGLE_UNITS is radians; degrees are expected")
    check_degrees(angles, names, path)
    index = {lab: i for i, lab in enumerate(labels)}
    markers = {m: pts[:, index[m]] for m in EVENT_MARKERS if m in index}
    first = int(c["header"]["points"]["first_frame"])
    events = _events(params, rate, first, pts.shape[0])
    stem = os.path.splitext(os.path.basename(path))[0]
    return Trial(path=path, subject=subject or subject_from_path(path), trial=stem, rate=rate,
                 first_frame=first, joint_names=names, angles=angles, markers=markers,
                 events=events)
