"""Batches of strides from any random-access source (a `tfds.data_source`, a list of dicts).

Training batches come from grain: one global stream of source indices, a fresh seeded
permutation of the whole source every epoch (numpy, cached per epoch; grain's own
`shuffle` costs ~1 ms per element on sources of a few dozen items), repeated forever. The
stream is cut into global batches and process p takes the p-th contiguous block of rows of
each, so the shards are disjoint and, concatenated in process order (the order of
`make_array_from_process_local_data`), are the single-process global batch row for row: the
per-row masks, hence the loss, do not depend on the process count; a batch's indices are
read in one call (grain prefetches batches in background threads). The stream is a pure
function of (seed, position), so the iterator's state (`get_state`/`set_state`, a small dict
checkpointed with the model) restores it exactly.
"""

from __future__ import annotations

import functools
from typing import Iterator, Sequence

import grain
import jax
import numpy as np


def _is_left(item: dict) -> bool:
    """Whether a stride is a left one (its `side` field; False where there is none)."""
    side = item.get("side", b"")
    return (side.decode() if isinstance(side, bytes) else str(side)) == "L"


def stack(items: Sequence[dict]) -> dict[str, np.ndarray]:
    """The numeric fields of items, stacked (strings do not batch; `side` -> `left`)."""
    return {"angles": np.stack([np.asarray(it["angles"], np.float32) for it in items]),
            "valid": np.stack([np.asarray(it["valid"], bool) for it in items]),
            "left": np.array([_is_left(it) for it in items])}


@functools.lru_cache(maxsize=8)
def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the source in one epoch."""
    return np.random.default_rng((seed, epoch)).permutation(n)


def _source_index(position: int, _, *, n: int, seed: int) -> int:
    """The source index at a position of the global stream."""
    epoch, i = divmod(position, n)
    return int(_permutation(n, seed, epoch)[i])


def _read_batch(indices: np.ndarray, *, source: Sequence[dict]) -> dict[str, np.ndarray]:
    """The batch of source items at `indices`."""
    return stack([source[int(i)] for i in indices])


def train_iterator(source: Sequence[dict], global_batch_size: int, *, seed: int,
                   process_index: int | None = None, process_count: int | None = None) -> grain.DatasetIterator:
    """Infinite shuffled batches of this process' shard: angles [b, T, J, C], valid [b, T, J]."""
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    if global_batch_size % pc:
        raise ValueError(f"global batch {global_batch_size} is not divisible by {pc} processes")
    if not 0 <= pi < pc:
        raise ValueError(f"process_index {pi} is outside 0..{pc - 1}")
    n = len(source)
    if n == 0:
        raise ValueError("the training split is empty")
    order = grain.MapDataset.range(n).repeat().map_with_index(
        functools.partial(_source_index, n=n, seed=seed))
    ds = order.batch(global_batch_size // pc, drop_remainder=True)[pi::pc]
    return iter(ds.map(functools.partial(_read_batch, source=source)).to_iter_dataset())


def eval_batches(source: Sequence[dict], batch_size: int) -> Iterator[dict]:
    """The whole source once, in order, in batches padded to batch_size with a `mask` [B]."""
    n = len(source)
    for start in range(0, n, batch_size):
        rows = [source[i] for i in range(start, min(n, start + batch_size))]
        out = stack(rows + [rows[0]] * (batch_size - len(rows)))
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
