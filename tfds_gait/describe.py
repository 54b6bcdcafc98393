"""Prints what a cohort yields: strides per split and cohort, lab offsets against the published
norms, and the event detector's errors.

Usage: python -m tfds_gait.describe [FOLDER]   (default: the embedded cohort)
FOLDER holds `<subject>/*.c3d` (a lab's c3d_dir folder); without it, the shipped cohorts.
"""

from __future__ import annotations

import collections
import logging
import sys
import warnings

import numpy as np

from tfds_gait import c3d, events, gait_cycles, joints, normative
from tfds_gait.errors import GaitDataError

CHANNELS = ("sagittal", "frontal", "transverse")


def detector_errors(files: list[str]) -> dict[str, np.ndarray]:
    """Detected - marked differences (ms) over every marked event of the files."""
    errs = {"strike": [], "off": []}
    for path in files:
        try:
            trial = c3d.read_trial(path)
            det = events.detect_events(trial)
        except GaitDataError:
            continue
        for side in "LR":
            for kind in errs:
                errs[kind] += (1000.0 / trial.rate * events.frame_errors(
                    trial.events[side][kind], det[side][kind], trial.rate)).tolist()
    return {k: np.asarray(v) for k, v in errs.items()}


def own_phase(rows: list[dict]) -> dict[str, np.ndarray]:
    """Per joint base name ('Knee'), the curves [n, T, C] of each stride's own-side joint."""
    names = joints.joint_names(gait_cycles.JOINT_SET)
    out = collections.defaultdict(list)
    for r in rows:
        for j, name in enumerate(names):
            if name[0] == r["side"]:
                out[name[1:]].append(np.where(r["valid"][:, j, None], r["angles"][:, j], np.nan))
    return {k: np.stack(v) for k, v in out.items()}


def split_table(rows: list[dict], split_of) -> str:
    """Markdown: subjects / strides (marked + detected) per split and cohort."""
    keys = sorted({(split_of(r), r["cohort"]) for r in rows}, key=lambda k: (
        ("train", "validation", "test").index(k[0]) if k[0] in ("train", "validation", "test")
        else 9, k[1]))
    out = ["| split | cohort | age group | subjects | strides (marked / detected) | angles |",
           "|---|---|---|---|---|---|"]
    for split, cohort in keys:
        sel = [r for r in rows if split_of(r) == split and r["cohort"] == cohort]
        ev = collections.Counter(r["events"] for r in sel)
        src = ", ".join(sorted({r["angle_source"] for r in sel}))
        out.append(f"| {split} | {cohort} | {sel[0]['age_group']} | "
                   f"{', '.join(sorted({r['subject'] for r in sel}))} | {len(sel)} "
                   f"({ev['marked']} / {ev['detected']}) | {src} |")
    return "\n".join(out)


def norm_table(rows: list[dict]) -> str:
    """Markdown: per cohort and joint, mean offset (deg) of the cohort's mean curve from
    Schwartz 2008 (free speed) and the share of the cycle inside the norm's +/- 2 SD."""
    base = ("Pelvis", "Hip", "Knee", "Ankle", "FootProgress")
    mean, sd = normative.normative_band([f"L{b}" for b in base], num_points=gait_cycles.NUM_POINTS)
    out = ["| cohort | joint | offset from norm: sag / front / trans (deg) | "
           "cycle inside +/- 2 SD: sag / front / trans |", "|---|---|---|---|"]
    for cohort in gait_cycles.COHORTS:
        curves = own_phase([r for r in rows if r["cohort"] == cohort])
        for j, b in enumerate(base):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                m = np.nanmean(curves[b], axis=0)  # [T, C]
            off, inside = [], []
            for c in range(3):
                if np.isfinite(mean[:, j, c]).all():
                    off.append(f"{np.mean(m[:, c] - mean[:, j, c]):+.1f}")
                    inside.append(f"{np.mean(np.abs(m[:, c] - mean[:, j, c]) <= 2 * sd[:, j, c]):.0%}")
                else:
                    off.append("-")
                    inside.append("-")
            out.append(f"| {cohort} | {b} | {' / '.join(off)} | {' / '.join(inside)} |")
    return "\n".join(out)


def main(folder: str | None) -> None:
    """Prints the summary tables."""
    logging.disable(logging.WARNING)
    if folder is None:
        rows = gait_cycles.read_embedded()
        split_of = lambda r: gait_cycles.embedded_split(r["subject"])
        files = gait_cycles._c3d_files(gait_cycles.EMBEDDED_DIR)
    else:
        rows = gait_cycles.read_folder(folder)
        split_of = lambda r: gait_cycles.hash_split(r["subject"])
        files = gait_cycles._c3d_files(folder)
    print(split_table(rows, split_of))
    print(f"\n{len({r['subject'] for r in rows})} subjects, {len(rows)} strides\n")
    if folder is None:
        print(norm_table(rows))
        print()
    for kind, e in detector_errors(files).items():
        if e.size:
            print(f"foot {kind}: n={len(e)} mean |err|={np.abs(e).mean():.1f} ms, "
                  f"max={np.abs(e).max():.0f} ms, bias={e.mean():+.1f} ms (detected - marked)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
