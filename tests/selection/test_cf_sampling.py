"""The eight heuristic CF samplers: budgets, subsets, orderings, PageRank vs numpy, keys."""

import jax
import numpy as np
import pytest

from distill import data as D
from selection import cf_sampling as cs


def _toy(n_users=40, n_items=60, seed=0):
    """A random implicit log with distinct pairs, skewed user activity and distinct times."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        k = int(rng.integers(3, 4 + (u % 7) * 4))
        for i in rng.choice(n_items, k, replace=False):
            rows.append((u, i))
    rows = np.array(rows)
    ts = rng.permutation(len(rows)).astype(np.int64) * 10
    return D.from_arrays(rows[:, 0], rows[:, 1], timestamps=ts)


INTER = _toy()


@pytest.mark.parametrize("name", sorted(cs.SAMPLERS))
@pytest.mark.parametrize("p", [0.8, 0.35, 0.1])
def test_budget_and_subset(name, p):
    n = INTER.users.shape[0]
    mask = cs.SAMPLERS[name](jax.random.key(3), INTER, p)
    assert mask.dtype == bool and mask.shape == (n,)
    assert mask.sum() == round(p * n)  # exactly p % of the interactions
    # Only existing interactions: the kept (user, item) pairs are a subset of the log.
    pairs = set(zip(INTER.users.tolist(), INTER.items.tolist(), strict=False))
    assert set(zip(INTER.users[mask].tolist(), INTER.items[mask].tolist(), strict=False)) <= pairs


@pytest.mark.parametrize("name", sorted(cs.SAMPLERS))
def test_deterministic_by_key(name):
    f = cs.SAMPLERS[name]
    a = f(jax.random.key(5), INTER, 0.4)
    b = f(jax.random.key(5), INTER, 0.4)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["random_interaction", "user_stratified", "random_user", "random_walk", "forest_fire"])
def test_key_changes_sample(name):
    f = cs.SAMPLERS[name]
    assert not np.array_equal(f(jax.random.key(0), INTER, 0.4), f(jax.random.key(1), INTER, 0.4))


def test_stratified_keeps_p_of_every_user():
    p = 0.5
    mask = cs.user_stratified(jax.random.key(0), INTER, p)
    n_u = np.bincount(INTER.users, minlength=INTER.n_users)
    kept = np.bincount(INTER.users[mask], minlength=INTER.n_users)
    assert np.all(np.abs(kept - p * n_u) < 1.0)


def test_temporal_keeps_most_recent():
    p = 0.3
    mask = cs.user_temporal(jax.random.key(0), INTER, p)
    for u in range(INTER.n_users):
        rows = INTER.users == u
        kept_t = INTER.timestamps[rows & mask]
        dropped_t = INTER.timestamps[rows & ~mask]
        if kept_t.size and dropped_t.size:
            assert kept_t.min() > dropped_t.max()
    n_u = np.bincount(INTER.users, minlength=INTER.n_users)
    kept = np.bincount(INTER.users[mask], minlength=INTER.n_users)
    assert np.all(np.abs(kept - p * n_u) < 1.0)


def test_head_user_keeps_heaviest_users():
    mask = cs.head_user(jax.random.key(0), INTER, 0.4)
    n_u = np.bincount(INTER.users, minlength=INTER.n_users)
    kept = np.bincount(INTER.users[mask], minlength=INTER.n_users)
    full = kept == n_u
    partial = (kept > 0) & ~full
    assert partial.sum() <= 1  # only the last user is trimmed
    # Every fully kept user is at least as heavy as every dropped user.
    assert n_u[full].min() >= n_u[kept == 0].max()


def test_random_user_keeps_whole_users():
    mask = cs.random_user(jax.random.key(2), INTER, 0.5)
    n_u = np.bincount(INTER.users, minlength=INTER.n_users)
    kept = np.bincount(INTER.users[mask], minlength=INTER.n_users)
    assert np.sum((kept > 0) & (kept < n_u)) <= 1


def _numpy_pagerank(inter, d=0.85, iters=500):
    n = inter.n_users + inter.n_items
    a = np.zeros((n, n))
    a[inter.users, inter.items + inter.n_users] = 1
    a[inter.items + inter.n_users, inter.users] = 1
    deg = a.sum(1)
    r = np.full(n, 1.0 / n)
    for _ in range(iters):
        flow = a.T @ np.where(deg > 0, r / np.maximum(deg, 1), 0)
        r = (1 - d) / n + d * (flow + r[deg == 0].sum() / n)
    return r


def test_pagerank_equals_numpy_power_iteration():
    # An isolated item (id space larger than the items used) exercises the dangling rule.
    inter = INTER._replace(n_items=INTER.n_items + 1)
    got = np.asarray(cs.pagerank(inter, iters=200))
    want = _numpy_pagerank(inter)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    assert abs(got.sum() - 1) < 1e-5


def test_centrality_keeps_edges_of_top_node():
    mask = cs.centrality(jax.random.key(0), INTER, 0.2)
    pr = np.asarray(cs.pagerank(INTER))
    top = int(np.argmax(pr))
    rows = (INTER.users == top) if top < INTER.n_users else (INTER.items == top - INTER.n_users)
    assert mask[rows].all()


def test_graph_samples_are_induced_subgraphs():
    # Random walk / forest fire keep the edges among visited nodes: all kept rows'
    # endpoints are visited, and (apart from the trimmed tie group) edges between kept
    # nodes are kept.
    for f in (cs.random_walk, cs.forest_fire):
        mask = f(jax.random.key(1), INTER, 0.5)
        users = np.unique(INTER.users[mask])
        items = np.unique(INTER.items[mask])
        inside = np.isin(INTER.users, users) & np.isin(INTER.items, items)
        assert mask[inside].mean() > 0.8


def test_validation():
    with pytest.raises(ValueError, match="p"):
        cs.random_interaction(jax.random.key(0), INTER, 0.0)
    with pytest.raises(ValueError, match="p"):
        cs.head_user(jax.random.key(0), INTER, 1.5)
    with pytest.raises(ValueError, match="p"):
        cs.user_stratified(jax.random.key(0), INTER, float("nan"))
    with pytest.raises(TypeError, match="inter"):
        cs.centrality(jax.random.key(0), np.zeros((3, 3)), 0.5)
    with pytest.raises(ValueError, match="damping"):
        cs.pagerank(INTER, damping=1.0)
    with pytest.raises(ValueError, match="iters"):
        cs.pagerank(INTER, iters=0)
    with pytest.raises(ValueError, match="restart"):
        cs.random_walk(jax.random.key(0), INTER, 0.5, restart=-0.1)
    with pytest.raises(ValueError, match="p_forward"):
        cs.forest_fire(jax.random.key(0), INTER, 0.5, p_forward=1.0)
    with pytest.raises(ValueError, match="k"):
        cs.first_k(jax.random.key(0), np.arange(4.0), 5)
    with pytest.raises(ValueError, match="priority"):
        cs.first_k(jax.random.key(0), np.zeros((2, 2)), 1)


@pytest.mark.parametrize("name", sorted(cs.SAMPLERS))
def test_inconsistent_interactions_are_refused(name):
    # n_users smaller than the largest user id: the samplers' bincount/gathers would
    # silently drop or wrap those users.
    bad = INTER._replace(n_users=INTER.n_users - 5)
    with pytest.raises(ValueError, match=r"inter\.users.*n_users"):
        cs.SAMPLERS[name](jax.random.key(0), bad, 0.5)
    with pytest.raises(ValueError, match=r"inter\.items"):
        cs.SAMPLERS[name](jax.random.key(0), INTER._replace(items=INTER.items[:-1]), 0.5)


@pytest.mark.parametrize("name", sorted(cs.SAMPLERS))
def test_int_key_is_refused_by_name(name):
    with pytest.raises(TypeError, match=r"key: expected a JAX PRNG key .*got int"):
        cs.SAMPLERS[name](0, INTER, 0.5)
