"""The paper's validation, with clinical baselines side by side, on held-out test strides.

Each clean test stride is perturbed by the abnormality simulator (7 kinds x severities); GenGait
scores every joint (pass 1), flags by the calibrated z-scores and builds the normative twin with
the flagged joints withheld (pass 2). Every number comes with the strides and subjects it rests
on. `compute` is pure (arrays in, nested dict out); `evaluate` wires the trained model to it.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
from absl import logging

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


Detector = Callable[[np.ndarray, np.ndarray], dict]
Twin = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def batched(fn: Callable[..., Any], arrays: Sequence[np.ndarray], batch: int) -> Any:
    """Calls `fn` on fixed-size row batches (last one padded, so one compile) and concatenates."""
    n = len(arrays[0])
    outs = []
    for i in range(0, n, batch):
        part = [a[i:i + batch] for a in arrays]
        m = len(part[0])
        pad = [np.concatenate([p, np.repeat(p[-1:], batch - m, 0)]) if m < batch else p
               for p in part]
        res = fn(*pad)
        outs.append(_map_out(lambda r: np.asarray(r)[:m], res))
    if isinstance(outs[0], dict):
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    return np.concatenate(outs)


def _map_out(f: Callable, x: Any) -> Any:
    """Maps `f` over a dict's values, or applies it to an array."""
    return {k: f(v) for k, v in x.items()} if isinstance(x, dict) else f(x)


def build_records(test: dict, sim: dict) -> dict:
    """Clean test strides (kind CLEAN) followed by the simulator's perturbed copies."""
    idx = np.asarray(sim["clean_index"])
    n, (j, c) = len(test["angles"]), np.shape(test["angles"])[2:]
    return {
        "perturbed": np.concatenate([test["angles"], sim["angles"]]).astype(np.float32),
        "clean": np.concatenate([test["angles"], test["angles"][idx]]).astype(np.float32),
        "valid": np.concatenate([test["valid"], test["valid"][idx]]),
        "truth": np.concatenate([np.zeros((n, j, c), bool), np.asarray(sim["truth"], bool)]),
        "kind": np.concatenate([np.full(n, CLEAN), np.asarray(sim["kind"]).astype(str)]),
        "severity": np.concatenate([np.zeros(n), np.asarray(sim["severity"], float)]),
        "subject": np.concatenate([test["subject"], test["subject"][idx]]),
        "side": np.concatenate([test["side"], test["side"][idx]])}


def run_gengait(rec: dict, detect: Detector, twin: Twin, *, batch: int = 128,
                oracle: bool = True) -> dict:
    """Adds pass-1 scores/z/flags and the pass-2 twin (and the oracle-flag twin) to `rec`."""
    rec = dict(rec)
    rec.update(batched(detect, [rec["perturbed"], rec["valid"]], batch))
    rec["flags"] = np.asarray(rec["flags"], bool)
    rec["twin"] = batched(twin, [rec["perturbed"], rec["valid"], rec["flags"]], batch)
    if oracle:
        rec["twin_oracle"] = batched(twin, [rec["perturbed"], rec["valid"],
                                            rec["truth"].any(-1)], batch)
    return rec


def model_fns(model, cal: dict, *, twin_samples: int = 0) -> tuple[Detector, Twin]:
    """Pass 1 + calibrated z/flags, and pass 2 (twin, observed unflagged joints kept)."""
    from gengait_jax import calibration, scoring, twin as twin_lib

    def detect(x, valid):
        p1 = scoring.score_strides(model, x, valid, num_context=int(cal.get("num_context", 0)))
        z = calibration.zscores(p1.score_nj, cal)
        return {"scores": p1.score_nj, "z": z, "flags": calibration.stride_flags(z, cal)}

    def twin(x, valid, flags):
        return twin_lib.normative_twin(model, x, valid, flags, num_samples=twin_samples).twin_ntjc

    return detect, twin


def simulate(test: dict, joint_names: Sequence[str], severities, seed: int) -> dict:
    """The simulator's perturbed copies of the test strides (7 kinds x severities)."""
    from tfds_gait import abnormalities
    return abnormalities.make_evaluation_set(test["angles"], test["side"], joint_names,
                                             severities=tuple(severities), seed=seed,
                                             foot_off_pct=test.get("foot_off_pct"))


def evaluate_arrays(detect: Detector, twin: Twin, test: dict, train: dict,
                    joint_names: Sequence[str], *, severities=(0.5, 1.0), seed: int = 0,
                    batch: int = 64) -> dict:
    """The whole evaluation from split arrays (angles, valid, subject, side) and the passes."""
    ref = baselines.fit_reference(train["angles"], train["valid"], train.get("side"),
                                  train.get("subject"))
    rec = build_records(test, simulate(test, joint_names, severities, seed))
    logging.info("evaluation set: %d clean + %d perturbed strides of %d subjects",
                 int((rec["kind"] == CLEAN).sum()), int((rec["kind"] != CLEAN).sum()),
                 metrics.n_subjects(rec["subject"]))
    t0 = time.time()
    rec = run_gengait(rec, detect, twin, batch=batch)
    logging.info("pass 1 + flags + pass 2 (twin and oracle twin): %.1f s", time.time() - t0)
    out = compute(rec, ref, seed=seed)
    out["reference"] = {"n_strides": ref.n_strides, "n_subjects": ref.n_subjects,
                        "sides": sorted(ref.mean_tjc)}
    return out


def split_arrays(name: str, split: str, data_dir: str) -> dict:
    """A TFDS split as arrays: angles [S,T,J,C], valid [S,T,J], subject, side (str) and
    foot_off_pct (NaN where unknown) [S]."""
    import tensorflow_datasets as tfds
    import tfds_gait  # noqa: F401  (registers gait_cycles)
    src = tfds.data_source(name, split=split, data_dir=data_dir)
    rows = [src[i] for i in range(len(src))]
    if not rows:
        raise ValueError(f"split {split!r} of {name} is empty")
    dec = lambda v: v.decode() if isinstance(v, bytes) else v
    out = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in ("angles", "valid")}
    out.update({k: np.array([str(dec(r[k])) for r in rows]) for k in ("subject", "side")})
    out["foot_off_pct"] = np.array([float(r.get("foot_off_pct", np.nan)) for r in rows])
    return out


def evaluate(workdir: str, *, data_name: str | None = None, data_dir: str | None = None,
             split: str = "test", severities=(0.5, 1.0), seed: int = 0) -> dict:
    """Restores model + calibration of `workdir` and evaluates on `split` of its dataset."""
    from gengait_jax import calibration, train as train_lib
    model, cfg, meta = train_lib.restore_model(workdir)
    cal = calibration.load(workdir)
    if not isinstance(cal, dict) or "joint_names" not in cal:
        raise ValueError(f"{workdir}/calibration.json holds no calibration: calibrate again")
    name, ddir = data_name or cfg.data.name, data_dir or cfg.data.data_dir
    test, train = split_arrays(name, split, ddir), split_arrays(name, cfg.data.train_split, ddir)
    detect, twin = model_fns(model, cal)
    out = evaluate_arrays(detect, twin, test, train, meta["joint_names"],
                          severities=severities, seed=seed)
    out["setting"] = {"data_name": name, "data_dir": str(ddir), "split": split,
                      "workdir": str(workdir), "model_id": meta.get("model_id"),
                      "step": meta.get("step"), "calibration_id": cal.get("id"),
                      "severities": list(severities), "seed": seed,
                      "n_test_strides": len(test["angles"]),
                      "n_test_subjects": metrics.n_subjects(test["subject"]),
                      "reference": f"{cfg.data.train_split} split",
                      "envelope_rule": f"> {baselines.ENVELOPE_MAX_OUTSIDE:.0%} of the cycle "
                                       f"outside mean +/- {baselines.ENVELOPE_K_SD:g} SD",
                      "zscore_rule": "GVS z > 2"}
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


def write_outputs(ev: dict, out_dir: str) -> dict[str, Any]:
    """Writes evaluation.json (strict JSON), evaluation.md and the PNG plots into `out_dir`."""
    import json
    import os

    from gengait_jax import evaluation_report
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "evaluation.json"),
             "markdown": os.path.join(out_dir, "evaluation.md")}
    with open(paths["json"], "w") as f:
        json.dump(jsonable(ev), f, indent=1, allow_nan=False)
    clean = json.loads(json.dumps(jsonable(ev)))
    with open(paths["markdown"], "w") as f:
        f.write(evaluation_report.markdown(clean))
    paths["plots"] = evaluation_report.plots(clean, out_dir)
    return paths
