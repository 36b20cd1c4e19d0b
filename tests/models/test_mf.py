"""Bias-only / MF with BPR: scores, gradients vs an unrolled reference, learning, checks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models import mf


def _data(seed=0, n_users=30, n_items=50):
    rng = np.random.default_rng(seed)
    # Two user groups that like disjoint halves of the items: MF can learn it,
    # bias-only (same ranking for everyone) cannot.
    users, items = [], []
    for u in range(n_users):
        half = np.arange(n_items // 2) + (u % 2) * (n_items // 2)
        for i in rng.choice(half, 8, replace=False):
            users.append(u)
            items.append(i)
    return np.array(users, np.int32), np.array(items, np.int32), n_users, n_items


def test_scores_match_formula():
    p = mf.init(jax.random.key(0), 4, 5, dim=3, scale=1.0)
    p = p._replace(global_bias=jnp.float32(0.3), user_bias=jnp.arange(4.0), item_bias=-jnp.arange(5.0))
    full = np.asarray(mf.predict(p, jnp.arange(4)))
    want = 0.3 + np.arange(4.0)[:, None] - np.arange(5.0)[None] + np.asarray(p.user_emb) @ np.asarray(p.item_emb).T
    np.testing.assert_allclose(full, want, rtol=1e-5, atol=1e-6)
    u, i = np.array([0, 3, 2]), np.array([4, 1, 1])
    np.testing.assert_allclose(np.asarray(mf.score_pairs(p, u, i)), want[u, i], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_one_epoch_equals_manual_adam_steps():
    # fit's scanned training == a python loop of optax Adam steps on the same batches.
    users, items, nu, ni = _data()
    key = jax.random.key(1)
    params, hist, inverse_auc = mf.fit(key, users, items, nu, ni, dim=4, epochs=1, lr=0.01, l2=1e-3,
                                       batch_size=len(users))
    k_init, k_train = jax.random.split(key)
    p = mf.init(k_init, nu, ni, dim=4)
    (k_epoch,) = jax.random.split(k_train, 1)
    k_perm, k_neg, _ = jax.random.split(k_epoch, 3)
    perm = jax.random.permutation(k_perm, len(users))
    negs = jax.random.randint(k_neg, (len(users),), 0, ni)
    u, i = jnp.asarray(users)[perm], jnp.asarray(items)[perm]

    def loss(q):
        d = mf.score_pairs(q, u, i) - mf.score_pairs(q, u, negs)
        reg = sum(jnp.sum(a**2) for a in (q.user_bias, q.item_bias, q.user_emb, q.item_emb))
        return -jnp.mean(jax.nn.log_sigmoid(d)) + 0.5 * 1e-3 * reg

    opt = optax.adam(0.01)
    s = opt.init(p)
    g = jax.grad(loss)(p)
    upd, s = opt.update(g, s, p)
    p = optax.apply_updates(p, upd)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(p), strict=False):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert inverse_auc.shape == (1, len(users))
    assert hist.steps == [0] and len(hist.losses) == 1


@pytest.mark.slow
def test_mf_learns_groups_and_difficulty_drops():
    users, items, nu, ni = _data()
    params, hist, inverse_auc = mf.fit(jax.random.key(0), users, items, nu, ni, dim=8, epochs=60, lr=0.05,
                                       l2=1e-4, batch_size=64)
    s = np.asarray(mf.predict(params, jnp.arange(nu)))
    own = np.array([s[u, (u % 2) * 25:(u % 2) * 25 + 25].mean() for u in range(nu)])
    other = np.array([s[u, (1 - u % 2) * 25:(1 - u % 2) * 25 + 25].mean() for u in range(nu)])
    assert np.all(own > other)
    inv = np.asarray(inverse_auc).mean(axis=1)
    assert inv[-1] < 0.5 * inv[0]
    per_epoch = np.asarray(hist.losses).reshape(60, -1).mean(axis=1)
    assert per_epoch[-1] < per_epoch[0]
    # bias-only cannot separate the groups: its difficulty stays near 1/2 of the other half.
    hb = mf.fit(jax.random.key(0), users, items, nu, ni, dim=0, epochs=60, lr=0.05, batch_size=64)
    assert float(np.asarray(hb.inverse_auc)[-1].mean()) > 0.15 > inv[-1]


def test_inverse_auc_brute_force():
    p = mf.init(jax.random.key(0), 3, 6, dim=2, scale=1.0)
    u, i = np.array([0, 1, 2]), np.array([1, 2, 3])
    key = jax.random.key(4)
    got = np.asarray(mf.inverse_auc(key, p, u, i, n_negatives=5))
    neg = np.asarray(jax.random.randint(key, (3, 5), 0, 6))
    s = np.asarray(mf.predict(p, jnp.arange(3)))
    want = np.array([(s[uu, neg[r]] >= s[uu, ii]).mean() for r, (uu, ii) in enumerate(zip(u, i, strict=False))])
    np.testing.assert_allclose(got, want)


def test_validation():
    users, items, nu, ni = _data()
    k = jax.random.key(0)
    with pytest.raises(ValueError, match="users"):
        mf.fit(k, users, items, 3, ni)
    with pytest.raises(ValueError, match="items"):
        mf.fit(k, users, items[:-1], nu, ni)
    with pytest.raises(TypeError, match="users"):
        mf.fit(k, users.astype(np.float32), items, nu, ni)
    with pytest.raises(ValueError, match="epochs"):
        mf.fit(k, users, items, nu, ni, epochs=0)
    with pytest.raises(ValueError, match="lr"):
        mf.fit(k, users, items, nu, ni, lr=-1.0)
    with pytest.raises(ValueError, match="weights"):
        mf.fit(k, users, items, nu, ni, weights=-np.ones(len(users)))
    with pytest.raises(ValueError, match="dim"):
        mf.init(k, 3, 4, dim=-1)
    with pytest.raises(TypeError, match="params"):
        mf.predict({"a": 1}, np.arange(3))
    with pytest.raises(ValueError, match="n_negatives"):
        mf.inverse_auc(k, mf.init(k, 3, 4), np.arange(3), np.arange(3), n_negatives=0)


def _sharded_inverse_auc_equals_single():
    from distill.parallel import make_mesh

    mesh = make_mesh()
    assert mesh.devices.size == 8
    p = mf.init(jax.random.key(0), 7, 11, dim=3, scale=1.0)
    u = np.arange(29) % 7
    i = (np.arange(29) * 3) % 11  # 29 rows: not a multiple of 8 (padding path)
    key = jax.random.key(2)
    a = np.asarray(mf.inverse_auc(key, p, u, i, n_negatives=4))
    b = np.asarray(mf.inverse_auc(key, p, u, i, n_negatives=4, mesh=mesh))
    np.testing.assert_array_equal(a, b)


def test_inverse_auc_on_8_devices(multidevice):
    multidevice(_sharded_inverse_auc_equals_single)
