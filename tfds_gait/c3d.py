"""C3D (and OpenSim .trc) trial reader: joint angles (Plug-in-Gait outputs, or computed from
the markers of any known marker set), markers by anatomical role, subject measurements and the
marked events.

`read_trial(path, angles="auto")` takes the file's Plug-in-Gait angle outputs when it has
them (what a clinician sees in Nexus / Polygon) and the marker kinematics of
`tfds_gait.kinematics` when not; `angles="plugin_gait"` or `"markers"` forces one. Markers
are in mm (`POINT:UNITS` m / cm are converted); a static trial next to the file (same folder,
name with `_ST`, `static` or `cal`) calibrates the marker model when there is one.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import re

import numpy as np

from tfds_gait import joints as joints_lib
from tfds_gait import kinematics as kin_lib
from tfds_gait import marker_sets, trc
from tfds_gait.errors import GaitDataError

MIN_FRAMES = 20
ANGLE_SOURCES = ("auto", "plugin_gait", "markers")
INTER_ASIS_MM = (100.0, 500.0)  # plausible ASIS distance: outside, the units are wrong
MIN_HEEL_RANGE_MM = 100.0        # heels moving less than this relative to the pelvis: static
_UNIT_SCALE = {"mm": 1.0, "m": 1000.0, "cm": 10.0}
_STATIC_NAME = re.compile(r"(^|[_\-\s.])(st|static|cal|calib)([_\-\s.\d]|$)")


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
    markers: dict[str, np.ndarray]      # role ('LHEEL') -> float32 [F, 3], mm, NaN = missing
    events: dict[str, dict[str, np.ndarray]]  # 'L'/'R' -> 'strike'/'off' -> data indices
    angle_source: str = "plugin_gait"   # 'plugin_gait' (the file's outputs) or 'markers'
    marker_set: str | None = None       # the detected marker set (tfds_gait.marker_sets)
    vertical: int = 2                   # lab axis pointing up
    kinematics: kin_lib.Kinematics | None = None  # joint centres and frames (marker sets)
    notes: tuple[str, ...] = ()         # what was estimated or ignored on the way
    anthropometrics: dict[str, float] = dataclasses.field(default_factory=dict)  # PROCESSING

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


# Event label (lower case, side and trailing digits removed) -> kind. Vicon writes
# 'Foot Strike' / 'Foot Off' with a Left/Right context; Schreiber 2019 'Foot Strike1' /
# 'Foot Strike2'; Fukuchi 2018 'LHS' / 'RTO' without contexts.
EVENT_KINDS = {"foot strike": "strike", "foot contact": "strike", "heel strike": "strike",
               "initial contact": "strike", "heel contact": "strike", "hs": "strike",
               "fs": "strike", "ic": "strike", "hc": "strike", "fc": "strike",
               "foot off": "off", "toe off": "off", "to": "off", "fo": "off"}
SIDE_WORDS = {"left": "L", "l": "L", "right": "R", "r": "R"}  # also an .npz's `side`


def parse_event(label: str, context: str = "") -> tuple[str | None, str | None]:
    """(side, kind) of one event: 'Foot Strike1'+'Left' -> ('L', 'strike'), 'RTO' -> ('R',
    'off'); (None, None) for an unknown label (e.g. Fukuchi's force-plate 'LON')."""
    text = re.sub(r"[\s_\-.]*\d+$", "", label.strip().lower())
    side = SIDE_WORDS.get(context.strip().lower())
    m = re.match(r"^(left|right|l|r)[\s_\-.]*(.+)$", text)
    if m and m.group(2) in EVENT_KINDS:
        side, text = side or SIDE_WORDS[m.group(1)], m.group(2)
    kind = EVENT_KINDS.get(text)
    return (side, kind) if side and kind else (None, None)


def _events(params: dict, rate: float, first_frame: int, num_frames: int,
            notes: list) -> dict:
    """Marked events inside the trial as sorted unique data indices, per side and type."""
    out = {s: {"strike": np.zeros(0), "off": np.zeros(0)} for s in ("L", "R")}
    ev = params.get("EVENT", {})
    if "TIMES" not in ev or "LABELS" not in ev:
        return out
    times = np.asarray(ev["TIMES"]["value"], np.float64).reshape(2, -1)
    seconds = times[0] * 60.0 + times[1]
    used = int(np.asarray(ev.get("USED", {}).get("value", [len(seconds)])).ravel()[0])
    labels = [str(s) for s in ev["LABELS"]["value"]][:used]
    contexts = [str(s) for s in ev.get("CONTEXTS", {}).get("value", [])][:used]
    contexts += [""] * (len(labels) - len(contexts))
    collected = {s: {"strike": [], "off": []} for s in ("L", "R")}
    unknown = collections.Counter()
    for t, label, ctx in zip(seconds[:used], labels, contexts):
        side, kind = parse_event(label, ctx)
        if kind is None:
            unknown[label.strip()] += 1
            continue
        idx = int(round(t * rate)) - first_frame
        if 0 <= idx < num_frames:
            collected[side][kind].append(idx)
    if unknown:
        notes.append("ignored events with unknown labels: " + ", ".join(
            f"{k} x{v}" for k, v in sorted(unknown.items())))
    for s in collected:
        for k, v in collected[s].items():
            out[s][k] = np.unique(np.asarray(v, np.float64))
    return out


def subject_from_path(path: str) -> str:
    """Documented rule: the parent folder's name, or the stem before '_' for a bare file."""
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    stem = os.path.splitext(os.path.basename(path))[0]
    return parent or stem.split("_")[0]


def is_static_name(path: str) -> bool:
    """True for names of static (standing calibration) trials: '..._ST', 'Static 1', 'Cal'."""
    return bool(_STATIC_NAME.search(os.path.splitext(os.path.basename(path))[0].lower()))


def find_static(path: str) -> str | None:
    """The static trial in the same folder as `path` (the first by name), or None."""
    folder = os.path.dirname(os.path.abspath(path))
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(".c3d")
                   and is_static_name(f) and os.path.join(folder, f) != os.path.abspath(path))
    return os.path.join(folder, names[0]) if names else None


def anthropometrics(params: dict) -> dict[str, float]:
    """height_mm, mass_kg, age_years, leg_length_mm from PROCESSING (the ones present)."""
    proc = params.get("PROCESSING", {})
    get = lambda k: (float(np.ravel(proc[k]["value"])[0]) if k in proc and
                     len(np.ravel(proc[k]["value"])) else np.nan)
    vals = {"height_mm": get("Height"), "mass_kg": get("Bodymass"), "age_years": get("Age"),
            "leg_length_mm": float(np.nanmean([get("LLegLength"), get("RLegLength")]))
            if np.isfinite([get("LLegLength"), get("RLegLength")]).any() else np.nan}
    return {k: v for k, v in vals.items() if np.isfinite(v) and v > 0}


def _point_units(params: dict, path: str) -> float:
    """mm per marker unit from POINT:UNITS (mm when absent)."""
    units = params["POINT"].get("UNITS", {}).get("value", ["mm"])
    u = str(units[0]).strip().lower() if len(units) else "mm"
    if u not in _UNIT_SCALE:
        raise GaitDataError(path, f"POINT:UNITS is {u!r}; expected mm, cm or m")
    return _UNIT_SCALE[u]


def _role_markers(ms: marker_sets.MarkerSet, pts: np.ndarray, labels: list[str],
                  scale: float) -> dict[str, np.ndarray]:
    """role -> [F, 3] mm (the mean of the role's labels)."""
    return {role: (pts[:, idx].mean(axis=1) if len(idx) > 1 else pts[:, idx[0]]) * scale
            for role, idx in marker_sets.role_labels(ms, labels).items()}


def _best_partial(labels: list[str]) -> marker_sets.MarkerSet:
    """The known set with the most roles present (for event markers when angles are given)."""
    return max(marker_sets.MARKER_SETS, key=lambda ms: len(marker_sets.role_labels(ms, labels)))


def _check_marker_units(path: str, markers: dict[str, np.ndarray]) -> None:
    """The ASIS distance must be anatomical in mm: else the units are wrong."""
    if "LASIS" not in markers or "RASIS" not in markers:
        return
    d = np.linalg.norm(markers["LASIS"] - markers["RASIS"], axis=-1)
    if not np.isfinite(d).any():
        return
    med = float(np.nanmedian(d))
    if not INTER_ASIS_MM[0] <= med <= INTER_ASIS_MM[1]:
        hint = "metres" if med < 1.0 else "cm" if med < 50 else "unknown units"
        raise GaitDataError(path, f"the ASIS markers are {med:.3g} mm apart (expected "
                                  f"{INTER_ASIS_MM[0]:.0f}-{INTER_ASIS_MM[1]:.0f}): markers "
                                  f"look like {hint}; set POINT:UNITS or convert to mm")


def _check_moving(path: str, markers: dict[str, np.ndarray], vertical: int) -> None:
    """A standing (static) trial given as a walk: the heels barely move relative to the pelvis."""
    need = ("LASIS", "RASIS", "LHEEL", "RHEEL")
    if not all(k in markers for k in need):
        return
    centre = (markers["LASIS"] + markers["RASIS"]) / 2
    rel = np.delete(markers["LHEEL"] - centre, vertical, axis=-1)
    span = np.nanmax(np.nanpercentile(rel, 95, axis=0) - np.nanpercentile(rel, 5, axis=0))
    if np.isfinite(span) and span < MIN_HEEL_RANGE_MM:
        raise GaitDataError(path, f"the heels move only {span:.0f} mm relative to the pelvis: "
                                  "a static (standing) trial, not a walk")


def _read_points(path: str):
    """(first frame, params, points [F, P, 3], labels, rate) of a .c3d (with the frame
    checks) or a .trc (`tfds_gait.trc`: params hold POINT:UNITS only)."""
    if path.lower().endswith(".trc"):
        params, pts, labels, rate, first = trc.read_points(path)
        return first, params, pts, labels, rate
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
    return int(c["header"]["points"]["first_frame"]), params, pts, labels, rate


def read_markers(path: str, ms: marker_sets.MarkerSet) -> dict[str, np.ndarray]:
    """The role markers (mm) of a trial in marker set `ms` (a static trial, any frame count)."""
    _, params, pts, labels, _ = _read_points(path)
    markers = _role_markers(ms, pts, labels, _point_units(params, path))
    _check_marker_units(path, markers)
    return markers


def _check_required(path: str, markers: dict, ms: marker_sets.MarkerSet, notes: list) -> None:
    """A required marker that is missing (NaN) in every frame: the pelvis ones end the trial,
    the others invalidate the joints that need them (noted)."""
    gone = [role for role in ms.required if not np.isfinite(markers[role]).any()]
    names = lambda roles: ", ".join("/".join(ms.labels[r]) for r in roles)
    pelvis = [r for r in gone if r in marker_sets.PELVIS_ROLES]
    if pelvis:
        raise GaitDataError(path, f"pelvis marker(s) {names(pelvis)} missing in every frame: "
                                  "no joint angle can be computed")
    if gone:
        notes.append(f"marker(s) {names(gone)} missing in every frame: the joints that need "
                     "them are invalid")


def _marker_angles(path: str, markers, ms, params, joint_set: str, static: str | None,
                   notes: list) -> kin_lib.Kinematics:
    """Kinematics of the markers (calibrated by a static trial when there is one)."""
    if joint_set != "lower":
        raise GaitDataError(path, f"marker kinematics give the 'lower' joint set, not "
                                  f"{joint_set!r}")
    subject = kin_lib.Subject.from_processing(params)
    static_markers = None
    if static is not None:
        static_markers = read_markers(static, ms)
        notes.append(f"static calibration: {os.path.basename(static)}")
    try:
        kin = kin_lib.compute(markers, ms, subject, static_markers)
    except ValueError as e:
        raise GaitDataError(path, str(e)) from None
    notes += list(kin.notes)
    return kin


def read_trial(path: str | os.PathLike, joint_set: str = "lower",
               subject: str | None = None, angles: str = "auto",
               static: str | None = "auto") -> Trial:
    """Reads one C3D trial (see the module docstring); raises GaitDataError.

    `angles`: 'auto' (Plug-in-Gait outputs if present, else markers), 'plugin_gait' or
    'markers'. `static`: a static trial's path, 'auto' (look next to the file) or None."""
    path = os.fspath(path)
    if angles not in ANGLE_SOURCES:
        raise ValueError(f"angles={angles!r}; expected one of {ANGLE_SOURCES}")
    first, params, pts, labels, rate = _read_points(path)
    if pts.shape[0] < MIN_FRAMES:
        raise GaitDataError(path, f"only {pts.shape[0]} frames; at least {MIN_FRAMES} needed"
                                  + (" (a static trial?)" if pts.shape[0] < 5 else ""))
    names = joints_lib.joint_names(joint_set)
    has_pig = all(joints_lib.c3d_label(j) in labels for j in names)
    ms = marker_sets.detect(labels)
    notes: list[str] = []
    if angles == "plugin_gait" or (angles == "auto" and has_pig):
        angle_source = "plugin_gait"
        out = _angles(pts, labels, names, path)
        if _angle_units(params).startswith("rad"):
            raise GaitDataError(path, "POINT:ANGLE_UNITS is radians; degrees are expected")
    elif ms is None:
        lead = "no Plug-in-Gait angle outputs and " if angles == "auto" else ""
        raise GaitDataError(path, lead + marker_sets.describe_unknown(labels))
    else:
        angle_source = "markers"
        partial = [joints_lib.c3d_label(j) for j in names if joints_lib.c3d_label(j) in labels]
        if partial:
            notes.append(f"Plug-in-Gait outputs incomplete ({len(partial)} of {len(names)} "
                         f"joints): all angles computed from the {ms.name} markers")
    scale = _point_units(params, path)
    markers = _role_markers(ms or _best_partial(labels), pts, labels, scale)
    _check_marker_units(path, markers)
    kin = None
    vertical = 2
    if angle_source == "markers":
        _check_required(path, markers, ms, notes)
    if all(k in markers for k in ("LASIS", "RASIS", "LHEEL", "RHEEL")):
        try:
            vertical = kin_lib.vertical_axis(markers)
        except ValueError as e:
            raise GaitDataError(path, str(e)) from None
        _check_moving(path, markers, vertical)
    static_path = find_static(path) if static == "auto" else static
    if angle_source == "markers":
        kin = _marker_angles(path, markers, ms, params, joint_set, static_path, notes)
        out = kin.angles.astype(np.float32)
    elif ms is not None:  # Plug-in-Gait angles; the joint centres (skeleton) from the markers
        try:
            kin = _marker_angles(path, markers, ms, params, "lower", static_path, [])
        except (GaitDataError, KeyError) as e:
            notes.append(f"no skeleton: {e}")
    check_degrees(out, names, path)
    events = _events(params, rate, first, pts.shape[0], notes)
    stem = os.path.splitext(os.path.basename(path))[0]
    return Trial(path=path, subject=subject or subject_from_path(path), trial=stem, rate=rate,
                 first_frame=first, joint_names=names, angles=out, markers=markers,
                 events=events, angle_source=angle_source,
                 marker_set=None if ms is None else ms.name, vertical=vertical,
                 kinematics=kin, notes=tuple(notes), anthropometrics=anthropometrics(params))
