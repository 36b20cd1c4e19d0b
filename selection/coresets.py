"""Geometric coresets: k-means, facility location (greedy / lazy / stochastic), CRAIG, k-center.

:func:`facility_location` is *the* submodular maximiser of the library. It maximises

    F(S) = Σ_i w_i · max_{j ∈ S} sim[i, j],    |S| = k,

over candidate columns ``j`` of a non-negative similarity matrix, which is monotone
submodular with ``F(∅) = 0``, so greedy reaches ``F ≥ (1 − 1/e)·OPT`` (Nemhauser et al.,
1978). CRAIG (here), and CREST/SAS/ClipCov later, call it with their own similarities.

Sources: Mirzasoleiman et al. (2020) "Coresets for data-efficient training" (CRAIG);
Minoux (1978) lazy greedy; Mirzasoleiman et al. (2015) "Lazier than lazy greedy"
(stochastic greedy); Sener & Savarese (2018) k-center greedy; Lloyd / Arthur &
Vassilvitskii (2007) k-means++.
"""

from __future__ import annotations

import functools
import heapq
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from distill.checks import check_array, check_choice, check_float, check_index_range, check_int, check_key

__all__ = [
    "KMeans",
    "kmeans",
    "pairwise_distances",
    "FacilityLocation",
    "facility_location",
    "facility_location_value",
    "proportional_budget",
    "Coreset",
    "craig",
    "k_center_greedy",
    "covering_radius",
]


# ----------------------------------------------------------------------------- k-means


class KMeans(NamedTuple):
    """Result of :func:`kmeans`: ``centroids (k, d)``, ``labels (n,)``, ``inertia`` (scalar)."""

    centroids: jax.Array
    labels: jax.Array
    inertia: jax.Array


def _sq_dists(x: jax.Array, c: jax.Array) -> jax.Array:
    return jnp.maximum(jnp.sum(x**2, 1)[:, None] - 2 * x @ c.T + jnp.sum(c**2, 1)[None, :], 0.0)


def pairwise_distances(x: Any, y: Any = None) -> jax.Array:
    """Euclidean distances ``‖x_i − y_j‖`` as an ``(n, m)`` matrix (``y`` defaults to ``x``)."""
    check_array(x, "x", ndim=2, kind="float")
    y = x if y is None else check_array(y, "y", ndim=2, kind="float")
    if y.shape[1] != x.shape[1]:
        raise ValueError(f"y: expected {x.shape[1]} features like x, got shape {tuple(y.shape)}")
    return jnp.sqrt(_sq_dists(jnp.asarray(x), jnp.asarray(y)))


@functools.partial(jax.jit, static_argnames=("k", "iters", "spherical"))
def _kmeans(key, x, k, iters, spherical):
    n = x.shape[0]
    k0, key = jax.random.split(key)
    first = jax.random.randint(k0, (), 0, n)
    cent = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])

    trials = 2 + int(math.log(k))

    def pp(i, state):  # greedy k-means++: best of `trials` draws ∝ D(x)² (as in scikit-learn)
        cent, dmin, key = state
        key, sub = jax.random.split(key)
        d = jnp.sum((x - cent[i - 1]) ** 2, axis=1)
        dmin = jnp.minimum(dmin, d)
        logits = jnp.where(dmin > 0, jnp.log(jnp.maximum(dmin, 1e-30)), -jnp.inf)
        logits = jnp.where(jnp.all(dmin <= 0), 0.0, logits)  # all points covered: uniform
        cand = jax.random.categorical(sub, logits, shape=(trials,))
        dc = _sq_dists(x, x[cand]).T  # (trials, n)
        j = cand[jnp.argmin(jnp.sum(jnp.minimum(dmin[None], dc), axis=1))]
        return cent.at[i].set(x[j]), dmin, key

    dmin0 = jnp.full((n,), jnp.inf, x.dtype)
    cent, _, _ = jax.lax.fori_loop(1, k, pp, (cent, dmin0, key))

    def assign(cent):
        if spherical:
            return jnp.argmax(x @ cent.T, axis=1)
        return jnp.argmin(_sq_dists(x, cent), axis=1)

    def lloyd(_, cent):
        lab = assign(cent)
        onehot = jax.nn.one_hot(lab, k, dtype=x.dtype)
        counts = onehot.sum(0)
        sums = onehot.T @ x
        new = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts[:, None], 1), cent)
        if spherical:
            new = new / jnp.maximum(jnp.linalg.norm(new, axis=1, keepdims=True), 1e-12)
        return new

    cent = jax.lax.fori_loop(0, iters, lloyd, cent)
    lab = assign(cent)
    inertia = jnp.sum(jnp.min(_sq_dists(x, cent), axis=1))
    return KMeans(cent, lab, inertia)


def kmeans(key: jax.Array, x: Any, k: int, *, iters: int = 50, spherical: bool = False) -> KMeans:
    """k-means with greedy k-means++ initialisation and ``iters`` Lloyd steps (jitted).

    Args:
      key: PRNG key (initialisation).
      x: float ``(n, d)`` points (L2-normalise them first for ``spherical``).
      k: clusters, ``1 <= k <= n``.
      iters: Lloyd iterations (>= 0); an emptied cluster keeps its previous centroid.
      spherical: assign by cosine similarity and renormalise centroids (spherical k-means,
        as SemDeDup and SSL prototypes use on normalised embeddings).

    Returns:
      :class:`KMeans` with ``centroids (k, d)``, ``labels (n,)`` int32 and the inertia
      ``Σ_i min_c ‖x_i − μ_c‖²``.
    """
    check_key(key)
    check_array(x, "x", ndim=2, kind="float", finite=True)
    k = check_int(k, "k", min_value=1, max_value=x.shape[0])
    iters = check_int(iters, "iters", min_value=0)
    return _kmeans(key, jnp.asarray(x), k, iters, bool(spherical))


# ----------------------------------------------------------------------------- facility location


class FacilityLocation(NamedTuple):
    """Result of :func:`facility_location`.

    Attributes:
      indices: int ``(k,)`` selected candidate columns, in selection order.
      gains: ``(k,)`` marginal gain of each pick (non-increasing for exact greedy).
      assignment: int ``(n,)`` position in ``indices`` of each point's most similar pick.
      value: ``F(S)``.
    """

    indices: np.ndarray
    gains: np.ndarray
    assignment: np.ndarray
    value: float


def facility_location_value(sim: Any, indices: Any, weights: Any = None) -> float:
    """``F(S) = Σ_i w_i max_{j ∈ S} sim[i, j]`` (0 for an empty ``S``)."""
    s = np.asarray(sim, np.float64)
    idx = np.asarray(indices, np.int64)
    if idx.size == 0:
        return 0.0
    check_index_range(idx, "indices", s.shape[1], "index")  # a negative index would wrap around
    w = np.ones(s.shape[0]) if weights is None else np.asarray(weights, np.float64)
    return float(np.sum(w * np.max(s[:, idx], axis=1)))


@functools.partial(jax.jit, static_argnames=("k",))
def _greedy_naive(sim, w, k):
    n, m = sim.shape

    def step(t, state):
        cur, chosen, idx, gains = state
        g = jnp.sum(w[:, None] * jnp.maximum(sim - cur[:, None], 0.0), axis=0)
        g = jnp.where(chosen, -jnp.inf, g)
        j = jnp.argmax(g)
        return jnp.maximum(cur, sim[:, j]), chosen.at[j].set(True), idx.at[t].set(j.astype(idx.dtype)), gains.at[t].set(g[j])

    init = (jnp.zeros((n,), sim.dtype), jnp.zeros((m,), bool), jnp.zeros((k,), jnp.int32), jnp.zeros((k,), sim.dtype))
    _, _, idx, gains = jax.lax.fori_loop(0, k, step, init)
    return idx, gains


@functools.partial(jax.jit, static_argnames=("k", "s"))
def _greedy_stochastic(key, sim, w, k, s):
    n, m = sim.shape

    def step(t, state):
        cur, chosen, idx, gains, key = state
        key, sub = jax.random.split(key)
        noise = jnp.where(chosen, jnp.inf, jax.random.uniform(sub, (m,)))
        cand = jax.lax.top_k(-noise, s)[1]  # s random unselected candidates
        g = jnp.sum(w[:, None] * jnp.maximum(sim[:, cand] - cur[:, None], 0.0), axis=0)
        g = jnp.where(chosen[cand], -jnp.inf, g)
        j = cand[jnp.argmax(g)]
        return (jnp.maximum(cur, sim[:, j]), chosen.at[j].set(True), idx.at[t].set(j.astype(idx.dtype)), gains.at[t].set(jnp.max(g)), key)

    init = (jnp.zeros((n,), sim.dtype), jnp.zeros((m,), bool), jnp.zeros((k,), jnp.int32), jnp.zeros((k,), sim.dtype), key)
    _, _, idx, gains, _ = jax.lax.fori_loop(0, k, step, init)
    return idx, gains


def _greedy_lazy(sim: np.ndarray, w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Minoux's lazy greedy: stale upper bounds in a max-heap, re-evaluated on demand.

    Heap entries are ``(-bound, index, step evaluated)``; an entry popped that was
    evaluated at the current step is the true argmax (ties: lowest index, as ``argmax``).
    """
    cur = np.zeros(sim.shape[0], sim.dtype)
    heap = [(-float(g), j, 0) for j, g in enumerate(w @ np.maximum(sim, 0.0))]
    heapq.heapify(heap)
    idx, gains = [], []
    while len(idx) < k:
        step = len(idx)
        neg, j, when = heapq.heappop(heap)
        if when == step:
            idx.append(j)
            gains.append(-neg)
            cur = np.maximum(cur, sim[:, j])
        else:
            g = float(w @ np.maximum(sim[:, j] - cur, 0.0))
            heapq.heappush(heap, (-g, j, step))
    return np.asarray(idx, np.int32), np.asarray(gains, sim.dtype)


def facility_location(
    sim: Any,
    k: int,
    *,
    method: str = "lazy",
    weights: Any = None,
    key: jax.Array | None = None,
    epsilon: float = 0.1,
) -> FacilityLocation:
    """Greedy maximisation of the facility-location function ``F(S) = Σ_i w_i max_{j∈S} sim[i, j]``.

    Args:
      sim: non-negative float ``(n, m)`` similarities of ``n`` points to ``m`` candidates
        (often ``n = m``, the same set; e.g. ``max(d) − d`` for distances ``d``).
      k: number of candidates to pick, ``1 <= k <= m``.
      method: ``'naive'`` (exact greedy, all gains each step; jitted, O(k·n·m)),
        ``'lazy'`` (exact greedy with Minoux's lazy evaluations — same picks as
        ``'naive'``, far fewer gain evaluations; numpy heap) or ``'stochastic'``
        (Mirzasoleiman et al. 2015: each step evaluates ``⌈(m/k)·log(1/ε)⌉`` random
        candidates; ``(1 − 1/e − ε)`` in expectation; jitted).
      weights: optional non-negative ``(n,)`` point weights ``w_i`` (default 1).
      key: PRNG key, required for ``'stochastic'``.
      epsilon: accuracy of the stochastic greedy, in ``(0, 1)``.

    Returns:
      :class:`FacilityLocation` (indices, gains, assignment of every point to its most
      similar pick, value ``F(S)``).
    """
    check_key(key, allow_none=True)
    check_array(sim, "sim", ndim=2, kind="float", finite=True)
    n, m = sim.shape
    k = check_int(k, "k", min_value=1, max_value=m)
    check_choice(method, "method", ("naive", "lazy", "stochastic"))
    if float(jnp.min(sim)) < 0:
        raise ValueError("sim: expected non-negative similarities (F must be monotone with F(∅) = 0)")
    if weights is None:
        w = np.ones((n,), np.asarray(sim).dtype)
    else:
        check_array(weights, "weights", shape=(n,), kind="numeric", finite=True)
        if float(np.min(weights)) < 0:
            raise ValueError("weights: expected non-negative weights")
        w = np.asarray(weights, np.asarray(sim).dtype)
    if method == "lazy":
        s = np.asarray(sim)
        idx, gains = _greedy_lazy(s, w, k)
    elif method == "naive":
        idx, gains = _greedy_naive(jnp.asarray(sim), jnp.asarray(w), k)
    else:
        if key is None:
            raise ValueError("key: method='stochastic' needs a PRNG key, got None")
        epsilon = check_float(epsilon, "epsilon", min_value=0.0, strict_min=True)
        if epsilon >= 1:
            raise ValueError(f"epsilon: expected a number < 1, got {epsilon}")
        s_size = int(min(m, max(1, math.ceil(m / k * math.log(1.0 / epsilon)))))
        idx, gains = _greedy_stochastic(key, jnp.asarray(sim), jnp.asarray(w), k, s_size)
    idx = np.asarray(idx, np.int32)
    sub = np.asarray(sim)[:, idx]
    assignment = np.argmax(sub, axis=1).astype(np.int32)
    value = float(np.sum(w * sub[np.arange(n), assignment]))
    return FacilityLocation(idx, np.asarray(gains), assignment, value)


# ----------------------------------------------------------------------------- CRAIG


class Coreset(NamedTuple):
    """A weighted subset: ``indices (k,)`` into the dataset and ``weights (k,)`` (train with
    per-example loss weights ``weights``; for CRAIG they sum to ``n``)."""

    indices: np.ndarray
    weights: np.ndarray


def proportional_budget(sizes: Any, k: int) -> np.ndarray:
    """Split a budget of ``k`` picks over groups in proportion to their sizes.

    Largest-remainder (Hamilton) apportionment of ``k_c ≈ k · n_c / Σ_c n_c``: floor every
    quota, give every non-empty group at least one pick when ``k`` is at least the number
    of non-empty groups (so no class vanishes from a per-class coreset such as CRAIG,
    SAS or CLIPCov), never exceed a group's size, and hand the remaining picks to the
    largest fractional remainders. Used for the per-class budgets of :func:`craig`,
    :func:`selection.sas.sas` and :func:`selection.clipcov.clipcov`.

    Args:
      sizes: int ``(g,)`` group sizes ``n_c >= 0`` with a positive sum.
      k: total budget, ``0 <= k <= Σ_c n_c``.

    Returns:
      int64 ``(g,)`` budgets ``k_c`` with ``Σ_c k_c = k`` and ``0 <= k_c <= n_c``.
    """
    check_array(sizes, "sizes", ndim=1, kind="int")
    sizes = np.asarray(sizes, np.int64)
    if sizes.size == 0 or np.any(sizes < 0) or sizes.sum() == 0:
        raise ValueError(f"sizes: expected non-negative group sizes with a positive sum, got {sizes.tolist()}")
    k = check_int(k, "k", min_value=0, max_value=int(sizes.sum()))
    raw = k * sizes / sizes.sum()
    b = np.minimum(np.floor(raw).astype(np.int64), sizes)
    if k >= np.count_nonzero(sizes):
        b = np.where((sizes > 0) & (b == 0), 1, b)
    while b.sum() > k:  # rounding up empty groups overshot: take from the largest
        b[np.argmax(b - raw)] -= 1
    order = np.argsort(-(raw - b), kind="stable")
    i = 0
    while b.sum() < k:
        j = order[i % len(order)]
        if b[j] < sizes[j]:
            b[j] += 1
        i += 1
    return b


def craig(
    features: Any,
    labels: Any,
    k: int,
    *,
    method: str = "lazy",
    key: jax.Array | None = None,
    epsilon: float = 0.1,
) -> Coreset:
    """CRAIG: per-class facility location on gradient proxies, weights = cluster sizes.

    Within class ``c`` (``n_c`` examples, budget ``k_c ∝ n_c``), with gradient-proxy
    distances ``d_ij = ‖g_i − g_j‖`` the medoids maximise
    ``F(S) = Σ_{i ∈ c} max_{j∈S} (d_max − d_ij)``; each medoid's weight is the number of
    class examples closest to it, so the weights sum to ``n`` and
    ``Σ_{j∈S} γ_j ∇f_j ≈ Σ_i ∇f_i`` (Mirzasoleiman et al., 2020, Alg. 1).

    Args:
      features: float ``(n, d)`` gradient proxies, e.g. :func:`selection.scores.output_gradients`.
      labels: int ``(n,)`` classes (selection is per class, as in the paper).
      k: coreset size, ``1 <= k <= n``.
      method, key, epsilon: forwarded to :func:`facility_location`.

    Returns:
      :class:`Coreset` (indices sorted by class then pick order; int weights summing to ``n``).
    """
    check_key(key, allow_none=True)
    check_array(features, "features", ndim=2, kind="float", finite=True)
    check_array(labels, "labels", shape=(features.shape[0],), kind="int")
    n = features.shape[0]
    k = check_int(k, "k", min_value=1, max_value=n)
    f = jnp.asarray(features)
    lab = np.asarray(labels)
    classes, sizes = np.unique(lab, return_counts=True)
    budget = proportional_budget(sizes, k)
    keys = jax.random.split(key, len(classes)) if key is not None else [None] * len(classes)
    idx_all, w_all = [], []
    for c, b, kc in zip(classes, budget, keys, strict=False):
        if b == 0:
            continue
        members = np.flatnonzero(lab == c)
        d = np.asarray(pairwise_distances(f[members]))
        sim = (d.max() - d).astype(d.dtype)
        fl = facility_location(sim, int(b), method=method, key=kc, epsilon=epsilon)
        idx_all.append(members[fl.indices])
        w_all.append(np.bincount(fl.assignment, minlength=int(b)))
    return Coreset(np.concatenate(idx_all).astype(np.int64), np.concatenate(w_all).astype(np.int64))


# ----------------------------------------------------------------------------- k-center


def k_center_greedy(
    x: Any,
    k: int,
    *,
    key: jax.Array | None = None,
    selected: Any = None,
) -> np.ndarray:
    """Greedy k-center (Gonzalez 1985; Sener & Savarese 2018 "core-set" active learning).

    Repeatedly adds the point farthest from the current centres,
    ``j = argmax_i min_{c∈S} ‖x_i − x_c‖``; the covering radius is within 2× of the
    optimal k-center radius.

    Args:
      x: float ``(n, d)`` embeddings.
      k: number of *new* centres, ``1 <= k <= n − |selected|``.
      key: PRNG key picking the first centre when ``selected`` is empty (default: point 0).
      selected: optional int indices already in the set (e.g. labelled data).

    Returns:
      int ``(k,)`` new centre indices in selection order.
    """
    check_key(key, allow_none=True)
    check_array(x, "x", ndim=2, kind="float", finite=True)
    n = x.shape[0]
    xs = jnp.asarray(x)
    sel = np.zeros((0,), np.int64) if selected is None else np.asarray(check_array(selected, "selected", ndim=1, kind="int", nonempty=False))
    check_index_range(sel, "selected", n, "index")
    k = check_int(k, "k", min_value=1, max_value=n - len(np.unique(sel)))
    if sel.size == 0:
        first = 0 if key is None else int(jax.random.randint(key, (), 0, n))
        sel = np.asarray([first])
        k_rest, prefix = k - 1, [first]
    else:
        k_rest, prefix = k, []
    dmin = jnp.min(pairwise_distances(xs, xs[jnp.asarray(sel)]), axis=1)
    if k_rest == 0:
        return np.asarray(prefix, np.int64)
    _, idx = _k_center_from(xs, dmin, k_rest)
    return np.concatenate([np.asarray(prefix, np.int64), np.asarray(idx, np.int64)])


@functools.partial(jax.jit, static_argnames=("k",))
def _k_center_from(x, dmin, k):
    sq = jnp.sum(x**2, axis=1)

    def step(t, state):
        dmin, idx = state
        j = jnp.argmax(dmin)
        d = jnp.sqrt(jnp.maximum(sq - 2 * x @ x[j] + sq[j], 0.0))
        return jnp.minimum(dmin, d).at[j].set(0.0), idx.at[t].set(j.astype(idx.dtype))

    return jax.lax.fori_loop(0, k, step, (dmin, jnp.zeros((k,), jnp.int32)))


def covering_radius(x: Any, centers: Any) -> float:
    """``max_i min_{c ∈ centers} ‖x_i − x_c‖`` — the k-center objective."""
    check_array(x, "x", ndim=2, kind="float", finite=True)
    c = np.asarray(check_array(centers, "centers", ndim=1, kind="int"))
    check_index_range(c, "centers", x.shape[0], "index")
    return float(jnp.max(jnp.min(pairwise_distances(jnp.asarray(x), jnp.asarray(x)[c]), axis=1)))
