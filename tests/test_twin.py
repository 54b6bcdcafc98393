"""Pass 2: what is withheld never reaches the encoder, the rest is kept, the twin corrects."""

import numpy as np

import gait_synth as g
from gengait_jax import twin
from gengait_jax.gengait import GenGait


def _rms(a, b) -> float:
    """RMS difference over finite values."""
    return float(np.sqrt(np.nanmean((np.asarray(a) - np.asarray(b)) ** 2)))


def _gg(withhold: str = "joint") -> GenGait:
    model, cfg, meta = g.trained()
    cfg = cfg.copy_and_resolve_references()
    cfg.twin.withhold = withhold
    return GenGait(model, meta, g.calibration_of(), cfg)


def _joint(n: int, j: int) -> np.ndarray:
    """[n, P, J] withheld: every patch of joint j."""
    p = g.T // g.config().model.patch
    w = np.zeros((n, p, g.J), bool)
    w[:, :, j] = True
    return w


def test_nothing_withheld_keeps_the_input_and_compiles_once():
    model, _, _ = g.trained()
    data = g.strides(6, 31, dropout_every=3)
    none = np.zeros((6, g.T // model.patch, g.J), bool)
    before = twin.trace_count()
    kept = twin.normative_twin(model, data["angles"], data["valid"], none)
    after = twin.trace_count()  # +1, or +0 where an earlier test compiled this bucket
    assert after <= before + 1  # 1 + 8 maskings: one program
    twin.normative_twin(model, data["angles"][:5], data["valid"][:5], none[:5])
    assert twin.trace_count() == after  # another stride count of the bucket: no recompile
    valid = data["valid"]
    np.testing.assert_array_equal(kept.twin_ntjc[valid], data["angles"][valid])
    assert np.isfinite(kept.twin_ntjc).all()  # invalid frames are filled by the model
    assert (kept.sd_ntjc[valid] == 0).all() and (kept.replaced_ntj == ~valid).all()
    full = twin.normative_twin(model, data["angles"], data["valid"], none, keep_observed=False)
    assert _rms(full.twin_ntjc, data["angles"]) < 4.0  # every joint from its own occlusion


def test_withheld_joint_never_reaches_the_encoder_and_is_corrected():
    model, _, _ = g.trained()
    clean = g.strides(4, 32)["angles"]
    j = g.NAMES.index("RKnee")
    bad = clean.copy()
    bad[:, :, j] += 15.0
    a = twin.normative_twin(model, bad, None, _joint(4, j))
    b = twin.normative_twin(model, bad + np.where(np.arange(g.J) == j, 40.0, 0.0)[:, None],
                            None, _joint(4, j))  # other values on the withheld joint only
    np.testing.assert_allclose(a.twin_ntjc[:, :, j], b.twin_ntjc[:, :, j], atol=1e-4)
    assert _rms(a.twin_ntjc[:, :, j], clean[:, :, j]) < 0.3 * 15.0
    others = np.arange(g.J) != j
    np.testing.assert_array_equal(a.twin_ntjc[:, :, others], bad[:, :, others])  # unchanged
    assert (a.sd_ntjc[:, :, j] > 0).all() and (a.sd_ntjc[:, :, others] == 0).all()


def test_twin_of_a_flagged_joint_moves_toward_the_held_out_persons_clean_stride():
    """detect on a held-out person's perturbed strides: the twin of the flagged joint is
    much closer to that person's own clean curve than the perturbed input (how it compares with
    the population mean on real people: BUILD_NOTES "Normative twin")."""
    gg = _gg("joint")
    d = g.strides(4, 35, subjects=1)
    j = g.NAMES.index("LKnee")
    bad = g.as_strides(d)
    x = bad.x.copy()
    x[:, 40:80, j, 0] -= 20.0  # a phase-local deficit of one joint
    res = gg.detect(bad.replace(x=x))
    assert "LKnee" in res.flagged and np.nanargmax(res.decision.z) == j
    before = _rms(x[:, :, j], d["angles"][:, :, j])
    after = _rms(res.twin.twin_ntjc[:, :, j], d["angles"][:, :, j])
    assert after < 0.5 * before, (before, after)
    unflagged = ~res.decision.flagged  # every joint the twin did not withhold is unchanged
    np.testing.assert_array_equal(res.twin.twin_ntjc[:, :, unflagged], x[:, :, unflagged])


def test_phase_mode_withholds_only_the_abnormal_phase():
    gg = _gg("phase")
    d = g.as_strides(g.strides(3, 37, subjects=1))
    j = g.NAMES.index("RAnkle")
    x = d.x.copy()
    x[:, 10:30, j, 0] += 25.0
    res = gg.detect(d.replace(x=x))
    assert "RAnkle" in res.flagged
    frames = twin.frames_withheld(gg.withheld(d, res.decision.flagged, res.decision.map,
                                              res.decision.threshold), gg.model.patch)
    assert frames[:, 15:25, j].all() and not frames[:, 50:80, j].any()  # its swing stays
    np.testing.assert_array_equal(res.twin.twin_ntjc[:, 50:80, j], x[:, 50:80, j])


def test_band_covers_held_out_healthy_curves():
    """Healthy held-out strides with one joint withheld: the clean curve lies inside the
    twin +/- 2 SD band (the healthy error SD of the reconstruction or of its blend with the other
    side, and the samples' SD) at >= 85 % of frames; without the shrink, which would keep
    the healthy curve itself."""
    gg = _gg("joint")
    gg.cfg.twin.shrink_window = 0
    d = g.as_strides(g.strides(8, 34))
    inside = []
    for j in (2, 3, 8):
        tw = gg.twin(d, _joint(len(d), j))
        inside.append(np.abs(tw.twin_ntjc[:, :, j] - d.x[:, :, j]) <= 2 * tw.sd_ntjc[:, :, j])
    assert np.mean(inside) > 0.85, np.mean(inside)


def test_healthy_prior_blends_the_observed_other_side_and_widens_the_band():
    """Joint 0 withheld with its twin (joint 1) observed: w * recon + (1 - w) * (other side +
    mean asymmetry), band sqrt((w sd_samples)^2 + blend sd^2); joint 2 withheld with its twin
    (3) withheld too: the reconstruction, band sqrt(sd_samples^2 + residual sd^2); kept joints
    unchanged with a zero band."""
    rng = np.random.default_rng(3)
    n, t, j, c = 2, 10, 5, 3
    x = rng.normal(0, 5, (n, t, j, c))
    recon = rng.normal(0, 5, (n, t, j, c))
    replaced = np.zeros((n, t, j), bool)
    replaced[:, :, [0, 2, 3]] = True
    sd_s = np.where(replaced[..., None], 2.0, 0.0)
    tw = twin.Twin(np.where(replaced[..., None], recon, x), recon, sd_s, replaced)
    full = lambda v: np.full((t, j, c), v)
    fusion = {"weight": full(0.25), "mean_asym": full(3.0), "sd": full(1.5)}
    out = twin.with_healthy_prior(tw, x, full(4.0), fusion, [1, 0, 3, 2, -1])
    np.testing.assert_allclose(out.twin_ntjc[:, :, 0],
                               0.25 * recon[:, :, 0] + 0.75 * (x[:, :, 1] + 3.0))
    np.testing.assert_allclose(out.sd_ntjc[:, :, 0], np.sqrt(0.5 ** 2 + 1.5 ** 2))
    np.testing.assert_array_equal(out.twin_ntjc[:, :, 2:4], recon[:, :, 2:4])
    np.testing.assert_allclose(out.sd_ntjc[:, :, 2:4], np.sqrt(2.0 ** 2 + 4.0 ** 2))
    np.testing.assert_array_equal(out.twin_ntjc[:, :, [1, 4]], x[:, :, [1, 4]])
    assert (out.sd_ntjc[:, :, [1, 4]] == 0).all()
    plain = twin.with_healthy_prior(tw, x, full(4.0), None, [1, 0, 3, 2, -1])
    np.testing.assert_array_equal(plain.twin_ntjc, tw.twin_ntjc)  # no fusion: no blend
    x_gap = x.copy()
    x_gap[0, 4, 1, 0] = np.nan  # the other side not observed there: the reconstruction
    gap = twin.with_healthy_prior(tw, x_gap, full(4.0), fusion, [1, 0, 3, 2, -1])
    np.testing.assert_array_equal(gap.twin_ntjc[0, 4, 0], recon[0, 4, 0])


def test_shrinking_keeps_what_agrees_with_the_estimate_and_corrects_what_does_not():
    """One replaced joint: where the observed curve lies within scale x band SD of the
    estimate (over the window) the twin is the observed curve, where it deviates by many SDs
    the twin stays near the estimate, in between the empirical-Bayes weight v / m; samples not
    replaced, unobserved ones and window 0 are left alone."""
    n, t, j, c = 2, 50, 3, 2
    recon = np.zeros((n, t, j, c))
    x = np.full((n, t, j, c), 0.5)               # 0.5 deg from the estimate: normal
    x[:, 20:30, 0, 0] = 30.0                     # a 10-point, 30-deg deviation: abnormal
    x[0, 5, 0, 1] = np.nan                       # unobserved
    replaced = np.zeros((n, t, j), bool)
    replaced[:, :, 0] = True
    tw = twin.Twin(np.where(replaced[..., None], recon, x), recon,
                   np.where(replaced[..., None], 2.0, 0.0), replaced)
    out = twin.shrink_toward_observed(tw, x, window=4, scale=1.0)
    np.testing.assert_array_equal(out.twin_ntjc[:, :15, 0, 0], x[:, :15, 0, 0])  # kept
    np.testing.assert_array_equal(out.twin_ntjc[:, 35:, 0, 0], x[:, 35:, 0, 0])
    assert np.abs(out.twin_ntjc[:, 22:28, 0, 0]).max() < 0.2      # 30 deg corrected
    m = (3 * 30.0 ** 2 + 2 * 0.5 ** 2) / 5      # the window at point 29 holds 27..31
    np.testing.assert_allclose(out.twin_ntjc[:, 29, 0, 0], 4.0 / m * 30.0, rtol=1e-9)
    assert out.twin_ntjc[0, 5, 0, 1] == 0.0      # unobserved: the estimate
    np.testing.assert_array_equal(out.twin_ntjc[:, :, 1:], x[:, :, 1:])  # not replaced
    np.testing.assert_array_equal(out.sd_ntjc, tw.sd_ntjc)
    off = twin.shrink_toward_observed(tw, x, window=0, scale=1.0)
    np.testing.assert_array_equal(off.twin_ntjc, tw.twin_ntjc)


def test_shrinking_brings_a_flagged_joints_twin_closer_to_the_clean_stride():
    """detect on a held-out person with a phase-local knee deficit: with the default shrink
    the flagged knee's twin is closer to the clean stride than the estimate that replaces the
    whole joint (shrink_window 0), and it keeps the observed curve in most normal phases."""
    d = g.strides(4, 35, subjects=1)
    j = g.NAMES.index("LKnee")
    bad = g.as_strides(d)
    x = bad.x.copy()
    x[:, 40:80, j, 0] -= 20.0
    res = _gg("joint").detect(bad.replace(x=x))
    hard_gg = _gg("joint")
    hard_gg.cfg.twin.shrink_window = 0
    hard = hard_gg.detect(bad.replace(x=x))
    assert "LKnee" in res.flagged and "LKnee" in hard.flagged
    clean = d["angles"][:, :, j]
    assert _rms(res.twin.twin_ntjc[:, :, j], clean) < _rms(hard.twin.twin_ntjc[:, :, j], clean)
    kept = res.twin.twin_ntjc[:, :30, j] == x[:, :30, j]
    assert kept.mean() > 0.5, kept.mean()
    assert not (hard.twin.twin_ntjc[:, :30, j] == x[:, :30, j]).any()
