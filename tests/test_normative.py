"""Normative bands: published curves on the canonical joints, NaN where not reported."""

import numpy as np
import pytest

from tfds_gait import joints, normative


def test_schwartz_free_band():
    names = joints.joint_names("lower")
    mean, sd = normative.normative_band(names)
    assert mean.shape == sd.shape == (100, 10, 3)
    knee = names.index("RKnee")
    assert 50 < np.nanmax(mean[:, knee, 0]) < 70      # peak swing knee flexion
    assert 60 < np.argmax(mean[:, knee, 0]) < 80      # in swing
    ankle = names.index("LAnkle")
    assert np.isnan(mean[:, ankle, 1]).all()           # not reported: NaN, not 0 +/- 0
    assert (sd[np.isfinite(sd)] > 0).all()


def test_unknown_source():
    with pytest.raises(ValueError, match="unknown normative source"):
        normative.normative_band(("LKnee",), source="Perry")
