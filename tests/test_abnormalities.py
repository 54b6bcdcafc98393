"""Abnormality simulator: only ground-truth joints change, by the stated magnitude, smoothly."""

import numpy as np
import pytest

from tfds_gait import abnormalities as ab
from tfds_gait import joints

NAMES = joints.joint_names("lower")


def _stride(seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(100) / 100
    return (20 * np.sin(2 * np.pi * (t[:, None, None] + rng.uniform(size=(1, 10, 3))))
            ).astype(np.float32)


@pytest.mark.parametrize("kind", ab.ABNORMALITIES)
@pytest.mark.parametrize("side,stride_side", [("L", "L"), ("R", "L"), ("R", "R")])
def test_changes_only_truth_by_stated_magnitude(kind, side, stride_side):
    x = _stride()
    for sev in (0.5, 1.0):
        y, truth = ab.apply(x, NAMES, kind, side=side, severity=sev, stride_side=stride_side)
        delta = y - x
        assert truth.any()
        assert np.all(delta[:, ~truth] == 0)
        peak = np.abs(delta).max(axis=0)[truth]
        assert np.all(peak > 0)
        np.testing.assert_allclose(np.abs(delta).max(), sev * ab.magnitude(kind), rtol=0.02)


@pytest.mark.parametrize("kind", ab.ABNORMALITIES)
def test_smooth_and_periodic(kind):
    x = np.zeros((100, 10, 3), np.float32)
    y, _ = ab.apply(x, NAMES, kind, side="L", stride_side="L")
    wrapped = np.concatenate([y, y[:2]])  # across the cycle end too
    second = np.abs(np.diff(wrapped, n=2, axis=0)).max()
    assert second < 0.05 * ab.magnitude(kind)


def test_affected_side_and_pelvis_mirror():
    x = np.zeros((100, 10, 3), np.float32)
    y, truth = ab.apply(x, NAMES, "trendelenburg", side="R", stride_side="R")
    lp, rp = NAMES.index("LPelvis"), NAMES.index("RPelvis")
    assert truth[rp, 1] and truth[lp, 1] and truth[NAMES.index("RHip"), 1]
    np.testing.assert_allclose(y[:, lp, 1], -y[:, rp, 1])
    assert y[:, rp, 1].max() > 0  # weak side's pelvis up = contralateral drop


def test_contralateral_stride_is_half_a_cycle_later():
    x = np.zeros((100, 10, 3), np.float32)
    own, _ = ab.apply(x, NAMES, "stiff_knee", side="L", stride_side="L")
    other, _ = ab.apply(x, NAMES, "stiff_knee", side="L", stride_side="R")
    k = NAMES.index("LKnee")
    np.testing.assert_allclose(np.roll(own[:, k, 0], 50), other[:, k, 0], atol=1e-5)


def test_evaluation_set_reproducible_by_seed():
    xs = np.stack([_stride(i) for i in range(3)])
    a = ab.make_evaluation_set(xs, ["L", "R", "L"], NAMES, seed=5)
    b = ab.make_evaluation_set(xs, ["L", "R", "L"], NAMES, seed=5)
    assert len(a["angles"]) == 3 * len(ab.ABNORMALITIES) * 2
    np.testing.assert_array_equal(a["angles"], b["angles"])
    np.testing.assert_array_equal(a["side"], b["side"])
    assert a["truth"].shape == (42, 10, 3)


def test_unknown_kind_or_joint():
    with pytest.raises(ValueError, match="unknown abnormality"):
        ab.apply(_stride(), NAMES, "limp", side="L", stride_side="L")
    with pytest.raises(ValueError, match="LKnee is not in the joint set"):
        ab.apply(_stride()[:, :2], NAMES[:2], "stiff_knee", side="L", stride_side="L")
