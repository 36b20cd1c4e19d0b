"""SSM: zeroth-order sketches preserve the last-layer gradient geometry; sparsification; training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models.mlp import mlp
from selection import ssm


def _blobs(seed, n=200, d=5, c=3):
    rng = np.random.default_rng(seed)
    centers = 3 * rng.normal(size=(c, d))
    y = rng.integers(0, c, n).astype(np.int32)
    return (centers[y] + rng.normal(size=(n, d))), y


# One model object for the float64 tests: ``apply`` is a static argument of the jitted
# sketch, so the same object (and the same shapes) reuses its compilation.
_MODEL64 = mlp(3, hidden=(4,), dtype=jnp.float64)


def _head_grads(p, x, y):
    """Per-example last-layer gradients of the cross-entropy by hand (numpy):
    ``∂ℓ/∂b = softmax − onehot`` and ``∂ℓ/∂W = h ⊗ (softmax − onehot)``."""
    p = jax.tree_util.tree_map(np.asarray, p)
    h = np.maximum(x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"], 0.0)
    logits = h @ p["head"]["kernel"] + p["head"]["bias"]
    prob = np.exp(logits - logits.max(1, keepdims=True))
    r = prob / prob.sum(1, keepdims=True) - np.eye(logits.shape[1])[y]
    return np.concatenate([r, (h[:, :, None] * r[:, None, :]).reshape(len(x), -1)], 1)


def test_layer_mask():
    model = mlp(3, hidden=(4,))
    p = jax.jit(model.init)(jax.random.PRNGKey(0), np.zeros((1, 5), np.float32))
    assert int(ssm.layer_mask(p, "head").sum()) == 4 * 3 + 3
    assert int(ssm.layer_mask(p, None).sum()) == 5 * 4 + 4 + 15


def test_sketch_gram_matches_gradient_gram(x64):
    x, y = _blobs(0, n=12)
    p = jax.jit(_MODEL64.init)(jax.random.PRNGKey(0), x[:1])
    g = _head_grads(p, x, y)  # (12, 15) true last-layer gradients
    c = np.asarray(ssm.zeroth_order_features(jax.random.PRNGKey(1), _MODEL64.apply, p, x, y, n_directions=6000, eps=1e-5, sparsity=None))
    gram, est = g @ g.T, c @ c.T / c.shape[1]  # E[zzᵀ] = I  ⇒  E[c cᵀ]/P = G Gᵀ
    assert np.linalg.norm(est - gram) < 0.1 * np.linalg.norm(gram)
    # squared distances, what facility location sees
    d_true = ((g[:, None] - g[None]) ** 2).sum(-1)
    d_est = ((c[:, None] - c[None]) ** 2).sum(-1) / c.shape[1]
    assert np.corrcoef(d_true.ravel(), d_est.ravel())[0, 1] > 0.98


def test_sparsity_one_gives_rank_one_sketch(x64):
    x, y = _blobs(1, n=12)
    p = jax.jit(_MODEL64.init)(jax.random.PRNGKey(0), x[:1])
    c = np.asarray(ssm.zeroth_order_features(jax.random.PRNGKey(2), _MODEL64.apply, p, x, y, n_directions=8, eps=1e-5, sparsity=1))
    sv = np.linalg.svd(c, compute_uv=False)
    assert sv[1] < 1e-6 * sv[0]  # one coordinate kept: c_ip = g_i[k] z_p[k]
    # without sparsification, rank > 1 (the shapes and arguments of the Gram test: one compilation)
    c_all = np.asarray(ssm.zeroth_order_features(jax.random.PRNGKey(2), _MODEL64.apply, p, x, y, n_directions=6000, eps=1e-5, sparsity=None))
    sv_all = np.linalg.svd(c_all, compute_uv=False)
    assert sv_all[1] > 1e-3 * sv_all[0]


def test_ssm_train_learns_and_selects_every_step():
    x, y = _blobs(3, n=400)
    xt, yt = _blobs(3, n=200)
    x, xt = x.astype(np.float32), xt.astype(np.float32)
    model = mlp(3, hidden=(16,))
    p0 = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])
    acc = jax.jit(lambda p: jnp.mean(jnp.argmax(model.apply(p, xt), -1) == yt))
    run = ssm.ssm_train(jax.random.PRNGKey(1), model.apply, p0, optax.sgd(0.1), x, y, steps=40, batch_size=16, subset_size=48, n_directions=8, sparsity=16, eval_fn=acc, eval_every=40)
    assert run.selection_steps == list(range(40))
    assert run.history.eval_steps == [40] and run.history.eval_values[-1] > 0.9


def test_validation():
    x, y = _blobs(0, n=20)
    x = x.astype(np.float32)
    model = mlp(3, hidden=(4,))
    p = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])
    k = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="n_directions"):
        ssm.zeroth_order_features(k, model.apply, p, x, y, n_directions=0)
    with pytest.raises(ValueError, match="eps"):
        ssm.zeroth_order_features(k, model.apply, p, x, y, eps=0.0)
    with pytest.raises(ValueError, match="sparsity"):
        ssm.zeroth_order_features(k, model.apply, p, x, y, sparsity=0)
    with pytest.raises(TypeError, match="apply"):
        ssm.zeroth_order_features(k, None, p, x, y)
    with pytest.raises(ValueError, match="expected equal sizes"):
        ssm.zeroth_order_features(k, model.apply, p, x, y[:5])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        ssm.zeroth_order_features(k, model.apply, p, bad, y)
    with pytest.raises(ValueError, match="reselect_every"):
        ssm.ssm_train(k, model.apply, p, optax.sgd(0.1), x, y, steps=2, batch_size=2, subset_size=4, reselect_every=0)
