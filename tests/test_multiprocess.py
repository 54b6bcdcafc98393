"""Two JAX processes on localhost (jax.distributed, gloo CPU collectives) train like one.

Both run the README's multi-host command, `python -m launch.train --distributed ...`, which
calls `jax.distributed.initialize(num_processes=2, process_id=i)` with the coordinator
`localhost:PORT` from JAX_COORDINATOR_ADDRESS. Each worker owns 1 CPU device; the 1-process
reference owns 2, so both runs have the same ('data': 2) mesh and global batch. The input
pipeline gives process p the p-th block of rows of every global batch, so the per-step losses
agree up to float reduction order.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(workdir, data_dir, devices: int, **env_extra) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **env_extra)
    cmd = [sys.executable, "-m", "launch.train", "--config=gengait_jax/configs/default.py:tiny",
           f"--workdir={workdir}", f"--config.total_steps={STEPS}", "--config.log_every=1", "--config.warmup_steps=1",
           f"--config.eval_every={STEPS}", f"--config.checkpoint_every={STEPS}",
           "--config.eval_occlusion=False", f"--config.data.data_dir={data_dir}",
           "--config.calibration.folds=0", "--config.data.train_split=train",
           "--config.data.val_split=validation"]
    if env_extra:
        cmd.append("--distributed")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc) -> str:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
    return err


def _rows(workdir, key: str) -> list[float]:
    rows = [json.loads(s) for s in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r]


def test_two_processes_train_like_one(tmp_path, embedded_data_dir):
    port = _free_port()
    procs = [_start(tmp_path / "two", embedded_data_dir, 1,
                    JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                    JAX_PROCESS_ID=str(i)) for i in (0, 1)]
    procs.append(_start(tmp_path / "one", embedded_data_dir, 2))
    try:
        errs = [_finish(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for err in errs[:2]:  # both workers ran the whole run on the 2-process mesh
        assert "mesh {'data': 2, 'model': 1}" in err and f"'step': {STEPS}" in err
    assert "mesh {'data': 2, 'model': 1}" in errs[2]
    losses_two, losses_one = _rows(tmp_path / "two", "loss"), _rows(tmp_path / "one", "loss")
    assert len(losses_two) == len(losses_one) == STEPS
    np.testing.assert_allclose(losses_two, losses_one, rtol=1e-5)
    np.testing.assert_allclose(_rows(tmp_path / "two", "val_loss"),
                               _rows(tmp_path / "one", "val_loss"), rtol=1e-5)
    assert (tmp_path / "two" / "checkpoints" / str(STEPS)).is_dir()  # written by both
