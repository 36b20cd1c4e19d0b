"""EASE against brute-force constrained least squares, popularity, and the λ grid search."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import metrics
from models import ease, infinite_ae, popularity, tuning

pytestmark = pytest.mark.x64  # compares to 1e-6 and tighter


def _data(seed=0, n=30, items=12, density=0.3):
    rng = np.random.default_rng(seed)
    return (rng.random((n, items)) < density).astype(np.float64)


def test_ease_equals_per_item_constrained_ridge():
    """Column j of B minimises ‖X_j − X B_j‖² + λ‖B_j‖² with B_jj = 0 (Steck 2019)."""
    x = _data()
    lam = 3.0
    b = np.asarray(ease.fit(x, lam=lam).weights)
    for j in range(x.shape[1]):
        others = [i for i in range(x.shape[1]) if i != j]
        xo = x[:, others]
        sol = np.linalg.solve(xo.T @ xo + lam * np.eye(len(others)), xo.T @ x[:, j])
        np.testing.assert_allclose(b[others, j], sol, atol=1e-10)
        assert b[j, j] == 0.0
    np.testing.assert_allclose(ease.predict(ease.fit(x, lam=lam), x[:4]), x[:4] @ b, atol=1e-12)


def test_popularity_scores_are_item_counts():
    x = _data(1)
    s = popularity.predict(popularity.fit(x), x[:3])
    np.testing.assert_allclose(s, np.tile(x.sum(0), (3, 1)))


def _split(seed=2, n=40, items=25):
    rng = np.random.default_rng(seed)
    full = (rng.random((n, items)) < 0.35).astype(np.float64)
    val = full * (rng.random(full.shape) < 0.25)
    return full - val, val


@pytest.mark.parametrize("path", ["cholesky", "spectral"])
@pytest.mark.parametrize("metric", ["HR@10", "nDCG@5", "AUC"])
def test_infinite_ae_grid_search_equals_brute_force(metric, path):
    """Both exact sweeps (Cholesky per λ, one eigendecomposition) equal refitting per λ."""
    train, val = _split()
    lams = (1e-3, 0.5, 5.0, 50.0)
    search = infinite_ae.select_lambda(train, val, lams=lams, metric=metric, path=path)
    assert (search.metric, search.lams) == (metric, lams)
    assert search.best_value == max(search.values)
    name, k = tuning.parse_metric(metric)
    brute = []
    for lam in lams:
        s = infinite_ae.predict(infinite_ae.fit(train, lam=lam), train)
        brute.append(metrics.evaluate(s, val, train, ks=(k or 10,), metrics=(name,))[metric])
    np.testing.assert_allclose(search.values, brute, rtol=1e-9)
    assert search.best_lam == lams[int(np.argmax(brute))]
    ref = infinite_ae.fit(train, lam=search.best_lam)
    np.testing.assert_allclose(search.model.alpha, ref.alpha, rtol=1e-8, atol=1e-12)


def test_grid_search_keeps_the_first_best_model():
    """A ``(scores, model)`` sweep returns the model of the best λ; ties go to the first."""
    train, val = _split()
    good = jnp.asarray(val + 0.0)  # ranks every validation item first: HR@10 = 100 %
    bad = jnp.asarray(1.0 - val - train)
    table = {1.0: (bad, "a"), 2.0: (good, "b"), 3.0: (good, "c"), 4.0: (bad, "d")}
    search = tuning.select_lambda(train, val, scores_for=table.__getitem__, lams=(1.0, 2.0, 3.0, 4.0),
                                  metric="HR@10")
    assert (search.best_lam, search.model, search.best_value) == (2.0, "b", 100.0)
    assert search.values[0] < 100.0 and search.values[3] < 100.0
    plain = tuning.select_lambda(train, val, scores_for=lambda lam: table[lam][0], lams=(1.0, 2.0), metric="HR@10")
    assert plain.model is None and plain.best_lam == 2.0


def test_select_lambda_rejects_unknown_path():
    train, val = _split()
    with pytest.raises(ValueError, match="^path"):
        infinite_ae.select_lambda(train, val, path="qr")


def test_ease_grid_search_equals_brute_force():
    train, val = _split(3)
    lams = (0.5, 5.0, 50.0)
    search = ease.select_lambda(train, val, lams=lams, metric="HR@10")
    brute = [
        metrics.evaluate(ease.predict(ease.fit(train, lam=l), train), val, train, ks=(10,), metrics=("hr",))[
            "HR@10"
        ]
        for l in lams
    ]
    np.testing.assert_allclose(search.values, brute, rtol=1e-9)
    assert search.best_value == max(search.values)
    np.testing.assert_allclose(search.model.weights, ease.fit(train, lam=search.best_lam).weights, atol=1e-12)


def test_bad_input():
    x = _data()
    with pytest.raises(ValueError, match="lam"):
        ease.fit(x, lam=0.0)
    with pytest.raises(ValueError, match="x_query"):
        ease.predict(ease.fit(x), np.ones((2, 3)))
    with pytest.raises(ValueError, match="x_query"):
        popularity.predict(popularity.fit(x), np.ones((2, 3)))
    with pytest.raises(ValueError, match="metric"):
        tuning.parse_metric("HR10")
    with pytest.raises(ValueError, match="lams"):
        infinite_ae.select_lambda(x, x, lams=(-1.0,))
    with pytest.raises(ValueError, match="lams"):
        infinite_ae.select_lambda(x, x, lams=(0.0, 1.0))
    dup = np.concatenate([x[:3], x[:3]])
    with pytest.raises(ValueError, match="lam"):
        infinite_ae.fit(dup.astype(np.float32), lam=0.0)
    with pytest.raises(ValueError, match="lams"):
        infinite_ae.select_lambda(x, x, lams=())


def test_ease_dual_form_equals_primal():
    """Fewer users than items: the Woodbury (user-space) solve gives the same B."""
    x = _data(5, n=8, items=20, density=0.4)
    lam = jnp.asarray(2.0)
    np.testing.assert_allclose(ease._weights_dual(x, lam), ease._weights_primal(x, lam), atol=1e-10)
    np.testing.assert_allclose(
        ease._train_scores_dual(x, x @ x.T, lam), ease._train_scores_primal(x, x.T @ x, lam), atol=1e-10
    )


def test_ease_fit_predict_dual_equals_weights():
    rng = np.random.default_rng(0)
    x = jnp.asarray((rng.random((12, 30)) < 0.3).astype(np.float64))  # users ≪ items: dual path
    q = jnp.asarray((rng.random((5, 30)) < 0.3).astype(np.float64))
    want = ease.predict(ease.fit(x, lam=7.0), q)
    np.testing.assert_allclose(np.asarray(ease.fit_predict(x, q, lam=7.0)), np.asarray(want), atol=1e-9)
    np.testing.assert_allclose(np.asarray(ease.fit_predict(x.T, q[:, :12], lam=7.0)),
                               np.asarray(ease.predict(ease.fit(x.T, lam=7.0), q[:, :12])), atol=1e-9)
    with pytest.raises(ValueError, match="x_query"):
        ease.fit_predict(x, q[:, :5], lam=7.0)
    with pytest.raises(ValueError, match="lam"):
        ease.fit_predict(x, q, lam=0.0)


def test_ease_refuses_a_singular_solve_instead_of_returning_nan():
    # Duplicate item columns make XᵀX singular; λ = 1e-8 does not regularise it in float32.
    rng = np.random.default_rng(0)
    x = (rng.random((20, 5)) < 0.5).astype(np.float32)
    x = np.concatenate([x, x[:, :2]], axis=1)
    with pytest.raises(ValueError, match="lam: .*not positive definite"):
        ease.fit(x, lam=1e-8)
    wide = np.zeros((3, 8), np.float32)
    wide[:, 0] = 1
    with pytest.raises(ValueError, match="lam"):
        ease.fit_predict(wide, wide, lam=1e-30)
    assert np.isfinite(np.asarray(ease.fit(x, lam=1e-3).weights)).all()


def test_checkify_turns_a_nan_under_jit_into_an_error():
    # The opt-in path of the error policy: under jit a singular solve gives NaN (no
    # plausible number); wrapped in checkify's float checks it raises instead.
    from jax.experimental import checkify

    wide = np.zeros((3, 8), np.float32)
    wide[:, 0] = 1
    f = lambda x: ease.fit_predict(x, x, lam=1e-30)
    assert np.isnan(np.asarray(jax.jit(f)(wide))).all()
    err, _ = jax.jit(checkify.checkify(f, errors=checkify.float_checks))(wide)
    with pytest.raises(checkify.JaxRuntimeError, match="nan generated"):
        err.throw()
