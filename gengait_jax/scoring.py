"""Pass 1, localization: every joint hidden in turn and reconstructed from the rest of the body.

For B strides and J joints, the J whole-joint occlusion masks (optionally crossed with M random
context maskings) are run in ONE compiled program: `jax.jit` of a `jax.vmap` over the mask axis,
the strides being the model's batch axis. The result is each joint's reconstruction with that
joint hidden, in the input's physical units (degrees for angles, mm for positions); the
residual (observed - reconstruction) is what `calibration` turns into z-scores and flags.

A joint is "not scored" (residual NaN, reported null, never normal) when fewer than
MIN_VALID_FRACTION of its frames are valid, or fewer than MIN_CONTEXT_FRACTION of the other
joints' tokens are valid (too little body left to reconstruct it from).
"""

from __future__ import annotations

import collections
import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gengait_jax import data, masking
from gengait_jax.model import GenGaitMAE

MIN_VALID_FRACTION = 0.5
MIN_CONTEXT_FRACTION = 0.5
CONTEXT_HIDE = 0.25  # share of the context tokens a random context masking also hides
BUCKETS = (8, 12, 16, 24, 32, 48, 64)  # pass 2 pads strides to one of these (one compile each)
PASS1_BUCKETS = (16, 64)  # pass 1's (no context maskings): its padding strides are skipped
ROWS_PER_CHAIN = 4096  # on CPU a chain of pass 1's loop holds at most this many token rows
CHAINS_PER_STEP = 2  # and this many independent chains run per loop step (on two CPU cores)

_TRACES: collections.Counter = collections.Counter()


def trace_count(name: str = "pass1") -> int:
    """How many times the named program has been traced (= compiled) in this process."""
    return _TRACES[name]


@dataclasses.dataclass(frozen=True)
class Pass1:
    """Per-stride pass-1 results (numpy), N strides."""

    recon_ntjc: np.ndarray     # joint j reconstructed with joint j hidden
    residual_ntjc: np.ndarray  # observed - recon; NaN on invalid frames and joints not scored
    valid_frac_nj: np.ndarray  # share of valid frames of each joint
    scored_nj: np.ndarray      # bool: enough valid data and context

    @property
    def rms_nj(self) -> np.ndarray:
        """RMS residual over valid frames and channels (NaN: not scored), physical units."""
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.sqrt(np.nanmean(self.residual_ntjc ** 2, axis=(1, 3)))


def pass1_chunk(backend: str, num_tokens: int) -> int:
    """Masked sequences per chain of pass 1's loop on `backend` (0: all J x B in one vmap).

    CPU: as many sequences of `num_tokens` (J x P) tokens as fit in ROWS_PER_CHAIN rows, at
    least one: a chain's activations stay in cache (1.3-1.8x faster than one vmap at 64 `demo`
    strides), and past about that many rows XLA:CPU materializes the bias and LayerNorm
    broadcasts of its YNNPACK fusions (1.2-1.5x slower; BUILD_NOTES "Performance"). GPU / TPU:
    one vmap; a loop step of 20 sequences of width 64 would leave their cores idle between
    small kernels, and the whole b64 call fits (`paper`: 5.9 GiB by XLA's memory analysis)."""
    return max(1, ROWS_PER_CHAIN // num_tokens) if backend == "cpu" else 0


def context_keep(key: jax.Array, valid_bn: jax.Array, num_context: int,
                 hide: float = CONTEXT_HIDE) -> jax.Array:
    """[M, B, N] extra-visibility masks: all True if num_context == 0, else random keeps."""
    if num_context == 0:
        return jnp.ones((1,) + valid_bn.shape, bool)
    return jax.random.bernoulli(key, 1.0 - hide, (num_context,) + valid_bn.shape)


def occlusion_recon_rows(model: GenGaitMAE, x_btjc: jax.Array, valid_btj: jax.Array,
                         chunk: int = 0, chains: int = CHAINS_PER_STEP) -> jax.Array:
    """Pass-1 reconstructions (no context maskings), decoding only joint j's rows in mask j.

    chunk > 0 runs the J * B masked sequences (stride-major) `chunk` at a time, so that the
    activations of one chain stay in cache, `chains` independent chains per loop step (XLA:CPU
    runs independent ops on different cores: 4-11 % faster at 64 strides on two, BUILD_NOTES
    "Performance"), and only up to the last stride with a valid frame: the strides that pad a
    batch to its bucket cost nothing (their reconstruction is NaN). 0 runs them all in one vmap.
    """
    j, p, patch = model.num_joints, model.num_patches, model.patch
    b, t, _, c = x_btjc.shape
    chunk = min(chunk, j * b)
    chains = max(1, min(chains, -(-j * b // chunk))) if chunk > 0 else 1
    valid_bn = masking.token_valid(valid_btj, patch)
    x_btjc = jnp.where(valid_btj[..., None], x_btjc, jnp.nan)
    ref = model.reference(x_btjc)
    tokens = model.tokens(x_btjc, ref)
    vis = masking.occlusion_masks(valid_bn, j, model.group_j[...])
    if model.shares_occlusions:  # the first block's work common to a stride's J masks, once
        shared = model.occlusion_parts(tokens, valid_bn)

    def decoded(idx, v, joint):
        """Joint `joint`'s rows [B, P, patch * C] of strides idx (None: all) with visible
        tokens v."""
        take = (lambda a: a) if idx is None else (lambda a: a[idx])
        if model.shares_occlusions:
            return model.decoded_occluded(*jax.tree.map(take, shared), v, joint)
        return model.decoded(take(tokens), v, j * p - p, joint[:, None] * p + jnp.arange(p))
    if chunk <= 0:
        pred = jax.vmap(lambda v, jj: decoded(None, v, jnp.full((b,), jj)))(vis, jnp.arange(j))
    else:
        s = j * b
        used = jnp.max(jnp.where(valid_btj.any((1, 2)), jnp.arange(1, b + 1), 0)) * j

        def steps(width: int):
            """The loop step that decodes `width` independent runs of `chunk` sequences."""
            def step(i, out):
                """Decodes sequences [i * width * chunk, (i + 1) * width * chunk) into `out`:
                each one's stride and mask gathered here (in cache), none of them copied for
                all steps up front."""
                preds = []
                for first in range(0, width * chunk, chunk):
                    seq = i * width * chunk + first + jnp.arange(chunk)
                    stride, joint = jnp.minimum(seq // j, b - 1), seq % j  # padding: any
                    preds.append(decoded(stride, vis[joint, stride], joint))
                return jax.lax.dynamic_update_slice_in_dim(out, jnp.concatenate(preds),
                                                           i * width * chunk, 0)
            return step
        pred = jnp.full((s - s % -chunk, p, patch * c), jnp.nan, jnp.float32)
        full = 0  # steps of `chains` runs; the rest one chain at a time
        if chains > 1:
            full = used // (chains * chunk)
            pred = jax.lax.fori_loop(0, full, steps(chains), pred)
        pred = jax.lax.fori_loop(full * chains, (used + chunk - 1) // chunk, steps(1), pred)
        pred = jnp.swapaxes(pred[:s].reshape((b, j) + pred.shape[1:]), 0, 1)
    tok_jbpd = pred.reshape(j, b, p, patch * c)
    if model.linear_prior:  # mask j hides joint j's group only: one product for all masks
        tok_jbpd = tok_jbpd + jnp.moveaxis(model.prior_all(tokens, valid_bn), 1, 0).reshape(
            tok_jbpd.shape)
    recon_jbtc = jax.vmap(lambda tk, jj: model.untokens_joint(tk, ref, jj))(tok_jbpd,
                                                                            jnp.arange(j))
    return jnp.moveaxis(recon_jbtc, 0, 2)


def occlusion_recon(model: GenGaitMAE, x_btjc: jax.Array, valid_btj: jax.Array,
                    key: jax.Array, num_context: int = 0, rows_only: bool = True) -> jax.Array:
    """[B, T, J, C]: joint j of every stride reconstructed with joint j hidden (vmap over J).

    Without context maskings (and with `rows_only`), only joint j's rows are decoded in mask j
    and the J x B sequences run as the backend's `pass1_chunk` says (`occlusion_recon_rows`):
    the same numbers, 2.9x faster at 64 strides on CPU (BUILD_NOTES "Performance").
    """
    if num_context == 0 and rows_only:
        return occlusion_recon_rows(model, x_btjc, valid_btj,
                                    chunk=pass1_chunk(jax.default_backend(),
                                                      model.num_joints * model.num_patches))
    j, p = model.num_joints, model.num_patches
    valid_bn = masking.token_valid(valid_btj, model.patch)
    keep_mbn = context_keep(key, valid_bn, num_context)
    masks = masking.occlusion_masks(valid_bn, j, model.group_j[...])[None] & keep_mbn[:, None]
    m = masks.shape[0]
    x = jnp.where(valid_btj[..., None], x_btjc, jnp.nan)  # invalid frames never leak
    recon = jax.vmap(lambda v: model.reconstruct(x, v, valid_bn.shape[-1] - p))(
        masks.reshape((m * j,) + valid_bn.shape))
    recon = recon.reshape((m, j) + x_btjc.shape).mean(0)  # [J(mask), B, T, J, C]
    return jnp.moveaxis(jnp.diagonal(recon, axis1=0, axis2=3), -1, 2)  # mask j -> joint j


def scored(valid_btj: jax.Array, patch: int) -> dict:
    """Share of valid frames [B, J] and whether each joint can be scored [B, J]."""
    b, t, j = valid_btj.shape
    tok_bjp = masking.token_valid(valid_btj, patch).reshape(b, j, -1)
    per_joint = tok_bjp.sum(-1)
    context = (per_joint.sum(-1, keepdims=True) - per_joint) / ((j - 1) * tok_bjp.shape[-1])
    frac_bj = valid_btj.sum(1).astype(jnp.float32) / t
    return {"valid_frac_nj": frac_bj,
            "scored_nj": (frac_bj >= MIN_VALID_FRACTION) & (context >= MIN_CONTEXT_FRACTION)}


def _pass1(graphdef, state, x_btjc, valid_btj, key, num_context: int) -> dict:
    """The traced program: occlusion reconstructions and which joints are scored."""
    _TRACES["pass1"] += 1
    model = nnx.merge(graphdef, state)
    recon = occlusion_recon(model, x_btjc, valid_btj, key, num_context)
    return dict(recon_ntjc=recon, **scored(valid_btj, model.patch))


_PASS1 = jax.jit(_pass1, static_argnums=(0, 5))


def compiled_cache_size() -> int:
    """Entries in the jit cache of the pass-1 program (one per input shape/num_context)."""
    return _PASS1._cache_size()


def bucket(n: int, cap: int = BUCKETS[-1], sizes: tuple[int, ...] = BUCKETS) -> int:
    """Padded batch size for n strides: the smallest of `sizes` that holds them (chunks of
    `cap` beyond it)."""
    return next((b for b in sizes if b >= min(n, cap)), cap)


def prepare(x_ntjc, valid_ntj=None) -> tuple[np.ndarray, np.ndarray]:
    """float32 values (NaN where invalid) and validity; non-finite values are invalid."""
    x = np.asarray(x_ntjc, np.float32)
    valid = np.isfinite(x).all(-1) & (True if valid_ntj is None else np.asarray(valid_ntj, bool))
    return data.mask(x, valid), valid


def score_strides(model: GenGaitMAE, x_ntjc, valid_ntj=None, *, num_context: int = 0,
                  seed: int = 0) -> Pass1:
    """Pass 1 for N strides (padded to a bucket; one compiled call per chunk of 64)."""
    x, valid = prepare(x_ntjc, valid_ntj)
    graphdef, state = nnx.split(model)
    n, size = len(x), bucket(len(x), BUCKETS[-1], BUCKETS if num_context else PASS1_BUCKETS)
    parts = []
    for start in range(0, n, size):
        xs, vs = x[start:start + size], valid[start:start + size]
        pad = size - len(xs)
        xs = np.pad(xs, ((0, pad), (0, 0), (0, 0), (0, 0)), constant_values=np.nan)
        vs = np.pad(vs, ((0, pad), (0, 0), (0, 0)))
        key = jax.random.fold_in(jax.random.key(seed), start)
        out = jax.device_get(_PASS1(graphdef, state, xs, vs, key, num_context))
        parts.append({k: np.asarray(v)[:size - pad] for k, v in out.items()})
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    ok = valid[..., None] & out["scored_nj"][:, None, :, None]
    return Pass1(residual_ntjc=np.where(ok, x - out["recon_ntjc"], np.nan), **out)
