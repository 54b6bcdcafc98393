"""The train state, built in ONE place: mesh, optimizer, abstract shapes, shardings, init.

Everything starts from `abstract_state` (shapes only, via `nnx.eval_shape`); shardings come
from a name -> PartitionSpec rule; the real state is either initialized straight into those
shardings (`init_state`) or restored into them from a checkpoint (`restore_target`).
"""

from __future__ import annotations

import jax
import ml_collections
import optax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from gengait_jax import data as data_lib, model as model_lib

# (module name, parameter name) -> spec. Megatron-style: the first matmul of attention and
# MLP splits its output features over 'model', the second its input features.
_RULES = {
    ("qkv", "kernel"): P(None, "model"), ("qkv", "bias"): P("model"),
    ("fc1", "kernel"): P(None, "model"), ("fc1", "bias"): P("model"),
    ("out", "kernel"): P("model", None), ("fc2", "kernel"): P("model", None),
}


class TrainState(nnx.Module):
    """The model and its optimizer (which updates nnx.Param only, never the Stat stats)."""

    def __init__(self, model: model_lib.GenGaitMAE, tx: optax.GradientTransformation):
        self.model = model
        self.opt = nnx.Optimizer(model, tx, wrt=nnx.Param)


def lr_schedule(cfg: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup to cfg.lr, then cosine decay to cfg.lr * cfg.end_lr_ratio."""
    return optax.warmup_cosine_decay_schedule(
        0.0, cfg.lr, cfg.warmup_steps, max(cfg.total_steps, cfg.warmup_steps + 1),
        end_value=cfg.lr * cfg.end_lr_ratio)


def make_tx(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW (weight decay on matrices only)."""
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.adamw(lr_schedule(cfg), b1=0.9, b2=cfg.adam_b2, weight_decay=cfg.weight_decay,
                    mask=decay_mask))


def make_mesh(cfg: ml_collections.ConfigDict, devices=None) -> Mesh:
    """A ('data', 'model') mesh over all devices; cfg.mesh_model sets the model axis."""
    devices = list(jax.devices() if devices is None else devices)
    if cfg.mesh_model < 1 or len(devices) % cfg.mesh_model:
        raise ValueError(f"mesh_model={cfg.mesh_model} does not divide {len(devices)} devices")
    shape = (len(devices) // cfg.mesh_model, cfg.mesh_model)
    return jax.make_mesh(shape, ("data", "model"), axis_types=(AxisType.Auto,) * 2,
                         devices=devices)


def _names(path) -> tuple:
    """Readable names of a pytree key path (dict keys, attributes, indices)."""
    out = []
    for k in path:
        out.append(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
    return tuple(n for n in out if n != "value")


def param_spec(path, shape, model_size: int) -> P:
    """PartitionSpec of one state leaf: the rule for its name if it divides, else replicated."""
    spec = _RULES.get(_names(path)[-2:])
    if spec is None or model_size == 1 or len(spec) != len(shape):
        return P()
    if any(ax == "model" and dim % model_size for ax, dim in zip(spec, shape)):
        return P()
    return spec


def state_shardings(abstract, mesh: Mesh):
    """NamedSharding for every leaf of the (abstract) state."""
    size = mesh.shape["model"]
    return jax.tree_util.tree_map_with_path(
        lambda p, x: NamedSharding(mesh, param_spec(p, x.shape, size)), abstract)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch arrays: leading axis over 'data', replicated over 'model'."""
    return NamedSharding(mesh, P("data"))


def _new_state(cfg, shape: dict, refs: data_lib.References | None = None) -> TrainState:
    """A fresh TrainState (shape: num_frames, num_joints, num_channels)."""
    model = model_lib.create_model(cfg, seed=cfg.seed, **shape)
    if refs is not None:
        model.set_references(refs)
    return TrainState(model, make_tx(cfg))


def abstract_state(cfg: ml_collections.ConfigDict, shape: dict):
    """(graphdef, state of ShapeDtypeStructs): no memory, no compute."""
    return nnx.split(nnx.eval_shape(lambda: _new_state(cfg, shape)))


def init_state(cfg: ml_collections.ConfigDict, shape: dict, shardings,
               refs: data_lib.References):
    """The initialized state, created directly in its shardings (jit with out_shardings)."""
    init = lambda: nnx.state(_new_state(cfg, shape, refs))
    return jax.jit(init, out_shardings=shardings)()


def restore_target(abstract, shardings):
    """Abstract state with shardings attached: what orbax restores into."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        abstract, shardings)
