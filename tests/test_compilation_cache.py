"""Where the launchers' persistent XLA cache lives."""

import os

from gengait_jax import compilation_cache


def test_cache_dir_prefers_gengait_then_jax_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("GENGAIT_JAX_CACHE", str(tmp_path / "ours"))
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert compilation_cache.cache_dir() == str(tmp_path / "ours")
    monkeypatch.delenv("GENGAIT_JAX_CACHE")
    assert compilation_cache.cache_dir() == str(tmp_path / "jax")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    assert compilation_cache.cache_dir() == compilation_cache.DEFAULT_DIR
    assert compilation_cache.DEFAULT_DIR.startswith(os.path.expanduser("~"))
