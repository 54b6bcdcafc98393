"""Batches of strides from any random-access source (a `tfds.data_source`, a list of dicts).

Training batches come from grain: a seeded shuffle that changes every epoch, infinite
repetition, then each process takes every `process_count`-th element of that one global
stream, so the processes' shards are disjoint and together form the global batch. The
iterator's state (`get_state`/`set_state`) is a small dict checkpointed with the model.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import grain
import jax
import numpy as np

FIELDS = ("angles", "valid")


def _fields(item: dict) -> dict:
    """The numeric fields a batch carries (strings do not batch)."""
    return {"angles": np.asarray(item["angles"], np.float32),
            "valid": np.asarray(item["valid"], bool)}


def train_iterator(source: Sequence[dict], global_batch_size: int, *, seed: int,
                   process_index: int | None = None, process_count: int | None = None):
    """Infinite shuffled batches of this process' shard: angles [b, T, J, C], valid [b, T, J]."""
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    if global_batch_size % pc:
        raise ValueError(f"global batch {global_batch_size} is not divisible by {pc} processes")
    if len(source) == 0:
        raise ValueError("the training split is empty")
    ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
    ds = ds[pi::pc].map(_fields).batch(global_batch_size // pc, drop_remainder=True)
    return iter(ds.to_iter_dataset())


def eval_batches(source: Sequence[dict], batch_size: int) -> Iterator[dict]:
    """The whole source once, in order, in batches padded to batch_size with a `mask` [B]."""
    n = len(source)
    for start in range(0, n, batch_size):
        rows = [_fields(source[i]) for i in range(start, min(n, start + batch_size))]
        pad = batch_size - len(rows)
        out = {k: np.stack([r[k] for r in rows] + [rows[0][k]] * pad) for k in FIELDS}
        out["mask"] = np.arange(batch_size) < len(rows)
        yield out


def to_arrays(source: Sequence[dict]) -> dict[str, np.ndarray]:
    """Stacks a small source: every field as one array (text fields decoded to str)."""
    items = [source[i] for i in range(len(source))]
    if not items:
        raise ValueError("empty source")
    out = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        if isinstance(vals[0], bytes):
            vals = [v.decode() for v in vals]
        out[k] = np.stack(vals) if isinstance(vals[0], np.ndarray) else np.asarray(vals)
    return out
