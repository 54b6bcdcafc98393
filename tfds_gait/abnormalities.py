"""Seven simulated gait abnormalities of the kind healthy people mimic in validation studies.

Each one adds smooth, phase-localized deviations (raised-cosine bumps over the gait cycle of
the affected side: continuous with a continuous derivative, periodic over the cycle ends) to
named joints and channels of one stride, scaled linearly by a severity (1.0 = the literature
magnitude below), and returns the ground truth: the joints and channels it changed.

Phases are fractions of the AFFECTED side's own cycle (0 = its foot strike). In a stride of
the other side that cycle starts half a stride later, and every deviation is placed in time
by the affected side's cycle, also on the other side's joints (e.g. the contralateral pelvis).
Plug-in-Gait signs: sagittal flexion / dorsiflexion / anterior tilt +; frontal adduction +,
pelvic obliquity up (on that side) +, mirrored between LPelvis and RPelvis.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

SAG, FRO = 0, 1  # channel indices: sagittal, frontal


@dataclasses.dataclass(frozen=True)
class Bump:
    """A deviation of `deg` degrees at severity 1 on joint `base` ('Knee'), channel `ch`.

    `own` False puts it on the contralateral joint; center/width are phases of the affected
    side's cycle.
    """
    base: str
    ch: int
    deg: float
    center: float
    width: float
    own: bool = True


# Literature magnitudes at severity 1.0 (see BUILD_NOTES.md "Abnormality simulator").
ABNORMALITY_BUMPS: dict[str, tuple[Bump, ...]] = {
    # Peak swing knee flexion reduced ~25 deg (Goldberg et al. 2003; Kerrigan et al. 1991).
    "stiff_knee": (Bump("Knee", SAG, -25.0, 0.73, 0.25),),
    # Excess stance knee flexion ~25 deg with hip flexion and ankle dorsiflexion
    # (Sutherland & Davids 1993; Steele et al. 2010).
    "crouch": (Bump("Knee", SAG, 25.0, 0.30, 0.45), Bump("Hip", SAG, 15.0, 0.30, 0.45),
               Bump("Ankle", SAG, 10.0, 0.30, 0.40)),
    # Plantarflexed contact and stance, ~15 deg (Perry & Burnfield 2010; Davids et al. 1999).
    "equinus": (Bump("Ankle", SAG, -15.0, 0.22, 0.35),),
    # Plantarflexed swing ~15 deg plus steppage hip/knee flexion (Perry & Burnfield 2010;
    # Don et al. 2007).
    "foot_drop": (Bump("Ankle", SAG, -15.0, 0.82, 0.22), Bump("Knee", SAG, 15.0, 0.80, 0.22),
                  Bump("Hip", SAG, 12.0, 0.82, 0.22)),
    # Swing hip abduction ~10 deg and pelvic hiking ~6 deg on the swing side
    # (Kerrigan et al. 2000).
    "circumduction": (Bump("Hip", FRO, -10.0, 0.80, 0.25), Bump("Pelvis", FRO, 6.0, 0.80, 0.25),
                      Bump("Pelvis", FRO, -6.0, 0.80, 0.25, own=False)),
    # Contralateral pelvic drop ~6 deg and hip adduction in single support on the weak side
    # (Hardcastle & Nade 1985; Perry & Burnfield 2010).
    "trendelenburg": (Bump("Pelvis", FRO, 6.0, 0.30, 0.25),
                      Bump("Pelvis", FRO, -6.0, 0.30, 0.25, own=False),
                      Bump("Hip", FRO, 6.0, 0.30, 0.25)),
    # Peak terminal-stance hip extension reduced ~12 deg (Kerrigan et al. 2001; Perry 2010).
    "reduced_hip_extension": (Bump("Hip", SAG, 12.0, 0.50, 0.25),),
}
ABNORMALITIES: tuple[str, ...] = tuple(ABNORMALITY_BUMPS)


def bump(phase: np.ndarray, center: float, width: float) -> np.ndarray:
    """Periodic raised-cosine window: 1 at center, 0 beyond +/- width (phases in [0, 1))."""
    d = (phase - center + 0.5) % 1.0 - 0.5
    return np.where(np.abs(d) < width, 0.5 * (1.0 + np.cos(np.pi * d / width)), 0.0)


def _joint_index(joint_names: Sequence[str], side: str, base: str) -> int:
    """Index of e.g. ('R', 'Knee') in the joint list; ValueError names what is missing."""
    name = f"{side}{base}"
    if name not in joint_names:
        raise ValueError(f"joint {name} is not in the joint set {list(joint_names)}")
    return list(joint_names).index(name)


def apply(angles_tjc: np.ndarray, joint_names: Sequence[str], kind: str, *, side: str,
          severity: float = 1.0, stride_side: str) -> tuple[np.ndarray, np.ndarray]:
    """Perturbs one stride; returns (perturbed angles [T, J, C], affected bool [J, C])."""
    if kind not in ABNORMALITY_BUMPS:
        raise ValueError(f"unknown abnormality {kind!r}; known: {ABNORMALITIES}")
    if side not in ("L", "R") or stride_side not in ("L", "R"):
        raise ValueError(f"side and stride_side must be 'L' or 'R', got {side}, {stride_side}")
    t = angles_tjc.shape[0]
    offset = 0.0 if side == stride_side else 0.5
    phase = (np.arange(t) / t - offset) % 1.0
    other = "R" if side == "L" else "L"
    out = np.array(angles_tjc, np.float32, copy=True)
    truth = np.zeros(angles_tjc.shape[1:], bool)
    for b in ABNORMALITY_BUMPS[kind]:
        j = _joint_index(joint_names, side if b.own else other, b.base)
        out[:, j, b.ch] += (severity * b.deg * bump(phase, b.center, b.width)).astype(np.float32)
        truth[j, b.ch] = True
    return out, truth


def magnitude(kind: str) -> float:
    """The largest |deviation| in degrees of an abnormality at severity 1."""
    return max(abs(b.deg) for b in ABNORMALITY_BUMPS[kind])


def make_evaluation_set(angles_stjc: np.ndarray, sides: Sequence[str],
                        joint_names: Sequence[str], *, severities: Sequence[float] = (0.5, 1.0),
                        seed: int = 0) -> dict[str, np.ndarray]:
    """Every stride x abnormality x severity, the affected side drawn by seed per stride/kind."""
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("angles", "clean_index", "kind", "severity", "side", "truth")}
    for i, (stride, stride_side) in enumerate(zip(angles_stjc, sides)):
        for kind in ABNORMALITIES:
            side = str(rng.choice(["L", "R"]))
            for sev in severities:
                pert, truth = apply(stride, joint_names, kind, side=side, severity=sev,
                                    stride_side=str(stride_side))
                for k, v in zip(rows, (pert, i, kind, sev, side, truth)):
                    rows[k].append(v)
    return {k: np.asarray(v) for k, v in rows.items()}
