"""The README's main job: data -> train -> calibrate -> evaluate -> detect + report."""

from __future__ import annotations

import os
import time

import ml_collections
import numpy as np
from absl import logging

from tfds_gait import abnormalities

DEMO_ABNORMALITY = ("stiff_knee", "R", 1.0)  # kind, affected side, severity


def _step(name: str, t0: float) -> None:
    """Logs a progress line with the elapsed time."""
    logging.info("[main job %5.0f s] %s", time.time() - t0, name)


def demo_input(cfg: ml_collections.ConfigDict, path: str) -> str:
    """Writes one held-out trial's strides with a simulated abnormality as an .npz."""
    from gengait_jax import evaluation
    test = evaluation.split_arrays(cfg.data.name, cfg.data.test_split, cfg.data.data_dir)
    trial = test["subject"][0]
    keep = test["subject"] == trial
    from gengait_jax.train import restore_model
    joint_names = restore_model(os.path.dirname(path))[2]["joint_names"]
    kind, side, severity = DEMO_ABNORMALITY
    foot_off = abnormalities.foot_offs(test["foot_off_pct"][keep], int(keep.sum()))
    angles = np.stack([abnormalities.apply(a, joint_names, kind, side=side, severity=severity,
                                           stride_side=s, foot_off_pct=float(f))[0]
                       for a, s, f in zip(test["angles"][keep], test["side"][keep], foot_off)])
    np.savez(path, angles=angles, valid=test["valid"][keep], side=test["side"][keep],
             joint_names=np.asarray(joint_names))
    logging.info("demo input: subject %s, %d strides, %s on side %s at severity %.1f -> %s",
                 trial, len(angles), kind, side, severity, path)
    return path


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs every step; returns the paths of what it wrote."""
    from gengait_jax import calibration, detection, evaluation, evaluation_report
    from gengait_jax import train as train_lib
    t0 = time.time()
    _step("preparing the dataset", t0)
    train_lib.prepare_data(cfg)
    _step(f"training {cfg.total_steps} steps", t0)
    train_lib.train_and_evaluate(cfg, workdir)
    _step("calibrating on the validation split", t0)
    calibration.calibrate_workdir(workdir)
    _step("evaluating on the held-out test split with the abnormality simulator", t0)
    ev = evaluation.evaluate(workdir)
    eval_paths = evaluation.write_outputs(ev, os.path.join(workdir, "evaluation"))
    _step("detect on one held-out trial with a simulated abnormality", t0)
    npz = demo_input(cfg, os.path.join(workdir, "demo_input.npz"))
    scores, det_paths = detection.run(workdir, npz, os.path.join(workdir, "detect"))
    _step("done", t0)
    print(evaluation_report.summary_table(ev))
    print()
    print(detection.summary(scores))
    print(f"\nevaluation: {eval_paths['markdown']}\nreport:     {det_paths['report']}")
    return {"evaluation": eval_paths, "detect": det_paths}
