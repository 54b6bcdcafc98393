"""GenGaitMAE: shapes, stats, and that hidden tokens never reach the output."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gengait_jax import data, masking, model as model_lib
from gengait_jax.configs import default

T, J, C = 100, 10, 3


@functools.partial(nnx.jit, static_argnums=3)
def _apply(m, tok, vis, k):
    """Jitted forward (eager dispatch compiles op by op: slow on fake devices)."""
    return m(tok, vis, k)


def _model(factorized: bool = False):
    cfg = default.tiny()
    cfg.model.factorized = factorized
    return cfg, model_lib.create_model(cfg, num_frames=T, num_joints=J, num_channels=C)


def test_output_shapes_and_keep_count():
    cfg, m = _model()
    x = jax.random.normal(jax.random.key(0), (2, T, J, C))
    tok = m.tokens(x)
    n = J * T // cfg.model.patch
    chex.assert_shape(tok, (2, n, cfg.model.patch * C))
    k = model_lib.num_keep_for(cfg, n)
    assert k == round(n * (1 - cfg.mask.ratio))
    vis = jax.vmap(lambda key: masking.random_tokens(key, jnp.ones(n, bool), k))(
        jax.random.split(jax.random.key(1), 2))
    out = _apply(m, tok, vis, k)
    chex.assert_equal_shape([out, tok])
    chex.assert_shape(m.untokens(out, m.reference(x)), x.shape)


@pytest.mark.parametrize("factorized,one_joint", [(False, False), (True, False), (True, True)])
def test_changing_hidden_tokens_does_not_change_output(factorized, one_joint):
    cfg, m = _model(factorized)
    n = J * T // cfg.model.patch
    tok = jax.random.normal(jax.random.key(0), (2, n, cfg.model.patch * C))
    vis = jnp.arange(n)[None].repeat(2, 0) % 3 == 0
    k = int(vis.sum(-1).max()) + 4  # a few padding slots, which point at hidden tokens
    if one_joint:  # pass 1's mask, a gap besides: the factorized encoder runs on the grid
        p = n // J
        vis = jnp.ones((2, n), bool).at[:, 2 * p:3 * p].set(False).at[0, 5:9].set(False)
        k = n - p
        assert m.factorized and k >= model_lib.GRID_ENCODER_SHARE * n
    out = _apply(m, tok, vis, k)
    garbage = 1e4 * jax.random.normal(jax.random.key(2), tok.shape)
    garbage = garbage.at[:, ::2].set(jnp.nan)  # and gaps: NaN must not reach the output either
    tok2 = jnp.where(vis[..., None], tok, garbage)
    np.testing.assert_array_equal(_apply(m, tok2, vis, k), out)
    tok3 = tok.at[:, 0].add(1.0)  # token 0 is visible: the output must change
    assert not np.allclose(_apply(m, tok3, vis, k), out)


def test_stats_normalize_and_round_trip():
    _, m = _model()
    mean = np.random.default_rng(0).normal(size=(J, C)).astype(np.float32) * 10
    std = np.full((J, C), 5.0, np.float32)
    m.set_stats(mean, std)
    x = jnp.asarray(mean + 5.0)[None, None].repeat(T, 1)  # one SD above the mean everywhere
    np.testing.assert_allclose(m.tokens(x), 1.0, rtol=1e-6)
    np.testing.assert_allclose(m.untokens(m.tokens(x), m.reference(x)), x, rtol=1e-5)
    assert not jnp.isnan(m.tokens(x.at[0, 0, 0, 0].set(jnp.nan))).any()


def test_stats_are_not_params():
    _, m = _model()
    params = {"/".join(map(str, k)) for k, _ in nnx.to_flat_state(nnx.state(m, nnx.Param))}
    stats = {"/".join(map(str, k)) for k, _ in nnx.to_flat_state(nnx.state(m, model_lib.Stat))}
    assert {"mean_jc", "std_jc", "curve_stjc", "group_j", "prior_w", "prior_b"} <= stats
    assert not params & stats
    assert not any(n in k for n in ("mean_jc", "std_jc", "curve_stjc", "prior") for k in params)


def _prior_model():
    cfg = default.tiny()
    cfg.model.linear_prior = True
    return cfg, model_lib.create_model(cfg, num_frames=T, num_joints=J, num_channels=C)


def test_linear_prior_predicts_fully_hidden_joints_only_from_other_groups():
    cfg, m = _prior_model()
    p, d = T // cfg.model.patch, cfg.model.patch * C
    rng = np.random.default_rng(0)
    m.prior_w[...] = jnp.asarray(rng.normal(size=m.prior_w.shape), jnp.float32)
    m.prior_b[...] = jnp.asarray(rng.normal(size=m.prior_b.shape), jnp.float32)
    m.set_groups(np.array([0, 0] + list(range(1, J - 1))))  # joints 0 and 1: one signal
    tok = jnp.asarray(rng.normal(size=(1, J * p, d)), jnp.float32)
    vis = jnp.ones((1, J, p), bool).at[:, 0].set(False).at[:, 3, :2].set(False).reshape(1, -1)
    pred = np.asarray(m.prior(tok, vis)).reshape(J, p, d)
    assert np.abs(pred[0]).min() > 0  # joint 0 fully hidden: predicted
    np.testing.assert_array_equal(pred[1:], 0.0)  # joint 3 only partly hidden: no prior
    # Joint 1 is in joint 0's group: its values must not leak into joint 0's prediction;
    # another group's visible values must.
    tok1 = tok.reshape(1, J, p, d).at[:, 1].add(5.0).reshape(tok.shape)
    np.testing.assert_allclose(m.prior(tok1, vis), m.prior(tok, vis), rtol=1e-6)
    tok2 = tok.reshape(1, J, p, d).at[:, 2].add(5.0).reshape(tok.shape)
    assert not np.allclose(m.prior(tok2, vis), m.prior(tok, vis))
    out = _apply(m, tok, vis, int(vis.sum()))
    m.linear_prior = False
    np.testing.assert_allclose(out - _apply(m, tok, vis, int(vis.sum())),
                               pred.reshape(out.shape), rtol=1e-4, atol=1e-4)


def test_ridge_prior_recovers_a_joint_that_is_a_linear_function_of_the_body():
    rng = np.random.default_rng(1)
    n, p, q = 400, 4, 2
    tok = rng.normal(size=(n, 3, p, q, 1))
    tok[:, 2] = 0.5 * tok[:, 0].mean(2, keepdims=True) - tok[:, 1].mean(2, keepdims=True)
    w, b = data.linear_prior(tok, np.arange(3), lam=1e-6)
    feats = (tok.mean(3) * (np.arange(3) != 2)[None, :, None, None]).reshape(n, -1)
    np.testing.assert_allclose(feats @ w[2] + b[2], tok[:, 2].reshape(n, -1), atol=1e-4)


def test_tokens_are_deviations_from_the_closer_mean_curve():
    _, m = _model()
    rng = np.random.default_rng(0)
    m.set_stats(np.zeros((J, C)), np.full((J, C), 2.0))
    curves = rng.normal(size=(2, T, J, C)).astype(np.float32) * 10
    m.set_curves(curves)
    x = jnp.asarray(curves[[1, 0]] + 0.5)  # stride 0 near the right curve, stride 1 the left
    np.testing.assert_allclose(m.reference(x), curves[[1, 0]] / 2.0, rtol=1e-6)
    np.testing.assert_allclose(m.tokens(x), 0.25, rtol=1e-5)  # 0.5 / SD 2 everywhere
    np.testing.assert_allclose(m.untokens(m.tokens(x), m.reference(x)), x, rtol=1e-4, atol=1e-4)
    p = m.num_patches  # one joint's block of tokens back to its curve
    np.testing.assert_allclose(m.untokens_joint(m.tokens(x)[:, 3 * p:4 * p], m.reference(x), 3),
                               x[:, :, 3], rtol=1e-4, atol=1e-4)
    nan = x.at[0, :50].set(jnp.nan)  # invalid frames do not enter the choice of the curve
    np.testing.assert_allclose(m.reference(nan), m.reference(x))


def test_attention_implementation_is_picked_by_backend_dtype_and_head_width():
    pick = model_lib.attention_implementation
    assert pick("auto", "gpu", jnp.bfloat16, 64) == "cudnn"  # the paper preset's encoder
    assert pick("auto", "gpu", jnp.float16, 128) == "cudnn"
    assert pick("auto", "gpu", jnp.float32, 64) == "einsum"  # cuDNN's fused kernel: 16-bit
    assert pick("auto", "gpu", jnp.bfloat16, 12) == "einsum"  # head width not a multiple of 8
    assert pick("auto", "gpu", jnp.bfloat16, 256) == "einsum"
    assert pick("auto", "cpu", jnp.bfloat16, 64) == pick("auto", "tpu", jnp.bfloat16,
                                                         64) == "einsum"
    assert pick("einsum", "gpu", jnp.bfloat16, 64) == "einsum"
    assert pick("cudnn", "gpu", jnp.float32, 64) == "cudnn"
    with pytest.raises(ValueError, match="needs a GPU"):
        pick("cudnn", "cpu", jnp.bfloat16, 64)
    with pytest.raises(ValueError, match="one of"):
        pick("flash", "gpu", jnp.bfloat16, 64)


def test_model_blocks_take_the_configured_attention():
    cfg = default.tiny()
    m = model_lib.create_model(cfg, num_frames=100, num_joints=10, num_channels=3)
    assert all(b.implementation == "einsum" for b in [*m.encoder, *m.decoder])
    cfg.model.attention = "cudnn"
    with pytest.raises(ValueError, match="needs a GPU"):
        model_lib.create_model(cfg, num_frames=100, num_joints=10, num_channels=3)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dense_product_gives_autodiffs_values_and_gradients(dtype):
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (3, 7, 16), dtype)
    w = jax.random.normal(kw, (16, 12), dtype)
    g = jax.random.normal(kg, (3, 7, 12), dtype)
    y, vjp = jax.vjp(model_lib.dense_product, x, w)
    y_ref, vjp_ref = jax.vjp(lambda a, b: a @ b, x, w)
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    got, want = (y, *vjp(g)), (y_ref, *vjp_ref(g))
    chex.assert_trees_all_equal_shapes_and_dtypes(got, want)
    as_f32 = functools.partial(jax.tree.map, lambda a: a.astype(jnp.float32))
    chex.assert_trees_all_close(as_f32(got), as_f32(want), rtol=tol, atol=tol * 10)


def test_dense_layers_take_the_backends_dot_general():
    assert model_lib.dense_dot_general("cpu") is model_lib.cpu_dot_general
    assert model_lib.dense_dot_general("gpu") is model_lib.dense_dot_general("tpu") is (
        jax.lax.dot_general)
    _, m = _model()
    linears = [m.embed, m.dec_embed, m.head, *(getattr(b, n) for b in [*m.encoder, *m.decoder]
                                               for n in ("qkv", "out", "fc1", "fc2"))]
    picked = model_lib.dense_dot_general(jax.default_backend())  # cpu_dot_general in CI
    assert all(lin.dot_general is picked for lin in linears)
    # Products other than a dense layer's go to jax.lax.dot_general unchanged.
    a = jax.random.normal(jax.random.key(1), (2, 5, 4))
    b = jax.random.normal(jax.random.key(2), (2, 4, 3))
    dims = (((2,), (1,)), ((0,), (0,)))
    np.testing.assert_array_equal(model_lib.cpu_dot_general(a, b, dims),
                                  jax.lax.dot_general(a, b, dims))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_einsum_attention_equals_jax_dot_product_attention(dtype):
    kq, kk, kv = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(kq, (3, 7, 4, 16), dtype)  # fewer queries than keys (rows-only)
    k, v = (jax.random.normal(x, (3, 11, 4, 16), dtype) for x in (kk, kv))
    lens = jnp.array([11, 5, 1], jnp.int32)
    ref = jax.nn.dot_product_attention(q.astype(jnp.float32), k.astype(jnp.float32),
                                       v.astype(jnp.float32), key_value_seq_lengths=lens)
    got = model_lib.attention(q, k, v, lens)
    assert got.shape == q.shape and got.dtype == dtype
    tol = 1e-5 if dtype == jnp.float32 else 3e-2
    np.testing.assert_allclose(np.asarray(got, np.float32), ref, atol=tol, rtol=tol)
    # keys beyond the length never matter: change them, same output
    k2 = k.at[1, 5:].set(100.0)
    np.testing.assert_allclose(model_lib.attention(q, k2, v, lens)[1], got[1], atol=1e-6)
    loss = lambda f: lambda q, k, v: jnp.sum(f(q, k, v) ** 2)
    g_ref = jax.grad(loss(lambda *a: jax.nn.dot_product_attention(
        *a, key_value_seq_lengths=lens)), argnums=(0, 1, 2))(
        *(x.astype(jnp.float32) for x in (q, k, v)))
    g = jax.grad(loss(lambda *a: model_lib.attention(*a, lens)), argnums=(0, 1, 2))(
        *(x.astype(jnp.float32) for x in (q, k, v)))
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def _grid_masks(keys_bn: np.ndarray, heads: int) -> np.ndarray:
    """Dense [B, H, N, N] masks of factorized attention: first half of the heads within a time
    patch, second half within a joint, keys where keys_bn."""
    n = keys_bn.shape[1]
    jj, pp = np.arange(n) // (n // J), np.arange(n) % (n // J)
    per_head = [pp[:, None] == pp[None]] * (heads // 2) + [jj[:, None] == jj[None]] * (heads // 2)
    return np.stack(per_head)[None] & keys_bn[:, None, None, :]


def test_factorized_attention_attends_within_a_time_patch_or_a_joint():
    b, n, h, d = 3, J * 6, 4, 8
    kq, kk, kv, km = jax.random.split(jax.random.key(0), 4)
    q, k, v = (jax.random.normal(x, (b, n, h, d)) for x in (kq, kk, kv))
    keys = np.array(jax.random.uniform(km, (b, n)) < 0.5)
    keys[:, ::7] = True
    mask = _grid_masks(keys, h)
    rows = mask.any(-1).transpose(0, 2, 1)[..., None]  # [B, N, H, 1]: rows with a key
    ref = jax.nn.dot_product_attention(q, k, v, mask=jnp.asarray(mask))
    got = model_lib.factorized_attention(q, k, v, jnp.asarray(keys), J)
    assert got.shape == q.shape
    np.testing.assert_allclose(np.where(rows, got, 0), np.where(rows, ref, 0), atol=1e-5)
    loss = lambda f: lambda q, k, v: jnp.sum(jnp.where(rows, f(q, k, v), 0.0) ** 2)
    g_ref = jax.grad(loss(lambda *a: jax.nn.dot_product_attention(*a, mask=jnp.asarray(mask))),
                     argnums=(0, 1, 2))(q, k, v)
    g = jax.grad(loss(lambda *a: model_lib.factorized_attention(*a, jnp.asarray(keys), J)),
                 argnums=(0, 1, 2))(q, k, v)
    for a, r in zip(g, g_ref):
        np.testing.assert_allclose(a, r, atol=1e-4, rtol=1e-4)
    # a token of another joint AND another patch never matters: change it, same output
    far = (np.arange(n) // 6 != 0) & (np.arange(n) % 6 != 0)
    k2 = jnp.where(far[None, :, None, None], 100.0, k)
    np.testing.assert_array_equal(
        model_lib.factorized_attention(q, k2, v, jnp.asarray(keys), J)[:, 0], got[:, 0])


@pytest.mark.parametrize("with_keys", [False, True])
def test_query_attention_equals_the_grid_rows_it_computes(with_keys):
    b, n, h, d = 3, J * 6, 4, 8
    kx, kq, km = jax.random.split(jax.random.key(1), 3)
    qkv = jax.random.normal(kx, (b, n, 3, h, d))
    rows = jax.random.randint(kq, (b, 7), 0, n)  # any rows, repeats allowed
    keys = None
    if with_keys:
        keys = np.array(jax.random.uniform(km, (b, n)) < 0.6)
        keys[:, ::5] = True
        keys = jnp.asarray(keys)
    grid = lambda a: model_lib.factorized_attention(a[:, :, 0], a[:, :, 1], a[:, :, 2], keys, J)
    take = lambda a: jnp.take_along_axis(a, rows[:, :, None, None], axis=1)
    np.testing.assert_allclose(model_lib.query_attention(qkv, rows, keys, J), take(grid(qkv)),
                               atol=1e-5)
    loss = lambda f: lambda a: jnp.sum(jnp.sin(f(a)))
    np.testing.assert_allclose(
        jax.grad(loss(lambda a: model_lib.query_attention(a, rows, keys, J)))(qkv),
        jax.grad(loss(lambda a: take(grid(a))))(qkv), atol=1e-4)


def test_grid_encoder_and_query_rows_give_the_slot_encoders_numbers(monkeypatch):
    cfg, m = _model(factorized=True)
    p = T // cfg.model.patch
    n = J * p
    x = jax.random.normal(jax.random.key(0), (3, n, cfg.model.patch * C))
    vis = jnp.ones((3, n), bool).at[:, 4 * p:5 * p].set(False).at[1, 30:37].set(False)
    rows = jnp.broadcast_to(4 * p + jnp.arange(p), (3, p))  # the hidden joint's rows
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)

    def run(grid_share, query_share):
        monkeypatch.setattr(model_lib, "GRID_ENCODER_SHARE", grid_share)
        monkeypatch.setattr(model_lib, "QUERY_ROWS_SHARE", query_share)
        def loss(s):
            out = nnx.merge(graphdef, s, rest)(x, vis, n - p, rows)
            return jnp.sum(out ** 2), out
        (_, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        return out, grads

    (slots, g_slots), (new, g_new) = run(2.0, 0.0), run(0.75, 0.25)
    np.testing.assert_allclose(new, slots, atol=1e-5)
    for a, r in zip(jax.tree.leaves(g_new), jax.tree.leaves(g_slots)):
        np.testing.assert_allclose(a, r, atol=1e-4, rtol=1e-4)


def test_occlusion_parts_shared_by_a_strides_masks_give_each_masks_numbers():
    cfg = default.tiny()
    cfg.model.update(factorized=True, depth=2)  # blocks after the shared first one, too
    m = model_lib.create_model(cfg, num_frames=T, num_joints=J, num_channels=C)
    m.set_groups(np.array([0, 0] + list(range(1, J - 1))))  # joints 0 and 1 hidden together
    p = T // cfg.model.patch
    n = J * p
    tok = jax.random.normal(jax.random.key(0), (3, n, cfg.model.patch * C))
    valid = jnp.ones((3, n), bool).at[1, 2 * p + 3:2 * p + 9].set(False).at[2, 5 * p:6 * p].set(
        False)  # a gap, and a joint with no valid frame
    masks = masking.occlusion_masks(valid, J, m.group_j[...])
    assert m.shares_occlusions
    x_bnd, parts = nnx.jit(lambda m: m.occlusion_parts(tok, valid))(m)
    for j in range(J):
        rows = jnp.broadcast_to(j * p + jnp.arange(p), (3, p))
        shared = nnx.jit(lambda m: m.decoded_occluded(x_bnd, parts, masks[j],
                                                      jnp.full((3,), j)))(m)
        alone = nnx.jit(lambda m: m.decoded(tok, masks[j], n - p, rows))(m)
        np.testing.assert_allclose(shared, alone, rtol=1e-5, atol=1e-5)
    _, full = _model(factorized=False)
    assert not full.shares_occlusions  # full attention mixes every token in its first block


def test_factorized_model_reaches_every_token_in_two_blocks_and_needs_even_heads():
    cfg, m = _model(factorized=True)  # one encoder and one decoder block
    p = T // cfg.model.patch
    tok = jax.random.normal(jax.random.key(0), (1, J * p, cfg.model.patch * C))
    vis = jnp.ones((1, J * p), bool).at[:, :p].set(False)  # joint 0 hidden
    out = _apply(m, tok, vis, J * p - p)
    # joint 0's last token sees the last joint's first token: another joint at another time
    tok2 = tok.at[:, (J - 1) * p].add(1.0)
    assert not np.allclose(_apply(m, tok2, vis, J * p - p)[:, p - 1], out[:, p - 1])
    cfg.model.heads = 3
    with pytest.raises(ValueError, match="even number of heads"):
        model_lib.create_model(cfg, num_frames=T, num_joints=J, num_channels=C)


def test_a_config_from_before_factorized_attention_builds_full_attention():
    cfg = default.tiny()
    del cfg.model["factorized"]  # workdirs written before the option existed
    m = model_lib.create_model(cfg, num_frames=T, num_joints=J, num_channels=C)
    assert not m.factorized and not any(b.factorized for b in [*m.encoder, *m.decoder])
