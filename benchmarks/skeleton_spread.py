r"""The skeleton's scale, measured: between-person spread of the body-frame positions in
percent of leg length (tfds_gait.skeleton) against the same positions in mm, on the embedded
train + validation people (never the test split).

  python -m benchmarks.skeleton_spread
"""

import glob
import os

import numpy as np

from tfds_gait import c3d, gait_cycles, joints, skeleton, strides

NAMES = joints.joint_names(skeleton.JOINT_SET)


def trials() -> list:
    """Every readable walking trial with joint centres of the train + validation people."""
    test = set(gait_cycles.EMBEDDED_SPLITS["test"])
    out = []
    for path in sorted(glob.glob(os.path.join(gait_cycles.EMBEDDED_DIR, "*", "*", "*.c3d"))):
        if c3d.is_static_name(path):
            continue
        trial = c3d.read_trial(path)
        if trial.kinematics is not None and trial.subject not in test:
            out.append(trial)
    return out


def subject_means(rows: list, legs: dict, in_mm: bool) -> np.ndarray:
    """[sides, subjects, T, J, 3] mean strides (in mm: % x that subject's leg / 100)."""
    subjects = sorted({r["subject"] for r in rows})
    out = []
    for side in joints.SIDES:
        means = []
        for s in subjects:
            x = [r["positions"] for r in rows if r["subject"] == s and r["side"] == side
                 and r["positions_valid"].all()]
            if x:
                means.append(np.mean(x, 0) * (legs[s] / 100.0 if in_mm else 1.0))
        out.append(np.stack(means))
    return out


def main() -> None:
    """Prints the between-person SD per axis and per joint for both scales."""
    ts = trials()
    legs: dict[str, list] = {}
    rows = []
    for t in ts:
        legs.setdefault(t.subject, []).append(
            skeleton.leg_length_mm(t.kinematics.centres, 0, t.num_frames - 1))
        rows += strides.segment_strides(t, skipped_counts={})
    legs = {k: float(np.nanmedian(v)) for k, v in legs.items()}
    median_leg = float(np.median(list(legs.values())))
    sd = {scale: np.mean([m.std(0).mean(0) for m in subject_means(rows, legs, scale == "mm")],
                         0) for scale in ("pct", "mm")}
    sd["mm"] = sd["mm"] / median_leg * 100.0  # on one scale: % of the median leg
    print(f"{len(rows)} strides of {len(legs)} people; leg length {min(legs.values()):.0f}-"
          f"{max(legs.values()):.0f} mm (median {median_leg:.0f})")
    print("between-person SD (mean over joints and the cycle), forward / left / up:")
    print(f"  % leg length: {np.round(sd['pct'].mean(0), 2)}   mm (as % of the median leg): "
          f"{np.round(sd['mm'].mean(0), 2)}")
    for j, name in enumerate(NAMES):
        print(f"  {name:7s} {sd['pct'][j].mean():5.2f}  {sd['mm'][j].mean():5.2f}")


if __name__ == "__main__":
    main()
