"""Per-example scorers against direct Python loops; dynamics-based scores on handcrafted histories."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.mlp import mlp
from selection import scores


def _setup(n=13, d=5, c=4, seed=0):
    model = mlp(c, hidden=(8,))
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    y = jnp.asarray(rng.integers(0, c, n), jnp.int32)
    # Two models: init's parameter tree (traced, not compiled) with N(0, 1/shape[0]) values
    # from numpy (N(0, 1/fan_in) kernels); an eager init would compile each of its random ops.
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    draw = lambda s: jnp.asarray((rng.normal(size=s.shape) / np.sqrt(s.shape[0])).astype(s.dtype))
    params = [jax.tree_util.tree_map(draw, shapes) for _ in range(2)]
    return model, params, x, y


def _ce(model, p, x1, y1):
    return -jax.nn.log_softmax(model.apply(p, x1[None])[0])[y1]


def test_grand_equals_python_loop_of_gradients():
    model, params, x, y = _setup()
    got = scores.grand(model.apply, params[0], (x, y), block_size=4)  # ragged blocks
    want = []
    grad_one = jax.jit(jax.grad(partial(_ce, model)))
    xs, ys = np.asarray(x), np.asarray(y)  # rows and norms in numpy: eager jax ops compile one by one
    for i in range(x.shape[0]):
        g = grad_one(params[0], xs[i], ys[i])
        want.append(np.sqrt(sum(np.sum(np.asarray(a, np.float64) ** 2) for a in jax.tree_util.tree_leaves(g))))
    np.testing.assert_allclose(got, want, rtol=2e-5)
    # ensemble: mean over models (the single models at the block size above: no new compile)
    ens = scores.grand(model.apply, params, (x, y))
    each = [scores.grand(model.apply, p, (x, y), block_size=4) for p in params]
    np.testing.assert_allclose(ens, np.mean(each, axis=0), rtol=1e-5)


def _softmax(logits):
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def test_loss_el2n_margin_entropy_match_direct_formulas():
    model, params, x, y = _setup()
    apply = jax.jit(model.apply)  # the logits in one compilation; the formulas in numpy
    probs = [_softmax(apply(p, x)) for p in params]
    onehot = np.eye(4)[np.asarray(y)]
    np.testing.assert_allclose(
        scores.loss(model.apply, params[0], (x, y)), -np.log(probs[0][np.arange(13), np.asarray(y)]), rtol=1e-5)
    np.testing.assert_allclose(
        scores.el2n(model.apply, params, (x, y)),
        np.mean([np.linalg.norm(p - onehot, axis=1) for p in probs], axis=0), rtol=1e-5)
    s = np.sort(probs[0], axis=1)
    np.testing.assert_allclose(scores.margin(model.apply, params[0], x), s[:, -1] - s[:, -2], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        scores.entropy(model.apply, params[0], (x, y)),
        -np.sum(probs[0] * np.log(probs[0]), axis=1), rtol=1e-5)
    np.testing.assert_allclose(scores.output_gradients(model.apply, params[0], (x, y)), probs[0] - onehot, atol=1e-6)


def test_scorer_is_jittable_with_partial():
    model, params, x, y = _setup()
    score = jax.jit(partial(scores.el2n, model.apply))  # score(params, batch) -> (n,)
    np.testing.assert_allclose(score(params[0], (x, y)), scores.el2n(model.apply, params[0], (x, y)), rtol=1e-6)


def test_perplexity_matches_manual():
    v, n, length = 7, 3, 5
    table = np.random.default_rng(1).normal(size=(v, v)).astype(np.float32)
    apply = lambda p, t: p[t]  # bigram LM: logits depend on the current token
    tokens = np.random.default_rng(0).integers(0, v, (n, length + 1)).astype(np.int32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], np.float32)
    got = scores.perplexity(apply, jnp.asarray(table), jnp.asarray(tokens), mask=jnp.asarray(mask))
    # the reference in numpy: eager jax indexing would compile each gather
    t64 = table.astype(np.float64)
    logp = t64 - np.log(np.sum(np.exp(t64), axis=-1, keepdims=True))
    for i in range(n):
        m = int(mask[i].sum())
        nll = [-logp[tokens[i, t], tokens[i, t + 1]] for t in range(m)]
        np.testing.assert_allclose(got[i], np.exp(np.mean(nll)), rtol=1e-5)


def test_forgetting_events_on_handcrafted_histories():
    correct = np.array(
        [
            # ex0 never forgotten, ex1 forgotten twice, ex2 never learned, ex3 learned late, ex4 once
            [1, 1, 0, 0, 1],
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 1],
            [1, 0, 0, 1, 1],
            [1, 1, 0, 1, 0],
        ],
        bool,
    )
    np.testing.assert_array_equal(scores.forgetting_events(correct), [0, 2, 5, 0, 2])
    np.testing.assert_array_equal(scores.forgetting_events(correct, never_learned="zero"), [0, 2, 0, 0, 2])


def test_data_map_confidence_variability():
    p = np.array([[0.2, 0.9], [0.4, 0.9], [0.6, 0.9]], np.float32)
    dm = scores.data_map(p)
    np.testing.assert_allclose(dm.confidence, [0.4, 0.9], rtol=1e-6)
    np.testing.assert_allclose(dm.variability, [np.std([0.2, 0.4, 0.6]), 0.0], atol=1e-6)
    np.testing.assert_allclose(dm.correctness, [1 / 3, 1.0], rtol=1e-6)


def test_prototype_distance_outliers_score_highest():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8)) * 5
    x = np.concatenate([c + 0.1 * rng.normal(size=(30, 8)) for c in centers] + [rng.normal(size=(3, 8)) * 5])
    # (93, 8), k = 3: the k-means compilation is shared with test_coresets' blob test
    d = scores.prototype_distance(jax.random.PRNGKey(0), jnp.asarray(x, jnp.float32), 3, metric="euclidean")
    assert set(np.argsort(-np.asarray(d))[:3]) == {90, 91, 92}


def test_bad_inputs_name_the_argument():
    model, params, x, y = _setup()
    with pytest.raises(TypeError, match="batch"):
        scores.loss(model.apply, params[0], x)
    with pytest.raises(ValueError, match="same number of examples"):
        scores.el2n(model.apply, params[0], (x, y[:3]))
    with pytest.raises(TypeError, match=r"batch\[1\]"):
        scores.grand(model.apply, params[0], (x, y.astype(jnp.float32)))
    with pytest.raises(TypeError, match="apply"):
        scores.loss(None, params[0], (x, y))
    with pytest.raises(ValueError, match="block_size"):
        scores.loss(model.apply, params[0], (x, y), block_size=0)
    with pytest.raises(ValueError, match="correct"):
        scores.forgetting_events(np.ones(3, bool))
    with pytest.raises(ValueError, match="never_learned"):
        scores.forgetting_events(np.ones((2, 3), bool), never_learned="inf")
    with pytest.raises(ValueError, match="tokens"):
        scores.perplexity(lambda p, t: t, None, jnp.zeros((2, 1), jnp.int32))


# --------------------------------------------------------------------------- 8 devices


def _sharded_scorers_equal_single():
    from distill import parallel
    from selection import density

    jax.config.update("jax_enable_x64", True)
    mesh = parallel.make_mesh()
    assert mesh.size == 8
    model = mlp(4, hidden=(8,), dtype=jnp.float64)
    rng = np.random.default_rng(0)
    cases = [(13, (scores.grand, scores.el2n)), (3, (scores.loss,))]  # ragged; fewer rows than devices
    for n, fns in cases:
        x = jnp.asarray(rng.normal(size=(n, 5)))
        y = jnp.asarray(rng.integers(0, 4, n), jnp.int32)
        params = model.init(jax.random.PRNGKey(0), x)
        for fn in fns:
            single = fn(model.apply, params, (x, y))
            sharded = jax.jit(lambda p, b, fn=fn: fn(model.apply, p, b, mesh=mesh, block_size=2))(params, (x, y))
            np.testing.assert_allclose(sharded, single, rtol=1e-12)
        emb = jnp.asarray(rng.normal(size=(n, 3)))
        k = jax.random.PRNGKey(3)
        np.testing.assert_allclose(
            density.density_scores(k, emb, n_rows=16, width=1.0, mesh=mesh),
            density.density_scores(k, emb, n_rows=16, width=1.0), rtol=1e-12)


@pytest.mark.slow
def test_sharded_scorers_on_8_devices(multidevice):
    multidevice(_sharded_scorers_equal_single)


@pytest.mark.parametrize("fn", [scores.loss, scores.el2n, scores.grand, scores.output_gradients])
def test_out_of_range_labels_raise_eagerly_and_give_nan_under_jit(fn):
    model, params, x, y = _setup(n=6, c=3)
    if fn is scores.output_gradients:  # single model only
        params = params[0]
    bad = y.at[2].set(7)  # 7 on 3 classes: a gather would clamp it to class 2
    with pytest.raises(ValueError, match=r"batch\[1\] \(y\).*label 7"):
        fn(model.apply, params, (x, bad))
    with pytest.raises(ValueError, match="label -1"):
        fn(model.apply, params, (x, y.at[0].set(-1)))
    got = np.asarray(jax.jit(lambda p, xb, yb: fn(model.apply, p, (xb, yb)))(params, x, bad))
    ok = np.asarray(fn(model.apply, params, (x, y)))
    assert np.all(np.isnan(got[2])) and np.isfinite(np.delete(got, 2, axis=0)).all()
    np.testing.assert_allclose(np.delete(got, 2, axis=0), np.delete(ok, 2, axis=0), rtol=1e-5)
