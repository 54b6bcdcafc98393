"""Pass 2, the normative twin: the whole skeleton reconstructed without the flagged joints.

Every token of a flagged joint (and every invalid token) is withheld from the encoder, and the
decoder predicts them: what this body would do with normal flagged joints. An MAE is only
trained on hidden tokens, so an unflagged joint's own curve comes from a masking that also
hides it (flagged joints + joint j; for a flagged joint that is the flagged-only masking):
a vmap over J maskings, like pass 1. One compiled program (`jax.jit` of `jax.vmap`) runs them
with the full context and with S random context maskings that also hide CONTEXT_HIDE of the
remaining tokens. The twin is the full-context reconstruction (BUILD_NOTES "Normative twin":
as accurate as the sample mean, and deterministic); the band's SD combines the SD over the S
others with the healthy residual SD of the calibration (the samples alone are far too narrow).
With `keep_observed` (default) the twin keeps the observed values of unflagged joints on
valid frames (band 0 there) and fills their invalid frames.
"""

from __future__ import annotations

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gengait_jax import masking, scoring
from gengait_jax.model import GenGaitMAE

NUM_SAMPLES = 8
CONTEXT_HIDE = 0.25
MAX_BATCH = 16  # strides per compiled call (x J maskings x samples)

_TRACES: collections.Counter = collections.Counter()


def trace_count() -> int:
    """How many times the pass-2 program has been traced (= compiled) in this process."""
    return _TRACES["pass2"]


@dataclasses.dataclass(frozen=True)
class Twin:
    """Pass-2 results (numpy) for N strides."""

    twin_ntjc: np.ndarray      # the normative twin (observed values kept where asked)
    recon_ntjc: np.ndarray     # full-context reconstruction (flagged joints withheld)
    mean_ntjc: np.ndarray      # mean of the random-context reconstructions
    sd_ntjc: np.ndarray        # the band's SD (samples [+ healthy residual]); 0 where kept
    replaced_ntj: np.ndarray   # bool: frames where the twin is the reconstruction


def twin_masks(valid_bn: jax.Array, flagged_bj: jax.Array, num_patches: int,
               group_j: jax.Array | None = None) -> jax.Array:
    """[J, B, N] encoder visibility: valid tokens, minus the flagged joints (already extended
    to their occlusion groups by `normative_twin`) and joint j's group."""
    j = flagged_bj.shape[-1]
    hide_jbj = flagged_bj[None] | masking.same_group(group_j, j)[:, None, :]
    return valid_bn[None] & ~masking.joint_tokens(hide_jbj, num_patches)


def twin_samples(model: GenGaitMAE, x_btjc: jax.Array, valid_btj: jax.Array,
                 flagged_bj: jax.Array, key: jax.Array, num_samples: int,
                 hide: float = CONTEXT_HIDE) -> jax.Array:
    """[S + 1, B, T, J, C]: full-context reconstruction first, then random-context ones.

    Joint j comes from the masking that hides the flagged joints and j itself (an MAE only
    learns to predict hidden tokens), so for a flagged joint it is the flagged-only masking.
    """
    valid_bn = masking.token_valid(valid_btj, model.patch)
    vis_jbn = twin_masks(valid_bn, flagged_bj, model.num_patches, model.group_j[...])
    keep = jax.random.bernoulli(key, 1.0 - hide, (num_samples, 1) + valid_bn.shape)
    masks = jnp.concatenate([vis_jbn[None], vis_jbn[None] & keep])  # [S + 1, J, B, N]
    x = jnp.where(valid_btj[..., None], x_btjc, jnp.nan)
    num_keep = valid_bn.shape[-1] - model.num_patches

    def one(vis: jax.Array) -> jax.Array:
        """The J maskings of one sample (vmap), joint j taken from masking j."""
        rec = jax.vmap(lambda v: model.reconstruct(x, v, num_keep))(vis)  # [J, B, T, J, C]
        return jnp.moveaxis(jnp.diagonal(rec, axis1=0, axis2=3), -1, 2)

    return jax.lax.map(one, masks)  # samples in sequence: memory of J maskings only


def _pass2(graphdef, state, x_btjc, valid_btj, flagged_bj, key, num_samples: int) -> dict:
    """The traced program: full-context reconstruction, sample mean and SD."""
    _TRACES["pass2"] += 1
    model = nnx.merge(graphdef, state)
    rec = twin_samples(model, x_btjc, valid_btj, flagged_bj, key, num_samples)
    samples = rec[1:] if num_samples >= 1 else rec
    return dict(recon_ntjc=rec[0], mean_ntjc=samples.mean(0), sd_ntjc=samples.std(0))


_PASS2 = jax.jit(_pass2, static_argnums=(0, 6))


def normative_twin(model: GenGaitMAE, x_ntjc, valid_ntj, flagged_nj, *,
                   num_samples: int = NUM_SAMPLES, keep_observed: bool = True,
                   residual_sd_tjc=None, seed: int = 0) -> Twin:
    """Pass 2 for N strides (flagged_nj [N, J] bool), padded to a bucket like pass 1.

    `residual_sd_tjc` (the calibration's healthy pass-1 residual SD) is added in quadrature
    to the sample SD, so the band also holds what the body cannot tell about a joint.
    """
    x, valid = scoring.prepare(x_ntjc, valid_ntj)
    flagged = np.asarray(masking.with_groups(jnp.asarray(flagged_nj, bool), model.group_j[...]))
    graphdef, state = nnx.split(model)
    n, size = len(x), scoring.bucket(len(x), MAX_BATCH)
    parts = []
    for start in range(0, n, size):
        sl = slice(start, start + size)
        pad = size - len(x[sl])
        xs = np.pad(x[sl], ((0, pad), (0, 0), (0, 0), (0, 0)), constant_values=np.nan)
        vs = np.pad(valid[sl], ((0, pad), (0, 0), (0, 0)))
        fs = np.pad(flagged[sl], ((0, pad), (0, 0)))
        key = jax.random.fold_in(jax.random.key(seed), start)
        out = jax.device_get(_PASS2(graphdef, state, xs, vs, fs, key, num_samples))
        parts.append({k: np.asarray(v)[:size - pad] for k, v in out.items()})
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    keep = valid & ~flagged[:, None, :] if keep_observed else np.zeros_like(valid)
    twin = np.where(keep[..., None], x, out["recon_ntjc"])
    sd = out["sd_ntjc"]
    if residual_sd_tjc is not None:
        sd = np.sqrt(sd ** 2 + np.nan_to_num(np.asarray(residual_sd_tjc, float)) ** 2)
    sd = np.where(keep[..., None], 0.0, sd)
    return Twin(twin, out["recon_ntjc"], out["mean_ntjc"], sd, ~keep)
