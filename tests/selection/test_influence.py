"""Influence functions: exact on ridge (vs jax.grad of the closed form), ≈ LOO on logistic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selection import influence, valuation


def _ridge_data(seed, n=20, d=4, m=6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = x @ rng.normal(size=d) + 0.3 * rng.normal(size=n)
    xt = rng.normal(size=(m, d))
    yt = xt @ rng.normal(size=d)
    return x, y, xt, yt


def sq_loss(params, batch):
    x, y = batch
    return 0.5 * jnp.mean((x @ params["w"] - y) ** 2)


def _ridge_fit(x, y, l2, eps=None):
    """argmin (1/n)Σ½(xᵢᵀw − yᵢ)² + Σ εᵢ ½(xᵢᵀw − yᵢ)² + (l2/2)‖w‖², closed form."""
    n = x.shape[0]
    w = jnp.full((n,), 1.0 / n) + (0.0 if eps is None else eps)
    a = (x * w[:, None]).T @ x + l2 * jnp.eye(x.shape[1])
    return jnp.linalg.solve(a, (x * w[:, None]).T @ y)


@jax.jit
def _ridge_reference(x, y, xt, yt, l2):
    """At ε = 0: the closed-form fit, its Jacobian dθ̂/dε and the gradient of the test loss in ε.

    Both ridge tests get their references from this one compiled program (eagerly, every
    op of the solve and of its derivatives would compile on its own).
    """
    fit = lambda e: _ridge_fit(x, y, l2, e)
    e0 = jnp.zeros(x.shape[0])  # adds 0.0 to the weights: the fit of ε = None
    return fit(e0), jax.jacobian(fit)(e0), jax.grad(lambda e: sq_loss({"w": fit(e)}, (xt, yt)))(e0)


def test_ridge_influence_params_are_exact_derivatives(x64):
    x, y, xt, yt = _ridge_data(0)
    l2 = 0.1
    # dθ̂/dεᵢ of the closed form, by reverse-mode through the solve
    w, jac, _ = _ridge_reference(x, y, xt, yt, l2)
    p = {"w": w}
    obj = influence.objective(sq_loss, p, l2=l2)
    cg = influence.influence_params(obj, (x, y), method="cg")
    np.testing.assert_allclose(np.asarray(cg), np.asarray(jac).T, atol=1e-9)
    lam_max = float(np.linalg.eigvalsh(x.T @ x / len(x)).max()) + l2
    lis = influence.influence_params(obj, (x, y), method="lissa", key=jax.random.PRNGKey(0), lissa={"scale": 1.2 * lam_max, "depth": 3000})
    np.testing.assert_allclose(np.asarray(lis), np.asarray(jac).T, atol=1e-7)


def test_ridge_influence_loss_is_exact_derivative_of_test_loss(x64):
    x, y, xt, yt = _ridge_data(1)
    l2 = 0.2
    w, _, ref = _ridge_reference(x, y, xt, yt, l2)  # ref: d L_test(θ̂_ε)/dεᵢ through the solve
    p = {"w": w}
    obj = influence.objective(sq_loss, p, l2=l2)
    got = influence.influence_loss(obj, (x, y), (xt, yt))
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-9)
    # per-test matrix: its mean over test points is the influence on the mean test loss
    mat = influence.influence_loss(obj, (x, y), (xt, yt), per_test=True)
    assert mat.shape == (x.shape[0], xt.shape[0])
    np.testing.assert_allclose(np.asarray(mat).mean(1), np.asarray(ref), atol=1e-9)


def test_ihvp_solvers_match_dense_solve_with_damping(x64):
    x, y, _, _ = _ridge_data(2, n=30, d=5)
    p = {"w": jnp.zeros(5)}
    obj = influence.objective(sq_loss, p, l2=0.0)
    v = np.random.default_rng(0).normal(size=(3, 5))
    h = x.T @ x / len(x) + 0.5 * np.eye(5)
    ref = np.linalg.solve(h, v.T).T
    np.testing.assert_allclose(np.asarray(influence.ihvp_cg(obj, (x, y), v, damping=0.5)), ref, atol=1e-8)
    lam = np.linalg.eigvalsh(h).max()
    lis = influence.ihvp_lissa(jax.random.PRNGKey(1), obj, (x, y), v[0], damping=0.5, scale=1.5 * lam, depth=2000)
    np.testing.assert_allclose(np.asarray(lis), ref[0], atol=1e-8)
    # stochastic mini-batch LiSSA: unbiased Hessian samples, averaged recursions land near the answer
    lis_mb = influence.ihvp_lissa(jax.random.PRNGKey(2), obj, (x, y), v[0], damping=0.5, scale=3 * lam, depth=400, batch_size=10, repeats=8)
    assert np.linalg.norm(np.asarray(lis_mb) - ref[0]) < 0.15 * np.linalg.norm(ref[0])


def test_logistic_influence_agrees_with_exact_loo(x64, logistic):
    x, y, xt, yt = logistic.data(3, n=40)
    fit_logistic, logistic_loss = logistic.fit, logistic.loss
    l2 = 0.05
    p = fit_logistic(x, y, l2)
    obj = influence.objective(logistic_loss, p, l2=l2)
    infl = influence.influence_loss(obj, (x, y), (xt, yt))
    approx = np.asarray(influence.influence_loo(infl, x.shape[0]))
    exact = np.asarray(valuation.loo_newton(logistic_loss, p, (x, y), (xt, yt), l2=l2, steps=5))
    r = np.corrcoef(approx, exact)[0, 1]
    assert r >= 0.95, r
    lis = influence.influence_loss(obj, (x, y), (xt, yt), method="lissa", key=jax.random.PRNGKey(0), lissa={"scale": 2.0, "depth": 2000})
    np.testing.assert_allclose(np.asarray(lis), np.asarray(infl), atol=1e-6)


def test_validation():
    x, y, xt, yt = _ridge_data(0)
    obj = influence.objective(sq_loss, {"w": jnp.zeros(4)})
    with pytest.raises(TypeError, match="loss_fn"):
        influence.objective("nope", {"w": jnp.zeros(4)})
    with pytest.raises(ValueError, match="l2"):
        influence.objective(sq_loss, {"w": jnp.zeros(4)}, l2=-1.0)
    with pytest.raises(ValueError, match="v"):
        influence.ihvp_cg(obj, (x, y), np.zeros(3))
    with pytest.raises(TypeError, match="obj"):
        influence.ihvp_cg(sq_loss, (x, y), np.zeros(4))
    with pytest.raises(ValueError, match="damping"):
        influence.ihvp_cg(obj, (x, y), np.zeros(4), damping=-1.0)
    with pytest.raises(ValueError, match="scale"):
        influence.ihvp_lissa(jax.random.PRNGKey(0), obj, (x, y), np.zeros(4), scale=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        influence.ihvp_lissa(jax.random.PRNGKey(0), obj, (x, y), np.zeros(4), batch_size=100)
    with pytest.raises(ValueError, match="method"):
        influence.influence_loss(obj, (x, y), (xt, yt), method="exact")
    with pytest.raises(ValueError, match="key"):
        influence.influence_loss(obj, (x, y), (xt, yt), method="lissa")
    with pytest.raises(ValueError, match="expected equal sizes"):
        influence.influence_params(obj, (x, y[:3]))
    with pytest.raises(ValueError, match="n"):
        influence.influence_loo(np.zeros(3), 0)


def _sharded_equals_single():
    jax.config.update("jax_enable_x64", True)
    from distill.parallel import make_mesh

    x, y, xt, yt = _ridge_data(5, n=19)  # the child process has no fixtures: the local ridge problem
    p = {"w": _ridge_fit(x, y, 0.1)}
    obj = influence.objective(sq_loss, p, l2=0.1)
    a = np.asarray(influence.influence_loss(obj, (x, y), (xt, yt), per_test=True))
    b = np.asarray(influence.influence_loss(obj, (x, y), (xt, yt), per_test=True, mesh=make_mesh()))
    assert a.shape == (19, 6) and np.ptp(a) > 1e-4
    np.testing.assert_allclose(a, b, atol=1e-10)


def test_sharded_equals_single_device(multidevice):
    multidevice(_sharded_equals_single)


def test_lissa_refuses_a_scale_below_lambda_max(x64):
    # s ≤ λ_max(H + δI): the series diverges (to inf at this depth) — refused, with the estimate.
    x, y, _, _ = _ridge_data(2, n=30, d=5)
    obj = influence.objective(sq_loss, {"w": jnp.zeros(5)}, l2=0.0)
    lam = np.linalg.eigvalsh(x.T @ x / len(x) + 0.5 * np.eye(5)).max()
    with pytest.raises(ValueError, match=rf"scale: LiSSA needs scale > λ_max\(H \+ δI\) ≈ {lam:.4g}"):
        influence.ihvp_lissa(jax.random.PRNGKey(1), obj, (x, y), np.ones(5), damping=0.5, scale=0.5 * lam, depth=2000)
