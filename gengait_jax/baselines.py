"""Clinical baselines fitted on TRAIN strides only: GVS/GPS, the +/-2 SD envelope, GVS z-scores,
the population mean curve as the "correction", and chance.

GVS (Baker et al. 2009, Gait Profile Score): for one variable (joint x plane) the RMS over the
cycle of the difference from the reference mean curve. Here a joint's GVS pools its C planes
(sqrt of the mean of the per-plane squared GVS), and GPS pools all J x C variables the same way.

Stride side matters: in a stride defined by the right foot strike the left joints are half a
cycle out of phase, so the reference is fitted per stride side when sides are given.

Envelope flags (what lab reports show as the grey band): a joint is flagged when, in any of its
planes, more than `ENVELOPE_MAX_OUTSIDE` = 20 % of the cycle lies outside mean +/- 2 SD. A
healthy curve brushes the band edge for a few percent of the cycle; 20 % means a sustained
excursion (e.g. a whole stance or swing phase), the level a clinician reads as abnormal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Iterator, Sequence

import numpy as np

from gengait_jax import metrics

ENVELOPE_K_SD = 2.0
ENVELOPE_MAX_OUTSIDE = 0.20
_ANY = "*"  # key of the side-independent reference


@dataclasses.dataclass(frozen=True)
class Reference:
    """Training-population curves and GVS distributions, keyed by stride side ('L', 'R' or '*')."""

    mean_tjc: dict[str, np.ndarray]
    sd_tjc: dict[str, np.ndarray]
    gvs_mean_j: dict[str, np.ndarray]
    gvs_sd_j: dict[str, np.ndarray]
    n_strides: int
    n_subjects: int | None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silences the all-NaN-slice warnings of nanmean/nanstd (NaN is the intended answer)."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def valid_mask(valid, shape: tuple[int, ...]) -> np.ndarray:
    """Broadcasts a validity mask [S], [S,J], [S,T,J], [S,J,C] or [S,T,J,C] to `shape` [S,T,J,C]."""
    if valid is None:
        return np.ones(shape, bool)
    v = np.asarray(valid, bool)
    s, t, j, c = shape
    if v.shape == (s,):
        v = v[:, None, None, None]
    elif v.shape == (s, j):
        v = v[:, None, :, None]
    elif v.shape == (s, t, j):
        v = v[..., None]
    elif v.shape == (s, j, c):
        v = v[:, None]
    elif v.shape != shape:
        raise ValueError(f"valid of shape {v.shape} does not fit angles {shape}")
    return np.broadcast_to(v, shape)


def side_key(side) -> str:
    """Normalizes a stride side ('L'/'R', b'L', 0/1, 'left') to 'L' or 'R'."""
    if isinstance(side, bytes):
        side = side.decode()
    if isinstance(side, (int, np.integer)):
        return "LR"[int(side)]
    return str(side)[0].upper()


def _masked(angles_stjc, valid) -> np.ndarray:
    """Angles as float with invalid samples set to NaN."""
    a = np.array(angles_stjc, float)
    a[~valid_mask(valid, a.shape)] = np.nan
    return a


def _keys(sides, n: int) -> np.ndarray:
    """Reference key per stride: its side, or '*' when sides are unknown."""
    return np.full(n, _ANY) if sides is None else np.array([side_key(s) for s in sides])


def gvs_jc(angles_ntjc, mean_ntjc) -> np.ndarray:
    """Gait Variable Score per (stride, joint, plane): RMS over the cycle of angles - mean."""
    d = np.asarray(angles_ntjc, float) - np.asarray(mean_ntjc, float)
    with _quiet():
        return np.sqrt(np.nanmean(d ** 2, axis=1))


def pool(gvs_njc, axis) -> np.ndarray:
    """Pools GVS in quadrature (RMS) over `axis`, NaN-aware: joint GVS or GPS."""
    with _quiet():
        return np.sqrt(np.nanmean(np.asarray(gvs_njc, float) ** 2, axis=axis))


def fit_reference(train_angles_stjc, valid=None, sides: Sequence | None = None,
                  subjects: Sequence | None = None) -> Reference:
    """Mean/SD curves and per-joint GVS mean/SD of the training population (per stride side)."""
    a = _masked(train_angles_stjc, valid)
    keys = _keys(sides, a.shape[0])
    mean, sd, gm, gs = {}, {}, {}, {}
    for k in np.unique(keys):
        ak = a[keys == k]
        with _quiet():
            mean[k] = np.nanmean(ak, axis=0)
            sd[k] = np.nanstd(ak, axis=0, ddof=1)
            g = pool(gvs_jc(ak, mean[k][None]), axis=-1)  # [S_k, J]
            gm[k], gs[k] = np.nanmean(g, axis=0), np.nanstd(g, axis=0, ddof=1)
    n_subj = None if subjects is None else int(len(np.unique(np.asarray(subjects))))
    return Reference(mean, sd, gm, gs, int(a.shape[0]), n_subj)


def _pick(table: dict[str, np.ndarray], sides, n: int) -> np.ndarray:
    """Stacks the reference entry of each stride's side -> [N, ...]."""
    keys = _keys(sides, n)
    if _ANY in table:
        keys = np.full(n, _ANY)
    missing = set(keys) - set(table)
    if missing:
        raise ValueError(f"reference has no entry for stride side(s) {sorted(missing)}")
    return np.stack([table[k] for k in keys]) if n else np.zeros((0,) + next(iter(table.values())).shape)


def reference_mean(ref: Reference, sides, n: int) -> np.ndarray:
    """The population mean curve matching each stride's side -> [N, T, J, C]."""
    return _pick(ref.mean_tjc, sides, n)


def gvs_joint(ref: Reference, angles_ntjc, sides=None) -> np.ndarray:
    """Per-joint GVS (degrees, planes pooled) of each stride -> [N, J]."""
    a = np.asarray(angles_ntjc, float)
    return pool(gvs_jc(a, reference_mean(ref, sides, a.shape[0])), axis=-1)


def gps(ref: Reference, angles_ntjc, sides=None) -> np.ndarray:
    """Gait Profile Score (degrees) of each stride over all joints and planes -> [N]."""
    a = np.asarray(angles_ntjc, float)
    return pool(gvs_jc(a, reference_mean(ref, sides, a.shape[0])), axis=(-2, -1))


def zscores(ref: Reference, angles_ntjc, sides=None) -> np.ndarray:
    """Per-joint GVS as a z-score against the training GVS distribution -> [N, J]."""
    a = np.asarray(angles_ntjc, float)
    n = a.shape[0]
    g = gvs_joint(ref, a, sides)
    mu, sd = _pick(ref.gvs_mean_j, sides, n), _pick(ref.gvs_sd_j, sides, n)
    with _quiet():
        return (g - mu) / np.where(sd > 0, sd, np.nan)


def outside_fraction(ref: Reference, angles_ntjc, sides=None, *,
                     k_sd: float = ENVELOPE_K_SD) -> np.ndarray:
    """Per (stride, joint): the largest share, over planes, of the cycle outside mean +/- k SD."""
    a = np.asarray(angles_ntjc, float)
    n = a.shape[0]
    mu, sd = _pick(ref.mean_tjc, sides, n), _pick(ref.sd_tjc, sides, n)
    ok = ~np.isnan(a)
    out = (np.abs(a - mu) > k_sd * sd) & ok
    with _quiet():
        frac = out.sum(axis=1) / ok.sum(axis=1)  # [N, J, C]
    return np.nanmax(np.where(np.isnan(frac), -np.inf, frac), axis=-1).clip(min=0.0)


def envelope_flags(ref: Reference, angles_ntjc, sides=None, *, k_sd: float = ENVELOPE_K_SD,
                   max_outside: float = ENVELOPE_MAX_OUTSIDE) -> np.ndarray:
    """Flags a joint when more than `max_outside` of its cycle (any plane) leaves the band."""
    return outside_fraction(ref, angles_ntjc, sides, k_sd=k_sd) > max_outside


def zscore_flags(ref: Reference, angles_ntjc, sides=None, *, z: float = 2.0) -> np.ndarray:
    """Flags a joint when its GVS z-score exceeds `z`."""
    with _quiet():
        return zscores(ref, angles_ntjc, sides) > z


def population_mean_correction(ref: Reference, angles_ntjc, flags_nj, sides=None) -> np.ndarray:
    """Replaces each flagged joint by the population mean curve (the 'textbook' correction)."""
    a = np.asarray(angles_ntjc, float)
    mu = reference_mean(ref, sides, a.shape[0])
    f = np.asarray(flags_nj, bool)[:, None, :, None]
    return np.where(f, mu, a)


def chance(truth_nj, k: int = 1, *, seed: int = 0, draws: int = 200, subjects=None) -> dict:
    """Top-k accuracy of a random joint ranking: exact expectation and a seeded simulation."""
    out = metrics.chance_topk(truth_nj, k, subjects)
    out["simulated"] = metrics.chance_topk_simulated(truth_nj, k, seed=seed, draws=draws)
    return out
