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
    # 3D points of a skeleton (tfds_gait.skeleton): the pelvis centre, then per side the hip,
    # knee and ankle joint centres, heel and toe (every marker set and keypoint model has them).
    "skeleton": ("PELVIS",) + tuple(f"{s}{p}" for s in SIDES
                                    for p in ("HJC", "KJC", "AJC", "HEEL", "TOE")),
}

_PRETTY = {"FootProgress": "foot progression", "HJC": "hip centre", "KJC": "knee centre",
           "AJC": "ankle centre", "HEEL": "heel", "TOE": "toe", "PELVIS": "pelvis centre"}

# Channels of marker-based joint angles that are reliable between sessions, raters and labs
# (McGinley et al. 2009, Gait Posture 29:360, systematic review: errors < 5 deg for the pelvis,
# hip sagittal and frontal, knee and ankle sagittal; larger for hip and knee rotation, knee
# varus/valgus and the ankle's other planes). Flags rest on these (calibration "channels").
RELIABLE_CHANNELS = {"Pelvis": (0, 1, 2), "Hip": (0, 1), "Knee": (0,), "Ankle": (0,),
                     "FootProgress": (2,)}


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
        return _PRETTY.get(joint, joint)
    side = {"L": "left", "R": "right"}[joint[0]]
    base = joint[1:]
    return f"{side} {_PRETTY.get(base, base.lower())}"


def contralateral(joints) -> list[int]:
    """Per joint the index of the same joint of the other side ('LKnee' -> 'RKnee'), -1 for a
    joint without one (trunk, the pelvis centre)."""
    index = {n: i for i, n in enumerate(joints)}
    other = {"L": "R", "R": "L"}
    return [index.get(other.get(j[:1], "") + j[1:], -1) if j[:1] in other else -1
            for j in joints]


# Adjacent segments' joints along the kinematic chain (angle outputs and skeleton points).
_CHAIN_EDGES = {frozenset(e) for e in (
    ("Pelvis", "Hip"), ("Hip", "Knee"), ("Knee", "Ankle"), ("Ankle", "FootProgress"),
    ("Pelvis", "Spine"), ("Spine", "Thorax"),
    ("PELVIS", "HJC"), ("HJC", "KJC"), ("KJC", "AJC"), ("AJC", "HEEL"), ("AJC", "TOE"),
    ("HEEL", "TOE"))}
# Angles of one segment shared by both sides (a Plug-in-Gait export gives the pelvis and trunk
# once per side): their left and right joints touch the limbs of both sides.
_SHARED = ("Pelvis", "Spine", "Thorax")


def chain_neighbours(joints) -> list[list[bool]]:
    """[J, J] bool: joint b is a neighbour of joint a on the kinematic chain (adjacent
    segments of the same side, 'LKnee' - 'LHip' / 'LAnkle'; a shared segment's joints, such as
    'LPelvis' and 'RPelvis', touch both sides: each other and both hips); never itself."""
    def split(j: str) -> tuple[str, str]:
        """(side or '', base name)."""
        return (j[0], j[1:]) if j[:1] in SIDES and j[1:2].isupper() else ("", j)
    parts = [split(j) for j in joints]
    out = []
    for sa, ba in parts:
        row = []
        for sb, bb in parts:
            same_side = sa == sb or not sa or not sb or ba in _SHARED or bb in _SHARED
            row.append((sa, ba) != (sb, bb) and same_side and (
                frozenset((ba, bb)) in _CHAIN_EDGES or (ba == bb and ba in _SHARED)))
        out.append(row)
    return out


def reliable_channels(joints, num_channels: int = len(CHANNELS)):
    """[J, C] bool: the reliable channels of each joint (RELIABLE_CHANNELS); a joint it does not
    list (trunk, a skeleton's points) keeps every channel."""
    out = []
    for j in joints:
        keep = RELIABLE_CHANNELS.get(j[1:] if j[:1] in SIDES else j)
        out.append([keep is None or c in keep for c in range(num_channels)])
    return out
