"""How Farzi data are read: soft inputs (the dissertation's) or argmax inputs with soft targets."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import farzi, inner, parametrize
from models.model_fns import ModelFns

V = 6


def _bigram():
    def apply(p, x):  # a bigram model: soft (μ, ξ, V) or int (b, ξ) inputs
        x = jax.nn.one_hot(x, V) if jnp.issubdtype(x.dtype, jnp.integer) else x
        return x @ p["w"] + p["b"]

    return ModelFns(lambda k, x: {"w": 0.3 * jax.random.normal(k, (V, V)), "b": jnp.zeros(V)}, apply)


@functools.partial(jax.jit, static_argnums=(0, 1))  # one program, not one per eager op
def _soft_data(seed=0, shape=(4, 7)):
    logits = 2.0 * jax.random.normal(jax.random.key(seed), (*shape, V))
    return jax.nn.softmax(logits, axis=-1)


def test_student_pairs_soft_and_argmax():
    d = _soft_data()
    x, y = farzi.student_pairs(d)
    np.testing.assert_array_equal(x, d[:, :-1])
    np.testing.assert_array_equal(y, d[:, 1:])
    x, y = farzi.student_pairs(d, hard_inputs=True)
    assert jnp.issubdtype(x.dtype, jnp.integer) and x.shape == (4, 6)
    np.testing.assert_array_equal(x, np.argmax(np.asarray(d)[:, :-1], -1))
    np.testing.assert_array_equal(y, d[:, 1:])
    with pytest.raises(ValueError, match="data"):
        farzi.student_pairs(d[0], hard_inputs=True)  # (ξ, V): not a batch of sequences
    with pytest.raises(TypeError, match="data"):
        farzi.student_pairs(jnp.argmax(d, -1)[..., None])  # int tokens are not soft data


def test_hard_inputs_student_learns_the_mean_target_of_each_input():
    """Known answer: a bigram model's full-batch optimum maps token i to the mean soft target
    of the positions whose argmax input is i (soft inputs give a different model)."""
    d = _soft_data(1, (8, 9))
    x, y = (np.asarray(a) for a in farzi.student_pairs(d, hard_inputs=True))
    want = np.stack([y[x == i].mean(0) for i in range(V)])
    assert all((x == i).any() for i in range(V))
    predict = jax.jit(lambda p: jax.nn.softmax(_bigram().apply(p, jnp.arange(V)[None]), -1)[0])
    got = {}
    for hard in (True, False):
        out = farzi.train_student(jax.random.key(0), _bigram(), d, steps=600, learning_rate=0.1,
                                  hard_inputs=hard, dropout=False)
        got[hard] = np.asarray(predict(out.params))
    np.testing.assert_allclose(got[True], want, atol=2e-3)
    assert np.abs(got[False] - want).max() > 0.05


def test_objective_reads_argmax_inputs_and_differentiates_targets_only():
    mu, xi, dim, t_steps = 3, 6, 4, 3
    model = _bigram()
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, V, (5, xi)), jnp.int32)
    theta = jax.jit(model.init)(jax.random.key(0), tokens[:1, :-1])
    omega = jax.tree_util.tree_map(lambda a: a[None], theta)  # one checkpoint: θ_0 is known
    param = parametrize.latent_factorization(mu, xi, dim, V)
    syn = param.init(jax.random.key(1))
    batch, key = farzi.Batch(tokens, omega), jax.random.key(2)
    kw = dict(model=model, n_seqs=mu, seq_len=xi, latent_dim=dim, inner_steps=t_steps, random_init_prob=0.0,
              mode="unrolled")

    def by_hand(s, hard):  # autodiff through the unrolled inner loop, inputs as one-hot constants
        data = param.materialize(s, None)
        inputs = jax.lax.stop_gradient(jax.nn.one_hot(jnp.argmax(data[:, :-1], -1), V)) if hard else data[:, :-1]
        theta_t = inner.train(model.apply, farzi.soft_cross_entropy, theta, (inputs, data[:, 1:]),
                              steps=t_steps, optimizer=inner.Adam(1e-2), mode="unrolled")
        return farzi.token_loss(model, theta_t, tokens)

    settings = farzi.Settings(**kw, hard_inputs=True)  # the soft reading is checked in test_inner/test_farzi
    value, grad = jax.jit(jax.value_and_grad(lambda s: farzi.objective(s, batch, key, settings)))(syn)
    # One program for both readings; the soft value suffices (no second gradient compiled).
    (want_v, want_g), soft_value = jax.jit(lambda s: (jax.value_and_grad(by_hand)(s, True), by_hand(s, False)))(syn)
    np.testing.assert_allclose(value, want_v, rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(want_g), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    assert abs(float(soft_value) - float(value)) > 1e-4  # the reading matters
    with pytest.raises(TypeError, match="settings.hard_inputs"):
        farzi.objective(syn, batch, key, farzi.Settings(**{**kw, "mode": "reverse_adam"}, hard_inputs=1))
