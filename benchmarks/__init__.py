"""Reference implementations timed against the JAX model (optional dependencies)."""
