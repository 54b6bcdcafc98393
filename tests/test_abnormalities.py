"""Abnormality simulator: only ground-truth joints change, by the stated magnitude, smoothly."""

import os
import pathlib

import numpy as np
import pytest

from tfds_gait import abnormalities as ab
from tfds_gait import c3d, gait_cycles, joints, strides

NAMES = joints.joint_names("lower")
CH = {"sagittal": 0, "frontal": 1, "transverse": 2}


def _stride(seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(100) / 100
    return (20 * np.sin(2 * np.pi * (t[:, None, None] + rng.uniform(size=(1, 10, 3))))
            ).astype(np.float32)


def _expected(kind, side):
    """{(joint index, channel): signed degrees at severity 1}, read from MAGNITUDES."""
    other = "R" if side == "L" else "L"
    out = {}
    for label, deg in ab.MAGNITUDES[kind].items():
        words = label.split()
        s = other if words[0] == "contralateral" else side
        out[(NAMES.index(s + words[-2]), CH[words[-1]])] = deg
    return out


@pytest.mark.parametrize("kind", ab.ABNORMALITIES)
@pytest.mark.parametrize("side,stride_side", [("L", "L"), ("R", "L"), ("L", "R"), ("R", "R")])
def test_changes_only_truth_by_stated_magnitude(kind, side, stride_side):
    x = _stride()
    want = _expected(kind, side)
    for sev in (0.5, 1.0):
        y, truth = ab.apply(x, NAMES, kind, side=side, severity=sev, stride_side=stride_side)
        delta = y - x
        assert sorted(zip(*np.nonzero(truth))) == sorted(want)
        assert np.all(delta[:, ~truth] == 0)
        for (j, c), deg in want.items():
            signed_peak = delta[np.abs(delta[:, j, c]).argmax(), j, c]
            np.testing.assert_allclose(signed_peak, sev * deg, rtol=0.02)


@pytest.mark.parametrize("kind", ab.ABNORMALITIES)
def test_linear_in_severity(kind):
    x = _stride(1)
    half, _ = ab.apply(x, NAMES, kind, side="R", severity=0.5, stride_side="L")
    full, _ = ab.apply(x, NAMES, kind, side="R", severity=1.0, stride_side="L")
    np.testing.assert_allclose(2 * (half - x), full - x, atol=1e-4)


@pytest.mark.parametrize("kind", ab.ABNORMALITIES)
@pytest.mark.parametrize("foot_off", [50.0, 60.0, 70.0])
def test_smooth_and_periodic(kind, foot_off):
    x = np.zeros((100, 10, 3), np.float32)
    y, _ = ab.apply(x, NAMES, kind, side="L", stride_side="R", foot_off_pct=foot_off)
    wrapped = np.concatenate([y, y[:2]])  # across the cycle end too
    first = np.abs(np.diff(wrapped, axis=0)).max()
    second = np.abs(np.diff(wrapped, n=2, axis=0)).max()
    peak = max(abs(d) for d in ab.MAGNITUDES[kind].values())
    assert first < 0.2 * peak  # no step
    assert second < 0.05 * peak  # no kink


def test_phase_of_own_and_other_side_and_foot_off():
    x = np.zeros((100, 10, 3), np.float32)
    k = NAMES.index("LKnee")
    peak_at = lambda **kw: int(np.abs(ab.apply(x, NAMES, "stiff_knee", side="L", **kw)[0]
                                      [:, k, 0]).argmax())
    assert peak_at(stride_side="L") == 73  # swing of the left cycle
    assert peak_at(stride_side="R") == 23  # the left cycle starts half a right stride later
    # foot off at 70 %: the swing bump moves with swing, 73 -> 70 + 13 * 30 / 40
    assert abs(peak_at(stride_side="L", foot_off_pct=70.0) - 79.75) <= 0.5


def test_trendelenburg_pelvis_mirror():
    x = np.zeros((100, 10, 3), np.float32)
    y, truth = ab.apply(x, NAMES, "trendelenburg", side="R", stride_side="R")
    lp, rp = NAMES.index("LPelvis"), NAMES.index("RPelvis")
    assert truth[rp, 1] and truth[lp, 1] and truth[NAMES.index("RHip"), 1]
    np.testing.assert_allclose(y[:, lp, 1], -y[:, rp, 1])
    assert y[:, lp, 1].min() < 0  # the opposite (swing) side drops
    assert y[:, rp, 1].max() > 0  # seen from the weak stance side: its pelvis is higher
    assert y[:, NAMES.index("RHip"), 1].max() > 0  # stance hip adducts


def test_bilateral_evaluation_set_perturbs_both_sides_as_two_one_sided_passes():
    xs = np.stack([_stride(0), _stride(1)])
    sim = ab.make_evaluation_set(xs, ["L", "R"], NAMES, severities=(1.0,), bilateral=True)
    knee = list(sim["kind"]).index("stiff_knee")
    lk, rk = NAMES.index("LKnee"), NAMES.index("RKnee")
    assert sim["affected_side"][knee] == "LR" and sim["truth"][knee][[lk, rk], 0].all()
    left, _ = ab.apply(xs[0], NAMES, "stiff_knee", side="L", stride_side="L")
    both, _ = ab.apply(left, NAMES, "stiff_knee", side="R", stride_side="L")
    np.testing.assert_array_equal(sim["angles"][knee], both)
    assert (sim["angles"][knee][:, [lk, rk], 0] < xs[0][:, [lk, rk], 0] - 10).any(0).all()


def test_evaluation_set_reproducible_by_seed():
    xs = np.stack([_stride(i) for i in range(3)])
    sides = ["L", "R", "L"]
    a = ab.make_evaluation_set(xs, sides, NAMES, seed=5)
    b = ab.make_evaluation_set(xs, sides, NAMES, seed=5)
    c = ab.make_evaluation_set(xs, sides, NAMES, seed=6)
    n = 3 * len(ab.ABNORMALITIES) * 2
    assert a["angles"].shape == (n, 100, 10, 3) and a["angles"].dtype == np.float32
    assert a["truth"].shape == (n, 10, 3)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["affected_side"], c["affected_side"])
    i = 9  # any row equals apply() on its clean stride
    want, truth = ab.apply(xs[a["clean_index"][i]], NAMES, str(a["kind"][i]),
                           side=str(a["affected_side"][i]), severity=float(a["severity"][i]),
                           stride_side=sides[a["clean_index"][i]])
    np.testing.assert_array_equal(a["angles"][i], want)
    np.testing.assert_array_equal(a["truth"][i], truth)


def test_evaluation_set_per_stride_foot_off():
    xs = np.stack([_stride(i) for i in range(2)])
    ref = ab.make_evaluation_set(xs, ["L", "L"], NAMES, seed=1)
    nan = ab.make_evaluation_set(xs, ["L", "L"], NAMES, seed=1, foot_off_pct=[np.nan, 60.0])
    late = ab.make_evaluation_set(xs, ["L", "L"], NAMES, seed=1, foot_off_pct=[70.0, 70.0])
    np.testing.assert_array_equal(ref["angles"], nan["angles"])
    assert not np.array_equal(ref["angles"], late["angles"])


def test_bad_input_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown abnormality"):
        ab.apply(_stride(), NAMES, "limp", side="L", stride_side="L")
    with pytest.raises(ValueError, match="LKnee is not in the joint set"):
        ab.apply(_stride()[:, :2], NAMES[:2], "stiff_knee", side="L", stride_side="L")
    with pytest.raises(ValueError, match="foot_off_pct"):
        ab.apply(_stride(), NAMES, "crouch", side="L", stride_side="L", foot_off_pct=0.6)


def test_build_notes_show_the_simulator_table():
    notes = pathlib.Path(__file__).parents[1] / "BUILD_NOTES.md"
    assert ab.table_markdown() in notes.read_text()


def _skeleton_stride(side: str = "R"):
    """A real stride's skeleton (tfds_gait.skeleton) of the given side and the joint names."""
    path = os.path.join(gait_cycles.EMBEDDED_DIR, "biomechzoo", "HC031A",
                        "Straight_HC031A06.c3d")
    rows = strides.segment_strides(c3d.read_trial(path))
    return next(r for r in rows if r["side"] == side)["positions"], joints.joint_names("skeleton")


def test_stiff_knee_on_a_skeleton_moves_only_the_swing_foot_and_keeps_segment_lengths():
    pos, names = _skeleton_stride("R")
    pert, moved = ab.apply_positions(pos, names, "stiff_knee", side="R",
                                                stride_side="R")
    got = {names[j] for j in range(len(names)) if moved[j].any()}
    assert got == {"RAJC", "RHEEL", "RTOE"}  # the points distal to the right knee
    i = {n: k for k, n in enumerate(names)}
    for a, b in (("RKJC", "RAJC"), ("RAJC", "RHEEL"), ("RAJC", "RTOE"), ("RHEEL", "RTOE")):
        np.testing.assert_allclose(np.linalg.norm(pert[:, i[a]] - pert[:, i[b]], axis=-1),
                                   np.linalg.norm(pos[:, i[a]] - pos[:, i[b]], axis=-1),
                                   atol=1e-3)  # rigid segments
    swing = slice(60, 90)  # less knee flexion in swing: the ankle rises less
    assert pert[swing, i["RAJC"], 2].max() < pos[swing, i["RAJC"], 2].max() - 5.0


def test_trendelenburg_on_a_skeleton_drops_the_other_leg_and_keeps_the_stance_leg():
    pos, names = _skeleton_stride("R")
    pert, moved = ab.apply_positions(pos, names, "trendelenburg", side="R",
                                                stride_side="R")
    i = {n: k for k, n in enumerate(names)}
    assert not moved[[i[f"R{p}"] for p in ("HJC", "KJC", "AJC", "HEEL", "TOE")]].any()
    assert moved[i["LAJC"]].any() and not moved[i["PELVIS"]].any()
    stance = slice(20, 40)  # the opposite (left) side drops in the right single support
    assert pert[stance, i["LHJC"], 2].mean() < pos[stance, i["LHJC"], 2].mean()
    same, none = ab.apply_positions(pos, names, "crouch", side="R", stride_side="R",
                                               severity=0.0)
    np.testing.assert_allclose(same, pos, atol=1e-5)
    assert not none.any()
    with pytest.raises(ValueError, match="unknown abnormality"):
        ab.apply_positions(pos, names, "limp", side="R", stride_side="R")


def test_evaluation_set_of_skeletons_uses_the_kinematic_chain():
    pos, names = _skeleton_stride("R")
    sim = ab.make_evaluation_set(pos[None], ["R"], names, severities=(1.0,), positions=True)
    assert sim["angles"].shape == (len(ab.ABNORMALITIES), *pos.shape)
    for kind, side, truth, pert in zip(sim["kind"], sim["affected_side"], sim["truth"],
                                       sim["angles"]):
        want, _ = ab.apply_positions(pos, names, kind, side=side, stride_side="R")
        np.testing.assert_allclose(pert, want)
        assert truth.any() and not truth[names.index("PELVIS")].any()
