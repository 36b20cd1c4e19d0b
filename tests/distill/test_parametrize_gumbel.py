"""gumbel_multisample: custom VJP == autodiff of the naive version, range, sparsity, memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import parametrize as P


@pytest.mark.parametrize(
    "noise,tau,n_samples,block_rows",
    [("hash", 0.3, 1, None), ("hash", 1.0, 7, None), ("threefry", 5.0, 20, None), ("hash", 1.0, 7, 2)],
)
def test_custom_vjp_equals_naive_grad(x64, monkeypatch, noise, tau, n_samples, block_rows):
    if block_rows is not None:  # 5 rows in blocks of 2: the last block overlaps the previous one
        monkeypatch.setattr(P, "_BLOCK_BYTES", block_rows * 11 * 8)
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(5, 11)) * 2.0)
    weights = jnp.asarray(rng.normal(size=(5, 11)))
    key = jax.random.key(3)

    def loss(g, custom):
        par = P.gumbel_multisample(5, 11, n_samples=n_samples, tau=tau, custom_vjp=custom, noise=noise)
        x = par.materialize(g, key)
        return jnp.sum(weights * x) + jnp.sum(jnp.sin(3.0 * x))

    vg = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    v_c, g_c = vg(logits, True)
    v_n, g_n = vg(logits, False)
    assert g_c.dtype == jnp.float64
    np.testing.assert_allclose(v_c, v_n, rtol=1e-12)
    np.testing.assert_allclose(g_c, g_n, atol=1e-6, rtol=0)
    assert float(jnp.max(jnp.abs(g_n))) > 1e-3  # a non-trivial gradient was compared


def test_sum_is_gamma_rows_and_summary_in_unit_interval():
    par = P.gumbel_multisample(6, 40, n_samples=9, tau=0.5)
    logits = par.init(None, jnp.asarray(np.random.default_rng(1).integers(0, 2, (6, 40)), jnp.float32))
    total = P.multisample_gumbel_sum(logits, jax.random.key(0), n_samples=9, tau=0.5)
    np.testing.assert_allclose(jnp.sum(total, axis=1), 9.0, rtol=1e-5)
    x = par.materialize(logits, jax.random.key(0))
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    np.testing.assert_allclose(x, jnp.minimum(total, 1.0), rtol=1e-6)


def _nnz(tau, n_samples, logits):
    x = P.gumbel_multisample(*logits.shape, n_samples=n_samples, tau=tau).materialize(
        logits, jax.random.key(7)
    )
    return float(jnp.mean(jnp.sum(x > 0.05, axis=1)))


def test_sparsity_grows_as_tau_and_gamma_fall():
    logits = jnp.asarray(np.random.default_rng(2).normal(size=(20, 300)), jnp.float32)
    by_tau = [_nnz(t, 30, logits) for t in (5.0, 1.0, 0.3, 0.1)]
    by_gamma = [_nnz(0.1, g, logits) for g in (200, 50, 10, 2)]
    assert all(a > b for a, b in zip(by_tau, by_tau[1:], strict=False)), by_tau
    assert all(a > b for a, b in zip(by_gamma, by_gamma[1:], strict=False)), by_gamma
    assert by_gamma[-1] < 4.0  # τ small: about γ items per row (soft samples may split)
    assert by_tau[0] > 250  # τ large: dense


def test_hash_noise_is_gumbel_and_key_dependent():
    rows = jnp.arange(400)
    g = P._hash_gumbel(jax.random.key(0), rows, 500, jnp.float32)
    assert abs(float(g.mean()) - 0.5772) < 0.01
    assert abs(float(g.var()) - np.pi**2 / 6) < 0.02
    g2 = P._hash_gumbel(jax.random.key(1), rows, 500, jnp.float32)
    assert abs(float(jnp.corrcoef(g.ravel(), g2.ravel())[0, 1])) < 0.01
    assert bool(jnp.all(jnp.isfinite(g)))


def _temp_bytes(n_samples, custom):
    par = P.gumbel_multisample(32, 512, n_samples=n_samples, tau=1.0, custom_vjp=custom)
    grad = jax.grad(lambda g, k: jnp.sum(par.materialize(g, k) ** 2))
    args = (jnp.zeros((32, 512)), jax.random.key(0))
    return jax.jit(grad).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_custom_vjp_memory_independent_of_gamma():
    ours = [_temp_bytes(g, True) for g in (8, 64)]
    naive = [_temp_bytes(g, False) for g in (8, 64)]
    assert ours[1] <= 1.2 * ours[0], ours
    assert naive[1] > 4 * naive[0], naive
    assert ours[1] < naive[1]


def _gumbel_sharded_equals_one_device():
    jax.config.update("jax_enable_x64", True)
    from distill import parallel

    mesh = parallel.make_mesh()
    assert mesh.size == 8
    rng = np.random.default_rng(4)
    logits = jnp.asarray(rng.normal(size=(13, 37)) * 2.0)  # 13 rows: ragged over 8 devices
    weights = jnp.asarray(rng.normal(size=(13, 37)))
    key = jax.random.key(5)
    for noise, custom in (("hash", True), ("threefry", True), ("hash", False)):
        def loss(g, m, noise=noise, custom=custom):
            s = P.multisample_gumbel_sum(g, key, n_samples=7, tau=0.7, noise=noise, custom_vjp=custom, mesh=m)
            return jnp.sum(weights * jnp.tanh(s)), s

        (v1, s1), g1 = jax.jit(jax.value_and_grad(lambda g: loss(g, None), has_aux=True))(logits)
        (v8, s8), g8 = jax.jit(jax.value_and_grad(lambda g: loss(g, mesh), has_aux=True))(logits)
        np.testing.assert_allclose(s8, s1, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(g8, g1, rtol=1e-10, atol=1e-13)
        assert float(jnp.max(jnp.abs(g1))) > 1e-3
        # a row's samples do not depend on the other rows (global-index noise)
        s_sub = P.multisample_gumbel_sum(logits[:3], key, n_samples=7, tau=0.7, noise=noise, custom_vjp=custom)
        np.testing.assert_allclose(s_sub, s1[:3], rtol=1e-12)


@pytest.mark.slow
def test_sharded_rows_equal_one_device(multidevice):
    multidevice(_gumbel_sharded_equals_one_device)


def test_bad_inputs():
    with pytest.raises(ValueError, match="n_samples"):
        P.gumbel_multisample(3, 4, n_samples=0, tau=1.0)
    with pytest.raises(ValueError, match="tau"):
        P.gumbel_multisample(3, 4, n_samples=2, tau=0.0)
    with pytest.raises(TypeError, match="n_syn_users"):
        P.gumbel_multisample(3.0, 4, n_samples=2, tau=1.0)
    with pytest.raises(ValueError, match="noise"):
        P.gumbel_multisample(3, 4, n_samples=2, tau=1.0, noise="philox")
    par = P.gumbel_multisample(3, 4, n_samples=2, tau=1.0)
    with pytest.raises(ValueError, match="real_rows"):
        par.init(None, jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="logits"):
        par.materialize(jnp.zeros((3, 5)), jax.random.key(0))
    with pytest.raises(TypeError, match="logits"):
        P.multisample_gumbel_sum(jnp.zeros((3, 4), jnp.int32), jax.random.key(0), n_samples=2, tau=1.0)
