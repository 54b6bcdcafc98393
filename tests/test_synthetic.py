"""Synthetic cohort: deterministic, shaped like the data, with subject-level variation."""

import numpy as np
import pytest

from gengait_jax import data
from tfds_gait import synthetic

SUBJECT_SD, STRIDE_SD = 5.0, 1.0


def _cohort(n_subjects=8, strides=6, seed=0):
    """Sinusoid strides [S, 100, 4, 3]: subject offsets (SD 5) + smooth stride noise (SD 1)."""
    rng = np.random.default_rng(seed)
    t = np.arange(100) / 100
    phase = np.array([0.0, 0.1, 0.5, 0.6])[None, :, None]  # L block, then R half a cycle later
    base = 30 * np.sin(2 * np.pi * (t[:, None, None] + phase)) * np.ones((1, 1, 3))
    subj = np.repeat(np.arange(n_subjects), strides)
    offsets = rng.normal(0, SUBJECT_SD, (n_subjects, 1, 4, 3))
    wiggle = rng.normal(0, STRIDE_SD, (len(subj), 1, 4, 3)) * np.cos(
        2 * np.pi * (t[None, :, None, None] + rng.uniform(size=(len(subj), 1, 4, 1))))
    x = base + offsets[subj] + np.sqrt(2) * wiggle
    sides = np.where(np.arange(len(subj)) % 2, "R", "L")
    return synthetic.swap_sides(x, sides == "R").astype(np.float32), subj, sides


def test_sample_is_deterministic_with_the_right_shapes():
    x, subj, sides = _cohort()
    model = synthetic.fit_cohort_model(x, subj, sides, n_components=6)
    a = synthetic.sample_cohort(model, 30, 4, seed=1)
    b = synthetic.sample_cohort(model, 30, 4, seed=1)
    c = synthetic.sample_cohort(model, 30, 4, seed=2)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["angles"], c["angles"])
    assert a["angles"].shape == (120, 100, 4, 3) and a["angles"].dtype == np.float32
    assert a["subject"].dtype == np.int32 and a["subject"].tolist() == np.repeat(
        np.arange(30), 4).tolist()
    sides = a["side"].reshape(30, 4)  # each subject's strides alternate sides, as in a trial
    assert np.all(sides[:, 1:] != sides[:, :-1]) and set(sides[:, 0]) == {"L", "R"}


def test_mean_and_subject_variation_match_the_training_cohort():
    x, subj, sides = _cohort()
    model = synthetic.fit_cohort_model(x, subj, sides, n_components=30)
    s = synthetic.sample_cohort(model, 300, 6, seed=0)
    cmp = synthetic.compare_cohorts(x, subj, s["angles"], s["subject"], real_sides=sides,
                                    synth_sides=s["side"])
    assert cmp["mean_rms_diff_deg"].max() < 1.5
    assert np.all((0.6 < cmp["sd_ratio"]) & (cmp["sd_ratio"] < 1.6))
    real, synth = np.median(cmp["between_real_deg"]), np.median(cmp["between_synth_deg"])
    assert synth > 2.0  # subjects differ ...
    assert 0.5 * real < synth < 2.0 * real  # ... by as much as the real ones
    # the stride-level part alone: strides of one synthetic subject spread like the data's
    mine = s["subject"] == 0
    one = synthetic.swap_sides(s["angles"][mine], s["side"][mine] == "R")
    spread = np.sqrt(one.var(axis=0).mean())
    assert 0.5 * STRIDE_SD < spread < 2.0 * STRIDE_SD


def test_samples_are_as_smooth_as_the_data():
    x, subj, sides = _cohort()
    s = synthetic.sample_cohort(synthetic.fit_cohort_model(x, subj, sides), 50, 4, seed=3)
    rough = lambda a: np.abs(np.diff(a, n=2, axis=1)).max()
    assert rough(s["angles"]) < 1.5 * rough(x)


def test_save_load_round_trip(tmp_path):
    x, subj, sides = _cohort()
    model = synthetic.fit_cohort_model(x, subj, sides)
    model.save(str(tmp_path / "m.npz"))
    again = synthetic.CohortModel.load(str(tmp_path / "m.npz"))
    np.testing.assert_array_equal(synthetic.sample_cohort(again, 5, 3, 4)["angles"],
                                  synthetic.sample_cohort(model, 5, 3, 4)["angles"])


def test_compare_cohorts_on_known_differences():
    x, subj, _ = _cohort()
    shifted = x.copy()
    shifted[:, :, 1] += 2.0  # one joint off by 2 deg everywhere
    cmp = synthetic.compare_cohorts(x, subj, shifted, subj)
    np.testing.assert_allclose(cmp["mean_rms_diff_deg"], [0, 2, 0, 0], atol=1e-5)
    np.testing.assert_allclose(cmp["sd_ratio"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(cmp["between_synth_deg"], cmp["between_real_deg"], atol=1e-4)
    wider = x.mean(0) + 2 * (x - x.mean(0))
    cmp = synthetic.compare_cohorts(x, subj, wider, subj)
    np.testing.assert_allclose(cmp["sd_ratio"], 2.0, rtol=1e-5)
    two = np.stack([np.zeros((100, 4, 3)), np.full((100, 4, 3), 3.0)])
    d = synthetic.compare_cohorts(two, np.array([0, 1]), two, np.array([0, 1]))
    np.testing.assert_allclose(d["between_real_deg"], [3.0])


def test_fit_and_sample_on_real_strides(embedded_data_dir):
    tr = data.load_split("gait_cycles/embedded", "train", embedded_data_dir)
    x = np.nan_to_num(tr.x)
    model = synthetic.fit_cohort_model(x, tr.subject, tr.side)
    s = synthetic.sample_cohort(model, 150, 3, seed=0)
    assert s["angles"].shape == (450,) + x.shape[1:]
    cmp = synthetic.compare_cohorts(x, tr.subject, s["angles"], s["subject"],
                                    real_sides=tr.side, synth_sides=s["side"])
    assert cmp["mean_rms_diff_deg"].max() < 1.5
    assert np.all((0.6 < cmp["sd_ratio"]) & (cmp["sd_ratio"] < 1.6))
    real, synth = np.median(cmp["between_real_deg"]), np.median(cmp["between_synth_deg"])
    assert 0.6 * real < synth < 1.6 * real


def test_swap_sides_round_trip():
    x = np.arange(2 * 3 * 4 * 1, dtype=float).reshape(2, 3, 4, 1)
    right = np.array([True, False])
    y = synthetic.swap_sides(x, right)
    np.testing.assert_array_equal(y[0, :, :2], x[0, :, 2:])
    np.testing.assert_array_equal(y[1], x[1])
    np.testing.assert_array_equal(synthetic.swap_sides(y, right), x)


def test_bad_input():
    x, subj, sides = _cohort()
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        synthetic.fit_cohort_model(x, subj, sides)
    x, subj, sides = _cohort(n_subjects=1)
    with pytest.raises(ValueError, match="2 subjects"):
        synthetic.fit_cohort_model(x, subj, sides)
