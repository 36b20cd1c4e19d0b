"""∞-AE against the neural-tangents golden case, jax.grad vs finite differences,
the X − λ'α identity used by the λ sweep, and brute-force grid search."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import parallel
from models import infinite_ae, kernels

pytestmark = pytest.mark.x64  # compares to 1e-6 and tighter

GOLDEN = json.loads(
    (pathlib.Path(__file__).resolve().parents[1] / "data" / "ntk_golden.json").read_text()
)["infinite_ae"]


@pytest.mark.parametrize("case", GOLDEN)
def test_matches_golden(case):
    spec = kernels.KernelSpec(depth=case["depth"], w_std=case["w_std"], b_std=case["b_std"])
    params = infinite_ae.fit(np.array(case["x_train"]), lam=case["lam"], spec=spec)
    scores = infinite_ae.predict(params, np.array(case["x_query"]))
    np.testing.assert_allclose(scores, case["scores"], rtol=1e-6, atol=1e-12)
    for block_size in (None, 2, 5, 64):  # whole, ragged blocks, one block
        np.testing.assert_allclose(
            infinite_ae.predict(params, np.array(case["x_query"]), block_size=block_size),
            case["scores"],
            rtol=1e-6,
        )


def _data(seed=0, n=10, items=15, density=0.3):
    rng = np.random.default_rng(seed)
    return (rng.random((n, items)) < density).astype(np.float64)


def test_alpha_solves_the_regularised_system():
    x = _data()
    p = infinite_ae.fit(x, lam=0.7)
    k = np.asarray(kernels.fc_relu(x).ntk)
    reg = k + 0.7 * np.trace(k) / len(k) * np.eye(len(k))
    np.testing.assert_allclose(reg @ np.asarray(p.alpha), x, atol=1e-10)


def test_differentiable_in_x_train_matches_finite_differences():
    x = jnp.asarray(_data(1, n=6, items=8, density=0.5)) * 0.8 + 0.1  # soft support
    q = jnp.asarray(_data(2, n=4, items=8))
    w = jnp.asarray(np.random.default_rng(3).normal(size=(4, 8)))

    def loss(x):
        return jnp.sum(w * jax.nn.log_softmax(infinite_ae.predict(infinite_ae.fit(x, lam=0.5), q)))

    g = jax.jit(jax.grad(loss))(x)
    eps, loss_jit = 1e-6, jax.jit(loss)  # compiled once: 96 evaluations
    fd = np.zeros(x.shape)
    for idx in np.ndindex(*x.shape):
        e = np.zeros(x.shape)
        e[idx] = eps
        fd[idx] = (loss_jit(x + e) - loss_jit(x - e)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-8)


def test_gradient_finite_with_duplicate_binary_rows():
    x = jnp.asarray(np.array([[1.0, 0, 1, 0], [1.0, 0, 1, 0], [0, 1.0, 0, 1]]))
    g = jax.grad(lambda x: jnp.sum(infinite_ae.predict(infinite_ae.fit(x, lam=1.0), x) ** 2))(x)
    assert np.all(np.isfinite(g))


def test_train_scores_identity_and_eig_fallback():
    """K(K+λ'I)⁻¹X = X − λ'α, and the spectral form gives the same scores and α."""
    x = jnp.asarray(_data(4))
    k = kernels.fc_relu(x).ntk
    eig = infinite_ae._eigen(k, x)
    for lam in (1e-3, 1.0, 50.0):
        p = infinite_ae.fit(x, lam=lam)
        direct = infinite_ae.predict(p, x)
        scores, alpha = infinite_ae._train_fit(k, x, lam)
        np.testing.assert_allclose(scores, direct, atol=1e-9)
        np.testing.assert_allclose(alpha, p.alpha, rtol=1e-12)
        np.testing.assert_allclose(infinite_ae._train_scores_eig(eig, x, lam), direct, atol=1e-9)
        np.testing.assert_allclose(infinite_ae._alpha_eig(eig, lam), p.alpha, rtol=1e-7, atol=1e-9)


def test_bad_input():
    x = _data()
    with pytest.raises(ValueError, match="lam"):
        infinite_ae.fit(x, lam=-1.0)
    with pytest.raises(ValueError, match="x_train"):
        infinite_ae.fit(np.ones(4), lam=1.0)
    with pytest.raises(ValueError, match="x_train"):
        infinite_ae.fit(np.full((2, 2), np.nan), lam=1.0)
    with pytest.raises(ValueError, match="depth"):
        infinite_ae.fit(x, lam=1.0, spec=kernels.KernelSpec(depth=-2))
    with pytest.raises(TypeError, match="spec"):
        infinite_ae.fit(x, lam=1.0, spec=(1, 2.0, 0.1))
    p = infinite_ae.fit(x, lam=1.0)
    with pytest.raises(ValueError, match="x_query"):
        infinite_ae.predict(p, np.ones((2, 3)))
    with pytest.raises(TypeError, match="params"):
        infinite_ae.predict((p.support, p.alpha), x)


def _sharded_fit_equals_single():
    jax.config.update("jax_enable_x64", True)
    mesh = parallel.make_mesh()
    x = _data(5, n=21, items=12)
    single = infinite_ae.predict(infinite_ae.fit(x, lam=1.0), x[:9])
    p = infinite_ae.fit(x, lam=1.0, mesh=mesh)
    sharded = infinite_ae.predict(p, x[:9], block_size=2, mesh=mesh)
    np.testing.assert_allclose(sharded, single, rtol=1e-10, atol=1e-12)


def test_sharded_fit_on_8_devices(multidevice):
    multidevice(_sharded_fit_equals_single)


def test_spectral_path_equals_fit_predict():
    """The eigen-decomposed λ path gives the Cholesky fit's scores for every λ."""
    support, queries = _data(6, n=7, items=12), _data(7, n=5, items=12)
    path = infinite_ae.spectral_path(support, queries, spec=kernels.KernelSpec(depth=2))
    for lam in (1e-3, 0.5, 20.0):
        direct = infinite_ae.predict(infinite_ae.fit(support, lam=lam, spec=kernels.KernelSpec(depth=2)), queries)
        np.testing.assert_allclose(infinite_ae.spectral_scores(path, lam), direct, rtol=1e-7, atol=1e-10)
    with pytest.raises(ValueError, match="lam"):
        infinite_ae.spectral_scores(path, 0.0)
    with pytest.raises(ValueError, match="queries"):
        infinite_ae.spectral_path(support, np.ones((2, 3)))
