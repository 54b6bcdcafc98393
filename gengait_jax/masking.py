"""Token layout and masks: pure functions of arrays and keys.

A token is one joint over `patch` consecutive frames. Tokens are laid out joint-major:
token n = j * num_patches + p, so the tokens of joint j are the contiguous block
[j * num_patches, (j + 1) * num_patches). `visible_bn` says which tokens the encoder sees;
every other token is hidden and reconstructed by the decoder.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def patchify(x_btjc: jax.Array, patch: int) -> jax.Array:
    """[B, T, J, C] -> tokens [B, J * T/patch, patch * C] (joint-major)."""
    b, t, j, c = x_btjc.shape
    x = x_btjc.reshape(b, t // patch, patch, j, c)
    x = jnp.transpose(x, (0, 3, 1, 2, 4))  # b j p patch c
    return x.reshape(b, j * (t // patch), patch * c)


def unpatchify(tokens_bnd: jax.Array, num_joints: int, patch: int) -> jax.Array:
    """Inverse of `patchify`: tokens [B, N, patch * C] -> [B, T, J, C]."""
    b, n, d = tokens_bnd.shape
    num_patches, c = n // num_joints, d // patch
    x = tokens_bnd.reshape(b, num_joints, num_patches, patch, c)
    x = jnp.transpose(x, (0, 2, 3, 1, 4))  # b p patch j c
    return x.reshape(b, num_patches * patch, num_joints, c)


def token_valid(valid_btj: jax.Array, patch: int) -> jax.Array:
    """A token is valid when all its frames are valid: [B, T, J] -> [B, N]."""
    b, t, j = valid_btj.shape
    v = valid_btj.reshape(b, t // patch, patch, j).all(axis=2)  # b p j
    return jnp.transpose(v, (0, 2, 1)).reshape(b, j * (t // patch))


def joint_tokens(joints_bj: jax.Array, num_patches: int) -> jax.Array:
    """Expands a per-joint boolean [B, J] to its tokens [B, N]."""
    return jnp.repeat(joints_bj, num_patches, axis=-1)


def inverse_permutation(perm: jax.Array) -> jax.Array:
    """inv[..., perm[..., i]] = i for permutations along the last axis (a scatter: 10-17x
    faster than a second argsort on XLA:CPU)."""
    n = perm.shape[-1]
    iota = jnp.broadcast_to(jnp.arange(n, dtype=perm.dtype), perm.shape)
    rows = jnp.indices(perm.shape[:-1], sparse=True)
    return jnp.zeros_like(perm).at[(*(r[..., None] for r in rows), perm)].set(
        iota, unique_indices=True)


def take_along(a: jax.Array, idx: jax.Array, axis: int) -> jax.Array:
    """jnp.take_along_axis for indices in range by construction (every caller's): no bounds
    mask. The default mode ("fill") selects NaN where an index is out of range, in the result
    and, as a masked scatter, in the gradient: the `demo` train step 5 % slower (BUILD_NOTES
    "Performance")."""
    return jnp.take_along_axis(a, idx, axis=axis, mode="promise_in_bounds")


def keep_indices(visible_bn: jax.Array, num_keep: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Visible tokens first (in order), then hidden ones.

    Returns keep_idx [B, K] (the first K of that order), keep_valid [B, K] (False on padding
    slots, which point at hidden tokens) and restore_idx [B, N] that undoes the order (each
    token's slot, from running counts: no sort).
    Raises nothing in jit: callers guarantee at most `num_keep` visible tokens per row.
    """
    n_vis = jnp.cumsum(visible_bn, axis=-1, dtype=jnp.int32)
    n_hid = jnp.cumsum(~visible_bn, axis=-1, dtype=jnp.int32)
    total = n_vis[..., -1:]
    restore_bn = jnp.where(visible_bn, n_vis - 1, total + n_hid - 1)
    keep_idx = inverse_permutation(restore_bn)[..., :num_keep]
    return keep_idx, jnp.arange(num_keep) < total, restore_bn


def random_tokens(key: jax.Array, valid_n: jax.Array, num_keep: int) -> jax.Array:
    """Exactly min(num_keep, #valid) random valid tokens visible: [N] bool."""
    noise = jax.random.uniform(key, valid_n.shape)
    noise = jnp.where(valid_n, noise, 2.0)  # invalid tokens sort last, never kept
    # The num_keep smallest (ties: the lower index, as a stable argsort): XLA:CPU's TopK is
    # ~3x faster than a sort of the whole row (BUILD_NOTES "Performance").
    _, keep = jax.lax.top_k(-noise, min(num_keep, noise.shape[-1]))
    return jnp.zeros(valid_n.shape, bool).at[keep].set(True) & valid_n


def time_block(key: jax.Array, num_joints: int, num_patches: int, max_len: int) -> jax.Array:
    """Hides one block of 1..max_len consecutive patches on every joint: [N] bool visible."""
    k_len, k_start = jax.random.split(key)
    length = jax.random.randint(k_len, (), 1, max_len + 1)
    start = jax.random.randint(k_start, (), 0, num_patches - length + 1)
    p = jnp.arange(num_patches)
    hidden_p = (p >= start) & (p < start + length)
    return jnp.tile(~hidden_p, num_joints)


def hidden_joints(key: jax.Array, num_joints: int, max_hidden: int) -> jax.Array:
    """Picks 1..max_hidden distinct joints: [J] bool (True = hidden)."""
    k_n, k_perm = jax.random.split(key)
    count = jax.random.randint(k_n, (), 1, max_hidden + 1)
    rank = jnp.argsort(jax.random.uniform(k_perm, (num_joints,)))
    return rank < count


def random_mask(key: jax.Array, valid_n: jax.Array, *, num_joints: int, num_patches: int,
                num_keep: int, time_block_prob: float, max_block: int) -> jax.Array:
    """Random-token training mask (optionally with a time block): [N] bool visible."""
    k_use, k_block, k_rand = jax.random.split(key, 3)
    block = time_block(k_block, num_joints, num_patches, max_block)
    use_block = jax.random.bernoulli(k_use, time_block_prob)
    candidates = valid_n & jnp.where(use_block, block, True)
    return random_tokens(k_rand, candidates, num_keep)


def same_group(group_j: jax.Array | None, num_joints: int) -> jax.Array:
    """[J, J] bool: joints j and k share an occlusion group (identity without groups)."""
    if group_j is None:
        return jnp.eye(num_joints, dtype=bool)
    return group_j[:, None] == group_j[None, :]


def largest_group(group_j) -> int:
    """Joints in the largest occlusion group (host-side, from concrete group ids [J])."""
    return int(np.unique(np.asarray(group_j), return_counts=True)[1].max())


def with_groups(hidden_bj: jax.Array, group_j: jax.Array | None) -> jax.Array:
    """Hidden joints [..., J] extended to every joint of their occlusion groups."""
    if group_j is None:
        return hidden_bj
    return (hidden_bj[..., None, :] & same_group(group_j, hidden_bj.shape[-1])).any(-1)


def joint_mask(key: jax.Array, valid_n: jax.Array, *, num_joints: int, num_patches: int,
               max_hidden: int, group_j: jax.Array | None = None) -> jax.Array:
    """Whole-joint training mask (1..max_hidden joints and their groups hidden): [N] bool."""
    hidden_j = with_groups(hidden_joints(key, num_joints, max_hidden), group_j)
    return valid_n & ~joint_tokens(hidden_j, num_patches)


def occlusion_masks(valid_bn: jax.Array, num_joints: int,
                    group_j: jax.Array | None = None) -> jax.Array:
    """Pass-1 masks: for every joint j, all valid tokens except those of j's group: [J, B, N].

    An occlusion group holds joints that are one signal (Plug-in-Gait reports the pelvis once
    per side, the same angles up to sign): hiding one of them alone would let the model copy it.
    """
    num_patches = valid_bn.shape[-1] // num_joints
    hide_jj = same_group(group_j, num_joints)
    return valid_bn[None] & ~joint_tokens(hide_jj, num_patches)[:, None, :]
