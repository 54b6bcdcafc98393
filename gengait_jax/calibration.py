"""Calibration of pass-1 scores on VALIDATION healthy strides: z-scores, flags, trial decisions.

z-scores: per joint, the log of the score is centred and scaled by the mean and SD of the
validation strides (`method="median_mad"` is the robust alternative; measured no better, and
much worse with 9 strides: BUILD_NOTES "Calibration"). A validation stride's own z uses a
leave-one-out centre and scale, so it is distributed like a new stride's z.

Flags (default `mode="familywise"`): a healthy STRIDE must get no flag at all with probability
>= 1 - alpha, so the threshold is the conformal quantile of the stride's max-over-joints z
(rank ceil((n + 1)(1 - alpha)) of n: the finite-sample correction). That is one z threshold for
all joints, i.e. per-joint thresholds in score units (degrees). `mode="per_joint"` instead
calibrates each joint at alpha on its own (a stride then gets some flag far more often). When
n is too small for the conformal rank (n < 1/alpha - 1, e.g. the 9 embedded validation
strides), a Student-t prediction bound with Bonferroni over joints is used instead,
t_{n-1}^-1(1 - alpha / J) * sqrt(1 + 1/n), and the calibration says so.

Trials: a joint's statistic is the median of its per-stride z over the k strides of the trial.
With >= MIN_TRIAL_SUBJECTS validation subjects, its threshold for k = 1..MAX_TRIAL_STRIDES is
the (1 - alpha) quantile of max-over-joints medians of pseudo-trials (k strides of one subject,
with leave-one-SUBJECT-out z, as a new subject would be); with fewer, the stride threshold is
used for every k (conservative). k = 1 always uses the stride threshold.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import warnings
from typing import Iterator, Sequence

import numpy as np
import scipy.stats

FILE = "calibration.json"
ALPHA = 0.05
MAX_TRIAL_STRIDES = 10
N_PSEUDO_TRIALS = 4000
MIN_SCALE = 0.05    # floor of the log-score scale (5 % relative spread)
SCORE_FLOOR = 1e-3  # scores below this (physical units) are clipped before the log
LOO_MAX_N = 400     # leave-one-out z only up to this many strides (the effect is ~1/n)
MIN_TRIAL_SUBJECTS = 3  # pseudo-trial thresholds need this many validation subjects


def log_scores(score_nj) -> np.ndarray:
    """log(max(score, SCORE_FLOOR)); NaN (not scored) stays NaN."""
    s = np.asarray(score_nj, float)
    with np.errstate(invalid="ignore"):
        return np.log(np.where(np.isnan(s), np.nan, np.maximum(s, SCORE_FLOOR)))


def center_scale(l_nj: np.ndarray, method: str = "mean_sd") -> tuple[np.ndarray, np.ndarray]:
    """Per-joint centre and scale of log scores (NaN-aware); method median_mad or mean_sd."""
    with np.errstate(invalid="ignore"), _no_warn():
        if method == "median_mad":
            c = np.nanmedian(l_nj, 0)
            s = 1.4826 * np.nanmedian(np.abs(l_nj - c), 0)
        elif method == "mean_sd":
            c, s = np.nanmean(l_nj, 0), np.nanstd(l_nj, 0, ddof=1)
        else:
            raise ValueError(f"unknown z method {method!r}: median_mad or mean_sd")
    return c, np.maximum(np.nan_to_num(s, nan=MIN_SCALE), MIN_SCALE)


@contextlib.contextmanager
def _no_warn() -> Iterator[None]:
    """Silences all-NaN slice warnings (a joint never scored has NaN statistics)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def loo_z(l_nj: np.ndarray, method: str = "mean_sd") -> np.ndarray:
    """z of each stride against the other strides' centre/scale (plain fit when n is large)."""
    n = len(l_nj)
    if n > LOO_MAX_N or n < 3:
        c, s = center_scale(l_nj, method)
        return (l_nj - c) / s
    z = np.empty_like(l_nj)
    for i in range(n):
        c, s = center_scale(np.delete(l_nj, i, 0), method)
        z[i] = (l_nj[i] - c) / s
    return z


def loso_z(l_nj: np.ndarray, subjects, method: str = "mean_sd") -> np.ndarray:
    """z of each stride against the OTHER subjects' centre/scale (leave one subject out)."""
    subjects = np.asarray(subjects)
    z = np.empty_like(l_nj)
    for s in np.unique(subjects):
        m = subjects == s
        c, sc = center_scale(l_nj[~m], method)
        z[m] = (l_nj[m] - c) / sc
    return z


def conformal_quantile(values, alpha: float) -> float:
    """Rank ceil((n+1)(1-alpha)) of the finite values; inf when n is too small."""
    v = np.sort(np.asarray(values, float)[np.isfinite(values)])
    k = math.ceil((len(v) + 1) * (1 - alpha))
    return float(v[k - 1]) if 0 < k <= len(v) else math.inf


def _max_z(z_nj: np.ndarray) -> np.ndarray:
    """Max over scored joints per stride (NaN when no joint is scored)."""
    with _no_warn():
        return np.nanmax(z_nj, -1)


def small_sample_z(n: int, level: float, fallback: str = "t") -> float:
    """Parametric z bound for few strides: Student-t prediction bound (or Gaussian)."""
    if fallback == "gaussian":
        return float(scipy.stats.norm.ppf(level))
    if fallback == "t":
        return float(scipy.stats.t.ppf(level, max(n - 1, 1)) * math.sqrt(1 + 1 / max(n, 1)))
    raise ValueError(f"unknown small-sample fallback {fallback!r}: t or gaussian")


def stride_thresholds(z_nj: np.ndarray, alpha: float, mode: str,
                      fallback: str = "t") -> tuple[np.ndarray, str]:
    """Per-joint z thresholds [J] and how they were obtained."""
    j, n = z_nj.shape[-1], len(z_nj)
    if mode == "familywise":
        tau = conformal_quantile(_max_z(z_nj), alpha)
        if math.isfinite(tau):
            return np.full(j, tau), "conformal max-z"
        return (np.full(j, small_sample_z(n, 1 - alpha / j, fallback)),
                f"{fallback} bonferroni (n={n} < {math.ceil(1 / alpha) - 1} for conformal)")
    if mode == "per_joint":
        tau = np.array([conformal_quantile(z_nj[:, i], alpha) for i in range(j)])
        fallback_j = ~np.isfinite(tau)
        tau[fallback_j] = small_sample_z(n, 1 - alpha, fallback)
        return tau, "conformal per joint" + (f" ({fallback} where few strides)"
                                             if fallback_j.any() else "")
    raise ValueError(f"unknown flag mode {mode!r}: familywise or per_joint")


def pseudo_trials(n: int, k: int, subjects, count: int, rng) -> np.ndarray:
    """[count, k] stride indices: k strides of one subject (uniform over subjects) or of all.

    Without replacement while the pool is large enough, with replacement beyond it.
    """
    if subjects is None or len(set(np.asarray(subjects).tolist())) < 3:
        groups = [np.arange(n)]
    else:
        subjects = np.asarray(subjects)
        groups = [np.flatnonzero(subjects == s) for s in np.unique(subjects)]
    size = np.array([len(gr) for gr in groups])
    table = np.zeros((len(groups), size.max()), int)
    for i, gr in enumerate(groups):
        table[i, :len(gr)] = gr
    g = rng.integers(0, len(groups), count)
    keys = np.where(np.arange(size.max()) < size[g][:, None], rng.random((count, size.max())),
                    np.inf)
    pos = np.argsort(keys, axis=1)[:, :k]
    if pos.shape[1] < k:
        pos = np.pad(pos, ((0, 0), (0, k - pos.shape[1])))
    extra = np.arange(k) >= size[g][:, None]  # beyond the pool: with replacement
    pos = np.where(extra, rng.integers(0, 1 << 30, (count, k)) % size[g][:, None], pos)
    return table[g[:, None], pos]


def trial_thresholds(z_nj: np.ndarray, alpha: float, subjects=None, *, seed: int = 0,
                     max_k: int = MAX_TRIAL_STRIDES) -> list[float]:
    """Threshold of max_j median-of-k z for k = 1..max_k (pseudo-trials of validation strides)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(1, max_k + 1):
        idx = pseudo_trials(len(z_nj), k, subjects, N_PSEUDO_TRIALS, rng)
        with _no_warn():
            stat = _max_z(np.nanmedian(z_nj[idx], axis=1))
        out.append(conformal_quantile(stat, alpha))
    return out


def reference_curves(angles_ntjc, sides=None, min_strides: int = 5) -> dict:
    """Per stride side ('L', 'R', '*' = all) mean and SD curves [T, J, C] of healthy strides."""
    x = np.asarray(angles_ntjc, float)
    groups = {"*": np.ones(len(x), bool)}
    if sides is not None:
        sides = np.asarray(sides).astype(str)
        groups.update({s: sides == s for s in ("L", "R")})
    out = {}
    with _no_warn():
        for name, keep in groups.items():
            if keep.sum() >= min_strides:
                out[name] = {"mean": np.round(np.nanmean(x[keep], 0), 3).tolist(),
                             "sd": np.round(np.nanstd(x[keep], 0, ddof=1), 3).tolist(),
                             "n_strides": int(keep.sum())}
    return out


def fit(score_nj, joint_names: Sequence[str], *, alpha: float = ALPHA,
        method: str = "mean_sd", mode: str = "familywise", subjects=None,
        model_id: str | None = None, angles_ntjc=None, sides=None, seed: int = 0,
        num_context: int = 0, max_trial_strides: int = MAX_TRIAL_STRIDES,
        residual_sd_tjc=None, fallback: str = "t") -> dict:
    """The calibration (JSON-able) from validation pass-1 scores [N, J]."""
    l_nj = log_scores(score_nj)
    c, s = center_scale(l_nj, method)
    z = loo_z(l_nj, method)
    tau, how = stride_thresholds(z, alpha, mode, fallback)
    n_subjects = None if subjects is None else len(set(np.asarray(subjects).tolist()))
    if n_subjects is not None and n_subjects >= MIN_TRIAL_SUBJECTS and mode == "familywise":
        trial = trial_thresholds(loso_z(l_nj, subjects, method), alpha, subjects, seed=seed,
                                 max_k=max_trial_strides)
        trial_how = "within-subject pseudo-trials, leave-one-subject-out z"
    else:
        trial = [float(tau.max())] * max_trial_strides
        trial_how = f"stride threshold (fewer than {MIN_TRIAL_SUBJECTS} validation subjects)"
    trial[:1] = [float(tau.max())][:len(trial)]  # one stride: the stride calibration
    names = list(joint_names)
    thr_score = np.exp(c + tau * s)
    cal = {
        "model_id": model_id, "num_context": num_context, "alpha": alpha, "method": method,
        "mode": mode,
        "threshold_method": how, "joint_names": names,
        "center_log": dict(zip(names, c.round(6).tolist())),
        "scale_log": dict(zip(names, s.round(6).tolist())),
        "z_threshold": dict(zip(names, np.round(tau, 6).tolist())),
        "score_threshold": dict(zip(names, np.round(thr_score, 6).tolist())),
        "trial_z_threshold": [round(t, 6) for t in trial], "trial_threshold_method": trial_how,
        "n_strides": int(len(l_nj)),
        "n_strides_scored": dict(zip(names, np.isfinite(l_nj).sum(0).tolist())),
        "n_subjects": n_subjects,
        "validation_false_flag_rate": float(np.mean(_max_z(z) > tau[0]))
        if mode == "familywise" else None,
    }
    if angles_ntjc is not None:
        cal["reference"] = reference_curves(angles_ntjc, sides)
    if residual_sd_tjc is not None:
        cal["residual_sd"] = np.round(np.asarray(residual_sd_tjc, float), 3).tolist()
    digest = hashlib.sha1(json.dumps(cal, sort_keys=True).encode()).hexdigest()
    cal["id"] = f"cal-{digest[:10]}"
    return cal


def zscores(score_nj, cal: dict) -> np.ndarray:
    """z [N, J] of pass-1 scores (NaN where not scored)."""
    names = cal["joint_names"]
    c = np.array([cal["center_log"][n] for n in names])
    s = np.array([cal["scale_log"][n] for n in names])
    return (log_scores(score_nj) - c) / s


def stride_flags(z_nj, cal: dict) -> np.ndarray:
    """bool [N, J]: z above the joint's threshold (never for a joint not scored)."""
    tau = np.array([cal["z_threshold"][n] for n in cal["joint_names"]])
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(np.asarray(z_nj, float), nan=-np.inf) > tau


def trial_decision(z_nj, cal: dict) -> dict:
    """Median-of-strides z per joint, the threshold for this k, and the flags."""
    z = np.asarray(z_nj, float)
    k = int(np.isfinite(z).any(-1).sum())
    thr = cal["trial_z_threshold"]
    tau = thr[min(max(k, 1), len(thr)) - 1]
    if cal.get("mode") == "per_joint":
        tau = np.array([cal["z_threshold"][n] for n in cal["joint_names"]])
    with _no_warn():
        med = np.nanmedian(z, 0) if len(z) else np.full(len(cal["joint_names"]), np.nan)
    flags = np.nan_to_num(med, nan=-np.inf) > tau
    return {"z": med, "flagged": flags, "threshold": tau, "k": k}


def save(cal: dict, workdir: str) -> str:
    """Writes workdir/calibration.json (strict JSON); returns its path."""
    path = os.path.join(workdir, FILE)
    clean = json.loads(json.dumps(cal), parse_constant=lambda _: None)
    with open(path, "w") as f:
        json.dump(clean, f, indent=1, allow_nan=False)
    return path


def load(workdir: str) -> dict:
    """Reads workdir/calibration.json (FileNotFoundError when missing)."""
    path = os.path.join(workdir, FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no {FILE} in {workdir}: calibrate first "
                                f"(python -m launch.detect --workdir={workdir} --calibrate)")
    try:
        with open(path) as f:
            cal = json.load(f)
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(cal, dict) or not {"id", "joint_names", "z_threshold"} <= set(cal):
        raise ValueError(f"{path}: not a GenGait calibration (recalibrate)")
    return cal


def residual_sd(recon_ntjc, x_ntjc, valid_ntj) -> np.ndarray:
    """[T, J, C] RMS of (occlusion reconstruction - observed) over healthy strides."""
    err = np.where(np.asarray(valid_ntj, bool)[..., None], recon_ntjc - x_ntjc, np.nan)
    with _no_warn():
        return np.sqrt(np.nanmean(err ** 2, 0))


def calibrate(model, meta: dict, strides: dict, *, alpha: float = ALPHA, num_context: int = 0,
              **kw) -> dict:
    """Scores healthy validation strides (angles, valid, optional subject/side) and fits."""
    from gengait_jax import scoring
    x, valid = scoring.prepare(strides["angles"], strides.get("valid"))
    p1 = scoring.score_strides(model, x, valid, num_context=num_context)
    cal = fit(p1.score_nj, meta["joint_names"], alpha=alpha, subjects=strides.get("subject"),
              model_id=meta.get("model_id"), angles_ntjc=x, sides=strides.get("side"),
              num_context=num_context, residual_sd_tjc=residual_sd(p1.recon_ntjc, x, valid),
              **kw)
    return cal


def validation_strides(cfg) -> dict:
    """The validation split of the model's dataset as arrays (angles, valid, subject, side)."""
    import tensorflow_datasets as tfds
    import tfds_gait  # noqa: F401  (registers gait_cycles)
    src = tfds.data_source(cfg.data.name, split=cfg.data.val_split, data_dir=cfg.data.data_dir)
    rows = [src[i] for i in range(len(src))]
    if not rows:
        raise ValueError(f"validation split {cfg.data.val_split!r} of {cfg.data.name} is empty: "
                         f"nothing to calibrate on")
    out = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in ("angles", "valid")}
    for k in ("subject", "side"):
        if k in rows[0]:
            out[k] = np.array([r[k].decode() if isinstance(r[k], bytes) else r[k] for r in rows])
    return out


def calibrate_workdir(workdir: str, *, alpha: float = ALPHA, strides: dict | None = None,
                      **kw) -> dict:
    """Restores the model of `workdir`, calibrates it on its validation split, saves the JSON."""
    from gengait_jax import train
    model, cfg, meta = train.restore_model(workdir)
    cal = calibrate(model, meta, validation_strides(cfg) if strides is None else strides,
                    alpha=alpha, **kw)
    save(cal, workdir)
    return cal
