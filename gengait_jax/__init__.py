"""GenGait in JAX/Flax: `GenGait` is the inference front door (see gengait_jax/gengait.py)."""

from gengait_jax import allocator

allocator.tune()  # before JAX allocates anything (gengait_jax/allocator.py)

from gengait_jax.gengait import DetectResult, GenGait  # noqa: E402,F401
