"""Training-time augmentation of normative strides: pure functions of a batch and a key.

A normative cohort of a gait lab is a few dozen people; an MAE trained on their strides
memorizes them (on the embedded cohort: train error 3.5 deg, held-out error worse than the
population mean curve). Three augmentations make new, still plausible, healthy strides:

- `mixup`: a stride blended with another stride of the same side (lambda ~ U(0, 1)): walkers
  between the training subjects; linear couplings between joints (the kinematic chain, the
  two pelvis outputs) hold in every blend.
- `mirror`: left and right joints swapped: a left stride becomes the right stride of the
  mirrored walker. Valid for per-side anatomical angles (Plug-in-Gait expresses each side in
  its own frame); switch it off for lab-frame joint positions.
- `shift`: every joint rolled by the same 0..max_shift frames (the stride periodic): the
  timing error of detected foot strikes (3 frames on the shipped trials).

Rows are augmented independently with keys split from one key, so a sharded step computes
what a 1-device step does.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gengait_jax import masking


def mirror_permutation(joint_names: Sequence[str]) -> tuple[int, ...] | None:
    """Joint order with every 'L*' joint swapped with its 'R*' twin; None if one is missing."""
    index = {n: i for i, n in enumerate(joint_names)}
    twin = {"L": "R", "R": "L"}
    perm = []
    for name in joint_names:
        other = twin.get(name[:1], "") + name[1:]
        if name[:1] not in twin or other not in index:
            return None
        perm.append(index[other])
    return tuple(perm)


def enabled(cfg: ml_collections.ConfigDict) -> bool:
    """Whether the config asks for any augmentation."""
    a = cfg.get("augment")
    return bool(a) and (a.max_shift > 0 or a.mirror_prob > 0 or a.mixup_prob > 0)


def _mixup(x, valid, left, key, prob: float):
    """Blends each row with a random partner row of the same side, with probability `prob`."""
    k_perm, k_mix, k_lam = jax.random.split(key, 3)
    b = x.shape[0]
    partner = jax.random.permutation(k_perm, b)
    mix = (jax.random.uniform(k_mix, (b,)) < prob) & (left == left[partner])
    lam = jnp.where(mix, jax.random.uniform(k_lam, (b,)), 1.0)[:, None, None, None]
    x = jnp.nan_to_num(x)
    x = lam * x + (1.0 - lam) * x[partner]
    valid = valid & (valid[partner] | ~mix[:, None, None])
    return x, valid


def _mirror(x, valid, key, prob: float, perm: tuple[int, ...]):
    """Swaps left and right joints of each row with probability `prob`."""
    flip = jax.random.uniform(key, (x.shape[0],)) < prob
    p = np.asarray(perm)
    x = jnp.where(flip[:, None, None, None], x[:, :, p], x)
    valid = jnp.where(flip[:, None, None], valid[:, :, p], valid)
    return x, valid


def _shift(x, valid, key, max_shift: int):
    """Rolls each row (all joints together) by a random -max_shift..max_shift frames."""
    b, t = x.shape[:2]
    s = jax.random.randint(key, (b,), -max_shift, max_shift + 1)
    idx = (jnp.arange(t)[None, :] - s[:, None]) % t
    x = masking.take_along(x, idx[:, :, None, None], axis=1)
    valid = masking.take_along(valid, idx[:, :, None], axis=1)
    return x, valid


def augment(batch: dict, key: jax.Array, cfg: ml_collections.ConfigDict,
            mirror_perm: tuple[int, ...] | None) -> dict:
    """The batch (angles [B,T,J,C], valid [B,T,J], left [B]) with new plausible strides."""
    a = cfg.augment
    x, valid = batch["angles"], batch["valid"]
    left = batch.get("left", jnp.zeros(x.shape[:1], bool))
    k_mix, k_mir, k_shift = jax.random.split(key, 3)
    if a.mixup_prob > 0:
        x, valid = _mixup(x, valid, left, k_mix, a.mixup_prob)
    if a.mirror_prob > 0 and mirror_perm is not None:
        x, valid = _mirror(x, valid, k_mir, a.mirror_prob, mirror_perm)
    if a.max_shift > 0:
        x, valid = _shift(x, valid, k_shift, a.max_shift)
    return dict(batch, angles=x, valid=valid)
