"""The GenGait masked autoencoder (Flax NNX).

The encoder sees only the visible tokens (gathered into K slots, padding masked out of
attention; with factorized attention and most tokens visible, on the token grid with the
hidden ones masked out as keys); a light decoder runs over all N tokens, hidden ones replaced
by a shared mask token, and predicts every token. The model is agnostic to what the C
channels mean: it normalizes each (joint, channel) with statistics of the training split that
it carries as non-trainable variables, so callers work in physical units (degrees, mm, ...).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from gengait_jax import masking

# Factorized attention only (BUILD_NOTES "Pass 1 on the token grid"): the encoder runs on the
# whole token grid, not on K gathered slots, when K >= this share of the N tokens (pass 1's
# one-joint masks: 0.9; the random training masks: 0.25); and a block that computes only Q
# query rows gathers each row's keys when Q <= this share of N (pass 1: Q = N / J).
GRID_ENCODER_SHARE = 0.75
QUERY_ROWS_SHARE = 0.25


class Stat(nnx.Variable):
    """Non-trainable normalization statistic, saved with the checkpoint."""


def attention_implementation(requested: str, backend: str, dtype, head_dim: int) -> str:
    """How Block attends: "auto" takes cuDNN's fused (flash) kernel on GPU where it applies
    (bfloat16/float16, head width a multiple of 8 up to 128) and the einsum attention elsewhere;
    "einsum" / "cudnn" force one (cuDNN off GPU is a one-line error)."""
    fits = (backend == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
            and head_dim % 8 == 0 and head_dim <= 128)
    if requested == "auto":
        return "cudnn" if fits else "einsum"
    if requested == "einsum":
        return "einsum"
    if requested == "cudnn":
        if backend != "gpu":
            raise ValueError(f"model.attention='cudnn' needs a GPU (backend: {backend})")
        return "cudnn"
    raise ValueError(f"model.attention={requested!r}: one of 'auto', 'einsum', 'cudnn'")


def _product(x: jax.Array, w: jax.Array) -> jax.Array:
    """x @ w over x's last axis."""
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


@jax.custom_vjp
def dense_product(x: jax.Array, w: jax.Array) -> jax.Array:
    """A dense layer's product x @ w; its weight gradient a plain GEMM (`_dense_product_bwd`)."""
    return _product(x, w)


def _dense_product_fwd(x: jax.Array, w: jax.Array) -> tuple[jax.Array, tuple]:
    """The product and its residuals."""
    return _product(x, w), (x, w)


def _dense_product_bwd(res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple:
    """Input gradient g @ w.T; weight gradient x.T @ g as a GEMM of a transposed copy of x.
    Left to autodiff, XLA:CPU computes it as a dot contracting both operands' row axis and
    lays g out transposed for it: a non-YNN dot at about half the speed, plus the transpose
    (BUILD_NOTES "Performance")."""
    x, w = res
    dx = jax.lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())))
    x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    return dx, jax.lax.optimization_barrier(x2.T) @ g2


dense_product.defvjp(_dense_product_fwd, _dense_product_bwd)


def cpu_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None,
                    preferred_element_type=None, out_sharding=None) -> jax.Array:
    """jax.lax.dot_general, with a dense layer's plain product as `dense_product`."""
    plain = (dimension_numbers == (((lhs.ndim - 1,), (0,)), ((), ())) and rhs.ndim == 2
             and precision is None and preferred_element_type is None and out_sharding is None)
    if plain:
        return dense_product(lhs, rhs)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type,
                               out_sharding=out_sharding)


def dense_dot_general(backend: str):
    """nnx.Linear's dot_general for `backend`: `cpu_dot_general` on CPU, jax.lax.dot_general
    elsewhere (GPU / TPU libraries take transposed operands as they are)."""
    return cpu_dot_general if backend == "cpu" else jax.lax.dot_general


def linear(din: int, dout: int, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    """A dense layer with the backend's `dense_dot_general`."""
    return nnx.Linear(din, dout, dtype=dtype, rngs=rngs,
                      dot_general=dense_dot_general(jax.default_backend()))


def _softmax_product(logits: jax.Array, keep: jax.Array | None, v: jax.Array, spec: str,
                     rows: tuple[int, ...] | None = None) -> jax.Array:
    """Softmax over the last axis of float32 `logits` (keys where `keep` is False ignored), then
    the product with the values (`spec`), normalized AFTER the product: the row sums divide the
    [..., D] result, not the [..., K] weights (`rows`: how the logits' row axes are permuted
    into the result's, if they are). The division is a product with the reciprocal sums written
    as an einsum, so that its gradient by the sums is a dot_general over D: as the transpose of
    a broadcast it was a reduction that XLA:CPU ran ~8x slower (BUILD_NOTES "Performance")."""
    if keep is not None:
        logits = jnp.where(keep, logits, jnp.finfo(jnp.float32).min)
    weights = jnp.exp(logits - jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True)))
    out = jnp.einsum(spec, weights.astype(v.dtype), v, preferred_element_type=jnp.float32)
    sums = weights.sum(axis=-1)
    return jnp.einsum("...d,...->...d", out, 1.0 / (sums if rows is None else
                                                    sums.transpose(rows)))


def attention(q_bqhd: jax.Array, k_bkhd: jax.Array, v_bkhd: jax.Array,
              kv_len_b: jax.Array | None, implementation: str = "einsum") -> jax.Array:
    """Softmax attention [B, Q, H, D]; keys at or beyond kv_len_b are ignored.

    "einsum": heads moved next to the batch ([B, H, N, D]) so that both products are batched
    GEMMs, logits and softmax in float32; the queries are scaled (not the [B, H, Q, K] logits)
    and the softmax is normalized AFTER the product with the values (a [B, H, Q, D] division,
    not a [B, H, Q, K] one, forward and backward). On XLA:CPU 1.6x faster forward + backward
    than jax.nn.dot_product_attention's XLA path, and the late normalization another 1.1-1.2x
    on the demo train step (BUILD_NOTES "Performance"). "cudnn": the fused kernel of
    jax.nn.dot_product_attention."""
    if implementation == "cudnn":
        return jax.nn.dot_product_attention(q_bqhd, k_bkhd, v_bkhd, key_value_seq_lengths=kv_len_b,
                                            implementation="cudnn")
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q_bqhd, k_bkhd, v_bkhd))
    q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
    keep = None if kv_len_b is None else (
        jnp.arange(k.shape[2]) < kv_len_b[:, None, None, None])
    out = _softmax_product(logits, keep, v, "bhqk,bhkd->bhqd")
    return out.astype(v.dtype).transpose(0, 2, 1, 3)


def factorized_attention(q_bnhd: jax.Array, k_bnhd: jax.Array, v_bnhd: jax.Array,
                         key_valid_bn: jax.Array | None, num_joints: int) -> jax.Array:
    """Factorized dot-product attention over the joint x time token grid [B, N, H, D] (tokens
    joint-major, N = J * P; ViViT's "factorized dot-product attention"): the first half of the
    heads attend across joints within the token's time patch, the second half across time
    within its joint. Keys where key_valid_bn is False are ignored. The softmax tensors are
    [B, P, H/2, J, J] and [B, J, H/2, P, P] instead of [B, H, N, N]."""
    parts = factorized_parts(q_bnhd, k_bnhd, v_bnhd, key_valid_bn, num_joints)
    return across_joints(parts, key_valid_bn, num_joints, v_bnhd.dtype)


class FactorizedParts(NamedTuple):
    """What `factorized_attention` computes before the joint heads' softmax: all of it is the
    same for every set of keys that keeps each visible joint's own time keys (pass 1's J masks
    of one stride differ only in the joint heads' keys, `GenGaitMAE.occlusion_parts`)."""
    logits_j: jax.Array  # joint heads' logits [B, P, H/2, J, J] (scaled queries)
    v_j: jax.Array       # joint heads' values [B, J, P, H/2, D]
    time: jax.Array      # time heads' output [B, J, P, H/2, D] (float32)


def factorized_parts(q_bnhd: jax.Array, k_bnhd: jax.Array, v_bnhd: jax.Array,
                     key_valid_bn: jax.Array | None, num_joints: int) -> FactorizedParts:
    """The time heads attended (keys where key_valid_bn) and the joint heads' logits."""
    b, n, h, d = q_bnhd.shape
    p, hs = n // num_joints, h // 2
    q, k, v = (x.reshape(b, num_joints, p, h, d) for x in (q_bnhd, k_bnhd, v_bnhd))
    q = q * jnp.asarray(d ** -0.5, q.dtype)
    # The head halves by jnp.split, whose gradient is one concatenate (indexing's is a pad
    # and an add per half: the train step 3-5 % slower, BUILD_NOTES "Performance").
    (q_j, q_t), (k_j, k_t), (v_j, v_t) = (jnp.split(x, [hs], axis=3) for x in (q, k, v))
    keep = None if key_valid_bn is None else key_valid_bn.reshape(b, num_joints, p)
    across_time = _softmax_product(
        jnp.einsum("bjphd,bjqhd->bjhpq", q_t, k_t, preferred_element_type=jnp.float32),
        None if keep is None else keep[:, :, None, None, :],
        v_t, "bjhpq,bjqhd->bjphd", (0, 1, 3, 2))
    return FactorizedParts(
        jnp.einsum("bjphd,bkphd->bphjk", q_j, k_j, preferred_element_type=jnp.float32),
        v_j, across_time)


def across_joints(parts: FactorizedParts, key_valid_bn: jax.Array | None, num_joints: int,
                  dtype) -> jax.Array:
    """The joint heads attended (keys where key_valid_bn) beside the time heads: [B, N, H, D]."""
    b, j, p, hs, d = parts.v_j.shape
    keep = None if key_valid_bn is None else key_valid_bn.reshape(b, num_joints, p)
    att = _softmax_product(parts.logits_j,
                           None if keep is None else keep.transpose(0, 2, 1)[:, :, None, None, :],
                           parts.v_j, "bphjk,bkphd->bjphd", (0, 3, 1, 2))
    out = jnp.concatenate([att, parts.time], axis=3)
    return out.astype(dtype).reshape(b, j * p, 2 * hs, d)


class TokenGrid(NamedTuple):
    """Where a block's rows lie on the joint x time token grid (factorized attention)."""
    num_joints: int
    keep_idx: jax.Array | None = None  # [B, K] each row's token; None: the rows are all tokens
    restore: jax.Array | None = None   # [B, N] each token's row (>= K: none, zeros)
    keys: jax.Array | None = None      # [B, N] tokens that are attended to; None: all


class Block(nnx.Module):
    """Pre-LN Transformer block with fused QKV and fused attention (full, or factorized over
    joints and time)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, dtype, *, rngs: nnx.Rngs,
                 attention: str = "auto", factorized: bool = False):
        if factorized and heads % 2:
            raise ValueError(f"model.factorized needs an even number of heads, got {heads}")
        self.heads, self.factorized = heads, factorized
        implementation = attention_implementation(attention, jax.default_backend(), dtype,
                                                  width // heads)
        self.implementation = "einsum" if factorized else implementation  # [J, J] / [P, P]
        self.ln1 = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
        self.qkv = linear(width, 3 * width, dtype, rngs)
        self.out = linear(width, width, dtype, rngs)
        self.ln2 = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
        self.fc1 = linear(width, mlp_ratio * width, dtype, rngs)
        self.fc2 = linear(mlp_ratio * width, width, dtype, rngs)

    def __call__(self, x_bnd: jax.Array, kv_len_b: jax.Array | None,
                 query_bq: jax.Array | None = None, grid: TokenGrid | None = None) -> jax.Array:
        """Attention (keys beyond kv_len_b ignored; with `factorized`, the keys of `grid`) and
        MLP; only rows query_bq if given."""
        n = x_bnd.shape[1]
        qkv = self.qkv_heads(x_bnd)
        if self.factorized and query_bq is not None and grid.restore is None and (
                query_bq.shape[1] <= QUERY_ROWS_SHARE * n):
            att = query_attention(qkv, query_bq, grid.keys, grid.num_joints)
        elif self.factorized:
            att = _grid_attention(qkv, grid)
            if query_bq is not None:
                att = masking.take_along(att, query_bq[:, :, None, None], axis=1)
        else:
            q, k, v = split_qkv(qkv)
            if query_bq is not None:  # queries of the rows that are read; keys/values of all
                q = masking.take_along(q, query_bq[:, :, None, None], axis=1)
            att = attention(q, k, v, kv_len_b, self.implementation)
        if query_bq is not None:
            x_bnd = masking.take_along(x_bnd, query_bq[..., None], axis=1)
        return self.residual(x_bnd, att)

    def qkv_heads(self, x_bnd: jax.Array) -> jax.Array:
        """The fused projection of the normalized rows [B, N, 3, H, D]."""
        b, n, d = x_bnd.shape
        return self.qkv(self.ln1(x_bnd)).reshape(b, n, 3, self.heads, d // self.heads)

    def joint_rows(self, x_bnd: jax.Array, joint_b: jax.Array, num_joints: int) -> jax.Array:
        """The block's output for the P rows of joint joint_b [B] only [B, P, D] (factorized,
        every token a key): keys and values of all rows, queries of those rows only."""
        b, n, d = x_bnd.shape
        hd = (self.heads, d // self.heads)
        h_bnd = self.ln1(x_bnd)
        w, bias = self.qkv.kernel[...], self.qkv.bias[...]
        dtype = self.qkv.dtype or h_bnd.dtype
        kv = h_bnd.astype(dtype) @ w[:, d:].astype(dtype) + bias[d:].astype(dtype)

        def own(a: jax.Array) -> jax.Array:
            """Joint joint_b's rows [B, P, D] of a [B, N, D]."""
            return masking.take_along(a.reshape(b, num_joints, n // num_joints, d),
                                       joint_b[:, None, None, None], axis=1)[:, 0]

        q = own(h_bnd).astype(dtype) @ w[:, :d].astype(dtype) + bias[:d].astype(dtype)
        att = joint_query_attention(q.reshape(b, -1, *hd), kv.reshape(b, n, 2, *hd), joint_b,
                                    num_joints)
        return self.residual(own(x_bnd), att)

    def residual(self, x_bnd: jax.Array, att: jax.Array) -> jax.Array:
        """The rows after their attention output `att` [B, N, H, D]: projection, MLP, residuals."""
        x_bnd = x_bnd + self.out(att.reshape(x_bnd.shape))
        return x_bnd + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x_bnd))))


def split_qkv(qkv_bn3hd: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Queries, keys and values [B, N, H, D] of the fused projection [B, N, 3, H, D]
    (jnp.split: one concatenate in the gradient)."""
    return tuple(a[:, :, 0] for a in jnp.split(qkv_bn3hd, 3, axis=2))


def query_attention(qkv_bn3hd: jax.Array, query_bq: jax.Array, key_valid_bn: jax.Array | None,
                    num_joints: int) -> jax.Array:
    """`factorized_attention` of the query rows query_bq [B, Q] only, over all N tokens (joint
    major): each row's J keys of its time patch and P keys of its joint are gathered, so the
    softmax tensors are [B, Q, H/2, J] and [B, Q, H/2, P] instead of the whole grid's."""
    b, n, _, h, d = qkv_bn3hd.shape
    p, hs = n // num_joints, h // 2
    q = masking.take_along(qkv_bn3hd[:, :, 0], query_bq[:, :, None, None], axis=1)
    q = q * jnp.asarray(d ** -0.5, q.dtype)
    kv = qkv_bn3hd[:, :, 1:].reshape(b, num_joints, p, 2, h, d)
    joint_q, patch_q = query_bq // p, query_bq % p
    kv_j = masking.take_along(kv[..., :hs, :], patch_q[:, None, :, None, None, None], axis=2)
    kv_t = masking.take_along(kv[..., hs:, :], joint_q[:, :, None, None, None, None], axis=1)
    keep_j = keep_t = None  # [B, Q, 1, J] / [B, Q, 1, P]
    if key_valid_bn is not None:
        keep = key_valid_bn.reshape(b, num_joints, p)
        keep_j = masking.take_along(keep, patch_q[:, None, :], axis=2).transpose(0, 2, 1)
        keep_j = keep_j[:, :, None]
        keep_t = masking.take_along(keep, joint_q[..., None], axis=1)[:, :, None]
    across_joints = _softmax_product(
        jnp.einsum("bqhd,bkqhd->bqhk", q[:, :, :hs], kv_j[:, :, :, 0],
                   preferred_element_type=jnp.float32),
        keep_j, kv_j[:, :, :, 1], "bqhk,bkqhd->bqhd")
    across_time = _softmax_product(
        jnp.einsum("bqhd,bqphd->bqhp", q[:, :, hs:], kv_t[:, :, :, 0],
                   preferred_element_type=jnp.float32),
        keep_t, kv_t[:, :, :, 1], "bqhp,bqphd->bqhd")
    return jnp.concatenate([across_joints, across_time], axis=2).astype(qkv_bn3hd.dtype)


def joint_query_attention(q_bphd: jax.Array, kv_bn2hd: jax.Array, joint_b: jax.Array,
                          num_joints: int) -> jax.Array:
    """`factorized_attention` of the P rows of joint joint_b [B] only (queries q [B, P, H, D];
    keys and values of all N tokens [B, N, 2, H, D], joint major, every token a key): each
    row's J keys are those of its own time patch, and its joint's P time keys are the same for
    all of them (pass 1's decoder: none of `query_attention`'s per-row gathers)."""
    b, n, _, h, d = kv_bn2hd.shape
    p, hs = n // num_joints, h // 2
    q = q_bphd * jnp.asarray(d ** -0.5, q_bphd.dtype)
    kv = kv_bn2hd.reshape(b, num_joints, p, 2, h, d)
    own = masking.take_along(kv[..., hs:, :], joint_b[:, None, None, None, None, None],
                              axis=1)[:, 0]  # [B, P, 2, H/2, D]
    across_joints = _softmax_product(
        jnp.einsum("bphd,bkphd->bphk", q[:, :, :hs], kv[:, :, :, 0, :hs],
                   preferred_element_type=jnp.float32),
        None, kv[:, :, :, 1, :hs], "bphk,bkphd->bphd")
    across_time = _softmax_product(
        jnp.einsum("bphd,bqhd->bphq", q[:, :, hs:], own[:, :, 0],
                   preferred_element_type=jnp.float32),
        None, own[:, :, 1], "bphq,bqhd->bphd")
    return jnp.concatenate([across_joints, across_time], axis=2).astype(kv_bn2hd.dtype)


def _grid_attention(qkv_bn3hd: jax.Array, grid: TokenGrid) -> jax.Array:
    """`factorized_attention` of rows laid out by `grid`: scattered onto the token grid, attended
    there, gathered back to the rows [B, rows, H, D]."""
    if grid.restore is not None:
        b, k = qkv_bn3hd.shape[:2]
        pad = jnp.zeros((b, grid.restore.shape[1] - k, *qkv_bn3hd.shape[2:]), qkv_bn3hd.dtype)
        qkv_bn3hd = masking.take_along(jnp.concatenate([qkv_bn3hd, pad], axis=1),
                                        grid.restore[:, :, None, None, None], axis=1)
    att = factorized_attention(*split_qkv(qkv_bn3hd), grid.keys, grid.num_joints)
    if grid.keep_idx is not None:
        att = masking.take_along(att, grid.keep_idx[:, :, None, None], axis=1)
    return att


def _stack(depth: int, width: int, heads: int, mlp_ratio: int, dtype, rngs: nnx.Rngs,
           attention: str, factorized: bool):
    """A list of `depth` blocks."""
    return nnx.List([Block(width, heads, mlp_ratio, dtype, rngs=rngs, attention=attention,
                           factorized=factorized) for _ in range(depth)])


class GenGaitMAE(nnx.Module):
    """Transformer MAE over joint x time tokens."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, num_frames: int, num_joints: int,
                 num_channels: int, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.dtype)
        self.patch, self.num_joints = cfg.patch, num_joints
        self.num_patches = num_frames // cfg.patch
        if num_frames % cfg.patch:
            raise ValueError(f"num_frames={num_frames} is not a multiple of patch={cfg.patch}")
        token_dim = cfg.patch * num_channels
        init = nnx.initializers.normal(0.02)
        self.mean_jc = Stat(jnp.zeros((num_joints, num_channels), jnp.float32))
        self.std_jc = Stat(jnp.ones((num_joints, num_channels), jnp.float32))
        # Mean curves of the training strides (normalized units), one per stride layout (left
        # and right strides: the other side's joints half a cycle apart). Tokens are the
        # deviation from the closer one, so the model starts from the population mean curve
        # and learns what the rest of the body says beyond it. Zeros: no reference.
        # Occlusion group of each joint (masking.occlusion_masks): joints that are one signal.
        self.group_j = Stat(jnp.arange(num_joints, dtype=jnp.int32))
        self.curve_stjc = Stat(jnp.zeros((2, num_frames, num_joints, num_channels), jnp.float32))
        # The linear body prior (`prior`): per joint, a ridge map from the patch means of the
        # visible tokens of the other occlusion groups to the joint's tokens; zeros = none.
        self.num_channels = num_channels
        feat, out = num_joints * self.num_patches * num_channels, self.num_patches * token_dim
        self.linear_prior = bool(cfg.get("linear_prior", False))
        self.prior_w = Stat(jnp.zeros((num_joints, feat, out) if self.linear_prior
                                      else (num_joints, 1, 1), jnp.float32))
        self.prior_b = Stat(jnp.zeros((num_joints, out) if self.linear_prior
                                      else (num_joints, 1), jnp.float32))
        self.embed = linear(token_dim, cfg.width, dtype, rngs)
        self.joint_emb = nnx.Param(init(rngs.params(), (num_joints, cfg.width)))
        self.time_emb = nnx.Param(init(rngs.params(), (self.num_patches, cfg.width)))
        attention = cfg.get("attention", "auto")
        self.factorized = bool(cfg.get("factorized", False))
        self.encoder = _stack(cfg.depth, cfg.width, cfg.heads, cfg.mlp_ratio, dtype, rngs,
                              attention, self.factorized)
        self.enc_norm = nnx.LayerNorm(cfg.width, dtype=dtype, rngs=rngs)
        self.dec_embed = linear(cfg.width, cfg.dec_width, dtype, rngs)
        self.mask_token = nnx.Param(init(rngs.params(), (cfg.dec_width,)))
        self.dec_joint_emb = nnx.Param(init(rngs.params(), (num_joints, cfg.dec_width)))
        self.dec_time_emb = nnx.Param(init(rngs.params(), (self.num_patches, cfg.dec_width)))
        self.decoder = _stack(cfg.dec_depth, cfg.dec_width, cfg.dec_heads, cfg.mlp_ratio, dtype,
                              rngs, attention, self.factorized)
        self.dec_norm = nnx.LayerNorm(cfg.dec_width, dtype=dtype, rngs=rngs)
        self.head = linear(cfg.dec_width, token_dim, dtype, rngs)

    def set_references(self, refs) -> None:
        """Stores a `data.References`: stats, mean curves (if any), occlusion groups and the
        linear prior (if the model has one)."""
        self.set_stats(refs.mean_jc, refs.std_jc)
        if refs.curves_stjc is not None:
            self.set_curves(refs.curves_stjc)
        self.set_groups(refs.groups_j)
        if self.linear_prior:
            self.prior_w[...] = jnp.asarray(refs.prior_w, jnp.float32)
            self.prior_b[...] = jnp.asarray(refs.prior_b, jnp.float32)

    def set_stats(self, mean_jc: jax.Array, std_jc: jax.Array) -> None:
        """Stores the normalization statistics of the training split."""
        self.mean_jc[...] = jnp.asarray(mean_jc, jnp.float32)
        self.std_jc[...] = jnp.maximum(jnp.asarray(std_jc, jnp.float32), 1e-3)

    def set_groups(self, group_j) -> None:
        """Stores the occlusion group id of every joint [J] (int)."""
        self.group_j[...] = jnp.asarray(group_j, jnp.int32)

    def set_curves(self, curves_stjc: jax.Array) -> None:
        """Stores the mean curves [2, T, J, C] (physical units) of left and right strides."""
        c = (jnp.asarray(curves_stjc, jnp.float32) - self.mean_jc[...]) / self.std_jc[...]
        self.curve_stjc[...] = jnp.nan_to_num(c)

    def reference(self, x_btjc: jax.Array) -> jax.Array:
        """Per stride, the mean curve of the closer layout over its finite values [B, T, J, C]."""
        z = (x_btjc - self.mean_jc[...]) / self.std_jc[...]
        c = self.curve_stjc[...]
        sq = jnp.square(jnp.nan_to_num(z)[:, None] - c[None])
        d_bs = jnp.where(jnp.isfinite(z)[:, None], sq, 0.0).sum((2, 3, 4))
        return c[jnp.argmin(d_bs, axis=-1)]

    def tokens(self, x_btjc: jax.Array, ref_btjc: jax.Array | None = None) -> jax.Array:
        """Physical units [B, T, J, C] -> normalized deviations from the reference curve as
        tokens [B, N, patch * C] (NaN -> 0)."""
        ref = self.reference(x_btjc) if ref_btjc is None else ref_btjc
        z = (x_btjc - self.mean_jc[...]) / self.std_jc[...] - ref
        return masking.patchify(jnp.nan_to_num(z), self.patch)

    def untokens(self, tokens_bnd: jax.Array, ref_btjc: jax.Array) -> jax.Array:
        """Tokens -> physical units [B, T, J, C], given the reference curve of `tokens`."""
        z = masking.unpatchify(tokens_bnd, self.num_joints, self.patch) + ref_btjc
        return z * self.std_jc[...] + self.mean_jc[...]

    def _pos(self, joint_emb: nnx.Param, time_emb: nnx.Param) -> jax.Array:
        """Joint + time embedding per token [N, D], joint-major like the tokens."""
        return (joint_emb[...][:, None, :] + time_emb[...][None, :, :]).reshape(
            -1, joint_emb.shape[-1])

    def encode(self, tokens_bnd: jax.Array, visible_bn: jax.Array, num_keep: int):
        """Encodes the visible tokens only: returns latents [B, K, D] and the slot layout
        (keep_valid [B, K], restore [B, N]); factorized with K >= GRID_ENCODER_SHARE * N,
        latents on the token grid [B, N, D] (hidden rows: never read) and (visible_bn, None)."""
        n = tokens_bnd.shape[1]
        if self.factorized and num_keep >= GRID_ENCODER_SHARE * n:
            return self._encode_grid(tokens_bnd, visible_bn), visible_bn, None
        keep_idx, keep_valid, restore = masking.keep_indices(visible_bn, num_keep)
        # Gather first, so the embedding also costs K tokens, and zero the padding slots, so
        # hidden (possibly invalid) values reach neither the output nor any gradient.
        tok_bkd = masking.take_along(tokens_bnd, keep_idx[..., None], axis=1)
        tok_bkd = jnp.where(keep_valid[..., None], tok_bkd, 0.0)
        pos_bkd = self._pos(self.joint_emb, self.time_emb)[keep_idx]
        x_bkd = self.embed(tok_bkd) + pos_bkd
        kv_len = jnp.maximum(keep_valid.sum(axis=-1), 1).astype(jnp.int32)  # no empty softmax
        grid = TokenGrid(self.num_joints, keep_idx, restore, visible_bn)
        for block in self.encoder:
            x_bkd = block(x_bkd, kv_len, grid=grid)
        return self.enc_norm(x_bkd), keep_valid, restore

    def _embed_grid(self, tokens_bnd: jax.Array, visible_bn: jax.Array) -> jax.Array:
        """The encoder's input on the whole token grid [B, N, D]: hidden tokens zeroed, embedded,
        plus the joint and time positions."""
        tok_bnd = jnp.where(visible_bn[..., None], tokens_bnd, 0.0)
        return self.embed(tok_bnd) + self._pos(self.joint_emb, self.time_emb)

    def _encode_grid(self, tokens_bnd: jax.Array, visible_bn: jax.Array) -> jax.Array:
        """`encode` on the whole token grid [B, N, D]: hidden tokens zeroed and never keys, so
        they reach no visible row (the same numbers as the K-slot encoder on those rows)."""
        x_bnd = self._embed_grid(tokens_bnd, visible_bn)
        grid = TokenGrid(self.num_joints, keys=visible_bn)
        for block in self.encoder:
            x_bnd = block(x_bnd, None, grid=grid)
        return self.enc_norm(x_bnd)

    @property
    def shares_occlusions(self) -> bool:
        """Whether pass 1's masks of one stride share their first block (`occlusion_parts`):
        factorized attention, its masks (one joint hidden) encoded on the token grid."""
        n = self.num_joints * self.num_patches
        return self.factorized and n - self.num_patches >= GRID_ENCODER_SHARE * n

    def occlusion_parts(self, tokens_bnd: jax.Array, valid_bn: jax.Array
                        ) -> tuple[jax.Array, FactorizedParts]:
        """The first encoder block's work that pass 1's occlusion masks of a stride share
        (factorized attention): the embedded rows [B, N, D] and, from them, the projection, the
        time heads (each visible joint attends to its own valid tokens in every mask) and the
        joint heads' logits. `decoded_occluded` finishes one mask from them."""
        x_bnd = self._embed_grid(tokens_bnd, valid_bn)
        q, k, v = split_qkv(self.encoder[0].qkv_heads(x_bnd))
        return x_bnd, factorized_parts(q, k, v, valid_bn, self.num_joints)

    def decoded_occluded(self, x_bnd: jax.Array, parts: FactorizedParts, visible_bn: jax.Array,
                         joint_b: jax.Array) -> jax.Array:
        """`decoded` of the rows of joint joint_b [B] ([B, P, patch * C]) with visible_bn a
        subset of the valid tokens of `occlusion_parts` that hides whole joints: the same numbers
        (hidden rows differ inside the encoder, but they are never keys, and the decoder replaces
        them by the mask token)."""
        first = self.encoder[0]
        x_bnd = first.residual(x_bnd, across_joints(parts, visible_bn, self.num_joints,
                                                    x_bnd.dtype))
        grid = TokenGrid(self.num_joints, keys=visible_bn)
        for block in self.encoder[1:]:
            x_bnd = block(x_bnd, None, grid=grid)
        return self.decode(self.enc_norm(x_bnd), visible_bn, None, query_joint=joint_b)

    def decode(self, latents_bkd: jax.Array, keep_valid_bk: jax.Array,
               restore_bn: jax.Array | None, query_idx: jax.Array | None = None,
               query_joint: jax.Array | None = None) -> jax.Array:
        """Latents back in token order, hidden ones = mask token; decodes (rows query_idx, or
        the P rows of joint query_joint [B]: factorized, `Block.joint_rows`). restore_bn None:
        the latents are already on the grid (`encode`)."""
        y = self.dec_embed(latents_bkd)
        mask = self.mask_token[...].astype(y.dtype)
        if restore_bn is None:
            y = jnp.where(keep_valid_bk[..., None], y, mask)
        else:
            b, k, d = y.shape
            mask = jnp.broadcast_to(mask, (b, restore_bn.shape[-1], d))
            y = jnp.where(keep_valid_bk[..., None], y, mask[:, :k])
            y = jnp.concatenate([y, mask[:, k:]], axis=1)
            y = masking.take_along(y, restore_bn[..., None], axis=1)
        y = y + self._pos(self.dec_joint_emb, self.dec_time_emb).astype(y.dtype)
        # The last block (and the head) only computes the rows that are read.
        grid = TokenGrid(self.num_joints)  # the rows are all tokens, all of them keys
        if query_joint is not None:
            query_idx = query_joint[:, None] * self.num_patches + jnp.arange(self.num_patches)
        for i, block in enumerate(self.decoder):
            if i < len(self.decoder) - 1:
                y = block(y, None, None, grid)
            elif query_joint is not None:
                y = block.joint_rows(y, query_joint, self.num_joints)
            else:
                y = block(y, None, query_idx, grid)
        if query_idx is not None and not len(self.decoder):
            y = masking.take_along(y, query_idx[..., None], axis=1)
        return self.head(self.dec_norm(y)).astype(jnp.float32)

    def prior_all(self, tokens_bnd: jax.Array, visible_bn: jax.Array) -> jax.Array:
        """The linear body prior of EVERY joint [B, J, patch-tokens * patch * C] as if its
        occlusion group were hidden (pass 1's mask of that joint): a ridge prediction (fitted on
        the training strides, `data.references`) from the patch means of the visible tokens of
        the other occlusion groups; hidden or invalid tokens count as the mean (0)."""
        b = tokens_bnd.shape[0]
        j, p, c = self.num_joints, self.num_patches, self.num_channels
        vis = visible_bn.reshape(b, j, p)
        f = jnp.where(vis[..., None], tokens_bnd.reshape(b, j, p, self.patch, c).mean(3), 0.0)
        keep_bjk = ~masking.same_group(self.group_j[...], j)[None] & vis.any(-1)[:, None, :]
        feats = (f[:, None] * keep_bjk[..., None, None]).reshape(b, j, -1)
        # Joint-major [J, B, F] @ [J, F, O]: a batched GEMM in YNN; "bjf,jfo->bjo" as written
        # ran as a transposed-weight dot at half the speed on XLA:CPU (BUILD_NOTES "Performance").
        out = jnp.einsum("jbf,jfo->jbo", feats.transpose(1, 0, 2), self.prior_w[...])
        return out.transpose(1, 0, 2) + self.prior_b[...]

    def prior(self, tokens_bnd: jax.Array, visible_bn: jax.Array) -> jax.Array:
        """The linear body prior (`prior_all`) of every FULLY hidden joint [B, N, patch * C]
        (0 elsewhere)."""
        if not self.linear_prior:
            return jnp.zeros_like(tokens_bnd)
        b, n, d = tokens_bnd.shape
        hidden_bj = ~visible_bn.reshape(b, self.num_joints, self.num_patches).any(-1)
        pred = jnp.where(hidden_bj[..., None], self.prior_all(tokens_bnd, visible_bn), 0.0)
        return pred.reshape(b, n, d)

    def decoded(self, tokens_bnd: jax.Array, visible_bn: jax.Array, num_keep: int,
                query_idx: jax.Array | None = None) -> jax.Array:
        """The decoder's output for all tokens [B, N, patch * C] (normalized), or for rows
        query_idx [B, Q], without the linear prior."""
        latents, keep_valid, restore = self.encode(tokens_bnd, visible_bn, num_keep)
        return self.decode(latents, keep_valid, restore, query_idx)

    def __call__(self, tokens_bnd: jax.Array, visible_bn: jax.Array, num_keep: int,
                 query_idx: jax.Array | None = None) -> jax.Array:
        """Predicts all tokens [B, N, patch * C] (normalized), or rows query_idx [B, Q]: the
        decoder's output plus the linear prior of fully hidden joints."""
        out = self.decoded(tokens_bnd, visible_bn, num_keep, query_idx)
        prior = self.prior(tokens_bnd, visible_bn)
        if query_idx is not None:
            prior = masking.take_along(prior, query_idx[..., None], axis=1)
        return out + prior.astype(out.dtype)

    def untokens_joint(self, tokens_bpd: jax.Array, ref_btjc: jax.Array, j) -> jax.Array:
        """Joint j's tokens [B, T/patch, patch * C] -> its curve in physical units [B, T, C]."""
        b, p, _ = tokens_bpd.shape
        z = tokens_bpd.reshape(b, p * self.patch, -1) + jnp.take(ref_btjc, j, axis=2)
        return z * jnp.take(self.std_jc[...], j, axis=0) + jnp.take(self.mean_jc[...], j, axis=0)

    def reconstruct(self, x_btjc: jax.Array, visible_bn: jax.Array, num_keep: int) -> jax.Array:
        """Physical units in and out: reconstructs [B, T, J, C] from the visible tokens."""
        ref = self.reference(x_btjc)
        return self.untokens(self(self.tokens(x_btjc, ref), visible_bn, num_keep), ref)


def create_model(cfg: ml_collections.ConfigDict, *, num_frames: int, num_joints: int,
                 num_channels: int, seed: int = 0) -> GenGaitMAE:
    """Builds the model of `cfg.model` for inputs of the given shape."""
    return GenGaitMAE(cfg.model, num_frames=num_frames, num_joints=num_joints,
                      num_channels=num_channels, rngs=nnx.Rngs(seed))


def num_keep_for(cfg: ml_collections.ConfigDict, num_tokens: int) -> int:
    """Encoder slots of the random-token training masks."""
    return max(1, round(num_tokens * (1.0 - cfg.mask.ratio)))
