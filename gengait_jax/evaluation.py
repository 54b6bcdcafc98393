"""The paper's validation, with clinical baselines side by side, on held-out test strides.

Each clean test stride is perturbed by the abnormality simulator (7 kinds x severities); GenGait
scores every joint (pass 1), flags by the calibrated z-scores and builds the normative twin with
the flagged joints withheld (pass 2). Every number comes with the strides and subjects it rests
on. `compute` is pure (arrays in, nested dict out); `evaluate` wires the trained model to it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from gengait_jax import baselines, metrics

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
    pop = baselines.population_mean_correction(ref, x, rec["flags"], side)
    pop_oracle = baselines.population_mean_correction(ref, x, aff, side)
    out = {
        "truth_j": aff,
        "before": metrics.rms_deviation(x, clean, truth_jc),
        "after": metrics.rms_deviation(twin, clean, truth_jc),
        "pop_after": metrics.rms_deviation(pop, clean, truth_jc),
        "pop_oracle_after": metrics.rms_deviation(pop_oracle, clean, truth_jc),
        "preserve": metrics.rms_deviation(twin, x, ~aff[..., None]),
        "z_base": baselines.zscores(ref, x, side),
        "z_flags": baselines.zscore_flags(ref, x, side),
        "env_frac": baselines.outside_fraction(ref, x, side),
        "env_flags": baselines.envelope_flags(ref, x, side),
    }
    if "twin_oracle" in rec:
        out["oracle_after"] = metrics.rms_deviation(rec["twin_oracle"], clean, truth_jc)
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
    return out


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
    return out


def jsonable(x: Any) -> Any:
    """Nested dict with numpy scalars as Python numbers and NaN/inf as None (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in (x.tolist() if isinstance(x, np.ndarray) else x)]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    return x
