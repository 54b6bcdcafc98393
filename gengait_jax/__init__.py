"""GenGait in JAX/Flax: `GenGait` is the inference front door (see gengait_jax/gengait.py)."""

from gengait_jax.gengait import DetectResult, GenGait  # noqa: F401
