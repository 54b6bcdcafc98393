"""GenGaitMAE: shapes, stats, and that hidden tokens never reach the output."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gengait_jax import masking, model as model_lib
from gengait_jax.configs import default

T, J, C = 100, 10, 3


@functools.partial(nnx.jit, static_argnums=3)
def _apply(m, tok, vis, k):
    """Jitted forward (eager dispatch compiles op by op: slow on fake devices)."""
    return m(tok, vis, k)


def _model():
    cfg = default.tiny()
    return cfg, model_lib.create_model(cfg, num_frames=T, num_joints=J, num_channels=C)


def test_output_shapes_and_keep_count():
    cfg, m = _model()
    x = jax.random.normal(jax.random.key(0), (2, T, J, C))
    tok = m.tokens(x)
    n = J * T // cfg.model.patch
    assert tok.shape == (2, n, cfg.model.patch * C)
    k = model_lib.num_keep_for(cfg, n)
    assert k == round(n * (1 - cfg.mask.ratio))
    vis = jax.vmap(lambda key: masking.random_tokens(key, jnp.ones(n, bool), k))(
        jax.random.split(jax.random.key(1), 2))
    assert _apply(m, tok, vis, k).shape == tok.shape
    assert m.untokens(_apply(m, tok, vis, k), m.reference(x)).shape == x.shape


def test_changing_hidden_tokens_does_not_change_output():
    cfg, m = _model()
    n = J * T // cfg.model.patch
    tok = jax.random.normal(jax.random.key(0), (2, n, cfg.model.patch * C))
    vis = jnp.arange(n)[None].repeat(2, 0) % 3 == 0
    k = int(vis.sum(-1).max()) + 4  # a few padding slots, which point at hidden tokens
    out = _apply(m, tok, vis, k)
    tok2 = jnp.where(vis[..., None], tok, 1e4 * jax.random.normal(jax.random.key(2), tok.shape))
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
    params = nnx.state(m, nnx.Param)
    stats = nnx.state(m, model_lib.Stat)
    assert set(jax.tree_util.tree_leaves(jax.tree.map(jnp.shape, stats))) <= {2, T, J, C}
    flat = {"/".join(map(str, k)) for k, _ in nnx.to_flat_state(params)}
    assert not any(n in k for n in ("mean_jc", "std_jc", "curve_stjc") for k in flat)


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
