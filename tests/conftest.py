"""Test set-up: 8 fake CPU devices (must be set before JAX starts) and shared fixtures."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def embedded_data_dir(tmp_path_factory) -> str:
    """A TFDS data_dir with `gait_cycles/embedded` prepared once per test session."""
    import tensorflow_datasets as tfds

    import tfds_gait  # noqa: F401

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    tfds.builder("gait_cycles/embedded", data_dir=data_dir).download_and_prepare()
    return data_dir
