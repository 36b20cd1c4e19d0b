"""Farzi's popularity / mix initialisations and the Ω sampling weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import farzi, parametrize

V, PAD = 60, 60


def _tokens():
    rng = np.random.default_rng(0)
    tok = (rng.zipf(1.4, (30, 21)) - 1) % V
    tok[:4, :8] = PAD
    return tok


def test_popularity_counts_exclude_padding():
    tok = np.array([[0, 0, 1, 5], [5, 2, 0, 5]])
    np.testing.assert_allclose(farzi.popularity(tok, 5, pad_id=5), (np.array([3, 1, 1, 0, 0]) + 1) / 10)


@pytest.mark.parametrize("d", [1, 8])
def test_popularity_init_is_exact_at_any_rank(d):
    tok = _tokens()
    syn = farzi.fit_factors(jax.random.key(0), farzi.target_logits(jax.random.key(1), tok, n_seqs=3, seq_len=20,
                                                                   vocab_size=V, alpha=0.0, pad_id=PAD),
                            latent_dim=d, tau=0.5, noise=0.0)
    data = parametrize.latent_factorization(3, 20, d, V, tau=0.5).materialize(syn, jax.random.key(0))
    want = np.broadcast_to(farzi.popularity(tok, V, pad_id=PAD), (3, 20, V))
    np.testing.assert_allclose(np.asarray(data), want, rtol=1e-4, atol=1e-6)


def test_mix_target_and_rank_d_fit_is_least_squares():
    tok = _tokens()
    alpha = 0.6
    lg = farzi.target_logits(jax.random.key(1), tok, n_seqs=3, seq_len=20, vocab_size=V, alpha=alpha, pad_id=PAD)
    q = np.exp(lg)
    np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-12)
    pop = farzi.popularity(tok, V, pad_id=PAD)
    peak = q.argmax(-1)
    np.testing.assert_allclose(q.max(-1), alpha + (1 - alpha) * pop[peak], rtol=1e-12)  # fullest rows: no padding
    # Eckart-Young: the fitted centred logits are the best rank-d approximation (error = tail singular values).
    d = 8
    syn = farzi.fit_factors(jax.random.key(0), lg, latent_dim=d, noise=0.0)
    got = np.einsum("sld,dv->slv", np.asarray(syn.z, np.float64), np.asarray(syn.m, np.float64)).reshape(-1, V)
    centred = (lg - lg.mean(-1, keepdims=True)).reshape(-1, V)
    sv = np.linalg.svd(centred, compute_uv=False)
    np.testing.assert_allclose(np.linalg.norm(got - centred), np.sqrt(np.sum(sv[d:] ** 2)), rtol=1e-4)
    # Both factors on the same scale.
    assert 0.2 < float(jnp.linalg.norm(syn.z)) / float(jnp.linalg.norm(syn.m)) < 5.0


def test_initial_factors_popularity_and_mix_through_distill_keys():
    tok = _tokens()
    kw = dict(n_seqs=3, seq_len=20, latent_dim=8, vocab_size=V, pad_id=PAD)
    pop_f = farzi.initial_factors(jax.random.key(0), tok, init="popularity", **kw)
    data = parametrize.latent_factorization(3, 20, 8, V).materialize(pop_f, jax.random.key(0))
    # The unused directions carry N(0, 0.1²) entries (not a saddle at 0): data ≈ popularity.
    np.testing.assert_allclose(np.asarray(data), np.broadcast_to(farzi.popularity(tok, V, pad_id=PAD), data.shape),
                               atol=0.02)
    assert float(jnp.abs(pop_f.z[..., 1:]).max()) > 0
    mix = farzi.initial_factors(jax.random.key(0), tok, init="mix", init_mix=0.9, **kw)
    d_mix = parametrize.latent_factorization(3, 20, 8, V).materialize(mix, jax.random.key(0))
    assert float(d_mix.max(-1).mean()) > float(data.max(-1).mean())  # peakier than popularity
    with pytest.raises(ValueError, match="alpha"):
        farzi.initial_factors(jax.random.key(0), tok, init="mix", init_mix=1.5, **kw)


def test_early_weights_and_bad_omega_weights():
    w = farzi.early_weights([0, 100, 200, 0, 100, 200], half_life=100)
    np.testing.assert_allclose(w, np.array([4, 2, 1, 4, 2, 1]) / 14)
    with pytest.raises(ValueError, match="steps"):
        farzi.early_weights([], half_life=1.0)
    # Weights must match |Ω| and be non-negative.
    from models.model_fns import ModelFns

    model = ModelFns(lambda k, x: {"w": jnp.zeros(())}, lambda p, x: jnp.zeros(x.shape[:2] + (3,)) + p["w"])
    batch = farzi.Batch(jnp.zeros((2, 3), jnp.int32), {"w": jnp.arange(3.0)})
    syn = parametrize.LatentFactors(jnp.zeros((1, 2, 1)), jnp.zeros((1, 3)))
    settings = farzi.Settings(model=model, n_seqs=1, seq_len=2, latent_dim=1, inner_steps=1,
                              omega_weights=(1.0, -1.0, 0.0))
    with pytest.raises(ValueError, match="settings.omega_weights"):
        farzi.objective(syn, batch, jax.random.key(0), settings)
