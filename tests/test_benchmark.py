"""Benchmark machinery (no timing assertions): FLOP counter, rows-only decoding, torch twin, CLI."""

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace as NS

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from benchmarks import benchmarking
from gengait_jax import masking, model as model_lib, scoring
from gengait_jax.configs import default

SHAPE = dict(num_frames=100, num_joints=10, num_channels=3)
REQUIRED = ("peak_gflops", "train.seq_per_s", "train.tokens_per_s", "train.fraction_of_peak",
            "train.compile_s", "train.peak_memory_bytes", "scoring.vmap_vs_loop_speedup_b1",
            "scoring.fraction_of_peak", "scoring.fraction_of_peak_best_call",
            "scoring.fraction_of_matmul_interleaved", "scoring.calls", "scoring.call_ms_p25",
            "scoring.call_ms_median", "scoring.call_ms_p75", "scoring.other_plan.call_ms_median",
            "scoring.other_plan.slower",
            "scoring.trial_latency_ms", "input.strides_per_s",
            "input.ratio_to_train", "cache.detect_cold_s", "cache.detect_warm_s")


def _model():
    cfg = default.tiny()
    return cfg, model_lib.create_model(cfg, **SHAPE)


def test_flop_counter_is_positive():
    compiled = jax.jit(jnp.matmul).lower(jnp.ones((64, 32)), jnp.ones((32, 16))).compile()
    assert benchmarking.flops_of(compiled) >= 2 * 64 * 32 * 16 * 0.99
    assert benchmarking.peak_bytes(compiled) > 0


def test_fractions_of_peak_rest_on_the_larger_peak_of_the_run():
    res = {"peak_gflops": 100.0, "train": {"fraction_of_peak": 0.4, "op_profile": {"classes": {
        "dense": {"fraction_of_peak": 0.5}, "attention": {"fraction_of_peak": None}}}},
        "scoring": {"fraction_of_peak": 0.2, "fraction_of_peak_best_call": 0.3,
                    "b1": {"fraction_of_peak": 0.1}}}
    benchmarking.use_peak(res, 200.0)
    assert res["peak_gflops"] == 200.0
    assert res["train"]["fraction_of_peak"] == pytest.approx(0.2)
    assert res["train"]["op_profile"]["classes"]["dense"]["fraction_of_peak"] == pytest.approx(
        0.25)
    assert res["train"]["op_profile"]["classes"]["attention"]["fraction_of_peak"] is None
    assert res["scoring"]["fraction_of_peak"] == pytest.approx(0.1)
    assert res["scoring"]["fraction_of_peak_best_call"] == pytest.approx(0.15)
    assert res["scoring"]["b1"]["fraction_of_peak"] == pytest.approx(0.05)


def test_the_peak_yardstick_is_larger_on_accelerators():
    assert benchmarking.matmul_size("cpu", quick=False) == 2048
    assert benchmarking.matmul_size("cpu", quick=True) == 1024
    for backend in ("gpu", "tpu"):  # a 2048^3 product there: tens of microseconds
        assert benchmarking.matmul_size(backend, quick=False) >= 8192
        assert benchmarking.matmul_size(backend, quick=True) >= 4096


def test_interleaved_timing_alternates_windows_and_reports_each_functions_median():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: (calls.append("b"), time.sleep(0.002))}
    out = benchmarking.interleaved(fns, rounds=3, window_s=0.01)
    runs = [k for i, k in enumerate(calls) if i == 0 or calls[i - 1] != k]
    assert runs == ["a", "b"] + ["a", "b"] * 3  # one warm-up each, then a, b windows in turn
    assert min(calls.count("a"), calls.count("b")) >= 3 + 1
    assert set(out) == {"a", "b"} and out["b"] >= 0.002  # b's median call holds its sleep


# chunk 3: J * B = 20 rows, the last chunk padded; 25: more than J * B, capped at it; prior:
# rows-only adds one product of all masks' priors; factorized: the encoder on the token grid
# and the last block's query rows gathered
@pytest.mark.parametrize("chunk,prior,factorized", [(0, False, False), (3, False, False),
                                                    (0, True, False), (3, True, False),
                                                    (3, True, True), (25, True, True)])
def test_rows_only_decoding_equals_the_full_pass1(chunk, prior, factorized):
    cfg = default.tiny()
    cfg.model.linear_prior = prior
    cfg.model.factorized = factorized
    m = model_lib.create_model(cfg, **SHAPE)
    if prior:
        rng = np.random.default_rng(0)
        m.prior_w[...] = jnp.asarray(0.1 * rng.normal(size=m.prior_w.shape), jnp.float32)
        m.prior_b[...] = jnp.asarray(rng.normal(size=m.prior_b.shape), jnp.float32)
        m.set_groups(np.array([0, 0] + list(range(1, SHAPE["num_joints"] - 1))))
    x = jnp.asarray(benchmarking.synthetic_batch(2, SHAPE)["angles"])
    valid = jnp.ones(x.shape[:3], bool).at[0, :30, 4].set(False).at[1, :, 6].set(False)
    graphdef, state = nnx.split(m)
    full = jax.jit(lambda s: scoring.occlusion_recon(nnx.merge(graphdef, s), x, valid,
                                                     jax.random.key(0), rows_only=False))(state)
    rows = jax.jit(lambda s: scoring.occlusion_recon_rows(
        nnx.merge(graphdef, s), x, valid, chunk))(state)
    np.testing.assert_allclose(rows, full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("factorized", [False, True])
def test_torch_reference_has_the_same_parameters_and_shapes(factorized):
    torch = pytest.importorskip("torch")
    from benchmarks import torch_reference
    cfg, m = _model()
    cfg.model.factorized = factorized
    ref = torch_reference.create(cfg, SHAPE)
    n_jax = sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
    assert torch_reference.num_params(ref) == n_jax
    x = torch.randn(3, 100, 10, 3)
    tok = torch_reference.patchify(x, cfg.model.patch)
    np.testing.assert_allclose(tok.numpy(), masking.patchify(jnp.asarray(x.numpy()),
                                                             cfg.model.patch))
    vis = torch_reference.random_visible(3, tok.shape[1], 62, torch.Generator())
    full = ref(tok, vis, 62)
    assert full.shape == tok.shape
    rows = torch.argsort(vis.to(torch.int8), dim=-1, stable=True)[:, :40]  # hidden rows
    part = ref(tok, vis, 62, rows)  # the last decoder block computes only these rows
    np.testing.assert_allclose(part.detach().numpy(), full.gather(
        1, rows[..., None].expand(-1, -1, tok.shape[-1])).detach().numpy(), atol=1e-5)
    run = torch_reference.scoring_fn(ref, x, cfg.model.patch, 10)
    assert run().shape == (10, 3, 25, 12)  # [mask/joint, B, patches, patch * C]


def test_torch_reference_linear_prior_equals_the_jax_one():
    torch = pytest.importorskip("torch")
    from benchmarks import torch_reference
    cfg = default.tiny()
    cfg.model.linear_prior = True
    m = model_lib.create_model(cfg, **SHAPE)
    ref = torch_reference.create(cfg, SHAPE)
    rng = np.random.default_rng(0)
    w = rng.normal(size=m.prior_w.shape).astype(np.float32)
    b = rng.normal(size=m.prior_b.shape).astype(np.float32)
    m.prior_w[...], m.prior_b[...] = jnp.asarray(w), jnp.asarray(b)
    ref.prior_w.copy_(torch.from_numpy(w))
    ref.prior_b.copy_(torch.from_numpy(b))
    tok = rng.normal(size=(3, 250, 12)).astype(np.float32)
    vis = np.ones((3, 250), bool)
    vis[0, :25] = vis[1, 50:100] = False  # joint 0 / joints 2, 3 hidden
    vis[2, ::3] = False  # no joint fully hidden: no prior
    got = ref._prior(torch.from_numpy(tok), torch.from_numpy(vis)).numpy()
    np.testing.assert_allclose(got, m.prior(jnp.asarray(tok), jnp.asarray(vis)),
                               rtol=1e-4, atol=1e-3)
    assert np.abs(got[0, :25]).min() > 0 and not got[2].any()


@pytest.mark.parametrize("encoder", [True, False])  # rows = visible slots / all tokens
def test_torch_reference_factorized_attention_equals_the_jax_one(encoder):
    torch = pytest.importorskip("torch")
    from benchmarks import torch_reference
    j, p, h, d = 10, 6, 4, 8
    visible = np.array(jax.random.uniform(jax.random.key(1), (2, j * p)) < 0.4)
    visible[1, :p] = False  # a whole joint hidden: time rows without keys
    if encoder:
        keep, keep_valid, restore = masking.keep_indices(jnp.asarray(visible),
                                                         int(visible.sum(1).max()) + 3)
        grid = model_lib.TokenGrid(j, keep, restore, jnp.asarray(visible))
        t_grid = (torch.from_numpy(np.asarray(keep)), torch.from_numpy(np.asarray(restore)),
                  torch.from_numpy(visible))
        rows = np.asarray(keep_valid)
    else:
        grid, t_grid, rows = model_lib.TokenGrid(j), (None, None, None), np.ones((2, j * p), bool)
    qkv = np.asarray(jax.random.normal(jax.random.key(0), (2, rows.shape[1], 3, h, d)))
    got = model_lib._grid_attention(jnp.asarray(qkv), grid)
    ref = torch_reference._grid_attention(torch.from_numpy(qkv), t_grid, j).transpose(1, 2)
    assert got.shape == ref.shape == (2, rows.shape[1], h, d)
    np.testing.assert_allclose(np.asarray(got)[rows], ref.numpy()[rows], atol=1e-5)


@pytest.mark.parametrize("with_keys", [False, True])
def test_torch_reference_query_attention_equals_the_jax_one(with_keys):
    torch = pytest.importorskip("torch")
    from benchmarks import torch_reference
    j, p, h, d = 10, 6, 4, 8
    qkv = np.asarray(jax.random.normal(jax.random.key(0), (2, j * p, 3, h, d)))
    rows = np.asarray(jax.random.randint(jax.random.key(1), (2, 9), 0, j * p))
    keys = None
    if with_keys:
        keys = np.array(jax.random.uniform(jax.random.key(2), (2, j * p)) < 0.6)
        keys[:, ::5] = True
    got = model_lib.query_attention(jnp.asarray(qkv), jnp.asarray(rows),
                                    None if keys is None else jnp.asarray(keys), j)
    ref = torch_reference._query_attention(torch.from_numpy(qkv), torch.from_numpy(rows),
                                           None if keys is None else torch.from_numpy(keys), j)
    np.testing.assert_allclose(np.asarray(got), ref.transpose(1, 2).numpy(), atol=1e-5)


def test_torch_reference_grid_encoder_gives_the_slot_encoders_numbers(monkeypatch):
    torch = pytest.importorskip("torch")
    from benchmarks import torch_reference
    cfg, _ = _model()
    cfg.model.factorized = True
    ref = torch_reference.create(cfg, SHAPE).eval()
    x = torch.randn(2, 100, 10, 3)
    run = torch_reference.scoring_fn(ref, x, cfg.model.patch, 10)
    new = run()
    monkeypatch.setattr(model_lib, "GRID_ENCODER_SHARE", 2.0)  # never: the K-slot encoder
    monkeypatch.setattr(model_lib, "QUERY_ROWS_SHARE", 0.0)    # never: the whole grid
    np.testing.assert_allclose(new.numpy(), run().numpy(), atol=1e-5)


def test_quick_cli_on_tiny_writes_every_required_key(tmp_path, embedded_data_dir):
    out = tmp_path / "bench.json"
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-m", "launch.benchmark", f"--output={out}", "--quick",
                    "--config=gengait_jax/configs/default.py:tiny", "--notorch",
                    "--config.model.linear_prior=True",  # as demo and paper: refs with the prior
                    f"--config.data.data_dir={embedded_data_dir}"],
                   check=True, env=env, capture_output=True, text=True)
    res = json.loads(out.read_text())
    for key in REQUIRED:
        val = res
        for part in key.split("."):
            val = val[part]
        assert isinstance(val, (int, float)) and val > 0, key
    assert "torch" in res and "torch_note" in res


def test_op_profile_counts_the_factorized_query_rows_as_attention():
    from benchmarks import op_profile
    qkv = jnp.ones((2, 60, 3, 4, 8))
    rows = jnp.zeros((2, 5), jnp.int32)
    compiled = jax.jit(lambda a: model_lib.query_attention(a, rows, None, 10).sum()).lower(
        qkv).compile()
    instrs = op_profile.parse_hlo(compiled.as_text())
    assert "attention" in {op_profile.op_class(i) for i in instrs.values()}


# a GPU's optimized HLO: the product as a cuBLAS call, its dimension numbers in the config
GPU_HLO = """ENTRY %main.3 (a.1: f32[4,64,128], b.1: f32[4,128,256]) -> f32[4,64,256] {
  %a.1 = f32[4,64,128]{2,1,0} parameter(0)
  %b.1 = f32[4,128,256]{2,1,0} parameter(1)
  %custom-call.1 = (f32[4,64,256]{2,1,0}, s8[4194304]{0}) custom-call(%a.1, %b.1), \
custom_call_target="__cublas$gemm", backend_config={"gemm_backend_config":{"alpha_real":1,\
"dot_dimension_numbers":{"lhs_contracting_dimensions":["2"],"rhs_contracting_dimensions":["1"],\
"lhs_batch_dimensions":["0"],"rhs_batch_dimensions":["0"]},"epilogue":"DEFAULT"}}
  %topk.1 = (f32[4,64,2]{2,1,0}, s32[4,64,2]{2,1,0}) custom-call(%a.1), custom_call_target="TopK"
  ROOT %get-tuple-element.1 = f32[4,64,256]{2,1,0} get-tuple-element(%custom-call.1), index=0
}
"""


def test_op_profile_counts_a_gpu_library_gemm_as_dense_and_reads_device_planes():
    from benchmarks import op_profile
    instrs = op_profile.parse_hlo(GPU_HLO)
    gemm, topk = instrs["custom-call.1"], instrs["topk.1"]
    assert gemm["flops"] == 2 * 4 * 64 * 256 * 128 and op_profile.op_class(gemm) == "dense"
    assert topk["flops"] == 0 and op_profile.op_class(topk) == "elementwise"
    op = NS(stats=[("hlo_op", "custom-call.1")], duration_ns=5)
    launch = NS(stats=[], duration_ns=9)  # a host thread's launch: no op
    host = NS(name="/host:CPU", lines=[NS(events=[launch])])
    gpu = NS(name="/device:GPU:0", lines=[NS(events=[op])])
    assert op_profile.op_planes(iter([host, gpu])) == [gpu]  # ProfileData gives an iterator
    cpu = NS(name="/host:CPU", lines=[NS(events=[op])])  # XLA:CPU: ops on host threads
    idle = NS(name="/device:GPU:0", lines=[])
    assert op_profile.op_planes(iter([cpu, idle])) == [cpu, idle]


def test_a_profile_without_ops_is_an_error_entry_not_a_crash(monkeypatch):
    from benchmarks import op_profile
    compiled = jax.jit(lambda a: jnp.tanh(a @ a)).lower(jnp.ones((8, 8))).compile()
    run = lambda: jax.block_until_ready(compiled(jnp.ones((8, 8))))
    monkeypatch.setattr(op_profile, "op_planes", lambda planes: [])  # no op events
    assert "CUPTI" in op_profile.profile(compiled, run, 2, 100.0)["error"]
    monkeypatch.setattr(op_profile.glob, "glob", lambda *a, **k: [])  # no trace file at all
    assert op_profile.profile(compiled, run, 2, 100.0) == {"error": "the profiler wrote no trace"}


def test_sharding_report_gives_each_parameter_class_its_spec_and_per_device_bytes():
    cfg = default.tiny()
    cfg.mesh_model = 2
    rep = benchmarking.sharding_report(cfg, SHAPE)
    assert rep["mesh"] == {"data": jax.device_count() // 2, "model": 2}
    qkv, ln = rep["classes"]["param: qkv.kernel"], rep["classes"]["param: ln1.scale"]
    spec = jax.sharding.PartitionSpec
    assert qkv["spec"] == str(spec(None, "model")) and ln["spec"] == str(spec())
    width, blocks = cfg.model.width, cfg.model.depth  # encoder qkv kernels: [W, 3W], halved
    dec = cfg.model.dec_width
    full = (blocks * width * 3 * width + cfg.model.dec_depth * dec * 3 * dec) * 4
    assert qkv["bytes_per_device"] == full // 2 and qkv["leaves"] == blocks + cfg.model.dec_depth
    assert rep["classes"]["adam mu: qkv.kernel"]["bytes_per_device"] == full // 2
    assert rep["compile_s"] > 0 and rep["memory_per_device_bytes"] > 0
    assert "qkv.kernel" in benchmarking.sharding_table(rep)


def test_op_profile_puts_each_executed_op_in_its_class():
    from benchmarks import op_profile
    w = jnp.ones((16, 64)) * 0.01
    lens = jnp.array([7, 3])

    def step(x):
        h = jax.nn.gelu(x @ w)  # dense + elementwise
        q = h.reshape(2, 8, 4, 16)
        return model_lib.attention(q, q, q, lens).sum() + jnp.tanh(h).sum()

    x = jnp.ones((16, 16))
    compiled = jax.jit(jax.grad(step)).lower(x).compile()
    instrs = op_profile.parse_hlo(compiled.as_text())
    classes = {op_profile.op_class(i) for i in instrs.values()}
    assert {"attention", "dense", "elementwise"} <= classes
    dots = [i for i in instrs.values() if i["op"] == "dot"]
    assert any(i["attention"] for i in dots) and not all(i["attention"] for i in dots)
    assert {i["flops"] for i in dots if not i["attention"]} >= {2 * 16 * 64 * 16}
    rep = op_profile.profile(compiled, lambda: jax.block_until_ready(compiled(x)), 3, 100.0)
    got = rep["classes"]
    assert got["attention"]["time_ms"] > 0 and got["dense"]["time_ms"] > 0
    assert abs(sum(c["share"] for c in got.values()) - 1) < 1e-6
    assert got["dense"]["gflop"] > 0 and got["dense"]["fraction_of_peak"] > 0
