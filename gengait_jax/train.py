"""Training: compiled sharded steps, the loop, checkpoints, metrics; the K fold models.

`train_and_evaluate(cfg, workdir)` trains one model (resuming from the newest checkpoint in
`workdir/checkpoints`); `train_folds` trains the K subject-disjoint fold models of the
out-of-fold calibration in `workdir/folds/<k>`. The same code runs on 1 CPU, 1 GPU or a
multi-host TPU slice (after `jax.distributed.initialize()`): every host feeds its shard of the
global batch. Inference restores models with `checkpointing.restore_model` (never this module).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import signal
import threading
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tensorflow_datasets as tfds
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from gengait_jax import augment, calibrate, checkpointing, data as data_lib, input_pipeline
from gengait_jax import masking, objective, train_state
from gengait_jax.train_log import MetricsWriter, log_compiled
from gengait_jax.workdir import Workdir


@dataclasses.dataclass(frozen=True)
class TrainData:
    """What training needs: the training strides, the held-out ones (or none) and the
    references computed from the training strides."""
    name: str
    train: data_lib.Strides
    validation: data_lib.Strides | None
    refs: data_lib.References


def prepare_data(cfg: ml_collections.ConfigDict) -> None:
    """Builds the TFDS dataset if it is not there yet (process 0 first, then the others)."""
    dl = tfds.download.DownloadConfig(manual_dir=cfg.data.manual_dir or None)
    build = lambda: tfds.builder(cfg.data.name, data_dir=cfg.data.data_dir,
                                 workers=cfg.data.get("workers", 0)).download_and_prepare(
        download_config=dl)
    if jax.process_index() == 0:
        build()
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("prepare_data")
        if jax.process_index() != 0:
            build()  # a no-op where data_dir is shared; a local copy on per-host disks


def make_data(cfg, train: data_lib.Strides, validation: data_lib.Strides | None) -> TrainData:
    """TrainData of given strides in the model's layout (references from the training ones)."""
    if cfg.model.get("layout", "stride") == "own_phase":
        train = data_lib.own_phase(train)
        validation = None if validation is None else data_lib.own_phase(validation)
    prior = cfg.model.get("prior_lambda") if cfg.model.get("linear_prior") else None
    return TrainData(cfg.data.name, train, validation,
                     data_lib.references(train, bool(cfg.model.get("mean_curve_residual")),
                                         cfg.model.patch, prior))


def load_data(cfg: ml_collections.ConfigDict) -> TrainData:
    """The config's training split (and validation split, if it names one) as Strides."""
    load = lambda split: data_lib.load_split(cfg.data.name, split, cfg.data.data_dir,
                                             cfg.data.get("modality", "angles"))
    return make_data(cfg, load(cfg.data.train_split),
                     load(cfg.data.val_split) if cfg.data.val_split else None)


def fold_data(cfg, strides: data_lib.Strides, k: int) -> list[TrainData]:
    """The K folds of `strides`: fold i trains on the other folds and holds out fold i."""
    fold = data_lib.folds(strides, k)
    return [make_data(cfg, strides.take(fold != i), strides.take(fold == i)) for i in range(k)]


def _stride_layout(cfg, strides: data_lib.Strides) -> data_lib.Strides:
    """TrainData strides back in the strides' own layout (what the folds and calibration use)."""
    if cfg.model.get("layout", "stride") != "own_phase":
        return strides
    return dataclasses.replace(strides, **{k: data_lib.to_own_phase(
        getattr(strides, k), strides.side, strides.joint_names, inverse=True)
        for k in ("x", "valid")})


def _flops(compiled) -> float:
    """XLA's FLOP estimate of one call of a compiled function (0 if unknown)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", 0.0))


def jit_steps(cfg, graphdef, shardings, mesh, joint_names: Sequence[str] = (),
              max_group: int | None = None):
    """The train and eval steps, jitted with explicit in/out shardings (state donated).

    `joint_names` give the left/right pairs that the mirror augmentation swaps; `max_group`,
    the largest occlusion group, bounds the rows the loss reads (objective.mixture_loss)."""
    mirror_perm = augment.mirror_permutation(joint_names) if joint_names else None
    repl, data_sh = NamedSharding(mesh, P()), train_state.batch_sharding(mesh)

    def train_step(state, batch, rng):
        """One optimizer step on a global batch; the mask key is fold_in(rng, step)."""
        ts = nnx.merge(graphdef, state)
        key = jax.random.fold_in(rng, ts.opt.step[...])
        lr = train_state.lr_schedule(cfg)(ts.opt.step[...])
        grad_fn = nnx.value_and_grad(lambda m: objective.mixture_loss(m, batch, key, cfg,
                                                                     mirror_perm, max_group),
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
                  joint_names: Sequence[str] = (), max_group: int | None = None):
    """Lowers and compiles both steps once, logs their memory and FLOPs."""
    train, evals = jit_steps(cfg, graphdef, shardings, mesh, joint_names, max_group)
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


def evaluate(eval_step, state, data: TrainData, cfg, mesh) -> dict:
    """Validation losses (mean MSE over hidden valid tokens) per mask type + the mixture."""
    if data.validation is None or not len(data.validation):
        return {}
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


def _check_resumable(workdir: Workdir, cfg, meta: dict) -> None:
    """Refuses to resume a workdir whose model/data differ (shapes would not match)."""
    if not workdir.has_checkpoint():
        return
    old = json.loads(workdir.file("config.json").read_text())
    new = json.loads(cfg.to_json_best_effort())
    diff = [k for k in ("model",) if old.get(k) != new.get(k)]
    if old.get("data", {}).get("name") != cfg.data.name:
        diff.append("data.name")
    if workdir.meta().get("joint_names") != meta["joint_names"]:
        diff.append("joint_names")
    if diff:
        raise ValueError(f"{workdir} holds checkpoints of another config (differs in "
                         f"{', '.join(diff)}); use a new --workdir")


def model_meta(cfg, data: TrainData) -> dict:
    """model_meta.json: joint names, stride shape, normalization stats, training subjects and
    the model id (a digest of the config and of all that)."""
    meta = dict(dataset=data.name, joint_names=list(data.train.joint_names), **data.train.shape,
                modality=cfg.data.get("modality", "angles"),
                stats=dict(mean=np.asarray(data.refs.mean_jc).tolist(),
                           std=np.asarray(data.refs.std_jc).tolist()),
                train_subjects=sorted(set(data.train.subject.tolist())),
                n_train_strides=len(data.train))
    digest = hashlib.sha1((cfg.to_json_best_effort(sort_keys=True)
                           + json.dumps(meta, sort_keys=True)).encode()).hexdigest()
    meta["model_id"] = f"gengait-{cfg.get('name', 'custom')}-{digest[:10]}"
    return meta


def _write_run_files(workdir: Workdir, cfg, data: TrainData) -> dict:
    """workdir/config.json (resolved config) and workdir/model_meta.json; returns the meta."""
    meta = model_meta(cfg, data)
    _check_resumable(workdir, cfg, meta)
    if jax.process_index() == 0:
        workdir.write_config(cfg)
        workdir.write_meta(meta)
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
    workdir: Workdir
    data: TrainData
    mesh: jax.sharding.Mesh
    mngr: ocp.CheckpointManager
    writer: MetricsWriter
    it: Any
    train_step: Any
    eval_step: Any
    flops: float  # per step, all devices


def _setup(cfg, workdir: Workdir, data: TrainData):
    """Builds (or restores) the state in its shardings and compiles the steps once."""
    shape = data.train.shape
    meta = _write_run_files(workdir, cfg, data)
    mesh = train_state.make_mesh(cfg)
    graphdef, abstract = train_state.abstract_state(cfg, shape)
    shardings = train_state.state_shardings(abstract, mesh)
    mngr = checkpointing.manager(workdir, cfg)
    it = input_pipeline.train_iterator(data.train, cfg.batch_size, seed=cfg.seed, read=cfg.input,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count())
    state, start = checkpointing.restore_newest(mngr, train_state.restore_target(abstract, shardings), it)
    if start:
        logging.info("resumed from %s at step %d", workdir.checkpoints, start)
    else:
        state = train_state.init_state(cfg, shape, shardings, data.refs)
    with jax.set_mesh(mesh):
        train_c, eval_c, flops = compile_steps(cfg, graphdef, abstract, shardings, mesh, shape,
                                               data.train.joint_names,
                                               masking.largest_group(data.refs.groups_j))
    n_params = sum(x.size for x in jax.tree.leaves(nnx.filter_state(abstract["model"], nnx.Param)))
    logging.info("model %s: %d params; %d training strides of %d subjects; mesh %s; global "
                 "batch %d; steps %d..%d", meta["model_id"], n_params, len(data.train),
                 len(meta["train_subjects"]), dict(mesh.shape), cfg.batch_size, start,
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
        if evals and run.data.validation is not None:
            row = dict(step=s, **evaluate(run.eval_step, state, run.data, cfg, run.mesh))
            run.writer.write(row, eval_s=time.time() - t_pause)
            final.update(row)
        t_win += time.time() - t_pause  # step times exclude saving and validation
        if halt:
            if stop.requested:
                raise KeyboardInterrupt(f"interrupted at step {s}; checkpoint saved in "
                                        f"{run.workdir.checkpoints}; rerun to resume")
            return dict(final, stopped_at=s)
    return final


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str | Workdir, *,
                       data: TrainData | None = None, stop_after: int | None = None) -> dict:
    """Trains cfg on its dataset in workdir (resuming if possible); returns final metrics.

    `data` replaces the config's TFDS splits (folds, tests); `stop_after` stops like a Ctrl-C
    after that step (checkpoint saved), to test resumption.
    """
    workdir = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
    run, state, start = _setup(cfg, workdir, load_data(cfg) if data is None else data)
    try:
        with _StopRequest() as stop, jax.set_mesh(run.mesh):
            if start >= cfg.total_steps:
                logging.info("already trained to step %d", start)
                return dict(step=start, **evaluate(run.eval_step, state, run.data, cfg,
                                                   run.mesh))
            return _loop(run, state, start, stop, stop_after)
    finally:
        run.mngr.wait_until_finished()
        run.mngr.close()
        run.writer.close()


def train_folds(cfg: ml_collections.ConfigDict, workdir: str | Workdir,
                strides: data_lib.Strides) -> list[dict]:
    """The K fold models of `strides` (cfg.calibration.folds) in workdir/folds/<k>, each
    resumable like the main run; returns their final metrics."""
    workdir = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
    k = int(cfg.calibration.folds)
    fold_cfg = ml_collections.ConfigDict(cfg.to_dict())
    fold_cfg.log_every = fold_cfg.eval_every = cfg.total_steps  # one progress and one
    # held-out line per fold: a console that fits on a screen
    out = []
    for i, fold in enumerate(fold_data(cfg, strides, k)):
        logging.info("fold %d/%d: %d training strides, %d held out (%s)", i + 1, k,
                     len(fold.train), len(fold.validation),
                     ", ".join(sorted(set(fold.validation.subject.tolist()))))
        out.append(train_and_evaluate(fold_cfg, workdir.fold(i), data=fold))
    return out


def train_calibrated(cfg: ml_collections.ConfigDict, workdir: str | Workdir) -> dict:
    """The whole training of a usable model: the final model on the config's training split,
    the K fold models on the same strides, then the out-of-fold calibration.json (process 0).
    Every part resumes; a finished part is skipped."""
    workdir = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
    data = load_data(cfg)
    final = train_and_evaluate(cfg, workdir, data=data)
    if int(cfg.calibration.folds) > 1:
        strides = _stride_layout(cfg, data.train)
        train_folds(cfg, workdir, strides)
        if jax.process_index() == 0:
            cal = calibrate.calibrate_workdir(workdir, strides=strides)
            final["calibration_id"] = cal["id"]
    return final
