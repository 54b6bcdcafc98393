"""JAX persistent compilation cache, enabled in one place by the launchers."""

from __future__ import annotations

import os

import jax

DEFAULT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "gengait_jax", "xla")


def cache_dir() -> str:
    """GENGAIT_JAX_CACHE, else JAX's own JAX_COMPILATION_CACHE_DIR, else ~/.cache/gengait_jax."""
    return (os.environ.get("GENGAIT_JAX_CACHE") or os.environ.get("JAX_COMPILATION_CACHE_DIR")
            or DEFAULT_DIR)


def enable(path: str | None = None) -> str:
    """Caches compiled programs on disk so a new process (e.g. detect) does not recompile.

    JAX creates the directory at the first compile; a gs:// path (a cache shared by the hosts of
    a TPU slice) stays remote."""
    path = path or cache_dir()
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
