"""The paper's validation, with clinical baselines side by side, on held-out test strides.

Each clean test stride is perturbed by the abnormality simulator (7 kinds x severities, the
affected side drawn per recording and kind, so a trial's strides share it); GenGait scores
every joint (pass 1), flags by the calibrated z (per stride: the one-stride calibration; per
trial: all strides of one recording with one abnormality), and builds the normative twin from
the trial decision (pass 2, what `launch.detect` does). Every number comes with the strides and
subjects it rests on. `compute` is pure (arrays in, nested dict out); `evaluate` wires the
trained model (`GenGait`) to it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from absl import logging
from etils import epath

from gengait_jax import baselines, data, evaluation_report, metrics
from gengait_jax.gengait import GenGait
from gengait_jax.workdir import jsonable, write_json
from tfds_gait import abnormalities, skeleton

CLEAN = "clean"
TOPK = 3


def _sub(rec: dict, keep: np.ndarray) -> dict:
    """The records of the strides where `keep` is True."""
    n = len(keep)
    return {k: (v[keep] if isinstance(v, np.ndarray) and v.shape[:1] == (n,) else v)
            for k, v in rec.items()}


def _counts(rec: dict) -> dict:
    """n_strides / n_subjects of a record set."""
    return {"n_strides": int(len(rec["kind"])), "n_subjects": metrics.n_subjects(rec["subject"])}


def localization(scores_nj, flags_nj, truth_nj, subjects) -> dict:
    """Top-1/top-k accuracy, AUROC of scores; precision/recall/F1 of flags (affected strides)."""
    t = np.asarray(truth_nj, bool)
    unaffected = ~t
    f = np.asarray(flags_nj, bool)
    prf = metrics.flag_prf(f, t, subjects)
    return {
        "top1_accuracy": metrics.topk_accuracy(scores_nj, t, 1)["value"],
        f"top{TOPK}_accuracy": metrics.topk_accuracy(scores_nj, t, TOPK)["value"],
        "auroc": metrics.joint_auroc(scores_nj, t)["value"],
        "precision": prf["precision"], "recall": prf["recall"], "f1": prf["f1"],
        "unaffected_joint_flag_rate": float(f[unaffected].mean()) if unaffected.any() else None,
        "mean_flags_per_stride": float(f.sum(-1).mean()) if len(f) else None,
        "n_strides": int(len(t)), "n_subjects": metrics.n_subjects(subjects)}


def correction(before_n, after_n, subjects) -> dict:
    """Deviation from the subject's own clean stride before vs after, with the paired test."""
    s = metrics.paired_test(before_n, after_n, subjects)
    b, a = metrics.summary(before_n), metrics.summary(after_n)
    return {
        "deviation_before_deg": s["before_mean"], "deviation_after_deg": s["after_mean"],
        "deviation_before_median_deg": s["before_median"],
        "deviation_after_median_deg": s["after_median"],
        "deviation_before_iqr_deg": [b["q25"], b["q75"]],
        "deviation_after_iqr_deg": [a["q25"], a["q75"]],
        "reduction_pct": 100.0 * (1 - s["after_mean"] / s["before_mean"])
        if s["before_mean"] else None,
        "p_value": s["p_value"], "effect_size": s["effect_size"], "cohens_dz": s["cohens_dz"],
        "subject_p_value": s.get("subject_p_value"),
        "subject_effect_size": s.get("subject_effect_size"),
        "n_strides": s["n"], "n_subjects": s["n_subjects"]}


def _per_stride(rec: dict, ref: baselines.Reference) -> dict:
    """Per-stride quantities shared by all tables: deviations, baseline scores and flags."""
    truth_jc = np.asarray(rec["truth"], bool)
    aff = truth_jc.any(-1)  # [N, J]
    x, clean, twin, side = rec["perturbed"], rec["clean"], rec["twin"], rec["side"]
    twin_flags = rec.get("trial_flags", rec["flags"])  # the flags the twin was built from
    pop = baselines.population_mean_correction(ref, x, twin_flags, side)
    pop_oracle = baselines.population_mean_correction(ref, x, aff, side)
    out = {
        "truth_j": aff,
        "before": metrics.rms_deviation(x, clean, truth_jc),
        "after": metrics.rms_deviation(twin, clean, truth_jc),
        "pop_after": metrics.rms_deviation(pop, clean, truth_jc),
        "pop_oracle_after": metrics.rms_deviation(pop_oracle, clean, truth_jc),
        "preserve": metrics.rms_deviation(twin, x, ~aff[..., None]),
        "unflagged_change": metrics.rms_deviation(twin, x, ~np.asarray(twin_flags)[..., None]),
        "z_base": baselines.zscores(ref, x, side),
        "z_flags": baselines.zscore_flags(ref, x, side),
        "env_frac": baselines.outside_fraction(ref, x, side),
        "env_flags": baselines.envelope_flags(ref, x, side),
    }
    if "twin_oracle" in rec:
        out["oracle_after"] = metrics.rms_deviation(rec["twin_oracle"], clean, truth_jc)
    if "twin_oracle_sd" in rec:
        out["coverage"] = band_coverage(clean, rec["twin_oracle"], rec["twin_oracle_sd"],
                                        rec["twin_oracle_replaced"], truth_jc)
    return out


def _detector(scores, flags, clean_flags, truth, subjects, clean_subjects) -> dict:
    """Localization of a baseline detector plus its false-flag rate on clean strides."""
    loc = localization(scores, flags, truth, subjects)
    ffr = metrics.false_flag_rate(clean_flags, clean_subjects)
    return dict(loc, false_flag_rate=ffr["value"], n_clean_strides=ffr["n"])


def _table(rec: dict, ps: dict, clean: dict, cps: dict, seed: int) -> dict:
    """All statistics of one group of perturbed strides (one abnormality, or all of them)."""
    subj, truth = rec["subject"], ps["truth_j"]
    ffr = metrics.false_flag_rate(clean["flags"], clean["subject"])
    loc = localization(rec["z"], rec["flags"], truth, subj)
    loc.update(false_flag_rate=ffr["value"], false_flag_joint_rate=ffr["joint_rate"],
               n_clean_strides=ffr["n"], n_clean_subjects=ffr["n_subjects"])
    raw = {"top1_accuracy": metrics.topk_accuracy(rec["scores"], truth, 1)["value"],
           "auroc": metrics.joint_auroc(rec["scores"], truth)["value"]}
    pres = metrics.summary(ps["preserve"], subj)
    chance = baselines.chance(truth, 1, seed=seed, subjects=subj)
    pop_vs_twin = metrics.paired_test(ps["pop_after"], ps["after"], subj)
    out = {
        **_counts(rec),
        "localization": loc, "localization_raw_deg": raw,
        "correction": correction(ps["before"], ps["after"], subj),
        "preservation": {"rms_change_deg": pres["mean"], "rms_change_median_deg": pres["median"],
                         "unflagged_rms_change_deg": metrics.summary(
                             ps["unflagged_change"])["mean"],
                         "n_strides": pres["n"], "n_subjects": pres["n_subjects"]},
        "baselines": {
            "zscore": _detector(ps["z_base"], ps["z_flags"], cps["z_flags"], truth, subj,
                                clean["subject"]),
            "envelope": _detector(ps["env_frac"], ps["env_flags"], cps["env_flags"], truth,
                                  subj, clean["subject"]),
            "population_mean": {
                "deviation_after_deg": metrics.summary(ps["pop_after"])["mean"],
                "oracle_deviation_after_deg": metrics.summary(ps["pop_oracle_after"])["mean"],
                "twin_better_p_value": pop_vs_twin["p_value"],
                "twin_better_effect_size": pop_vs_twin["effect_size"],
                "n_strides": pop_vs_twin["n"], "n_subjects": pop_vs_twin["n_subjects"]},
            "chance": {"top1_accuracy": chance["value"], "top1_simulated": chance["simulated"],
                       f"top{TOPK}_accuracy": baselines.chance(truth, TOPK, seed=seed)["value"],
                       "n_strides": chance["n"]}},
    }
    if "oracle_after" in ps:
        out["correction_oracle_flags"] = correction(ps["before"], ps["oracle_after"], subj)
    if "coverage" in ps:
        cov = metrics.summary(ps["coverage"], subj)
        out["twin_band"] = {"coverage_2sd": cov["mean"], "nominal": 0.954,
                            "n_strides": cov["n"], "n_subjects": cov["n_subjects"]}
    return out


def trial_rows(rec: dict) -> dict:
    """One row per trial (recording x abnormality x severity): its decision and truth."""
    ids = np.asarray(rec["trial"])
    first = np.array([np.flatnonzero(ids == g)[0] for g in np.unique(ids)])
    truth = np.stack([np.asarray(rec["truth"], bool)[ids == g].any((0, 2))
                      for g in np.unique(ids)])
    return {"z": rec["trial_z"][first], "flags": rec["trial_flags"][first], "truth": truth,
            "kind": rec["kind"][first], "severity": rec["severity"][first],
            "subject": rec["subject"][first],
            "n_strides": np.array([(ids == g).sum() for g in np.unique(ids)])}


def trial_table(rows: dict) -> dict:
    """Trial-level localization of the abnormal trials and false flags of the clean ones."""
    clean = rows["kind"] == CLEAN
    abn = ~clean
    loc = localization(rows["z"][abn], rows["flags"][abn], rows["truth"][abn],
                       rows["subject"][abn])
    ffr = metrics.false_flag_rate(rows["flags"][clean], rows["subject"][clean])
    return dict(loc, false_flag_rate=ffr["value"], n_clean_trials=ffr["n"],
                n_trials=int(abn.sum()),
                strides_per_trial=float(np.mean(rows["n_strides"])) if len(rows["n_strides"])
                else None)


def compute(rec: dict, ref: baselines.Reference, *, seed: int = 0) -> dict:
    """Overall and per-abnormality tables from per-stride records (see module docstring).

    `rec` holds numpy arrays over N strides: perturbed, clean [N,T,J,C]; truth [N,J,C] bool;
    kind [N] (CLEAN for unperturbed strides), severity, subject, side [N]; scores, z [N,J];
    flags [N,J] bool; twin [N,T,J,C]; optionally twin_oracle (twin with the true joints hidden).
    """
    rec = {k: np.asarray(v) for k, v in rec.items()}
    is_clean = rec["kind"] == CLEAN
    clean, abn = _sub(rec, is_clean), _sub(rec, ~is_clean)
    cps, ps = _per_stride(clean, ref), _per_stride(abn, ref)
    out = _table(abn, ps, clean, cps, seed)
    out["clean"] = {**_counts(clean), "false_flag_rate": out["localization"]["false_flag_rate"],
                    "rms_change_deg": metrics.summary(
                        metrics.rms_deviation(clean["twin"], clean["perturbed"]))["mean"]}
    out["per_abnormality"], out["per_abnormality_severity"] = {}, {}
    for kind in sorted(set(abn["kind"].tolist())):
        keep = abn["kind"] == kind
        out["per_abnormality"][kind] = _table(_sub(abn, keep), _sub(ps, keep), clean, cps, seed)
        for sev in sorted(set(abn["severity"][keep].tolist())):
            ks = keep & (abn["severity"] == sev)
            t = _table(_sub(abn, ks), _sub(ps, ks), clean, cps, seed)
            out["per_abnormality_severity"][f"{kind}@{sev:g}"] = {
                k: t[k] for k in ("n_strides", "n_subjects", "localization", "correction")}
    out["per_severity"] = {}
    for sev in sorted(set(abn["severity"].tolist())):
        keep = abn["severity"] == sev
        out["per_severity"][f"{sev:g}"] = _table(_sub(abn, keep), _sub(ps, keep), clean, cps,
                                                 seed)
    if "trial_z" in rec:
        rows = trial_rows(rec)
        out["trials"] = trial_table(rows)
        out["trials_per_severity"] = {
            f"{sev:g}": trial_table({k: v[(rows["severity"] == sev) | (rows["kind"] == CLEAN)]
                                     for k, v in rows.items()})
            for sev in sorted(set(rows["severity"][rows["kind"] != CLEAN].tolist()))}
    return out


def build_records(test: data.Strides, sim: dict) -> dict:
    """Clean test strides (kind CLEAN) followed by the simulator's perturbed copies."""
    idx = np.asarray(sim["clean_index"])
    n, (j, c) = len(test), test.x.shape[2:]
    both = lambda a: np.concatenate([a, a[idx]])
    return {
        "perturbed": np.concatenate([test.x, sim["angles"]]).astype(np.float32),
        "clean": both(test.x).astype(np.float32), "valid": both(test.valid),
        "truth": np.concatenate([np.zeros((n, j, c), bool), np.asarray(sim["truth"], bool)]),
        "kind": np.concatenate([np.full(n, CLEAN), np.asarray(sim["kind"]).astype(str)]),
        "severity": np.concatenate([np.zeros(n), np.asarray(sim["severity"], float)]),
        "subject": both(test.subject.astype(str)), "side": both(test.side.astype(str)),
        "trial": both(np.char.add(np.char.add(test.subject.astype(str), "/"),
                                  test.trial.astype(str)))}


def trial_groups(rec: dict) -> np.ndarray:
    """[N] trial id: one recording with one abnormality at one severity (or clean)."""
    keys = [f"{t}|{k}|{s:g}" for t, k, s in zip(rec["trial"], rec["kind"], rec["severity"])]
    _, ids = np.unique(keys, return_inverse=True)
    return ids


def run_gengait(gg: GenGait, rec: dict) -> dict:
    """Adds to `rec`: raw RMS scores, per-stride z / flags (one-stride calibration), the
    trial decisions, and the twins from the trial decision and from the true joints."""
    rec = dict(rec)
    strides = data.from_arrays(rec["perturbed"], rec["valid"], side=rec["side"],
                               subject=rec["subject"], joint_names=gg.joint_names)
    p1 = gg.pass1(strides)
    rec.update(scores=p1.rms, z=p1.z, flags=np.asarray(p1.flags, bool))
    groups = trial_groups(rec)
    n, j = p1.z.shape
    t = strides.x.shape[1]
    trial_flags, trial_map = np.zeros((n, j), bool), np.zeros((n, t, j))
    trial_z, thresholds = np.zeros((n, j)), np.zeros(n)
    for g in np.unique(groups):
        sel = groups == g
        d = gg.decide_residual(strides.take(sel), p1.residual[sel])
        trial_flags[sel], trial_map[sel], trial_z[sel] = d.flagged, d.map, d.z
        thresholds[sel] = d.threshold
    rec.update(trial=groups, trial_z=trial_z, trial_flags=trial_flags)
    twin = lambda flags: gg.twin(strides, np.concatenate([
        gg.withheld(strides.take([i]), flags[i], trial_map[i], thresholds[i])
        for i in range(n)]))
    rec["twin"] = twin(trial_flags).twin_ntjc
    oracle = twin(rec["truth"].any(-1))
    rec.update(twin_oracle=oracle.twin_ntjc, twin_oracle_sd=oracle.sd_ntjc,
               twin_oracle_replaced=oracle.replaced_ntj)
    return rec


def band_coverage(clean, twin, sd, replaced_ntj, truth_njc, k: float = 2.0) -> np.ndarray:
    """[N] share of the clean stride's samples within twin +/- k SD, over the replaced samples
    of the truly affected channels (NaN: none)."""
    sel = np.asarray(replaced_ntj, bool)[..., None] & np.asarray(truth_njc, bool)[:, None]
    sel &= np.isfinite(clean) & np.isfinite(twin) & np.isfinite(sd)
    with np.errstate(invalid="ignore"):
        inside = np.abs(np.nan_to_num(clean) - np.nan_to_num(twin)) <= k * np.nan_to_num(sd)
        return np.where(sel.any((1, 2, 3)), (inside & sel).sum((1, 2, 3))
                        / np.maximum(sel.sum((1, 2, 3)), 1), np.nan)


def evaluate_strides(gg: GenGait, test: data.Strides, train: data.Strides, *,
                     severities=(0.5, 1.0), seed: int = 0, bilateral: bool = False) -> dict:
    """The whole evaluation of held-out strides (baselines fitted on `train`); `bilateral`:
    every abnormality on both sides of each recording instead of one."""
    ref = baselines.fit_reference(train.x, train.valid, train.side, train.subject)
    sim = abnormalities.make_evaluation_set(
        test.x, test.side, gg.joint_names, severities=tuple(severities), seed=seed,
        foot_off_pct=test.foot_off_pct,
        groups=np.char.add(np.char.add(test.subject.astype(str), "/"), test.trial.astype(str)),
        positions=gg.meta.get("modality", "angles") == "positions", bilateral=bilateral)
    rec = build_records(test, sim)
    logging.info("evaluation set: %d clean + %d perturbed strides of %d subjects",
                 int((rec["kind"] == CLEAN).sum()), int((rec["kind"] != CLEAN).sum()),
                 metrics.n_subjects(rec["subject"]))
    t0 = time.time()
    rec = run_gengait(gg, rec)
    logging.info("pass 1, trial decisions and pass 2 (twin and oracle twin): %.1f s",
                 time.time() - t0)
    out = compute(rec, ref, seed=seed)
    out["reference"] = {"n_strides": ref.n_strides, "n_subjects": ref.n_subjects,
                        "sides": sorted(ref.mean_tjc)}
    return out


def evaluate(workdir: str, *, data_name: str | None = None, data_dir: str | None = None,
             split: str = "test", severities=(0.5, 1.0), seed: int = 0,
             bilateral: bool = False) -> dict:
    """Restores model + calibration of `workdir` and evaluates on `split` of its dataset
    (abnormalities on one side of each recording, or on both with `bilateral`)."""
    gg = GenGait.from_workdir(workdir)
    cfg = gg.cfg
    name, ddir = data_name or cfg.data.name, data_dir or cfg.data.data_dir
    modality = cfg.data.get("modality", "angles")
    test = data.load_split(name, split, ddir, modality)
    train = data.load_split(name, cfg.data.train_split, ddir, modality)
    out = evaluate_strides(gg, test, train, severities=severities, seed=seed,
                           bilateral=bilateral)
    out["setting"] = {"data_name": name, "data_dir": str(ddir), "split": split,
                      "workdir": str(workdir), "model_id": gg.meta.get("model_id"),
                      "step": gg.meta.get("step"), "calibration_id": gg.calibration.get("id"),
                      "severities": list(severities), "seed": seed,
                      "perturbed_sides": "both" if bilateral else "one",
                      "n_test_strides": len(test),
                      "n_test_subjects": metrics.n_subjects(test.subject),
                      "test_cohorts": sorted(set(test.cohort.tolist())),
                      "reference": f"{cfg.data.train_split} split",
                      "envelope_rule": f"> {baselines.ENVELOPE_MAX_OUTSIDE:.0%} of the cycle "
                                       f"outside mean +/- {baselines.ENVELOPE_K_SD:g} SD",
                      "zscore_rule": "GVS z > 2",
                      "modality": modality,
                      "units": "deg" if modality == "angles" else skeleton.UNITS}
    return out


def write_outputs(ev: dict, out_dir: str) -> dict[str, Any]:
    """Writes evaluation.json (strict JSON), evaluation.md and the PNG plots into `out_dir`
    (local or gs://)."""
    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = jsonable(ev)
    paths = {"json": str(write_json(out / "evaluation.json", clean)),
             "markdown": str(out / "evaluation.md")}
    (out / "evaluation.md").write_text(evaluation_report.markdown(clean))
    paths["plots"] = evaluation_report.plots(clean, out)
    return paths
