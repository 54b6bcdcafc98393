"""Test set-up: 8 fake CPU devices (must be set before JAX starts) and shared fixtures."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from gengait_jax import compilation_cache  # noqa: E402

# The slowest test files, slowest first (`bash launch/test.sh --durations=0` on a 2-core machine:
# 435, 347, 184, 138, 130, 128, 94 s): run first, so that the xdist workers that
# launch/test.sh starts (--no-loadscope-reorder keeps this order) finish at about one time.
SLOW_FIRST = ("test_train.py", "test_calibration.py", "test_benchmark.py", "test_workdir.py",
              "test_bad_inputs.py", "test_reliability.py", "test_multiprocess.py")


def pytest_collection_modifyitems(items: list) -> None:
    """Puts the SLOW_FIRST files' tests first (a stable sort: each file's own order is kept)."""
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))


@pytest.fixture(scope="session")
def embedded_data_dir(tmp_path_factory) -> str:
    """A TFDS data_dir with `gait_cycles/embedded` prepared once per test session."""
    import tensorflow_datasets as tfds

    import tfds_gait  # noqa: F401

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    tfds.builder("gait_cycles/embedded", data_dir=data_dir).download_and_prepare()
    return data_dir


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory):
    """One persistent XLA cache for the session, its xdist workers and the launchers it starts:
    an identical program compiles once, and nothing lands in the user's ~/.cache."""
    root = tmp_path_factory.getbasetemp()
    path = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "xla"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENGAIT_JAX_CACHE", compilation_cache.enable(str(path)))
        yield
