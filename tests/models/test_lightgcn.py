"""LightGCN: K = 0 is MF, propagation equals the dense normalised-adjacency formula, learning, checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import lightgcn


# One embedding width everywhere: init and the propagation run eagerly, and each op
# compiles once per shape, so the tests (and fit's own init) share those compilations.
DIM = 16


def _data(n_users=30, n_items=40, seed=0):
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        for i in rng.choice(np.arange(n_items // 2) + (u % 2) * (n_items // 2), 8, replace=False):
            users.append(u)
            items.append(i)
    return np.array(users, np.int32), np.array(items, np.int32), n_users, n_items


def test_zero_layers_is_matrix_factorisation():
    users, items, nu, ni = _data()
    p = lightgcn.init(jax.random.key(0), nu, ni, dim=DIM)
    g = lightgcn.graph(users, items, nu, ni)
    want = np.asarray(p.user_emb) @ np.asarray(p.item_emb).T
    got = np.asarray(lightgcn.scores(p, g, jnp.arange(nu), n_layers=0))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_propagation_equals_dense_formula():
    users, items, nu, ni = _data()
    users = np.concatenate([users, users[:3]])  # duplicates count once
    items = np.concatenate([items, items[:3]])
    p = lightgcn.init(jax.random.key(1), nu, ni, dim=DIM, scale=1.0)
    g = lightgcn.graph(users, items, nu, ni)
    r = np.zeros((nu, ni))
    r[users, items] = 1
    a = np.block([[np.zeros((nu, nu)), r], [r.T, np.zeros((ni, ni))]])
    d = a.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1)), 0)
    a_hat = inv[:, None] * a * inv[None, :]
    e = np.concatenate([np.asarray(p.user_emb), np.asarray(p.item_emb)]).astype(np.float64)
    layers = [e]
    for _ in range(3):
        layers.append(a_hat @ layers[-1])
    final = np.mean(layers, axis=0)
    eu, ei = lightgcn.propagate(p, g, n_layers=3)
    np.testing.assert_allclose(np.asarray(eu), final[:nu], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ei), final[nu:], rtol=1e-4, atol=1e-6)


def test_loss_decreases_and_groups_are_learned():
    users, items, nu, ni = _data()
    f = lightgcn.fit(jax.random.key(0), users, items, nu, ni, dim=DIM, epochs=60, batch_size=64, lr=1e-2)
    assert np.mean(f.history.losses[-10:]) < 0.5 * np.mean(f.history.losses[:10])
    s = np.asarray(lightgcn.scores(f.params, f.graph, jnp.arange(nu)))
    own = s.reshape(nu, 2, ni // 2).mean(-1)
    assert np.all(own[np.arange(nu), np.arange(nu) % 2] > own[np.arange(nu), 1 - np.arange(nu) % 2])


def test_bad_inputs_name_the_argument():
    users, items, nu, ni = _data()
    with pytest.raises(ValueError, match="users"):
        lightgcn.graph(users + nu, items, nu, ni)
    with pytest.raises(ValueError, match="n_layers"):
        lightgcn.fit(jax.random.key(0), users, items, nu, ni, n_layers=-1)
    p = lightgcn.init(jax.random.key(0), nu, ni, dim=DIM)
    with pytest.raises(TypeError, match="g"):
        lightgcn.propagate(p, (users, items))
    with pytest.raises(ValueError, match="users"):
        lightgcn.scores(p, lightgcn.graph(users, items, nu, ni), jnp.array([nu]))
