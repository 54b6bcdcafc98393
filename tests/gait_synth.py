"""Synthetic coupled gait strides and a tiny trained GenGait model, shared by the inference tests.

Every (joint, channel) follows a fixed smooth template; a stride scales all templates by one
shared amplitude, shifts them by one shared phase (the other side half a cycle apart), and adds
a small per-(joint, channel) offset (SD 1.5 deg) and noise. Each joint is thus predictable from
the rest of the body up to ~1.5 deg, so a +15 deg offset on one joint is a clear anomaly.
The model is trained once per test process (`trained()`, cached): ~6 s on 2 CPU cores.
"""

from __future__ import annotations

import functools
import json
import pathlib

import jax
import numpy as np
import optax
from flax import nnx

from gengait_jax import model as model_lib, objective
from gengait_jax.configs import default
from tfds_gait import joints

T, C = 100, 3
NAMES = joints.joint_names("lower")
J = len(NAMES)
SHAPE = dict(num_frames=T, num_joints=J, num_channels=C)


def _templates(seed: int = 123) -> np.ndarray:
    """Fourier coefficients [J/2, C, 3 harmonics, 2] of one side's joint curves."""
    rng = np.random.default_rng(seed)
    amp = rng.uniform(3.0, 20.0, (J // 2, C, 1, 1)) / np.arange(1, 4)[None, None, :, None]
    return amp * rng.normal(size=(J // 2, C, 3, 2)) / np.sqrt(2)


def strides(n: int, seed: int, *, offset_sd: float = 1.5, noise: float = 0.3,
            dropout_every: int = 0, p_left: float = 0.0, subjects: int = 8) -> dict:
    """n healthy strides: angles [n,T,J,C] float32, valid [n,T,J], side [n], subject [n]."""
    rng = np.random.default_rng(seed)
    coef = _templates()
    h = np.arange(1, 4)
    side = np.where(rng.random(n) < p_left, "L", "R")
    amp = rng.normal(1.0, 0.12, n)
    phase = rng.normal(0.0, 0.02, n)
    t = np.arange(T) / T
    out = np.empty((n, T, J, C), np.float32)
    for i in range(n):
        for s_idx, s in enumerate(joints.SIDES):  # the stride's own side starts at 0
            shift = phase[i] + (0.0 if s == side[i] else 0.5)
            arg = 2 * np.pi * h[None, :] * (t[:, None] + shift)  # [T, 3]
            curves = (np.einsum("th,jch->tjc", np.cos(arg), coef[..., 0])
                      + np.einsum("th,jch->tjc", np.sin(arg), coef[..., 1]))
            out[i, :, s_idx * J // 2:(s_idx + 1) * J // 2] = amp[i] * curves
    out += rng.normal(0, offset_sd, (n, 1, J, C)) + rng.normal(0, noise, out.shape)
    valid = np.ones((n, T, J), bool)
    if dropout_every:
        for i in range(0, n, dropout_every):
            s = rng.integers(0, T - 12)
            valid[i, s:s + 10, rng.integers(0, J)] = False
    angles = np.where(valid[..., None], out, np.nan).astype(np.float32)
    subject = np.array([f"S{seed}-{i}" for i in rng.integers(0, subjects, n)])
    return dict(angles=angles, valid=valid, side=side, subject=subject)


def as_strides(d: dict):
    """A `data.Strides` of a strides() dict."""
    from gengait_jax import data
    return data.from_arrays(d["angles"], d["valid"], side=d["side"], subject=d["subject"],
                            joint_names=NAMES)


def config():
    """The tiny preset trained by `trained()`, with 10-frame patches (100 tokens: fast)."""
    cfg = default.tiny()
    cfg.eval_occlusion = False
    cfg.model.patch = 10
    return cfg


def train(cfg, steps: int, *, lr: float = 3e-3, p_left: float = 0.0, log_every: int = 0):
    """(model, meta) trained with the project's mixture loss on synthetic strides."""
    data = strides(2048 if p_left else 512, 0, p_left=p_left)
    mean, std = np.nanmean(data["angles"], (0, 1)), np.nanstd(data["angles"], (0, 1))
    model = model_lib.create_model(cfg, **SHAPE)
    model.set_stats(mean, std)
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, min(50, steps // 5), steps, lr * 0.05)
    opt = nnx.Optimizer(model, optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched)),
                        wrt=nnx.Param)

    @nnx.jit
    def step(m, o, batch, key):
        loss, grads = nnx.value_and_grad(
            lambda mm: objective.mixture_loss(mm, batch, key, cfg)[0])(m)
        o.update(m, grads)
        return loss

    rng = np.random.default_rng(1)
    for i in range(steps):
        idx = rng.choice(len(data["angles"]), cfg.batch_size * 2, replace=False)
        batch = {k: data[k][idx] for k in ("angles", "valid")}
        loss = step(model, opt, batch, jax.random.key(i))
        if log_every and (i % log_every == 0 or i == steps - 1):
            print(f"step {i} loss {float(loss):.4f}", flush=True)
    meta = dict(dataset="synthetic", joint_names=list(NAMES), model_id="gengait-synth-test",
                stats=dict(mean=mean.tolist(), std=std.tolist()), **SHAPE)
    return model, meta


@functools.cache
def trained(steps: int = 400):
    """(model, cfg, meta) of a tiny model trained on synthetic strides (cached per process)."""
    cfg = config()
    model, meta = train(cfg, steps)
    return model, cfg, meta


@functools.cache
def calibration_of(n: int = 240, seed: int = 40, subjects: int = 24, **fit_kw) -> dict:
    """A calibration of `trained()` on n held-out healthy strides of `subjects` people
    (`fit_kw`: calibration.fit's flag rule options)."""
    from gengait_jax import calibration, scoring
    model, _, meta = trained()
    d = strides(n, seed, subjects=subjects)
    res = scoring.score_strides(model, d["angles"], d["valid"]).residual_ntjc
    return calibration.fit(res, d["side"], d["subject"], NAMES, model_id=meta["model_id"],
                           x_ntjc=d["angles"], **fit_kw)


def write_workdir(path: pathlib.Path, model=None, cfg=None, meta=None,
                  calibrated: bool = True) -> pathlib.Path:
    """A training workdir (config.json, model_meta.json, checkpoint, calibration.json) of
    `trained()`."""
    import orbax.checkpoint as ocp

    from gengait_jax import train_state
    from gengait_jax.workdir import Workdir
    if model is None:
        model, cfg, meta = trained()
    path.mkdir(parents=True, exist_ok=True)
    if calibrated:
        Workdir(path).write_calibration(calibration_of())
    (path / "config.json").write_text(cfg.to_json_best_effort(indent=2))
    (path / "model_meta.json").write_text(json.dumps(meta))
    state = nnx.state(train_state.TrainState(model, train_state.make_tx(cfg)))
    with ocp.CheckpointManager(path / "checkpoints", item_names=("state", "data")) as mngr:
        mngr.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             data=ocp.args.JsonSave({})))
        mngr.wait_until_finished()
    return path
