"""DENSITY: the LSH sketch estimates the exact KDE; IPS flattens the sample."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import ndtr
from scipy.stats import spearmanr

from selection import density


def _blobs(seed=0):
    rng = np.random.default_rng(seed)
    parts = [rng.normal(size=(200, 2)) * 0.5 + c for c in [(0, 0), (4, 4), (-4, 3)]]
    parts.append(rng.normal(size=(40, 2)) * 2.0)  # sparse background
    return np.concatenate(parts).astype(np.float32)


def _kernel_sum(x, width, n_concat):
    """``Σ_j p(‖x_i − x_j‖)^K`` by hand (numpy, float64), with Datar et al.'s ``p(c)``."""
    d = np.sqrt(((x[:, None].astype(np.float64) - x[None]) ** 2).sum(-1))
    r = width / np.maximum(d, 1e-30)
    p = 1 - 2 * ndtr(-r) - 2 / (np.sqrt(2 * np.pi) * r) * (1 - np.exp(-(r**2) / 2))
    return (np.where(d > 0, p, 1.0) ** n_concat).sum(1)


def test_lsh_score_rank_correlates_with_exact_kde():
    x = _blobs()
    w = density.default_width(jax.random.PRNGKey(0), jnp.asarray(x))
    s = np.asarray(density.density_scores(jax.random.PRNGKey(0), x, n_rows=256, n_concat=2, width=w))
    # one compiled program instead of one per eager op
    exact = np.asarray(jax.jit(density.exact_kernel_sum, static_argnums=(1, 2))(x, w, 2))
    # float32 distances from ‖a‖² − 2aᵀb + ‖b‖² lose digits at small separations: 2e-5 relative
    np.testing.assert_allclose(exact, _kernel_sum(x, w, 2), rtol=1e-4)
    assert spearmanr(s, exact).correlation >= 0.9
    assert abs(float(np.mean(s / exact)) - 1) < 0.1  # unbiased up to bucket folding
    # also ranks like a Gaussian KDE of the same scale
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    gauss = np.exp(-d2 / (2 * (w / 2) ** 2)).sum(1)
    assert spearmanr(s, gauss).correlation >= 0.9


def test_collision_probability_is_a_decreasing_kernel():
    # distances 0..10, then 1 for the Monte-Carlo check: one jitted call, one compilation
    d = np.append(np.linspace(0.0, 10.0, 50), 1.0).astype(np.float32)
    p_all = np.asarray(jax.jit(density.collision_probability, static_argnums=1)(d, 1.0))
    p, p1 = p_all[:-1], float(p_all[-1])
    assert float(p[0]) == 1.0 and np.all(np.diff(p) <= 1e-7) and float(p[-1]) < 0.1
    # Monte-Carlo check of the formula at distance 1, width 1
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=200_000), rng.uniform(size=200_000)
    mc = np.mean(np.floor(b) == np.floor(a * 1.0 + b))
    np.testing.assert_allclose(p1, float(mc), atol=5e-3)


def test_ips_sample_flattens_density():
    x = _blobs()
    frac = [
        np.mean(density.density_sample(jax.random.PRNGKey(s), x, 120, n_rows=128, n_concat=3, width=1.0) >= 600)
        for s in range(3)
    ]
    assert np.mean(frac) > 0.18  # 40 of 640 points (6%) are background; IPS triples their share


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="embeddings"):
        density.density_scores(jax.random.PRNGKey(0), np.ones(5, np.float32))
    with pytest.raises(ValueError, match="width"):
        density.density_scores(jax.random.PRNGKey(0), np.ones((5, 2), np.float32), width=0.0)
    with pytest.raises(ValueError, match="n_rows"):
        density.density_scores(jax.random.PRNGKey(0), np.ones((5, 2), np.float32), n_rows=0)
