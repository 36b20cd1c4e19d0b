"""Data Shapley: enumeration == permutation definition; KNN closed form == enumeration; TMC converges."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selection import shapley


def _game(n, seed):
    """A non-additive utility: coverage of random sets + a pairwise synergy term."""
    rng = np.random.default_rng(seed)
    cover = jnp.asarray(rng.random((n, 12)) < 0.3)
    w = jnp.asarray(rng.random(12))
    syn = jnp.asarray(np.triu(rng.normal(size=(n, n)), 1))

    def u(mask):
        covered = jnp.any(cover & mask[:, None], axis=0)
        m = mask.astype(w.dtype)
        return jnp.sum(w * covered) + m @ syn @ m

    return u


def _by_permutations(u, n):
    phi = np.zeros(n)
    for perm in itertools.permutations(range(n)):
        mask = np.zeros(n, bool)
        prev = float(u(jnp.asarray(mask)))
        for i in perm:
            mask[i] = True
            cur = float(u(jnp.asarray(mask)))
            phi[i] += cur - prev
            prev = cur
    return phi / math.factorial(n)


def test_exact_equals_permutation_definition_and_axioms(x64):
    n = 5
    u = _game(n, 0)
    phi = shapley.exact_shapley(u, n)
    np.testing.assert_allclose(phi, _by_permutations(jax.jit(u), n), atol=1e-10)
    full, empty = float(u(jnp.ones(n, bool))), float(u(jnp.zeros(n, bool)))
    np.testing.assert_allclose(phi.sum(), full - empty, atol=1e-10)  # efficiency
    # additive game: φ_i is the weight itself
    w = jnp.asarray([0.5, -1.0, 2.0, 0.0])
    np.testing.assert_allclose(shapley.exact_shapley(lambda m: jnp.sum(w * m), 4), np.asarray(w), atol=1e-12)


def _knn_data(seed, n=8, m=10, c=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)), rng.integers(0, c, n).astype(np.int32), rng.normal(size=(m, 2)), rng.integers(0, c, m).astype(np.int32)


def _knn_utility_np(x, y, xt, yt, k, mask):
    """Jia et al.'s K-NN utility by hand (numpy): mean over test points of the matching
    labels among the ``min(K, |S|)`` nearest members of ``S`` (ties by index), over ``K``."""
    members = np.flatnonzero(mask)
    d = ((xt[:, None] - x[None, members]) ** 2).sum(-1)
    nearest = members[np.argsort(d, axis=1, kind="stable")[:, :k]]
    return float(np.mean((y[nearest] == yt[:, None]).sum(1)) / k)


def _knn_shapley_by_subsets(x, y, xt, yt, k):
    """Shapley values of :func:`_knn_utility_np` from the subset formula, all ``2ⁿ`` subsets in numpy."""
    n = len(x)
    masks = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    u = np.array([_knn_utility_np(x, y, xt, yt, k, m) for m in masks])
    phi = np.zeros(n)
    for code, m in enumerate(masks):
        s = int(m.sum())
        for i in np.flatnonzero(m == 0):
            phi[i] += math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) * (u[code | (1 << i)] - u[code])
    return phi


@pytest.mark.parametrize("k", [1, 3, 10])
def test_knn_shapley_closed_form_equals_enumeration(x64, k):
    x, y, xt, yt = _knn_data(k)
    exact = shapley.exact_shapley(shapley.knn_utility(x, y, xt, yt, k), x.shape[0])
    got = np.asarray(shapley.knn_shapley(x, y, xt, yt, k))
    np.testing.assert_allclose(got, exact, atol=1e-12)
    assert np.ptp(exact) > 1e-3


def test_knn_shapley_k_above_n_sums_to_utility(x64):
    # K > n: every point fills one of K slots, U(D) = Σ m / K = 8 / 10 (the old base case m_n / n gave 1.0).
    # n = 8, 10 test points and K = 10, as in the closed-form test: its compiled program is reused.
    x, y = np.stack([np.arange(8.0), np.zeros(8)], 1), np.zeros(8, np.int32)
    xt, yt = np.repeat(x[:1], 10, 0), np.zeros(10, np.int32)
    vals = np.asarray(shapley.knn_shapley(x, y, xt, yt, 10))
    np.testing.assert_allclose(vals.sum(), 0.8, atol=1e-12)
    np.testing.assert_allclose(vals, _knn_shapley_by_subsets(x, y, xt, yt, 10), atol=1e-12)
    # Mixed labels with the farthest point matching: enumeration again.
    xm, ym, xt, yt = _knn_data(3, c=2)
    ym[:] = 0
    yt[:] = 0
    ym[0] = 1
    exact = _knn_shapley_by_subsets(xm, ym, xt, yt, 10)
    np.testing.assert_allclose(np.asarray(shapley.knn_shapley(xm, ym, xt, yt, 10)), exact, atol=1e-12)


def test_tmc_converges_to_exact(x64):
    x, y, xt, yt = _knn_data(7, n=7)
    u = shapley.knn_utility(x, y, xt, yt, 2)
    exact = _knn_shapley_by_subsets(x, y, xt, yt, 2)  # numpy: no compilation per utility
    res = shapley.tmc_shapley(jax.random.PRNGKey(0), u, 7, truncation=0.0, max_permutations=2000, convergence_tol=1e-3, window=200, batch=100)
    assert res.n_permutations == 2000 and not res.converged
    assert res.utility_calls == 2000 * 7 + 2  # no truncation: every prefix evaluated
    np.testing.assert_allclose(res.values, exact, atol=0.025)
    np.testing.assert_allclose(res.values.sum(), _knn_utility_np(x, y, xt, yt, 2, np.ones(7, bool)), atol=1e-9)  # efficiency per permutation


def test_tmc_truncation_saves_calls_and_stops_on_convergence(x64):
    rng = np.random.default_rng(0)
    x, xt = rng.normal(size=(30, 2)), rng.normal(size=(60, 2))
    y, yt = (x[:, 0] > 0).astype(np.int32), (xt[:, 0] > 0).astype(np.int32)
    y[:4] = 1 - y[:4]  # four flipped labels
    u = shapley.knn_utility(x, y, xt, yt, 3)
    exact = np.asarray(shapley.knn_shapley(x, y, xt, yt, 3))
    plain = shapley.tmc_shapley(jax.random.PRNGKey(1), u, 30, truncation=0.0, max_permutations=2000)
    trunc = shapley.tmc_shapley(jax.random.PRNGKey(1), u, 30, truncation=0.02, max_permutations=2000)
    for res in (plain, trunc):
        assert res.converged and res.n_permutations < 2000 and res.errors[-1] < 0.05
    assert trunc.utility_calls < 0.75 * plain.utility_calls
    assert np.corrcoef(plain.values, exact)[0, 1] > 0.95
    assert np.corrcoef(trunc.values, exact)[0, 1] > 0.9


def test_validation():
    x, y, xt, yt = _knn_data(0)
    with pytest.raises(TypeError, match="utility"):
        shapley.exact_shapley(3, 4)
    with pytest.raises(ValueError, match="n"):
        shapley.exact_shapley(lambda m: jnp.sum(m), 17)
    with pytest.raises(ValueError, match="truncation"):
        shapley.tmc_shapley(jax.random.PRNGKey(0), lambda m: jnp.sum(m), 3, truncation=-1.0)
    with pytest.raises(ValueError, match="convergence_tol"):
        shapley.tmc_shapley(jax.random.PRNGKey(0), lambda m: jnp.sum(m), 3, convergence_tol=0.0)
    with pytest.raises(ValueError, match="engine"):
        shapley.tmc_shapley(jax.random.PRNGKey(0), lambda m: jnp.sum(m), 3, engine="scan")
    with pytest.raises(ValueError, match="batches_per_call"):
        shapley.tmc_shapley(jax.random.PRNGKey(0), lambda m: jnp.sum(m), 3, batches_per_call=0)
    with pytest.raises(ValueError, match="mesh"):
        shapley.tmc_shapley(jax.random.PRNGKey(0), lambda m: jnp.sum(m), 3, engine="map", mesh=object())
    with pytest.raises(ValueError, match="k"):
        shapley.knn_shapley(x, y, xt, yt, 0)
    with pytest.raises(TypeError, match="y_train"):
        shapley.knn_shapley(x, y.astype(float), xt, yt, 1)
    with pytest.raises(ValueError, match="x_test"):
        shapley.knn_utility(x, y, xt[:, :1], yt, 1)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        shapley.knn_shapley(bad, y, xt, yt, 1)


def _sharded_equals_single():
    jax.config.update("jax_enable_x64", True)
    from distill.parallel import make_mesh

    x, y, xt, yt = _knn_data(3, n=20, m=13)
    a = np.asarray(shapley.knn_shapley(x, y, xt, yt, 3))
    b = np.asarray(shapley.knn_shapley(x, y, xt, yt, 3, mesh=make_mesh()))
    np.testing.assert_allclose(a, b, atol=1e-12)
    _tmc_sharded_equals_single()  # one child interpreter for both


@pytest.mark.slow
def test_sharded_equals_single_device(multidevice):
    """KNN-Shapley over test points and TMC over permutations, sharded on 8 devices."""
    multidevice(_sharded_equals_single)


def _tmc_problem(n=14):
    rng = np.random.default_rng(11)
    x, xt = rng.normal(size=(n, 2)), rng.normal(size=(25, 2))
    y, yt = (x[:, 0] > 0).astype(np.int32), (xt[:, 0] > 0).astype(np.int32)
    y[:2] = 1 - y[:2]
    return shapley.knn_utility(x, y, xt, yt, 3), n


def test_tmc_engines_agree_for_the_same_permutations(x64):
    """vmap (four batches per call) == lax.map == Python loops: values, calls, checks."""
    u, n = _tmc_problem()
    kw = dict(truncation=0.05, max_permutations=32, min_permutations=10, batch=8, window=5, convergence_tol=1e-6)
    ref = shapley.tmc_shapley(jax.random.PRNGKey(3), u, n, engine="map", **kw)
    assert ref.n_permutations == 32 and len(ref.errors) == 3  # checks after 16, 24, 32
    assert 2 < ref.utility_calls < 32 * n + 2  # truncation skipped some evaluations
    # the Python engine gets the utility jitted: one compilation, then fast calls per prefix
    for engine, util in (("vmap", u), ("python", jax.jit(u))):
        got = shapley.tmc_shapley(jax.random.PRNGKey(3), util, n, engine=engine, batches_per_call=4, **kw)
        np.testing.assert_allclose(got.values, ref.values, atol=1e-12)
        np.testing.assert_allclose(got.errors, ref.errors, atol=1e-12)
        assert (got.n_permutations, got.utility_calls, got.converged) == (ref.n_permutations, ref.utility_calls, ref.converged)
    # converging in the middle of a call: the speculative permutations after it are discarded
    kw.update(convergence_tol=0.5, max_permutations=200)
    ref = shapley.tmc_shapley(jax.random.PRNGKey(4), u, n, engine="map", **kw)
    got = shapley.tmc_shapley(jax.random.PRNGKey(4), u, n, engine="vmap", batches_per_call=4, **kw)
    assert ref.converged and ref.n_permutations % 32 != 0  # stopped inside a 32-permutation call
    assert (got.n_permutations, got.utility_calls, got.converged) == (ref.n_permutations, ref.utility_calls, True)
    np.testing.assert_allclose(got.values, ref.values, atol=1e-12)


def _tmc_sharded_equals_single():
    from distill.parallel import make_mesh

    u, n = _tmc_problem()
    # 3 x 7 = 21 permutations per call: not a multiple of 8 devices (zero-padding rows);
    # single-device vmap == map is tested in-process
    kw = dict(truncation=0.05, max_permutations=21, batch=7, batches_per_call=3, convergence_tol=1e-6, window=5)
    a = shapley.tmc_shapley(jax.random.PRNGKey(5), u, n, **kw)
    b = shapley.tmc_shapley(jax.random.PRNGKey(5), u, n, mesh=make_mesh(), **kw)
    np.testing.assert_allclose(a.values, b.values, atol=1e-12)
    assert a.utility_calls == b.utility_calls < 21 * n + 2
    assert np.ptp(b.values) > 1e-3
