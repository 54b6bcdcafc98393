"""Clinical baselines on hand-built strides whose GVS, envelope and z-scores are known."""

import numpy as np
import pytest

from gengait_jax import baselines

T, J, C = 20, 3, 3


def _cohort(n=40, seed=0):
    """Strides = a sine template per (joint, plane) + a per-stride offset ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, T, endpoint=False)
    template = 10 * np.sin(t)[:, None, None] * np.arange(1, J * C + 1).reshape(1, J, C)
    return template[None] + rng.normal(0, 1, (n, 1, J, C)), template


def test_reference_mean_and_sd_use_valid_strides_only():
    x, _ = _cohort()
    x[0] += 1000.0  # an invalid stride that must not move the mean
    valid = np.ones(len(x), bool)
    valid[0] = False
    ref = baselines.fit_reference(x, valid, subjects=np.arange(len(x)) // 4)
    np.testing.assert_allclose(ref.mean_tjc["*"], x[1:].mean(0), atol=1e-9)
    np.testing.assert_allclose(ref.sd_tjc["*"], x[1:].std(0, ddof=1), atol=1e-9)
    assert ref.n_strides == 40 and ref.n_subjects == 10


def test_valid_mask_shapes():
    s = (2, T, J, C)
    for v in [np.ones(2), np.ones((2, J)), np.ones((2, T, J)), np.ones((2, J, C)), np.ones(s)]:
        assert baselines.valid_mask(v.astype(bool), s).shape == s
    with pytest.raises(ValueError):
        baselines.valid_mask(np.ones((2, 7), bool), s)


def test_gvs_and_gps_by_hand():
    x, template = _cohort()
    ref = baselines.fit_reference(x)
    probe = ref.mean_tjc["*"][None].copy()
    probe[0, :, 1, 0] += 3.0  # joint 1, plane 0: constant 3 deg off; planes 1, 2 exact
    gvs = baselines.gvs_joint(ref, probe)
    np.testing.assert_allclose(gvs[0], [0.0, np.sqrt(9 / 3), 0.0], atol=1e-9)
    np.testing.assert_allclose(baselines.gps(ref, probe), [np.sqrt(9 / (J * C))], atol=1e-9)


def test_gvs_ignores_nan_frames():
    x, _ = _cohort()
    ref = baselines.fit_reference(x)
    probe = ref.mean_tjc["*"][None].copy()
    probe[0, :, 0, :] += 2.0
    probe[0, :5, 0, :] = np.nan
    assert baselines.gvs_joint(ref, probe)[0, 0] == pytest.approx(2.0)


def test_reference_is_fitted_per_stride_side():
    x, template = _cohort()
    x[20:] = np.roll(x[20:], T // 2, axis=1)  # right-foot strides: half a cycle shifted
    sides = ["L"] * 20 + [b"R"] * 20
    ref = baselines.fit_reference(x, sides=sides)
    assert set(ref.mean_tjc) == {"L", "R"}
    np.testing.assert_allclose(ref.mean_tjc["R"], np.roll(ref.mean_tjc["L"], T // 2, 0), atol=1.0)
    probe = x[[0, 25]]
    np.testing.assert_allclose(baselines.reference_mean(ref, [0, 1], 2)[1], ref.mean_tjc["R"])
    # Compared to its own side the right stride is close; against the left mean it is far.
    near = baselines.gvs_joint(ref, probe, ["L", "R"])
    far = baselines.gvs_joint(ref, probe, ["R", "L"])
    assert (near < far).all()
    with pytest.raises(ValueError):
        baselines.gvs_joint(baselines.fit_reference(x[:20], sides=["L"] * 20), probe, ["L", "R"])


def test_zscore_top_joint_is_the_perturbed_one():
    x, _ = _cohort()
    ref = baselines.fit_reference(x)
    probe = ref.mean_tjc["*"][None] + 0.5
    probe[0, :, 2, 1] += 8.0
    z = baselines.zscores(ref, probe)
    assert z.shape == (1, J) and int(np.argmax(z[0])) == 2
    assert baselines.zscore_flags(ref, probe)[0].tolist() == [False, False, True]


def test_zscore_matches_training_gvs_distribution():
    x, _ = _cohort(n=200)
    ref = baselines.fit_reference(x)
    z = baselines.zscores(ref, x)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z.std(0, ddof=1), 1.0, atol=1e-9)


def test_envelope_flags_threshold_on_share_of_cycle_outside():
    x, _ = _cohort(n=200)
    ref = baselines.fit_reference(x)
    mu, sd = ref.mean_tjc["*"], ref.sd_tjc["*"]
    probe = np.repeat(mu[None], 3, axis=0)
    probe[0, :3, 0, 2] += 3 * sd[:3, 0, 2]   # 15 % of the cycle out: not flagged (<= 20 %)
    probe[1, :5, 0, 2] += 3 * sd[:5, 0, 2]   # 25 %: flagged
    probe[2, :, 1, 0] += 1.5 * sd[:, 1, 0]   # inside the band all cycle: not flagged
    frac = baselines.outside_fraction(ref, probe)
    np.testing.assert_allclose(frac[:, 0], [0.15, 0.25, 0.0])
    flags = baselines.envelope_flags(ref, probe)
    assert flags.tolist() == [[False] * 3, [True, False, False], [False] * 3]
    assert baselines.envelope_flags(ref, probe, max_outside=0.1)[0, 0]


def test_population_mean_correction_replaces_only_flagged_joints():
    x, _ = _cohort()
    ref = baselines.fit_reference(x)
    probe = x[:2] + 5.0
    flags = np.array([[True, False, False], [False, False, True]])
    out = baselines.population_mean_correction(ref, probe, flags)
    np.testing.assert_allclose(out[0, :, 0], ref.mean_tjc["*"][:, 0])
    np.testing.assert_allclose(out[0, :, 1:], probe[0, :, 1:])
    np.testing.assert_allclose(out[1, :, 2], ref.mean_tjc["*"][:, 2])
    np.testing.assert_allclose(out[1, :, :2], probe[1, :, :2])


def test_chance_baseline():
    truth = np.zeros((30, 10), bool)
    truth[:, 4] = True
    out = baselines.chance(truth, 1, seed=0, draws=300)
    assert out["value"] == pytest.approx(0.1) and out["n"] == 30
    assert out["simulated"] == pytest.approx(0.1, abs=0.02)
