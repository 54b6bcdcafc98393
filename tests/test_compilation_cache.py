"""Where the launchers' persistent XLA cache lives."""

import os

import jax

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


def test_a_bucket_cache_is_not_created_as_a_local_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    old = jax.config.jax_compilation_cache_dir
    try:
        assert compilation_cache.enable("gs://bucket/xla") == "gs://bucket/xla"
        assert jax.config.jax_compilation_cache_dir == "gs://bucket/xla"
    finally:
        jax.config.update("jax_compilation_cache_dir", old)
    assert not os.listdir(tmp_path)  # no local "gs:" folder
