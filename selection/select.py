"""Turning per-example scores into subsets: top-/bottom-k, random, IPS, coverage-centric.

Every selector returns int64 indices into the scored dataset (sorted ascending unless
stated otherwise); :func:`to_mask` turns them into a boolean mask.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from distill.checks import check_array, check_float, check_index_range, check_int, check_key

__all__ = [
    "budget",
    "to_mask",
    "top_k",
    "bottom_k",
    "random_subset",
    "ips_sample",
    "even_allocation",
    "stratified_sample",
    "coverage_centric",
]


def budget(n: int, fraction: float) -> int:
    """Number of examples kept when keeping ``fraction`` of ``n``: ``round(fraction·n)``, at least 1."""
    n = check_int(n, "n", min_value=1)
    fraction = check_float(fraction, "fraction", min_value=0.0, max_value=1.0, strict_min=True)
    return int(min(n, max(1, round(fraction * n))))


def _np_rng(key: jax.Array) -> np.random.Generator:
    """A numpy generator seeded by a JAX key (host-side sampling: no per-shape compiles)."""
    check_key(key)
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.random.default_rng(np.asarray(data, np.uint32).ravel().tolist())


def _scores(scores: Any) -> np.ndarray:
    check_array(scores, "scores", ndim=1, kind="numeric", finite=True)
    return np.asarray(scores)


def _k(k: Any, n: int) -> int:
    return check_int(k, "k", min_value=1, max_value=n)


def to_mask(indices: Any, n: int) -> np.ndarray:
    """Boolean ``(n,)`` mask that is True at ``indices``."""
    n = check_int(n, "n", min_value=1)
    idx = np.asarray(check_array(indices, "indices", ndim=1, kind="int", nonempty=False))
    check_index_range(idx, "indices", n, "index")
    mask = np.zeros(n, bool)
    mask[idx] = True
    return mask


def top_k(scores: Any, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores (ties: lower index first), sorted ascending."""
    s = _scores(scores)
    k = _k(k, s.shape[0])
    return np.sort(np.argsort(-s, kind="stable")[:k]).astype(np.int64)


def bottom_k(scores: Any, k: int) -> np.ndarray:
    """Indices of the ``k`` smallest scores (ties: lower index first), sorted ascending."""
    s = _scores(scores)
    k = _k(k, s.shape[0])
    return np.sort(np.argsort(s, kind="stable")[:k]).astype(np.int64)


def random_subset(key: jax.Array, n: int, k: int) -> np.ndarray:
    """``k`` of ``n`` indices uniformly without replacement, sorted ascending."""
    n = check_int(n, "n", min_value=1)
    k = _k(k, n)
    return np.sort(_np_rng(key).choice(n, k, replace=False)).astype(np.int64)


def ips_sample(key: jax.Array, scores: Any, k: int, *, power: float = 1.0) -> np.ndarray:
    """Inverse propensity sampling: ``k`` examples without replacement, ``P(i) ∝ score_i^{−power}``.

    Successive draws without replacement (Gumbel-top-k with log-weights
    ``−power·log score_i``). With a density score this uniformises the kept sample over
    the input space (dissertation Ch. 2, Theorem 2.3.2; the sampling rule of the DENSITY
    sampler — "keeping x with probability proportional to 1/S(x)").

    Args:
      key: PRNG key.
      scores: positive ``(n,)`` scores (densities, perplexities, ...).
      k: sample size.
      power: exponent of the inverse weighting (1 = plain IPS).

    Returns:
      int64 ``(k,)`` indices, sorted ascending.
    """
    check_key(key)
    s = _scores(scores)
    k = _k(k, s.shape[0])
    power = check_float(power, "power")
    if np.any(s <= 0):
        raise ValueError("scores: expected positive scores for inverse propensity sampling")
    logw = -power * jnp.log(jnp.asarray(s, jnp.float32))
    g = jax.random.gumbel(key, logw.shape, logw.dtype)
    return np.sort(np.asarray(jax.lax.top_k(logw + g, k)[1])).astype(np.int64)


def even_allocation(sizes: Any, k: int) -> np.ndarray:
    """Split a budget ``k`` as evenly as possible over groups of the given ``sizes``.

    Groups are visited from the smallest; each gets ``min(size, ⌊remaining / groups left⌋)``
    (the leftover of small groups is redistributed), and any final remainder goes one by
    one to the largest groups with room. Used by coverage-centric pruning (Zheng et al.,
    2023, Alg. 1) and S2L (Yang et al., 2024).

    Returns:
      int64 per-group budgets, each ``<= size``, summing to ``min(k, Σ sizes)``.
    """
    sizes = np.asarray(check_array(sizes, "sizes", ndim=1, kind="int"), np.int64)
    if np.any(sizes < 0):
        raise ValueError("sizes: expected non-negative group sizes")
    k = check_int(k, "k", min_value=0)
    k = min(k, int(sizes.sum()))
    alloc = np.zeros_like(sizes)
    order = np.argsort(sizes, kind="stable")
    remaining = k
    for pos, g in enumerate(order):
        left = len(order) - pos
        alloc[g] = min(sizes[g], remaining // left)
        remaining -= alloc[g]
    for g in order[::-1]:  # remainder (< number of groups): one each to the largest groups
        if remaining == 0:
            break
        if alloc[g] < sizes[g]:
            alloc[g] += 1
            remaining -= 1
    return alloc


def stratified_sample(key: jax.Array, groups: Any, k: int) -> np.ndarray:
    """``k`` indices spread evenly over groups (:func:`even_allocation`), uniform within each.

    Args:
      key: PRNG key.
      groups: int ``(n,)`` group id of every example (strata, clusters).
      k: total sample size.

    Returns:
      int64 ``(k,)`` indices, sorted ascending.
    """
    g = np.asarray(check_array(groups, "groups", ndim=1, kind="int"))
    k = _k(k, g.shape[0])
    ids, inv, sizes = np.unique(g, return_inverse=True, return_counts=True)
    alloc = even_allocation(sizes, k)
    rng = _np_rng(key)
    out = []
    for i, b in enumerate(alloc):
        if b:
            members = np.flatnonzero(inv == i)
            out.append(rng.choice(members, int(b), replace=False))
    return np.sort(np.concatenate(out)).astype(np.int64)


def coverage_centric(
    key: jax.Array,
    scores: Any,
    k: int,
    *,
    n_strata: int = 50,
    hard_cutoff: float = 0.1,
) -> np.ndarray:
    """Coverage-centric coreset selection (CCS; Zheng et al., ICLR 2023, Alg. 1).

    1. Drop the ``hard_cutoff`` fraction of examples with the highest difficulty scores
       (likely mislabeled / unlearnable), but never so many that fewer than ``k`` remain.
    2. Split the remaining score range into ``n_strata`` equal-width strata.
    3. Allocate the budget evenly over strata, smallest stratum first
       (:func:`even_allocation`), and sample uniformly inside each stratum.

    Args:
      key: PRNG key.
      scores: ``(n,)`` difficulty scores (higher = harder; e.g. EL2N, forgetting, AUM·(−1)).
      k: subset size.
      n_strata: number of score strata (>= 1).
      hard_cutoff: fraction of hardest examples pruned first, in ``[0, 1)``.

    Returns:
      int64 ``(k,)`` indices, sorted ascending.
    """
    s = _scores(scores)
    n = s.shape[0]
    k = _k(k, n)
    n_strata = check_int(n_strata, "n_strata", min_value=1)
    hard_cutoff = check_float(hard_cutoff, "hard_cutoff", min_value=0.0)
    if hard_cutoff >= 1:
        raise ValueError(f"hard_cutoff: expected a number < 1, got {hard_cutoff}")
    n_drop = min(int(np.floor(hard_cutoff * n)), n - k)
    order = np.argsort(-s, kind="stable")
    keep = np.sort(order[n_drop:])
    ks = s[keep]
    lo, hi = float(ks.min()), float(ks.max())
    width = (hi - lo) / n_strata if hi > lo else 1.0
    strata = np.minimum(((ks - lo) / width).astype(np.int64), n_strata - 1)
    return np.sort(keep[stratified_sample(key, strata, k)]).astype(np.int64)
