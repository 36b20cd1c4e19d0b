"""NeuMF: the GMF-only path is a dot product, the full model matches its equations, learning, checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import neumf


def _data(n_users=30, n_items=40, seed=0):
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        for i in rng.choice(np.arange(n_items // 2) + (u % 2) * (n_items // 2), 8, replace=False):
            users.append(u)
            items.append(i)
    return np.array(users, np.int32), np.array(items, np.int32), n_users, n_items


def test_gmf_only_is_a_dot_product():
    p = neumf.init(jax.random.key(0), 5, 7, factors=3, mlp_layers=(), scale=1.0)
    p = p._replace(out_w=jnp.ones(3), out_b=jnp.float32(0.0))
    want = np.asarray(p.gmf_user) @ np.asarray(p.gmf_item).T
    np.testing.assert_allclose(np.asarray(neumf.scores(p, jnp.arange(5), chunk=2)), want, rtol=1e-5, atol=1e-6)
    u, i = np.array([0, 4, 2], np.int32), np.array([6, 0, 3], np.int32)
    np.testing.assert_allclose(np.asarray(neumf.logits(p, u, i)), want[u, i], rtol=1e-5, atol=1e-6)


def test_full_model_matches_equations():
    p = neumf.init(jax.random.key(1), 4, 6, factors=2, mlp_layers=(8, 4, 2), scale=1.0)
    p = p._replace(out_b=jnp.float32(0.25))
    got = np.asarray(neumf.scores(p, jnp.arange(4), chunk=3))
    relu = lambda a: np.maximum(a, 0)
    for u in range(4):
        for i in range(6):
            gmf = np.asarray(p.gmf_user[u] * p.gmf_item[i])
            h = np.concatenate([p.mlp_user[u], p.mlp_item[i]])
            for w, b in p.mlp:
                h = relu(h @ np.asarray(w) + np.asarray(b))
            want = np.concatenate([gmf, h]) @ np.asarray(p.out_w) + 0.25
            np.testing.assert_allclose(got[u, i], want, rtol=1e-4, atol=1e-5)


def test_loss_is_bce():
    users, items, nu, ni = _data()
    p = neumf.init(jax.random.key(2), nu, ni)
    u, i = jnp.asarray(users[:5]), jnp.asarray(items[:5])
    y, w = jnp.array([1.0, 0, 1, 0, 1]), jnp.ones(5)
    z = np.asarray(neumf.logits(p, u, i))
    sig = 1 / (1 + np.exp(-z))
    want = -np.mean(np.asarray(y) * np.log(sig) + (1 - np.asarray(y)) * np.log(1 - sig))
    np.testing.assert_allclose(float(neumf.loss(p, (u, i, y, w), jax.random.key(0))), want, rtol=1e-5)


@pytest.mark.slow
def test_training_learns_groups():
    users, items, nu, ni = _data()
    f = neumf.fit(jax.random.key(0), users, items, nu, ni, epochs=20, batch_size=64, lr=1e-2)
    assert np.mean(f.history.losses[-20:]) < 0.6 * np.mean(f.history.losses[:20])  # BCE floor ≈ 0.3: half the negatives are 'own-group' items
    s = np.asarray(neumf.scores(f.params, jnp.arange(nu)))
    own = s.reshape(nu, 2, ni // 2).mean(-1)
    assert np.mean(own[np.arange(nu), np.arange(nu) % 2] > own[np.arange(nu), 1 - np.arange(nu) % 2]) > 0.9


def test_bad_inputs_name_the_argument():
    users, items, nu, ni = _data()
    with pytest.raises(ValueError, match="items"):
        neumf.fit(jax.random.key(0), users, items + ni, nu, ni)
    with pytest.raises(ValueError, match="mlp_layers"):
        neumf.init(jax.random.key(0), nu, ni, mlp_layers=(7, 4))
    with pytest.raises(ValueError, match="n_negatives"):
        neumf.fit(jax.random.key(0), users, items, nu, ni, n_negatives=0)
    with pytest.raises(TypeError, match="params"):
        neumf.scores((1, 2), jnp.arange(3))
