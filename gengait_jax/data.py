"""Strides as arrays: ONE type for a set of strides, one loader from a TFDS split, and the
train-split references (normalization statistics, mean curves, occlusion groups) computed once.

Side encoding everywhere: `side` is 'L' or 'R' per stride ('' when unknown); `left` is derived.
`x` holds the stride values ([N, T, J, C]: angles in degrees, or positions in mm) with NaN
where `valid` is False, so every consumer can rely on either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

import tfds_gait  # noqa: F401  (registers the gait_cycles builder)
from tfds_gait import gait_cycles, skeleton
from tfds_gait import joints as joints_lib
from tfds_gait.errors import GaitDataError

_META_FIELDS = ("side", "subject", "trial", "cohort", "age_group")
# Per modality (a TFDS feature of gait_cycles): its validity feature and its joint set.
VALID_FEATURE = {"angles": "valid", "positions": "positions_valid"}
JOINT_SET_OF = {"angles": gait_cycles.JOINT_SET, "positions": skeleton.JOINT_SET}


@dataclasses.dataclass(frozen=True)
class Strides:
    """N strides of one joint set: values, validity and per-stride metadata."""

    x: np.ndarray                 # [N, T, J, C] float32, NaN where invalid
    valid: np.ndarray             # [N, T, J] bool
    side: np.ndarray              # [N] 'L' / 'R' / ''
    subject: np.ndarray           # [N] str
    trial: np.ndarray             # [N] str (recording)
    cohort: np.ndarray            # [N] str
    age_group: np.ndarray         # [N] str
    foot_off_pct: np.ndarray      # [N] float, NaN when unknown
    joint_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.x)

    @property
    def left(self) -> np.ndarray:
        """[N] bool: the stride is a left one."""
        return self.side == "L"

    @property
    def shape(self) -> dict[str, int]:
        """num_frames / num_joints / num_channels of one stride."""
        _, t, j, c = self.x.shape
        return dict(num_frames=int(t), num_joints=int(j), num_channels=int(c))

    def take(self, index) -> "Strides":
        """The strides at `index` (indices or a boolean mask)."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name)[index]
                                            for f in dataclasses.fields(self)
                                            if f.name != "joint_names"})

    def replace(self, **changes) -> "Strides":
        """A copy with some fields replaced (x re-masked by valid)."""
        out = dataclasses.replace(self, **changes)
        return dataclasses.replace(out, x=mask(out.x, out.valid))


def mask(x, valid) -> np.ndarray:
    """float32 values with NaN wherever `valid` is False or the value is not finite."""
    x = np.asarray(x, np.float32)
    ok = np.asarray(valid, bool) & np.isfinite(x).all(-1)
    return np.where(ok[..., None], x, np.nan).astype(np.float32)


def from_arrays(x, valid=None, *, side=None, subject=None, trial=None, cohort=None,
                age_group=None, foot_off_pct=None,
                joint_names: Sequence[str] | None = None) -> Strides:
    """Strides from arrays; missing metadata is filled ('' / NaN), validity from finiteness."""
    x = np.asarray(x, np.float32)
    if x.ndim != 4:
        raise ValueError(f"strides have shape {x.shape}; expected [N, T, J, C]")
    n, _, j, _ = x.shape
    v = np.isfinite(x).all(-1) if valid is None else (np.asarray(valid, bool)
                                                      & np.isfinite(x).all(-1))
    text = lambda a: np.full(n, "", dtype=object) if a is None else np.asarray(a).astype(str)
    names = tuple(joint_names) if joint_names is not None else tuple(f"j{i}" for i in range(j))
    return Strides(x=mask(x, v), valid=v, side=text(side), subject=text(subject),
                   trial=text(trial), cohort=text(cohort), age_group=text(age_group),
                   foot_off_pct=np.full(n, np.nan) if foot_off_pct is None
                   else np.asarray(foot_off_pct, float), joint_names=names)


def concat(parts: Sequence[Strides]) -> Strides:
    """Strides of several sets in order (one joint set)."""
    first = parts[0]
    return dataclasses.replace(first, **{f.name: np.concatenate([getattr(p, f.name)
                                                                  for p in parts])
                                         for f in dataclasses.fields(first)
                                         if f.name != "joint_names"})


def _text(v) -> str:
    """A TFDS text field as str."""
    return v.decode() if isinstance(v, bytes) else str(v)


def load_split(name: str, split: str, data_dir: str, modality: str = "angles") -> Strides:
    """A prepared TFDS split ('train', 'train+validation', ...) as Strides, read with
    tfds.data_source (array_record, no TensorFlow)."""
    src = tfds.data_source(name, split=split, data_dir=data_dir)
    rows = [src[i] for i in range(len(src))]
    if not rows:
        raise GaitDataError(f"{name}:{split}", "the split is empty")
    if modality not in rows[0]:
        raise GaitDataError(f"{name}:{split}", f"no '{modality}' feature (features: "
                                               f"{', '.join(sorted(rows[0]))})")
    x = np.stack([np.asarray(r[modality], np.float32) for r in rows])
    valid = np.stack([np.asarray(r[VALID_FEATURE[modality]], bool) for r in rows])
    meta = {k: np.array([_text(r.get(k, b"")) for r in rows], dtype=object) for k in _META_FIELDS}
    names = joints_lib.joint_names(JOINT_SET_OF[modality])
    if x.shape[2] != len(names):
        raise GaitDataError(f"{name}:{split}", f"'{modality}' has {x.shape[2]} joints, the "
                                               f"{JOINT_SET_OF[modality]} set {len(names)}")
    return Strides(x=mask(x, valid), valid=valid, **meta,
                   foot_off_pct=np.array([float(r.get("foot_off_pct", np.nan)) for r in rows]),
                   joint_names=names)


def sided(joint_names: Sequence[str]) -> bool:
    """Whether some joints belong to a side ('L' / 'R' prefix, as `roll_of` reads them): then
    every stride needs its side (the own-cycle layout, the left-right comparisons)."""
    return any(n[:1] in joints_lib.SIDES for n in joint_names)


def roll_of(joint_names: Sequence[str], side: str, num_points: int) -> np.ndarray:
    """[J] time shift that brings each joint of a stride of `side` into its own gait cycle:
    the other side's joints start half a cycle later (0 for joints without a side prefix, and
    for every joint of a stride whose side is unknown)."""
    other = [n[:1] in joints_lib.SIDES and side in joints_lib.SIDES and n[:1] != side
             for n in joint_names]
    return np.where(other, -(num_points // 2), 0).astype(int)


def to_own_phase(a_ntj, sides, joint_names: Sequence[str], inverse: bool = False) -> np.ndarray:
    """Per-stride arrays [N, T, J, ...] (values, validity, residuals) in each joint's own
    cycle, or back to the strides' layout with `inverse`."""
    a = np.asarray(a_ntj)
    n, t = a.shape[:2]
    shift = np.stack([roll_of(joint_names, str(s), t) for s in np.asarray(sides)]) if n else \
        np.zeros((0, a.shape[2]), int)
    shift = -shift if inverse else shift
    idx = (np.arange(t)[None, :, None] - shift[:, None, :]) % t  # out[t] = in[t - shift]
    idx = idx.reshape(idx.shape + (1,) * (a.ndim - 3))
    return np.take_along_axis(a, np.broadcast_to(idx, a.shape), axis=1)


def own_phase(strides: Strides) -> Strides:
    """The strides with every joint in its own gait cycle (the model's own-phase layout)."""
    return dataclasses.replace(strides, x=to_own_phase(strides.x, strides.side,
                                                       strides.joint_names),
                               valid=to_own_phase(strides.valid, strides.side,
                                                  strides.joint_names))


def folds(strides: Strides, k: int) -> np.ndarray:
    """[N] fold (0..k-1) of every stride, by subject: the subjects of each cohort are dealt
    round-robin in a fixed hashed order, so every fold holds people of every cohort that
    has k or more (the out-of-fold calibration's folds)."""
    if k < 2:
        raise ValueError(f"{k} folds: at least 2 are needed")
    pairs = sorted(set(zip(strides.cohort.tolist(), strides.subject.tolist())),
                   key=lambda cs: (cs[0], hashlib.sha256(cs[1].encode()).hexdigest()))
    if len(pairs) < k:
        raise ValueError(f"{len(pairs)} subjects cannot make {k} subject-disjoint folds")
    of = {subject: i % k for i, (_, subject) in enumerate(pairs)}
    return np.array([of[s] for s in strides.subject.tolist()], int)


# ----------------------------------------------------------------------------- references

def stats(strides: Strides) -> tuple[np.ndarray, np.ndarray]:
    """Per (joint, channel) mean and SD over the valid samples: float32 [J, C] each."""
    w = strides.valid[..., None].astype(np.float64)
    x = np.nan_to_num(strides.x.astype(np.float64))
    n = np.maximum(w.sum(axis=(0, 1)), 1.0)
    mean = (x * w).sum(axis=(0, 1)) / n
    var = (((x - mean) ** 2) * w).sum(axis=(0, 1)) / n
    return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def occlusion_groups(x_stjc: np.ndarray, rtol: float = 1e-4) -> np.ndarray:
    """[J] group ids: joints whose every channel is the same signal up to sign on all strides
    (NaN = invalid) share a group, e.g. Plug-in-Gait's LPelvis and RPelvis."""
    j = x_stjc.shape[2]
    group = np.arange(j)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scale = np.nanstd(x_stjc, axis=(0, 1)) + 1e-6  # [J, C]
    for a in range(j):
        for b in range(a + 1, j):
            both = np.isfinite(x_stjc[:, :, a]).all(-1) & np.isfinite(x_stjc[:, :, b]).all(-1)
            if group[b] != b or not both.any():
                continue
            xa, xb = x_stjc[:, :, a][both], x_stjc[:, :, b][both]  # [n, C]
            tol = rtol * np.maximum(scale[a], scale[b])
            tied = (np.abs(xa - xb).max(0) <= tol) | (np.abs(xa + xb).max(0) <= tol)
            if tied.all():
                group[b] = group[a]
    return group.astype(np.int32)


def mean_curves(strides: Strides) -> np.ndarray:
    """[2, T, J, C] mean over finite values of the left, then right strides (a side without
    strides takes the mean of all strides; NaN where no stride has a value, which
    `GenGaitMAE.set_curves` turns into the joint's mean)."""
    out = []
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for keep in (strides.left, ~strides.left):
            out.append(np.nanmean(strides.x[keep] if keep.any() else strides.x, axis=0))
    return np.stack(out).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class References:
    """What the model takes from its training strides (computed once, saved in the meta)."""

    mean_jc: np.ndarray
    std_jc: np.ndarray
    curves_stjc: np.ndarray | None   # mean curves of left and right strides
    groups_j: np.ndarray             # occlusion group per joint
    prior_w: np.ndarray | None = None  # the model's linear prior (`linear_prior`)
    prior_b: np.ndarray | None = None


def model_tokens(strides: Strides, mean_jc, std_jc, curves_stjc, patch: int) -> np.ndarray:
    """The model's input tokens of strides [N, J, P, patch, C] (numpy twin of
    `GenGaitMAE.tokens`: normalized deviation from the closer mean curve, invalid -> 0)."""
    z = (strides.x - mean_jc) / np.maximum(std_jc, 1e-3)
    if curves_stjc is not None:
        c = np.nan_to_num((curves_stjc - mean_jc) / np.maximum(std_jc, 1e-3))
        d = np.stack([np.where(np.isfinite(z), (np.nan_to_num(z) - ci) ** 2, 0).sum((1, 2, 3))
                      for ci in c], -1)
        z = z - c[np.argmin(d, -1)]
    n, t, j, ch = z.shape
    return np.nan_to_num(z).reshape(n, t // patch, patch, j, ch).transpose(0, 3, 1, 2, 4)


def linear_prior(tokens_njpqc: np.ndarray, groups_j: np.ndarray,
                 lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Per joint, ridge regression (penalty lam x n) from the patch means of the other
    occlusion groups' tokens to the joint's tokens: (W [J, J*P*C, P*patch*C], b [J, ...])."""
    n, j, p, q, c = tokens_njpqc.shape
    f = tokens_njpqc.mean(3)  # [n, J, P, C]
    ws, bs = [], []
    for jj in range(j):
        keep = (np.asarray(groups_j) != groups_j[jj])[None, :, None, None]
        a = (f * keep).reshape(n, -1).astype(np.float64)
        y = tokens_njpqc[:, jj].reshape(n, -1).astype(np.float64)
        ma, my = a.mean(0), y.mean(0)
        a0 = a - ma
        w = np.linalg.solve(a0.T @ a0 + lam * n * np.eye(a.shape[1]), a0.T @ (y - my))
        ws.append(w)
        bs.append(my - ma @ w)
    return np.stack(ws).astype(np.float32), np.stack(bs).astype(np.float32)


def references(strides: Strides, with_curves: bool = True, patch: int | None = None,
               prior_lambda: float | None = None) -> References:
    """Normalization statistics, mean curves, occlusion groups of training strides and, with
    `prior_lambda`, the linear prior of a model of `patch`-frame tokens."""
    mean, std = stats(strides)
    curves = mean_curves(strides) if with_curves else None
    groups = occlusion_groups(strides.x)
    w = b = None
    if prior_lambda is not None:
        w, b = linear_prior(model_tokens(strides, mean, std, curves, patch), groups,
                            prior_lambda)
    return References(mean, std, curves, groups, w, b)
