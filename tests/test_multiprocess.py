"""Two JAX processes on localhost (jax.distributed, gloo CPU collectives) train like one.

Each worker owns 1 CPU device; the 1-process reference owns 2, so both runs have the same
('data': 2) mesh and global batch. The input pipeline gives process p the p-th block of rows
of every global batch, so the per-step losses agree up to float reduction order.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4

WORKER = textwrap.dedent("""
    import json, sys
    import jax
    process_id, num_processes, port, workdir, data_dir, steps = sys.argv[1:]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if int(num_processes) > 1:
        jax.distributed.initialize(coordinator_address=f"localhost:{port}",
                                   num_processes=int(num_processes), process_id=int(process_id))
    from gengait_jax import train
    from gengait_jax.configs import default
    cfg = default.tiny()
    cfg.eval_occlusion = False
    cfg.total_steps = cfg.eval_every = cfg.checkpoint_every = int(steps)
    cfg.log_every = 1
    cfg.data.data_dir = data_dir
    train.prepare_data(cfg)
    final = train.train_and_evaluate(cfg, workdir)
    print("RESULT", json.dumps(dict(process=jax.process_index(), processes=jax.process_count(),
                                    devices=jax.device_count(), loss=final["loss"],
                                    val_loss=final["val_loss"])), flush=True)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(script, pid: int, n: int, port: int, workdir, data_dir, devices: int):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.Popen([sys.executable, str(script), str(pid), str(n), str(port),
                             str(workdir), data_dir, str(STEPS)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(next(s for s in out.splitlines() if s.startswith("RESULT"))[7:])


def _losses(workdir) -> list[float]:
    rows = [json.loads(s) for s in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_two_processes_train_like_one(tmp_path, embedded_data_dir):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = _free_port()
    procs = [_start(script, i, 2, port, tmp_path / "two", embedded_data_dir, 1) for i in (0, 1)]
    procs.append(_start(script, 0, 1, 0, tmp_path / "one", embedded_data_dir, 2))
    try:
        two = [_result(p) for p in procs[:2]]
        one = _result(procs[2])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [(r["process"], r["processes"], r["devices"]) for r in two] == [(0, 2, 2), (1, 2, 2)]
    assert (one["processes"], one["devices"]) == (1, 2)
    assert two[0]["loss"] == two[1]["loss"] and two[0]["val_loss"] == two[1]["val_loss"]
    losses_two, losses_one = _losses(tmp_path / "two"), _losses(tmp_path / "one")
    assert len(losses_two) == len(losses_one) == STEPS
    np.testing.assert_allclose(losses_two, losses_one, rtol=1e-5)
    np.testing.assert_allclose(two[0]["val_loss"], one["val_loss"], rtol=1e-5)
    assert (tmp_path / "two" / "checkpoints" / str(STEPS)).is_dir()  # saved by both processes
