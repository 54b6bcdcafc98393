r"""Design study of pass 1, the calibration and the twin on VALIDATION people only: the K fold
models and the strides each never saw (out of fold), never the test split.

  python -m benchmarks.detection_study --workdir=runs/demo [--window=20 ...]

For every fold k, its held-out strides are perturbed by the simulator (7 kinds x severities,
one affected side per recording, or both with --bilateral) and scored by fold model k; a
calibration is fitted on the clean out-of-fold residuals of the OTHER folds' people (so the
scored people are new to it too) and applied to fold k. Prints one JSON line per setting:
stride- and trial-level localization (top-1, AUROC, flag recall / precision) per severity,
the false-flag rate of clean trials, and (with --twin=joint|phase) the twin's deviation from
the clean stride on the truly affected channels, before / after with the trial's own flags
and with the true joints, against the population mean curve of the other folds' strides.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from gengait_jax import baselines, calibrate, calibration, data, evaluation, metrics
from gengait_jax.gengait import GenGait
from gengait_jax.workdir import Workdir
from tfds_gait import abnormalities

STUDY = "study.npz"
STUDY_BILATERAL = "study_bilateral.npz"
BAND_GROUPS = 3  # as the default config's twin.band_groups


def make_study(wd: Workdir, severities=(0.5, 1.0), seed: int = 0,
               bilateral: bool = False) -> dict:
    """Perturbed out-of-fold strides with their fold model's pass-1 residuals, and the clean
    ones' reconstruction errors with BAND_GROUPS random occlusion groups withheld (cached);
    `bilateral`: every kind on both sides."""
    name = STUDY_BILATERAL if bilateral else STUDY
    if wd.file(name).exists():
        return wd.arrays(name)
    strides = calibrate.normative_strides(wd)
    k = int(wd.config().calibration.folds)
    fold = data.folds(strides, k)
    parts = []
    for i in range(k):
        held = strides.take(fold == i)
        rec_id = np.char.add(np.char.add(held.subject.astype(str), "/"), held.trial.astype(str))
        sim = abnormalities.make_evaluation_set(held.x, held.side, held.joint_names,
                                                severities=severities, seed=seed + i,
                                                foot_off_pct=held.foot_off_pct, groups=rec_id,
                                                bilateral=bilateral)
        idx = np.concatenate([np.arange(len(held)), sim["clean_index"]])
        x = np.concatenate([held.x, np.where(held.valid[sim["clean_index"]][..., None],
                                             sim["angles"], np.nan)])
        st = data.from_arrays(x, held.valid[idx], side=held.side[idx],
                              subject=held.subject[idx], joint_names=held.joint_names)
        gg = GenGait.from_workdir(wd.fold(i), calibrated=False)
        multi = calibrate.multi_group_errors(gg, held, BAND_GROUPS, i)
        parts.append(dict(
            residual=gg.pass1(st).residual, x=x, clean=held.x[idx], fold=np.full(len(idx), i),
            multi=np.concatenate([multi, np.full(sim["angles"].shape, np.nan)]),
            kind=np.concatenate([np.full(len(held), "clean"), sim["kind"].astype(str)]),
            severity=np.concatenate([np.zeros(len(held)), sim["severity"]]),
            truth=np.concatenate([np.zeros((len(held),) + held.x.shape[2:], bool),
                                  sim["truth"]]),
            subject=held.subject[idx].astype(str), side=held.side[idx].astype(str),
            trial=rec_id[idx]))
    out = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    out["joint_names"] = np.array(strides.joint_names)
    wd.write_arrays(name, **out)
    return out


def calibrations(st: dict, **kw) -> dict[int, dict]:
    """Per fold: a calibration on the clean residuals of the other folds' people."""
    names = [str(n) for n in st["joint_names"]]
    clean = st["kind"] == "clean"
    out = {}
    for k in np.unique(st["fold"]):
        sel = clean & (st["fold"] != k)
        out[int(k)] = calibration.fit(st["residual"][sel], st["side"][sel], st["subject"][sel],
                                      names, x_ntjc=st["x"][sel], multi_ntjc=st["multi"][sel],
                                      multi_groups=BAND_GROUPS, **kw)
    return out


def fold_models(wd: Workdir, cals: dict, confirm: bool = True) -> dict[int, GenGait]:
    """Per fold: its model with the study's calibration of that fold."""
    out = {}
    for k, cal in cals.items():
        gg = GenGait.from_workdir(wd.fold(k), calibrated=False)
        gg.calibration = cal
        gg.cfg.calibration.confirm = confirm
        out[k] = gg
    return out


def _strides(st: dict, sel: np.ndarray, joint_names) -> data.Strides:
    """The study's strides `sel` as Strides (valid = finite)."""
    return data.from_arrays(st["x"][sel], np.isfinite(st["x"][sel]).all(-1),
                            side=st["side"][sel], joint_names=joint_names)


def localize(st: dict, cals: dict, models: dict[int, GenGait]) -> dict:
    """Stride- and trial-level localization and false flags with fold-held-out calibrations
    (trial decisions as detect makes them: `GenGait.decide_residual`)."""
    n = len(st["kind"])
    z = np.full((n, len(st["joint_names"])), np.nan)
    flags = np.zeros_like(z, bool)
    trial = _trial_ids(st)
    rows = []
    for k, cal in cals.items():
        sel = st["fold"] == k
        sc = calibration.score(st["residual"][sel], st["side"][sel], cal, st["x"][sel])
        z[sel], flags[sel] = sc["joint"], sc["flags"]
        for t in np.unique(trial[sel]):
            m = sel & (trial == t)
            d = models[k].decide_residual(_strides(st, m, models[k].joint_names),
                                          st["residual"][m])
            first = np.flatnonzero(m)[0]
            rows.append(dict(z=d.z, flags=d.flagged, truth=st["truth"][m].any((0, 2)),
                             kind=st["kind"][first], severity=st["severity"][first],
                             subject=st["subject"][first]))
    truth = st["truth"].any(-1)
    out = {}
    for sev in sorted(set(st["severity"][st["kind"] != "clean"].tolist())):
        s = (st["kind"] != "clean") & (st["severity"] == sev)
        tr = [r for r in rows if r["kind"] != "clean" and r["severity"] == sev]
        tz, tf, tt = (np.stack([r[key] for r in tr]) for key in ("z", "flags", "truth"))
        out[f"{sev:g}"] = {
            "stride_top1": metrics.topk_accuracy(z[s], truth[s], 1)["value"],
            "stride_auroc": metrics.joint_auroc(z[s], truth[s])["value"],
            "stride_recall": metrics.flag_prf(flags[s], truth[s])["recall"],
            "trial_top1": metrics.topk_accuracy(tz, tt, 1)["value"],
            "trial_auroc": metrics.joint_auroc(tz, tt)["value"],
            "trial_recall": metrics.flag_prf(tf, tt)["recall"],
            "trial_precision": metrics.flag_prf(tf, tt)["precision"],
            "per_kind_trial_top1": {kind: metrics.topk_accuracy(
                np.stack([r["z"] for r in tr if r["kind"] == kind]),
                np.stack([r["truth"] for r in tr if r["kind"] == kind]), 1)["value"]
                for kind in sorted({r["kind"] for r in tr})},
            "per_kind_joint_trial_recall": _joint_recall(tr, st["joint_names"]),
            "per_kind_trials_flagged": {kind: float(np.mean([r["flags"].any() for r in tr
                                                             if r["kind"] == kind]))
                                        for kind in sorted({r["kind"] for r in tr})}}
    clean_rows = [r for r in rows if r["kind"] == "clean"]
    out["clean"] = {"stride_ffr": float(flags[st["kind"] == "clean"].any(-1).mean()),
                    "trial_ffr": float(np.mean([r["flags"].any() for r in clean_rows])),
                    "n_trials": len(clean_rows)}
    return out


def _joint_recall(rows: list[dict], joint_names) -> dict[str, float]:
    """Trial-level recall per abnormality and perturbed joint ("kind/joint")."""
    out = {}
    for kind in sorted({r["kind"] for r in rows}):
        tr = [r for r in rows if r["kind"] == kind]
        flags, truth = (np.stack([r[key] for r in tr]) for key in ("flags", "truth"))
        for j in np.flatnonzero(truth.any(0)):
            out[f"{kind}/{joint_names[j]}"] = float(flags[truth[:, j], j].mean())
    return out


def _trial_ids(st: dict) -> np.ndarray:
    """A trial = one recording with one abnormality at one severity."""
    return np.char.add(np.char.add(st["trial"], "|"), np.char.add(
        st["kind"], np.char.mod("%g", st["severity"])))


def twin_study(st: dict, models: dict[int, GenGait], withhold: str, margin: float,
               dilate: int, contralateral: bool = True) -> dict:
    """Per severity: the twin's RMS deviation (deg) from the clean stride on the affected
    channels, before / own flags / true joints, the population mean on the same joints, and
    the RMS change of the joints the trial did not flag; the band's (+/- 2 SD) coverage of the
    clean stride where the true joints are withheld."""
    trial = _trial_ids(st)
    rows = {key: [] for key in ("before", "after", "oracle", "pop", "pop_oracle", "unflagged",
                                "coverage", "severity")}
    for k, gg in models.items():
        gg.cfg.twin.update(withhold=withhold, phase_margin=margin, dilate=dilate,
                           contralateral=contralateral)
        other = (st["fold"] != k) & (st["kind"] == "clean")
        ref = baselines.fit_reference(st["clean"][other], sides=st["side"][other])
        sel = np.flatnonzero((st["fold"] == k) & (st["kind"] != "clean"))
        strides = _strides(st, sel, gg.joint_names)
        own, orc = [], []
        for t in np.unique(trial[sel]):
            m = trial[sel] == t
            sub = strides.take(m)
            d = gg.decide_residual(sub, st["residual"][sel][m])
            own.append((m, d.flagged, gg.withheld(sub, d.flagged, d.map, d.threshold)))
            truth = st["truth"][sel][m].any((0, 2))
            orc.append((m, truth, gg.withheld(sub, truth, d.map, d.threshold)))
        for name, parts in (("after", own), ("oracle", orc)):
            w = np.zeros((len(sel),) + parts[0][2].shape[1:], bool)
            f = np.zeros((len(sel), len(gg.joint_names)), bool)
            for m, flags, wm in parts:
                w[m], f[m] = wm, flags
            full = gg.twin(strides, w, num_samples=None if name == "oracle" else 0)
            tw, truth = full.twin_ntjc, st["truth"][sel]
            if name == "oracle":
                rows["coverage"].append(evaluation.band_coverage(
                    st["clean"][sel], tw, full.sd_ntjc, full.replaced_ntj, truth))
            rows[name].append(metrics.rms_deviation(tw, st["clean"][sel], truth))
            pop = baselines.population_mean_correction(ref, st["x"][sel], f, st["side"][sel])
            rows["pop" if name == "after" else "pop_oracle"].append(
                metrics.rms_deviation(pop, st["clean"][sel], truth))
            if name == "after":
                rows["unflagged"].append(metrics.rms_deviation(tw, st["x"][sel],
                                                               ~f[..., None]))
        rows["before"].append(metrics.rms_deviation(st["x"][sel], st["clean"][sel],
                                                    st["truth"][sel]))
        rows["severity"].append(st["severity"][sel])
    r = {key: np.concatenate(v) for key, v in rows.items()}
    return {f"{sev:g}": {key: float(np.nanmean(r[key][r["severity"] == sev]))
                         for key in r if key != "severity"}
            for sev in np.unique(r["severity"])}


def reference_spread(st: dict) -> dict:
    """Per paired joint and channel, on the clean strides: the per-phase SD (median over the
    cycle, after the population mean and each stride's median offset are removed) of the pass-1
    residual, of the observed curve, and of the own-phase left - right difference."""
    names = [str(n) for n in st["joint_names"]]
    clean = st["kind"] == "clean"
    own = {k: data.to_own_phase(st[k][clean], st["side"][clean], names) for k in ("residual",
                                                                                 "x")}

    def spread(a):
        a = a - np.nanmean(a, 0)
        a = a - np.nanmedian(a, 1, keepdims=True)
        return round(float(np.nanmedian(np.sqrt(np.nanmean(a ** 2, 0)))), 2)

    out = {}
    for base in sorted({n[1:] for n in names if n[:1] == "L" and "R" + n[1:] in names}):
        lr = [names.index("L" + base), names.index("R" + base)]
        for c in range(st["x"].shape[-1]):
            e, x = own["residual"][:, :, lr, c], own["x"][:, :, lr, c]
            out[f"{base}/{c}"] = {"residual": spread(e), "observed": spread(x),
                                  "left_minus_right": spread(x[..., 0] - x[..., 1])}
    return out


def main(argv: list[str]) -> None:
    """--workdir=DIR [--window=W] [--alpha=A]: one JSON line."""
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--window", type=int, default=calibration.WINDOW)
    p.add_argument("--alpha", type=float, default=calibration.ALPHA)
    p.add_argument("--channels", choices=("reliable", "all"), default="reliable")
    p.add_argument("--offsets", action="store_true", help="offsets flag too")
    p.add_argument("--asymmetry", action=argparse.BooleanOptionalAction, default=True,
                   help="the left - right statistic too")
    p.add_argument("--joint_alpha", type=float, default=calibration.JOINT_ALPHA,
                   help="two-stage flags: per-joint thresholds at this level behind the "
                        "family-wise gate (0: off)")
    p.add_argument("--chain_alpha", type=float, default=calibration.CHAIN_ALPHA,
                   help="two-stage flags of a family-wise flagged joint's kinematic-chain "
                        "neighbours at this level (0: off)")
    p.add_argument("--misfit", type=float, default=calibration.MISFIT,
                   help="weight of the trial's misfit removed from its joint z (0: off)")
    p.add_argument("--misfit_quantile", type=float, default=calibration.MISFIT_QUANTILE)
    p.add_argument("--paired_offsets", action=argparse.BooleanOptionalAction, default=True,
                   help="a paired joint's offset flags where the left - right offset agrees")
    p.add_argument("--twin", choices=("", "joint", "phase"), default="")
    p.add_argument("--contralateral", action=argparse.BooleanOptionalAction, default=True,
                   help="the twin blends the other side's curve where it is observed")
    p.add_argument("--confirm", action=argparse.BooleanOptionalAction, default=True,
                   help="two-stage flags confirmed with the primary joints withheld")
    p.add_argument("--spread", action="store_true",
                   help="the per-phase spread of the references instead (deg)")
    p.add_argument("--bilateral", action="store_true",
                   help="every abnormality on both sides (a bilateral patient)")
    p.add_argument("--margin", type=float, default=1.0)
    p.add_argument("--dilate", type=int, default=1)
    a = p.parse_args(argv)
    wd = Workdir(a.workdir)
    st = make_study(wd, bilateral=a.bilateral)
    cals = calibrations(st, width=a.window, alpha=a.alpha, channels=a.channels,
                        offsets=a.offsets, asymmetry=a.asymmetry,
                        joint_alpha=a.joint_alpha or None, chain_alpha=a.chain_alpha or None,
                        misfit=a.misfit, misfit_quantile=a.misfit_quantile,
                        paired_offsets=a.paired_offsets)
    models = fold_models(wd, cals, a.confirm)
    if a.spread:
        res = {"spread": reference_spread(st)}
    elif a.twin:
        res = {"twin": twin_study(st, models, a.twin, a.margin, a.dilate, a.contralateral),
               "withhold": a.twin, "margin": a.margin, "dilate": a.dilate,
               "contralateral": a.contralateral}
    else:
        res = localize(st, cals, models)
    print(json.dumps({"bilateral": a.bilateral, "window": a.window, "alpha": a.alpha,
                      "channels": a.channels, "offsets": a.offsets, "asymmetry": a.asymmetry,
                      "confirm": a.confirm, "joint_alpha": a.joint_alpha,
                      "chain_alpha": a.chain_alpha, "misfit": a.misfit,
                      "misfit_quantile": a.misfit_quantile,
                      "paired_offsets": a.paired_offsets, **res}))


if __name__ == "__main__":
    main(sys.argv[1:])
