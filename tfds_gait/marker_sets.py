"""Marker sets as DATA: anatomical roles -> C3D labels, detected from the labels a file holds.

A role names what a marker marks, independent of the lab's spelling: pelvis roles `LASIS`,
`RASIS`, `LPSIS`, `RPSIS`, `SACRUM`; limb roles, prefixed with the side (`LKNEE_LAT`):
`THIGH` (thigh wand or cluster marker), `GTR` (greater trochanter), `KNEE_LAT` / `KNEE_MED`
(femoral epicondyles), `SHANK` (shank wand, or the fibula head), `TIB_TUB` (tibial
tuberosity), `ANKLE_LAT` / `ANKLE_MED` (malleoli), `HEEL`, `TOE` (forefoot point on the 2nd
metatarsal head), `MT1`, `MT5`.
A role may be the mean of several labels (Fukuchi 2018 has no 2nd metatarsal marker: TOE is the
midpoint of MT1 and MT5). Which joint-centre rule applies follows from `method` and from the
roles present (`tfds_gait.kinematics`).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

SIDES = ("L", "R")
PELVIS_ROLES = ("LASIS", "RASIS", "LPSIS", "RPSIS", "SACRUM")
LIMB_ROLES = ("THIGH", "GTR", "KNEE_LAT", "KNEE_MED", "SHANK", "TIB_TUB", "ANKLE_LAT",
              "ANKLE_MED", "HEEL", "TOE", "MT1", "MT5")


@dataclasses.dataclass(frozen=True)
class MarkerSet:
    """One marker set: how its labels map to roles and which roles it cannot do without."""

    name: str
    description: str
    method: str                              # 'plugin_gait' (chord rules) or 'anatomical'
    labels: Mapping[str, tuple[str, ...]]    # role ('LKNEE_LAT') -> labels averaged
    required: tuple[str, ...]                # roles, sided ones once per side

    def missing(self, present: set[str]) -> list[str]:
        """The labels of required roles that `present` (upper-case labels) lacks; the back of
        the pelvis needs both PSIS markers or the sacrum marker."""
        has = lambda role: role in self.labels and all(
            lab.upper() in present for lab in self.labels[role])
        out = [lab for role in self.required for lab in self.labels[role]
               if lab.upper() not in present]
        if not (has("SACRUM") or (has("LPSIS") and has("RPSIS"))):
            out.append(" or ".join(
                "+".join(lab for r in roles for lab in self.labels[r])
                for roles in (("LPSIS", "RPSIS"), ("SACRUM",)) if all(r in self.labels for r in roles)))
        return out


def _sided(spec: dict[str, str | tuple[str, ...]], prefix: Mapping[str, str]) -> dict:
    """{'KNEE_LAT': '{s}KNE'} -> {'LKNEE_LAT': ('LKNE',), 'RKNEE_LAT': ('RKNE',)}."""
    out = {}
    for side in SIDES:
        for role, labs in spec.items():
            labs = (labs,) if isinstance(labs, str) else labs
            out[side + role] = tuple(lab.format(s=prefix[side]) for lab in labs)
    return out


def _both(*roles: str) -> tuple[str, ...]:
    """Roles of both sides ('KNEE_LAT' -> 'LKNEE_LAT', 'RKNEE_LAT')."""
    return tuple(side + r for r in roles for side in SIDES)


_PIG = MarkerSet(
    name="plugin_gait",
    description="Vicon Plug-in-Gait / CGM1 lower body (LASI RASI LPSI RPSI|SACR LTHI LKNE "
                "LTIB LANK LHEE LTOE ...)",
    method="plugin_gait",
    labels={"LASIS": ("LASI",), "RASIS": ("RASI",), "LPSIS": ("LPSI",), "RPSIS": ("RPSI",),
            "SACRUM": ("SACR",),
            **_sided({"THIGH": "{s}THI", "KNEE_LAT": "{s}KNE", "SHANK": "{s}TIB",
                      "ANKLE_LAT": "{s}ANK", "HEEL": "{s}HEE", "TOE": "{s}TOE"},
                     {"L": "L", "R": "R"})},
    required=("LASIS", "RASIS") + _both("THIGH", "KNEE_LAT", "SHANK", "ANKLE_LAT", "HEEL",
                                       "TOE"))

_ISB = MarkerSet(
    name="isb_full_body",
    description="ISB anatomical landmarks as in Schreiber & Moissenet 2019 (L_IAS L_IPS L_FTC "
                "L_FLE L_FME L_FAX L_TTC L_FAL L_TAM L_FCC L_FM1 L_FM2 L_FM5 ...)",
    method="anatomical",
    labels={"LASIS": ("L_IAS",), "RASIS": ("R_IAS",), "LPSIS": ("L_IPS",),
            "RPSIS": ("R_IPS",),
            **_sided({"GTR": "{s}_FTC", "KNEE_LAT": "{s}_FLE", "KNEE_MED": "{s}_FME",
                      "SHANK": "{s}_FAX", "ANKLE_LAT": "{s}_FAL", "ANKLE_MED": "{s}_TAM",
                      "HEEL": "{s}_FCC", "TOE": "{s}_FM2", "MT1": "{s}_FM1", "MT5": "{s}_FM5",
                      "TIB_TUB": "{s}_TTC"},
                     {"L": "L", "R": "R"})},
    required=("LASIS", "RASIS", "LPSIS", "RPSIS") + _both("GTR", "KNEE_LAT", "SHANK",
                                                          "ANKLE_LAT", "HEEL", "TOE"))

_FUKUCHI = MarkerSet(
    name="fukuchi_lower",
    description="Lateral lower-body set of Fukuchi et al. 2018 (L.ASIS L.PSIS L.GTR L.Knee "
                "L.HF L.TT L.Ankle L.Heel L.MT1 L.MT5; no medial markers)",
    method="anatomical",
    labels={"LASIS": ("L.ASIS",), "RASIS": ("R.ASIS",), "LPSIS": ("L.PSIS",),
            "RPSIS": ("R.PSIS",),
            **_sided({"GTR": "{s}.GTR", "KNEE_LAT": "{s}.Knee", "SHANK": "{s}.HF",
                      "ANKLE_LAT": "{s}.Ankle", "HEEL": "{s}.Heel",
                      "TOE": ("{s}.MT1", "{s}.MT5"), "MT1": "{s}.MT1", "MT5": "{s}.MT5",
                      "TIB_TUB": "{s}.TT"},
                     {"L": "L", "R": "R"})},
    required=("LASIS", "RASIS", "LPSIS", "RPSIS") + _both("GTR", "KNEE_LAT", "SHANK",
                                                          "ANKLE_LAT", "HEEL", "MT1", "MT5"))

_HBM = MarkerSet(
    name="lowerlimb_hbm",
    description="Anatomical lower-limb set with medial markers (LASIS LPSIS LLEK LMEK LLM LMM "
                "LHEE LMT2 LMT5 ...), e.g. gaitalytics' LowerLimb_Trunk_HBM2",
    method="anatomical",
    labels={"LASIS": ("LASIS",), "RASIS": ("RASIS",), "LPSIS": ("LPSIS",),
            "RPSIS": ("RPSIS",),
            **_sided({"THIGH": "{s}LTHI", "KNEE_LAT": "{s}LEK", "KNEE_MED": "{s}MEK",
                      "SHANK": "{s}LSHA", "ANKLE_LAT": "{s}LM", "ANKLE_MED": "{s}MM",
                      "HEEL": "{s}HEE", "TOE": "{s}MT2", "MT5": "{s}MT5"},
                     {"L": "L", "R": "R"})},
    required=("LASIS", "RASIS", "LPSIS", "RPSIS") + _both("KNEE_LAT", "KNEE_MED", "ANKLE_LAT",
                                                          "ANKLE_MED", "HEEL", "TOE"))

_OPENCAP = MarkerSet(
    name="opencap",
    description="OpenCap / Pose2Sim augmented anatomical markers in a .trc (r.ASIS_study "
                "L.PSIS_study r_knee_study r_mknee_study r_ankle_study r_mankle_study "
                "r_calc_study r_toe_study r_5meta_study ...)",
    method="anatomical",
    labels={"LASIS": ("L.ASIS_study",), "RASIS": ("r.ASIS_study",),
            "LPSIS": ("L.PSIS_study",), "RPSIS": ("r.PSIS_study",),
            **_sided({"THIGH": "{s}thigh1_study", "KNEE_LAT": "{s}knee_study",
                      "KNEE_MED": "{s}mknee_study", "SHANK": "{s}sh1_study",
                      "ANKLE_LAT": "{s}ankle_study", "ANKLE_MED": "{s}mankle_study",
                      "HEEL": "{s}calc_study", "TOE": "{s}toe_study", "MT5": "{s}5meta_study"},
                     {"L": "L_", "R": "r_"})},
    required=("LASIS", "RASIS", "LPSIS", "RPSIS") + _both("KNEE_LAT", "KNEE_MED", "ANKLE_LAT",
                                                          "ANKLE_MED", "HEEL", "TOE"))

# Detection order: the first set whose required labels are all present wins.
MARKER_SETS: tuple[MarkerSet, ...] = (_PIG, _ISB, _FUKUCHI, _HBM, _OPENCAP)


def by_name(name: str) -> MarkerSet:
    """The marker set called `name`."""
    for ms in MARKER_SETS:
        if ms.name == name:
            return ms
    raise ValueError(f"unknown marker set {name!r}; known: {[m.name for m in MARKER_SETS]}")


def strip_prefix(label: str) -> str:
    """'Subject01:LASI' -> 'LASI' (Vicon prefixes labels with the subject name)."""
    return label.rsplit(":", 1)[-1].strip()


def detect(labels) -> MarkerSet | None:
    """The first known marker set whose required labels are all in `labels` (or None)."""
    present = {strip_prefix(lab).upper() for lab in labels}
    return next((ms for ms in MARKER_SETS if not ms.missing(present)), None)


def describe_unknown(labels) -> str:
    """Why no set matched: the labels found and, per known set, what it misses."""
    present = {strip_prefix(lab).upper() for lab in labels}
    found = sorted({strip_prefix(lab) for lab in labels})
    shown = ", ".join(found[:40]) + (f" ... ({len(found)} in all)" if len(found) > 40 else "")
    near = "; ".join(f"{ms.name} lacks {', '.join(ms.missing(present)[:6])}"
                     + ("..." if len(ms.missing(present)) > 6 else "") for ms in MARKER_SETS)
    return (f"no known marker set (labels found: {shown or 'none'}; known sets: {near})")


def role_labels(ms: MarkerSet, labels) -> dict[str, list[int]]:
    """role -> indices into `labels` of the markers averaged for it (roles absent: left out)."""
    index = {strip_prefix(lab).upper(): i for i, lab in enumerate(labels)}
    out = {}
    for role, labs in ms.labels.items():
        idx = [index.get(lab.upper()) for lab in labs]
        if all(i is not None for i in idx):
            out[role] = idx
    return out
