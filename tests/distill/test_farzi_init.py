"""Farzi's real-sequence initialisation: D_syn peaks at the chosen real items."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import farzi, parametrize


def _tokens(n=40, width=31, vocab=300, pad=300, seed=0):
    rng = np.random.default_rng(seed)
    tok = rng.integers(0, vocab, (n, width))
    lengths = rng.integers(5, width + 1, n)
    lengths[:6] = width  # six rows without padding
    for i, ln in enumerate(lengths):
        tok[i, : width - ln] = pad
    return tok, lengths


@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_init_peaks_at_real_items_of_fullest_rows(tau):
    tok, lengths = _tokens()
    mu, xi, d, vocab = 4, 30, 64, 300
    syn = farzi.init_from_tokens(jax.random.key(0), tok, n_seqs=mu, seq_len=xi, latent_dim=d, vocab_size=vocab,
                                 tau=tau, logit=10.0, pad_id=300)
    param = parametrize.latent_factorization(mu, xi, d, vocab, tau=tau)
    data = param.materialize(syn, jax.random.key(1))
    assert data.shape == (mu, xi, vocab)
    # Every chosen window is a window without padding, reproduced item by item.
    top = np.asarray(jnp.argmax(data, -1))
    full = [w for w in tok[:, -xi:] if (w != 300).all()]
    assert len(full) >= 6
    assert all(any((row == f).all() for f in full) for row in top)
    assert len({tuple(r) for r in top}) == mu  # distinct rows
    # The real item's logit is exactly 10 (so its probability is high, not 1).
    logits = np.asarray(jnp.einsum("sld,dv->slv", syn.z, syn.m)) / tau
    np.testing.assert_allclose(np.take_along_axis(logits, top[..., None], -1), 10.0, rtol=1e-4)
    # Z and M entries have the same scale (√(logit/d)·τ-free): Adam moves both alike.
    z_std, m_std = float(jnp.std(syn.z)) / tau, float(jnp.std(syn.m))
    assert 0.8 < z_std / m_std < 1.25 and abs(m_std - np.sqrt(10.0 / d)) < 0.05, (z_std, m_std)
    p_top = np.asarray(jnp.max(data, -1))
    assert 0.6 < p_top.mean() < 0.99, p_top.mean()


def test_init_pads_are_uniform_and_rows_repeat_when_few():
    tok, lengths = _tokens(n=3, width=12, vocab=50, pad=50)
    tok[:, :4] = 50
    syn = farzi.init_from_tokens(jax.random.key(0), tok, n_seqs=5, seq_len=10, latent_dim=32, vocab_size=50,
                                 logit=6.0, pad_id=50)
    data = parametrize.latent_factorization(5, 10, 32, 50).materialize(syn, jax.random.key(0))
    np.testing.assert_allclose(np.asarray(data[:, :2]), 1.0 / 50, rtol=1e-5)  # padded positions
    assert float(data[:, 2:].max(-1).min()) > 0.05


def test_init_bad_inputs():
    tok, _ = _tokens()
    kw = dict(n_seqs=2, seq_len=10, latent_dim=8, vocab_size=300, pad_id=300)
    with pytest.raises(ValueError, match="tokens"):
        farzi.init_from_tokens(jax.random.key(0), tok[:, :5], **kw)
    with pytest.raises(ValueError, match="tokens"):
        farzi.init_from_tokens(jax.random.key(0), tok, **{**kw, "vocab_size": 10})
    with pytest.raises(ValueError, match="logit"):
        farzi.init_from_tokens(jax.random.key(0), tok, logit=0.0, **kw)
