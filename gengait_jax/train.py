"""Training and evaluation: compiled sharded steps, the loop, checkpoints, metrics.

`train_and_evaluate(cfg, workdir)` trains (resuming from the newest checkpoint in
`workdir/checkpoints`), and `restore_model(workdir)` gives the trained model for inference.
The same code runs on 1 CPU, 1 GPU or a multi-host TPU slice (after
`jax.distributed.initialize()`): every host feeds its shard of the global batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import signal
import threading
import time
import warnings
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from gengait_jax import augment, checkpointing, model as model_lib, objective, train_state
from gengait_jax.train_log import MetricsWriter, log_compiled


@dataclasses.dataclass(frozen=True)
class GaitData:
    """What training needs from a dataset: random-access splits and train-split stats."""
    name: str
    train: Sequence[dict]
    validation: Sequence[dict]
    mean_jc: np.ndarray
    std_jc: np.ndarray
    joint_names: tuple[str, ...]
    curves_stjc: np.ndarray | None = None  # mean curves of left and right train strides
    groups_j: np.ndarray | None = None  # occlusion group per joint (None: one per joint)

    def shape(self) -> dict:
        """num_frames / num_joints / num_channels of one stride."""
        t, j, c = np.shape(self.train[0]["angles"])
        return dict(num_frames=int(t), num_joints=int(j), num_channels=int(c))


def prepare_data(cfg: ml_collections.ConfigDict) -> None:
    """Builds the TFDS dataset if it is not there yet (process 0 first, then the others)."""
    import tensorflow_datasets as tfds
    import tfds_gait  # noqa: F401  (registers gait_cycles)
    dl = tfds.download.DownloadConfig(manual_dir=cfg.data.manual_dir or None)
    build = lambda: tfds.builder(cfg.data.name, data_dir=cfg.data.data_dir).download_and_prepare(
        download_config=dl)
    if jax.process_index() == 0:
        build()
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("prepare_data")
        if jax.process_index() != 0:
            build()  # a no-op where data_dir is shared; a local copy on per-host disks


def occlusion_groups(x_stjc: np.ndarray, rtol: float = 1e-4) -> np.ndarray:
    """[J] group ids: joints whose every channel is the same signal up to sign on all strides
    (NaN = invalid) share a group, e.g. Plug-in-Gait's LPelvis and RPelvis."""
    j = x_stjc.shape[2]
    group = np.arange(j)
    scale = np.nanstd(x_stjc, axis=(0, 1)) + 1e-6  # [J, C]
    for a in range(j):
        for b in range(a + 1, j):
            both = np.isfinite(x_stjc[:, :, a]).all(-1) & np.isfinite(x_stjc[:, :, b]).all(-1)
            if group[b] != b or not both.any():
                continue
            xa, xb = x_stjc[:, :, a][both], x_stjc[:, :, b][both]  # [n, C]
            tol = rtol * np.maximum(scale[a], scale[b])
            tied = (np.abs(xa - xb).max(0) <= tol) | (np.abs(xa + xb).max(0) <= tol)
            if tied.all():
                group[b] = group[a]
    return group.astype(np.int32)


def mean_curves(x_stjc: np.ndarray, left_s: np.ndarray) -> np.ndarray:
    """[2, T, J, C] mean over finite values of the left, then right strides (a side without
    strides takes the mean of all strides; NaN where no stride has a value, which
    `GenGaitMAE.set_curves` turns into the joint's mean)."""
    out = []
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for keep in (left_s, ~left_s):
            out.append(np.nanmean(x_stjc[keep] if keep.any() else x_stjc, axis=0))
    return np.stack(out).astype(np.float32)


def train_references(source: Sequence[dict], with_curves: bool) -> dict:
    """What the model takes from the train split besides the stats: occlusion groups [J] and
    (if asked) the mean curves [2, T, J, C]."""
    from gengait_jax import input_pipeline
    rows = input_pipeline.stack([source[i] for i in range(len(source))])
    x = np.where(rows["valid"][..., None], rows["angles"], np.nan)
    return {"groups_j": occlusion_groups(x),
            "curves_stjc": mean_curves(x, rows["left"]) if with_curves else None}


def load_data(cfg: ml_collections.ConfigDict) -> GaitData:
    """Opens the prepared TFDS splits (array_record, no TensorFlow) and the train stats."""
    import tensorflow_datasets as tfds
    import tfds_gait.stats
    src = lambda split: tfds.data_source(cfg.data.name, split=split, data_dir=cfg.data.data_dir)
    stats = tfds_gait.stats.load_stats(cfg.data.name, cfg.data.data_dir)
    train = src(cfg.data.train_split)
    refs = train_references(train, bool(cfg.model.get("mean_curve_residual")))
    return GaitData(cfg.data.name, train, src(cfg.data.val_split),
                    np.asarray(stats["mean"]), np.asarray(stats["std"]),
                    tuple(stats["joint_names"]), refs["curves_stjc"], refs["groups_j"])


def _flops(compiled) -> float:
    """XLA's FLOP estimate of one call of a compiled function (0 if unknown)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", 0.0))


def jit_steps(cfg, graphdef, shardings, mesh, joint_names: Sequence[str] = ()):
    """The train and eval steps, jitted with explicit in/out shardings (state donated).

    `joint_names` give the left/right pairs that the mirror augmentation swaps."""
    mirror_perm = augment.mirror_permutation(joint_names) if joint_names else None
    repl, data_sh = NamedSharding(mesh, P()), train_state.batch_sharding(mesh)

    def train_step(state, batch, rng):
        """One optimizer step on a global batch; the mask key is fold_in(rng, step)."""
        ts = nnx.merge(graphdef, state)
        key = jax.random.fold_in(rng, ts.opt.step[...])
        lr = train_state.lr_schedule(cfg)(ts.opt.step[...])
        grad_fn = nnx.value_and_grad(lambda m: objective.mixture_loss(m, batch, key, cfg,
                                                                     mirror_perm),
                                     has_aux=True)
        (loss, aux), grads = grad_fn(ts.model)
        ts.opt.update(ts.model, grads)
        metrics = dict(loss=loss, grad_norm=optax.tree.norm(grads), lr=lr, **aux)
        return nnx.state(ts), metrics

    def eval_step(state, batch, rng):
        """Reconstruction sums on a (padded) validation batch with fixed masks."""
        return objective.eval_sums(nnx.merge(graphdef, state).model, batch, rng, cfg)

    train = jax.jit(train_step, in_shardings=(shardings, data_sh, repl),
                    out_shardings=(shardings, repl), donate_argnums=(0,))
    evals = jax.jit(eval_step, in_shardings=(shardings, data_sh, repl), out_shardings=repl)
    return train, evals


def batch_spec(batch_size: int, shape: dict, sharding, with_mask: bool = False) -> dict:
    """Abstract global batch (ShapeDtypeStructs with their sharding)."""
    t, j, c = shape["num_frames"], shape["num_joints"], shape["num_channels"]
    out = dict(angles=jax.ShapeDtypeStruct((batch_size, t, j, c), jnp.float32, sharding=sharding),
               valid=jax.ShapeDtypeStruct((batch_size, t, j), jnp.bool_, sharding=sharding),
               left=jax.ShapeDtypeStruct((batch_size,), jnp.bool_, sharding=sharding))
    if with_mask:
        out["mask"] = jax.ShapeDtypeStruct((batch_size,), jnp.bool_, sharding=sharding)
    return out


def compile_steps(cfg, graphdef, abstract, shardings, mesh, shape: dict,
                  joint_names: Sequence[str] = ()):
    """Lowers and compiles both steps once, logs their memory and FLOPs."""
    train, evals = jit_steps(cfg, graphdef, shardings, mesh, joint_names)
    state_in = train_state.restore_target(abstract, shardings)
    key = jax.eval_shape(lambda: jax.random.key(0))
    key_in = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=NamedSharding(mesh, P()))
    data_sh = train_state.batch_sharding(mesh)
    t0 = time.time()
    train_c = train.lower(state_in, batch_spec(cfg.batch_size, shape, data_sh), key_in).compile()
    t1 = time.time()
    eval_c = evals.lower(state_in, batch_spec(cfg.eval_batch_size, shape, data_sh, True),
                         key_in).compile()
    logging.info("compiled train step in %.1f s, eval step in %.1f s", t1 - t0, time.time() - t1)
    log_compiled("train_step", train_c)
    log_compiled("eval_step", eval_c)
    return train_c, eval_c, _flops(train_c)


def _global_batch(local: dict, sharding: NamedSharding, global_rows: int | None) -> dict:
    """Host-local numpy rows -> global jax.Arrays sharded on 'data'."""
    out = {}
    for k in ("angles", "valid", "left", "mask"):
        if k in local:
            x = np.asarray(local[k])
            shape = None if global_rows is None else (global_rows,) + x.shape[1:]
            out[k] = jax.make_array_from_process_local_data(sharding, x, shape)
    return out


def evaluate(eval_step, state, data: GaitData, cfg, mesh) -> dict:
    """Validation losses (mean MSE over hidden valid tokens) per mask type + the mixture."""
    from gengait_jax import input_pipeline
    sums: dict[str, list[float]] = {}
    sh, rng = train_state.batch_sharding(mesh), jax.random.key(cfg.seed + 1)
    for batch in input_pipeline.eval_batches(data.validation, cfg.eval_batch_size):
        # Every host holds the whole eval batch: global shape == local shape.
        out = jax.device_get(eval_step(state, _global_batch(batch, sh, len(batch["mask"])), rng))
        for name, (s, c) in out.items():
            acc = sums.setdefault(name, [0.0, 0.0])
            acc[0], acc[1] = acc[0] + float(s), acc[1] + float(c)
    res = {f"val_{k}_loss": s / max(c, 1.0) for k, (s, c) in sums.items()}
    f = cfg.mask.joint_fraction
    res["val_loss"] = (1 - f) * res["val_random_loss"] + f * res["val_joint_loss"]
    return res


def _check_resumable(workdir: epath.Path, cfg, meta: dict) -> None:
    """Refuses to resume a workdir whose model/data differ (shapes would not match)."""
    ckpt = workdir / "checkpoints"
    if not (workdir / "config.json").exists() or not ckpt.exists() or not any(ckpt.iterdir()):
        return
    old = json.loads((workdir / "config.json").read_text())
    new = json.loads(cfg.to_json_best_effort())
    diff = [k for k in ("model",) if old.get(k) != new.get(k)]
    if old.get("data", {}).get("name") != cfg.data.name:
        diff.append("data.name")
    old_meta = json.loads((workdir / "model_meta.json").read_text())
    if old_meta.get("joint_names") != meta["joint_names"]:
        diff.append("joint_names")
    if diff:
        raise ValueError(f"{workdir} holds checkpoints of another config (differs in "
                         f"{', '.join(diff)}); use a new --workdir")


def _write_run_files(workdir: epath.Path, cfg, data: GaitData) -> dict:
    """workdir/config.json (resolved config) and workdir/model_meta.json; returns the meta."""
    cfg_json = cfg.to_json_best_effort(indent=2, sort_keys=True)
    meta = dict(dataset=data.name, joint_names=list(data.joint_names), **data.shape(),
                stats=dict(mean=np.asarray(data.mean_jc).tolist(),
                           std=np.asarray(data.std_jc).tolist()))
    digest = hashlib.sha1((cfg_json + json.dumps(meta, sort_keys=True)).encode()).hexdigest()
    meta["model_id"] = f"gengait-{cfg.get('name', 'custom')}-{digest[:10]}"
    _check_resumable(workdir, cfg, meta)
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(cfg_json)
        (workdir / "model_meta.json").write_text(json.dumps(meta, indent=2))
    return meta


class _StopRequest:
    """SIGINT (Ctrl-C) sets a flag; the loop saves a checkpoint and stops between steps."""

    def __init__(self):
        self.requested, self._prev = False, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._prev = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, *_):
        if self.requested:  # a second Ctrl-C aborts at once
            raise KeyboardInterrupt
        self.requested = True
        logging.warning("interrupt: saving a checkpoint after this step (Ctrl-C again to abort)")

    def __exit__(self, *_):
        if self._prev is not None:
            signal.signal(signal.SIGINT, self._prev)


def _check_finite(step: int, metrics: dict, mngr) -> dict:
    """Host copy of a step's metrics; raises at once on a non-finite loss."""
    m = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if not np.isfinite(m["loss"]):
        mngr.wait_until_finished()
        raise FloatingPointError(
            f"non-finite loss ({m['loss']}) at step {step}; training stopped, last good "
            f"checkpoint: step {mngr.latest_step()}")
    return m


@dataclasses.dataclass
class _Run:
    """Everything the loop needs besides the state."""
    cfg: ml_collections.ConfigDict
    workdir: epath.Path
    data: GaitData
    mesh: jax.sharding.Mesh
    mngr: ocp.CheckpointManager
    writer: MetricsWriter
    it: Any
    train_step: Any
    eval_step: Any
    flops: float  # per step, all devices


def _setup(cfg, workdir: epath.Path, data: GaitData):
    """Builds (or restores) the state in its shardings and compiles the steps once."""
    from gengait_jax import input_pipeline
    shape = data.shape()
    meta = _write_run_files(workdir, cfg, data)
    mesh = train_state.make_mesh(cfg)
    graphdef, abstract = train_state.abstract_state(cfg, shape)
    shardings = train_state.state_shardings(abstract, mesh)
    mngr = checkpointing.manager(workdir, cfg)
    it = input_pipeline.train_iterator(data.train, cfg.batch_size, seed=cfg.seed,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count())
    state, start = checkpointing.restore_newest(mngr, train_state.restore_target(abstract, shardings), it)
    if start:
        logging.info("resumed from %s at step %d", workdir / "checkpoints", start)
    else:
        state = train_state.init_state(cfg, shape, shardings, data.mean_jc, data.std_jc,
                                       data.curves_stjc, data.groups_j)
    with jax.set_mesh(mesh):
        train_c, eval_c, flops = compile_steps(cfg, graphdef, abstract, shardings, mesh, shape,
                                                  data.joint_names)
    n_params = sum(x.size for x in jax.tree.leaves(nnx.filter_state(abstract["model"], nnx.Param)))
    logging.info("model %s: %d params; mesh %s; global batch %d; steps %d..%d",
                 meta["model_id"], n_params, dict(mesh.shape), cfg.batch_size, start,
                 cfg.total_steps)
    writer = MetricsWriter(workdir, start, jax.process_index() == 0)
    run = _Run(cfg, workdir, data, mesh, mngr, writer, it, train_c, eval_c,
               flops * mesh.devices.size)
    return run, state, start


def _train_row(run: _Run, window: list[dict], seconds: float, step: int) -> dict:
    """One metrics row: window means, the current lr, throughput and time left."""
    dt = seconds / len(window)
    row = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
    row.update(step=step, lr=window[-1]["lr"], step_time_s=dt,
               seq_per_s=run.cfg.batch_size / dt, flops_per_s=run.flops / dt,
               eta_s=dt * (run.cfg.total_steps - step))
    return row


def _loop(run: _Run, state, start: int, stop: _StopRequest, stop_after: int | None) -> dict:
    """Steps start..total_steps with logging, validation and checkpoints; returns metrics."""
    cfg, mngr = run.cfg, run.mngr
    rng, data_sh = jax.random.key(cfg.seed), train_state.batch_sharding(run.mesh)
    final: dict[str, Any] = {"step": start}
    window, pending, t_win = [], None, time.time()
    for step in range(start, cfg.total_steps):
        batch = _global_batch(next(run.it), data_sh, cfg.batch_size)
        state, metrics = run.train_step(state, batch, rng)
        if pending is not None:  # the previous step's metrics: keeps one step in flight
            window.append(_check_finite(*pending, mngr))
        pending, s = (step + 1, metrics), step + 1
        last = s == cfg.total_steps
        halt = stop.requested or s == stop_after or mngr.reached_preemption(s)
        log, save = s % cfg.log_every == 0 or last or halt, (
            s % cfg.checkpoint_every == 0 or last or halt)
        evals = s % cfg.eval_every == 0 or last
        if not (log or save or evals):
            continue
        window.append(_check_finite(*pending, mngr))  # never checkpoint a non-finite state
        pending, t_pause = None, time.time()
        if log:
            final.update(row := _train_row(run, window, t_pause - t_win, s))
            run.writer.write(row)
            window, t_win = [], t_pause
        if save:
            checkpointing.save(mngr, s, state, run.it, force=True)
        if evals:
            row = dict(step=s, **evaluate(run.eval_step, state, run.data, cfg, run.mesh))
            run.writer.write(row, eval_s=time.time() - t_pause)
            final.update(row)
        t_win += time.time() - t_pause  # step times exclude saving and validation
        if halt:
            if stop.requested:
                raise KeyboardInterrupt(f"interrupted at step {s}; checkpoint saved in "
                                        f"{run.workdir / 'checkpoints'}; rerun to resume")
            return dict(final, stopped_at=s)
    return final


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str, *,
                       data: GaitData | None = None, stop_after: int | None = None) -> dict:
    """Trains cfg on its dataset in workdir (resuming if possible); returns final metrics.

    `data` replaces the TFDS dataset (tests); `stop_after` stops like a Ctrl-C after that
    step (checkpoint saved), to test resumption.
    """
    workdir = checkpointing.workdir_path(workdir)
    run, state, start = _setup(cfg, workdir, load_data(cfg) if data is None else data)
    try:
        with _StopRequest() as stop, jax.set_mesh(run.mesh):
            if start >= cfg.total_steps:
                logging.info("already trained to step %d: validation only", start)
                return dict(step=start, **evaluate(run.eval_step, state, run.data, cfg,
                                                   run.mesh))
            return _loop(run, state, start, stop, stop_after)
    finally:
        run.mngr.wait_until_finished()
        run.mngr.close()
        run.writer.close()


def _check_checkpoint_shapes(step_dir: epath.Path, target) -> None:
    """Compares array shapes before reading any (a failed orbax restore leaves reads in flight
    that print 'Event loop is closed' tracebacks at exit)."""
    handler = ocp.StandardCheckpointHandler()
    try:
        saved = handler.metadata(step_dir / "state")
    finally:
        handler.close()
    shapes = lambda tree: sorted(tuple(x.shape) for x in jax.tree.leaves(tree)
                                 if hasattr(x, "shape"))
    if shapes(saved) != shapes(target):
        raise ValueError(f"{step_dir}: checkpoint does not match the workdir's config.json "
                         f"(its arrays have other shapes: another model config?)")


def restore_model(workdir: str, step: int | None = None
                  ) -> tuple[model_lib.GenGaitMAE, ml_collections.ConfigDict, dict]:
    """(model with trained params and stats, config, meta) from a workdir, for inference."""
    workdir = checkpointing.workdir_path(workdir)
    if not (workdir / "config.json").exists():
        raise FileNotFoundError(f"no config.json in {workdir}: not a training workdir")
    cfg = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    meta = json.loads((workdir / "model_meta.json").read_text())
    shape = {k: meta[k] for k in ("num_frames", "num_joints", "num_channels")}
    graphdef, abstract = train_state.abstract_state(cfg, shape)
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one),
                          abstract)
    with ocp.CheckpointManager(workdir / "checkpoints", item_names=("state", "data")) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}")
        _check_checkpoint_shapes(workdir / "checkpoints" / str(step), target)
        try:
            got = mngr.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target)))
        except (ValueError, KeyError, TypeError) as e:  # orbax: shapes/tree of another config
            first = " ".join((str(e).splitlines() or [""])[0].split()[:20])
            raise ValueError(f"{workdir / 'checkpoints' / str(step)}: checkpoint does not match "
                             f"the workdir's config.json ({type(e).__name__}: {first})") from None
    model = nnx.merge(graphdef, got.state).model
    meta = dict(meta, step=int(step))
    return model, cfg, meta
