"""The canonical joint sets: ONE place that fixes the order of the J axis of `[T, J, C]`."""

from __future__ import annotations

SIDES = ("L", "R")
CHANNELS = ("sagittal", "frontal", "transverse")

# Plug-in-Gait angle outputs (without side prefix and without the "Angles" suffix).
_LOWER = ("Pelvis", "Hip", "Knee", "Ankle", "FootProgress")
_TRUNK = ("Thorax", "Spine")

JOINT_SETS: dict[str, tuple[str, ...]] = {
    # Both sides of the lower limb: present in every Plug-in-Gait lab export (default).
    "lower": tuple(f"{s}{j}" for s in SIDES for j in _LOWER),
    # Lower limb plus trunk angles (thorax, spine), where a dataset has them all.
    "lower_trunk": tuple(f"{s}{j}" for s in SIDES for j in _LOWER + _TRUNK),
}

_PRETTY = {"FootProgress": "foot progression"}


def joint_names(joint_set: str) -> tuple[str, ...]:
    """Returns the joint names of `joint_set` in canonical order (e.g. 'LKnee')."""
    if joint_set not in JOINT_SETS:
        raise ValueError(f"unknown joint set {joint_set!r}; known: {sorted(JOINT_SETS)}")
    return JOINT_SETS[joint_set]


def c3d_label(joint: str) -> str:
    """Returns the Plug-in-Gait C3D point label of a joint ('LKnee' -> 'LKneeAngles')."""
    return f"{joint}Angles"


def side_of(joint: str) -> str:
    """Returns 'L' or 'R' for a joint name."""
    return joint[0]


def pretty(joint: str) -> str:
    """Returns a clinician-readable name ('RKnee' -> 'right knee'; a name without a side
    prefix is returned as it is)."""
    if joint[:1] not in SIDES or len(joint) < 2 or not joint[1].isupper():
        return joint
    side = {"L": "left", "R": "right"}[joint[0]]
    base = joint[1:]
    return f"{side} {_PRETTY.get(base, base.lower())}"
