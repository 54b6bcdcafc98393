"""Checkpoints: orbax manager with the train state and every host's data iterator position,
and the params-only restore that inference uses.

Layout: workdir/checkpoints/<step>/state (the nnx.State of model + optimizer, OCDBT) and
workdir/checkpoints/<step>/data (JSON: the iterator state of each process).
"""

from __future__ import annotations

import json
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from gengait_jax import model as model_lib
from gengait_jax.workdir import Workdir
from tfds_gait.errors import GaitDataError

ITEMS = ("state", "data")


def manager(workdir: Workdir, cfg) -> ocp.CheckpointManager:
    """Orbax manager: workdir/checkpoints/<step>/{state,data}; keeps the newest K."""
    opts = ocp.CheckpointManagerOptions(max_to_keep=cfg.keep_checkpoints, create=True)
    return ocp.CheckpointManager(workdir.checkpoints, options=opts, item_names=ITEMS)


def data_state(it) -> dict:
    """Iterator state of every process (JSON), so each host resumes its own shard."""
    state = it.get_state()
    kind = "bytes" if isinstance(state, bytes) else "json"
    text = state.decode() if kind == "bytes" else json.dumps(state)
    if jax.process_count() == 1:
        return {"kind": kind, "per_process": [text]}
    raw = np.frombuffer(text.encode(), np.uint8)
    n = int(multihost_utils.process_allgather(np.array([raw.size])).max())
    allr = multihost_utils.process_allgather(np.pad(raw, (0, n - raw.size)))
    return {"kind": kind, "per_process": [bytes(r).rstrip(b"\0").decode() for r in allr]}


def set_data_state(it, saved: dict) -> None:
    """Restores this process's iterator state."""
    if len(saved["per_process"]) != jax.process_count():
        raise ValueError("checkpoint was written with a different number of processes")
    text = saved["per_process"][jax.process_index()]
    it.set_state(text.encode() if saved["kind"] == "bytes" else json.loads(text))


def save(mngr, step: int, state, it, *, force: bool = False) -> None:
    """Saves the train state and the data iterator position at `step`."""
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state(it))),
        force=force)


def move_aside(ckpt_dir: epath.Path, step: int) -> None:
    """Moves an unrestorable step out of the manager's way (process 0)."""
    if jax.process_index() == 0:
        aside = ckpt_dir.parent / "checkpoints_corrupt"
        aside.mkdir(parents=True, exist_ok=True)
        (ckpt_dir / str(step)).rename(aside / f"{step}-{int(time.time())}")
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"move_aside_{step}")


def restore_newest(mngr, target, it):
    """(state, step) from the newest checkpoint that restores; (None, 0) if there is none.

    A checkpoint that fails to restore (corrupted files) is moved to checkpoints_corrupt/
    with a warning, and the one before it is used.
    """
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            got = mngr.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001  (corrupted files: fall back to an older step)
            first = (str(e).splitlines() or [""])[0][:200]
            logging.warning("checkpoint %d cannot be restored (%s: %s): moved to "
                            "checkpoints_corrupt/, trying an older one", step,
                            type(e).__name__, first)
            move_aside(mngr.directory, step)
            mngr.reload()
            continue
        set_data_state(it, got.data)
        return got.state, step
    return None, 0


def _check_shapes(step_dir: epath.Path, target) -> None:
    """Compares the model's array shapes with the checkpoint's metadata before reading any (a
    failed orbax restore leaves reads in flight that print 'Event loop is closed' at exit)."""
    handler = ocp.StandardCheckpointHandler()
    try:
        saved = handler.metadata(step_dir / "state")
    finally:
        handler.close()
    shapes = lambda tree: sorted(tuple(x.shape) for x in jax.tree.leaves(tree)
                                 if hasattr(x, "shape"))
    tree = getattr(saved, "tree", saved)
    if shapes(tree.get("model", tree) if isinstance(tree, dict) else tree) != shapes(target):
        raise GaitDataError(step_dir, "checkpoint does not match the workdir's config.json "
                                      "(its arrays have other shapes: another model config?)")


def model_shape(meta: dict) -> dict[str, int]:
    """num_frames / num_joints / num_channels from the model meta."""
    return {k: int(meta[k]) for k in ("num_frames", "num_joints", "num_channels")}


def restore_model(workdir: Workdir, step: int | None = None
                  ) -> tuple[model_lib.GenGaitMAE, ml_collections.ConfigDict, dict]:
    """(model, config, meta) for inference: the model variables only (no optimizer state),
    on one local device."""
    cfg, meta = workdir.config(), workdir.meta()
    graphdef, abstract = nnx.split(nnx.eval_shape(
        lambda: model_lib.create_model(cfg, **model_shape(meta))))
    one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one),
                          abstract)
    if not workdir.has_checkpoint():
        raise GaitDataError(workdir.checkpoints, "no checkpoint: train first")
    with ocp.CheckpointManager(workdir.checkpoints, item_names=ITEMS) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise GaitDataError(workdir.checkpoints, "no complete checkpoint")
        _check_shapes(workdir.checkpoints / str(step), target)
        args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=one), target)
        try:
            got = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                {"model": target}, restore_args={"model": args}, partial_restore=True)))
        except (ValueError, KeyError, TypeError) as e:  # orbax: tree of another config
            first = " ".join((str(e).splitlines() or [""])[0].split()[:20])
            raise GaitDataError(workdir.checkpoints / str(step), "checkpoint does not match "
                                f"the workdir's config.json ({type(e).__name__}: {first})") \
                from None
    return nnx.merge(graphdef, got.state["model"]), cfg, dict(meta, step=int(step))
