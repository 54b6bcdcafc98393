"""Crash safety of `python -m launch.train`: SIGKILL and rerun, corrupted checkpoints, NaN loss.

Every run is the same command in a fresh process sharing one persistent XLA cache, so only the
first run compiles. The uninterrupted run is the reference: a killed-and-rerun run, and a run
whose newest checkpoint was corrupted, must end with bit-identical parameters (no batch
skipped or repeated: the data iterator position is checkpointed with the state).
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent import futures

import jax
import numpy as np
import pytest
from flax import nnx

from gengait_jax import checkpointing
from gengait_jax.workdir import Workdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, EVERY = 40, 2


def _cmd(workdir, data_dir, *extra) -> list[str]:
    return [sys.executable, "-m", "launch.train", "--config=gengait_jax/configs/default.py:tiny",
            f"--workdir={workdir}", f"--config.total_steps={STEPS}",
            f"--config.checkpoint_every={EVERY}", f"--config.log_every={EVERY}",
            f"--config.eval_every={STEPS}", "--config.eval_occlusion=False",
            f"--config.data.data_dir={data_dir}", "--config.calibration.folds=0",
            "--config.data.train_split=train", "--config.data.val_split=validation", *extra]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """2 CPU devices and one persistent compilation cache for every run of this module."""
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
                XLA_FLAGS="--xla_force_host_platform_device_count=2",
                GENGAIT_JAX_CACHE=str(tmp_path_factory.mktemp("xla")))


def _run(cmd, env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    return r.stderr


def _steps(workdir) -> list[int]:
    """Finalized checkpoint steps (orbax writes into a temporary name, then renames)."""
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _params(workdir) -> list[np.ndarray]:
    model = checkpointing.restore_model(Workdir(workdir))[0]
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _same_params(a, b) -> None:
    pa, pb = _params(a), _params(b)
    assert len(pa) == len(pb)
    for x, y in zip(pa, pb):
        np.testing.assert_array_equal(x, y)  # bit-identical on CPU


def _data_state(workdir, step: int) -> dict:
    """The data iterator position saved with a checkpoint (orbax JsonSave item)."""
    return json.loads((workdir / "checkpoints" / str(step) / "data" / "metadata").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env, embedded_data_dir):
    """The uninterrupted run (it compiles; the later runs load from the cache)."""
    workdir = tmp_path_factory.mktemp("reference")
    _ok(_run(_cmd(workdir, embedded_data_dir), env))
    assert _steps(workdir) == [STEPS - 2 * EVERY, STEPS - EVERY, STEPS]
    assert os.listdir(env["GENGAIT_JAX_CACHE"]), "launch.train left its compiled steps uncached"
    return workdir


def _kill_and_rerun(workdir, data_dir, env) -> tuple[int, int, str]:
    """SIGKILL at a random moment after the first checkpoint, then the same command again."""
    seed = random.randrange(10**6)
    delay = random.Random(seed).uniform(0.0, 1.5)
    proc = subprocess.Popen(_cmd(workdir, data_dir), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = workdir / "checkpoints" / str(EVERY)
    deadline = time.time() + 240
    while not first.is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"run ended before the kill (seed {seed})"
    newest = max(_steps(workdir))
    assert newest < STEPS, f"killed after the last checkpoint (seed {seed})"
    err = _ok(_run(_cmd(workdir, data_dir), env))
    resumed = int(re.search(r"resumed from \S+ at step (\d+)", err).group(1))
    return newest, resumed, err


def _corrupt_newest_and_rerun(src, dst, data_dir, env) -> str:
    """Half-empties the newest checkpoint's files, adds a half-written one, reruns."""
    shutil.copytree(src, dst)
    for f in (dst / "checkpoints" / str(STEPS) / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    shutil.copytree(dst / "checkpoints" / str(STEPS - EVERY),
                    dst / "checkpoints" / f"{STEPS + EVERY}.orbax-checkpoint-tmp-1")
    return _ok(_run(_cmd(dst, data_dir), env))


def _blow_up(src, dst, data_dir, env) -> subprocess.CompletedProcess:
    """Continues the finished run for 4 more steps with lr=1e30."""
    shutil.copytree(src, dst)
    cmd = _cmd(dst, data_dir, "--config.lr=1e30")
    cmd[cmd.index(f"--config.total_steps={STEPS}")] = f"--config.total_steps={STEPS + 4}"
    return _run(cmd, env)


def test_crash_safety(reference, env, embedded_data_dir, tmp_path):
    with futures.ThreadPoolExecutor(3) as pool:  # independent runs, side by side
        killed = pool.submit(_kill_and_rerun, tmp_path / "killed", embedded_data_dir, env)
        corrupt = pool.submit(_corrupt_newest_and_rerun, reference, tmp_path / "corrupt",
                              embedded_data_dir, env)
        nan = pool.submit(_blow_up, reference, tmp_path / "nan", embedded_data_dir, env)
        newest, resumed, _ = killed.result()
        corrupt_err, nan_run = corrupt.result(), nan.result()

    # SIGKILL: resumes from the newest complete checkpoint and ends exactly like the reference.
    assert resumed == newest >= EVERY
    _same_params(reference, tmp_path / "killed")
    want = _data_state(reference, STEPS)
    assert want == _data_state(tmp_path / "killed", STEPS)
    assert json.loads(want["per_process"][0])["next_index"] == STEPS  # one batch per step

    # Corrupted newest checkpoint: skipped with a warning, the one before it is used.
    assert re.search(rf"checkpoint {STEPS} cannot be restored .* moved to checkpoints_corrupt",
                     corrupt_err)
    assert f"at step {STEPS - EVERY}" in re.search(r"resumed from .*", corrupt_err).group(0)
    assert [p.name.split("-")[0] for p in (tmp_path / "corrupt" / "checkpoints_corrupt")
            .iterdir()] == [str(STEPS)]
    _same_params(reference, tmp_path / "corrupt")

    # Non-finite loss: one line, non-zero exit, the last good checkpoint intact.
    lines = [s for s in nan_run.stderr.splitlines() if s.strip()]
    assert nan_run.returncode == 1 and "Traceback" not in nan_run.stderr, nan_run.stderr[-3000:]
    assert re.fullmatch(rf"error: non-finite loss \(\S+\) at step \d+; "
                        rf"training stopped, last good checkpoint: step {STEPS}", lines[-1])
    assert max(_steps(tmp_path / "nan")) == STEPS
    _same_params(reference, tmp_path / "nan")
