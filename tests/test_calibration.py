"""Calibration: held-out healthy false-flag rate near nominal, trials, JSON, small samples."""

import json

import numpy as np
import pytest
import scipy.stats

import gait_synth as g
from gengait_jax import calibration, scoring

ALPHA = calibration.ALPHA


def _lognormal_scores(n: int, seed: int, j: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Healthy-like scores [n, j] (log-normal, joint-specific scale) and subjects [n]."""
    rng = np.random.default_rng(seed)
    subj = rng.integers(0, 12, n)
    effect = rng.normal(0, 0.15, (12, j))[subj]  # subjects are a little alike across strides
    return np.exp(np.log(np.linspace(1, 4, j)) + effect + rng.normal(0, 0.3, (n, j))), subj


def _held_out_rate(scores: np.ndarray, n_cal: int, splits: int, seed: int = 0, **kw) -> float:
    """Mean stride false-flag rate over random calibrate-on-n_cal / test-on-the-rest splits."""
    rng = np.random.default_rng(seed)
    rates = []
    for _ in range(splits):
        perm = rng.permutation(len(scores))
        cal = calibration.fit(scores[perm[:n_cal]], [f"j{i}" for i in range(scores.shape[1])],
                              max_trial_strides=1, **kw)
        z = calibration.zscores(scores[perm[n_cal:]], cal)
        rates.append(calibration.stride_flags(z, cal).any(-1).mean())
    return float(np.mean(rates))


def test_held_out_false_flag_rate_is_near_nominal_on_model_scores():
    model, _, meta = g.trained()
    scores = scoring.score_strides(model, g.strides(256, 21)["angles"]).score_nj
    rate = _held_out_rate(scores, n_cal=128, splits=40)
    assert ALPHA - 0.025 <= rate <= ALPHA + 0.025, rate


@pytest.mark.parametrize("n_cal", [30, 200])
def test_held_out_false_flag_rate_is_near_nominal_with_few_or_many_strides(n_cal):
    scores, _ = _lognormal_scores(4000, 1)
    rate = _held_out_rate(scores, n_cal=n_cal, splits=150 if n_cal == 30 else 40)
    # Conformal: E[rate] in [alpha - 1/(n+1), alpha] (+ Monte Carlo noise).
    assert ALPHA - 1 / (n_cal + 1) - 0.012 <= rate <= ALPHA + 0.012, rate


def test_trial_threshold_holds_on_held_out_subjects():
    scores, subj = _lognormal_scores(3000, 2)
    cal_keep = subj < 6
    cal = calibration.fit(scores[cal_keep], [f"j{i}" for i in range(10)],
                          subjects=subj[cal_keep])
    z = calibration.zscores(scores[~cal_keep], cal)
    rng = np.random.default_rng(0)
    test_subj = np.unique(subj[~cal_keep])
    for k in (1, 5):
        flags = []
        for _ in range(400):
            pool = np.flatnonzero(subj[~cal_keep] == rng.choice(test_subj))
            flags.append(calibration.trial_decision(z[rng.choice(pool, k)], cal)["flagged"].any())
        assert np.mean(flags) <= ALPHA + 0.05, (k, np.mean(flags))
    assert len(cal["trial_z_threshold"]) == calibration.MAX_TRIAL_STRIDES


def test_few_strides_fall_back_and_unscored_joints_never_flag(tmp_path):
    scores, _ = _lognormal_scores(12, 3, j=4)
    scores[:, 3] = np.nan  # a joint never scored in validation
    cal = calibration.fit(scores, ["LKnee", "RKnee", "LHip", "RHip"], model_id="m")
    assert cal["threshold_method"].startswith("t bonferroni") and cal["n_strides"] == 12
    t_bound = scipy.stats.t.ppf(1 - ALPHA / 4, 11) * np.sqrt(1 + 1 / 12)  # prediction bound
    assert cal["z_threshold"]["LKnee"] == pytest.approx(t_bound, rel=1e-5)
    assert cal["trial_z_threshold"] == [cal["z_threshold"]["LKnee"]] * 10  # no subjects
    z = calibration.zscores(np.array([[1.0, 1e3, np.nan, 5.0]]), cal)
    flags = calibration.stride_flags(z, cal)
    assert flags.tolist() == [[False, True, False, False]]
    trial = calibration.trial_decision(z, cal)
    assert trial["k"] == 1 and trial["flagged"].tolist() == [False, True, False, False]
    calibration.save(cal, str(tmp_path))
    text = (tmp_path / calibration.FILE).read_text()
    back = json.loads(text)  # strict JSON: NaN became null
    assert "NaN" not in text and back["id"] == cal["id"] and back["id"].startswith("cal-")
    assert calibration.load(str(tmp_path))["z_threshold"] == back["z_threshold"]
    with pytest.raises(FileNotFoundError, match="calibrate first"):
        calibration.load(str(tmp_path / "nope"))


def test_per_joint_mode_holds_per_joint_rates_but_flags_more_strides():
    scores, _ = _lognormal_scores(4000, 4)
    names = [f"j{i}" for i in range(10)]
    fam = calibration.fit(scores[:1000], names, max_trial_strides=1)
    per = calibration.fit(scores[:1000], names, mode="per_joint", max_trial_strides=1)
    f_fam = calibration.stride_flags(calibration.zscores(scores[1000:], fam), fam)
    f_per = calibration.stride_flags(calibration.zscores(scores[1000:], per), per)
    assert abs(f_fam.any(-1).mean() - ALPHA) < 0.02
    assert np.abs(f_per.mean(0) - ALPHA).max() < 0.025  # each joint at alpha...
    assert f_per.any(-1).mean() > 0.3  # ...so ~1 - 0.95^10 of healthy strides get a flag
