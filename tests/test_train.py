"""Training: sharding-invariant steps, what the encoder and the loss see, resumption."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gengait_jax import model as model_lib, objective, train, train_state
from gengait_jax.configs import default

T, J, C = 100, 10, 3
SHAPE = dict(num_frames=T, num_joints=J, num_channels=C)


def _strides(n: int, seed: int, dropout_every: int = 4) -> list[dict]:
    """Sinusoid 'strides' with per-subject amplitude/phase; some carry a dropout gap."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, T, endpoint=False)[:, None, None]
    out = []
    for i in range(n):
        amp, ph = rng.uniform(5, 30, (1, J, C)), rng.uniform(0, 2 * np.pi, (1, J, C))
        x = amp * np.sin(t + ph) + 0.3 * amp * np.sin(2 * t + ph) + rng.normal(0, .5, (T, J, C))
        valid = np.ones((T, J), bool)
        if i % dropout_every == 0:
            s = rng.integers(0, T - 12)
            valid[s:s + 9, rng.integers(0, J)] = False
        out.append(dict(angles=np.where(valid[..., None], x, np.nan).astype(np.float32),
                        valid=valid))
    return out


def _stack(rows: list[dict]) -> dict:
    """List of strides -> batch dict of numpy arrays."""
    return {k: np.stack([r[k] for r in rows]) for k in ("angles", "valid")}


def _cfg(**kw):
    """The tiny preset without the (compile-heavy) occlusion eval."""
    cfg = default.tiny()
    cfg.eval_occlusion = False
    cfg.update(kw)
    return cfg


def _stats():
    """Mean/SD of the in-memory strides (per joint and channel)."""
    x = _stack(_strides(64, 0))["angles"]
    return np.nanmean(x, (0, 1)), np.nanstd(x, (0, 1))


def _params(state) -> list[np.ndarray]:
    """The model's parameters as host arrays."""
    return [np.asarray(x) for x in jax.tree.leaves(nnx.filter_state(state["model"], nnx.Param))]


def test_sharded_step_equals_single_device_step():
    batch_np = _stack(_strides(_cfg().batch_size, 1))
    mean, std = _stats()
    out = []
    for devices, cfg in ((jax.devices(), _cfg(mesh_model=2)), (jax.devices()[:1], _cfg())):
        mesh = train_state.make_mesh(cfg, devices)
        graphdef, abstract = train_state.abstract_state(cfg, SHAPE)
        shardings = train_state.state_shardings(abstract, mesh)
        state = train_state.init_state(cfg, SHAPE, shardings, mean, std)
        step, _ = train.jit_steps(cfg, graphdef, shardings, mesh)
        batch = jax.device_put(batch_np, train_state.batch_sharding(mesh))
        losses = []
        for _ in range(2):
            state, metrics = step(state, batch, jax.random.key(0))
            losses.append(float(metrics["loss"]))
        qkv = state["model"]["encoder"][0]["qkv"]["kernel"][...]
        out.append((losses, _params(state), qkv.sharding))
    (loss8, p8, sh8), (loss1, p1, _) = out
    assert jax.device_count() == 8 and sh8.mesh.shape == {"data": 4, "model": 2}
    assert sh8.spec == jax.sharding.PartitionSpec(None, "model")  # really sharded
    np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
    for a, b in zip(p8, p1):  # Adam divides by sqrt(nu): ~1e-6 noise on near-zero grads
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _model_and_batch(n=8):
    """A tiny model with stats and a batch with dropouts."""
    cfg = _cfg()
    model = model_lib.create_model(cfg, **SHAPE)
    model.set_stats(*_stats())
    return cfg, model, _stack(_strides(n, 2, dropout_every=2))


def test_encoder_input_is_the_visible_tokens(monkeypatch):
    cfg, model, batch = _model_and_batch()
    seen = []
    encode = model_lib.GenGaitMAE.encode

    def spy(self, tokens, visible, num_keep):
        latents, keep_valid, restore = encode(self, tokens, visible, num_keep)
        seen.append((num_keep, latents.shape, visible, keep_valid))
        return latents, keep_valid, restore

    monkeypatch.setattr(model_lib.GenGaitMAE, "encode", spy)

    @nnx.jit
    def run(m, b):
        objective.mixture_loss(m, b, jax.random.key(3), cfg)
        return [(v, k) for _, _, v, k in seen]

    got = run(model, batch)
    n = J * T // cfg.model.patch
    assert [s[0] for s in seen] == [model_lib.num_keep_for(cfg, n), n - n // J]
    valid = np.asarray(objective.prepare(model, batch)[1])
    rows = objective.split_groups(valid, *objective.group_pattern(cfg.mask.joint_fraction))
    for (k, shape, _, _), (vis, keep_valid), valid_g in zip(seen, got, rows):
        vis, keep_valid = np.asarray(vis), np.asarray(keep_valid)
        assert shape == (vis.shape[0], k, cfg.model.width)  # encoder length = K slots
        # Every visible token has a slot, every other slot is padding excluded from attention.
        np.testing.assert_array_equal(keep_valid.sum(-1), vis.sum(-1))
        assert not (vis & ~valid_g).any()  # invalid tokens are never visible
    # Random group: K visible tokens per row, no padding; joint group: 1..3 joints hidden.
    (k_r, *_), ((vis_r, keep_r), (vis_j, _)) = seen[0], got
    assert (np.asarray(vis_r).sum(-1) == k_r).all() and np.asarray(keep_r).all()
    hidden_j = (~np.asarray(vis_j)).reshape(-1, J, n // J).all(-1).sum(-1)
    assert ((hidden_j >= 1) & (hidden_j <= cfg.mask.max_hidden_joints)).all()


def test_invalid_tokens_never_reach_the_loss():
    cfg, model, batch = _model_and_batch()
    invalid = ~batch["valid"]
    assert invalid.any()
    loss_grad = nnx.jit(jax.value_and_grad(lambda a, m: objective.mixture_loss(
        m, dict(angles=a, valid=batch["valid"]), jax.random.key(5), cfg)[0]))
    clean = np.where(invalid[..., None], 0.0, batch["angles"]).astype(np.float32)
    base, grad = loss_grad(jnp.asarray(clean), model)
    for fill in (1e6, np.nan, -3.0):
        dirty = np.where(invalid[..., None], fill, clean).astype(np.float32)
        loss, grad2 = loss_grad(jnp.asarray(dirty), model)
        assert float(loss) == float(base)
        np.testing.assert_array_equal(grad2, grad)
    grad = np.asarray(grad)
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
    tok_invalid = ~np.asarray(objective.prepare(model, batch)[1])  # whole tokens
    frame_invalid = np.repeat(tok_invalid.reshape(-1, J, T // 4), 4, axis=-1).transpose(0, 2, 1)
    assert frame_invalid.sum() > invalid.sum()  # tokens with some valid frames exist
    assert (grad[frame_invalid] == 0).all()  # ...and none of their frames gets a gradient


def test_bad_preset_is_one_line_error():
    r = subprocess.run([sys.executable, "-m", "launch.train",
                        "--config=gengait_jax/configs/default.py:nope", "--workdir=/tmp/x"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "unknown preset" in r.stderr
