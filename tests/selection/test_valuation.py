"""Leave-one-out values: closed forms / warm Newton refits == brute-force n refits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.kernels import fc_relu
from selection import valuation


def _regression(seed, n=25, d=4, m=12, c=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w = rng.normal(size=(d, c))
    y = x @ w + 0.5 * rng.normal(size=(n, c))
    xt = rng.normal(size=(m, d))
    yt = xt @ w + 0.5 * rng.normal(size=(m, c))
    return x, y, xt, yt


def _metric(pred, yt, metric):
    if metric == "mse":
        return np.mean(np.sum((pred - yt) ** 2, -1))
    return np.mean(pred.argmax(-1) != yt.argmax(-1))


def _brute_ridge(x, y, xt, yt, lam, metric):
    def fit(xx, yy):
        return np.linalg.solve(xx.T @ xx + lam * np.eye(x.shape[1]), xx.T @ yy)

    base = _metric(xt @ fit(x, y), yt, metric)
    keep = lambda i: np.arange(len(x)) != i
    return np.array([_metric(xt @ fit(x[keep(i)], y[keep(i)]), yt, metric) - base for i in range(len(x))])


@pytest.mark.parametrize("metric", ["mse", "error"])
def test_loo_ridge_equals_refits(x64, metric):
    x, y, xt, yt = _regression(0)
    got = valuation.loo_ridge(x, y, xt, yt, lam=0.7, metric=metric)
    np.testing.assert_allclose(np.asarray(got), _brute_ridge(x, y, xt, yt, 0.7, metric), atol=1e-9)
    if metric == "mse":
        assert np.ptp(np.asarray(got)) > 1e-3  # values differ: the test can fail


def test_loo_ridge_1d_targets(x64):
    x, y, xt, yt = _regression(1, c=1)
    got = valuation.loo_ridge(x, y[:, 0], xt, yt[:, 0], lam=0.3)
    np.testing.assert_allclose(np.asarray(got), _brute_ridge(x, y, xt, yt, 0.3, "mse"), atol=1e-9)


def _brute_krr(kfull, y, kt, yt, lam, metric):
    n = len(y)

    def pred(idx):
        a = np.linalg.solve(kfull[np.ix_(idx, idx)] + lam * np.eye(len(idx)), y[idx])
        return kt[:, idx] @ a

    base = _metric(pred(np.arange(n)), yt, metric)
    return np.array([_metric(pred(np.delete(np.arange(n), i)), yt, metric) - base for i in range(n)])


@pytest.mark.parametrize("metric", ["mse", "error"])
def test_loo_krr_ntk_equals_refits(x64, metric):
    x, y, xt, yt = _regression(2, n=20, c=3)
    k = np.asarray(fc_relu(x, depth=2).ntk)
    kt = np.asarray(fc_relu(xt, x, depth=2).ntk)
    got = valuation.loo_krr(k, y, kt, yt, lam=0.5, metric=metric)
    np.testing.assert_allclose(np.asarray(got), _brute_krr(k, y, kt, yt, 0.5, metric), atol=1e-8)


def test_loo_krr_linear_kernel_is_ridge(x64):
    x, y, xt, yt = _regression(3)
    a = valuation.loo_krr(x @ x.T, y, xt @ x.T, yt, lam=0.9)
    b = valuation.loo_ridge(x, y, xt, yt, lam=0.9)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-8)


def test_loo_newton_logistic_equals_refits(x64, logistic):
    x, y, xt, yt = logistic.data(0)
    l2 = 0.05
    fit_logistic, logistic_loss = logistic.fit, logistic.loss
    p = fit_logistic(x, y, l2)
    got = np.asarray(valuation.loo_newton(logistic_loss, p, (x, y), (xt, yt), l2=l2, steps=4))
    base = float(logistic_loss(p, (xt, yt)))
    ref = []
    for i in range(len(x)):
        w = np.ones(len(x))
        w[i] = 0
        ref.append(float(logistic_loss(fit_logistic(x, y, l2, w), (xt, yt))) - base)
    np.testing.assert_allclose(got, np.array(ref), atol=1e-7)
    assert np.ptp(got) > 1e-4


def test_heldout_loss():
    pred = np.array([[0.2, 0.9], [0.6, 0.1], [0.3, 0.4]])
    yt = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(float(valuation.heldout_loss(pred, yt, "mse")), np.mean(((pred - yt) ** 2).sum(1)), rtol=1e-6)
    np.testing.assert_allclose(float(valuation.heldout_loss(pred, yt, "error")), 2 / 3, rtol=1e-6)
    with pytest.raises(ValueError, match="y_test"):
        valuation.heldout_loss(pred, yt[:2], "mse")
    with pytest.raises(ValueError, match="metric"):
        valuation.heldout_loss(pred, yt, "mae")


def test_validation(logistic):
    x, y, xt, yt = _regression(0)
    logistic_loss = logistic.loss
    x32 = x.astype(np.float32)
    with pytest.raises(ValueError, match="lam"):
        valuation.loo_ridge(x, y, xt, yt, lam=0.0)
    with pytest.raises(ValueError, match="x_test"):
        valuation.loo_ridge(x, y, xt[:, :2], yt)
    with pytest.raises(ValueError, match="expected equal sizes"):
        valuation.loo_ridge(x, y[:5], xt, yt)
    with pytest.raises(TypeError, match="x"):
        valuation.loo_ridge(x.astype(np.int32), y, xt, yt)
    with pytest.raises(ValueError, match="metric"):
        valuation.loo_ridge(x, y, xt, yt, metric="acc")
    bad = x32.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        valuation.loo_ridge(bad, y, xt, yt)
    with pytest.raises(ValueError, match="k_train"):
        valuation.loo_krr(x @ x.T[:, :3], y, xt @ x.T, yt)
    with pytest.raises(ValueError, match="k_test"):
        valuation.loo_krr(x @ x.T, y, xt @ x.T[:, :3], yt)
    with pytest.raises(TypeError, match="loss_fn"):
        valuation.loo_newton(None, {}, (x, y), (xt, yt))
    with pytest.raises(ValueError, match="steps"):
        valuation.loo_newton(logistic_loss, {"w": jnp.zeros(4), "b": 0.0}, (x, y[:, 0]), (xt, yt[:, 0]), steps=0)
    with pytest.raises(ValueError, match="l2"):
        valuation.loo_newton(logistic_loss, {"w": jnp.zeros(4), "b": 0.0}, (x, y[:, 0]), (xt, yt[:, 0]), l2=-1.0)


def _sharded_equals_single():
    jax.config.update("jax_enable_x64", True)
    from distill.parallel import make_mesh

    mesh = make_mesh()
    x, y, xt, yt = _regression(4, n=21)
    k, kt = x @ x.T, xt @ x.T
    for fn, args in ((valuation.loo_krr, (k, y, kt, yt)), (valuation.loo_ridge, (x, y, xt, yt))):
        a = np.asarray(fn(*args, lam=0.5))
        b = np.asarray(fn(*args, lam=0.5, mesh=mesh))
        np.testing.assert_allclose(a, b, atol=1e-10)
    # Newton LOO on a squared loss with a bias (no logistic fixture in the child process)
    x1, y1, xt1, yt1 = _regression(5, n=13, c=1)
    loss = lambda p, b: jnp.mean((b[0] @ p["w"] + p["b"] - b[1]) ** 2)
    p = {"w": jnp.asarray(np.linalg.lstsq(x1, y1[:, 0], rcond=None)[0]), "b": jnp.asarray(0.1)}
    a = np.asarray(valuation.loo_newton(loss, p, (x1, y1[:, 0]), (xt1, yt1[:, 0]), l2=0.1, steps=2))
    b = np.asarray(valuation.loo_newton(loss, p, (x1, y1[:, 0]), (xt1, yt1[:, 0]), l2=0.1, steps=2, mesh=mesh))
    assert np.ptp(a) > 1e-4
    np.testing.assert_allclose(a, b, atol=1e-10)


@pytest.mark.slow
def test_sharded_equals_single_device(multidevice):
    multidevice(_sharded_equals_single)


def test_loo_ridge_refuses_leverage_one_in_float32():
    # Each point alone in its direction: 1 − hᵢ = λ/(1 + λ) rounds to 0 in float32 at λ = 1e-9.
    x = np.eye(4, 6, dtype=np.float32)
    y = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="lam: point 0 has leverage"):
        valuation.loo_ridge(x, y, x, y, lam=1e-9)
    # At λ = 1e-2 it is defined: without point i its test residual becomes 1 (mean over 4
    # test points) instead of λ/(1+λ), so v_i = (1 − (λ/(1+λ))²)/4.
    r = 1e-2 / 1.01
    np.testing.assert_allclose(np.asarray(valuation.loo_ridge(x, y, x, y, lam=1e-2)), (1 - r**2) / 4, rtol=1e-4)
