"""ClipCov: objective == definition, submodular; greedy variants vs brute-force OPT; picks aligned pairs."""

import itertools

import jax
import numpy as np
import pytest

from selection.clipcov import clipcov, clipcov_objective, cross_similarity, maximize
def _pairs(seed, n=10, d=4):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n, d))
    v = u + 0.8 * rng.normal(size=(n, d))
    return u, v


def test_cross_similarity_and_objective_definition(x64):
    u, v = _pairs(0)
    cs = np.asarray(cross_similarity(u, v))
    ref = (u / np.linalg.norm(u, axis=1, keepdims=True)) @ (v / np.linalg.norm(v, axis=1, keepdims=True)).T
    np.testing.assert_allclose(cs, ref, atol=1e-12)
    S = [1, 4, 7]
    direct = sum(cs[i, j] for i in range(10) for j in S) + sum(cs[i, i] for i in S)
    pen = sum(max(0.0, (cs[i, j] + cs[j, i]) / 2) for i, j in itertools.combinations(S, 2))
    np.testing.assert_allclose(clipcov_objective(cs, S), direct, atol=1e-10)
    np.testing.assert_allclose(clipcov_objective(cs, S, diversity=0.7), direct - 0.7 * pen, atol=1e-10)


def test_objective_is_submodular():
    u, v = _pairs(1, n=8)
    cs = np.asarray(cross_similarity(u, v))
    f = lambda s: clipcov_objective(cs, sorted(s), diversity=2.0)
    rng = np.random.default_rng(0)
    for _ in range(100):  # f(A+e) − f(A) ≥ f(B+e) − f(B) for A ⊆ B, e ∉ B
        b = set(rng.choice(8, 4, replace=False).tolist())
        a = set(list(b)[:2])
        e = int(rng.choice(sorted(set(range(8)) - b)))
        assert f(a | {e}) - f(a) >= f(b | {e}) - f(b) - 1e-12


def _opt(cs, k, diversity):
    best = 0.0
    sizes = range(1, cs.shape[0] + 1) if k is None else range(1, k + 1)
    for r in sizes:
        for s in itertools.combinations(range(cs.shape[0]), r):
            best = max(best, clipcov_objective(cs, s, diversity=diversity))
    return best


def test_modular_case_greedy_is_optimal():
    u, v = _pairs(2)
    v[:5] = -v[:5]  # flipped captions: negative weights, F is non-monotone
    cs = np.asarray(cross_similarity(u, v))
    for k in (2, 5, 8):
        picks = maximize(cs, k, method="greedy")
        np.testing.assert_allclose(clipcov_objective(cs, picks), _opt(cs, k, 0.0), atol=1e-9)
        assert len(picks) <= k


def test_randomised_methods_meet_their_guarantees():
    u, v = _pairs(3)
    cs = np.asarray(cross_similarity(u, v))
    lam = 3.0
    opt_k = _opt(cs, 4, lam)
    opt_free = _opt(cs, None, lam)
    rg = [clipcov_objective(cs, maximize(cs, 4, diversity=lam, key=jax.random.PRNGKey(s)), diversity=lam) for s in range(30)]
    dg = [clipcov_objective(cs, maximize(cs, None, diversity=lam, method="double_greedy", key=jax.random.PRNGKey(s)), diversity=lam) for s in range(30)]
    assert np.mean(rg) >= opt_k / np.e and max(rg) <= opt_k + 1e-9
    assert np.mean(dg) >= opt_free / 2 and max(dg) <= opt_free + 1e-9
    gr = clipcov_objective(cs, maximize(cs, 4, diversity=lam, method="greedy"), diversity=lam)
    assert gr >= opt_k / np.e


def test_clipcov_prefers_aligned_pairs_per_latent_class():
    rng = np.random.default_rng(4)
    centers = 4 * rng.normal(size=(3, 8))
    lab = np.repeat(np.arange(3), 30)
    u = centers[lab] + rng.normal(size=(90, 8))
    v = u + 0.3 * rng.normal(size=(90, 8))
    bad = rng.choice(90, 30, replace=False)
    v[bad] = v[rng.permutation(bad)] + 4 * rng.normal(size=(30, 8))  # mismatched captions
    res = clipcov(u, v, 15, n_classes=3, key=jax.random.PRNGKey(0))
    assert len(res.indices) == 15 and len(np.unique(res.latent)) == 3
    assert np.mean(np.isin(res.indices, bad)) < 0.1  # random would pick 1/3
    sizes = np.bincount(res.latent, minlength=3)
    picked = np.bincount(res.latent[res.indices], minlength=3)
    assert np.all(np.abs(picked - 15 * sizes / 90) <= 1)  # budgets ∝ class sizes
    res_dg = clipcov(u, v, None, latent=lab, method="double_greedy", key=jax.random.PRNGKey(0))
    assert len(res_dg.indices) > 0


def test_validation():
    u, v = _pairs(0)
    cs = np.asarray(cross_similarity(u, v))
    with pytest.raises(ValueError, match="v"):
        cross_similarity(u, v[:, :2])
    with pytest.raises(TypeError, match="k"):
        maximize(cs, None, method="greedy")
    with pytest.raises(ValueError, match="k"):
        maximize(cs, 3, method="double_greedy", key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="key"):
        maximize(cs, 3)
    with pytest.raises(ValueError, match="diversity"):
        maximize(cs, 3, diversity=-1.0, method="greedy")
    with pytest.raises(ValueError, match="method"):
        maximize(cs, 3, method="lazy")
    with pytest.raises(ValueError, match="csim"):
        maximize(cs[:, :3], 3, method="greedy")
    with pytest.raises(ValueError, match="latent"):
        clipcov(u, v, 3)
    with pytest.raises(ValueError, match="expected equal sizes"):
        clipcov(u, v[:4], 3, latent=np.zeros(10, np.int32))
    bad = u.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="finite"):
        clipcov(bad, v, 3, latent=np.zeros(10, np.int32))
