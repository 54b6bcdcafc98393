"""Out-of-fold calibration of a workdir: each fold model scores the subjects it never saw, and
the calibration (`calibration.fit`) is fitted on those residuals and written to the workdir.

  calibrate_workdir("runs/demo")   # after train.train_folds; launch.detect --calibrate
  calibrate_workdir("runs/demo", normals="lab_normals/")  # + a lab's own healthy people

A lab's own healthy people (`normals`: a folder of their trials, one sub-folder per person)
join the calibration scored by the FINAL model, which never trained on them: to it they are
new people, as the fold models' held-out people are to theirs.
"""

from __future__ import annotations

import numpy as np
from absl import logging

from gengait_jax import calibration, data, inputs
from gengait_jax.gengait import GenGait
from gengait_jax.workdir import OOF, Workdir
from tfds_gait.errors import GaitDataError


def normative_strides(workdir: Workdir) -> data.Strides:
    """The strides the workdir's model was trained on (its config's train split)."""
    cfg = workdir.config()
    return data.load_split(cfg.data.name, cfg.data.train_split, cfg.data.data_dir,
                           cfg.data.get("modality", "angles"))


def _random_groups(gg: GenGait, n: int, count: int, seed: int) -> np.ndarray:
    """[n, P, J] every token of `count` occlusion groups drawn at random per stride."""
    g = np.asarray(gg.model.group_j[...])
    groups = np.unique(g)
    rng = np.random.default_rng(seed)
    pick = np.stack([rng.choice(groups, min(count, len(groups)), replace=False)
                     for _ in range(n)])
    joints = (g[None, :, None] == pick[:, None, :]).any(-1)  # [n, J]
    p = int(gg.meta["num_frames"]) // gg.model.patch
    return np.broadcast_to(joints[:, None, :], (n, p, len(g))).copy()


def multi_group_errors(gg: GenGait, strides: data.Strides, groups: int, seed: int
                       ) -> np.ndarray:
    """[N, T, J, C] the reconstruction errors of an uncalibrated model's twin with `groups`
    random occlusion groups withheld at once per stride (NaN where not withheld or invalid)."""
    tw = gg.twin(strides, _random_groups(gg, len(strides), groups, seed), num_samples=0)
    return np.where(tw.replaced_ntj[..., None] & strides.valid[..., None],
                    tw.recon_ntjc - strides.x, np.nan)


def oof_residuals(workdir: Workdir, strides: data.Strides, k: int, multi_groups: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Pass-1 residuals [N, T, J, C] of every stride by the fold model that did not train on
    its subject, the folds [N], and (`multi_groups` > 1) the same model's reconstruction
    errors with that many random occlusion groups withheld at once (NaN elsewhere)."""
    fold = data.folds(strides, k)
    residual = np.full(strides.x.shape, np.nan, np.float32)
    multi = np.full(strides.x.shape, np.nan, np.float32) if multi_groups > 1 else None
    for i in range(k):
        fw = workdir.fold(i)
        if not fw.has_checkpoint():
            raise GaitDataError(fw.path, f"no fold model: train the {k} fold models first "
                                         f"(python -m launch.train, config calibration.folds)")
        held = fold == i
        gg = GenGait.from_workdir(fw, calibrated=False)
        trained_on = set(gg.meta.get("train_subjects", []))
        if trained_on & set(strides.subject[held].tolist()):
            raise GaitDataError(fw.path, "fold model trained on subjects it should score: the "
                                         "folds do not match the workdir's data")
        sub = strides.take(held)
        residual[held] = gg.pass1(sub).residual
        if multi is not None:
            multi[held] = multi_group_errors(gg, sub, multi_groups, i)
        logging.vlog(1, "calibration: fold %d/%d scored %d strides of %d subjects", i + 1, k,
                     int(held.sum()), len(set(strides.subject[held].tolist())))
    return residual, fold, multi


def lab_normals(wd: Workdir, folder: str, groups: int, static: str | None = "auto"
                ) -> tuple[data.Strides, np.ndarray, np.ndarray | None]:
    """A lab's healthy trials (`inputs.load_folder`) with the final model's pass-1 residuals
    and (`groups` > 1) its reconstruction errors with that many groups withheld; a person
    the model trained on is refused (their residuals would look healthier than a new
    person's)."""
    gg = GenGait.from_workdir(wd, calibrated=False)
    strides, notes = inputs.load_folder(folder, gg.meta, static)
    for note in notes:
        logging.info("normals: %s", note)
    seen = sorted(set(strides.subject.tolist()) & set(gg.meta.get("train_subjects", [])))
    if seen:
        raise GaitDataError(folder, f"the model trained on {', '.join(seen)}: only people it "
                                    f"never saw can calibrate it")
    strides = strides.replace(subject=np.char.add("normals/", strides.subject.astype(str)),
                              cohort=np.full(len(strides), "lab normals"))
    multi = multi_group_errors(gg, strides, groups, 0) if groups > 1 else None
    return strides, gg.pass1(strides).residual, multi


def calibrate_workdir(workdir: str | Workdir, *, strides: data.Strides | None = None,
                      alpha: float | None = None, normals: str | None = None,
                      static: str | None = "auto") -> dict:
    """Out-of-fold residuals of the fold models (+ the final model's of a lab's healthy
    people in the folder `normals`) -> calibration.json (and oof.npz, fold -1 for the lab's
    people) of the workdir's model; returns the calibration."""
    wd = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
    wd.require()
    cfg, meta = wd.config(), wd.meta()
    groups = int(cfg.twin.get("band_groups", 0))
    if normals is not None:  # read first: bad input fails before the fold models run
        lab, lab_res, lab_multi = lab_normals(wd, normals, groups, static)
    strides = normative_strides(wd) if strides is None else strides
    k = int(cfg.calibration.folds)
    residual, fold, multi = oof_residuals(wd, strides, k, groups)
    folds = {"k": k, "subjects": {s: int(f) for s, f in zip(strides.subject.tolist(),
                                                             fold.tolist())}}
    if normals is not None:
        residual = np.concatenate([residual, lab_res])
        multi = None if multi is None else np.concatenate([multi, lab_multi])
        fold = np.concatenate([fold, np.full(len(lab), -1)])
        strides = data.concat([strides, lab])
    cal = calibration.fit(
        residual, strides.side, strides.subject, strides.joint_names, cohorts=strides.cohort,
        alpha=float(cfg.calibration.alpha if alpha is None else alpha),
        width=int(cfg.calibration.window), channels=cfg.calibration.get("channels", "reliable"),
        offsets=bool(cfg.calibration.get("offsets", False)),
        asymmetry=bool(cfg.calibration.get("asymmetry", False)),
        joint_alpha=cfg.calibration.get("joint_alpha") or None,
        chain_alpha=cfg.calibration.get("chain_alpha") or None,
        misfit=float(cfg.calibration.get("misfit", 0.0)),
        misfit_quantile=float(cfg.calibration.get("misfit_quantile",
                                                  calibration.MISFIT_QUANTILE)),
        paired_offsets=bool(cfg.calibration.get("paired_offsets", False)),
        model_id=meta.get("model_id"),
        x_ntjc=strides.x, multi_ntjc=multi, multi_groups=groups, folds=folds)
    if normals is not None:
        cal["normals"] = {"folder": str(normals), "n_strides": len(lab),
                          "subjects": sorted(set(lab.subject.tolist())),
                          "trials": sorted(set(lab.trial.tolist()))}
    wd.write_arrays(OOF, residual=residual, fold=fold, x=strides.x, side=strides.side.astype(str),
                    subject=strides.subject.astype(str), cohort=strides.cohort.astype(str))
    wd.write_calibration(cal)
    logging.info("calibration %s: %d out-of-sample strides of %d subjects, stride threshold "
                 "z > %.2f", cal["id"], cal["n_strides"], cal["n_subjects"],
                 calibration.size_entry(cal, 1)["threshold"])
    return cal
