"""Training: sharding-invariant steps, what the encoder and the loss see, resumption."""

import json
import shutil
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tfds_gait.errors import GaitDataError
from gengait_jax import calibrate, checkpointing, data, model as model_lib, objective, train
from gengait_jax import train_state
from gengait_jax.configs import default
from gengait_jax.gengait import GenGait
from gengait_jax.workdir import Workdir

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
    """The tiny preset without the (compile-heavy) occlusion eval, with a validation split."""
    cfg = default.tiny()
    cfg.eval_occlusion = False
    cfg.data.update(train_split="train", val_split="validation")
    cfg.update(kw)
    return cfg


def _as_strides(rows: list[dict]) -> data.Strides:
    """In-memory strides as a data.Strides (alternating sides)."""
    b = _stack(rows)
    return data.from_arrays(b["angles"], b["valid"], side=np.where(np.arange(len(rows)) % 2,
                                                                   "L", "R"),
                            joint_names=tuple(f"j{i}" for i in range(J)))


def _stats():
    """Mean/SD of the in-memory strides (per joint and channel)."""
    x = _stack(_strides(64, 0))["angles"]
    return np.nanmean(x, (0, 1)), np.nanstd(x, (0, 1))


def _params(state) -> list[np.ndarray]:
    """The model's parameters as host arrays."""
    return [np.asarray(x) for x in jax.tree.leaves(nnx.filter_state(state["model"], nnx.Param))]


def _augmented(**kw):
    """_cfg with every augmentation on."""
    cfg = _cfg(**kw)
    cfg.augment.update(mixup_prob=0.5, mirror_prob=0.5, max_shift=3)
    return cfg


def test_sharded_step_equals_single_device_step():
    """With augmentation, mean curves and a tied joint pair: all of it sharding-invariant
    (on the 8 fake CPU devices of the tests, or the accelerators of launch/gpu_check.sh)."""
    if jax.default_backend() == "cpu":
        assert jax.device_count() == 8  # conftest's fake devices
    elif jax.device_count() % 2:
        pytest.skip(f"needs an even number of accelerators ({jax.device_count()} here)")
    batch_np = _stack(_strides(_cfg().batch_size, 1))
    batch_np["left"] = np.arange(len(batch_np["angles"])) % 3 == 0
    mean, std = _stats()
    names = tuple(f"{s}j{i}" for s in "LR" for i in range(J // 2))
    st = data.from_arrays(batch_np["angles"], batch_np["valid"],
                          side=np.where(batch_np["left"], "L", "R"))
    refs = data.References(mean, std, data.mean_curves(st), np.r_[0, 1, 2, 3, 4, 0, 6, 7, 8, 9])
    out = []
    for devices, cfg in ((jax.devices(), _augmented(mesh_model=2)),
                         (jax.devices()[:1], _augmented())):
        mesh = train_state.make_mesh(cfg, devices)
        graphdef, abstract = train_state.abstract_state(cfg, SHAPE)
        shardings = train_state.state_shardings(abstract, mesh)
        state = train_state.init_state(cfg, SHAPE, shardings, refs)
        step, _ = train.jit_steps(cfg, graphdef, shardings, mesh, names)
        batch = jax.device_put(batch_np, train_state.batch_sharding(mesh))
        losses = []
        for _ in range(2):
            state, metrics = step(state, batch, jax.random.key(0))
            losses.append(float(metrics["loss"]))
        qkv = state["model"]["encoder"][0]["qkv"]["kernel"][...]
        out.append((losses, _params(state), qkv.sharding))
    (loss8, p8, sh8), (loss1, p1, _) = out
    assert sh8.mesh.shape == {"data": jax.device_count() // 2, "model": 2}
    assert sh8.spec == jax.sharding.PartitionSpec(None, "model")  # really sharded
    np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
    for a, b in zip(p8, p1):  # Adam divides by sqrt(nu): ~1e-6 noise on near-zero grads
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _model_and_batch(n=8, factorized=False):
    """A tiny model with stats and a batch with dropouts."""
    cfg = _cfg()
    cfg.model.factorized = factorized
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


@pytest.mark.parametrize("block_prob,ratio,factorized", [(0.0, 0.75, False), (1.0, 0.75, False),
                                                         (1.0, 0.1, False), (1.0, 0.75, True)])
def test_decoding_only_the_loss_rows_gives_the_full_loss(monkeypatch, block_prob, ratio,
                                                         factorized):
    cfg, model, batch = _model_and_batch(16, factorized)
    cfg.mask.update(time_block_prob=block_prob, ratio=ratio, max_block=6)
    model.set_groups(np.arange(J) // 2)  # pairs of joints are one signal: 3 groups = 6 joints
    batch["valid"][::3, 20:] = False  # mostly invalid strides: fewer valid tokens than K
    batch["angles"] = np.where(batch["valid"][..., None], batch["angles"], np.nan)
    queries = []
    decode = model_lib.GenGaitMAE.decode

    def spy(self, latents, keep_valid, restore, query_idx=None):
        queries.append(None if query_idx is None else query_idx.shape[1])
        return decode(self, latents, keep_valid, restore, query_idx)

    monkeypatch.setattr(model_lib.GenGaitMAE, "decode", spy)
    grad_fn = lambda: nnx.jit(nnx.value_and_grad(lambda m: objective.mixture_loss(
        m, batch, jax.random.key(4), cfg, max_group=2), has_aux=True))(model)
    (loss, aux), grads = grad_fn()
    n = J * T // cfg.model.patch
    want = [min(n, max(n - model_lib.num_keep_for(cfg, n), 6 * J)), 3 * 2 * T // 4]
    assert queries == want and max(want) < n  # both groups decode fewer rows than N
    for name in ("random_query_rows", "joint_query_rows"):  # every row: the full decode
        monkeypatch.setattr(objective, name, lambda *a: n)
    (loss_full, aux_full), grads_full = grad_fn()
    assert queries[2:] == [None, None]
    assert float(aux["hidden_tokens"]) == float(aux_full["hidden_tokens"]) > 0
    np.testing.assert_allclose(float(loss), float(loss_full), rtol=1e-6)
    for g, g_full in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_full)):
        np.testing.assert_allclose(g, g_full, rtol=1e-4, atol=1e-7)


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


def test_bucket_data_dir_and_bad_values_are_one_line_config_errors():
    r = subprocess.run([sys.executable, "-m", "launch.train",
                        "--config=gengait_jax/configs/default.py:tiny", "--workdir=/tmp/x",
                        "--config.data.data_dir=gs://bucket/tfds",
                        "--config.calibration.channels=some"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    line, = r.stderr.strip().splitlines()
    assert "data.data_dir=gs://bucket/tfds" in line and "local data_dir" in line
    assert "calibration.channels='some'" in line


@pytest.fixture(scope="module")
def gait_data(request) -> train.TrainData:
    """The embedded cohort when conftest provides it, else in-memory strides."""
    try:
        data_dir = request.getfixturevalue("embedded_data_dir")
    except pytest.FixtureLookupError:
        return train.make_data(_cfg(), _as_strides(_strides(96, 10)),
                               _as_strides(_strides(24, 11)))
    cfg = _cfg()
    cfg.data.data_dir = str(data_dir)
    return train.load_data(cfg)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, gait_data):
    """An uninterrupted `tiny` run: (workdir, final metrics)."""
    workdir = tmp_path_factory.mktemp("tiny")
    return workdir, train.train_and_evaluate(_cfg(), str(workdir), data=gait_data)


def _rows(workdir) -> list[dict]:
    """metrics.jsonl as a list of dicts."""
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_tiny_run_loss_falls_and_logs(tiny_run):
    workdir, final = tiny_run
    rows = _rows(workdir)
    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in train_rows] == list(range(10, _cfg().total_steps + 1, 10))
    for key in ("step", "loss", "grad_norm", "lr", "seq_per_s", "step_time_s"):
        assert all(np.isfinite(r[key]) for r in train_rows), key
    assert train_rows[-1]["loss"] < 0.7 * train_rows[0]["loss"]
    assert val_rows[-1]["val_loss"] < val_rows[0]["val_loss"]
    assert final["step"] == _cfg().total_steps and final["val_loss"] == val_rows[-1]["val_loss"]
    assert json.loads((workdir / "config.json").read_text())["model"]["width"] == 32


def test_restart_ends_with_the_same_params(tiny_run, gait_data, tmp_path):
    workdir, final = tiny_run
    cfg = _cfg()
    stopped = train.train_and_evaluate(cfg, str(tmp_path), data=gait_data, stop_after=13)
    assert stopped["stopped_at"] == 13 and (tmp_path / "checkpoints" / "13").exists()
    resumed = train.train_and_evaluate(cfg, str(tmp_path), data=gait_data)
    assert resumed["loss"] == final["loss"] and resumed["val_loss"] == final["val_loss"]
    restore = lambda wd: checkpointing.restore_model(Workdir(wd))[0]
    a, b = restore(workdir), restore(tmp_path)
    for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b))):
        np.testing.assert_array_equal(x, y)  # bit-identical: no batch skipped or repeated
    val = lambda wd: [(r["step"], r["val_loss"]) for r in _rows(wd) if "val_loss" in r]
    assert val(tmp_path) == val(workdir)  # the resumed run re-validated step 15 identically


def test_restore_model_for_inference(tiny_run, gait_data):
    workdir, _ = tiny_run
    model, cfg, meta = checkpointing.restore_model(Workdir(workdir))
    np.testing.assert_allclose(model.mean_jc[...], gait_data.refs.mean_jc, rtol=1e-6)
    assert cfg.model.width == 32 and meta["num_joints"] == J and meta["step"] == cfg.total_steps
    assert meta["joint_names"] == list(gait_data.train.joint_names) and meta["model_id"]
    assert not hasattr(model, "opt")  # the model's variables only, no optimizer state
    with pytest.raises(GaitDataError, match="missing: not a trained GenGait workdir"):
        checkpointing.restore_model(Workdir(workdir / "nope"))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_run, gait_data,
                                                                  tmp_path):
    workdir, _ = tiny_run
    shutil.copytree(workdir, tmp_path / "wd")
    cfg = _cfg(total_steps=60, lr=float("inf"))  # params blow up after the first new step
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* at step 32.*step 30"):
        train.train_and_evaluate(cfg, str(tmp_path / "wd"), data=gait_data)
    assert sorted(int(p.name) for p in (tmp_path / "wd" / "checkpoints").iterdir()) == [
        10, 20, 30]
    model, _, meta = checkpointing.restore_model(Workdir(tmp_path / "wd"))
    assert meta["step"] == 30
    chex.assert_tree_all_finite(nnx.state(model))


def test_occlusion_groups_tie_joints_that_are_one_signal():
    x = _stack(_strides(12, 5, dropout_every=3))["angles"]
    x[:, :, 5] = x[:, :, 0] * np.array([1.0, -1.0, -1.0])  # like RPelvis and LPelvis
    x[:, :, 7] = x[:, :, 2] + np.array([0.0, 0.0, 1.0])    # one channel differs: not tied
    np.testing.assert_array_equal(data.occlusion_groups(x), [0, 1, 2, 3, 4, 0, 6, 7, 8, 9])


def test_mean_curves_per_side():
    x = np.zeros((4, T, J, C), np.float32)
    x[:2] = 1.0
    x[1, 10] = np.nan  # a missing frame does not pull the mean
    st = lambda a, sides: data.from_arrays(a, side=sides)
    curves = data.mean_curves(st(x, ["L", "L", "R", "R"]))
    np.testing.assert_array_equal(curves[0], 1.0)
    np.testing.assert_array_equal(curves[1], 0.0)
    one_side = data.mean_curves(st(x, ["R"] * 4))
    np.testing.assert_array_equal(one_side[0], one_side[1])
    x[:, :, 3, 1] = np.nan  # a channel nobody has: NaN, which the model reads as the mean
    model = model_lib.create_model(_cfg(), **SHAPE)
    model.set_stats(np.full((J, C), 2.0), np.ones((J, C)))
    model.set_curves(data.mean_curves(st(x, ["L", "L", "R", "R"])))
    curves = np.asarray(model.curve_stjc[...])
    assert np.isfinite(curves).all() and (curves[:, :, 3, 1] == 0).all()


def test_relative_workdir(gait_data, tmp_path, monkeypatch):
    """launch/demo.sh passes runs/demo: orbax needs absolute paths, the trainer makes them."""
    monkeypatch.chdir(tmp_path)
    out = train.train_and_evaluate(_cfg(total_steps=10), "runs/rel", data=gait_data)
    assert out["step"] == 10 and (tmp_path / "runs/rel/checkpoints/10").exists()
    assert checkpointing.restore_model(Workdir("runs/rel"))[2]["step"] == 10


@pytest.fixture(scope="module")
def calibrated_run(embedded_data_dir, tmp_path_factory):
    """A tiny model trained on train + validation with 2 fold models and its calibration."""
    cfg = _cfg(total_steps=10)
    cfg.calibration.folds = 2
    cfg.data.update(train_split="train+validation", val_split="", data_dir=embedded_data_dir)
    wd = Workdir(tmp_path_factory.mktemp("calibrated") / "run")
    return cfg, wd, train.train_calibrated(cfg, wd)


def test_training_ends_calibrated_out_of_fold(calibrated_run):
    """train_calibrated: the model, K fold models that never saw the subjects they score, and
    calibration.json; recalibration from the fold models gives the same calibration."""
    cfg, wd, final = calibrated_run
    cal = wd.calibration()
    assert final["calibration_id"] == cal["id"] and cal["model_id"] == wd.meta()["model_id"]
    assert cal["folds"]["k"] == 2 and cal["n_subjects"] == len(wd.meta()["train_subjects"])
    for k in range(2):  # out of fold: a fold model never trained on a subject it scored
        scored = {s for s, f in cal["folds"]["subjects"].items() if f == k}
        assert scored and not scored & set(wd.fold(k).meta()["train_subjects"])
    assert wd.fold(0).meta()["train_subjects"] != wd.fold(1).meta()["train_subjects"]
    oof = wd.arrays("oof.npz")
    assert len(oof["residual"]) == cal["n_strides"] and set(oof["fold"].tolist()) == {0, 1}
    band = cal["band_inflation"]  # the fold models' errors with 3 groups withheld at once
    assert band["groups"] == cfg.twin.band_groups == 3
    assert np.asarray(band["scale"]).shape == oof["residual"].shape[2:]
    assert (np.asarray(band["scale"]) >= 1).all() and cal["twin_fusion"] is not None
    again = calibrate.calibrate_workdir(wd)
    assert again["id"] == cal["id"]


def _write_people(strides: data.Strides, folder) -> None:
    """One sub-folder per person with an .npz of their strides."""
    for s in sorted(set(strides.subject.tolist())):
        d = strides.take(strides.subject == s)
        (folder / s).mkdir(parents=True)
        np.savez(folder / s / "walk_1.npz", angles=d.x, valid=d.valid, side=d.side.astype(str),
                 joint_names=np.asarray(d.joint_names))


def test_a_labs_own_normals_join_the_calibration_scored_by_the_final_model(calibrated_run,
                                                                            tmp_path):
    """--normals: the lab's people (one folder each) enter the calibration as new people,
    with the FINAL model's pass-1 residuals (it never trained on them), recorded in
    calibration.json and oof.npz (fold -1); a person the model trained on is refused."""
    cfg, wd, _ = calibrated_run
    base = wd.calibration()
    lab = data.load_split(cfg.data.name, "test", cfg.data.data_dir)
    _write_people(lab, tmp_path / "lab")
    cal = calibrate.calibrate_workdir(wd, normals=str(tmp_path / "lab"))
    people = sorted(set(lab.subject.tolist()))
    assert cal["normals"]["subjects"] == [f"normals/{p}" for p in people]
    assert cal["n_subjects"] == base["n_subjects"] + len(people)
    assert cal["n_strides"] == base["n_strides"] + len(lab) == cal["cohorts"]["lab normals"] \
        + base["n_strides"]
    assert cal["id"] != base["id"] and cal["folds"] == base["folds"]
    oof = wd.arrays("oof.npz")
    own = oof["fold"] == -1
    assert own.sum() == len(lab)
    order = np.argsort(lab.subject, kind="stable")  # the folder is read person by person
    expected = GenGait.from_workdir(wd, calibrated=False).pass1(lab.take(order)).residual
    np.testing.assert_allclose(oof["residual"][own], expected, atol=1e-5)
    trained = data.load_split(cfg.data.name, cfg.data.train_split, cfg.data.data_dir)
    _write_people(trained.take(trained.subject == trained.subject[0]), tmp_path / "seen")
    with pytest.raises(GaitDataError, match=f"trained on {trained.subject[0]}"):
        calibrate.calibrate_workdir(wd, normals=str(tmp_path / "seen"))
