"""The end-to-end pipeline of the README's main job: data -> train (the model and its K fold
models) -> out-of-fold calibration -> evaluation against the clinical baselines -> detect on a
held-out trial with a simulated stiff knee -> report.
"""

from __future__ import annotations

import time

import ml_collections
import numpy as np
from absl import logging

from gengait_jax import configs, data, evaluation, evaluation_report, train
from gengait_jax.gengait import GenGait
from gengait_jax.workdir import Workdir
from tfds_gait import abnormalities

DEMO_ABNORMALITY = ("stiff_knee", "R", 1.0)  # kind, affected side, severity


def _step(name: str, t0: float) -> None:
    """One progress line with the elapsed time."""
    logging.info("[main job %4.0f s] %s", time.time() - t0, name)


def demo_trial(test: data.Strides) -> data.Strides:
    """The held-out recording with the most strides (ties: the first by name)."""
    keys = np.char.add(np.char.add(test.subject.astype(str), "/"), test.trial.astype(str))
    names, counts = np.unique(keys, return_counts=True)
    return test.take(keys == names[np.argmax(counts)])


def demo_input(test: data.Strides, path: str) -> str:
    """Writes one held-out trial's strides with the simulated abnormality as an .npz."""
    trial = demo_trial(test)
    kind, side, severity = DEMO_ABNORMALITY
    foot_off = abnormalities.foot_offs(trial.foot_off_pct, len(trial))
    angles = np.stack([abnormalities.apply(np.nan_to_num(a), trial.joint_names, kind, side=side,
                                           severity=severity, stride_side=s,
                                           foot_off_pct=float(f))[0]
                       for a, s, f in zip(trial.x, trial.side, foot_off)])
    np.savez(path, angles=np.where(trial.valid[..., None], angles, np.nan), valid=trial.valid,
             side=trial.side.astype(str), joint_names=np.asarray(trial.joint_names))
    logging.info("demo input: %s (%s), %d strides, %s on side %s at severity %.1f -> %s",
                 trial.subject[0], trial.trial[0], len(trial), kind, side, severity, path)
    return path


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs every step; prints the tables and the detect summary; returns the output paths."""
    configs.validate(cfg)
    wd = Workdir(workdir)
    t0 = time.time()
    _step("preparing the dataset", t0)
    train.prepare_data(cfg)
    _step(f"training the model and its {cfg.calibration.folds} fold models "
          f"({cfg.total_steps} steps each), then the out-of-fold calibration", t0)
    train.train_calibrated(cfg, wd)
    _step("evaluating on the held-out test split with the abnormality simulator", t0)
    ev = evaluation.evaluate(str(wd))
    eval_paths = evaluation.write_outputs(ev, str(wd.file("evaluation")))
    _step("detect on one held-out trial with a simulated abnormality", t0)
    test = data.load_split(cfg.data.name, cfg.data.test_split, cfg.data.data_dir,
                           cfg.data.get("modality", "angles"))
    npz = demo_input(test, str(wd.file("demo_input.npz")))
    result = GenGait.from_workdir(wd).detect(npz)
    det_paths = result.write(str(wd.file("detect")))
    _step("done", t0)
    print(evaluation_report.summary_table(ev))
    print()
    print(result.summary())
    print(f"\nevaluation: {eval_paths['markdown']}\nreport:     {det_paths['html']}")
    return {"evaluation": eval_paths, "detect": det_paths, "flagged": result.flagged}
