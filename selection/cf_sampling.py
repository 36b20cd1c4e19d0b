"""Sampling collaborative-filtering data: the eight heuristic samplers of dissertation §1.3.2.

Every sampler has the same signature::

    sampler(key, inter: Interactions, p: float) -> bool (n,) mask over inter's rows

and keeps exactly ``k = budget(n, p) = round(p·n)`` interactions (``p`` is the kept
*fraction*, ``0 < p ≤ 1``; the dissertation's "p %"), always a subset of the existing
rows. The families:

* interaction sampling — :func:`random_interaction`, :func:`user_stratified`
  (p of every user's history), :func:`user_temporal` (the most recent p of every
  user's history);
* user sampling — :func:`random_user`, :func:`head_user` (whole users, in random order
  / by decreasing history length, until p of the interactions are kept);
* graph sampling on the user–item bipartite graph — :func:`centrality` (PageRank; all
  edges of the top nodes), :func:`random_walk` (random walks with restart; the edges
  induced by the visited nodes), :func:`forest_fire` (Leskovec et al., 2005).

Like the dissertation ("retain exactly p % of the total interactions"), the user and
graph samplers add whole users / nodes' edges in their order and trim the last one:
every sampler is an order over the interactions (:func:`first_k`), and the first
``k`` are kept. :mod:`selection.svp_cf` adds the eight SVP-CF samplers (Table 1.3).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from distill.checks import check_array, check_float, check_int, check_key
from distill.data.interactions import Interactions, check_interactions
from selection.select import _np_rng, budget, random_subset, to_mask

__all__ = [
    "Sampler",
    "check_sampler_args",
    "first_k",
    "user_order_mask",
    "random_interaction",
    "user_stratified",
    "user_temporal",
    "random_user",
    "head_user",
    "bipartite_edges",
    "pagerank",
    "centrality",
    "random_walk",
    "forest_fire",
    "SAMPLERS",
]

Sampler = Callable[[jax.Array, Interactions, float], np.ndarray]


def check_sampler_args(key: Any, inter: Any, p: Any) -> tuple[Interactions, float, int]:
    """Validate ``(key, inter, p)`` of a sampler (``key=None``: no key to check); return
    ``(inter, p)`` with the budget ``k``."""
    if key is not None:
        check_key(key)
    inter = check_interactions(inter)
    check_array(inter.users, "inter.users", ndim=1, kind="int")
    p = check_float(p, "p", min_value=0.0, max_value=1.0, strict_min=True)
    return inter, p, budget(inter.users.shape[0], p)


def first_k(key: jax.Array, priority: Any, k: int) -> np.ndarray:
    """Mask of the ``k`` interactions with the smallest ``priority``, ties broken at random.

    Args:
      key: PRNG key for the tie-break (e.g. which interactions of the last user).
      priority: ``(n,)`` numbers; smaller is kept first.
      k: how many to keep (``1..n``).

    Returns:
      bool ``(n,)`` with exactly ``k`` True.
    """
    pr = np.asarray(check_array(priority, "priority", ndim=1, kind="numeric"))
    n = pr.shape[0]
    k = check_int(k, "k", min_value=1, max_value=n)
    tie = _np_rng(key).random(n)
    order = np.lexsort((tie, pr))
    mask = np.zeros(n, bool)
    mask[order[:k]] = True
    return mask


def user_order_mask(key: jax.Array, inter: Interactions, user_rank: np.ndarray, k: int) -> np.ndarray:
    """Keep whole users in increasing ``user_rank`` until ``k`` interactions (last one trimmed)."""
    return first_k(key, np.asarray(user_rank)[inter.users], k)


# ------------------------------------------------------------------ interaction sampling


def random_interaction(key: jax.Array, inter: Interactions, p: float) -> np.ndarray:
    """Random interaction sampling: ``k`` of the ``n`` interactions uniformly."""
    inter, p, k = check_sampler_args(key, inter, p)
    n = inter.users.shape[0]
    return to_mask(random_subset(key, n, k), n)


def _user_quotas(users: np.ndarray, n_users: int, p: float, k: int, rng) -> np.ndarray:
    # Largest-remainder rounding of p·n_u so the quotas add up to exactly k.
    n_u = np.bincount(users, minlength=n_users)
    want = p * n_u
    quota = np.floor(want).astype(np.int64)
    rest = k - int(quota.sum())
    if rest > 0:
        frac = want - quota
        order = np.lexsort((rng.random(n_users), -frac))
        quota[order[:rest]] += 1
    return quota


def _rank_within_user(users: np.ndarray, n_users: int, sort_key: np.ndarray) -> np.ndarray:
    """0-based rank of every row within its user by increasing ``sort_key``."""
    n = users.shape[0]
    order = np.lexsort((sort_key, users))
    counts = np.bincount(users, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - starts[users[order]]
    return rank


def user_stratified(key: jax.Array, inter: Interactions, p: float) -> np.ndarray:
    """User-history stratified sampling: a uniform ``p`` of every user's interactions.

    Per-user quotas are ``p·n_u`` rounded by largest remainder (ties at random), so
    they sum to exactly ``k`` and each differs from ``p·n_u`` by less than 1.
    """
    inter, p, k = check_sampler_args(key, inter, p)
    rng = _np_rng(key)
    quota = _user_quotas(inter.users, inter.n_users, p, k, rng)
    rank = _rank_within_user(inter.users, inter.n_users, rng.random(inter.users.shape[0]))
    return rank < quota[inter.users]


def user_temporal(key: jax.Array, inter: Interactions, p: float) -> np.ndarray:
    """User-history temporal sampling: the most recent ``p`` of every user's history.

    Quotas as in :func:`user_stratified`; within a user, rows are ordered by
    timestamp with later rows counting as more recent on ties (as
    :func:`distill.data.temporal_split`). ``key`` only breaks quota-rounding ties.
    """
    inter, p, k = check_sampler_args(key, inter, p)
    rng = _np_rng(key)
    quota = _user_quotas(inter.users, inter.n_users, p, k, rng)
    n = inter.users.shape[0]
    # Newest first: sort by (−time, −row).
    recency = np.lexsort((-np.arange(n), -inter.timestamps.astype(np.int64)))
    newest_rank = np.empty(n, np.int64)
    newest_rank[recency] = np.arange(n)
    rank = _rank_within_user(inter.users, inter.n_users, newest_rank)
    return rank < quota[inter.users]


# ------------------------------------------------------------------------- user sampling


def random_user(key: jax.Array, inter: Interactions, p: float) -> np.ndarray:
    """Random user sampling: all interactions of random users until ``k`` are kept."""
    inter, p, k = check_sampler_args(key, inter, p)
    k_order, k_tie = jax.random.split(key)
    rank = _np_rng(k_order).permutation(inter.n_users)
    return user_order_mask(k_tie, inter, rank, k)


def head_user(key: jax.Array, inter: Interactions, p: float) -> np.ndarray:
    """Head-user sampling: drop the lightest users first, i.e. keep the heaviest users.

    Users are taken by decreasing number of interactions (ties: smaller id first) until
    ``k`` interactions are kept; ``key`` only chooses the trimmed user's rows.
    """
    inter, p, k = check_sampler_args(key, inter, p)
    counts = np.bincount(inter.users, minlength=inter.n_users)
    order = np.lexsort((np.arange(inter.n_users), -counts))
    rank = np.empty(inter.n_users, np.int64)
    rank[order] = np.arange(inter.n_users)
    return user_order_mask(key, inter, rank, k)


# ------------------------------------------------------------------------ graph sampling


def bipartite_edges(inter: Interactions) -> tuple[np.ndarray, np.ndarray, int]:
    """Edges of the user–item bipartite graph: ``(src, dst, n_nodes)``.

    Nodes are users ``0..U−1`` then items ``U..U+I−1``; every interaction gives two
    directed edges (one each way), interaction ``e`` being edges ``e`` and ``n + e``.
    """
    inter = check_interactions(inter)
    u = inter.users.astype(np.int32)
    i = (inter.items + inter.n_users).astype(np.int32)
    return np.concatenate([u, i]), np.concatenate([i, u]), inter.n_users + inter.n_items


@functools.partial(jax.jit, static_argnames=("n_nodes", "iters"))
def _pagerank(src, dst, n_nodes, damping, iters):
    deg = jax.ops.segment_sum(jnp.ones_like(src, jnp.float32), src, n_nodes)
    dangling = deg == 0
    inv_deg = jnp.where(dangling, 0.0, 1.0 / jnp.maximum(deg, 1.0))

    def body(_, r):
        flow = jax.ops.segment_sum((r * inv_deg)[src], dst, n_nodes)
        # Mass of nodes without edges is spread uniformly, so r stays a distribution.
        lost = jnp.sum(jnp.where(dangling, r, 0.0))
        return (1.0 - damping) / n_nodes + damping * (flow + lost / n_nodes)

    return jax.lax.fori_loop(0, iters, body, jnp.full(n_nodes, 1.0 / n_nodes, jnp.float32))


def pagerank(inter: Interactions, *, damping: float = 0.85, iters: int = 100) -> jax.Array:
    """PageRank of every node of the bipartite graph (Page et al., 1999), by power iteration.

    ``r ← (1 − d)/N + d · (Aᵀ D⁻¹ r + (Σ_{deg v = 0} r_v)/N)``, started at ``1/N``;
    jitted (``segment_sum`` over the edge list, ``fori_loop`` over iterations).

    Args:
      inter: the interactions (the graph's edges).
      damping: d in ``[0, 1)``.
      iters: power iterations (>= 1).

    Returns:
      float32 ``(n_users + n_items,)`` scores summing to 1 (users first).
    """
    src, dst, n_nodes = bipartite_edges(inter)
    damping = check_float(damping, "damping", min_value=0.0, max_value=1.0)
    if damping >= 1.0:
        raise ValueError(f"damping: expected a number < 1, got {damping}")
    iters = check_int(iters, "iters", min_value=1)
    return _pagerank(jnp.asarray(src), jnp.asarray(dst), n_nodes, jnp.float32(damping), iters)


def centrality(key: jax.Array, inter: Interactions, p: float) -> np.ndarray:
    """Centrality-based sampling: all edges of the highest-PageRank nodes until ``k`` are kept.

    An interaction enters when the first of its two endpoints is reached in the
    order of decreasing PageRank (users and items together).
    """
    inter, p, k = check_sampler_args(key, inter, p)
    score = np.asarray(pagerank(inter))
    order = np.argsort(-score, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    t = np.minimum(rank[inter.users], rank[inter.items + inter.n_users])
    return first_k(key, t, k)


def _csr(inter: Interactions):
    src, dst, n_nodes = bipartite_edges(inter)
    order = np.argsort(src, kind="stable")
    deg = np.bincount(src, minlength=n_nodes)
    offs = np.concatenate([[0], np.cumsum(deg)[:-1]])
    return dst[order].astype(np.int32), offs.astype(np.int32), deg.astype(np.int32), n_nodes


@functools.partial(jax.jit, static_argnames=("length",))
def _walks(key, starts, nbr, offs, deg, restart, length):
    """Random walks with restart from each start: ``(n_starts, length)`` visited nodes."""

    def one(key, start):
        def step(cur, k):
            k_r, k_n = jax.random.split(k)
            j = jnp.floor(jax.random.uniform(k_n) * deg[cur]).astype(jnp.int32)
            nxt = nbr[offs[cur] + jnp.minimum(j, deg[cur] - 1)]
            nxt = jnp.where(jax.random.uniform(k_r) < restart, start, nxt)
            return nxt, nxt

        _, path = jax.lax.scan(step, start, jax.random.split(key, length - 1))
        return jnp.concatenate([start[None], path])

    return jax.vmap(one)(jax.random.split(key, starts.shape[0]), starts)


def random_walk(
    key: jax.Array,
    inter: Interactions,
    p: float,
    *,
    restart: float = 0.15,
    walk_length: int = 256,
    walks_per_call: int = 64,
) -> np.ndarray:
    """Random-walk (with restart) sampling (Leskovec & Faloutsos, 2006).

    Walks start at uniformly drawn non-isolated nodes; each step returns to the walk's
    start with probability ``restart`` or moves to a uniform neighbour. Walks are
    generated ``walks_per_call`` at a time in one jitted ``vmap``/``scan`` and visited
    in sequence; an interaction enters the sample when both its endpoints have been
    visited (the induced subgraph), until ``k`` interactions are in.

    Args:
      key, inter, p: as every sampler.
      restart: restart probability in ``[0, 1)``.
      walk_length: steps per walk (>= 2).
      walks_per_call: walks per jitted call (>= 1).
    """
    inter, p, k = check_sampler_args(key, inter, p)
    restart = check_float(restart, "restart", min_value=0.0, max_value=1.0)
    walk_length = check_int(walk_length, "walk_length", min_value=2)
    walks_per_call = check_int(walks_per_call, "walks_per_call", min_value=1)
    nbr, offs, deg, n_nodes = _csr(inter)
    eu, ei = inter.users, inter.items + inter.n_users
    first = np.full(n_nodes, np.iinfo(np.int64).max, np.int64)
    live = np.flatnonzero(deg > 0)
    args = (jnp.asarray(nbr), jnp.asarray(offs), jnp.asarray(deg), jnp.float32(restart))
    k_walk, k_tie = jax.random.split(key)
    clock = 0
    while True:
        k_walk, k_start, k_call = jax.random.split(k_walk, 3)
        starts = jnp.asarray(live[np.asarray(jax.random.randint(k_start, (walks_per_call,), 0, live.size))])
        visits = np.asarray(_walks(k_call, starts, *args, walk_length)).ravel()
        t = clock + np.arange(visits.size)
        # First visit time of each node in this batch of walks.
        new = np.full(n_nodes, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(new, visits, t)
        first = np.minimum(first, new)
        clock += visits.size
        if np.count_nonzero((first[eu] < clock) & (first[ei] < clock)) >= k:
            break
    return first_k(k_tie, np.maximum(first[eu], first[ei]), k)


def forest_fire(
    key: jax.Array, inter: Interactions, p: float, *, p_forward: float = 0.7
) -> np.ndarray:
    """Forest-fire sampling (Leskovec et al., 2005): a snowball that burns random neighbours.

    From a random seed node, each burning node burns ``x ~ Geometric`` (mean
    ``p_f / (1 − p_f)``) of its not-yet-burned neighbours chosen uniformly; burned nodes
    burn in first-in-first-out order. When the fire dies out a new random unburned seed
    is lit. An interaction enters when both endpoints have burned, until ``k`` are in.
    Sequential by nature (each step depends on which nodes are burned), so it runs in
    numpy rather than under ``jit``.

    Args:
      key, inter, p: as every sampler.
      p_forward: forward-burning probability in ``[0, 1)``.
    """
    inter, p, k = check_sampler_args(key, inter, p)
    p_forward = check_float(p_forward, "p_forward", min_value=0.0, max_value=1.0)
    if p_forward >= 1.0:
        raise ValueError(f"p_forward: expected a number < 1, got {p_forward}")
    nbr, offs, deg, n_nodes = _csr(inter)
    k_fire, k_tie = jax.random.split(key)
    rng = _np_rng(k_fire)
    burned_at = np.full(n_nodes, np.iinfo(np.int64).max, np.int64)
    clock, n_edges = 0, 0
    unburned = rng.permutation(np.flatnonzero(deg > 0)).tolist()
    queue: list[int] = []
    head = 0

    def burn(v: int) -> int:
        nonlocal clock
        burned_at[v] = clock
        clock += 1
        nb = nbr[offs[v] : offs[v] + deg[v]]
        # Each already-burned neighbour closes one induced edge (u–i pairs are unique
        # after to_implicit; repeated rows simply count twice, as they are two rows).
        return int(np.count_nonzero(burned_at[nb] < clock - 1))

    while n_edges < k:
        if head == len(queue):
            while burned_at[unburned[-1]] != np.iinfo(np.int64).max:
                unburned.pop()
            v = unburned.pop()
            n_edges += burn(v)
            queue.append(v)
        v = queue[head]
        head += 1
        nb = nbr[offs[v] : offs[v] + deg[v]]
        fresh = np.unique(nb[burned_at[nb] == np.iinfo(np.int64).max])
        if fresh.size == 0:
            continue
        x = min(fresh.size, int(rng.geometric(1.0 - p_forward)) - 1) if p_forward > 0 else 0
        for w in rng.choice(fresh, x, replace=False):
            n_edges += burn(int(w))
            queue.append(int(w))
            if n_edges >= k:
                break
    return first_k(k_tie, np.maximum(burned_at[inter.users], burned_at[inter.items + inter.n_users]), k)


SAMPLERS: dict[str, Sampler] = {
    "random_interaction": random_interaction,
    "user_stratified": user_stratified,
    "user_temporal": user_temporal,
    "random_user": random_user,
    "head_user": head_user,
    "centrality": centrality,
    "random_walk": random_walk,
    "forest_fire": forest_fire,
}
"""The heuristic samplers of Table 1.3 by name (SVP-CF's are in :data:`selection.svp_cf.SAMPLERS`)."""
