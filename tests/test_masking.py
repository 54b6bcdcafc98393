"""Token layout and mask functions: shapes, counts and invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gengait_jax import masking

B, T, J, C, P = 3, 16, 5, 3, 4
NP = T // P  # patches per joint
N = J * NP


def _x(seed=0):
    return jax.random.normal(jax.random.key(seed), (B, T, J, C))


def test_patchify_round_trip_and_layout():
    x = _x()
    tok = masking.patchify(x, P)
    assert tok.shape == (B, N, P * C)
    np.testing.assert_array_equal(masking.unpatchify(tok, J, P), x)
    # Joint-major: token j * NP + p holds joint j, frames [p * P, (p + 1) * P).
    j, p = 2, 3
    np.testing.assert_array_equal(tok[:, j * NP + p].reshape(B, P, C), x[:, p * P:(p + 1) * P, j])


def test_token_valid_needs_every_frame():
    valid = np.ones((B, T, J), bool)
    valid[0, 5, 1] = False  # frame 5 -> patch 1 of joint 1
    tv = masking.token_valid(jnp.asarray(valid), P)
    assert tv.shape == (B, N)
    assert not tv[0, 1 * NP + 1] and int(tv.sum()) == B * N - 1


def test_keep_indices_orders_visible_first_and_restores():
    visible = jnp.array([[False, True, False, True, True, False],
                         [True, False, False, False, False, True]])
    keep_idx, keep_valid, restore = masking.keep_indices(visible, 3)
    np.testing.assert_array_equal(keep_idx[0], [1, 3, 4])
    np.testing.assert_array_equal(keep_idx[1, :2], [0, 5])  # then padding (a hidden token)
    np.testing.assert_array_equal(keep_valid, [[True, True, True], [True, True, False]])
    order = jnp.argsort(~visible, axis=-1, stable=True)
    np.testing.assert_array_equal(jnp.take_along_axis(order, restore, -1),
                                  np.broadcast_to(np.arange(6), (2, 6)))


def test_keep_indices_equal_the_stable_sort_they_replace():
    rng = np.random.default_rng(0)
    visible = rng.random((3, 40, 50)) < rng.random((3, 40, 1))  # extra batch axis, as vmapped
    visible[0, 0], visible[0, 1] = True, False  # all visible, none visible
    visible = jnp.asarray(visible)
    order = jnp.argsort(~visible, axis=-1, stable=True)
    keep_idx, keep_valid, restore = jax.vmap(lambda v: masking.keep_indices(v, 50))(visible)
    np.testing.assert_array_equal(keep_idx, order)
    np.testing.assert_array_equal(restore, jnp.argsort(order, axis=-1, stable=True))
    np.testing.assert_array_equal(keep_valid, jnp.take_along_axis(visible, order, -1))
    perm = jnp.asarray(np.stack([rng.permutation(50) for _ in range(4)]))
    inv = masking.inverse_permutation(perm)
    np.testing.assert_array_equal(jnp.take_along_axis(perm, inv, -1),
                                  np.broadcast_to(np.arange(50), (4, 50)))


def test_random_tokens_count_and_validity():
    valid = jnp.arange(N) % 7 != 0
    for seed in range(5):
        vis = masking.random_tokens(jax.random.key(seed), valid, 6)
        assert int(vis.sum()) == 6 and not bool((vis & ~valid).any())
    vis = masking.random_tokens(jax.random.key(0), valid.at[6:].set(False), 100)
    assert int(vis.sum()) == int(valid[:6].sum())  # never more than the valid ones


def test_random_tokens_keep_the_tokens_of_the_smallest_noise():
    valid = jnp.arange(N) % 5 != 3
    for seed in range(4):
        key = jax.random.key(seed)
        noise = np.where(valid, np.asarray(jax.random.uniform(key, (N,))), 2.0)
        want = np.zeros(N, bool)
        want[np.argsort(noise, kind="stable")[:7]] = True
        np.testing.assert_array_equal(masking.random_tokens(key, valid, 7), want & valid)
    # As many slots as tokens: every valid token, no invalid one.
    vis = masking.random_tokens(jax.random.key(0), valid, N)
    np.testing.assert_array_equal(vis, valid)


def test_random_mask_with_time_block_hides_a_block_on_every_joint():
    valid = jnp.ones(N, bool)
    vis = masking.random_mask(jax.random.key(1), valid, num_joints=J, num_patches=NP,
                              num_keep=N, time_block_prob=1.0, max_block=2)
    hidden_p = ~vis.reshape(J, NP)
    assert (hidden_p == hidden_p[:1]).all()  # same patches hidden on every joint
    assert 1 <= int(hidden_p[0].sum()) <= 2


def test_joint_mask_hides_whole_joints():
    valid = jnp.ones(N, bool)
    for seed in range(10):
        vis = masking.joint_mask(jax.random.key(seed), valid, num_joints=J, num_patches=NP,
                                 max_hidden=3).reshape(J, NP)
        per_joint = vis.sum(-1)
        assert set(np.asarray(per_joint).tolist()) <= {0, NP}
        assert 1 <= int((per_joint == 0).sum()) <= 3


def test_occlusion_masks_hide_exactly_one_joint():
    valid = jnp.ones((B, N), bool).at[1, 0].set(False)
    m = masking.occlusion_masks(valid, J)
    assert m.shape == (J, B, N)
    for j in range(J):
        hidden = ~m[j].reshape(B, J, NP)
        assert bool(hidden[:, j].all())
        assert int(hidden[0].sum()) == NP  # row 0: exactly joint j hidden
    assert not bool(m[:, 1, 0].any())  # invalid tokens are never visible


@pytest.mark.parametrize("max_hidden", [1, 3])
def test_hidden_joints_count(max_hidden):
    counts = {int(masking.hidden_joints(jax.random.key(s), J, max_hidden).sum())
              for s in range(30)}
    assert counts <= set(range(1, max_hidden + 1)) and min(counts) == 1


def test_occlusion_masks_hide_a_whole_occlusion_group():
    valid = jnp.ones((2, J * 5), bool)
    group = jnp.asarray([0] + list(range(1, J)))
    group = group.at[J - 1].set(0)  # joints 0 and J-1 are one signal
    m = masking.occlusion_masks(valid, J, group).reshape(J, 2, J, 5)
    hidden = ~m.all(-1)  # [mask, B, joint]
    np.testing.assert_array_equal(hidden[0, 0], hidden[J - 1, 0])
    assert hidden[0, 0].sum() == 2 and hidden[0, 0, 0] and hidden[0, 0, J - 1]
    assert all(hidden[j, 0].sum() == 1 and hidden[j, 0, j] for j in range(1, J - 1))
    np.testing.assert_array_equal(masking.occlusion_masks(valid, J, jnp.arange(J)),
                                  masking.occlusion_masks(valid, J))
    picked = masking.with_groups(jnp.eye(J, dtype=bool)[J - 1], group)
    assert picked[0] and picked[J - 1] and picked.sum() == 2
