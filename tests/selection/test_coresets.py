"""Facility location (naive = lazy greedy, ≥ (1 − 1/e)·OPT), CRAIG, k-center, k-means."""

import itertools

import jax
import numpy as np
import pytest

from selection import coresets


def _sim(n, m, seed):
    rng = np.random.default_rng(seed)
    pts, cands = rng.normal(size=(n, 2)), rng.normal(size=(m, 2))
    d = np.linalg.norm(pts[:, None] - cands[None], axis=-1)
    return (d.max() - d).astype(np.float64)


def _naive_numpy_greedy(sim, k):
    cur, idx = np.zeros(sim.shape[0]), []
    for _ in range(k):
        gains = np.maximum(sim - cur[:, None], 0).sum(0)
        gains[idx] = -np.inf
        j = int(np.argmax(gains))
        idx.append(j)
        cur = np.maximum(cur, sim[:, j])
    return idx


def test_lazy_equals_naive_greedy_and_reference():
    for seed in range(4):
        sim = _sim(40, 30, seed)
        naive = coresets.facility_location(sim.astype(np.float32), 8, method="naive")
        lazy = coresets.facility_location(sim, 8, method="lazy")
        ref = _naive_numpy_greedy(sim, 8)
        np.testing.assert_array_equal(lazy.indices, ref)
        np.testing.assert_array_equal(naive.indices, ref)
        assert np.all(np.diff(lazy.gains) <= 1e-9)  # diminishing returns
        np.testing.assert_allclose(lazy.value, coresets.facility_location_value(sim, ref))
        np.testing.assert_allclose(lazy.gains.sum(), lazy.value, rtol=1e-9)


def test_greedy_reaches_one_minus_one_over_e_of_brute_force():
    for seed in range(5):
        sim = _sim(9, 8, seed + 10)
        w = np.random.default_rng(seed).uniform(0.5, 2.0, 9)
        for k in (1, 2, 3):
            opt = max(coresets.facility_location_value(sim, s, w) for s in itertools.combinations(range(8), k))
            for method in ("lazy", "naive"):
                fl = coresets.facility_location(sim, k, method=method, weights=w)
                assert fl.value >= (1 - 1 / np.e) * opt - 1e-9
            st = coresets.facility_location(sim, k, method="stochastic", key=jax.random.PRNGKey(seed), epsilon=0.01)
            assert len(set(st.indices.tolist())) == k
            assert st.value >= (1 - 1 / np.e - 0.01) * opt * 0.9  # expectation bound, loose


def test_facility_location_ties_and_saturation():
    sim = np.zeros((5, 6))  # every gain is 0: lowest indices first, like argmax
    np.testing.assert_array_equal(coresets.facility_location(sim, 3, method="lazy").indices, [0, 1, 2])
    np.testing.assert_array_equal(coresets.facility_location(sim, 3, method="naive").indices, [0, 1, 2])


def test_craig_weights_sum_to_n_and_respect_classes():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(60, 3)).astype(np.float32)
    labels = np.repeat(np.arange(3), [30, 20, 10]).astype(np.int32)
    cs = coresets.craig(feats, labels, 12)
    assert cs.indices.shape == (12,) and len(set(cs.indices.tolist())) == 12
    assert cs.weights.sum() == 60 and np.all(cs.weights >= 1)
    np.testing.assert_array_equal(np.bincount(labels[cs.indices]), [6, 4, 2])
    for c, n_c in zip(range(3), (30, 20, 10), strict=False):
        assert cs.weights[labels[cs.indices] == c].sum() == n_c
    equal = np.repeat(np.arange(3), 20).astype(np.int32)  # equal classes: one stochastic compile
    st = coresets.craig(feats, equal, 12, method="stochastic", key=jax.random.PRNGKey(0))
    assert st.weights.sum() == 60


def test_k_center_greedy_vs_brute_force():
    for seed in range(4):
        x = np.random.default_rng(seed).normal(size=(10, 2)).astype(np.float32)
        for k in (2, 3):
            idx = coresets.k_center_greedy(x, k)
            assert idx[0] == 0 and len(set(idx.tolist())) == k
            d = np.linalg.norm(x[:, None] - x[None], axis=-1)
            opt = min(d[:, list(s)].min(1).max() for s in itertools.combinations(range(10), k))
            assert coresets.covering_radius(x, idx) <= 2 * opt + 1e-5
            # the greedy rule itself: each pick is the farthest point from the previous picks
            for t in range(1, k):
                assert idx[t] == np.argmax(d[:, idx[:t]].min(1))
    more = coresets.k_center_greedy(x, 2, selected=np.array([3, 4]))
    assert not set(more.tolist()) & {3, 4}


def test_kmeans_recovers_blobs():
    rng = np.random.default_rng(0)
    # (93, 8) points, k = 3: the shapes of test_scores' prototype test, which shares the compilation
    centers = 10 * np.eye(3, 8, dtype=np.float32)
    x = np.concatenate([c + rng.normal(size=(31, 8)) for c in centers]).astype(np.float32)
    km = coresets.kmeans(jax.random.PRNGKey(0), x, 3)
    lab = np.asarray(km.labels)
    for b in range(3):
        assert len(set(lab[31 * b : 31 * (b + 1)].tolist())) == 1
    assert len(set(lab.tolist())) == 3


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="sim"):
        coresets.facility_location(-np.ones((3, 3)), 1)
    with pytest.raises(ValueError, match="k"):
        coresets.facility_location(np.ones((3, 3)), 4)
    with pytest.raises(ValueError, match="method"):
        coresets.facility_location(np.ones((3, 3)), 1, method="fast")
    with pytest.raises(ValueError, match="key"):
        coresets.facility_location(np.ones((3, 3)), 1, method="stochastic")
    with pytest.raises(ValueError, match="weights"):
        coresets.facility_location(np.ones((3, 3)), 1, weights=np.ones(2))
    with pytest.raises(ValueError, match="labels"):
        coresets.craig(np.ones((4, 2), np.float32), np.zeros(3, np.int32), 2)
    with pytest.raises(TypeError, match="x"):
        coresets.k_center_greedy([[0.0, 1.0]], 1)
    with pytest.raises(ValueError, match="k"):
        coresets.kmeans(jax.random.PRNGKey(0), np.ones((3, 2), np.float32), 5)


def test_proportional_budget():
    # Hamilton apportionment: floors 3, 1, 0 (quotas 3.6, 1.2, 0.2) -> the empty-ish group
    # gets its guaranteed pick, then the largest remainder (0.6) the last one
    b = coresets.proportional_budget(np.array([18, 6, 1]), 5)
    np.testing.assert_array_equal(b, [3, 1, 1])
    np.testing.assert_array_equal(coresets.proportional_budget(np.array([10, 10]), 7), [4, 3])
    # never above a group's size, exact total, zero-size groups get nothing
    b = coresets.proportional_budget(np.array([2, 0, 30]), 20)
    assert b.sum() == 20 and b[0] <= 2 and b[1] == 0
    np.testing.assert_array_equal(coresets.proportional_budget(np.array([3, 4]), 7), [3, 4])
    with pytest.raises(ValueError, match="sizes"):
        coresets.proportional_budget(np.array([0, 0]), 1)
    with pytest.raises(ValueError, match="sizes"):
        coresets.proportional_budget(np.array([3, -1]), 1)
    with pytest.raises(TypeError, match="sizes"):
        coresets.proportional_budget(np.array([1.5, 2.0]), 1)
    with pytest.raises(ValueError, match="k"):
        coresets.proportional_budget(np.array([3, 4]), 8)


def test_facility_location_value_refuses_out_of_range_indices():
    sim = np.eye(3)
    assert coresets.facility_location_value(sim, [0, 2]) == 2.0
    for bad in ([-1], [3]):  # -1 would silently mean column 2
        with pytest.raises(ValueError, match="indices"):
            coresets.facility_location_value(sim, bad)
