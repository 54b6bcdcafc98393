"""Pass 1: one compiled vmap program equals a per-joint loop; an offset joint stands out."""

import jax
import numpy as np
import pytest
from flax import nnx

import gait_synth as g
from gengait_jax import calibration, masking, model as model_lib, scoring


def _untrained(patch: int, factorized: bool = False):
    """An untrained tiny model with a patch size no other test uses (its own jit cache)."""
    cfg = g.config()
    cfg.model.update(patch=patch, factorized=factorized)
    model = model_lib.create_model(cfg, **g.SHAPE)
    model.set_stats(np.zeros((g.J, g.C)), np.full((g.J, g.C), 10.0))
    return model


@pytest.mark.parametrize("factorized", [False, True])  # True: the masks share a first block
def test_vmap_equals_per_joint_loop_and_compiles_once(factorized):
    model = _untrained(patch=5 if not factorized else 4, factorized=factorized)
    assert model.shares_occlusions == factorized
    data = g.strides(5, 3, dropout_every=2)
    before = scoring.trace_count()
    got = scoring.score_strides(model, data["angles"], data["valid"])
    assert scoring.trace_count() == before + 1  # strides x J masks: ONE traced program
    scoring.score_strides(model, data["angles"][:3], data["valid"][:3])  # same bucket
    assert scoring.trace_count() == before + 1
    x, valid = scoring.prepare(data["angles"], data["valid"])
    masks = masking.occlusion_masks(masking.token_valid(valid, model.patch), g.J)
    n_tok = masks.shape[-1]
    recon = nnx.jit(lambda m, v: m.reconstruct(x, v, n_tok - model.num_patches))
    loop = np.stack([np.asarray(recon(model, masks[j]))[:, :, j] for j in range(g.J)], axis=2)
    np.testing.assert_allclose(got.recon_ntjc, loop, rtol=1e-5, atol=1e-4)
    ok = valid[..., None] & got.scored_nj[:, None, :, None]
    np.testing.assert_allclose(got.residual_ntjc[np.broadcast_to(ok, x.shape)],
                               (x - loop)[np.broadcast_to(ok, x.shape)], rtol=1e-4, atol=1e-3)
    assert np.isnan(got.residual_ntjc[~valid]).all()


def test_padding_strides_cost_nothing_and_one_program_serves_every_short_trial():
    model = _untrained(patch=25)
    data = g.strides(scoring.PASS1_BUCKETS[0], 6)
    before = scoring.trace_count()
    for n in (1, 4, 9, scoring.PASS1_BUCKETS[0]):  # all padded to the first pass-1 bucket
        scoring.score_strides(model, data["angles"][:n])
    assert scoring.trace_count() == before + 1
    x, valid = scoring.prepare(data["angles"][:5])
    valid[3:] = False  # two padding strides behind three real ones
    chunk = 2 * g.J  # two strides per loop step
    rows = jax.jit(scoring.occlusion_recon_rows, static_argnums=3)
    got, alone = (np.asarray(rows(model, *a, chunk)) for a in ((x, valid), (x[:3], valid[:3])))
    np.testing.assert_allclose(got[:3], alone, rtol=1e-5, atol=1e-4)
    assert np.isfinite(got[:3]).all()
    assert np.isnan(got[4]).all()  # beyond the last loop step that holds a real stride: skipped


def test_independent_chains_per_loop_step_give_the_one_chain_numbers():
    model = _untrained(patch=10, factorized=True)
    x, valid = scoring.prepare(g.strides(8, 7)["angles"])
    valid[7:] = False  # 7 real strides: the loop's last steps run one chain at a time
    rows = jax.jit(scoring.occlusion_recon_rows, static_argnums=(3, 4))
    one, two, three = (np.asarray(rows(model, x, valid, 2 * g.J, k)) for k in (1, 2, 3))
    assert np.isfinite(one[:7]).all()
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(three, one, rtol=1e-5, atol=1e-4)
    # chains that end inside a stride (7 sequences: a stride's masks split between chains)
    split = np.asarray(rows(model, x, valid, 7, 2))
    np.testing.assert_allclose(split[:7], one[:7], rtol=1e-5, atol=1e-4)


def test_pass1_loops_over_chunks_on_cpu_and_runs_one_vmap_on_accelerators(monkeypatch):
    for tokens in (40, 200, 220, 250, scoring.ROWS_PER_CHAIN, 3 * scoring.ROWS_PER_CHAIN):
        chunk = scoring.pass1_chunk("cpu", tokens)  # the most sequences that fit the rows
        assert chunk >= 1 and (chunk * tokens <= scoring.ROWS_PER_CHAIN or chunk == 1)
        assert (chunk + 1) * tokens > scoring.ROWS_PER_CHAIN
        assert scoring.pass1_chunk("gpu", tokens) == scoring.pass1_chunk("tpu", tokens) == 0
    model = _untrained(patch=4, factorized=True)
    data = g.strides(5, 9)
    plans = {}
    for backend in ("cpu", "gpu"):  # the plan is read at trace time: one program per plan
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        rows = jax.jit(lambda x, v: scoring.occlusion_recon(model, x, v, jax.random.key(0)))
        plans[backend] = rows.lower(*scoring.prepare(data["angles"])).as_text()
        plans[backend + " out"] = np.asarray(rows(*scoring.prepare(data["angles"])))
    assert "while" in plans["cpu"] and "while" not in plans["gpu"]
    assert np.isfinite(plans["cpu out"]).all()
    np.testing.assert_allclose(plans["gpu out"], plans["cpu out"], rtol=1e-5, atol=1e-4)


def test_context_maskings_run_in_the_same_single_program():
    model = _untrained(patch=20)
    data = g.strides(3, 4)
    before = scoring.trace_count()
    plain = scoring.score_strides(model, data["angles"], num_context=0)
    ctx = scoring.score_strides(model, data["angles"], num_context=4)
    assert scoring.trace_count() == before + 2  # one program per setting
    assert np.isfinite(ctx.rms_nj).all() and not np.allclose(ctx.rms_nj, plain.rms_nj)


def test_invalid_values_never_matter_and_sparse_joints_are_not_scored():
    model = _untrained(patch=5)
    data = g.strides(4, 5)
    valid = data["valid"].copy()
    valid[0, :60, 2] = False  # 40 % valid: below MIN_VALID_FRACTION
    valid[1, 10:30, 7] = False  # 80 % valid: scored on its valid frames
    a = scoring.score_strides(model, np.where(valid[..., None], data["angles"], np.nan))
    b = scoring.score_strides(model, np.where(valid[..., None], data["angles"], 1e6), valid)
    np.testing.assert_array_equal(a.residual_ntjc, b.residual_ntjc)
    assert np.isnan(a.rms_nj[0, 2]) and not a.scored_nj[0, 2]
    assert np.isnan(a.residual_ntjc[0, :, 2]).all() and abs(a.valid_frac_nj[0, 2] - 0.4) < 1e-6
    assert a.scored_nj[1, 7] and np.isfinite(a.rms_nj[1, 7])
    assert a.scored_nj.sum() == 4 * g.J - 1


def test_offset_on_one_joint_makes_it_the_most_anomalous():
    model, _, meta = g.trained()
    cal = g.calibration_of(offsets=True, channels="all")  # (default: shape, reliable channels)
    clean = g.strides(3, 8)
    hits = []
    for j in range(g.J):
        x = clean["angles"].copy()
        x[:, :, j, 0] += 15.0  # +15 deg in the sagittal plane of one joint
        res = scoring.score_strides(model, x).residual_ntjc
        sc = calibration.score(res, clean["side"], cal)
        hits += list(np.argmax(sc["joint"], -1) == j)
        assert sc["flags"][:, j].mean() >= 0.75
    assert np.mean(hits) >= 0.95, np.mean(hits)
