"""Seven simulated gait abnormalities of the kind healthy people mimic in validation studies.

Each one adds smooth, phase-localized deviations (raised-cosine bumps over the gait cycle of
the affected side: continuous with a continuous derivative, periodic over the cycle ends) to
named joints and channels of one stride, scaled linearly by a severity (1.0 = the literature
magnitude below), and returns the ground truth: the joints and channels it changed.

Phases are written for a cycle with foot off at REFERENCE_FOOT_OFF_PCT; `foot_off_pct` moves a
stance bump's centre (and stretches its width) with the stance phase, a swing bump's with the
swing phase. Phases are fractions of the AFFECTED side's own cycle (0 = its foot strike): in a
stride of the other side that cycle starts half a stride later, and every deviation is placed
in time by the affected side's cycle, also on the other side's joints (the opposite pelvis).
Plug-in-Gait signs: sagittal flexion / dorsiflexion +; frontal adduction +, pelvic obliquity
up (on that side) +, so a pelvic tilt shows with opposite signs on LPelvis and RPelvis.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

SAG, FRO = 0, 1  # channel indices: sagittal, frontal
CHANNEL_NAMES = ("sagittal", "frontal", "transverse")
REFERENCE_FOOT_OFF_PCT = 60.0  # normal adult foot off (Perry & Burnfield 2010)


@dataclasses.dataclass(frozen=True)
class Bump:
    """A deviation of `deg` degrees at severity 1 on joint `base` ('Knee'), channel `ch`.

    `own` False puts it on the contralateral joint; center/width are fractions of the
    affected side's cycle with foot off at REFERENCE_FOOT_OFF_PCT.
    """
    base: str
    ch: int
    deg: float
    center: float
    width: float
    own: bool = True


# Full citations by short name.
REFERENCES: dict[str, str] = {
    "Kerrigan et al. 1991":
        "Kerrigan DC, Gronley J, Perry J. Stiff-legged gait in spastic paresis: a study "
        "of quadriceps and hamstrings muscle activity. Am J Phys Med Rehabil "
        "1991;70(6):294-300.",
    "Goldberg et al. 2003":
        "Goldberg SR, Ounpuu S, Delp SL. The importance of swing-phase initial conditions"
        " in stiff-knee gait. J Biomech 2003;36(8):1111-1116.",
    "Sutherland & Davids 1993":
        "Sutherland DH, Davids JR. Common gait abnormalities of the knee in cerebral "
        "palsy. Clin Orthop Relat Res 1993;(288):139-147.",
    "Steele et al. 2010":
        "Steele KM, Seth A, Hicks JL, Schwartz MS, Delp SL. Muscle contributions to "
        "support and progression during single-limb stance in crouch gait. J Biomech "
        "2010;43(11):2099-2105.",
    "Perry & Burnfield 2010":
        "Perry J, Burnfield JM. Gait Analysis: Normal and Pathological Function, 2nd ed. "
        "Thorofare, NJ: SLACK; 2010.",
    "Davids et al. 1999":
        "Davids JR, Foti T, Dabelstein J, Bagley A. Voluntary (normal) versus obligatory "
        "(cerebral palsy) toe-walking in children: a kinematic, kinetic, and "
        "electromyographic analysis. J Pediatr Orthop 1999;19(4):461-469.",
    "Don et al. 2007":
        "Don R, Serrao M, Vinci P, et al. Foot drop and plantar flexion failure determine"
        " different gait strategies in Charcot-Marie-Tooth patients. Clin Biomech "
        "2007;22(8):905-916.",
    "Kerrigan et al. 2000":
        "Kerrigan DC, Frates EP, Rogan S, Riley PO. Hip hiking and circumduction: "
        "quantitative definitions. Am J Phys Med Rehabil 2000;79(3):247-252.",
    "Hardcastle & Nade 1985":
        "Hardcastle P, Nade S. The significance of the Trendelenburg test. J Bone Joint "
        "Surg Br 1985;67(5):741-746.",
    "Kerrigan et al. 2001":
        "Kerrigan DC, Lee LW, Collins JJ, Riley PO, Lipsitz LA. Reduced hip extension "
        "during walking: healthy elderly and fallers versus young adults. Arch Phys Med "
        "Rehabil 2001;82(1):26-30.",
}

# Deviations at severity 1.0 (sources in SOURCES, table in BUILD_NOTES.md).
ABNORMALITY_BUMPS: dict[str, tuple[Bump, ...]] = {
    # Peak swing knee flexion reduced ~25 deg (Kerrigan 1991; Goldberg 2003).
    "stiff_knee": (Bump("Knee", SAG, -25.0, 0.73, 0.25),),
    # Stance knee flexion +25 deg with hip flexion and ankle dorsiflexion (Sutherland & Davids
    # 1993; Steele 2010: mild to moderate crouch).
    "crouch": (Bump("Knee", SAG, 25.0, 0.30, 0.45), Bump("Hip", SAG, 15.0, 0.30, 0.45),
               Bump("Ankle", SAG, 10.0, 0.30, 0.40)),
    # Ankle ~15 deg plantarflexed at contact and through stance (Perry & Burnfield 2010;
    # Davids 1999, voluntary toe walking).
    "equinus": (Bump("Ankle", SAG, -15.0, 0.22, 0.35),),
    # Ankle ~15 deg plantarflexed in swing plus steppage knee/hip flexion (Perry & Burnfield
    # 2010; Don 2007).
    "foot_drop": (Bump("Ankle", SAG, -15.0, 0.82, 0.22), Bump("Knee", SAG, 20.0, 0.80, 0.22),
                  Bump("Hip", SAG, 15.0, 0.82, 0.22)),
    # Swing hip abduction ~10 deg and pelvic hiking ~6 deg on the swing side (Kerrigan 2000).
    "circumduction": (Bump("Hip", FRO, -10.0, 0.80, 0.25), Bump("Pelvis", FRO, 6.0, 0.80, 0.25),
                      Bump("Pelvis", FRO, -6.0, 0.80, 0.25, own=False)),
    # Weak (affected) side in single support: opposite pelvis drops ~6 deg, stance hip adducts
    # (Hardcastle & Nade 1985; Perry & Burnfield 2010).
    "trendelenburg": (Bump("Pelvis", FRO, 6.0, 0.30, 0.25),
                      Bump("Pelvis", FRO, -6.0, 0.30, 0.25, own=False),
                      Bump("Hip", FRO, 6.0, 0.30, 0.25)),
    # Peak terminal-stance hip extension reduced ~12 deg (Kerrigan 2001; Perry & Burnfield 2010).
    "reduced_hip_extension": (Bump("Hip", SAG, 12.0, 0.50, 0.25),),
}
ABNORMALITIES: tuple[str, ...] = tuple(ABNORMALITY_BUMPS)

# The sources of each abnormality (keys of REFERENCES).
SOURCES: dict[str, tuple[str, ...]] = {
    "stiff_knee": ("Kerrigan et al. 1991", "Goldberg et al. 2003"),
    "crouch": ("Sutherland & Davids 1993", "Steele et al. 2010"),
    "equinus": ("Perry & Burnfield 2010", "Davids et al. 1999"),
    "foot_drop": ("Perry & Burnfield 2010", "Don et al. 2007"),
    "circumduction": ("Kerrigan et al. 2000",),
    "trendelenburg": ("Hardcastle & Nade 1985", "Perry & Burnfield 2010"),
    "reduced_hip_extension": ("Kerrigan et al. 2001", "Perry & Burnfield 2010"),
}


def _label(b: Bump) -> str:
    """'Knee sagittal' or 'contralateral Pelvis frontal'."""
    return f"{'' if b.own else 'contralateral '}{b.base} {CHANNEL_NAMES[b.ch]}"


# Degrees at severity 1 per affected joint and channel (signed, Plug-in-Gait convention).
MAGNITUDES: dict[str, dict[str, float]] = {
    k: {_label(b): b.deg for b in bumps} for k, bumps in ABNORMALITY_BUMPS.items()}


def bump(phase: np.ndarray, center: float, width: float) -> np.ndarray:
    """Periodic raised-cosine window: 1 at center, 0 beyond +/- width (phases in [0, 1))."""
    d = (phase - center + 0.5) % 1.0 - 0.5
    return np.where(np.abs(d) < width, 0.5 * (1.0 + np.cos(np.pi * d / width)), 0.0)


def warp(center: float, width: float, foot_off_pct: float) -> tuple[float, float]:
    """Moves a reference-cycle bump into a cycle with foot off at `foot_off_pct`."""
    ref, fo = REFERENCE_FOOT_OFF_PCT / 100.0, foot_off_pct / 100.0
    if center < ref:
        scale = fo / ref
        return center * scale, min(width * scale, 0.5)
    scale = (1.0 - fo) / (1.0 - ref)
    return fo + (center - ref) * scale, min(width * scale, 0.5)


def _joint_index(joint_names: Sequence[str], side: str, base: str) -> int:
    """Index of e.g. ('R', 'Knee') in the joint list; ValueError names what is missing."""
    name = f"{side}{base}"
    if name not in joint_names:
        raise ValueError(f"joint {name} is not in the joint set {list(joint_names)}")
    return list(joint_names).index(name)


def _check(kind: str, side: str, stride_side: str, foot_off_pct: float) -> None:
    """ValueError for an unknown kind, a side other than L/R, or an implausible foot off."""
    if kind not in ABNORMALITY_BUMPS:
        raise ValueError(f"unknown abnormality {kind!r}; known: {ABNORMALITIES}")
    if side not in ("L", "R") or stride_side not in ("L", "R"):
        raise ValueError(f"side and stride_side must be 'L' or 'R', got {side}, {stride_side}")
    if not 40.0 <= foot_off_pct <= 80.0:
        raise ValueError(f"foot_off_pct {foot_off_pct} is outside 40-80 % of the cycle")


def apply(angles_tjc: np.ndarray, joint_names: Sequence[str], kind: str, *, side: str,
          severity: float = 1.0, stride_side: str,
          foot_off_pct: float = REFERENCE_FOOT_OFF_PCT) -> tuple[np.ndarray, np.ndarray]:
    """Perturbs one stride; returns (perturbed angles [T, J, C], affected bool [J, C])."""
    _check(kind, side, stride_side, foot_off_pct)
    t = angles_tjc.shape[0]
    offset = 0.0 if side == stride_side else 0.5
    phase = (np.arange(t) / t - offset) % 1.0
    other = "R" if side == "L" else "L"
    out = np.array(angles_tjc, np.float32, copy=True)
    truth = np.zeros(angles_tjc.shape[1:], bool)
    for b in ABNORMALITY_BUMPS[kind]:
        j = _joint_index(joint_names, side if b.own else other, b.base)
        window = bump(phase, *warp(b.center, b.width, foot_off_pct))
        out[:, j, b.ch] += (severity * b.deg * window).astype(np.float32)
        truth[j, b.ch] = True
    return out, truth


def foot_offs(foot_off_pct, n: int) -> np.ndarray:
    """Per-stride foot off: None or NaN -> the reference, a scalar -> every stride; a measured
    value outside 40-80 % (an event error) is clipped into it."""
    if foot_off_pct is None:
        return np.full(n, REFERENCE_FOOT_OFF_PCT)
    fo = np.broadcast_to(np.asarray(foot_off_pct, float), (n,))
    return np.clip(np.where(np.isfinite(fo), fo, REFERENCE_FOOT_OFF_PCT), 40.0, 80.0)


def make_evaluation_set(angles_stjc: np.ndarray, sides: Sequence[str],
                        joint_names: Sequence[str], *, severities: Sequence[float] = (0.5, 1.0),
                        seed: int = 0, foot_off_pct=None, groups=None,
                        positions: bool = False, bilateral: bool = False
                        ) -> dict[str, np.ndarray]:
    """Every stride x abnormality x severity, the affected side drawn by seed per stride/kind
    (per group/kind with `groups` [S], e.g. the recording: a trial's strides share it), or
    with `bilateral` each kind applied to the left side and then to the right ("LR"), as in
    a bilateral patient (diplegic crouch).

    `foot_off_pct`: None (the reference), one value, or one per stride (NaN -> reference).
    `positions`: the strides are skeletons (apply_positions), else joint angles (apply); the
    output key stays "angles" (the stride values).
    """
    perturb = apply_positions if positions else apply
    rng = np.random.default_rng(seed)
    fo = foot_offs(foot_off_pct, len(angles_stjc))
    keys = ("angles", "clean_index", "kind", "severity", "affected_side", "truth")
    rows = {k: [] for k in keys}
    drawn: dict = {}
    for i, (stride, stride_side) in enumerate(zip(angles_stjc, sides)):
        for kind in ABNORMALITIES:
            key = (i if groups is None else groups[i], kind)
            side = "LR" if bilateral else drawn.setdefault(key, str(rng.choice(["L", "R"])))
            for sev in severities:
                pert, truth = stride, False
                for one in side:
                    pert, t = perturb(pert, joint_names, kind, side=one, severity=sev,
                                      stride_side=str(stride_side), foot_off_pct=float(fo[i]))
                    truth = truth | t
                for k, v in zip(keys, (pert, i, kind, sev, side, truth)):
                    rows[k].append(v)
    out = {k: np.asarray(v) for k, v in rows.items()}
    out["angles"] = out["angles"].astype(np.float32)
    return out


def table_markdown() -> str:
    """The BUILD_NOTES.md table (deviations at severity 1, phases, sources) and references."""
    lines = ["| abnormality | deviation at severity 1 (deg) | phase: centre +/- half-width, "
             "% of the affected cycle (foot off 60 %) | sources |", "|---|---|---|---|"]
    for kind, bumps in ABNORMALITY_BUMPS.items():
        devs = "; ".join(f"{_label(b)} {b.deg:+g}" for b in bumps)
        phases = "; ".join(f"{100 * b.center:g} +/- {100 * b.width:g}" for b in bumps)
        lines.append(f"| {kind} | {devs} | {phases} | {'; '.join(SOURCES[kind])} |")
    lines += ["", "Sources:", ""] + [f"- {short}: {full}" for short, full in REFERENCES.items()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- skeletons
# Which skeleton points a joint's rotation moves (the segments distal to it, one side), and
# the rotation axis of each channel in the body frame (tfds_gait.skeleton: x forward, y left,
# z up). Signs turn Plug-in-Gait's (flexion, dorsiflexion, adduction, obliquity up +) into a
# right-handed rotation about that axis for a side.
_DISTAL = {"Hip": ("KJC", "AJC", "HEEL", "TOE"), "Knee": ("AJC", "HEEL", "TOE"),
           "Ankle": ("HEEL", "TOE")}
_CENTRE = {"Hip": "HJC", "Knee": "KJC", "Ankle": "AJC"}
_SAG_SIGN = {"Hip": -1.0, "Knee": 1.0, "Ankle": -1.0}  # about +y
MOVED_PCT = 1.0  # a point that moves more than this (% leg length) is affected (ground truth)


def _rotate(points_tk3: np.ndarray, centre_t3: np.ndarray, axis: int,
            angle_t: np.ndarray) -> np.ndarray:
    """Points [T, K, 3] rotated about `centre` [T, 3] by angle(t) (rad) around body axis 0/1/2."""
    c, s = np.cos(angle_t)[:, None], np.sin(angle_t)[:, None]
    p = points_tk3 - centre_t3[:, None]
    a, b = [(1, 2), (2, 0), (0, 1)][axis]  # the plane of the rotation, right-handed
    out = p.copy()
    out[..., a] = c * p[..., a] - s * p[..., b]
    out[..., b] = s * p[..., a] + c * p[..., b]
    return out + centre_t3[:, None]


def apply_positions(pos_tjc: np.ndarray, joint_names: Sequence[str], kind: str, *, side: str,
                    severity: float = 1.0, stride_side: str,
                    foot_off_pct: float = REFERENCE_FOOT_OFF_PCT
                    ) -> tuple[np.ndarray, np.ndarray]:
    """One skeleton stride [T, J, 3] (body frame) with abnormality `kind` applied through the
    kinematic chain: each bump rotates the segments distal to its joint about the joint centre
    (ankle first, then knee, hip, pelvis), pelvic obliquity rotates both legs about the pelvis
    centre. Returns (perturbed, affected [J, 3]: the points that moved > MOVED_PCT)."""
    _check(kind, side, stride_side, foot_off_pct)
    t = pos_tjc.shape[0]
    phase = (np.arange(t) / t - (0.0 if side == stride_side else 0.5)) % 1.0
    idx = {n: i for i, n in enumerate(joint_names)}
    out = np.array(pos_tjc, np.float64, copy=True)
    order = {"Ankle": 0, "Knee": 1, "Hip": 2, "Pelvis": 3}
    for b in sorted(ABNORMALITY_BUMPS[kind], key=lambda b: order[b.base]):
        if b.base == "Pelvis" and not b.own:
            continue  # one pelvis: the contralateral output is the same rotation
        s = side if b.own else ("R" if side == "L" else "L")
        angle = np.radians(severity * b.deg * bump(phase, *warp(b.center, b.width,
                                                                 foot_off_pct)))
        if b.base == "Pelvis":  # obliquity up on side s: both legs about the pelvis centre
            moved = [idx[f"{q}{p}"] for q in "LR" for p in ("HJC",) + _DISTAL["Hip"]]
            centre, axis = out[:, idx["PELVIS"]], 0
            angle = angle * (1.0 if s == "L" else -1.0)
        else:
            moved = [idx[f"{s}{p}"] for p in _DISTAL[b.base]]
            centre = out[:, idx[f"{s}{_CENTRE[b.base]}"]]
            if b.ch == SAG:
                axis, angle = 1, angle * _SAG_SIGN[b.base]
            else:  # frontal: adduction moves the leg towards the other side
                axis, angle = 0, angle * (-1.0 if s == "L" else 1.0)
        out[:, moved] = _rotate(out[:, moved], centre, axis, angle)
    moved_pct = np.nan_to_num(np.abs(out - pos_tjc)).max(axis=0)  # NaN: invalid frames
    return out.astype(np.float32), moved_pct > MOVED_PCT
