r"""Joint angles from marker trajectories, in the Plug-in-Gait conventions the project uses.

  python -m tfds_gait.kinematics FILE.c3d --compare

From the markers of any known set (`tfds_gait.marker_sets`) this computes, per frame, the hip,
knee and ankle joint centres, the pelvis, femur, tibia and foot frames, and the `lower` joint
angles (Pelvis, Hip, Knee, Ankle, FootProgress of both sides; sagittal, frontal, transverse;
degrees; Plug-in-Gait signs), so that marker-derived and Vicon-derived strides share one model.

Segment frames have PiG's axes: x anterior, y to the LEFT (both sides), z proximal. Angles are
intrinsic Y-X-Z Cardan sequences (`scipy.spatial.transform.Rotation`), each joint's signs and
components mapped as Vicon does (checked against Vicon's own segment frames in the shipped
biomechZoo files: BUILD_NOTES "Kinematics").

Joint centres:
- hip: Davis 1991 regression as Plug-in-Gait (leg length, inter-ASIS and ASIS-trochanter
  distances) for the `plugin_gait` set; Harrington 2007 (pelvic width and depth from the ASIS
  and PSIS markers) for the anatomical sets;
- knee / ankle: the midpoint of the epicondyle / malleolus markers when the medial one is
  there (or reconstructed from a static trial), else PiG's chord rule: the centre lies at
  (width / 2 + CHORD_RADIUS_MM) from the lateral marker, perpendicular to the proximal centre,
  in the plane of the wand marker turned by the PiG wand offsets (ThighRotation,
  ShankRotation); widths from the C3D's PROCESSING parameters, else estimated from leg length.
Tibial torsion (untorsioned tibia for the knee) and the foot's static offsets come from
PROCESSING (PiG), from a static trial, or else as documented in `Subject`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial.transform import Rotation

from tfds_gait import joints as joints_lib
from tfds_gait import marker_sets
from tfds_gait.errors import GaitDataError

CHORD_RADIUS_MM = 7.0   # PiG's chord offset beyond half the width (measured: BUILD_NOTES)
DAVIS_THETA, DAVIS_BETA = 0.5, 0.314  # rad, Davis 1991
DEFAULT_MARKER_DIAMETER_MM = 14.0
# Knee and ankle width from leg length when not measured (fit: BUILD_NOTES "Kinematics").
KNEE_WIDTH_PER_LEG = 0.139
ANKLE_WIDTH_PER_LEG = 0.092
MIN_PELVIS_TRAVEL_MM = 300.0
FOOT_FLAT_MM = 15.0  # heel and toe this close to their lowest: the foot is flat  # below: progression from the pelvis orientation (treadmill)


@dataclasses.dataclass(frozen=True)
class Subject:
    """Subject measurements (mm, radians) from PROCESSING, a static trial, or estimates."""

    leg_length: dict[str, float | None]      # side -> ASIS to medial malleolus
    knee_width: dict[str, float | None]
    ankle_width: dict[str, float | None]
    inter_asis: float | None = None
    asis_trochanter: dict[str, float | None] = dataclasses.field(default_factory=dict)
    marker_diameter: float = DEFAULT_MARKER_DIAMETER_MM
    thigh_rotation: dict[str, float] = dataclasses.field(default_factory=dict)
    shank_rotation: dict[str, float] = dataclasses.field(default_factory=dict)
    tibial_torsion: dict[str, float] = dataclasses.field(default_factory=dict)
    foot_offsets: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_processing(cls, params: dict) -> "Subject":
        """Vicon's PROCESSING group (what Nexus stores from the subject's VSK)."""
        proc = params.get("PROCESSING", {})

        def get(name):
            v = proc.get(name, {}).get("value")
            v = None if v is None or len(np.ravel(v)) == 0 else float(np.ravel(v)[0])
            return v if v is not None and np.isfinite(v) else None

        side = lambda name: {s: get(s + name) for s in "LR"}
        pos = lambda d: {k: v for k, v in d.items() if v is not None and v > 0}
        known = lambda d: {k: v for k, v in d.items() if v is not None}
        feet = {}
        for s in "LR":
            pf, ro = get(s + "StaticPlantFlex"), get(s + "StaticRotOff")
            if pf is not None and ro is not None:
                feet[s] = (pf, ro)
        return cls(leg_length=pos(side("LegLength")), knee_width=pos(side("KneeWidth")),
                   ankle_width=pos(side("AnkleWidth")), inter_asis=get("InterAsisDistance") or None,
                   asis_trochanter=pos(side("AsisTrocanterDistance")),
                   marker_diameter=get("MarkerDiameter") or DEFAULT_MARKER_DIAMETER_MM,
                   thigh_rotation=known(side("ThighRotation")),
                   shank_rotation=known(side("ShankRotation")),
                   tibial_torsion=known(side("TibialTorsion")), foot_offsets=feet)


@dataclasses.dataclass(frozen=True)
class Kinematics:
    """Per-frame results of one trial (NaN where a needed marker is missing)."""

    marker_set: str
    centres: dict[str, np.ndarray]   # 'PELVIS', 'LHJC', 'LKJC', 'LAJC', 'LHEEL', 'LTOE' ... [F, 3] mm
    frames: dict[str, np.ndarray]    # 'pelvis', 'progression', 'Lfemur', 'Ltibia', 'Lfoot' [F, 3, 3]
    angles: np.ndarray               # [F, J, 3] degrees, joint set `lower`
    vertical: int                    # lab axis that points up
    notes: tuple[str, ...]           # what was estimated and how


# ----------------------------------------------------------------------------- geometry

def unit(v: np.ndarray) -> np.ndarray:
    """v / |v| along the last axis (NaN stays NaN)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return v / np.linalg.norm(v, axis=-1, keepdims=True)


def frame_zy(z: np.ndarray, y_hint: np.ndarray) -> np.ndarray:
    """[F, 3, 3] frame (columns x, y, z): z along `z`, y as close to `y_hint` as allowed."""
    w = unit(z)
    u = unit(np.cross(y_hint, w))
    return np.stack([u, np.cross(w, u), w], axis=-1)


def frame_yx(y: np.ndarray, x_hint: np.ndarray) -> np.ndarray:
    """[F, 3, 3] frame: y along `y`, x as close to `x_hint` as allowed, z = x cross y."""
    v = unit(y)
    u = unit(x_hint - np.sum(x_hint * v, -1, keepdims=True) * v)
    return np.stack([u, v, np.cross(u, v)], axis=-1)


def rotate_about(p: np.ndarray, a: np.ndarray, b: np.ndarray, angle: float) -> np.ndarray:
    """Point p turned by `angle` (rad, right hand) about the line from a to b."""
    k, v = unit(b - a), p - a
    c, s = np.cos(angle), np.sin(angle)
    return a + v * c + np.cross(k, v) * s + k * np.sum(k * v, -1, keepdims=True) * (1 - c)


def chord(wand: np.ndarray, proximal: np.ndarray, lateral: np.ndarray,
          offset: float) -> np.ndarray:
    """PiG's chord rule: the point J in the plane (wand, proximal, lateral) with
    |J - lateral| = offset and (proximal - J) perpendicular to (lateral - J)."""
    d = np.linalg.norm(proximal - lateral, axis=-1, keepdims=True)
    u = (proximal - lateral) / d
    w = unit(np.cross(np.cross(wand - lateral, proximal - lateral), u))
    with np.errstate(invalid="ignore"):
        theta = np.arccos(np.clip(offset / d, -1.0, 1.0))
    return lateral + offset * (np.cos(theta) * u + np.sin(theta) * w)


def chord_centre(wand, proximal, lateral, offset: float, wand_rotation: float = 0.0,
                 iters: int = 8) -> np.ndarray:
    """Chord rule with PiG's wand offset: the plane (proximal, centre, lateral) makes the angle
    `wand_rotation` with the wand plane about the segment axis (proximal -> centre); solved by
    fixed-point iteration (converges to < 0.01 mm in a few steps)."""
    j = chord(wand, proximal, lateral, offset)
    if wand_rotation == 0.0:
        return j
    for _ in range(iters):
        j = chord(rotate_about(wand, proximal, j, wand_rotation), proximal, lateral, offset)
    return j


def rot_z(frames: np.ndarray, angle: float) -> np.ndarray:
    """Frames turned by `angle` (rad) about their own z axis."""
    return frames @ Rotation.from_euler("z", angle).as_matrix()


def cardan_yxz(parent: np.ndarray, child: np.ndarray) -> np.ndarray:
    """Intrinsic Y-X-Z angles (deg) of child relative to parent [F, 3]; NaN frames stay NaN."""
    rel = np.einsum("fji,fjk->fik", parent, child)
    out = np.full(rel.shape[:1] + (3,), np.nan)
    ok = np.isfinite(rel).all((1, 2))
    if ok.any():
        out[ok] = np.degrees(Rotation.from_matrix(rel[ok]).as_euler("YXZ"))
    return out


def _wrap(a: np.ndarray) -> np.ndarray:
    """Angles in degrees wrapped to [-180, 180)."""
    return (a + 180.0) % 360.0 - 180.0


# ----------------------------------------------------------------------------- lab frame

def vertical_axis(markers: dict[str, np.ndarray]) -> int:
    """The lab axis pointing up: the one the pelvis sits highest above the heels along."""
    d = (markers["LASIS"] + markers["RASIS"]) / 2 - (markers["LHEEL"] + markers["RHEEL"]) / 2
    ok = np.isfinite(d).all(-1)
    if not ok.any():
        raise ValueError("pelvis or heel markers are missing in every frame")
    up = d[ok].mean(axis=0)
    axis = int(np.argmax(np.abs(up)))
    if up[axis] < 0:
        raise ValueError("the pelvis is below the heels along every lab axis: unknown lab axes")
    return axis


def pelvis_back(markers: dict[str, np.ndarray]) -> np.ndarray:
    """The sacrum marker, or mid-PSIS without one (Plug-in-Gait's rule)."""
    if "SACRUM" in markers:
        return markers["SACRUM"]
    return (markers["LPSIS"] + markers["RPSIS"]) / 2


def progression_frame(markers: dict[str, np.ndarray], vertical: int) -> np.ndarray:
    """PiG's progression frame [3, 3]: x = the lab axis nearest to the walking direction
    (pelvis travel over the trial, or its mean anterior axis on a treadmill), z up."""
    centre = (markers["LASIS"] + markers["RASIS"]) / 2
    ok = np.flatnonzero(np.isfinite(centre).all(-1))
    travel = centre[ok[-1]] - centre[ok[0]] if ok.size else np.full(3, np.nan)
    travel[vertical] = 0.0
    if not np.linalg.norm(travel) > MIN_PELVIS_TRAVEL_MM:
        travel = np.nanmean(centre - pelvis_back(markers), axis=0)
        travel[vertical] = 0.0
    horizontal = [a for a in range(3) if a != vertical]
    a = horizontal[int(np.argmax(np.abs(travel[horizontal])))]
    x, z = np.zeros(3), np.zeros(3)
    x[a], z[vertical] = np.sign(travel[a]) or 1.0, 1.0
    return np.stack([x, np.cross(z, x), z], axis=-1)


# ----------------------------------------------------------------------------- joint centres

def pelvis_frame(markers: dict[str, np.ndarray]) -> np.ndarray:
    """PiG pelvis axes [F, 3, 3]: y = RASIS -> LASIS, x forward from the back markers."""
    front = (markers["LASIS"] + markers["RASIS"]) / 2
    return frame_yx(markers["LASIS"] - markers["RASIS"], front - pelvis_back(markers))


def _leg_length(markers, side: str) -> float:
    """ASIS -> lateral epicondyle -> lateral malleolus, median over frames (mm)."""
    a, k, m = (markers[side + r] for r in ("ASIS", "KNEE_LAT", "ANKLE_LAT"))
    return float(np.nanmedian(np.linalg.norm(a - k, axis=-1) + np.linalg.norm(k - m, axis=-1)))


def hjc_davis(markers, pel: np.ndarray, subject: Subject, notes: list) -> dict[str, np.ndarray]:
    """Hip joint centres of the Davis 1991 regression, as Plug-in-Gait computes them."""
    legs = [subject.leg_length.get(s) for s in "LR"]
    if not all(legs):
        legs = [subject.leg_length.get(s) or _leg_length(markers, s) for s in "LR"]
        notes.append(f"leg length estimated from the markers ({legs[0]:.0f} / {legs[1]:.0f} mm)")
    mean_leg = float(np.mean(legs))
    c = mean_leg * 0.115 - 15.3
    front = (markers["LASIS"] + markers["RASIS"]) / 2
    aa = (subject.inter_asis or float(np.nanmedian(np.linalg.norm(
        markers["LASIS"] - markers["RASIS"], axis=-1)))) / 2
    radius = subject.marker_diameter / 2
    out = {}
    for side, sign, leg in (("L", 1.0, legs[0]), ("R", -1.0, legs[1])):
        at = subject.asis_trochanter.get(side) or 0.1288 * leg - 48.56
        x = (-at - radius) * np.cos(DAVIS_BETA) + c * np.cos(DAVIS_THETA) * np.sin(DAVIS_BETA)
        y = sign * (aa - c * np.sin(DAVIS_THETA))
        z = (-at - radius) * np.sin(DAVIS_BETA) - c * np.cos(DAVIS_THETA) * np.cos(DAVIS_BETA)
        out[side] = front + pel @ np.array([x, y, z])
    return out


def hjc_harrington(markers, pel: np.ndarray) -> dict[str, np.ndarray]:
    """Hip joint centres of Harrington et al. 2007 from the pelvic width PW (ASIS distance)
    and depth PD (mid-ASIS to mid-PSIS), their medians over the trial (a rigid pelvis)."""
    front = (markers["LASIS"] + markers["RASIS"]) / 2
    pw = float(np.nanmedian(np.linalg.norm(markers["LASIS"] - markers["RASIS"], axis=-1)))
    pd = float(np.nanmedian(np.linalg.norm(front - pelvis_back(markers), axis=-1)))
    out = {}
    for side, sign in (("L", 1.0), ("R", -1.0)):
        local = np.array([-0.24 * pd - 9.9, sign * (0.33 * pw + 7.3), -0.30 * pw - 10.9])
        out[side] = front + pel @ local
    return out


def _width(subject: Subject, kind: str, side: str, leg: float, notes: list) -> float:
    """Knee or ankle width (mm): measured, else a fraction of the leg length."""
    measured = getattr(subject, f"{kind}_width").get(side)
    if measured:
        return measured
    w = (KNEE_WIDTH_PER_LEG if kind == "knee" else ANKLE_WIDTH_PER_LEG) * leg
    notes.append(f"{side} {kind} width estimated from leg length: {w:.0f} mm")
    return w


# ----------------------------------------------------------------------------- the model

def _lateral_sign(side: str) -> float:
    """+1 where the lateral direction is the frames' +y (left limb), -1 on the right."""
    return 1.0 if side == "L" else -1.0


def limb(markers, side: str, hjc: np.ndarray, subject: Subject, ms: marker_sets.MarkerSet,
         vertical: int, notes: list, static: bool = False) -> dict:
    """Knee / ankle centres, the femur, tibia (torsioned and not) and foot frames, and the
    tibial torsion and foot offsets used (`static`: standing, offsets from every frame)."""
    g = lambda role: markers.get(side + role)
    lat = _lateral_sign(side)
    leg = subject.leg_length.get(side) or _leg_length(markers, side)
    if g("KNEE_MED") is not None and ms.method != "plugin_gait":
        kjc = (g("KNEE_LAT") + g("KNEE_MED")) / 2
    else:
        wand = g("THIGH") if g("THIGH") is not None else g("GTR")
        off = _width(subject, "knee", side, leg, notes) / 2 + CHORD_RADIUS_MM
        kjc = chord_centre(wand, hjc, g("KNEE_LAT"), off, lat * subject.thigh_rotation.get(side, 0.0))
    if g("ANKLE_MED") is not None and ms.method != "plugin_gait":
        ajc = (g("ANKLE_LAT") + g("ANKLE_MED")) / 2
    else:
        off = _width(subject, "ankle", side, leg, notes) / 2 + CHORD_RADIUS_MM
        ajc = chord_centre(g("SHANK"), kjc, g("ANKLE_LAT"), off,
                           lat * subject.shank_rotation.get(side, 0.0))
    femur = frame_zy(hjc - kjc, lat * (g("KNEE_LAT") - kjc))
    tibia_t = frame_zy(kjc - ajc, lat * (g("ANKLE_LAT") - ajc))
    torsion = subject.tibial_torsion.get(side)
    if torsion is None:
        torsion = _median_torsion(femur, tibia_t, side)
        if not static:
            notes.append(f"{side} tibial torsion from the trial's median knee rotation: "
                         f"{np.degrees(torsion):.1f} deg")
    tibia = rot_z(tibia_t, lat * torsion)
    toe = g("TOE")
    pf, ro = subject.foot_offsets.get(side) or foot_offsets(
        ajc, g("HEEL"), toe, tibia, side, None if static else vertical)
    if side not in subject.foot_offsets and not static:
        notes.append(f"{side} foot offsets from the trial's heel marker: plantar flexion "
                     f"{np.degrees(pf):.1f} deg, rotation {np.degrees(ro):.1f} deg")
    foot = frame_zy(ajc - toe, tibia[..., 1])
    foot = foot @ Rotation.from_euler("YX", [-pf, -lat * ro]).as_matrix()
    return {"KJC": kjc, "AJC": ajc, "femur": femur, "tibia": tibia, "tibia_torsioned": tibia_t,
            "foot": foot, "torsion": torsion, "foot_offsets": (pf, ro)}


def foot_offsets(ajc, heel, toe, tibia: np.ndarray, side: str,
                 vertical: int | None = None) -> tuple[float, float]:
    """PiG's static foot offsets (plantar flexion, rotation; rad) that turn the AJC -> toe
    axis onto the heel -> toe axis: the median over the frames with the foot flat (heel and
    toe within FOOT_FLAT_MM of their lowest), like PiG's standing calibration; all frames
    when `vertical` is None (a static trial)."""
    f0 = frame_zy(ajc - toe, tibia[..., 1])
    f1 = frame_zy(heel - toe, tibia[..., 1])
    ang = cardan_yxz(f0, f1)[:, :2]
    ok = np.isfinite(ang).all(-1)
    if not ok.any():
        return 0.0, 0.0
    if vertical is not None:
        low = lambda p: p[:, vertical] - np.min(p[ok, vertical]) < FOOT_FLAT_MM
        flat = ok & low(heel) & low(toe)
        ok = flat if flat.sum() >= 3 else ok
    b, a = np.median(ang[ok], axis=0)
    return float(-np.radians(b)), float(-_lateral_sign(side) * np.radians(a))


def _median_torsion(femur: np.ndarray, tibia_t: np.ndarray, side: str) -> float:
    """The torsion that makes the trial's median knee rotation zero (as a static trial does:
    PiG sets knee rotation to 0 in standing)."""
    a = cardan_yxz(femur, tibia_t)[:, 2]
    med = np.nanmedian(a) if np.isfinite(a).any() else 0.0
    return float(-np.radians(med) * _lateral_sign(side))


def joint_angles(pel, prog, limbs: dict[str, dict]) -> np.ndarray:
    """[F, 10, 3] `lower` angles in PiG components and signs (see the module docstring)."""
    names = joints_lib.joint_names("lower")
    f = pel.shape[0]
    g = np.broadcast_to(prog, (f, 3, 3))
    out = np.full((f, len(names), 3), np.nan)
    p = cardan_yxz(g, pel)
    for side in "LR":
        s = 1.0 if side == "L" else -1.0
        lb = limbs[side]
        h = cardan_yxz(pel, lb["femur"])
        k = cardan_yxz(lb["femur"], lb["tibia"])
        a = cardan_yxz(lb["tibia_torsioned"], lb["foot"])
        ft = cardan_yxz(g, lb["foot"])
        rows = {
            "Pelvis": np.stack([p[:, 0], s * p[:, 1], -s * p[:, 2]], -1),
            "Hip": np.stack([-h[:, 0], -s * h[:, 1], -s * h[:, 2]], -1),
            "Knee": np.stack([k[:, 0], -s * k[:, 1], -s * k[:, 2]], -1),
            "Ankle": np.stack([_wrap(-a[:, 0] - 90.0), -s * a[:, 2], -s * a[:, 1]], -1),
            "FootProgress": np.stack([ft[:, 0], s * ft[:, 2], -s * ft[:, 1]], -1),
        }
        for name, v in rows.items():
            out[:, names.index(side + name)] = v
    return out


# Technical frames of the segments that carry a medial landmark: (top, bottom, side point).
_TECHNICAL = {"thigh": ("HJC", "KNEE_LAT", ("THIGH", "GTR")),
              "shank": ("SHANK", "ANKLE_LAT", ("TIB_TUB",))}


def _technical(markers, side: str, segment: str, hjc: np.ndarray) -> np.ndarray | None:
    """A technical frame [F, 3, 3] of the thigh or shank from points on it (None if absent)."""
    get = lambda role: hjc if role == "HJC" else markers.get(side + role)
    top, bottom, sides = _TECHNICAL[segment]
    third = next((get(r) for r in sides if get(r) is not None), None)
    if get(top) is None or get(bottom) is None or third is None:
        return None
    return frame_zy(get(top) - get(bottom), third - get(bottom))


_LANDMARK_SEGMENT = {"KNEE_MED": ("thigh", "KNEE_LAT"), "ANKLE_MED": ("shank", "ANKLE_LAT")}


def calibrate(static: dict, markers: dict, ms: marker_sets.MarkerSet, subject: Subject,
              notes: list) -> tuple[Subject, dict]:
    """A static trial's calibration: medial landmarks missing in the walk rebuilt from their
    position in the static trial's thigh / shank technical frames (CAST), and the tibial
    torsion and foot offsets of standing where PROCESSING does not give them."""
    markers = dict(markers)
    pel_s, pel = pelvis_frame(static), pelvis_frame(markers)
    hjc_s = hjc_harrington(static, pel_s) if ms.method != "plugin_gait" else None
    hjc = hjc_harrington(markers, pel) if ms.method != "plugin_gait" else None
    for side in "LR":
        for role, (segment, origin) in _LANDMARK_SEGMENT.items():
            key = side + role
            have = key in markers and np.isfinite(markers[key]).all(-1).mean() > 0.5
            if have or key not in static or hjc is None:
                continue
            t_s = _technical(static, side, segment, hjc_s[side])
            t_d = _technical(markers, side, segment, hjc[side])
            if t_s is None or t_d is None:
                continue
            local = np.nanmedian(np.einsum("fji,fj->fi", t_s, static[key] - static[side + origin]),
                                 axis=0)
            markers[key] = markers[side + origin] + t_d @ local
            notes.append(f"{key} rebuilt from the static trial ({segment} markers)")
    torsion, feet = dict(subject.tibial_torsion), dict(subject.foot_offsets)
    if ms.method != "plugin_gait":
        st_notes: list[str] = []
        vertical = vertical_axis(static)
        for side in "LR":
            lb = limb(static, side, hjc_s[side], subject, ms, vertical, st_notes, static=True)
            torsion.setdefault(side, lb["torsion"])
            feet.setdefault(side, lb["foot_offsets"])
    return dataclasses.replace(subject, tibial_torsion=torsion, foot_offsets=feet), markers


def compute(markers: dict[str, np.ndarray], ms: marker_sets.MarkerSet, subject: Subject,
            static: dict[str, np.ndarray] | None = None) -> Kinematics:
    """Joint centres, frames and the `lower` angles of one trial (markers by role, mm),
    calibrated by a static trial's markers when given."""
    notes: list[str] = []
    if static is not None:
        subject, markers = calibrate(static, markers, ms, subject, notes)
    vertical = vertical_axis(markers)
    pel = pelvis_frame(markers)
    hjc = (hjc_davis(markers, pel, subject, notes) if ms.method == "plugin_gait"
           else hjc_harrington(markers, pel))
    limbs = {s: limb(markers, s, hjc[s], subject, ms, vertical, notes) for s in "LR"}
    prog = progression_frame(markers, vertical)
    centres = {"PELVIS": (hjc["L"] + hjc["R"]) / 2}
    frames = {"pelvis": pel, "progression": prog}
    for s in "LR":
        centres.update({f"{s}HJC": hjc[s], f"{s}KJC": limbs[s]["KJC"], f"{s}AJC": limbs[s]["AJC"],
                        f"{s}HEEL": markers[s + "HEEL"], f"{s}TOE": markers[s + "TOE"]})
        frames.update({s + k: limbs[s][k] for k in ("femur", "tibia", "tibia_torsioned", "foot")})
    return Kinematics(ms.name, centres, frames, joint_angles(pel, prog, limbs), vertical,
                      tuple(notes))
