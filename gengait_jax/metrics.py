"""Pure evaluation metrics (numpy): localization, flags, AUROC, paired tests, RMS deviation.

Conventions: `scores_nj` higher = more anomalous; `truth_nj` bool, True where the joint was
perturbed; strides with no affected joint are left out of localization statistics (they are
scored by `false_flag_rate`). Every statistic comes back as a dict carrying `n` (strides) and,
where subjects are given, `n_subjects`, so no figure is quoted without its sample size.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import scipy.stats

Stats = dict[str, Any]


def n_subjects(subjects: Sequence | np.ndarray | None) -> int | None:
    """Number of distinct subjects (None when unknown)."""
    return None if subjects is None else int(len(np.unique(np.asarray(subjects))))


def _counts(n: int, subjects) -> Stats:
    """The `n` / `n_subjects` pair every statistic carries."""
    return {"n": int(n), "n_subjects": n_subjects(subjects)}


def _affected(truth_nj: np.ndarray) -> np.ndarray:
    """Strides with at least one affected joint."""
    return np.asarray(truth_nj, bool).any(axis=-1)


def topk_hit_prob(scores_j: np.ndarray, truth_j: np.ndarray, k: int) -> float:
    """Probability that the top-k joints contain a true one, ties broken uniformly at random."""
    s, t = np.asarray(scores_j, float), np.asarray(truth_j, bool)
    s = np.where(np.isnan(s), -np.inf, s)  # a missing score never ranks first
    k = min(k, s.size)
    v = np.sort(s)[::-1][k - 1]  # k-th largest score
    above, tied = s > v, s == v
    if t[above].any():
        return 1.0
    picks, b, hits = k - int(above.sum()), int(tied.sum()), int(t[tied].sum())
    return 1.0 - math.comb(b - hits, picks) / math.comb(b, picks)


def topk_accuracy(scores_nj, truth_nj, k: int = 1, subjects=None) -> Stats:
    """Share of affected strides whose k most anomalous joints include an affected joint."""
    scores, truth = np.asarray(scores_nj, float), np.asarray(truth_nj, bool)
    keep = _affected(truth)
    hits = [topk_hit_prob(s, t, k) for s, t in zip(scores[keep], truth[keep])]
    subj = None if subjects is None else np.asarray(subjects)[keep]
    return {"value": float(np.mean(hits)) if hits else float("nan"), "k": k,
            **_counts(len(hits), subj)}


def chance_topk(truth_nj, k: int = 1, subjects=None) -> Stats:
    """Expected top-k accuracy of a random joint ranking: 1 - C(J-m, k) / C(J, k) per stride."""
    truth = np.asarray(truth_nj, bool)
    truth = truth[_affected(truth)]
    j = truth.shape[-1]
    p = [1.0 - math.comb(j - int(m), k) / math.comb(j, k) for m in truth.sum(-1)]
    subj = None if subjects is None else np.asarray(subjects)[_affected(truth_nj)]
    return {"value": float(np.mean(p)) if p else float("nan"), "k": k, **_counts(len(p), subj)}


def chance_topk_simulated(truth_nj, k: int = 1, *, seed: int = 0, draws: int = 200) -> float:
    """Top-k accuracy of seeded uniform random scores, averaged over `draws` rankings."""
    truth = np.asarray(truth_nj, bool)
    truth = truth[_affected(truth)]
    rng = np.random.default_rng(seed)
    scores = rng.random((draws,) + truth.shape)
    top = np.argsort(-scores, axis=-1)[..., :k]  # [draws, n, k]
    hit = np.take_along_axis(np.broadcast_to(truth, scores.shape), top, axis=-1).any(-1)
    return float(hit.mean())


def flag_prf(flags_nj, truth_nj, subjects=None) -> Stats:
    """Joint-level precision / recall / F1 of flags, micro-averaged over all strides x joints."""
    f, t = np.asarray(flags_nj, bool), np.asarray(truth_nj, bool)
    tp, fp, fn = int((f & t).sum()), int((f & ~t).sum()), int((~f & t).sum())
    prec = tp / (tp + fp) if tp + fp else float("nan")
    rec = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {"precision": prec, "recall": rec, "f1": f1, "tp": tp, "fp": fp, "fn": fn,
            **_counts(f.shape[0], subjects)}


def auroc(scores, labels) -> float:
    """Rank-based AUROC (Mann-Whitney U / n_pos n_neg), ties counted one half; NaNs dropped."""
    s, y = np.ravel(np.asarray(scores, float)), np.ravel(np.asarray(labels, bool))
    ok = ~np.isnan(s)
    s, y = s[ok], y[ok]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = scipy.stats.rankdata(s)  # average ranks for ties
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def joint_auroc(scores_nj, truth_nj, subjects=None) -> Stats:
    """AUROC of per-joint scores, affected vs unaffected joints pooled over affected strides."""
    scores, truth = np.asarray(scores_nj, float), np.asarray(truth_nj, bool)
    keep = _affected(truth)
    subj = None if subjects is None else np.asarray(subjects)[keep]
    return {"value": auroc(scores[keep], truth[keep]), **_counts(int(keep.sum()), subj)}


def false_flag_rate(flags_nj, subjects=None) -> Stats:
    """On clean strides: share of strides with any flag (`value`) and share of joints flagged."""
    f = np.asarray(flags_nj, bool)
    n = f.shape[0]
    return {"value": float(f.any(-1).mean()) if n else float("nan"),
            "joint_rate": float(f.mean()) if n else float("nan"), **_counts(n, subjects)}


def rank_biserial(before, after) -> float:
    """Matched-pairs rank-biserial r (Kerby 2014): (R+ - R-) / (R+ + R-) of d = before - after."""
    d = np.asarray(before, float) - np.asarray(after, float)
    d = d[~np.isnan(d) & (d != 0)]
    if d.size == 0:
        return float("nan")
    r = scipy.stats.rankdata(np.abs(d))
    return float((r[d > 0].sum() - r[d < 0].sum()) / r.sum())


def cohens_dz(before, after) -> float:
    """Cohen's d_z: mean of the paired differences (before - after) over their SD (ddof=1)."""
    d = np.asarray(before, float) - np.asarray(after, float)
    d = d[~np.isnan(d)]
    if d.size < 2:
        return float("nan")
    sd = d.std(ddof=1)
    if sd == 0:
        return float("inf") * np.sign(d.mean()) if d.mean() else float("nan")
    return float(d.mean() / sd)


def wilcoxon_p(before, after) -> float:
    """Two-sided paired Wilcoxon signed-rank p-value (NaN when it cannot be computed)."""
    d = np.asarray(before, float) - np.asarray(after, float)
    d = d[~np.isnan(d)]
    if d.size == 0 or not np.any(d):
        return float("nan")
    return float(scipy.stats.wilcoxon(d).pvalue)


def subject_means(values, subjects) -> tuple[np.ndarray, np.ndarray]:
    """Per-subject NaN-mean of `values` -> (unique subjects, means)."""
    v, s = np.asarray(values, float), np.asarray(subjects)
    uniq = np.unique(s)
    return uniq, np.array([np.nanmean(v[s == u]) if np.any(~np.isnan(v[s == u])) else np.nan
                           for u in uniq])


def paired_test(before, after, subjects=None) -> Stats:
    """Before-vs-after summary: medians, Wilcoxon p, rank-biserial r, d_z (stride-level).

    With `subjects`, also the same test on per-subject means (`subject_p_value`), the honest
    figure when strides of one person are not independent.
    """
    b, a = np.asarray(before, float), np.asarray(after, float)
    ok = ~(np.isnan(b) | np.isnan(a))
    subj = None if subjects is None else np.asarray(subjects)[ok]
    b, a = b[ok], a[ok]
    out: Stats = {
        "before_median": float(np.median(b)) if b.size else float("nan"),
        "after_median": float(np.median(a)) if a.size else float("nan"),
        "before_mean": float(b.mean()) if b.size else float("nan"),
        "after_mean": float(a.mean()) if a.size else float("nan"),
        "p_value": wilcoxon_p(b, a), "effect_size": rank_biserial(b, a),
        "cohens_dz": cohens_dz(b, a), **_counts(b.size, subj)}
    if subj is not None:
        _, mb = subject_means(b, subj)
        _, ma = subject_means(a, subj)
        out["subject_p_value"] = wilcoxon_p(mb, ma)
        out["subject_effect_size"] = rank_biserial(mb, ma)
    return out


def rms_deviation(a_ntjc, b_ntjc, mask_njc=None) -> np.ndarray:
    """Per-stride RMS (degrees) of a - b over the cycle and the masked joints/channels.

    `mask_njc` (bool, broadcastable to [N, J, C]) picks what counts; NaN samples are ignored;
    a stride with nothing selected gets NaN.
    """
    diff = np.asarray(a_ntjc, float) - np.asarray(b_ntjc, float)
    sel = np.ones(diff.shape[:1] + diff.shape[2:], bool) if mask_njc is None else \
        np.broadcast_to(np.asarray(mask_njc, bool), diff.shape[:1] + diff.shape[2:])
    sel_ntjc = np.broadcast_to(sel[:, None], diff.shape) & ~np.isnan(diff)
    sq = np.where(sel_ntjc, diff, 0.0) ** 2
    count = sel_ntjc.sum(axis=(1, 2, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.sqrt(sq.sum(axis=(1, 2, 3)) / np.maximum(count, 1)),
                        np.nan)


def rms_deg(a_tjc, b_tjc, mask_jc=None) -> float:
    """RMS (degrees) of a - b over one stride's cycle and the masked joints/channels."""
    m = None if mask_jc is None else np.asarray(mask_jc, bool)[None]
    return float(rms_deviation(np.asarray(a_tjc)[None], np.asarray(b_tjc)[None], m)[0])


def summary(values, subjects=None) -> Stats:
    """Mean, median, IQR of a per-stride quantity, with its counts (NaNs dropped)."""
    v = np.asarray(values, float)
    ok = ~np.isnan(v)
    subj = None if subjects is None else np.asarray(subjects)[ok]
    v = v[ok]
    if v.size == 0:
        return {"mean": float("nan"), "median": float("nan"), "q25": float("nan"),
                "q75": float("nan"), **_counts(0, subj)}
    q25, med, q75 = np.percentile(v, [25, 50, 75])
    return {"mean": float(v.mean()), "median": float(med), "q25": float(q25),
            "q75": float(q75), **_counts(v.size, subj)}
