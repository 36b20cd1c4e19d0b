"""identity and Farzi's latent factorization."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import parametrize

pytestmark = pytest.mark.x64  # compares to 1e-6 and tighter


def test_identity_round_trip():
    p = parametrize.identity()
    data = (np.arange(6, dtype=np.int32).reshape(2, 3), np.ones((2, 4)))
    params = p.init(jax.random.PRNGKey(0), data)
    assert jnp.issubdtype(params[0].dtype, jnp.floating)
    out = p.materialize(params, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(out[0], data[0])
    with pytest.raises(ValueError, match="data"):
        p.init(jax.random.PRNGKey(0), np.array([np.nan]))


def test_latent_factorization_is_softmax_of_product():
    p = parametrize.latent_factorization(3, 5, 4, 7, tau=0.5)
    params = p.init(jax.random.PRNGKey(0))
    assert params.z.shape == (3, 5, 4) and params.m.shape == (4, 7)
    d = p.materialize(params, jax.random.PRNGKey(1))
    z, m = np.asarray(params.z), np.asarray(params.m)
    logits = np.einsum("sld,dv->slv", z, m) / 0.5
    ref = np.exp(logits - logits.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(d, ref, rtol=1e-12)
    np.testing.assert_allclose(d.sum(-1), 1.0, rtol=1e-12)
    g = jax.grad(lambda q: jnp.sum(p.materialize(q, None)[..., 0]))(params)
    assert np.all(np.isfinite(g.z)) and np.abs(g.m).sum() > 0


def test_latent_factorization_bad_input():
    with pytest.raises(ValueError, match="n_seqs"):
        parametrize.latent_factorization(0, 5, 4, 7)
    with pytest.raises(ValueError, match="tau"):
        parametrize.latent_factorization(1, 5, 4, 7, tau=0.0)
    with pytest.raises(ValueError, match="vocab_size"):
        parametrize.latent_factorization(1, 5, 4, 1)
