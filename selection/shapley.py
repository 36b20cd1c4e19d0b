"""Data Shapley: exact enumeration, truncated Monte-Carlo, and the KNN closed form.

The Shapley value of training point ``i`` under a utility ``U`` (e.g. test accuracy of
a model trained on a subset) is its average marginal contribution over all orders in
which the data could arrive (lecture 001, "Data Shapley"; Ghorbani & Zou 2019)::

    φ_i = Σ_{S ⊆ D∖{i}} |S|! (n − |S| − 1)! / n! · [U(S ∪ {i}) − U(S)]
        = E_{π uniform} [U(P_i^π ∪ {i}) − U(P_i^π)]      (P_i^π: points before i in π)

It is the unique valuation with efficiency ``Σ_i φ_i = U(D) − U(∅)``, symmetry,
null-player and additivity.

* :func:`exact_shapley` — the sum over all ``2ⁿ`` subsets (``n ≤ 16``; tests use ``n ≤ 8``).
* :func:`tmc_shapley` — truncated Monte-Carlo (Ghorbani & Zou 2019, Alg. 1): scan each
  random permutation, stop evaluating ``U`` once the prefix is within
  ``truncation · |U(D)|`` of the full-data utility (later marginals are set to 0), and
  stop drawing permutations when the running estimate has converged. The default
  ``'vmap'`` engine evaluates a whole batch of permutations at once (the utility
  ``vmap``-ped over the batch, position by position) and shards the batch over a mesh
  with :func:`distill.parallel.map_rows`; ``'map'`` runs them one at a time (each
  truncation skips its own utility calls), ``'python'`` accepts any Python utility.
* :func:`knn_shapley` — the exact Shapley value of the K-nearest-neighbour utility in
  ``O(n log n)`` per test point (Jia et al. 2019, Thm. 1), ``vmap``-ped over test points
  and summed across devices with :func:`distill.parallel.sum_rows`.

Utilities are jittable functions of a boolean membership mask ``(n,) -> scalar``;
:func:`knn_utility` builds the one :func:`knn_shapley` is exact for.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from distill import parallel
from distill.checks import check_array, check_choice, check_float, check_int, check_key, check_same_leading

__all__ = ["exact_shapley", "TMCShapley", "tmc_shapley", "knn_utility", "knn_shapley"]

Utility = Callable[[jax.Array], jax.Array]


def _check_utility(utility: Any) -> None:
    if not callable(utility):
        raise TypeError(f"utility: expected a callable mask -> scalar, got {type(utility).__name__}")


def exact_shapley(utility: Utility, n: int) -> np.ndarray:
    """Shapley values by enumerating all ``2ⁿ`` subsets (the reference for the estimators).

    Args:
      utility: jittable ``U(mask (n,) bool) -> scalar``; evaluated on every subset
        (``vmap``-ped), including the empty one.
      n: number of players, ``1 <= n <= 16``.

    Returns:
      ``(n,)`` float64 values ``φ_i = Σ_{S∌i} |S|!(n−|S|−1)!/n! [U(S∪i) − U(S)]``.
    """
    _check_utility(utility)
    n = check_int(n, "n", min_value=1, max_value=16)
    codes = np.arange(2**n)
    masks = ((codes[:, None] >> np.arange(n)[None, :]) & 1).astype(bool)
    u = np.asarray(jax.jit(jax.vmap(utility))(jnp.asarray(masks)), np.float64)
    size = masks.sum(1)
    weight = np.array([math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)])
    phi = np.zeros(n)
    for i in range(n):
        without = ~masks[:, i]
        phi[i] = np.sum(weight[size[without]] * (u[codes[without] | (1 << i)] - u[codes[without]]))
    return phi


class TMCShapley(NamedTuple):
    """Result of :func:`tmc_shapley`.

    Attributes:
      values: ``(n,)`` Monte-Carlo Shapley estimates (mean marginal over permutations).
      n_permutations: permutations drawn.
      utility_calls: utility evaluations actually made (truncation skips the rest).
      converged: whether the convergence criterion was met before ``max_permutations``.
      errors: the convergence statistic after each check.
    """

    values: np.ndarray
    n_permutations: int
    utility_calls: int
    converged: bool
    errors: np.ndarray


@functools.partial(jax.jit, static_argnames=("utility",))
def _tmc_map(utility, perms, u_full, u_empty, tol):
    """One permutation at a time (``lax.map``): the reference engine ``'map'``."""
    n = perms.shape[1]

    def one(perm):
        def step(carry, j):
            mask, prev, calls = carry
            mask = mask.at[perm[j]].set(True)
            # truncation: once the prefix is as good as D (within tol), marginals are ~0
            done = jnp.abs(u_full - prev) < tol
            cur = jax.lax.cond(done, lambda: prev, lambda: utility(mask).astype(prev.dtype))
            return (mask, cur, calls + (~done).astype(jnp.int32)), cur - prev

        (_, _, calls), marg = jax.lax.scan(step, (jnp.zeros((n,), bool), u_empty, jnp.int32(0)), jnp.arange(n))
        return jnp.zeros((n,), marg.dtype).at[perm].set(marg), calls

    # lax.map (not vmap): under vmap a cond evaluates both branches and truncation would save nothing
    return jax.lax.map(one, perms)


@functools.partial(jax.jit, static_argnames=("utility", "mesh"))
def _tmc_vmap(utility, perms, u_full, u_empty, tol, mesh):
    """All permutations at once: ``vmap``-ped utility, rows sharded over ``mesh``.

    Position ``j`` of every permutation in the shard is evaluated together; the
    ``while_loop`` stops as soon as every permutation of the shard is truncated (a
    truncated permutation stays truncated: its ``v`` no longer changes), so truncation
    still saves work, at the granularity of the shard.
    """

    def block(p1, u_full, u_empty, tol):
        b, n = p1.shape
        # perms arrive shifted by +1 so that map_rows' zero padding rows are recognisable
        valid, p = p1[:, 0] > 0, p1 - 1
        rows = jnp.arange(b)

        def pending(prev):
            return valid & ~(jnp.abs(u_full - prev) < tol)

        def cond(c):
            return (c[0] < n) & jnp.any(pending(c[2]))

        def body(c):
            j, mask, prev, marg, calls = c
            idx = p[:, j]
            mask = mask.at[rows, idx].set(True)
            todo = pending(prev)
            cur = jnp.where(todo, jax.vmap(utility)(mask).astype(prev.dtype), prev)
            marg = marg.at[rows, idx].set(cur - prev)
            return j + 1, mask, cur, marg, calls + todo.astype(jnp.int32)

        init = (
            jnp.int32(0),
            jnp.zeros((b, n), bool),
            jnp.full((b,), u_empty),
            jnp.zeros((b, n), u_empty.dtype),
            jnp.zeros((b,), jnp.int32),
        )
        _, _, _, marg, calls = jax.lax.while_loop(cond, body, init)
        return marg, calls

    return parallel.map_rows(block, perms + 1, u_full, u_empty, tol, mesh=mesh)


def _tmc_python(utility, perms, u_full, u_empty, tol):
    """Plain Python loops for utilities that cannot be traced (engine ``'python'``)."""
    perms = np.asarray(perms)
    b, n = perms.shape
    marg, calls = np.zeros((b, n)), np.zeros(b, np.int64)
    for r, perm in enumerate(perms):
        mask, prev = np.zeros(n, bool), u_empty
        for i in perm:
            if abs(u_full - prev) < tol:  # truncated: every later marginal is 0
                break
            mask[i] = True
            cur = float(utility(mask.copy()))
            marg[r, i] = cur - prev
            calls[r] += 1
            prev = cur
    return marg, calls


def tmc_shapley(
    key: jax.Array,
    utility: Utility,
    n: int,
    *,
    truncation: float = 0.01,
    max_permutations: int = 1000,
    min_permutations: int = 20,
    batch: int = 10,
    convergence_tol: float = 0.05,
    window: int = 20,
    engine: str = "vmap",
    batches_per_call: int = 1,
    mesh: Any = None,
) -> TMCShapley:
    """Truncated Monte-Carlo Shapley (Ghorbani & Zou 2019, Algorithm 1).

    For each permutation ``π``: ``v₀ = U(∅)``; for ``j = 1..n``, if
    ``|U(D) − v_{j−1}| < truncation·|U(D)|`` then ``v_j = v_{j−1}`` (truncated) else
    ``v_j = U(π_{1..j})``; the marginal of ``π_j`` is ``v_j − v_{j−1}``. The estimate is
    the running mean of the marginals. Convergence (checked every ``batch``
    permutations, after ``min_permutations``): the mean absolute change of the estimate
    over the last ``window`` permutations, relative to its mean absolute value,
    ``mean_i |φ^t_i − φ^{t−w}_i| / mean_i |φ^t_i| < convergence_tol`` (the paper's
    criterion, with a mean instead of per-point ratios so near-zero values don't stall it).

    Engines (identical results for the same ``key``: the permutations, the truncation
    rule and the convergence checks do not depend on the engine or on
    ``batches_per_call``):

    * ``'vmap'`` (default) — ``batches_per_call · batch`` permutations per jitted call,
      position ``j`` of all of them evaluated at once (``vmap`` of the utility), the
      permutations sharded over ``mesh`` with :func:`distill.parallel.map_rows`. The scan
      over positions stops when every permutation of a shard is truncated. Permutations
      past the convergence point of a call are discarded (not counted).
    * ``'map'`` — one permutation after another in a jitted ``lax.map`` (a truncated
      prefix skips its utility calls individually; one device).
    * ``'python'`` — plain Python loops; ``utility`` may be any callable on a numpy bool
      mask returning a float (e.g. one that trains an sklearn model).

    Args:
      key: PRNG key (permutations).
      utility: ``U(mask (n,) bool) -> scalar``, jittable for ``'vmap'``/``'map'`` (must
        accept the empty mask).
      n: number of training points (>= 1).
      truncation: performance tolerance (>= 0; 0 disables truncation: plain Monte-Carlo).
      max_permutations, min_permutations: bounds on the number of permutations.
      batch: permutations between convergence checks (one PRNG split each).
      convergence_tol: threshold of the convergence statistic (> 0).
      window: look-back in permutations for the convergence statistic.
      engine: ``'vmap'``, ``'map'`` or ``'python'``.
      batches_per_call: batches evaluated per call of the ``'vmap'`` engine (more
        parallel work per call, at the price of speculative permutations near convergence).
      mesh: optional device mesh over permutations (``'vmap'`` engine only).

    Returns:
      :class:`TMCShapley`.
    """
    check_key(key)
    _check_utility(utility)
    n = check_int(n, "n", min_value=1)
    truncation = check_float(truncation, "truncation", min_value=0.0)
    max_permutations, min_permutations, batch, window, batches_per_call = (
        check_int(v, name, min_value=1) for v, name in (
            (max_permutations, "max_permutations"), (min_permutations, "min_permutations"), (batch, "batch"),
            (window, "window"), (batches_per_call, "batches_per_call")))
    convergence_tol = check_float(convergence_tol, "convergence_tol", min_value=0.0, strict_min=True)
    check_choice(engine, "engine", ("vmap", "map", "python"))
    if mesh is not None and engine != "vmap":
        raise ValueError(f"mesh: only the 'vmap' engine shards permutations, got engine={engine!r}")
    u_full, u_empty, tol = _tmc_endpoints(utility, n, truncation, engine)
    run = _RunningMean(n, window, max(min_permutations, window + 1), convergence_tol)
    while run.drawn < max_permutations and not run.converged:
        n_batches = batches_per_call if engine == "vmap" else 1
        key, perms, sizes = _draw_permutations(key, n, batch, max_permutations - run.drawn, n_batches)
        marg, c = _tmc_engine(engine, utility, perms, u_full, u_empty, tol, mesh)
        run.add(np.asarray(marg, np.float64), np.asarray(c), sizes)
    return TMCShapley(run.total / run.drawn, run.drawn, run.calls, run.converged, np.asarray(run.errors))


def _tmc_engine(engine, utility, perms, u_full, u_empty, tol, mesh):
    if engine == "vmap":
        return _tmc_vmap(utility, perms, u_full, u_empty, tol, mesh)
    return (_tmc_map if engine == "map" else _tmc_python)(utility, perms, u_full, u_empty, tol)


def _tmc_endpoints(utility, n, truncation, engine):
    """``U(D)``, ``U(∅)`` and the absolute truncation tolerance ``truncation·|U(D)|``."""
    if engine == "python":
        u_full = float(utility(np.ones((n,), bool)))
        return u_full, float(utility(np.zeros((n,), bool))), truncation * abs(u_full)
    u_full = jnp.asarray(utility(jnp.ones((n,), bool)))
    u_empty = jnp.asarray(utility(jnp.zeros((n,), bool)), u_full.dtype)
    return u_full, u_empty, truncation * jnp.abs(u_full)


def _draw_permutations(key, n, batch, left, n_batches):
    """Up to ``n_batches`` batches of ``min(batch, left)`` permutations, one key split per
    batch; returns the advanced key, the ``(Σ sizes, n)`` permutations and the sizes."""
    sizes, chunks = [], []
    for _ in range(n_batches):
        if left == 0:
            break
        b = min(batch, left)
        key, sub = jax.random.split(key)
        chunks.append(jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(sub, b)))
        sizes.append(b)
        left -= b
    return key, (jnp.concatenate(chunks) if len(chunks) > 1 else chunks[0]), sizes


class _RunningMean:
    """TMC's running mean of the marginals with the windowed convergence check after
    every batch of permutations (permutations after convergence are discarded)."""

    def __init__(self, n, window, first_check, tol):
        self.total, self.history, self.errors = np.zeros(n), [np.zeros(n)], []
        self.window, self.first_check, self.tol = window, first_check, tol
        self.drawn, self.calls, self.converged = 0, 2, False

    def add(self, marg, calls, sizes):
        start = 0
        for b in sizes:  # the convergence check after every `batch` permutations
            for row in marg[start : start + b]:  # running means, for the look-back
                self.total += row
                self.drawn += 1
                self.history.append(self.total / self.drawn)
            self.calls += int(np.sum(calls[start : start + b]))
            start += b
            if self.drawn >= self.first_check:
                cur, old = self.history[-1], self.history[-1 - self.window]
                err = float(np.mean(np.abs(cur - old)) / max(np.mean(np.abs(cur)), 1e-12))
                self.errors.append(err)
                if err < self.tol:
                    self.converged = True
                    return
            self.history = self.history[-(self.window + 1) :]


def _check_knn(x_train, y_train, x_test, y_test, k):
    check_array(x_train, "x_train", ndim=2, kind="float", finite=True)
    check_array(y_train, "y_train", ndim=1, kind="int")
    check_same_leading([("x_train", x_train), ("y_train", y_train)])
    check_array(x_test, "x_test", shape=(None, x_train.shape[1]), kind="float", finite=True)
    check_array(y_test, "y_test", ndim=1, kind="int")
    check_same_leading([("x_test", x_test), ("y_test", y_test)])
    return check_int(k, "k", min_value=1)


def _sq_dists(a, b):
    return jnp.maximum(jnp.sum(a**2, 1)[:, None] - 2 * a @ b.T + jnp.sum(b**2, 1)[None, :], 0.0)


def knn_utility(x_train: Any, y_train: Any, x_test: Any, y_test: Any, k: int) -> Utility:
    """The K-NN utility of Jia et al. (2019): ``U(S) = mean_t (1/K) Σ_{r ≤ min(K,|S|)} 1[y_{α_r(S; t)} = y_t]``.

    ``α_r(S; t)`` is the ``r``-th nearest point of ``S`` to test point ``t`` (Euclidean;
    ties by index). ``U(∅) = 0``.

    Returns:
      A jittable ``U(mask (n,) bool) -> scalar``.
    """
    k = _check_knn(x_train, y_train, x_test, y_test, k)
    d = _sq_dists(jnp.asarray(x_test), jnp.asarray(x_train))  # (m, n)
    match = (jnp.asarray(y_test)[:, None] == jnp.asarray(y_train)[None, :]).astype(d.dtype)
    kk = min(k, d.shape[1])

    def utility(mask: jax.Array) -> jax.Array:
        neg = jnp.where(mask[None, :], -d, -jnp.inf)
        vals, idx = jax.lax.top_k(neg, kk)
        hit = jnp.take_along_axis(match, idx, axis=1) * jnp.isfinite(vals)
        return jnp.mean(jnp.sum(hit, axis=1)) / k

    return utility


def knn_shapley(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    k: int,
    *,
    mesh: Any = None,
) -> jax.Array:
    """Exact Shapley values of :func:`knn_utility` in closed form (Jia et al. 2019, Thm. 1).

    Per test point, with training points sorted by distance ``α_1, …, α_n`` (nearest
    first) and ``m_j = 1[y_{α_j} = y_t]``::

        s_{α_n} = m_n / max(n, K)
        s_{α_j} = s_{α_{j+1}} + (m_j − m_{j+1}) / K · min(K, j) / j

    and the values are averaged over test points (the utility is a mean). Test points
    are ``vmap``-ped and summed across ``mesh`` with :func:`distill.parallel.sum_rows`.

    Args:
      x_train: float ``(n, d)``.  y_train: int ``(n,)``.
      x_test: float ``(m, d)``.  y_test: int ``(m,)``.
      k: neighbours ``K >= 1``.
      mesh: optional device mesh over test points.

    Returns:
      ``(n,)`` Shapley values (they sum to ``U(D)``).
    """
    k = _check_knn(x_train, y_train, x_test, y_test, k)
    xt = jnp.asarray(x_test)
    dtype = xt.dtype
    out = _knn_shapley(jnp.asarray(x_train), jnp.asarray(y_train), xt, jnp.asarray(y_test), k, mesh)
    return (out / x_test.shape[0]).astype(dtype)


@functools.partial(jax.jit, static_argnames=("k", "mesh"))
def _knn_shapley(x, y, xt, yt, k, mesh):
    n = x.shape[0]
    j = jnp.arange(1, n + 1, dtype=xt.dtype)
    coef = jnp.minimum(k, j) / j / k  # min(K, j)/(j K), 1-indexed j

    def one(xq, yq, x, y):
        order = jnp.argsort(jnp.sum((x - xq) ** 2, axis=1), stable=True)
        m = (y[order] == yq).astype(xt.dtype)
        diff = (m[:-1] - m[1:]) * coef[:-1]  # term of s_{α_j} − s_{α_{j+1}}, j = 1..n−1
        tail = jnp.cumsum(diff[::-1])[::-1]  # Σ_{l ≥ j} diff_l
        # Base case: U({α_n}) − U(∅) over K slots; with K > n the farthest point still fills
        # one of K slots (U(D) = Σ m / K), so m_n / max(n, K), not m_n / n (Jia et al. assume K ≤ n).
        s = m[-1] / max(n, k) + jnp.concatenate([tail, jnp.zeros((1,), xt.dtype)])
        return jnp.zeros((n,), xt.dtype).at[order].set(s)

    def rows(batch, w, x_, y_):
        xq, yq = batch
        return jnp.sum(w[:, None] * jax.vmap(one, (0, 0, None, None))(xq, yq, x_, y_), axis=0)

    return parallel.sum_rows(rows, (xt, yt), x, y, mesh=mesh)
