"""Training-time augmentation: what each transform does to a batch, and when it is off."""

import jax
import jax.numpy as jnp
import numpy as np

from gengait_jax import augment
from gengait_jax.configs import default
from tfds_gait import joints

T, J, C, B = 100, 10, 3, 16


def _cfg(mixup=0.0, mirror=0.0, shift=0):
    cfg = default.tiny()
    cfg.augment.update(mixup_prob=mixup, mirror_prob=mirror, max_shift=shift)
    return cfg


def _batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, T, J, C)).astype(np.float32)
    valid = np.ones((B, T, J), bool)
    valid[3, 10:20, 2] = False
    x[3, 10:20, 2] = np.nan
    return {"angles": jnp.asarray(x), "valid": jnp.asarray(valid),
            "left": jnp.asarray(np.arange(B) % 2 == 0)}


def test_mirror_permutation_swaps_sides_or_is_none():
    names = joints.joint_names("lower")
    perm = augment.mirror_permutation(names)
    assert [names[p] for p in perm] == ["R" + n[1:] for n in names[:5]] + ["L" + n[1:]
                                                                       for n in names[5:]]
    assert augment.mirror_permutation(("LHJC", "RHJC", "CLAV")) is None


def test_off_by_default_and_identity_when_off():
    assert not augment.enabled(default.tiny()) and augment.enabled(_cfg(shift=1))
    b = _batch()
    out = augment.augment(b, jax.random.key(0), _cfg(), (0,) * J)
    np.testing.assert_array_equal(out["angles"], b["angles"])


def test_mixup_blends_strides_of_the_same_side_only():
    b = _batch()
    left = np.asarray(b["left"])
    value = np.where(left, np.arange(B), 1000.0 + np.arange(B)).astype(np.float32)
    b["angles"] = jnp.broadcast_to(jnp.asarray(value)[:, None, None, None], (B, T, J, C))
    b["valid"] = b["valid"].at[np.arange(B), :5, np.arange(B) % J].set(False)  # a gap each
    out = augment.augment(b, jax.random.key(1), _cfg(mixup=1.0), None)
    v = np.asarray(out["angles"][:, 0, 0, 0])
    assert not np.allclose(v, value)  # strides were blended
    assert (v[left] < B).all() and (v[~left] >= 1000).all()  # never across sides
    assert out["valid"].sum() < b["valid"].sum()  # a partner's gap makes its frames invalid


def test_mirror_and_shift_move_whole_joints_and_frames():
    b = _batch()
    perm = augment.mirror_permutation(joints.joint_names("lower"))
    out = augment.augment(b, jax.random.key(2), _cfg(mirror=1.0), perm)
    np.testing.assert_array_equal(out["angles"], b["angles"][:, :, np.asarray(perm)])
    out = augment.augment(b, jax.random.key(3), _cfg(shift=3), None)
    x, y = np.asarray(b["angles"]), np.asarray(out["angles"])
    shifts = [next(s for s in range(-3, 4) if np.allclose(np.roll(x[i], s, 0), y[i],
                                                          equal_nan=True)) for i in range(B)]
    assert len(set(shifts)) > 1
    np.testing.assert_array_equal(np.isnan(y).any(-1), ~np.asarray(out["valid"]))
