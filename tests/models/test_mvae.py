"""Mult-VAE: shapes, the closed-form KL, the loss against a hand computation, learning, checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import mvae


@pytest.fixture(autouse=True)
def _float32(x32):
    # The hand computations draw ε in the default float dtype; pin it whatever other modules set.
    yield


def _rows(n_users=40, n_items=30, seed=0):
    """Two taste groups, each liking its own half of the items."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n_users, n_items), np.float32)
    for u in range(n_users):
        x[u, rng.choice(np.arange(n_items // 2) + (u % 2) * (n_items // 2), 6, replace=False)] = 1
    return x


def test_shapes():
    p = jax.eval_shape(lambda k: mvae.init(k, 30, hidden=(20,), latent=8), jax.random.key(0))  # traced, not run
    assert [w.shape for w, _ in p.encoder] == [(30, 20), (20, 16)]
    assert [w.shape for w, _ in p.decoder] == [(8, 20), (20, 30)]
    mu, logvar = jax.eval_shape(mvae.encode, p, jnp.asarray(_rows()))
    assert mu.shape == logvar.shape == (40, 8)
    assert jax.eval_shape(mvae.scores, p, jnp.asarray(_rows())).shape == (40, 30)


def test_kl_matches_gaussian_closed_form():
    # KL(N(μ,σ²)‖N(0,1)) = log(1/σ) + (σ² + μ²)/2 − 1/2 per dimension, summed.
    rng = np.random.default_rng(1)
    mu, logvar = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    sigma = np.exp(0.5 * logvar)
    want = np.sum(-np.log(sigma) + (sigma**2 + mu**2) / 2 - 0.5, axis=1)
    np.testing.assert_allclose(np.asarray(mvae.kl_divergence(jnp.asarray(mu), jnp.asarray(logvar))), want, rtol=1e-5)
    assert float(mvae.kl_divergence(jnp.zeros((1, 3)), jnp.zeros((1, 3)))[0]) == 0.0


def test_loss_equals_hand_computation_without_dropout():
    x = _rows()[:6]
    # init's structure (traced, not run: each of its random ops would compile) with numpy values
    rng = np.random.default_rng(2)
    shapes = jax.eval_shape(lambda k: mvae.init(k, 30, hidden=(10,), latent=4), jax.random.key(2))
    p = jax.tree_util.tree_map(lambda s: jnp.asarray(0.3 * rng.normal(size=s.shape).astype(np.float32)), shapes)
    key = jax.random.key(3)
    # jitted: one compilation (eagerly, each of its ops compiles on its own)
    got = float(jax.jit(mvae.loss, static_argnames="dropout")(p, (jnp.asarray(x), 0.3), key, dropout=0.0))
    (w1, b1), (w2, b2) = p.encoder
    (v1, c1), (v2, c2) = p.decoder
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    out = np.tanh(xn @ w1 + b1) @ w2 + b2
    mu, logvar = out[:, :4], out[:, 4:]
    eps = np.asarray(jax.random.normal(jax.random.split(key)[1], mu.shape))
    z = mu + np.exp(0.5 * logvar) * eps
    logits = np.tanh(z @ v1 + c1) @ v2 + c2
    logp = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
    kl = 0.5 * np.sum(np.exp(logvar) + mu**2 - 1 - logvar, axis=1)
    np.testing.assert_allclose(got, np.mean(-np.sum(logp * x, axis=1) + 0.3 * kl), rtol=1e-4)


def test_anneal_schedule_and_learning():
    x = _rows()
    f = mvae.fit(jax.random.key(0), x, hidden=(20,), latent=8, epochs=60, batch_size=20, total_anneal_steps=50)
    # β_t = min(0.2, t / 50): 2 updates per epoch, 120 in all.
    np.testing.assert_allclose(np.asarray(f.betas)[[0, 5, 119]], [0.0, 0.1, 0.2], atol=1e-6)
    assert np.mean(f.history.losses[-10:]) < np.mean(f.history.losses[:10]) - 1.0
    # The planted groups are recovered: each user's top unseen items come from the own half.
    s = np.where(x > 0, -np.inf, np.asarray(jax.jit(mvae.scores)(f.params, x)))  # one compilation, not one per op
    top = np.argsort(-s, axis=1)[:, :3]
    own = (top // 15) == (np.arange(40) % 2)[:, None]
    assert own.mean() > 0.9


def test_bad_inputs_name_the_argument():
    x = _rows()
    with pytest.raises(ValueError, match="dropout"):
        mvae.fit(jax.random.key(0), x, dropout=1.0)
    with pytest.raises(ValueError, match="total_anneal_steps"):
        mvae.fit(jax.random.key(0), x, total_anneal_steps=0)
    with pytest.raises(ValueError, match="x"):
        mvae.scores(jax.eval_shape(lambda k: mvae.init(k, 30, hidden=(4,), latent=2), jax.random.key(0)), x[:, :10])
    with pytest.raises(TypeError, match="params"):
        mvae.scores({"w": 1}, x)


def test_anneal_steps_is_fraction_of_the_updates_fit_runs():
    # 671 users, batch 500 → 2 updates per epoch; 100 epochs → T = 200, 0.8·T = 160 (the
    # recommender panel's and Ψ's Mult-VAE schedule); a batch above n_users is capped as fit caps it.
    assert mvae.anneal_steps(671, 100) == 160
    assert mvae.anneal_steps(300, 100) == 80  # one update per epoch
    assert mvae.anneal_steps(1000, 3, batch_size=100, fraction=0.5) == 15
    assert mvae.anneal_steps(10, 1, fraction=0.01) == 1  # never 0: β would divide by it
    for kwargs, name in (({"n_users": 0, "epochs": 1}, "n_users"), ({"n_users": 5, "epochs": 0}, "epochs"),
                         ({"n_users": 5, "epochs": 1, "fraction": 0.0}, "fraction")):
        with pytest.raises(ValueError, match=name):
            mvae.anneal_steps(**kwargs)
