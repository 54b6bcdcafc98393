"""Calibration of pass-1 residuals on out-of-fold (OOF) healthy strides: the statistics, their
null distributions, z-scores, family-wise flag thresholds and trial decisions.

Pass 1 gives, per stride, each joint reconstructed from the rest of the body; the residual
e = observed - reconstruction [T, J, C] is brought to each joint's OWN gait cycle (a joint of
the other side is half a cycle later in a stride) and, per (joint, channel), split into
- an OFFSET o = the residual's median over the cycle (healthy people and labs differ a lot by
  constant offsets, e.g. hip rotation; the median leaves a deviation confined to part of the
  cycle where it is instead of spreading it over the rest), and
- a SHAPE deviation: the offset-removed residual in units of its healthy SD at that phase,
  averaged over a window of `window` points (20 % of the cycle); the statistic is its largest
  |value| over the cycle (a 25 deg swing deficit is large there even when the whole-cycle RMS
  is not), and the anomaly map is that windowed value at every phase.
Each statistic becomes a z against its OWN null: offsets against the OOF offsets' mean / SD
(two-sided, as the one-sided z of the same p), shapes against their mean / SD (no log: measured,
the log compressed large deviations; BUILD_NOTES "Calibration"). A joint's z is the largest of
the z of its channels and statistics that the flag rule keeps (`flag_rule`: the reliable
channels, shape only by default; offsets are reported, not flagged), and the map is the shape z
of those channels at every phase. A trial (k strides) averages its strides' residuals
first and uses nulls fitted on pseudo-trials of k OOF strides of one person. The flag
threshold for k strides is the conformal (1 - alpha) quantile of the max-over-joints z of those
pseudo-trials, each scored as a new person's: by the calibration fitted WITHOUT its own subject
(the background, i.e. the per-phase scale, and the null parameters, from the other subjects'
statistics under that background), so that a healthy new person's trial gets any flag with
probability <= alpha (family-wise). Every subject weighs the same in the background.

Two options measured on the validation people (BUILD_NOTES "Calibration"): the ASYMMETRY
statistic (the same shape statistic on the own-phase left - right curve of a paired joint,
Stouffer-combined with the shape z on the side that deviates where the two sides differ: the
person's other side is a tighter reference than the body prior), and TWO-STAGE flags (once a
trial passes the family-wise threshold, every joint above its own (1 - joint_alpha) healthy
quantile; and a joint NEXT to a family-wise flagged one on the kinematic chain,
`joints.chain_neighbours`, above its own (1 - chain_alpha) quantile: pathologies and their
compensations involve adjacent joints of a limb). And the trial's MISFIT removed: every joint
z less `misfit` x the trial's `misfit_quantile` percentile of its joint z (the thresholds are
fitted on the same values): a healthy person whom the body prior fits poorly everywhere (a
treadmill walker, another lab's protocol) has all joint z raised, a focal deviation raises
one to three of them. With `paired_offsets`, a paired joint's OFFSET z flags too, Stouffer-
combined with the offset of its left - right difference on the side whose residual offset
deviates the same way: a constant one-sided deviation (a knee that never extends) has no
shape, but the person's other side shows it.

The OOF residuals come from K fold models, each trained without the subjects it scores
(`train.train_folds`), so they are what a new person looks like to the final model.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import math
import os
import warnings
from typing import Iterator, Sequence

import numpy as np
import scipy.stats

from gengait_jax import data
from tfds_gait import joints as joints_lib

METHOD = "oof-offset-shape-4"  # changes with any statistic, attribution or threshold rule: a
                               # calibration.json of another method must be re-made
ALPHA = 0.05
JOINT_ALPHA = 0.01
CHAIN_ALPHA = 0.10
MISFIT = 0.5           # weight of the trial's misfit removed from its joint z (0: off)
MISFIT_QUANTILE = 30.0  # percentile of the trial's joint z that measures its misfit
WINDOW = 20
TRIAL_SIZES = (1, 2, 3, 4, 6, 8, 10)
N_PSEUDO = 2000
N_LOSO_NULL = 600  # pseudo-trials of the others behind each left-out subject's null
SD_SMOOTH = 5        # +/- points of circular smoothing of the per-phase residual SD
SD_FLOOR = 0.05      # floor of every scale, relative to its median over the channel
MIN_STRIDES = 20     # fewer OOF strides: no calibration (conformal rank needs >= 19 at 5 %)
MIN_SIZE_SUBJECTS = 8  # a k-stride null needs this many subjects with >= k strides


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silences all-NaN / empty-slice warnings (NaN is the intended answer there)."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# ----------------------------------------------------------------------------- geometry

def _median_last(x: np.ndarray) -> np.ndarray:
    """np.nanmedian over the last axis, by one sort (NaN sorts last): numpy's NaN-aware median
    goes through masked arrays, 8x slower on the calibration's pseudo-trials."""
    s = np.sort(x, axis=-1)
    n = np.isfinite(x).sum(axis=-1, keepdims=True)
    lo = np.take_along_axis(s, np.maximum(n - 1, 0) // 2, axis=-1)
    hi = np.take_along_axis(s, n // 2 - (n == 0), axis=-1)
    return np.where(n > 0, 0.5 * (lo + hi), np.nan)[..., 0]


def _window_last(x: np.ndarray, width: int, min_share: float = 0.5) -> np.ndarray:
    """Circular moving mean over the last axis, centred, `width` points, NaN-aware: NaN where
    fewer than `min_share` of the window's points (or none) are finite."""
    t, h = x.shape[-1], width // 2
    ok = np.isfinite(x)
    whole = bool(ok.all())
    pad = lambda a: np.concatenate([a[..., t - h:], a, a[..., :width - h]], axis=-1)

    def sums(a):
        cs = np.cumsum(pad(a), axis=-1)
        before = np.concatenate([np.zeros_like(cs[..., :1]), cs[..., :t - 1]], axis=-1)
        return cs[..., width - 1:width - 1 + t] - before
    if whole:
        return sums(x) / width
    num, den = sums(np.where(ok, x, 0.0)), sums(ok.astype(np.float64))
    with _quiet():
        return np.where((den >= min_share * width) & (den > 0), num / den, np.nan)


def window_mean(x_ntjc: np.ndarray, width: int, min_share: float = 0.5) -> np.ndarray:
    """Circular moving mean over the cycle (axis 1), centred, `width` points (NaN-aware: NaN
    where fewer than `min_share` of them are finite)."""
    return np.moveaxis(_window_last(np.moveaxis(x_ntjc, 1, -1), width, min_share), -1, 1)


def _smooth_cycle(a_tjc: np.ndarray, half: int) -> np.ndarray:
    """Circular moving mean over t of a [T, J, C] array (+/- half points)."""
    return window_mean(a_tjc[None], 2 * half + 1)[0] if half else a_tjc


# ----------------------------------------------------------------------------- statistics

def _finish_background(mu: np.ndarray, msq: np.ndarray) -> dict[str, np.ndarray]:
    """The background from the mean residual and the mean squared deviation [T, J, C]."""
    with _quiet():
        sd = np.sqrt(_smooth_cycle(msq, SD_SMOOTH))
        floor = SD_FLOOR * np.nanmedian(sd, axis=0, keepdims=True)
    return {"mu": np.nan_to_num(mu), "sd": np.maximum(np.nan_to_num(sd, nan=1.0), floor)}


def _subject_parts(e_ntjc: np.ndarray, subjects: np.ndarray) -> tuple:
    """Per subject: mean residual and mean squared offset-removed deviation [S, T, J, C]."""
    names = np.unique(subjects)
    with _quiet():
        mean_s = np.stack([np.nanmean(e_ntjc[subjects == s], axis=0) for s in names])
        mu = np.nanmean(mean_s, axis=0)
        d = e_ntjc - mu - np.nanmedian(e_ntjc - mu, axis=1, keepdims=True)
        msq_s = np.stack([np.nanmean(d[subjects == s] ** 2, axis=0) for s in names])
    return names, mean_s, msq_s


def _background_of(parts: tuple, keep: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The background of the subjects `keep` (default all) from their `_subject_parts`."""
    _, mean_s, msq_s = parts
    sel = slice(None) if keep is None else keep
    with _quiet():
        return _finish_background(np.nanmean(mean_s[sel], axis=0),
                                  np.nanmean(msq_s[sel], axis=0))


def loso_backgrounds(parts: tuple) -> dict[str, dict]:
    """The background without each subject (its scale as a new person sees it), from the
    per-subject parts (`_subject_parts`): one pass over the strides, not one per subject."""
    names = parts[0]
    return {s: _background_of(parts, np.arange(len(names)) != i) for i, s in enumerate(names)}


def _cycle_last(a: np.ndarray) -> np.ndarray:
    """[..., T, J, C] -> [..., J, C, T] (contiguous): the cycle axis last, 2x faster below."""
    return np.ascontiguousarray(np.moveaxis(a, -3, -1))


def _statistics_last(e_njct: np.ndarray, bg: dict, width: int) -> tuple:
    """`statistics` of cycle-last residuals [N, J, C, T]: offset, shape, window (cycle last)."""
    mu, sd = (_cycle_last(bg[k]) for k in ("mu", "sd"))
    e = e_njct - mu
    with _quiet():
        offset = _median_last(e)
        w = _window_last((e - offset[..., None]) / sd, width)
        return offset, np.nanmax(np.abs(w), axis=-1), w


def statistics(e_ntjc: np.ndarray, bg: dict, width: int) -> dict[str, np.ndarray]:
    """Offset [N, J, C], shape statistic [N, J, C] and windowed deviation [N, T, J, C] of
    own-phase residuals (NaN = invalid samples; a joint without valid samples stays NaN)."""
    offset, shape, w = _statistics_last(_cycle_last(e_ntjc), bg, width)
    return {"offset": offset, "shape": shape, "window": np.moveaxis(w, -1, 1)}


def null_params(st: dict) -> dict[str, np.ndarray]:
    """Null of each statistic per (joint, channel): offset mean / SD, shape mean / SD (and the
    asymmetry's shape and offset ones, when `st` has them)."""
    keys = [("off", "offset"), ("shape", "shape")] + [
        (short, name) for short, name in (("asym", "asym"), ("aoff", "asym_offset"))
        if name in st]
    out = {}
    with _quiet():
        for short, name in keys:
            out[f"{short}_mean"] = np.nanmean(st[name], 0)
            out[f"{short}_sd"] = np.nanstd(st[name], 0)
    for short, _ in keys:
        k = f"{short}_sd"
        med = np.nanmedian(out[k]) if np.isfinite(out[k]).any() else 1.0
        out[k] = np.maximum(np.nan_to_num(out[k], nan=med), SD_FLOOR * med + 1e-9)
    return {k: np.nan_to_num(v) for k, v in out.items()}


def asymmetry_curves(x_own_ntjc: np.ndarray, e_own_ntjc: np.ndarray,
                     pair: Sequence[int]) -> np.ndarray:
    """Own-phase left - right difference of the observed curves of each joint and its
    contralateral twin [N, T, J, C] (NaN where either is not scored, or without a twin): the
    person's other side as its own control, without the between-person spread both share."""
    pair = np.asarray(pair, int)
    x = np.where(np.isfinite(e_own_ntjc), x_own_ntjc, np.nan).astype(np.float64)
    out = np.full(x.shape, np.nan)
    has = pair >= 0
    out[:, :, has] = x[:, :, has] - x[:, :, pair[has]]
    return out


def _one_sided(z_two_sided: np.ndarray) -> np.ndarray:
    """|z| of a two-sided test as the one-sided normal z of the same p-value."""
    p = 2.0 * scipy.stats.norm.sf(np.abs(z_two_sided))
    return scipy.stats.norm.isf(np.clip(p, 1e-300, 1.0))


def flag_rule(joint_names: Sequence[str], num_channels: int, channels: str = "reliable",
              offsets: bool = False, asymmetry: bool = False, misfit: float = 0.0,
              misfit_quantile: float = MISFIT_QUANTILE, paired_offsets: bool = False) -> dict:
    """Which statistics a flag rests on: `channels` "reliable" (joints.reliable_channels) or
    "all"; `offsets`: the offset statistic too (else only the shape one); `asymmetry`: the
    shape statistic of the left - right difference too, where a joint has a twin (`pair`);
    `misfit`: the weight of the trial's misfit removed from its joint z (`_misfit`);
    `paired_offsets`: a paired joint's offset flags too where its left - right offset
    difference deviates the same way (`_offset_attributed`; needs `asymmetry`)."""
    if channels not in ("reliable", "all"):
        raise ValueError(f"calibration.channels={channels!r}: use 'reliable' or 'all'")
    if not 0.0 <= misfit < 1.0 or not 0.0 <= misfit_quantile <= 100.0:
        raise ValueError(f"calibration.misfit={misfit} must lie in [0, 1) and "
                         f"calibration.misfit_quantile={misfit_quantile} in [0, 100]")
    mask = joints_lib.reliable_channels(joint_names, num_channels) if channels == "reliable" \
        else [[True] * num_channels for _ in joint_names]
    pair = joints_lib.contralateral(joint_names)
    return {"channels": channels, "mask": mask, "offsets": bool(offsets),
            "asymmetry": bool(asymmetry) and max(pair) >= 0, "pair": pair,
            "neighbours": joints_lib.chain_neighbours(joint_names),
            "misfit": float(misfit), "misfit_quantile": float(misfit_quantile),
            "paired_offsets": bool(paired_offsets and asymmetry) and max(pair) >= 0}


def _misfit(joint_z: np.ndarray, rule: dict | None) -> np.ndarray:
    """A trial's misfit [N, 1]: the rule's `misfit` weight x the `misfit_quantile` percentile
    of its joint z [N, J] (0 without a rule, a weight or a scored joint)."""
    weight = 0.0 if rule is None else rule.get("misfit", 0.0)
    if not weight:
        return np.zeros(joint_z.shape[:-1] + (1,))
    with _quiet():
        q = np.nanpercentile(joint_z, rule["misfit_quantile"], axis=-1, keepdims=True)
    return weight * np.nan_to_num(q)


def _deviating_side(e: np.ndarray, a: np.ndarray, pair: np.ndarray) -> np.ndarray:
    """Evidence [N, J, C] that a joint, not its twin, deviates: the pair's summed residual
    values `e` signed by the left - right value `a` (> 0: this side; NaN counts as 0)."""
    e = np.nan_to_num(e, nan=0.0)
    return (e + e[..., np.maximum(pair, 0), :]) * np.sign(np.nan_to_num(a, nan=0.0))


def _attributed(z_a: np.ndarray, z_shape: np.ndarray, pair: Sequence[int], w_e: np.ndarray,
                w_a: np.ndarray) -> np.ndarray:
    """The asymmetry z [N, J, C] kept on the deviating side of a pair, NaN on the other side and
    without a twin: the side whose own residual deviates the way the left - right difference
    does AT THE PHASE where that difference deviates most (the sum of the pair's windowed
    residuals `w_e` there, signed by the windowed difference `w_a`, both [N, T, J, C]); a tie
    goes to the larger shape z."""
    pair = np.asarray(pair, int)
    twin = np.maximum(pair, 0)
    peak = np.argmax(np.abs(np.nan_to_num(w_a, nan=0.0)), axis=1)[:, None]  # [N, 1, J, C]

    def at_peak(v: np.ndarray) -> np.ndarray:
        """[N, T, J, C] -> [N, J, C]: the value at each joint and channel's peak phase."""
        return np.take_along_axis(v, peak, axis=1)[:, 0]
    evidence = _deviating_side(at_peak(w_e), at_peak(w_a), pair)
    own = np.nan_to_num(z_shape, nan=-np.inf)
    tie = (evidence == 0) & (own >= own[..., twin, :])
    return np.where((pair >= 0)[:, None] & ((evidence > 0) | tie), z_a, np.nan)


def _offset_attributed(z_ao: np.ndarray, off_e: np.ndarray, off_a: np.ndarray,
                       pair: Sequence[int]) -> np.ndarray:
    """The left - right offset z [N, J, C] kept on the side of a pair whose residual offset
    deviates the way the offset difference does (the pair's summed residual offsets `off_e`,
    signed by the difference's offset `off_a`), NaN on the other side and without a twin."""
    pair = np.asarray(pair, int)
    evidence = _deviating_side(off_e, off_a, pair)
    return np.where((pair >= 0)[:, None] & (evidence > 0), z_ao, np.nan)


def _combined(z_shape: np.ndarray, z_a: np.ndarray) -> np.ndarray:
    """Stouffer's sum (z_shape + z_a) / sqrt 2 where the asymmetry z counts, else z_shape."""
    return np.where(np.isfinite(z_a), (z_shape + z_a) / np.sqrt(2.0), z_shape)


def zscores(st: dict, nul: dict, rule: dict | None = None) -> dict[str, np.ndarray]:
    """Per (joint, channel) offset, shape (and asymmetry) z; the joint z [N, J] = the max, over
    the channels and statistics of the flag `rule`, of those z; the anomaly map [N, T, J] = the
    same z at every phase, max over the rule's channels. No rule: every channel and statistic.
    With the asymmetry statistic (and the windows of both streams, `all_statistics`), the
    deviating side of a pair (`_attributed`) gets the Stouffer sum of its shape and asymmetry z
    instead of the shape z (`_combined`): measured on the validation people, a higher bar for a
    healthy person who is unusual in only one of the two (BUILD_NOTES "Calibration"). With
    the rule's `paired_offsets`, the offset z Stouffer-combined with the left - right offset z
    on the side it is attributed to (`_offset_attributed`) joins the max. The joint z and the
    map are net of the trial's misfit (`_misfit`, 'misfit' [N])."""
    z_off = _one_sided((st["offset"] - nul["off_mean"]) / nul["off_sd"])
    mask = np.ones(z_off.shape[-2:], bool) if rule is None else np.asarray(rule["mask"], bool)
    use_off = True if rule is None else rule["offsets"]
    with _quiet():
        z_shape = (st["shape"] - nul["shape_mean"]) / nul["shape_sd"]
        parts = [z_shape] + ([z_off] if use_off else [])
        out = {"offset": z_off, "shape": z_shape}
        if "asym" in st:
            z_a = _attributed((st["asym"] - nul["asym_mean"]) / nul["asym_sd"], z_shape,
                              rule["pair"], st["window"], st["asym_window"])
            parts[0] = _combined(z_shape, z_a)
            out["asym"] = z_a
        if rule is not None and rule.get("paired_offsets") and "asym_offset" in st:
            z_ao = _offset_attributed(_one_sided((st["asym_offset"] - nul["aoff_mean"])
                                                 / nul["aoff_sd"]), st["offset"],
                                      st["asym_offset"], rule["pair"])
            parts.append(np.where(np.isfinite(z_ao), (z_off + z_ao) / np.sqrt(2.0), np.nan))
            out["asym_offset"] = z_ao
        joint = np.nanmax(np.where(mask, np.stack(parts), np.nan), axis=(0, -1))
        misfit = _misfit(joint, rule)
        out["joint"], out["misfit"] = joint - misfit, misfit[..., 0]
        if "window" in st:
            z_map = (np.abs(st["window"]) - nul["shape_mean"]) / nul["shape_sd"]
            if "asym_window" in st:
                z_map = _combined(z_map, np.where(
                    np.isfinite(z_a)[:, None], (np.abs(st["asym_window"]) - nul["asym_mean"])
                    / nul["asym_sd"], np.nan))
            out["map"] = np.nanmax(np.where(mask, z_map, np.nan), axis=-1) - misfit[:, None]
    return out


# ----------------------------------------------------------------------------- pseudo-trials

def _subjects_with(subjects: np.ndarray, k: int) -> np.ndarray:
    """The subjects with at least k strides."""
    names, counts = np.unique(subjects, return_counts=True)
    return names[counts >= k]


def pseudo_trials(subjects: np.ndarray, k: int, count: int, seed: int) -> np.ndarray:
    """[count, k] stride indices: k distinct strides of one subject (uniform over subjects;
    every subject given has >= k strides, `_subjects_with`)."""
    rng = np.random.default_rng(seed + 1000 * k)
    groups = [np.flatnonzero(subjects == s) for s in np.unique(subjects)]
    out = np.empty((count, k), int)
    for i, g in enumerate(rng.integers(0, len(groups), count)):
        out[i] = rng.choice(groups[g], k, replace=False)
    return out


def trial_residual(e_ntjc: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Mean own-phase residual of each pseudo-trial [P, T, J, C] (index [P, k])."""
    with _quiet():
        return np.nanmean(e_ntjc[index], axis=1)


def conformal_quantile(values, alpha: float) -> float:
    """Rank ceil((n+1)(1-alpha)) of the finite values; inf when n is too small."""
    v = np.sort(np.asarray(values, float)[np.isfinite(values)])
    r = math.ceil((len(v) + 1) * (1 - alpha))
    return float(v[r - 1]) if 0 < r <= len(v) else math.inf


def all_statistics(e: np.ndarray, bg: dict, width: int, a: np.ndarray | None = None,
                   bg_a: dict | None = None) -> dict[str, np.ndarray]:
    """The residual's `statistics`, plus with asymmetry curves `a` (and their background)
    their shape statistic 'asym' [N, J, C], offset 'asym_offset' [N, J, C] and windowed
    deviation 'asym_window'."""
    out = statistics(e, bg, width)
    if a is not None:
        sa = statistics(a, bg_a, width)
        out.update(asym=sa["shape"], asym_window=sa["window"], asym_offset=sa["offset"])
    return out


def _finite_or_none(v: float) -> float | None:
    """v, or None where it is infinite (strict JSON)."""
    return v if math.isfinite(v) else None


def _fit_size(streams: dict, subjects: np.ndarray, k: int, bgs: dict, loso_bgs: dict,
              width: int, alpha: float, seed: int, rule: dict,
              joint_alpha: float | None = None, chain_alpha: float | None = None) -> dict:
    """Null parameters and the family-wise threshold for trials of k strides: pseudo-trials of
    k distinct strides of one subject (the subjects with >= k strides), subjects drawn
    uniformly (a subject with many strides, e.g. a 30 s treadmill trial, weighs as much as one
    with four). `streams`: the own-phase residuals ('e') and asymmetry curves ('a', optional),
    `bgs` / `loso_bgs` their backgrounds (all subjects / without each subject). A left-out
    subject's null comes from the others' statistics recomputed under ITS background (the
    first N_LOSO_NULL pseudo-trials): with the full background, which holds the subject, the
    others' null was tighter than a new person meets, and the thresholds higher (BUILD_NOTES
    "Calibration")."""
    keep = np.flatnonzero(np.isin(subjects, _subjects_with(subjects, k)))
    index = keep[pseudo_trials(subjects[keep], k, N_PSEUDO, seed)]
    trials = {name: _cycle_last(trial_residual(v, index)) for name, v in streams.items()}

    def stats(b: dict, rows) -> dict[str, np.ndarray]:
        """The statistics of the pseudo-trials `rows` under the backgrounds `b` (per stream),
        named as `all_statistics` names them (windows [N, T, J, C])."""
        out = {}
        for name, v in trials.items():
            offset, shape, w = _statistics_last(v[rows], b[name], width)
            if name == "e":
                out.update(offset=offset, shape=shape, window=np.moveaxis(w, -1, 1))
            else:
                out.update(asym=shape, asym_window=np.moveaxis(w, -1, 1), asym_offset=offset)
        return out

    def nulls(st: dict, keep) -> dict[str, np.ndarray]:
        """`null_params` of the rows `keep` of `st`."""
        return null_params({k: st[k][keep] for k in ("offset", "shape", "asym", "asym_offset")
                            if k in st})
    nul = nulls(stats(bgs, slice(None)), slice(None))
    owner = subjects[index[:, 0]]
    z_joint = np.full((len(index), streams["e"].shape[2]), np.nan)

    def as_new_person(s: str) -> np.ndarray:
        """The joint z of subject s's pseudo-trials by the calibration without s (background
        and null; its null from the others among the first N_LOSO_NULL pseudo-trials)."""
        mine = owner == s
        rows = mine | (np.arange(len(index)) < N_LOSO_NULL)
        st = stats({name: b[s] for name, b in loso_bgs.items()}, rows)
        loso = nulls(st, ~mine[rows])
        return zscores({name: v[mine[rows]] for name, v in st.items()}, loso, rule)["joint"]
    names = np.unique(owner)
    with concurrent.futures.ThreadPoolExecutor(min(len(names), os.cpu_count() or 1)) as pool:
        for s, z in zip(names, pool.map(as_new_person, names)):  # numpy releases the GIL
            z_joint[owner == s] = z
    with _quiet():
        z_max = np.nanmax(z_joint, axis=-1)

    def per_joint(level: float | None) -> list | None:
        """Each joint's conformal (1 - level) quantile (None: too few values, never flags)."""
        return None if level is None else [
            _finite_or_none(conformal_quantile(z_joint[:, j], level))
            for j in range(z_joint.shape[1])]
    return {"k": k, "threshold": conformal_quantile(z_max, alpha),
            "joint_threshold": per_joint(joint_alpha),
            "chain_threshold": per_joint(chain_alpha),
            "n_trials": int(len(index)),
            "n_subjects": int(len(np.unique(owner))),
            **{name: np.round(v, 5).tolist() for name, v in nul.items()}}


def reference_curves(x_ntjc, sides, min_strides: int = 5) -> dict:
    """Per stride side ('L', 'R', '*' = all) mean and SD curves [T, J, C] of healthy strides
    (the report's band where no published norm exists)."""
    x, sides = np.asarray(x_ntjc, float), np.asarray(sides).astype(str)
    groups = {"*": np.ones(len(x), bool), "L": sides == "L", "R": sides == "R"}
    out = {}
    with _quiet():
        for name, keep in groups.items():
            if keep.sum() >= min_strides:
                out[name] = {"mean": np.round(np.nanmean(x[keep], 0), 3).tolist(),
                             "sd": np.round(np.nanstd(x[keep], 0, ddof=1), 3).tolist(),
                             "n_strides": int(keep.sum())}
    return out


def _subject_mean(v_ntjc: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    """Mean over strides [T, J, C], every subject weighing the same (NaN-aware)."""
    with _quiet():
        return np.nanmean(np.stack([np.nanmean(v_ntjc[subjects == s], axis=0)
                                    for s in np.unique(subjects)]), axis=0)


def twin_fusion(e_own_ntjc: np.ndarray, x_own_ntjc: np.ndarray, pair: Sequence[int],
                subjects: np.ndarray) -> dict[str, list] | None:
    """The healthy second moments behind the twin's blend of a withheld joint's reconstruction
    with its observed contralateral twin, per own phase, joint and channel: `vm` = E e^2 of the
    pass-1 residual e (the reconstruction's error), `vc` = E d^2 of the asymmetry's deviation
    d = (x_j - x_pj) - `mean_asym`, `c` = E e d (per-subject-weighted means, smoothed over the
    cycle); `fusion_weights` turns them into the blend. None without paired joints."""
    pair = np.asarray(pair, int)
    if pair.max(initial=-1) < 0:
        return None
    a = asymmetry_curves(x_own_ntjc, e_own_ntjc, pair)
    mu = _subject_mean(a, subjects)
    d = a - mu
    e = np.where(np.isfinite(d), e_own_ntjc, np.nan)
    vm, vc, c = (np.nan_to_num(_smooth_cycle(_subject_mean(v, subjects), SD_SMOOTH))
                 for v in (e ** 2, d ** 2, e * d))
    return {"mean_asym": np.round(np.nan_to_num(mu), 3).tolist(), "vm": np.round(vm, 4).tolist(),
            "vc": np.round(vc, 4).tolist(), "c": np.round(c, 4).tolist()}


def fusion_weights(fusion: dict, scale=1.0) -> dict[str, np.ndarray]:
    """The blend twin = w * recon + (1 - w) * (other side + mean_asym) that minimizes its
    healthy error variance when the reconstruction's error SD is `scale` x the calibrated one
    (more joints withheld: `band_scale`): w = (Vc - C) / (Vm + Vc - 2C) with Vm = scale^2 vm,
    C = scale c, clipped to [0, 1] (1 where undefined), and the blend's error SD `sd`."""
    s = np.asarray(scale, float)
    vm, vc, c = (np.asarray(fusion[k], float) for k in ("vm", "vc", "c"))
    vm, c = vm * s ** 2, c * s
    with _quiet():
        w = np.clip((vc - c) / (vm + vc - 2.0 * c), 0.0, 1.0)
    w = np.where(np.isfinite(w), w, 1.0)
    var = w ** 2 * vm + (1.0 - w) ** 2 * vc + 2.0 * w * (1.0 - w) * c
    return {"weight": w, "mean_asym": np.asarray(fusion["mean_asym"], float),
            "sd": np.sqrt(np.maximum(var, 0.0))}


def band_inflation(e_own_ntjc: np.ndarray, multi_own_ntjc: np.ndarray, groups: int) -> dict:
    """Per joint and channel, how much larger the healthy reconstruction error is with `groups`
    occlusion groups withheld together (`multi_own_ntjc`, NaN where not withheld) than with the
    joint's own group alone (the pass-1 residual e, on the same samples): the RMS ratio,
    at least 1 (1 where never withheld)."""
    ok = np.isfinite(multi_own_ntjc) & np.isfinite(e_own_ntjc)
    with _quiet():
        num = np.nanmean(np.where(ok, multi_own_ntjc ** 2, np.nan), axis=(0, 1))
        den = np.nanmean(np.where(ok, e_own_ntjc ** 2, np.nan), axis=(0, 1))
        ratio = np.sqrt(num / den)
    return {"groups": int(groups),
            "scale": np.round(np.maximum(np.nan_to_num(ratio, nan=1.0), 1.0), 3).tolist()}


def band_scale(cal: dict, n_groups) -> np.ndarray:
    """[N, J, C] the healthy error SD's scale for strides with `n_groups` [N] occlusion groups
    withheld: 1 for one group, the calibration's `band_inflation` scale at its group count,
    linear in between and beyond (1 without a `band_inflation`)."""
    n = np.asarray(n_groups, float)
    inf = cal.get("band_inflation")
    if inf is None or inf["groups"] <= 1:
        return np.ones((len(n), len(cal["joint_names"]), 1))
    per = (np.asarray(inf["scale"], float) - 1.0) / (inf["groups"] - 1)
    return 1.0 + np.maximum(n - 1.0, 0.0)[:, None, None] * per[None]


def fit(residuals_ntjc, sides, subjects, joint_names: Sequence[str], *, cohorts=None,
        alpha: float = ALPHA, width: int = WINDOW, channels: str = "reliable",
        offsets: bool = False, asymmetry: bool = False, joint_alpha: float | None = None,
        chain_alpha: float | None = None, misfit: float = 0.0,
        misfit_quantile: float = MISFIT_QUANTILE, paired_offsets: bool = False,
        folds: dict | None = None,
        model_id: str | None = None, seed: int = 0, x_ntjc=None, multi_ntjc=None,
        multi_groups: int = 0) -> dict:
    """The calibration (JSON-able) from OOF pass-1 residuals [N, T, J, C] of healthy strides
    (and their observed curves `x_ntjc`: the reference curves, the asymmetry statistic, the
    twin's blend; and the reconstruction errors `multi_ntjc` of the same strides with
    `multi_groups` occlusion groups withheld together: the twin band's `band_inflation`);
    flags rest on the statistics of `flag_rule(channels, offsets, asymmetry, misfit,
    misfit_quantile)`."""
    subjects = np.asarray(subjects).astype(str)
    chain_alpha = chain_alpha if joint_alpha is not None else None  # a two-stage rule's level
    if len(residuals_ntjc) < MIN_STRIDES or len(set(subjects.tolist())) < 3:
        raise ValueError(f"calibration needs >= {MIN_STRIDES} strides of >= 3 subjects, got "
                         f"{len(residuals_ntjc)} of {len(set(subjects.tolist()))}")
    e = data.to_own_phase(residuals_ntjc, sides, joint_names)
    rule = flag_rule(joint_names, e.shape[-1], channels, offsets, asymmetry, misfit,
                     misfit_quantile, paired_offsets)
    if rule["asymmetry"] and x_ntjc is None:
        raise ValueError("the asymmetry statistic needs the observed curves (x_ntjc)")
    streams = {"e": e}
    if rule["asymmetry"]:
        streams["a"] = asymmetry_curves(data.to_own_phase(x_ntjc, sides, joint_names), e,
                                        rule["pair"])
    bgs, loso_bgs = {}, {}
    for name, v in streams.items():
        parts = _subject_parts(v, subjects)
        bgs[name], loso_bgs[name] = _background_of(parts), loso_backgrounds(parts)
    sizes = [_fit_size(streams, subjects, k, bgs, loso_bgs, width, alpha, seed, rule,
                       joint_alpha, chain_alpha) for k in TRIAL_SIZES
             if k == 1 or len(_subjects_with(subjects, k)) >= MIN_SIZE_SUBJECTS]
    names = list(joint_names)
    cal = {
        "model_id": model_id, "method": METHOD, "alpha": alpha,
        "joint_alpha": joint_alpha,
        "chain_alpha": chain_alpha, "window": width,
        "joint_names": names, "n_strides": int(len(e)),
        "n_subjects": int(len(set(subjects.tolist()))),
        "cohorts": None if cohorts is None else dict(zip(*np.unique(
            np.asarray(cohorts).astype(str), return_counts=True))),
        "n_strides_scored": dict(zip(names, np.isfinite(e).all(-1).any(1).sum(0).tolist())),
        "folds": folds, "flag_rule": rule,
        "background": {k: np.round(v, 4).tolist() for k, v in bgs["e"].items()},
        "asym_background": {k: np.round(v, 4).tolist() for k, v in bgs["a"].items()}
        if "a" in bgs else None,
        "sizes": sizes,
        "threshold_method": "conformal max-over-joints z of leave-one-subject-out pseudo-trials",
    }
    with _quiet():
        cal["residual_sd"] = np.round(np.sqrt(np.nanmean(e ** 2, axis=0)), 3).tolist()
    if x_ntjc is not None:
        cal["reference"] = reference_curves(x_ntjc, sides)
        cal["twin_fusion"] = twin_fusion(e, data.to_own_phase(x_ntjc, sides, joint_names),
                                         rule["pair"], subjects)
    if multi_ntjc is not None:
        cal["band_inflation"] = band_inflation(
            e, data.to_own_phase(multi_ntjc, sides, joint_names), multi_groups)
    clean = json.loads(json.dumps(cal, default=float))
    cal["id"] = "cal-" + hashlib.sha1(json.dumps(clean, sort_keys=True).encode()).hexdigest()[:10]
    return cal


# ----------------------------------------------------------------------------- applying it

def size_entry(cal: dict, k: int) -> dict:
    """The null / threshold entry for k strides (the largest size fitted beyond it)."""
    sizes = cal["sizes"]
    return next((s for s in reversed(sizes) if s["k"] <= max(k, 1)), sizes[0])


def _arrays(entry: dict) -> dict[str, np.ndarray]:
    """The null parameters of a size entry as arrays."""
    return {k: np.asarray(entry[k], float) for k in ("off_mean", "off_sd", "shape_mean",
                                                     "shape_sd", "asym_mean", "asym_sd",
                                                     "aoff_mean", "aoff_sd")
            if k in entry}


def above(joint_z: np.ndarray, level) -> np.ndarray:
    """joint_z > level (a scalar or per-joint levels); a joint not scored (NaN) never is."""
    return np.nan_to_num(joint_z, nan=-np.inf) > level


def flags_of(joint_z: np.ndarray, entry: dict, neighbours) -> np.ndarray:
    """Flags [..., J]: a joint above the family-wise threshold; with per-joint thresholds (a
    two-stage rule), every joint above its own (`own_thresholds`) once any joint is above the
    family-wise one."""
    gate = above(joint_z, entry["threshold"])
    own = own_thresholds(joint_z, entry, neighbours)
    if own is None:
        return gate
    return gate | (above(joint_z, own) & gate.any(axis=-1, keepdims=True))


def _thresholds(entry: dict, key: str) -> np.ndarray | None:
    """Per-joint thresholds [J] of a size entry (inf where a joint has none), or None."""
    th = entry.get(key)
    return None if th is None else np.array([np.inf if t is None else t for t in th])


def own_thresholds(joint_z: np.ndarray, entry: dict, neighbours) -> np.ndarray | None:
    """Each joint's own threshold [..., J] in a flagged trial: its (1 - joint_alpha) level, or
    its (1 - chain_alpha) level where it is a kinematic-chain neighbour (`neighbours` [J, J])
    of a joint above the family-wise threshold; None without a two-stage rule."""
    own, chain = _thresholds(entry, "joint_threshold"), _thresholds(entry, "chain_threshold")
    if own is None or chain is None:
        return own
    gate = above(joint_z, entry["threshold"])
    near = (gate[..., :, None] & np.asarray(neighbours, bool)).any(axis=-2)
    return np.where(near, np.minimum(own, chain), own)


def _streams(residuals_ntjc, sides, cal: dict, x_ntjc) -> tuple:
    """Own-phase residuals and (when the calibration uses them) asymmetry curves."""
    e = data.to_own_phase(residuals_ntjc, sides, cal["joint_names"])
    rule = cal["flag_rule"]
    if not rule.get("asymmetry"):
        return e, None
    if x_ntjc is None:
        raise ValueError("this calibration uses the asymmetry statistic: pass the observed "
                         "curves (x_ntjc)")
    return e, asymmetry_curves(data.to_own_phase(x_ntjc, sides, cal["joint_names"]), e,
                               rule["pair"])


def _background(cal: dict, key: str = "background") -> dict | None:
    """A stored background as arrays (the nulls of strict JSON back to NaN)."""
    return None if cal.get(key) is None else {k: np.asarray(v, float) for k, v in cal[key].items()}


def score(residuals_ntjc, sides, cal: dict, x_ntjc=None) -> dict:
    """Per-stride z of OOF-calibrated statistics: joint z [N, J], map [N, T, J], channel
    z [N, J, C] (offset, shape), flags [N, J] (the one-stride threshold); `x_ntjc`: the
    observed curves (needed by a calibration with the asymmetry statistic)."""
    e, a = _streams(residuals_ntjc, sides, cal, x_ntjc)
    entry = size_entry(cal, 1)
    st = all_statistics(e, _background(cal), cal["window"], a, _background(cal, "asym_background"))
    z = zscores(st, _arrays(entry), cal["flag_rule"])
    return dict(z, flags=flags_of(z["joint"], entry, cal["flag_rule"]["neighbours"]),
                threshold=entry["threshold"])


def decide(residuals_ntjc, sides, cal: dict, x_ntjc=None) -> dict:
    """The trial decision over all strides (both sides): joint z [J] of the strides' mean
    own-phase residual (and asymmetry) against the k-stride null, its threshold, flags, map
    [T, J], k, and each joint's own threshold in this trial (`own_thresholds`)."""
    e, a = _streams(residuals_ntjc, sides, cal, x_ntjc)
    k = int(np.isfinite(e).any(axis=(1, 2, 3)).sum())
    entry = size_entry(cal, k)
    with _quiet():
        mean = np.nanmean(e, axis=0, keepdims=True)
        mean_a = None if a is None else np.nanmean(a, axis=0, keepdims=True)
    st = all_statistics(mean, _background(cal), cal["window"], mean_a,
                        _background(cal, "asym_background"))
    z = zscores(st, _arrays(entry), cal["flag_rule"])
    joint = z["joint"][0]
    neighbours = cal["flag_rule"]["neighbours"]
    flags = flags_of(joint, entry, neighbours)
    nan = np.full_like(z["shape"][0], np.nan)
    asym = z["asym"][0] if "asym" in z else nan
    return {"z": joint, "flagged": flags, "threshold": float(entry["threshold"]), "k": k,
            "map": z["map"][0], "offset_z": z["offset"][0], "shape_z": z["shape"][0],
            "asym_z": asym, "threshold_k": entry["k"],
            "joint_threshold": own_thresholds(joint, entry, neighbours),
            "misfit": float(z["misfit"][0]),
            "asym_offset_z": z["asym_offset"][0] if "asym_offset" in z else nan}
