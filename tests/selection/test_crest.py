"""CREST: weighted mini-batch coresets beat random mini-batches at matching the subset gradient;
the quadratic-model error is the exact Taylor remainder; the loop trains and re-selects."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distill import loop, train
from models.mlp import mlp
from selection import crest


def _blobs(seed, n=300, d=5, c=3):
    rng = np.random.default_rng(seed)
    centers = 3 * rng.normal(size=(c, d))
    y = rng.integers(0, c, n).astype(np.int32)
    x = (centers[y] + rng.normal(size=(n, d))).astype(np.float32)
    return x, y


def test_coresets_shapes_weights_and_facility_location():
    x, y = _blobs(0)
    feats = lambda idx: x[idx]
    cs = crest.minibatch_coresets(jax.random.PRNGKey(0), feats, len(x), batch_size=8, subset_size=40, n_subsets=3)
    assert cs.indices.shape == (3, 8) and cs.weights.shape == (3, 8)
    np.testing.assert_allclose(cs.weights.sum(1), 1.0, rtol=1e-6)
    assert all(len(set(row)) == 8 for row in cs.indices)
    assert np.all(cs.weights > 0)  # every medoid covers at least itself


def test_weighted_coreset_gradient_beats_random_minibatch():
    """The claim CREST builds on: Σ γ_j g_j tracks the random subset's mean gradient
    much better than an equally large uniform mini-batch (g = last-layer proxy)."""
    rng = np.random.default_rng(1)
    g = np.concatenate([rng.normal(size=(150, 4)) * 0.3 + 3 * rng.normal(size=(1, 4)) for _ in range(4)])
    errs_cs, errs_rand = [], []
    for s in range(20):
        cs = crest.minibatch_coresets(jax.random.PRNGKey(s), lambda idx: g[idx], len(g), batch_size=10, subset_size=200)
        # recover the pool: the same key split as minibatch_coresets
        k1, _ = jax.random.split(jax.random.split(jax.random.PRNGKey(s), 1)[0])
        pool = np.asarray(jax.random.choice(k1, len(g), (200,), replace=False))
        target = g[pool].mean(0)
        errs_cs.append(np.linalg.norm(cs.weights[0] @ g[cs.indices[0]] - target))
        errs_rand.append(np.linalg.norm(g[rng.choice(pool, 10, replace=False)].mean(0) - target))
    assert np.mean(errs_cs) < 0.5 * np.mean(errs_rand), (np.mean(errs_cs), np.mean(errs_rand))


def test_quadratic_model_error_is_the_taylor_remainder(x64):
    x, y = _blobs(2, n=40)
    model = mlp(3, hidden=(8,), dtype=jnp.float64)
    p0 = jax.tree_util.tree_map(np.asarray, jax.jit(model.init)(jax.random.PRNGKey(0), x[:1]))
    w = np.full(40, 1 / 40)
    rng = np.random.default_rng(1)  # numpy direction and shifts: no eager jax op to compile
    direction = jax.tree_util.tree_map(lambda a: 0.3 * rng.normal(size=a.shape), p0)
    shift = lambda t: jax.tree_util.tree_map(lambda a, d: a + t * d, p0, direction)
    assert float(crest.quadratic_model_error(model.apply, p0, p0, x, y, w)) < 1e-15
    # brute force: explicit Hessian of the flattened weighted loss (one jitted program)
    flat0, unravel = jax.flatten_util.ravel_pytree(p0)
    dflat = jax.flatten_util.ravel_pytree(direction)[0]

    def loss(f):
        logp = jax.nn.log_softmax(model.apply(unravel(f), x))
        return -jnp.sum(w * logp[np.arange(40), y])

    @jax.jit
    def brute_force(dlts):
        h, g0, l0 = jax.hessian(loss)(flat0), jax.grad(loss)(flat0), loss(flat0)
        model_val = jax.vmap(lambda d: l0 + g0 @ d + 0.5 * d @ h @ d)(dlts)
        actual = jax.vmap(lambda d: loss(flat0 + d))(dlts)
        return jnp.abs(model_val - actual) / actual

    ts = (1.0, 0.1)
    refs = np.asarray(brute_force(jnp.stack([t * dflat for t in ts])))
    errs = [float(crest.quadratic_model_error(model.apply, p0, shift(t), x, y, w)) for t in ts]
    np.testing.assert_allclose(errs, refs, rtol=1e-8)
    e1, e01 = errs
    assert e01 < 0.02 * e1  # a higher-order remainder (ReLU kinks keep it from a clean cubic)


@pytest.mark.slow
def test_crest_train_learns_and_reselects_by_tau():
    x, y = _blobs(3, n=400)
    xt, yt = _blobs(3, n=200)
    model = mlp(3, hidden=(16,))
    p0 = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])
    acc = jax.jit(lambda p: jnp.mean(jnp.argmax(model.apply(p, xt), -1) == yt))
    sgd = optax.sgd(0.1)  # one optimizer object: the three runs share the compiled step
    run = crest.crest_train(jax.random.PRNGKey(1), model.apply, p0, sgd, x, y, steps=40, batch_size=16, subset_size=64, n_subsets=4, tau=0.05, check_every=2, eval_fn=acc, eval_every=20)
    h = run.history
    assert isinstance(h, loop.History)
    assert h.eval_steps == [20, 40] and len(run.eval_times) == 2 and run.eval_times[0] <= run.eval_times[1]
    assert h.eval_values[-1] > 0.9 and h.best_value == max(h.eval_values)
    assert 1 < len(run.selection_steps) < 20  # re-selected, but not at every check
    assert len(h.losses) == 40 and np.all(np.isfinite(h.losses))
    # a tiny τ re-selects at (almost) every check; no rule selects once
    h_tight = crest.crest_train(jax.random.PRNGKey(1), model.apply, p0, sgd, x, y, steps=10, batch_size=16, subset_size=64, n_subsets=4, tau=1e-9, check_every=2)
    assert len(h_tight.selection_steps) == 5
    h_once = crest.train_on_coresets(jax.random.PRNGKey(1), model.apply, p0, sgd, x, y, features_fn=crest.last_layer_features(model.apply, x, y), steps=4, batch_size=16, subset_size=64)
    assert h_once.selection_steps == [0]


def _sgd_step_by_hand(p, x, y, w, lr):
    """``Σ_i w_i ℓ_i`` of the one-hidden-layer MLP and ``p − lr·∇`` by backpropagation in numpy."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), p)
    (k1, b1), (k2, b2) = (p["dense_0"]["kernel"], p["dense_0"]["bias"]), (p["head"]["kernel"], p["head"]["bias"])
    pre = x @ k1 + b1
    h = np.maximum(pre, 0.0)
    logits = h @ k2 + b2
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    loss = -np.sum(w * logp[np.arange(len(y)), y])
    dlogits = w[:, None] * (np.exp(logp) - np.eye(logits.shape[1])[y])
    dpre = (dlogits @ k2.T) * (pre > 0)
    grads = {"dense_0": {"kernel": x.T @ dpre, "bias": dpre.sum(0)}, "head": {"kernel": h.T @ dlogits, "bias": dlogits.sum(0)}}
    return loss, jax.tree_util.tree_map(lambda a, g: a - lr * g, p, grads)


def test_weighted_step_is_one_train_update():
    """make_weighted_step is one SGD update on Σ w_i ℓ_i: the loss and parameters of
    backpropagation by hand (numpy, float64)."""
    x, y = _blobs(4, n=20)
    model = mlp(3, hidden=(4,))
    p0 = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])
    opt = optax.sgd(0.1)
    w = np.linspace(0.5, 1.5, 20) / 20  # unequal weights: a plain mean would not pass
    state, loss = crest.make_weighted_step(model.apply, opt)(train.init(p0, opt), (x, y, w.astype(np.float32)), jax.random.PRNGKey(1))
    ref_loss, ref_params = _sgd_step_by_hand(p0, x.astype(np.float64), y, w, 0.1)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), state.params, ref_params)
    assert crest.WeightedCE(model.apply) == crest.WeightedCE(model.apply)  # one compiled step per model


def test_validation():
    x, y = _blobs(0, n=50)
    model = mlp(3, hidden=(4,))
    p0 = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])
    f = lambda idx: x[idx]
    with pytest.raises(ValueError, match="subset_size"):
        crest.minibatch_coresets(jax.random.PRNGKey(0), f, 50, batch_size=8, subset_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        crest.minibatch_coresets(jax.random.PRNGKey(0), f, 50, batch_size=0, subset_size=4)
    with pytest.raises(TypeError, match="features_fn"):
        crest.minibatch_coresets(jax.random.PRNGKey(0), None, 50, batch_size=8, subset_size=10)
    with pytest.raises(ValueError, match="features_fn"):
        crest.minibatch_coresets(jax.random.PRNGKey(0), lambda idx: x[:3], 50, batch_size=2, subset_size=10)
    with pytest.raises(TypeError, match="apply"):
        crest.make_weighted_step(None, optax.sgd(0.1))
    with pytest.raises(ValueError, match="tau"):
        crest.crest_train(jax.random.PRNGKey(0), model.apply, p0, optax.sgd(0.1), x, y, steps=5, batch_size=4, subset_size=8, tau=0.0)
    with pytest.raises(TypeError, match="y"):
        crest.crest_train(jax.random.PRNGKey(0), model.apply, p0, optax.sgd(0.1), x, y.astype(np.float32), steps=5)
    with pytest.raises(ValueError, match="steps"):
        crest.crest_train(jax.random.PRNGKey(0), model.apply, p0, optax.sgd(0.1), x, y, steps=0)
    with pytest.raises(ValueError, match="expected equal sizes"):
        crest.crest_train(jax.random.PRNGKey(0), model.apply, p0, optax.sgd(0.1), x, y[:10], steps=3)
