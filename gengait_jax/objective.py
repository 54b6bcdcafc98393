"""The training objective: mask mixture and masked MSE, pure functions of arrays and keys.

A batch is split into a random-token group and a whole-joint group by a fixed row pattern
(every `period` rows, the last `n_joint` go to the joint group). The pattern does not depend on
the mesh, so a sharded step computes exactly what a 1-device step does, and when the per-device
batch is a multiple of `period` the split is local to each device (no resharding).
Tokens that are not valid are never visible and never in the loss.
"""

from __future__ import annotations

import fractions

import jax
import jax.numpy as jnp
import ml_collections

from gengait_jax import augment, masking
from gengait_jax.model import GenGaitMAE, num_keep_for


def group_pattern(joint_fraction: float) -> tuple[int, int]:
    """(period, n_joint): the joint group is n_joint of every period rows (~joint_fraction)."""
    f = fractions.Fraction(joint_fraction).limit_denominator(8)
    if not 0 <= f <= 1:
        raise ValueError(f"mask.joint_fraction={joint_fraction} is not in [0, 1]")
    return f.denominator, f.numerator


def split_groups(x: jax.Array, period: int, n_joint: int) -> tuple[jax.Array, jax.Array]:
    """Rows of x [B, ...] -> (random group, joint group) by the fixed row pattern."""
    b = x.shape[0]
    if b % period:
        raise ValueError(f"batch {b} is not a multiple of the mask group period {period}")
    y = x.reshape(b // period, period, *x.shape[1:])
    cut = period - n_joint
    return (y[:, :cut].reshape(-1, *x.shape[1:]), y[:, cut:].reshape(-1, *x.shape[1:]))


def masked_sq_err(pred_bnd: jax.Array, target_bnd: jax.Array,
                  weight_bn: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum of per-token MSE over weighted tokens, number of weighted tokens)."""
    err_bn = jnp.mean(jnp.square(pred_bnd - target_bnd), axis=-1)
    return jnp.sum(jnp.where(weight_bn, err_bn, 0.0)), jnp.sum(weight_bn).astype(jnp.float32)


def prepare(model: GenGaitMAE, batch: dict) -> tuple[jax.Array, jax.Array]:
    """Normalized tokens [B, N, D] (invalid ones zeroed) and token validity [B, N]."""
    valid_bn = masking.token_valid(batch["valid"], model.patch)
    tokens_bnd = model.tokens(batch["angles"])
    return jnp.where(valid_bn[..., None], tokens_bnd, 0.0), valid_bn


def offset_augment(tokens_bnd: jax.Array, key: jax.Array, sd: float, num_joints: int,
                   patch: int) -> jax.Array:
    """Adds one random constant per (stride, joint, channel) to its tokens (normalized
    units): people and labs differ by offsets that no other joint predicts, so the model
    learns to read the body's shape, not its offsets."""
    b, n, d = tokens_bnd.shape
    c = d // patch
    off = sd * jax.random.normal(key, (b, num_joints, 1, 1, c))
    t = tokens_bnd.reshape(b, num_joints, n // num_joints, patch, c) + off
    return t.reshape(b, n, d)


def random_visible(keys: jax.Array, valid_bn: jax.Array, cfg: ml_collections.ConfigDict,
                   model: GenGaitMAE, num_keep: int) -> jax.Array:
    """Random-token (+ optional time block) masks, one key per row: [B, N] visible."""
    fn = lambda k, v: masking.random_mask(
        k, v, num_joints=model.num_joints, num_patches=model.num_patches, num_keep=num_keep,
        time_block_prob=cfg.mask.time_block_prob, max_block=cfg.mask.max_block)
    return jax.vmap(fn)(keys, valid_bn)


def joint_visible(keys: jax.Array, valid_bn: jax.Array, cfg: ml_collections.ConfigDict,
                  model: GenGaitMAE) -> jax.Array:
    """Whole-joint masks (1..max_hidden_joints joints hidden), one key per row: [B, N]."""
    fn = lambda k, v: masking.joint_mask(k, v, num_joints=model.num_joints,
                                         num_patches=model.num_patches,
                                         max_hidden=cfg.mask.max_hidden_joints,
                                         group_j=model.group_j[...])
    return jax.vmap(fn)(keys, valid_bn)


def random_query_rows(cfg: ml_collections.ConfigDict, model: GenGaitMAE, n: int) -> int:
    """Most hidden valid tokens a random-token mask leaves: N - K, or one whole time block
    (when fewer than K tokens lie outside the block, all of them are visible)."""
    block = model.num_joints * cfg.mask.max_block if cfg.mask.time_block_prob > 0 else 0
    return min(n, max(n - num_keep_for(cfg, n), block))


def joint_query_rows(cfg: ml_collections.ConfigDict, model: GenGaitMAE, max_group: int) -> int:
    """Most hidden tokens of a whole-joint mask: max_hidden_joints occlusion groups of at
    most max_group joints, every patch of each."""
    return model.num_patches * min(model.num_joints, cfg.mask.max_hidden_joints * max_group)


def _group_sums(model, tokens, valid, visible, num_keep, row_w, num_query=None):
    """Reconstruction sums of one group (row_w [B] zeroes padded rows).

    With num_query (at least the group's most hidden valid tokens per row), the decoder's last
    block and head compute only those rows, the hidden valid ones first: the same sums."""
    weight = valid & ~visible & row_w[:, None]
    if num_query is None or num_query >= tokens.shape[1]:
        return masked_sq_err(model(tokens, visible, num_keep), tokens, weight)
    rows = masking.keep_indices(weight, num_query)[0]
    pred = model(tokens, visible, num_keep, rows)
    return masked_sq_err(pred, masking.take_along(tokens, rows[..., None], axis=1),
                         masking.take_along(weight, rows, axis=1))


def mixture_loss(model: GenGaitMAE, batch: dict, key: jax.Array,
                 cfg: ml_collections.ConfigDict,
                 mirror_perm: tuple[int, ...] | None = None,
                 max_group: int | None = None) -> tuple[jax.Array, dict]:
    """Mean MSE over hidden, valid tokens of both groups (normalized units) and stats.

    With `cfg.augment` on, the batch is augmented first (`augment.augment`). The decoder
    computes only the rows the loss reads; `max_group` (the largest occlusion group, default
    every joint) bounds them in the joint group."""
    if augment.enabled(cfg):
        key, k_aug = jax.random.split(key)
        batch = augment.augment(batch, k_aug, cfg, mirror_perm)
    tokens, valid = prepare(model, batch)
    n = tokens.shape[1]
    if cfg.augment.get("offset_sd", 0.0) > 0:
        key, k_off = jax.random.split(key)
        tokens = jnp.where(valid[..., None], offset_augment(
            tokens, k_off, cfg.augment.offset_sd, model.num_joints, model.patch), 0.0)
    keys = jax.random.split(key, tokens.shape[0])
    period, n_joint = group_pattern(cfg.mask.joint_fraction)
    (tok_r, tok_j), (val_r, val_j), (key_r, key_j) = (
        split_groups(a, period, n_joint) for a in (tokens, valid, keys))
    total, count = jnp.zeros(()), jnp.zeros(())
    if tok_r.shape[0]:
        vis = random_visible(key_r, val_r, cfg, model, num_keep_for(cfg, n))
        s, c = _group_sums(model, tok_r, val_r, vis, num_keep_for(cfg, n),
                           jnp.ones(tok_r.shape[0], bool), random_query_rows(cfg, model, n))
        total, count = total + s, count + c
    if tok_j.shape[0]:
        vis = joint_visible(key_j, val_j, cfg, model)
        s, c = _group_sums(model, tok_j, val_j, vis, n - model.num_patches,
                           jnp.ones(tok_j.shape[0], bool),
                           joint_query_rows(cfg, model, max_group or model.num_joints))
        total, count = total + s, count + c
    return total / jnp.maximum(count, 1.0), {"hidden_tokens": count}


def eval_sums(model: GenGaitMAE, batch: dict, key: jax.Array,
              cfg: ml_collections.ConfigDict) -> dict:
    """Per-mask-type (sum, count) on every row: random, joint, and one-joint occlusion."""
    tokens, valid = prepare(model, batch)
    b, n = valid.shape
    row_w = batch["mask"].astype(bool)
    k_r, k_j = jax.random.split(key)
    vis_r = random_visible(jax.random.split(k_r, b), valid, cfg, model, num_keep_for(cfg, n))
    vis_j = joint_visible(jax.random.split(k_j, b), valid, cfg, model)
    out = {"random": _group_sums(model, tokens, valid, vis_r, num_keep_for(cfg, n), row_w),
           "joint": _group_sums(model, tokens, valid, vis_j, n - model.num_patches, row_w)}
    if cfg.eval_occlusion:  # pass 1 of detection: hide each joint in turn
        vis_jbn = masking.occlusion_masks(valid, model.num_joints, model.group_j[...])
        sums = jax.lax.map(lambda v: _group_sums(model, tokens, valid, v,
                                                 n - model.num_patches, row_w), vis_jbn)
        out["occlusion"] = (sums[0].sum(), sums[1].sum())
    return out
