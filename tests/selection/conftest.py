"""Fixtures shared by the selection tests.

``logistic``: a small L2-regularised logistic-regression problem (data, per-batch loss,
and an exact scipy BFGS fit, optionally with per-example weights for brute-force LOO
refits), used by the LOO (``test_valuation.py``) and influence (``test_influence.py``)
tests. Child interpreters of the ``multidevice`` fixture see no fixtures, so their
functions use problems defined in their own module.
"""

from __future__ import annotations

from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize


def _logistic_data(seed, n=30, d=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x @ np.array([1.5, -1.0, 0.5])[:d] + 0.8 * rng.normal(size=n) > 0).astype(np.float64)
    xt = rng.normal(size=(15, d))
    yt = (xt @ np.array([1.5, -1.0, 0.5])[:d] > 0).astype(np.float64)
    return x, y, xt, yt


def _logistic_loss(params, batch):
    x, y = batch
    z = x @ params["w"] + params["b"]
    return jnp.mean(jnp.logaddexp(0.0, z) - y * z)


def _fit_logistic(x, y, l2, w=None):
    """argmin_θ Σᵢ wᵢ ℓ(θ; xᵢ, yᵢ) / Σᵢ wᵢ + (l2/2)‖θ‖² by BFGS to gtol 1e-12."""
    w = np.ones(len(x)) if w is None else w

    def f(p):
        z = x @ p[:-1] + p[-1]
        return np.sum(w * (np.logaddexp(0, z) - y * z)) / w.sum() + 0.5 * l2 * np.sum(p**2)

    def g(p):
        z = x @ p[:-1] + p[-1]
        r = w * (1 / (1 + np.exp(-z)) - y) / w.sum()
        return np.concatenate([x.T @ r, [r.sum()]]) + l2 * p

    res = scipy.optimize.minimize(f, np.zeros(x.shape[1] + 1), jac=g, method="BFGS", options={"gtol": 1e-12})
    return {"w": jnp.asarray(res.x[:-1]), "b": jnp.asarray(res.x[-1])}


@pytest.fixture
def logistic():
    """``.data(seed, n=30, d=3) -> (x, y, xt, yt)``, ``.loss(params, batch)``, ``.fit(x, y, l2, w=None)``."""
    return SimpleNamespace(data=_logistic_data, loss=_logistic_loss, fit=_fit_logistic)
