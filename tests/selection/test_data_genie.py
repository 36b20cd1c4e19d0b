"""DATA-GENIE: the 53-dim embedding against brute force, Φ training, P@1 and baselines."""

import jax
import numpy as np
import pytest
import scipy.sparse.csgraph as csgraph

from distill import data as D
from selection import data_genie as G


def _toy():
    # Two components: users 0-2 × items 0-3 and users 3-4 × items 4-5.
    pairs = [(0, 0), (0, 1), (1, 1), (1, 2), (2, 3), (2, 0), (3, 4), (4, 4), (4, 5)]
    p = np.array(pairs)
    return D.from_arrays(p[:, 0], p[:, 1])


def test_embedding_matches_brute_force():
    inter = _toy()
    e = G.embed(inter, n_sources=1000)
    assert e.shape == (G.EMBED_DIM,) == (53,)
    b = np.zeros((5, 6))
    b[inter.users, inter.items] = 1
    ufreq = np.sort(b.sum(1))[::-1]
    np.testing.assert_allclose(e[:10], np.log1p(ufreq[np.round(np.linspace(0, 4, 10)).astype(int)]))
    adj = np.block([[np.zeros((5, 5)), b], [b.T, np.zeros((6, 6))]])
    ev = np.sort(np.linalg.eigvalsh(adj))[::-1][:5]  # positive half = singular values
    sv = np.linalg.svd(b, compute_uv=False)
    np.testing.assert_allclose(ev, sv, atol=1e-9)
    np.testing.assert_allclose(e[20:30], np.log1p(sv[np.round(np.linspace(0, 4, 10)).astype(int)]), atol=1e-7)
    dist = csgraph.shortest_path(adj, unweighted=True, directed=False)
    hops = [(dist <= h).mean() for h in range(1, 11)]
    np.testing.assert_allclose(e[30:40], hops)
    np.testing.assert_allclose(e[40:42], [7 / 11, 4 / 11])
    np.testing.assert_allclose(e[42:50], 0)
    np.testing.assert_allclose(e[50:], np.log1p([5, 6, 9]))


def test_embedding_of_sample_equals_embedding_of_subset():
    inter = D.to_implicit(_toy())
    mask = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1], bool)
    sub = D.from_arrays(inter.users[mask], inter.items[mask])
    np.testing.assert_allclose(G.embed(inter, mask, n_sources=100), G.embed(sub, n_sources=100))


def test_features_layout():
    f = np.ones((3, 53))
    x = G.features(f, 2 * f, np.array([0, 2, 1]), 3)
    assert x.shape == (3, 109)
    np.testing.assert_array_equal(x[:, 106:], np.eye(3)[[0, 2, 1]])


def _synthetic(seed=0, n_groups=100, n_samplers=6):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n_groups * n_samplers, 53))
    # τ depends on one feature of the sample embedding: learnable by Φ.
    tau = np.tanh(emb[:, 5])
    x = G.features(np.zeros_like(emb), emb, np.zeros(len(emb), int), 1)
    groups = np.repeat(np.arange(n_groups), n_samplers)
    return x, tau.astype(np.float32), groups


@pytest.mark.parametrize("mode", ["regression", "ranking"])
def test_phi_learns_and_beats_random(mode):
    x, tau, groups = _synthetic()
    genie, hist = G.fit(jax.random.key(0), x, tau, groups, mode=mode, steps=400, hidden=32)
    assert hist.steps == list(range(400)) and hist.best_step == -1
    assert hist.losses[-1] < 0.2 * hist.losses[0]
    xt, tt, gt = _synthetic(seed=1)
    pred = G.predict(genie, xt)
    assert G.precision_at_1(pred, tt, gt) > G.random_p_at_1(tt, gt) + 0.3
    if mode == "regression":
        assert np.all(np.abs(pred) <= 1.0)  # tanh head


def test_p_at_1_brute_force():
    tau = np.array([0.1, 0.5, 0.5, 0.9, 0.2, np.nan])
    groups = np.array([0, 0, 0, 1, 1, 1])
    score = np.array([0.0, 1.0, 0.0, 0.0, 1.0, 2.0])
    # group 0: top = row 1 (τ 0.5 = best, tie) → hit; group 1: top = row 5 (NaN) → miss.
    assert G.precision_at_1(score, tau, groups) == 0.5
    assert G.random_p_at_1(tau, groups) == pytest.approx((2 / 3 + 1 / 3) / 2)
    samplers = np.array(["a", "b", "c", "a", "b", "c"])
    assert G.static_p_at_1(samplers, tau, groups, "b") == 0.5
    assert G.static_p_at_1(samplers, tau, groups, "a") == 0.5


def test_validation():
    inter = _toy()
    with pytest.raises(ValueError, match="mask"):
        G.embed(inter, np.zeros(9, bool))
    with pytest.raises(TypeError, match="mask"):
        G.embed(inter, np.zeros(9))
    with pytest.raises(ValueError, match="mask"):
        G.embed(inter, np.ones(4, bool))
    with pytest.raises(ValueError, match="metric"):
        G.features(np.ones((2, 53)), np.ones((2, 53)), np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="full_emb"):
        G.features(np.ones((2, 52)), np.ones((2, 53)), np.array([0, 1]), 3)
    x, tau, groups = _synthetic()
    with pytest.raises(ValueError, match="mode"):
        G.fit(jax.random.key(0), x, tau, groups, mode="xgboost")
    with pytest.raises(ValueError, match="tau"):
        G.fit(jax.random.key(0), x, np.full_like(tau, np.nan), groups)
    with pytest.raises(ValueError, match="tau"):
        G.fit(jax.random.key(0), x, np.zeros_like(tau), groups, mode="ranking")
    with pytest.raises(TypeError, match="genie"):
        G.predict(None, x)
    with pytest.raises(ValueError, match="tau"):
        G.precision_at_1(np.zeros(3), np.zeros(4), np.zeros(3, int))
