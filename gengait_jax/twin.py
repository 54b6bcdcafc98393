"""Pass 2, the normative twin: the skeleton reconstructed with the abnormal parts withheld.

The withheld tokens (`withheld_npj`: per stride, time patch and joint; every invalid token is
withheld too) are hidden from the encoder and predicted by the decoder: what this body would
do there if it were normal. `gengait.GenGait.withheld` decides them from the trial decision:
every token of a flagged joint (`twin.withhold = "joint"`, the paper's pass 2), or only the
flagged joint's abnormal phases (`"phase"`: where its anomaly map exceeds the threshold, dilated
by a patch), so that the joint's own normal phases and its offset stay visible.

One compiled program (`jax.jit`, `jax.lax.map` over maskings) runs the full-context masking
and S random context maskings that also hide CONTEXT_HIDE of the visible tokens. The twin
is the full-context reconstruction on withheld frames and the observed values elsewhere
(`keep_observed`, the default; without it every joint comes from a masking that also hides
it, a vmap over J maskings like pass 1). The band's SD combines the SD over the S samples with
the healthy pass-1 residual SD of the calibration, in quadrature; 0 where observed values
are kept. `shrink_toward_observed` then keeps the observed curve of a withheld joint where it
stays within its healthy error of the estimate (only the abnormal phases and channels change).
"""

from __future__ import annotations

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gengait_jax import calibration, masking, scoring
from gengait_jax.model import GenGaitMAE

NUM_SAMPLES = 8
CONTEXT_HIDE = 0.25
MAX_BATCH = 16  # strides per compiled call
SHRINK_WINDOW = 20  # cycle points (the calibration's shape window); 0: the estimate replaces all
SHRINK_SCALE = 1.25  # the healthy error SD under-covers by ~this (band coverage 0.87 for 0.95)

_TRACES: collections.Counter = collections.Counter()


def trace_count() -> int:
    """How many times the pass-2 program has been traced (= compiled) in this process."""
    return _TRACES["pass2"]


@dataclasses.dataclass(frozen=True)
class Twin:
    """Pass-2 results (numpy) for N strides."""

    twin_ntjc: np.ndarray      # the normative twin (observed values kept where asked)
    recon_ntjc: np.ndarray     # full-context reconstruction with the withheld tokens hidden
    sd_ntjc: np.ndarray        # the band's SD (samples [+ healthy residual]); 0 where kept
    replaced_ntj: np.ndarray   # bool: frames where the twin is the reconstruction


def _visible(valid_bn: jax.Array, withheld_bn: jax.Array) -> jax.Array:
    """Encoder visibility: valid tokens that are not withheld."""
    return valid_bn & ~withheld_bn


def twin_samples(model: GenGaitMAE, x_btjc: jax.Array, valid_btj: jax.Array,
                 withheld_bn: jax.Array, key: jax.Array, num_samples: int,
                 per_joint: bool, hide: float = CONTEXT_HIDE) -> jax.Array:
    """[S + 1, B, T, J, C]: the full-context reconstruction, then random-context ones.

    With `per_joint`, joint j of every sample comes from a masking that also hides j's group
    (J maskings per sample, a vmap); else from the one masking of the withheld tokens."""
    valid_bn = masking.token_valid(valid_btj, model.patch)
    vis = _visible(valid_bn, withheld_bn)
    keep = jax.random.bernoulli(key, 1.0 - hide, (num_samples,) + valid_bn.shape)
    masks = jnp.concatenate([vis[None], vis[None] & keep])  # [S + 1, B, N]
    x = jnp.where(valid_btj[..., None], x_btjc, jnp.nan)
    n, p = valid_bn.shape[-1], model.num_patches

    def one(v: jax.Array) -> jax.Array:
        """One sample's reconstruction [B, T, J, C]."""
        if not per_joint:
            return model.reconstruct(x, v, n)
        hide_jj = masking.same_group(model.group_j[...], model.num_joints)
        v_jbn = v[None] & ~masking.joint_tokens(hide_jj, p)[:, None, :]
        rec = jax.vmap(lambda vv: model.reconstruct(x, vv, n - p))(v_jbn)  # [J, B, T, J, C]
        return jnp.moveaxis(jnp.diagonal(rec, axis1=0, axis2=3), -1, 2)

    return jax.lax.map(one, masks)  # samples in sequence: memory of one sample only


def _pass2(graphdef, state, x_btjc, valid_btj, withheld_bn, key, num_samples: int,
           per_joint: bool) -> dict:
    """The traced program: full-context reconstruction and the samples' SD."""
    _TRACES["pass2"] += 1
    model = nnx.merge(graphdef, state)
    rec = twin_samples(model, x_btjc, valid_btj, withheld_bn, key, num_samples, per_joint)
    samples = rec[1:] if num_samples >= 1 else rec
    return dict(recon_ntjc=rec[0], sd_ntjc=samples.std(0))


_PASS2 = jax.jit(_pass2, static_argnums=(0, 6, 7))


def token_withheld(withheld_npj: np.ndarray) -> np.ndarray:
    """[N, P, J] (patch x joint) -> the model's joint-major token layout [N, J * P]."""
    return np.transpose(np.asarray(withheld_npj, bool), (0, 2, 1)).reshape(
        len(withheld_npj), -1)


def frames_withheld(withheld_npj: np.ndarray, patch: int) -> np.ndarray:
    """[N, P, J] -> [N, T, J]: the frames of the withheld patches."""
    return np.repeat(np.asarray(withheld_npj, bool), patch, axis=1)


def normative_twin(model: GenGaitMAE, x_ntjc, valid_ntj, withheld_npj, *,
                   num_samples: int = NUM_SAMPLES, keep_observed: bool = True,
                   seed: int = 0) -> Twin:
    """Pass 2 for N strides (withheld_npj [N, P, J] bool), padded to a bucket like pass 1; the
    band's SD is the samples' (`with_healthy_prior` adds what the body cannot tell)."""
    x, valid = scoring.prepare(x_ntjc, valid_ntj)
    withheld = np.asarray(withheld_npj, bool)
    tokens = token_withheld(withheld)
    graphdef, state = nnx.split(model)
    n, size = len(x), scoring.bucket(len(x), MAX_BATCH)
    parts = []
    for start in range(0, n, size):
        sl = slice(start, start + size)
        pad = size - len(x[sl])
        xs = np.pad(x[sl], ((0, pad), (0, 0), (0, 0), (0, 0)), constant_values=np.nan)
        vs = np.pad(valid[sl], ((0, pad), (0, 0), (0, 0)))
        ws = np.pad(tokens[sl], ((0, pad), (0, 0)))
        key = jax.random.fold_in(jax.random.key(seed), start)
        out = jax.device_get(_PASS2(graphdef, state, xs, vs, ws, key, num_samples,
                                    not keep_observed))
        parts.append({k: np.asarray(v)[:size - pad] for k, v in out.items()})
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    frames = frames_withheld(withheld, model.patch)
    keep = valid & ~frames if keep_observed else np.zeros_like(valid)
    twin = np.where(keep[..., None], x, out["recon_ntjc"])
    sd = np.where(keep[..., None], 0.0, out["sd_ntjc"])
    return Twin(twin, out["recon_ntjc"], sd, ~keep)


def shrink_toward_observed(tw: Twin, x_ntjc: np.ndarray, window: int, scale: float) -> Twin:
    """The twin moved toward the observed curve where the two agree within the healthy error:
    twin + s (x - twin), s = v / max(m, v) per sample, v = (scale x band SD)^2 and m the mean
    square of x - twin over a centred window of `window` + 1 cycle points: the empirical-Bayes
    weight of an observation whose deviation d has m - v as its square (the estimate's error
    v, the deviation's d^2: s = v / (v + d^2)). A normal phase or channel of a withheld joint
    keeps its observed values (s = 1), an abnormal one gets the estimate (s -> 0). Samples
    not replaced, unobserved ones or with a zero band are left as they are; window 0: off."""
    if window <= 0:
        return tw
    x = np.asarray(x_ntjc, float)
    diff = x - tw.twin_ntjc
    v = (scale * tw.sd_ntjc) ** 2
    m = calibration.window_mean(diff ** 2, 2 * (window // 2) + 1, min_share=0.0)
    ok = tw.replaced_ntj[..., None] & np.isfinite(diff) & (v > 0) & np.isfinite(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(ok, v / np.maximum(m, v), 0.0)
    return dataclasses.replace(tw, twin_ntjc=tw.twin_ntjc + s * np.where(ok, diff, 0.0))


def with_healthy_prior(tw: Twin, x_ntjc: np.ndarray, healthy_sd, fusion: dict | None,
                       pair, scale=1.0) -> Twin:
    """The twin (all arrays in each joint's OWN cycle) with the calibration's healthy prior:
    where a withheld joint's contralateral twin is observed, the blend w * reconstruction +
    (1 - w) * (other side + healthy mean asymmetry) (`fusion`: `calibration.fusion_weights`,
    arrays broadcasting to [N, T, J, C]; the person's other side says what the body prior
    cannot), and the band's SD = the samples' SD (times w) and the healthy error SD of what
    replaced the joint (the reconstruction's `healthy_sd` x `scale`, or the blend's), in
    quadrature."""
    shape = tw.twin_ntjc.shape
    twin = tw.twin_ntjc.copy()
    weight = np.ones(shape)
    healthy = np.zeros(shape) if healthy_sd is None else \
        np.broadcast_to(np.nan_to_num(np.asarray(healthy_sd, float)) * scale, shape).copy()
    if fusion is not None:
        w, mu, sd_f = (np.broadcast_to(np.asarray(fusion[k], float), shape)
                       for k in ("weight", "mean_asym", "sd"))
        for j, pj in enumerate(pair):
            if pj < 0:
                continue
            ok = (tw.replaced_ntj[:, :, j] & ~tw.replaced_ntj[:, :, pj]
                  & np.isfinite(x_ntjc[:, :, pj]).all(-1))[..., None]
            est = x_ntjc[:, :, pj] + mu[:, :, j]
            twin[:, :, j] = np.where(ok, w[:, :, j] * twin[:, :, j] + (1 - w[:, :, j]) * est,
                                     twin[:, :, j])
            weight[:, :, j] = np.where(ok, w[:, :, j], 1.0)
            healthy[:, :, j] = np.where(ok, sd_f[:, :, j], healthy[:, :, j])
    sd = np.where(tw.replaced_ntj[..., None], np.sqrt((weight * tw.sd_ntjc) ** 2 + healthy ** 2),
                  0.0)
    return Twin(twin, tw.recon_ntjc, sd, tw.replaced_ntj)
