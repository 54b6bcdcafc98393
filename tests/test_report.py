"""Report outputs: the figure (flagged / not-scored joints), strict JSON, the long CSV."""

import csv
import json

import matplotlib.image
import numpy as np

import gait_synth as g
from gengait_jax import report
from gengait_jax.workdir import write_json


def _inputs(n: int = 3):
    """Strides, a twin and band, z with one flagged and one not-scored joint, a band."""
    data = g.strides(n, 41, p_left=0.5)
    x = data["angles"]
    mean, sd = x.mean(0), np.full((g.T, g.J, g.C), 3.0)
    x[:, 20:90, 3] = np.nan  # LAnkle mostly missing: not scored
    z = np.linspace(-1, 2, g.J)
    z[3] = np.nan
    flagged = np.arange(g.J) == g.NAMES.index("RKnee")
    z[flagged] = 4.0
    mean[:, 0, 1] = np.nan  # a curve the norms do not report: not drawn
    return data, x, z, flagged, {"*": (mean, sd), "L": (mean, sd), "R": (mean, sd)}


def test_report_png_draws_every_joint_and_channel(tmp_path):
    data, x, z, flagged, norm = _inputs()
    path = report.plot_report(
        str(tmp_path / "report.png"), joint_names=g.NAMES, channel_names=["sag", "front", "trans"],
        units="deg", x_ntjc=x, twin_ntjc=x - 1.0, sd_ntjc=np.ones_like(x), z_j=z,
        flagged_j=flagged, scored_j=np.isfinite(z), threshold=2.5, normative=norm,
        sides=data["side"], title="test")
    img = matplotlib.image.imread(path)
    assert img.shape[0] > 1.5 * img.shape[1] > 1000  # one row per joint below the bars
    red = (img[..., 0] > 0.7) & (img[..., 1] < 0.25) & (img[..., 2] < 0.25)
    assert red.sum() > 2000  # the flagged joint's frames, title and bar


def test_json_is_strict_and_csv_is_long_format(tmp_path):
    data, x, z, flagged, _ = _inputs(2)
    p = write_json(str(tmp_path / "s.json"), {"z": np.array([1.0, np.nan]),
                                               "f": np.bool_(True), "k": np.int64(3)})
    assert json.loads(open(p).read()) == {"z": [1.0, None], "f": True, "k": 3}
    p = report.write_twin_csv(str(tmp_path / "t.csv"), joint_names=g.NAMES,
                              channel_names=["sag", "front", "trans"], x_ntjc=x, twin_ntjc=x,
                              sd_ntjc=np.zeros_like(x), sides=data["side"])
    rows = list(csv.DictReader(open(p)))
    assert len(rows) == 2 * g.T * g.J * g.C
    assert rows[0].keys() == {"stride", "side", "joint", "channel", "pct", "input", "twin",
                              "twin_sd"}
    missing = [r for r in rows if r["joint"] == "LAnkle" and r["pct"] == "50.0"]
    assert all(r["input"] == "" for r in missing)  # NaN -> empty cell, never 0
