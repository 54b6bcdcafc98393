"""Event detection and stride segmentation on the shipped trials."""

import os

import numpy as np

from tfds_gait import c3d, events, strides

EMB = os.path.join(os.path.dirname(c3d.__file__), "data", "embedded")
TREADMILL = os.path.join(EMB, "gaitalytics", "SI02", "treadmill_events.c3d")


def test_resample_keeps_a_known_curve():
    f = 237
    x = np.sin(2 * np.pi * np.arange(f) / (f - 1))[:, None]
    y = strides.resample(x, 100)
    want = np.sin(2 * np.pi * np.arange(100) / 100)[:, None]
    np.testing.assert_allclose(y, want, atol=1e-3)


def test_fill_short_gaps_only():
    x = np.arange(40, dtype=float)
    x[5:8] = np.nan        # short: filled
    x[20:35] = np.nan      # long: kept
    y = strides.fill_short_gaps(x, max_gap=10)
    np.testing.assert_allclose(y[5:8], [5, 6, 7])
    assert np.isnan(y[20:35]).all()


def test_treadmill_strides_agree_with_marked_events():
    t = c3d.read_trial(TREADMILL)
    ss = strides.segment_strides(t)
    for side in "LR":
        n_marked = len(t.events[side]["strike"]) - 1
        mine = [s for s in ss if s["side"] == side]
        assert len(mine) == n_marked
        assert all(s["events"] == "marked" for s in mine)
        assert all(0.4 <= s["duration_s"] <= 3.0 for s in mine)
        assert all(55 <= s["foot_off_pct"] <= 70 for s in mine)
    assert ss[0]["angles"].shape == (100, 10, 3) and ss[0]["valid"].all()


def test_detector_matches_marked_events_within_few_frames():
    t = c3d.read_trial(TREADMILL)
    det = events.detect_events(t)
    for side in "LR":
        for kind in ("strike", "off"):
            err = events.frame_errors(t.events[side][kind], det[side][kind], t.rate)
            assert len(err) >= 9
            assert np.abs(err).max() <= 5


def test_short_and_long_strides_skipped_and_counted(caplog):
    t = c3d.read_trial(TREADMILL)
    ev = {s: {k: v.copy() for k, v in d.items()} for s, d in t.events.items()}
    ev["L"]["strike"] = np.array([100.0, 120.0, 500.0, 900.0])  # 0.2 s, 3.8 s, 4 s
    import dataclasses
    t2 = dataclasses.replace(t, events=ev)
    got = [s for s in strides.segment_strides(t2) if s["events"] == "marked" and s["side"] == "L"]
    assert got == []
    assert "implausible duration" in caplog.text


def test_nan_gap_marks_invalid():
    t = c3d.read_trial(TREADMILL)
    ang = t.angles.copy()
    ang[200:260, 2] = np.nan  # 60-frame gap in the left knee
    import dataclasses
    ss = strides.segment_strides(dataclasses.replace(t, angles=ang))
    touched = [s for s in ss if not s["valid"][:, 2].all()]
    assert touched and all(s["valid"][:, [0, 1, 3]].all() for s in touched)
