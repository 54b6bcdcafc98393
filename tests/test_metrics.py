"""Metric functions on hand-built arrays: each checked against a value worked out by hand."""

import itertools
import math

import numpy as np
import pytest
import scipy.stats

from gengait_jax import metrics


def _brute_auroc(scores, labels):
    """P(score_pos > score_neg) + 0.5 P(tie), by counting every pair."""
    s, y = np.ravel(scores), np.ravel(labels).astype(bool)
    pos, neg = s[y], s[~y]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def test_top1_hit_miss_and_skips_clean_strides():
    scores = np.array([[0.1, 0.9, 0.2], [0.8, 0.1, 0.3], [0.0, 0.0, 0.0]])
    truth = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]], bool)  # last stride clean: skipped
    out = metrics.topk_accuracy(scores, truth, 1, subjects=["a", "b", "b"])
    assert out["value"] == 0.5 and out["n"] == 2 and out["n_subjects"] == 2


def test_topk_counts_second_choice():
    scores = np.array([[0.8, 0.1, 0.3, 0.0]])
    truth = np.array([[0, 0, 1, 0]], bool)
    assert metrics.topk_accuracy(scores, truth, 1)["value"] == 0.0
    assert metrics.topk_accuracy(scores, truth, 2)["value"] == 1.0


def test_any_affected_joint_counts_as_hit():
    scores = np.array([[0.1, 0.2, 0.9, 0.3]])
    truth = np.array([[1, 0, 1, 0]], bool)
    assert metrics.topk_accuracy(scores, truth, 1)["value"] == 1.0


def test_ties_are_broken_uniformly_not_by_index():
    # All scores tied: argmax would pick joint 0 (a truth) and claim 100 %; chance is 1/4.
    truth = np.array([[1, 0, 0, 0]], bool)
    assert metrics.topk_accuracy(np.zeros((1, 4)), truth, 1)["value"] == pytest.approx(0.25)
    # Top-2 with one clear winner (not truth) and three tied: 1 of 3 tied picks hits.
    scores = np.array([[5.0, 1.0, 1.0, 1.0]])
    truth = np.array([[0, 1, 0, 0]], bool)
    assert metrics.topk_hit_prob(scores[0], truth[0], 2) == pytest.approx(1 / 3)


def test_topk_hit_prob_matches_enumeration_of_tie_orders():
    rng = np.random.default_rng(0)
    for _ in range(30):
        s = rng.integers(0, 3, 5).astype(float)
        t = rng.random(5) < 0.4
        k = int(rng.integers(1, 4))
        hits = []
        for prio in itertools.permutations(range(5)):  # every tie-breaking order, equally likely
            order = sorted(range(5), key=lambda i: (-s[i], prio.index(i)))
            hits.append(t[order[:k]].any())
        assert metrics.topk_hit_prob(s, t, k) == pytest.approx(np.mean(hits))


def test_nan_score_never_ranks_first():
    scores = np.array([[np.nan, 0.2, 0.1]])
    truth = np.array([[1, 0, 0]], bool)
    assert metrics.topk_accuracy(scores, truth, 1)["value"] == 0.0


def test_chance_analytic_and_simulated_agree():
    truth = np.zeros((50, 10), bool)
    truth[:25, 2] = True
    truth[25:, [2, 7]] = True
    exact = metrics.chance_topk(truth, 1)["value"]
    assert exact == pytest.approx(0.5 * 0.1 + 0.5 * 0.2)
    assert metrics.chance_topk(truth, 3)["value"] == pytest.approx(
        0.5 * (1 - math.comb(9, 3) / math.comb(10, 3)) + 0.5 * (1 - math.comb(8, 3) / math.comb(10, 3)))
    assert metrics.chance_topk_simulated(truth, 1, seed=0, draws=400) == pytest.approx(exact, abs=0.01)


def test_flag_precision_recall_f1():
    flags = np.array([[1, 1, 0, 0], [0, 0, 0, 1]], bool)
    truth = np.array([[1, 0, 1, 0], [0, 0, 0, 1]], bool)
    out = metrics.flag_prf(flags, truth)
    assert (out["tp"], out["fp"], out["fn"]) == (2, 1, 1)
    assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 / 3) and out["n"] == 2


def test_flag_precision_is_nan_without_flags():
    out = metrics.flag_prf(np.zeros((2, 3), bool), np.eye(2, 3, dtype=bool))
    assert math.isnan(out["precision"]) and out["recall"] == 0.0 and out["f1"] == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_brute_force_pair_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, (12, 5)).astype(float)  # many ties
    labels = rng.random((12, 5)) < 0.3
    labels[0, 0], labels[0, 1] = True, False
    assert metrics.auroc(scores, labels) == pytest.approx(_brute_auroc(scores, labels))


def test_auroc_extremes_and_degenerate():
    assert metrics.auroc([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert metrics.auroc([0.1, 0.8, 0.9], [1, 0, 0]) == 0.0
    assert metrics.auroc([1.0, 1.0], [1, 0]) == 0.5
    assert math.isnan(metrics.auroc([1.0, 2.0], [1, 1]))


def test_joint_auroc_uses_affected_strides_only():
    scores = np.array([[3.0, 1.0], [0.0, 9.0]])
    truth = np.array([[1, 0], [0, 0]], bool)
    out = metrics.joint_auroc(scores, truth)
    assert out["value"] == 1.0 and out["n"] == 1


def test_false_flag_rate():
    flags = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 0], [1, 1, 0]], bool)
    out = metrics.false_flag_rate(flags, subjects=[1, 1, 2, 2])
    assert out["value"] == 0.5 and out["joint_rate"] == pytest.approx(3 / 12)
    assert out["n"] == 4 and out["n_subjects"] == 2


def test_rank_biserial_by_hand():
    before = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    after = np.array([1.0, 2.0, 3.5, 1.0, 1.0])  # d = 4, 2, -0.5, 1, 0 (zero dropped)
    # |d| ranks: 0.5->1, 1->2, 2->3, 4->4; R+ = 9, R- = 1 -> r = 8/10.
    assert metrics.rank_biserial(before, after) == pytest.approx(0.8)
    assert metrics.rank_biserial(after, before) == pytest.approx(-0.8)
    assert metrics.rank_biserial([1.0, 2.0], [0.0, 1.0]) == 1.0


def test_cohens_dz_by_hand():
    before, after = np.array([3.0, 5.0, 7.0]), np.array([1.0, 2.0, 3.0])  # d = 2, 3, 4
    assert metrics.cohens_dz(before, after) == pytest.approx(3.0 / 1.0)


def test_wilcoxon_p_matches_scipy_and_is_two_sided():
    rng = np.random.default_rng(1)
    before = rng.normal(5, 1, 20)
    after = before - rng.normal(1, 1, 20)
    assert metrics.wilcoxon_p(before, after) == pytest.approx(
        scipy.stats.wilcoxon(before - after).pvalue)
    assert metrics.wilcoxon_p(before, after) == pytest.approx(metrics.wilcoxon_p(after, before))
    assert math.isnan(metrics.wilcoxon_p([1.0, 2.0], [1.0, 2.0]))


def test_paired_test_counts_and_subject_level():
    before = np.array([4.0, 5.0, 6.0, 7.0, np.nan, 9.0])
    after = np.array([1.0, 1.0, 2.0, 2.0, 1.0, 3.0])
    out = metrics.paired_test(before, after, subjects=["a", "a", "b", "b", "c", "c"])
    assert out["n"] == 5 and out["n_subjects"] == 3  # the NaN pair is dropped
    assert out["effect_size"] == 1.0 and out["cohens_dz"] > 0
    assert out["before_median"] == 6.0 and out["after_median"] == 2.0
    assert out["p_value"] == pytest.approx(scipy.stats.wilcoxon([3, 4, 4, 5, 6]).pvalue)
    assert "subject_p_value" in out and out["subject_effect_size"] == 1.0


def test_rms_deviation_masks_joints_channels_and_nans():
    a = np.zeros((2, 4, 2, 3))
    b = np.zeros((2, 4, 2, 3))
    a[0, :, 0, 0] = 3.0   # joint 0, channel 0: 3 deg all cycle
    a[0, :, 1, :] = 100.0  # joint 1: excluded by the mask
    a[1, :2, 0, 0] = 2.0
    a[1, 2:, 0, 0] = np.nan  # half the cycle missing: ignored
    mask = np.zeros((2, 2, 3), bool)
    mask[:, 0, 0] = True
    np.testing.assert_allclose(metrics.rms_deviation(a, b, mask), [3.0, 2.0])
    mask[0, 0, 1] = True  # one channel at 3, one at 0 -> sqrt(9 / 2)
    np.testing.assert_allclose(metrics.rms_deviation(a, b, mask)[0], np.sqrt(4.5))
    assert np.isnan(metrics.rms_deviation(a, b, np.zeros((2, 2, 3), bool))).all()
    assert metrics.rms_deg(a[0], b[0], mask[0]) == pytest.approx(np.sqrt(4.5))


def test_summary_drops_nans_and_counts():
    out = metrics.summary([1.0, 2.0, 3.0, np.nan], subjects=["x", "y", "y", "z"])
    assert out["mean"] == 2.0 and out["median"] == 2.0 and out["n"] == 3 and out["n_subjects"] == 2
