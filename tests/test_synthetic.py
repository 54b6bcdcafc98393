"""Synthetic cohort: deterministic, shaped like the data, with subject-level variation."""

import numpy as np
import tensorflow_datasets as tfds

from gengait_jax.input_pipeline import to_arrays
from tfds_gait import synthetic


def _train(data_dir):
    return to_arrays(tfds.data_source("gait_cycles/embedded", split="train", data_dir=data_dir))


def test_fit_and_sample_on_real_strides(embedded_data_dir, tmp_path):
    tr = _train(embedded_data_dir)
    model = synthetic.fit_cohort_model(tr["angles"], tr["subject"], tr["side"])
    a = synthetic.sample_cohort(model, 20, 5, seed=1)
    b = synthetic.sample_cohort(model, 20, 5, seed=1)
    np.testing.assert_array_equal(a["angles"], b["angles"])
    assert a["angles"].shape == (100,) + tr["angles"].shape[1:]
    assert set(np.unique(a["side"])) == {"L", "R"}
    cmp = synthetic.compare_cohorts(tr["angles"], tr["subject"], a["angles"], a["subject"])
    assert cmp["mean_rms_diff_deg"].max() < 5.0
    assert 0.5 < cmp["sd_ratio"].min() and cmp["sd_ratio"].max() < 2.0
    real_med, synth_med = cmp["between_subject_rms_real"][0], cmp["between_subject_rms_synth"][0]
    assert 0.4 * real_med < synth_med < 2.5 * real_med
    model.save(str(tmp_path / "m.npz"))
    again = synthetic.sample_cohort(synthetic.CohortModel.load(str(tmp_path / "m.npz")), 20, 5, 1)
    np.testing.assert_allclose(again["angles"], a["angles"], atol=1e-4)


def test_swap_sides_round_trip():
    x = np.arange(2 * 3 * 4 * 1, dtype=float).reshape(2, 3, 4, 1)
    right = np.array([True, False])
    y = synthetic.swap_sides(x, right)
    np.testing.assert_array_equal(y[0, :, :2], x[0, :, 2:])
    np.testing.assert_array_equal(y[1], x[1])
    np.testing.assert_array_equal(synthetic.swap_sides(y, right), x)
