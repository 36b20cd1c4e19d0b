"""Score → subset selectors."""

import jax
import numpy as np
import pytest

from selection import select


def test_top_bottom_random():
    s = np.array([3.0, 1.0, 4.0, 1.0, 5.0])
    np.testing.assert_array_equal(select.top_k(s, 2), [2, 4])
    np.testing.assert_array_equal(select.bottom_k(s, 2), [1, 3])
    r = select.random_subset(jax.random.PRNGKey(0), 10, 4)
    assert r.shape == (4,) and len(set(r.tolist())) == 4 and r.max() < 10
    np.testing.assert_array_equal(select.to_mask(np.array([0, 2]), 4), [True, False, True, False])
    assert select.budget(1438, 0.1) == 144 and select.budget(5, 0.01) == 1


def test_ips_prefers_low_scores_proportionally():
    s = np.array([1.0] * 50 + [10.0] * 50)
    hits = np.zeros(100)
    for i in range(200):
        hits[select.ips_sample(jax.random.PRNGKey(i), s, 1)] += 1
    # P(low group) = 50·1 / (50·1 + 50·0.1) = 10/11
    assert abs(hits[:50].sum() / 200 - 10 / 11) < 0.06
    idx = select.ips_sample(jax.random.PRNGKey(0), s, 100)
    np.testing.assert_array_equal(idx, np.arange(100))


def test_even_allocation():
    np.testing.assert_array_equal(select.even_allocation(np.array([1, 10, 10]), 9), [1, 4, 4])
    np.testing.assert_array_equal(select.even_allocation(np.array([2, 2, 2]), 9), [2, 2, 2])
    a = select.even_allocation(np.array([5, 7, 3, 9]), 13)
    assert a.sum() == 13 and np.all(a <= [5, 7, 3, 9]) and a.max() - a[a < [5, 7, 3, 9]].min() <= 1


def test_coverage_centric_drops_hardest_and_covers_strata():
    s = np.arange(100, dtype=np.float64)  # uniform scores: every stratum equally full
    idx = select.coverage_centric(jax.random.PRNGKey(0), s, 20, n_strata=10, hard_cutoff=0.1)
    assert idx.shape == (20,) and len(set(idx.tolist())) == 20
    assert idx.max() < 90  # the 10 hardest are pruned
    counts = np.bincount(np.minimum((idx / 9).astype(int), 9), minlength=10)
    assert counts.min() >= 1 and counts.max() <= 3
    # never prunes so many that fewer than k remain
    assert select.coverage_centric(jax.random.PRNGKey(1), s, 95, hard_cutoff=0.5).shape == (95,)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="k"):
        select.top_k(np.ones(3), 4)
    with pytest.raises(ValueError, match="scores"):
        select.bottom_k(np.ones((2, 2)), 1)
    with pytest.raises(ValueError, match="scores"):
        select.ips_sample(jax.random.PRNGKey(0), np.array([1.0, 0.0]), 1)
    with pytest.raises(ValueError, match="hard_cutoff"):
        select.coverage_centric(jax.random.PRNGKey(0), np.ones(4), 2, hard_cutoff=1.0)
    with pytest.raises(ValueError, match="fraction"):
        select.budget(10, 0.0)
    with pytest.raises(ValueError, match="indices"):
        select.to_mask(np.array([5]), 3)
