"""Input pipeline: shapes, seeded order, disjoint process shards, exact resume, read-ahead."""

import time

import numpy as np
import pytest

from gengait_jax import data, input_pipeline
from gengait_jax.configs import default


def _source(n=23):
    """n strides whose values are their index; alternating sides L, R, L, ..."""
    x = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, 8, 2, 3))
    return data.from_arrays(x, side=np.array(["L", "R"] * n)[:n],
                            subject=[f"S{i % 4}" for i in range(n)])


def _ids(batch):
    return batch["angles"][:, 0, 0, 0].astype(int).tolist()


def _it(source, batch, seed, pi=0, pc=1):
    return input_pipeline.train_iterator(source, batch, seed=seed, read=default.tiny().input,
                                         process_index=pi, process_count=pc)


def _take(it, n):
    return [_ids(next(it)) for _ in range(n)]


def test_shapes_and_dtypes():
    b = next(_it(_source(), 4, seed=0))
    assert set(b) == {"angles", "valid", "left"}
    assert b["angles"].shape == (4, 8, 2, 3) and b["angles"].dtype == np.float32
    assert b["valid"].shape == (4, 8, 2) and b["valid"].dtype == bool
    assert b["left"].shape == (4,) and b["left"].dtype == bool
    np.testing.assert_array_equal(b["left"], np.array(_ids(b)) % 2 == 0)  # side b"L"


def test_same_seed_same_order_other_seed_differs():
    assert _take(_it(_source(), 6, seed=1), 3) == _take(_it(_source(), 6, seed=1), 3)
    assert _take(_it(_source(), 6, seed=1), 3) != _take(_it(_source(), 6, seed=2), 3)


def test_every_epoch_is_a_fresh_permutation():
    stream = sum(_take(_it(_source(10), 5, seed=4), 6), [])  # 3 epochs of 10
    epochs = [stream[i:i + 10] for i in range(0, 30, 10)]
    assert all(sorted(e) == list(range(10)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]


def test_process_shards_are_disjoint_and_form_the_global_batch():
    whole = _take(_it(_source(23), 8, seed=3), 7)  # crosses two epoch ends
    shards = [_take(_it(_source(23), 8, seed=3, pi=p, pc=2), 7) for p in range(2)]
    for k in range(7):
        assert not set(shards[0][k]) & set(shards[1][k])
        assert sorted(shards[0][k] + shards[1][k]) == sorted(whole[k])
    first_epoch = sum(shards[0][:2] + shards[1][:2], [])  # 2 x 2 x 4 = 16 positions
    assert len(set(first_epoch)) == 16


def test_state_restores_exactly():
    it = _it(_source(), 5, seed=7)
    _take(it, 4)
    state = it.get_state()
    want = _take(it, 6)  # crosses an epoch end
    fresh = _it(_source(), 5, seed=7)
    fresh.set_state(state)
    assert _take(fresh, 6) == want


def test_bad_arguments():
    with pytest.raises(ValueError, match="not divisible"):
        _it(_source(), 5, seed=0, pi=0, pc=2)
    with pytest.raises(ValueError, match="process_index"):
        _it(_source(), 4, seed=0, pi=2, pc=2)
    with pytest.raises(ValueError, match="empty"):
        _it(_source(0), 4, seed=0)


def test_reads_ahead_only_the_configured_batches(monkeypatch):
    reads = []
    read = input_pipeline._read_batch
    monkeypatch.setattr(input_pipeline, "_read_batch", lambda i, **kw: reads.append(1) or read(
        i, **kw))
    opts = default.tiny().input
    opts.update(read_threads=1, prefetch_batches=3)
    it = input_pipeline.train_iterator(_source(), 4, seed=0, read=opts, process_index=0,
                                       process_count=1)
    next(it)
    time.sleep(0.5)  # the background reads fill the buffer, then stop
    assert 2 <= len(reads) <= 1 + 3 + 1  # grain's default (500 ahead) would read hundreds


def test_eval_batches_pad_and_mask():
    batches = list(input_pipeline.eval_batches(_source(10), 4))
    assert [int(b["mask"].sum()) for b in batches] == [4, 4, 2]
    assert all(b["angles"].shape == (4, 8, 2, 3) for b in batches)
    got = [i for b in batches for i, m in zip(_ids(b), b["mask"]) if m]
    assert got == list(range(10))


def test_embedded_strides(embedded_data_dir):
    src = data.load_split("gait_cycles/embedded", "train", embedded_data_dir)
    b = next(_it(src, 16, seed=0))
    assert b["angles"].shape == (16, 100, 10, 3) and b["valid"].shape == (16, 100, 10)
    assert np.isfinite(b["angles"]).all() and (b["angles"][~b["valid"]] == 0).all()
    assert set(src.side.tolist()) <= {"L", "R"} and set(src.cohort.tolist()) > {"biomechzoo"}
