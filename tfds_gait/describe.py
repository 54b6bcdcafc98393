"""Prints what a C3D folder yields: strides per subject and events, and detector errors.

Usage: python -m tfds_gait.describe [FOLDER]   (default: the embedded cohort)
"""

from __future__ import annotations

import collections
import logging
import sys

import numpy as np

from tfds_gait import c3d, events, gait_cycles, strides
from tfds_gait.errors import GaitDataError


def detector_errors(folder: str) -> dict[str, np.ndarray]:
    """Detected - marked frame differences over every marked event of a folder."""
    errs = {"strike": [], "off": []}
    for path in gait_cycles._c3d_files(folder):
        try:
            trial = c3d.read_trial(path)
            det = events.detect_events(trial)
        except GaitDataError:
            continue
        for side in "LR":
            for kind in errs:
                errs[kind] += events.frame_errors(trial.events[side][kind], det[side][kind],
                                                  trial.rate).tolist()
    return {k: np.asarray(v) for k, v in errs.items()}


def main(folder: str) -> None:
    """Prints the summary tables."""
    logging.disable(logging.WARNING)
    rows = gait_cycles.read_folder(folder)
    split = {s: k for k, v in gait_cycles.EMBEDDED_SPLITS.items() for s in v}
    table = collections.Counter((split.get(r["subject"], "-"), r["subject"], r["events"])
                                for r in rows)
    print("| split | subject | marked | detected |\n|---|---|---|---|")
    for sp, subj in sorted({(a, b) for a, b, _ in table}):
        print(f"| {sp} | {subj} | {table[(sp, subj, 'marked')]} | "
              f"{table[(sp, subj, 'detected')]} |")
    for kind, e in detector_errors(folder).items():
        print(f"foot {kind}: n={len(e)} mean |err|={np.abs(e).mean():.2f} frames, "
              f"max={np.abs(e).max():.0f}, bias={e.mean():+.2f} (detected - marked)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else gait_cycles.EMBEDDED_DIR)
