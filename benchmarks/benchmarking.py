"""Throughput benchmark: matmul peak, train step, pass-1 scoring, input pipeline, cache.

Every figure is measured in the same process (peak included), so fractions of peak are
comparable across machines. `run(cfg, quick=...)` returns one JSON-able dict; `table` prints it.
Times are medians of repeated calls after a warm-up (robust to other jobs on a shared box).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from benchmarks import op_profile
from gengait_jax import compilation_cache, data as data_lib, input_pipeline, masking
from gengait_jax import configs, model as model_lib, scoring, train, train_state
from gengait_jax.gengait import GenGait
from tfds_gait import gait_cycles, joints

# Dense bf16 spec peaks (TFLOP/s per chip) for MFU, matched by substring of device_kind.
SPEC_PEAK_TFLOPS = (("h200", 989.0), ("h100", 989.0), ("a100", 312.0), ("l4", 121.0),
                    ("v6", 918.0), ("v5p", 459.0), ("v5 lite", 197.0), ("v5e", 197.0),
                    ("v4", 275.0))
TRIAL_STRIDES = 10


def spec_peak_tflops(device_kind: str) -> float | None:
    """The chip's spec peak from SPEC_PEAK_TFLOPS (None on CPU or an unknown chip)."""
    kind = device_kind.lower()
    return next((v for k, v in SPEC_PEAK_TFLOPS if k in kind), None)


def timings(fn, min_s: float, min_reps: int = 3, max_reps: int = 1000) -> np.ndarray:
    """Seconds of each call of fn() (which must block) for min_s, after one warm-up call."""
    fn()
    times, start = [], time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < min_s and len(times) < max_reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return np.asarray(times)


def timeit(fn, min_s: float, min_reps: int = 3, max_reps: int = 1000, best: bool = False
           ) -> float:
    """Median (or best) seconds of fn() (which must block) after one warm-up call."""
    times = timings(fn, min_s, min_reps, max_reps)
    return float(np.min(times) if best else np.median(times))


def interleaved(fns: dict[str, Callable[[], None]], rounds: int, window_s: float
                ) -> dict[str, float]:
    """Median seconds per call of each fn (which must block), timed in alternating windows
    (A B A B ...) after one warm-up call each, so that the slow moments of a shared machine
    fall on all of them alike."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = end = time.perf_counter()
            while end - start < window_s:
                t = time.perf_counter()
                fn()
                end = time.perf_counter()
                times[name].append(end - t)
    return {name: float(np.median(v)) for name, v in times.items()}


def flops_of(compiled) -> float:
    """XLA's FLOP count of one call of a compiled program (per device; 0 if unknown)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", 0.0))


def peak_bytes(compiled) -> int:
    """Peak device memory of a compiled program from memory_analysis()."""
    m = compiled.memory_analysis()
    if m is None:
        return 0
    # XLA:CPU's peak_memory_in_bytes can leave out the temporaries: take the larger bound.
    total = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)
    return int(max(getattr(m, "peak_memory_in_bytes", 0), total))


def matmul_call(dtype=jnp.float32, n: int = 2048) -> Callable[[], None]:
    """One blocking call of an n x n matmul (2 n^3 FLOPs): the peak's yardstick."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    f = jax.jit(jnp.matmul)
    return lambda: f(a, b).block_until_ready()


def matmul_size(backend: str, quick: bool) -> int:
    """n of the n x n yardstick matmul: 2048 on CPU (1024 quick); 8192 on a GPU / TPU (4096
    quick), where a 2048^3 product takes tens of microseconds and a blocking call would time
    the dispatch rather than the peak."""
    return (1024 if quick else 2048) if backend == "cpu" else (4096 if quick else 8192)


def matmul_peak_gflops(dtype=jnp.float32, n: int = 2048, min_s: float = 1.0) -> float:
    """Achieved GFLOP/s of an n x n matmul (the same-run peak everything is compared to)."""
    dt = timeit(matmul_call(dtype, n), min_s, best=True)  # a peak: best call
    return 2 * n ** 3 / dt / 1e9


def synthetic_batch(batch_size: int, shape: dict, seed: int = 0) -> dict:
    """Random angles (all valid) of the given stride shape."""
    t, j, c = shape["num_frames"], shape["num_joints"], shape["num_channels"]
    rng = np.random.default_rng(seed)
    return dict(angles=rng.normal(size=(batch_size, t, j, c)).astype(np.float32) * 10,
                valid=np.ones((batch_size, t, j), bool), left=np.arange(batch_size) % 2 == 0)


def compile_train_step(cfg, shape: dict, max_group: int | None = None) -> tuple:
    """(mesh, abstract state, its shardings, compiled train step, compile seconds): the
    project's sharded step (train.jit_steps) lowered for the config's global batch."""
    mesh = train_state.make_mesh(cfg)
    graphdef, abstract = train_state.abstract_state(cfg, shape)
    shardings = train_state.state_shardings(abstract, mesh)
    with jax.set_mesh(mesh):
        step, _ = train.jit_steps(cfg, graphdef, shardings, mesh, max_group=max_group)
        t0 = time.perf_counter()
        compiled = step.lower(train_state.restore_target(abstract, shardings),
                              train.batch_spec(cfg.batch_size, shape,
                                               train_state.batch_sharding(mesh)),
                              jax.random.key(0)).compile()
    return mesh, abstract, shardings, compiled, time.perf_counter() - t0


def bench_train(cfg, shape: dict, batch_np: dict, refs: data_lib.References, min_s: float,
                peak: float, profile_steps: int = 0) -> tuple[dict, Callable[[], None]]:
    """The project's compiled sharded train step (train.jit_steps): rate, FLOPs, memory; and
    a closure running one more step (for the interleaved comparison with PyTorch)."""
    mesh, _, shardings, compiled, compile_s = compile_train_step(
        cfg, shape, masking.largest_group(refs.groups_j))
    state = train_state.init_state(cfg, shape, shardings, refs)
    data_sh = train_state.batch_sharding(mesh)
    with jax.set_mesh(mesh):
        key = jax.random.key(0)
        batch = {k: jax.device_put(v, data_sh) for k, v in batch_np.items()}
        box = [state]

        def one():
            box[0], metrics = compiled(box[0], batch, key)
            jax.block_until_ready(metrics)

        dt = timeit(one, min_s)
        ops = op_profile.profile(compiled, one, profile_steps, peak) if profile_steps else None
    flops = flops_of(compiled) * mesh.devices.size
    n_tok = shape["num_joints"] * shape["num_frames"] // cfg.model.patch
    out = dict(batch_size=cfg.batch_size, step_s=dt, seq_per_s=cfg.batch_size / dt,
               tokens_per_s=cfg.batch_size * n_tok / dt, flops_per_step=flops,
               gflops_per_s=flops / dt / 1e9, fraction_of_peak=flops / dt / 1e9 / peak,
               compile_s=compile_s, peak_memory_bytes=peak_bytes(compiled))
    spec = spec_peak_tflops(jax.devices()[0].device_kind)
    out["mfu"] = None if spec is None else flops / dt / (spec * 1e12 * mesh.devices.size)
    if ops is not None:
        out["op_profile"] = ops
    return out, one


def _leaf_class(path) -> str:
    """'param' / 'adam mu' / 'adam nu' / 'opt' + the state leaf's last two names, layer
    indices dropped (encoder.0.qkv.kernel and decoder.1.qkv.kernel are one class)."""
    names = [str(n) for n in train_state._names(path) if not str(n).isdigit()]
    kind = next((f"adam {m}" for m in ("mu", "nu") if m in names),
                "opt" if names[0] == "opt" else "param")
    names = [n for n in names if n not in ("mu", "nu", "model")]
    return f"{kind}: {'.'.join(names[-2:])}"


def sharding_report(cfg, shape: dict | None = None) -> dict:
    """The train step of cfg compiled (not run) on the devices at hand: mesh, compile time,
    memory per device, and per parameter class its PartitionSpec, leaves and bytes per device.
    For the `paper` preset on fake CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)."""
    shape = shape or dict(num_frames=configs.NUM_FRAMES, num_channels=len(joints.CHANNELS),
                          num_joints=len(joints.joint_names(gait_cycles.JOINT_SET)))
    mesh, abstract, shardings, compiled, compile_s = compile_train_step(cfg, shape)
    classes: dict[str, dict] = {}
    for (path, leaf), sh in zip(jax.tree_util.tree_leaves_with_path(abstract),
                                jax.tree.leaves(shardings)):
        shard = sh.shard_shape(leaf.shape)
        row = classes.setdefault(_leaf_class(path), dict(
            spec=str(sh.spec), dtype=str(leaf.dtype), leaves=0, bytes_per_device=0))
        row["leaves"] += 1
        row["bytes_per_device"] += int(np.prod(shard)) * leaf.dtype.itemsize
    return dict(mesh=dict(mesh.shape), devices=jax.device_count(),
                device_kind=jax.devices()[0].device_kind, batch_size=cfg.batch_size,
                dtype=cfg.model.dtype, compile_s=compile_s,
                memory_per_device_bytes=peak_bytes(compiled),
                flops_per_step=flops_of(compiled) * mesh.devices.size,
                state_bytes_per_device=sum(r["bytes_per_device"] for r in classes.values()),
                classes=classes)


def sharding_table(rep: dict) -> str:
    """The sharding report as text."""
    lines = [f"mesh {rep['mesh']} on {rep['devices']} x {rep['device_kind']}; global batch "
             f"{rep['batch_size']}, {rep['dtype']}", f"train step compile s: "
             f"{rep['compile_s']:.1f}; memory per device MiB: "
             f"{rep['memory_per_device_bytes'] / 2**20:.0f} (state "
             f"{rep['state_bytes_per_device'] / 2**20:.1f}); GFLOP per step: "
             f"{rep['flops_per_step'] / 1e9:.0f}",
             f"{'parameter class':38s} {'spec':22s} {'leaves':>6s} {'KiB/device':>11s}"]
    for name, r in sorted(rep["classes"].items()):
        lines.append(f"{name:38s} {r['spec']:22s} {r['leaves']:6d} "
                     f"{r['bytes_per_device'] / 1024:11.1f}")
    return "\n".join(lines)


def _pass1_programs(graphdef, num_keep: int, rows_only: bool, chunk: int = 0):
    """(all joints in one vmap call, one joint per call) as jitted functions of the state."""
    if rows_only:
        vmapped = jax.jit(lambda s, x, v, key: scoring.occlusion_recon_rows(
            nnx.merge(graphdef, s), x, v, chunk))
    else:
        vmapped = jax.jit(lambda s, x, v, key: scoring.occlusion_recon(
            nnx.merge(graphdef, s), x, v, key, rows_only=False))

    @jax.jit
    def per_joint(s, x, visible_bn, j):
        """Joint j of every stride reconstructed from visible_bn: [B, T, C]."""
        model = nnx.merge(graphdef, s)
        if not rows_only:
            return jnp.take(model.reconstruct(x, visible_bn, num_keep), j, axis=2)
        p = model.num_patches
        rows = jnp.broadcast_to(j * p + jnp.arange(p), (x.shape[0], p))
        ref = model.reference(x)
        pred = model(model.tokens(x, ref), visible_bn, num_keep, rows)
        return model.untokens_joint(pred, ref, j)

    return vmapped, per_joint


def bench_scoring(model: model_lib.GenGaitMAE, batches: tuple[int, ...], min_s: float,
                  peak: float, rows_only: bool = False, chunk: int = 0,
                  beside_matmul: tuple[int, int, float] | None = None,
                  other_chunk: int | None = None) -> dict:
    """Pass 1 strides/s: all J masks in one vmap call vs a Python loop of per-joint calls.

    beside_matmul (n, rounds, window_s): the largest batch's program also timed in windows
    alternating with an n x n matmul's (`interleaved`), its FLOP rate over the matmul's in the
    same windows (`fraction_of_matmul_interleaved`: a slow moment of a shared machine falls on
    both). Each batch also gives its number of timed calls and their quartiles (`calls`,
    `call_ms_p25` / `call_ms_p75`; the largest's median too): a wide spread says the machine,
    not the program, moved the median. other_chunk (rows_only): the largest batch also through
    the plan that `scoring.pass1_chunk` did not pick for this backend (`other_plan`: its chunk,
    median call and how many times slower it is), so one run on a device checks the choice."""
    graphdef, state = nnx.split(model)
    j, p = model.num_joints, model.num_patches
    vmapped, per_joint = _pass1_programs(graphdef, j * p - p, rows_only, chunk)
    one_vmap = _pass1_programs(graphdef, j * p - p, rows_only)[0] if chunk else vmapped
    key, out = jax.random.key(0), {}
    for b in batches:
        x_np = synthetic_batch(b, dict(num_frames=p * model.patch, num_joints=j,
                                       num_channels=model.mean_jc.shape[-1]))
        x, valid = jnp.asarray(x_np["angles"]), jnp.asarray(x_np["valid"])
        masks = masking.occlusion_masks(masking.token_valid(valid, model.patch), j,
                                        model.group_j[...])
        compiled = vmapped.lower(state, x, valid, key).compile()
        times = timings(lambda: compiled(state, x, valid, key).block_until_ready(), min_s)
        t_vmap, t_best = float(np.median(times)), float(np.min(times))

        def loop():
            jax.block_until_ready([per_joint(state, x, masks[i], i) for i in range(j)])

        t_loop = timeit(loop, min_s)
        # cost_analysis counts a lax.map body once: count the same arithmetic as one vmap
        # (compiled, not run; scaling the body by the chunks would also scale what is outside).
        one = one_vmap.lower(state, x, valid, key).compile() if chunk else compiled
        flops = flops_of(one)
        p25, p75 = np.percentile(times, [25, 75])
        out[f"b{b}"] = dict(vmap_strides_per_s=b / t_vmap, loop_strides_per_s=b / t_loop,
                            vmap_s=t_vmap, loop_s=t_loop, speedup=t_loop / t_vmap,
                            flops_per_call=flops, fraction_of_peak=flops / t_vmap / 1e9 / peak,
                            fraction_of_peak_best_call=flops / t_best / 1e9 / peak,
                            calls=len(times), call_ms_p25=1e3 * p25, call_ms_p75=1e3 * p75)
        if beside_matmul and b == max(batches):
            n, rounds, window_s = beside_matmul
            t = interleaved({"pass1": lambda: compiled(state, x, valid, key).block_until_ready(),
                             "matmul": matmul_call(jnp.float32, n)}, rounds, window_s)
            out["fraction_of_matmul_interleaved"] = flops / t["pass1"] / (2 * n ** 3 / t["matmul"])
        if other_chunk is not None and b == max(batches):
            other = one if other_chunk == 0 else _pass1_programs(
                graphdef, j * p - p, rows_only, other_chunk)[0].lower(
                    state, x, valid, key).compile()
            t_other = float(np.median(timings(
                lambda: other(state, x, valid, key).block_until_ready(), min_s)))
            out["other_plan"] = dict(chunk=other_chunk, call_ms_median=1e3 * t_other,
                                     slower=t_other / t_vmap)
    big = f"b{max(batches)}"
    out.update(vmap_vs_loop_speedup_b1=out["b1"]["speedup"] if "b1" in out else None,
               large_batch=max(batches), strides_per_s=out[big]["vmap_strides_per_s"],
               fraction_of_peak=out[big]["fraction_of_peak"],
               fraction_of_peak_best_call=out[big]["fraction_of_peak_best_call"],
               calls=out[big]["calls"], call_ms_p25=out[big]["call_ms_p25"],
               call_ms_median=1e3 * out[big]["vmap_s"], call_ms_p75=out[big]["call_ms_p75"],
               rows_only=rows_only, chunk=chunk)
    if rows_only:  # one trial, unpadded, through the same program (+ copy to host)
        x = synthetic_batch(TRIAL_STRIDES, dict(num_frames=p * model.patch, num_joints=j,
                                                num_channels=model.mean_jc.shape[-1]))
        xv = (x["angles"], x["valid"])
        out["trial_latency_ms_one_call"] = 1e3 * timeit(
            lambda: jax.device_get(vmapped(state, *xv, key)), min_s)
    return out


def trial_latency_ms(model: model_lib.GenGaitMAE, min_s: float) -> float:
    """One TRIAL_STRIDES-stride trial through the front door's pass 1 (GenGait.pass1), warm."""
    j, t = model.num_joints, model.num_patches * model.patch
    x = synthetic_batch(TRIAL_STRIDES, dict(num_frames=t, num_joints=j,
                                            num_channels=model.mean_jc.shape[-1]))["angles"]
    gg = GenGait(model, {"joint_names": [f"j{i}" for i in range(j)], "num_frames": t})
    strides = data_lib.from_arrays(x)
    return 1e3 * timeit(lambda: gg.pass1(strides), min_s)


def bench_input(strides, batch_size: int, read: ml_collections.ConfigDict, min_s: float,
                min_batches: int = 20) -> dict:
    """Strides/s of the grain train iterator over the training strides (steady state), read as
    `read` (config.input) says."""
    it = bench_input_batches(strides, batch_size, read)
    for _ in range(min_batches):  # fill grain's prefetch buffer: measure reads, not it
        next(it)
    n, t0 = 0, time.perf_counter()
    while n < min_batches or time.perf_counter() - t0 < min_s:
        next(it)
        n += 1
    dt = time.perf_counter() - t0
    return dict(strides_per_s=n * batch_size / dt, batches=n)


def cache_probe(cfg_json: str, cache_dir: str) -> dict:
    """(In a fresh process) latency of the first pass-1 scoring with the given cache dir."""
    compilation_cache.enable(cache_dir)
    cfg = ml_collections.ConfigDict(json.loads(cfg_json))
    model = model_lib.create_model(cfg, num_frames=100, num_joints=10, num_channels=3)
    x = synthetic_batch(TRIAL_STRIDES, dict(num_frames=100, num_joints=10, num_channels=3))
    t0 = time.perf_counter()
    scoring.score_strides(model, x["angles"])
    return dict(first_call_s=time.perf_counter() - t0)


def bench_cache(cfg) -> dict:
    """Pass-1 latency in a FRESH subprocess with an empty, then a warm, compilation cache."""
    out = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        for name in ("cold", "warm"):
            t0 = time.perf_counter()
            res = subprocess.run(
                [sys.executable, "-m", "benchmarks.benchmarking", cfg.to_json(), cache_dir],
                capture_output=True, text=True, check=True, cwd=os.getcwd())
            probe = json.loads(res.stdout.strip().splitlines()[-1])
            out[f"detect_{name}_s"] = probe["first_call_s"]
            out[f"process_{name}_s"] = time.perf_counter() - t0
    return out


def load_avg() -> float:
    """1-minute load average (the box is shared: figures are only clean when it is low)."""
    return os.getloadavg()[0]


def run(cfg, *, quick: bool = False, torch_ref: bool = True, cache: bool = True,
        torch_compile: bool = False, profile: bool = True) -> dict:
    """All benchmarks of cfg; quick keeps the run under 2 minutes on 2 CPU cores."""
    min_s, large = (0.3, 8) if quick else (2.0, 64)
    n_mm = matmul_size(jax.default_backend(), quick)
    res = dict(config=cfg.get("name", "custom"), quick=quick, backend=jax.default_backend(),
               device_kind=jax.devices()[0].device_kind, num_devices=jax.device_count(),
               jax=jax.__version__, xla_flags=os.environ.get("XLA_FLAGS", ""),
               load_avg_start=load_avg(), phase_s={})
    clock = [time.perf_counter()]

    def done(phase: str) -> None:
        """Records the wall time of the phase that just ended."""
        now = time.perf_counter()
        res["phase_s"][phase], clock[0] = now - clock[0], now

    res["peak_gflops"] = matmul_peak_gflops(jnp.float32, n_mm, min_s)
    res["peak_gflops_bf16"] = matmul_peak_gflops(jnp.bfloat16, n_mm, min_s)
    done("peak")
    train.prepare_data(cfg)
    data = train.load_data(cfg)
    shape = data.train.shape
    res["input"] = bench_input(data.train, cfg.batch_size, cfg.input, min_s)
    batch = next(bench_input_batches(data.train, cfg.batch_size, cfg.input))
    done("input")
    res["train"], jax_step = bench_train(cfg, shape, batch, data.refs, min_s,
                                         res["peak_gflops"], profile_steps=5 if profile else 0)
    res["input"]["ratio_to_train"] = res["input"]["strides_per_s"] / res["train"]["seq_per_s"]
    done("train")
    model = model_lib.create_model(cfg, **shape)
    model.set_references(data.refs)
    # The shipped pass 1 (scoring.occlusion_recon): rows-only decoding, the masks in the
    # backend's chunks (and the other backends' plan beside it); then the full decode of every
    # row in one vmap (what it replaced).
    tokens = model.num_joints * model.num_patches
    chunk = scoring.pass1_chunk(res["backend"], tokens)
    res["scoring"] = bench_scoring(model, (1, large), min_s, res["peak_gflops"],
                                   rows_only=True, chunk=chunk,
                                   beside_matmul=(n_mm, 3, 0.2) if quick else (n_mm, 8, 0.5),
                                   other_chunk=0 if chunk else scoring.pass1_chunk("cpu", tokens))
    res["scoring"]["trial_latency_ms"] = trial_latency_ms(model, min_s)
    done("scoring")
    res["scoring_full_decode"] = bench_scoring(model, (1, large), min_s, res["peak_gflops"])
    done("scoring_full_decode")
    res["torch"], res["torch_note"] = None, "torch not timed (--notorch)"
    if torch_ref:
        res["torch"], res["torch_note"] = _torch(cfg, shape, batch, res, quick, torch_compile,
                                                 jax_step)
        done("torch")
    if cache:
        res["cache"] = bench_cache(cfg)
        done("cache")
    res["load_avg_end"] = load_avg()
    res["peak_gflops_start"] = res["peak_gflops"]
    res["peak_gflops_end"] = matmul_peak_gflops(jnp.float32, n_mm, min_s)
    use_peak(res, max(res["peak_gflops_start"], res["peak_gflops_end"]))
    return res


def use_peak(res: dict, peak: float) -> None:
    """Rescales every fraction_of_peak in `res` to `peak` (GFLOP/s): the larger of the peaks
    measured at the start and the end of a run, so that a slow moment of a shared machine
    during one peak measurement cannot inflate the fractions."""
    def walk(d: dict) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v)
            elif k.startswith("fraction_of_peak") and v is not None:
                d[k] = v * res["peak_gflops"] / peak
    walk(res)
    res["peak_gflops"] = peak


def bench_input_batches(strides, batch_size: int, read: ml_collections.ConfigDict):
    """Batches of real strides (the train benchmark's input)."""
    return input_pipeline.train_iterator(strides, batch_size, seed=0, read=read,
                                         process_index=0, process_count=1)


def _torch(cfg, shape, batch, res, quick, torch_compile, jax_step):
    """The PyTorch reference timed on the same batch; (None, why) when torch is absent.

    `train_speedup` compares the two train steps timed in alternating windows (`interleaved`):
    timed one after the other, minutes apart, the ratio of the same code ranged 0.78-1.31 on a
    shared 2-core machine (BUILD_NOTES "Performance"); `train_speedup_sequential` is that
    ratio of the separate figures."""
    try:
        from benchmarks import torch_reference  # noqa: PLC0415  (optional: torch may be absent)
    except ImportError as e:
        return None, f"torch not installed ({e})"
    out = torch_reference.benchmark(cfg, shape, batch, quick=quick, try_compile=torch_compile,
                                    score_batches=(1, res["scoring"]["large_batch"]))
    rounds, window = (3, 0.2) if quick else (8, 0.5)
    t = interleaved({"jax": jax_step, "torch": torch_reference.train_step_fn(cfg, shape, batch)},
                    rounds, window)
    out["train_interleaved_step_s"] = t
    out["train_speedup"] = t["torch"] / t["jax"]
    out["train_speedup_sequential"] = res["train"]["seq_per_s"] / out["train_seq_per_s"]
    big = f"b{res['scoring']['large_batch']}"
    out["scoring_speedup"] = res["scoring"]["strides_per_s"] / out["scoring"][big]
    out["scoring_speedup_b1"] = res["scoring"]["b1"]["vmap_strides_per_s"] / out["scoring"]["b1"]
    out["scoring_speedup_full_decode"] = (res["scoring_full_decode"]["strides_per_s"]
                                          / out["scoring_full_decode"][big])
    return out, out.pop("note")


def table(res: dict) -> str:
    """The headline figures as a text table."""
    tr, sc, tor = res["train"], res["scoring"], res.get("torch") or {}
    start, end = res.get("peak_gflops_start"), res.get("peak_gflops_end")
    ends = f" ({start:.0f} / {end:.0f})" if start and end else ""
    rows = [("peak GFLOP/s f32 (start / end) / bf16",
             f"{res['peak_gflops']:.0f}{ends} / {res['peak_gflops_bf16']:.0f}"),
            ("train seq/s (tokens/s)", f"{tr['seq_per_s']:.1f} ({tr['tokens_per_s']:.0f})"),
            ("train fraction of peak", f"{tr['fraction_of_peak']:.2f}"),
            ("train compile s / peak MiB", f"{tr['compile_s']:.1f} / {tr['peak_memory_bytes'] / 2**20:.0f}"),
            ("pass 1 strides/s b1 / large", "{:.1f} / {:.1f}".format(
                sc["b1"]["vmap_strides_per_s"], sc["strides_per_s"])),
            ("pass 1 fraction of peak: median / best call",
             f"{sc['fraction_of_peak']:.2f} / {sc['fraction_of_peak_best_call']:.2f}"),
            ("pass 1 large: calls, ms p25 / median / p75",
             "{}, {:.0f} / {:.0f} / {:.0f}".format(sc["calls"], sc["call_ms_p25"],
                                                    sc["call_ms_median"], sc["call_ms_p75"])),
            ("pass 1 / matmul GFLOP/s, interleaved",
             f"{sc.get('fraction_of_matmul_interleaved', float('nan')):.2f}"),
            ("pass 1 vmap / loop speedup b1", f"{sc['vmap_vs_loop_speedup_b1']:.2f}"),
            ("pass 1 large, other plan: chunk, ms, x slower", "{}, {:.0f}, {:.2f}".format(
                *(sc["other_plan"][k] for k in ("chunk", "call_ms_median", "slower")))),
            ("trial ms: one call / score_strides", "{:.0f} / {:.0f}".format(
                sc["trial_latency_ms_one_call"], sc["trial_latency_ms"])),
            ("full decode strides/s b1 / large", "{:.1f} / {:.1f}".format(
                res["scoring_full_decode"]["b1"]["vmap_strides_per_s"],
                res["scoring_full_decode"]["strides_per_s"])),
            ("full decode fraction of peak / vmap:loop b1", "{:.2f} / {:.2f}".format(
                res["scoring_full_decode"]["fraction_of_peak"],
                res["scoring_full_decode"]["vmap_vs_loop_speedup_b1"])),
            ("torch speedup train / pass 1 / full decode", "{:.2f} / {:.2f} / {:.2f}".format(
                *(tor.get(k, float("nan")) for k in ("train_speedup", "scoring_speedup",
                                                     "scoring_speedup_full_decode")))),
            ("torch train speedup timed apart",
             f"{tor.get('train_speedup_sequential', float('nan')):.2f}"),
            ("input strides/s (x train)",
             f"{res['input']['strides_per_s']:.0f} ({res['input']['ratio_to_train']:.1f}x)")]
    if "cache" in res:
        rows.append(("detect cold / warm cache s",
                     f"{res['cache']['detect_cold_s']:.2f} / {res['cache']['detect_warm_s']:.2f}"))
    if "error" in (tr.get("op_profile") or {}):
        rows.append(("train op time", f"no profile: {tr['op_profile']['error']}"))
    for c, r in (tr.get("op_profile") or {}).get("classes", {}).items():
        if r["time_ms"]:
            frac = "" if r["fraction_of_peak"] is None else f", {r['fraction_of_peak']:.2f} of peak"
            rows.append((f"train op time: {c}", f"{r['time_ms']:.1f} ms ({r['share']:.0%}){frac}"))
    rows.append(("load avg start / end", f"{res['load_avg_start']:.1f} / {res['load_avg_end']:.1f}"))
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


if __name__ == "__main__":  # the cache probe's fresh process
    print(json.dumps(cache_probe(sys.argv[1], sys.argv[2])))
