"""Abnormality simulator: only ground-truth joints change, by the stated magnitude, smoothly."""

import pathlib

import numpy as np
import pytest

from tfds_gait import abnormalities as ab
from tfds_gait import joints

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
