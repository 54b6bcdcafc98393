"""tfds_gait.joints: the kinematic chain behind the two-stage flags of a joint's neighbours."""

import numpy as np

from tfds_gait import joints


def _neighbours_of(joint_set: str) -> dict[str, set[str]]:
    """Each joint's chain neighbours by name."""
    names = joints.joint_names(joint_set)
    nb = np.asarray(joints.chain_neighbours(names))
    return {a: {names[b] for b in np.flatnonzero(nb[i])} for i, a in enumerate(names)}


def test_chain_neighbours_are_the_adjacent_joints_of_the_same_limb():
    nb = _neighbours_of("lower")
    assert nb["RKnee"] == {"RHip", "RAnkle"}
    assert nb["LAnkle"] == {"LKnee", "LFootProgress"}
    assert nb["LFootProgress"] == {"LAnkle"}
    # the pelvis is one segment, exported once per side: both sides' angles touch both hips
    assert nb["LPelvis"] == {"RPelvis", "LHip", "RHip"}
    assert nb["RHip"] == {"RKnee", "LPelvis", "RPelvis"}


def test_chain_neighbours_are_symmetric_and_never_the_joint_itself():
    for joint_set in joints.JOINT_SETS:
        nb = np.asarray(joints.chain_neighbours(joints.joint_names(joint_set)))
        assert (nb == nb.T).all() and not nb.diagonal().any(), joint_set


def test_chain_neighbours_of_a_skeleton_follow_its_segments():
    nb = _neighbours_of("skeleton")
    assert nb["PELVIS"] == {"LHJC", "RHJC"}
    assert nb["RKJC"] == {"RHJC", "RAJC"}
    assert nb["LAJC"] == {"LKJC", "LHEEL", "LTOE"}
