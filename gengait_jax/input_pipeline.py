"""Batches of strides (`data.Strides`, in memory: a gait cohort of thousands of strides is
tens of MB).

Training batches come from grain: one global stream of source indices, a fresh seeded
permutation of the whole source every epoch (numpy, cached per epoch; grain's own
`shuffle` costs ~1 ms per element on sources of a few dozen items), repeated forever. The
stream is cut into global batches and process p takes the p-th contiguous block of rows of
each, so the shards are disjoint and, concatenated in process order (the order of
`make_array_from_process_local_data`), are the single-process global batch row for row: the
per-row masks, hence the loss, do not depend on the process count; a batch's indices are
read in one call (grain prefetches batches in background threads, as `config.input` says).
The stream is a pure function of (seed, position), so the iterator's state
(`get_state`/`set_state`, a small dict checkpointed with the model) restores it exactly.
"""

from __future__ import annotations

import functools
from typing import Iterator

import grain
import jax
import ml_collections
import numpy as np

from gengait_jax.data import Strides


def batch_of(strides: Strides, index) -> dict[str, np.ndarray]:
    """The model's batch of the strides at `index`: values (0 where invalid), valid, left."""
    return {"angles": np.nan_to_num(strides.x[index]), "valid": strides.valid[index],
            "left": strides.left[index]}


@functools.lru_cache(maxsize=8)
def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the source in one epoch."""
    return np.random.default_rng((seed, epoch)).permutation(n)


def _source_index(position: int, _, *, n: int, seed: int) -> int:
    """The source index at a position of the global stream."""
    epoch, i = divmod(position, n)
    return int(_permutation(n, seed, epoch)[i])


def _read_batch(indices: np.ndarray, *, strides: Strides) -> dict[str, np.ndarray]:
    """The batch of strides at `indices`."""
    return batch_of(strides, np.asarray(indices, int))


def train_iterator(strides: Strides, global_batch_size: int, *, seed: int,
                   read: ml_collections.ConfigDict, process_index: int | None = None,
                   process_count: int | None = None) -> grain.DatasetIterator:
    """Infinite shuffled batches of this process' shard: angles [b, T, J, C], valid [b, T, J],
    read by `read.read_threads` threads up to `read.prefetch_batches` ahead (config.input)."""
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    if global_batch_size % pc:
        raise ValueError(f"global batch {global_batch_size} is not divisible by {pc} processes")
    if not 0 <= pi < pc:
        raise ValueError(f"process_index {pi} is outside 0..{pc - 1}")
    n = len(strides)
    if n == 0:
        raise ValueError("the training split is empty")
    order = grain.MapDataset.range(n).repeat().map_with_index(
        functools.partial(_source_index, n=n, seed=seed))
    ds = order.batch(global_batch_size // pc, drop_remainder=True)[pi::pc]
    options = grain.ReadOptions(num_threads=read.read_threads,
                                prefetch_buffer_size=read.prefetch_batches)
    return iter(ds.map(functools.partial(_read_batch, strides=strides)).to_iter_dataset(options))


def eval_batches(strides: Strides, batch_size: int) -> Iterator[dict]:
    """Every stride once, in order, in batches padded to batch_size with a `mask` [B]."""
    n = len(strides)
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(n, start + batch_size))
        out = batch_of(strides, np.concatenate([idx, np.full(batch_size - len(idx), idx[0])]))
        out["mask"] = np.arange(batch_size) < len(idx)
        yield out
