"""Ranking metrics for collaborative filtering (dissertation §3.5.4).

Every metric ranks, per user, all items by score after removing the user's *train*
items from the ranking (their score is set to ``-inf`` before the top-k), and
compares the ranking with the user's held-out *test* items. With

* ``T_u`` — the user's test items that are not train items (positives),
* ``N_u`` — the items that are neither test nor train (negatives, for AUC),
* ``Ŷ_u = (ŷ_1, …, ŷ_k)`` — the top-k of the masked ranking,
* ``m = min(|T_u|, k)`` — the most hits a length-k list can hold,

the per-user metrics are::

    HR@k   = |Ŷ_u ∩ T_u| / m
    nDCG@k = Σ_{r≤k} 1[ŷ_r ∈ T_u] / log2(r+1)  /  Σ_{r≤m} 1 / log2(r+1)
    AUC    = 1/(|T_u||N_u|) Σ_{i∈T_u} Σ_{j∈N_u} (1[s_i > s_j] + ½·1[s_i = s_j])
    PSP@k  = (1/m) Σ_{r≤k} 1[ŷ_r ∈ T_u] / p(ŷ_r)  /  Σ_{top-m i∈T_u by 1/p(i)} 1/p(i)

(see :func:`psp_at_k` for why PSP is normalised this way), with the item propensity
``p`` of Jain et al. (2016) adapted to recommendation (:func:`item_propensity`).
:func:`evaluate` reports ``100 ×`` the mean over the users that have at least one test
item; the per-user functions return 0 for the others and :func:`valid_users` says
which users count.

Conventions (identical in the numpy brute force of the tests):

* Ties in scores are broken deterministically by item index, lower index first —
  the order of ``numpy.argsort(-scores, kind="stable")`` and of ``jax.lax.top_k``.
  ``-0.0`` is treated as ``+0.0`` (``lax.top_k`` would otherwise rank it lower).
* ``k`` larger than the number of items is clipped to ``n_items``. When a user has
  fewer than ``k`` non-train items the tail of the list is filled with train items
  (at ``-inf``); they are never hits.
* A test item that is also a train item is removed from the ranking like every train
  item, so it is not a positive either.
* NaN in, NaN out: called eagerly, every function refuses NaN/inf scores with a
  ``ValueError``; under ``jax.jit`` (values unknown when checks run) a user whose scores
  hold a NaN gets NaN for every metric — never a plausible number — and the NaN then
  carries into any mean over users.

Everything is jitted and ``vmap``-ed over users; :func:`evaluate` runs in fixed-size
user batches (one compilation) and optionally shards users over a device mesh with
:func:`distill.parallel.map_rows`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from distill import parallel
from distill.checks import (
    check_array,
    check_binary,
    check_choice,
    check_finite,
    check_float,
    check_int,
    is_concrete,
)

__all__ = [
    "hr_at_k",
    "ndcg_at_k",
    "psp_at_k",
    "auc",
    "top_k_items",
    "valid_users",
    "item_propensity",
    "evaluate",
    "METRICS",
]

#: Metric names accepted by :func:`evaluate`.
METRICS = ("hr", "ndcg", "psp", "auc")
# Display names of the top-k metrics in :func:`evaluate`'s result ("HR@10", ...).
_DISPLAY = {"hr": "HR", "ndcg": "nDCG", "psp": "PSP"}
_TOPK_METRICS = ("hr", "ndcg", "psp")


# --------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------


def _check_scores(scores: Any, name: str = "scores") -> None:
    check_array(scores, name, ndim=2, kind="numeric")
    check_finite(scores, name)  # NaN would make the ranking (and every metric) undefined


def _check_mask(mask: Any, name: str, shape: tuple[int, ...]) -> None:
    check_array(mask, name, ndim=2, kind="numeric", shape=shape)
    check_binary(mask, name)


def _check_inputs(scores: Any, test_mask: Any, train_mask: Any) -> None:
    _check_scores(scores)
    _check_mask(test_mask, "test_mask", tuple(scores.shape))
    if train_mask is not None:
        _check_mask(train_mask, "train_mask", tuple(scores.shape))


def _check_propensity(propensity: Any, n_items: int) -> None:
    check_array(propensity, "propensity", ndim=1, kind="numeric", shape=(n_items,), finite=True)
    if is_concrete(propensity) and not bool(np.all(np.asarray(propensity) > 0)):
        raise ValueError("propensity: expected positive values (1/propensity weights hits)")


def _clip_k(k: Any, n_items: int) -> int:
    # k > n_items is legal (e.g. HR@100 on a 50-item catalogue): the list is the whole
    # catalogue, so clipping changes nothing but the array shapes.
    return min(check_int(k, "k", min_value=1), n_items)


# --------------------------------------------------------------------------------------
# Per-user kernels (traced; vmapped over users)
# --------------------------------------------------------------------------------------


def _float_dtype(scores: jax.Array) -> Any:
    dt = jnp.asarray(scores).dtype
    return dt if jnp.issubdtype(dt, jnp.floating) else jnp.result_type(float)


def _prepare(scores, test_mask, train_mask):
    """Canonical float scores, positives ``T`` and train mask, all ``(n_users, n_items)``."""
    s = jnp.asarray(scores)
    s = s.astype(_float_dtype(s))
    # lax.top_k orders -0.0 below +0.0 while numpy (and math) call them equal.
    s = jnp.where(s == 0, jnp.zeros((), s.dtype), s)
    train = (
        jnp.zeros(s.shape, bool) if train_mask is None else jnp.asarray(train_mask) != 0
    )
    pos = (jnp.asarray(test_mask) != 0) & ~train
    return s, pos, train


def _auc_few_positives(s, pos, neg, n_pos, n_neg, max_pos):
    """AUC of one user with at most ``max_pos`` (static) test items, without a full sort.

    ``2U = Σ_{j∈N} (2·#{i∈T: s_i > s_j} + #{i∈T: s_i = s_j})``: the test scores are taken
    with one ``top_k`` (padded with −inf, below every finite score) and each item's
    counts come from two binary searches into them — ``O(n_items log max_pos)`` instead
    of the ``O(n_items log n_items)`` sort, which dominates on CPU when test sets are small.
    """
    dt = s.dtype
    asc = jax.lax.top_k(jnp.where(pos, s, -jnp.inf), max_pos)[0][::-1]
    n_le = jnp.searchsorted(asc, s, side="right", method="scan_unrolled")
    n_lt = jnp.searchsorted(asc, s, side="left", method="scan_unrolled")
    twice_u = jnp.sum(jnp.where(neg, (2 * (max_pos - n_le) + (n_le - n_lt)).astype(dt), 0))
    pairs = n_pos.astype(dt) * n_neg.astype(dt)
    return jnp.where(pairs > 0, twice_u / (2 * jnp.where(pairs > 0, pairs, 1)), 0)


def _user_metrics(s, pos, train, w, *, ks: tuple[int, ...], metrics: tuple[str, ...], auc_pos: int | None = None):
    """All requested metrics of one user (``s``, ``pos``, ``train``: ``(n_items,)``).

    ``auc_pos``: a static bound on the user's test items, for :func:`_auc_few_positives`;
    ``None`` uses the sort (any number of test items).

    Returns a dict ``{"hr@k": (), ..., "auc": (), "n_pos": (), "n_neg": ()}``.
    """
    dt = s.dtype
    n_pos = jnp.sum(pos)
    out = {"n_pos": n_pos}
    if any(m in metrics for m in _TOPK_METRICS):
        kmax = max(ks)
        # Train items go to -inf so they sit below every candidate; top_k breaks ties
        # by lower index, the same rule as a stable argsort of -scores.
        _, idx = jax.lax.top_k(jnp.where(train, -jnp.inf, s), kmax)
        # pos excludes train items, so -inf fillers (k > #candidates) are never hits.
        hits = pos[idx].astype(dt)
        n_hits = jnp.cumsum(hits)  # n_hits[k-1] = |top-k ∩ T|
        # m = min(|T|, k); max(m, 1) only avoids 0/0 for users without positives,
        # whose numerators are 0 anyway.
        m = {k: jnp.maximum(jnp.minimum(n_pos, k), 1).astype(dt) for k in ks}
        if "hr" in metrics:
            for k in ks:
                out[f"hr@{k}"] = n_hits[k - 1] / m[k]
        if "ndcg" in metrics:
            disc = 1.0 / jnp.log2(jnp.arange(2, kmax + 2, dtype=dt))  # rank r -> 1/log2(r+1)
            dcg = jnp.cumsum(hits * disc)
            idcg = jnp.cumsum(disc)
            for k in ks:
                out[f"ndcg@{k}"] = dcg[k - 1] / idcg[m[k].astype(jnp.int32) - 1]
        if "psp" in metrics:
            gain = jnp.cumsum(hits * w[idx])  # Σ_{r≤k} 1[hit] / p(ŷ_r)
            # The best list puts the test items with the largest 1/p first; non-test
            # items get weight 0, so the cumulative sum at k-1 is exactly the sum of
            # the min(|T|, k) largest test weights.
            best = jnp.cumsum(jax.lax.top_k(jnp.where(pos, w, 0), kmax)[0])
            for k in ks:
                denom = m[k] * best[k - 1]
                has = n_pos > 0  # else best = 0: guard the division, report 0
                out[f"psp@{k}"] = jnp.where(has, gain[k - 1] / jnp.where(has, denom, 1), 0)
                out[f"psp_unit@{k}"] = jnp.where(
                    has, gain[k - 1] / jnp.where(has, best[k - 1], 1), 0
                )
    neg = ~pos & ~train
    n_neg = jnp.sum(neg)
    out["n_neg"] = n_neg
    if "auc" in metrics and auc_pos is not None:
        out["auc"] = _auc_few_positives(s, pos, neg, n_pos, n_neg, auc_pos)
    elif "auc" in metrics:
        # Mann–Whitney U without the (pos × neg) matrix:
        #   2U = Σ_{i∈T} (#{j∈N: s_j < s_i} + #{j∈N: s_j ≤ s_i}).
        # One O(n log n) sort by score, then O(n) scans: with c = running count of
        # negatives, #{s_j < s_i} is c just before i's tie group and #{s_j ≤ s_i} is c
        # at the end of it (c is non-decreasing, so a cummax / reverse cummin over the
        # group boundaries carries those values to every member of the group).
        s_sorted, neg_s, pos_s = jax.lax.sort((s, neg, pos), num_keys=1)
        c = jnp.cumsum(neg_s.astype(jnp.int32))
        c_before = c - neg_s.astype(jnp.int32)
        first = jnp.concatenate([jnp.ones((1,), bool), s_sorted[1:] != s_sorted[:-1]])
        last = jnp.concatenate([s_sorted[1:] != s_sorted[:-1], jnp.ones((1,), bool)])
        below = jax.lax.cummax(jnp.where(first, c_before, 0))
        at_or_below = jax.lax.cummin(jnp.where(last, c, c[-1]), reverse=True)
        twice_u = jnp.sum(jnp.where(pos_s, (below + at_or_below).astype(dt), 0))
        pairs = n_pos.astype(dt) * n_neg.astype(dt)  # in float: int32 could overflow
        out["auc"] = jnp.where(pairs > 0, twice_u / (2 * jnp.where(pairs > 0, pairs, 1)), 0)
    # NaN in -> NaN out: a NaN score makes the ranking undefined, and top_k/sort would
    # silently place it (first, for top_k) and return a plausible number. Eager calls
    # refuse NaN before getting here; under jit this is the only signal.
    undefined = jnp.any(jnp.isnan(s))
    return {k: v if k in ("n_pos", "n_neg") else jnp.where(undefined, jnp.nan, v) for k, v in out.items()}


def _batch_metrics(scores, test_mask, train_mask, w, *, ks, metrics):
    """:func:`_user_metrics` for every row: a dict of ``(n_users,)`` arrays."""
    s, pos, train = _prepare(scores, test_mask, train_mask)
    fn = functools.partial(_user_metrics, ks=ks, metrics=metrics)
    return jax.vmap(fn, in_axes=(0, 0, 0, None))(s, pos, train, w)


@functools.partial(jax.jit, static_argnames=("ks", "metrics"))
def _per_user(scores, test_mask, train_mask, w, *, ks, metrics):
    return _batch_metrics(scores, test_mask, train_mask, w, ks=ks, metrics=metrics)


def _weights(propensity, dtype, n_items):
    """PSP weights ``1/p`` (a placeholder of ones when PSP is not computed)."""
    if propensity is None:
        return np.ones((n_items,), dtype)  # numpy: no eager device op per call
    return 1.0 / jnp.asarray(propensity).astype(dtype)


# --------------------------------------------------------------------------------------
# Public per-user metrics
# --------------------------------------------------------------------------------------

def hr_at_k(
    scores: jax.Array, test_mask: jax.Array, train_mask: jax.Array | None = None, *, k: int
) -> jax.Array:
    """Per-user HitRate@k (recall with the denominator capped at ``k``).

    ``HR@k_u = |Ŷ_u ∩ T_u| / min(|T_u|, k)`` where ``Ŷ_u`` is the user's top-k after
    removing train items. Dissertation §3.5.4 writes ``|T_u|`` in the denominator;
    the reference implementation (noveens/infinite_ae_cf, ``eval.py``) — which
    produced the published numbers — uses ``min(|T_u|, k)``, so that a perfect list
    scores 1 for every user; we follow it.

    Args:
      scores: ``(n_users, n_items)`` predicted relevance (any real dtype; no NaN).
      test_mask: ``(n_users, n_items)`` binary (any numeric/bool dtype) held-out items.
      train_mask: ``(n_users, n_items)`` binary train items, removed from the ranking;
        ``None`` removes nothing.
      k: list length, ``>= 1``; values above ``n_items`` are clipped.

    Returns:
      ``(n_users,)`` values in ``[0, 1]``; 0 for users without test items.

    Raises:
      ValueError: NaN scores, non-binary masks, shape mismatch, ``k < 1``.
    """
    _check_inputs(scores, test_mask, train_mask)
    k = _clip_k(k, scores.shape[1])
    w = _weights(None, _float_dtype(scores), scores.shape[1])
    return _per_user(scores, test_mask, train_mask, w, ks=(k,), metrics=("hr",))[f"hr@{k}"]


def ndcg_at_k(
    scores: jax.Array, test_mask: jax.Array, train_mask: jax.Array | None = None, *, k: int
) -> jax.Array:
    """Per-user normalised discounted cumulative gain at k.

    ``DCG_u = Σ_{r=1}^{k} 1[ŷ_r ∈ T_u] / log2(r + 1)``,
    ``IDCG_u = Σ_{r=1}^{min(|T_u|, k)} 1 / log2(r + 1)`` and ``nDCG@k_u = DCG_u / IDCG_u``
    (dissertation §3.5.4; the ideal list is cut at ``k`` as in the reference
    implementation, so a perfect list scores 1).

    Args:
      scores: ``(n_users, n_items)`` predicted relevance (any real dtype; no NaN).
      test_mask: ``(n_users, n_items)`` binary (any numeric/bool dtype) held-out items.
      train_mask: ``(n_users, n_items)`` binary train items, removed from the ranking;
        ``None`` removes nothing.
      k: list length, ``>= 1``; values above ``n_items`` are clipped.

    Returns:
      ``(n_users,)`` values in ``[0, 1]``; 0 for users without test items.

    Raises:
      ValueError: NaN scores, non-binary masks, shape mismatch, ``k < 1``.
    """
    _check_inputs(scores, test_mask, train_mask)
    k = _clip_k(k, scores.shape[1])
    w = _weights(None, _float_dtype(scores), scores.shape[1])
    return _per_user(scores, test_mask, train_mask, w, ks=(k,), metrics=("ndcg",))[f"ndcg@{k}"]


def psp_at_k(
    scores: jax.Array,
    test_mask: jax.Array,
    train_mask: jax.Array | None = None,
    *,
    k: int,
    propensity: jax.Array,
    unit: bool = False,
) -> jax.Array:
    """Per-user propensity-scored precision at k (Jain et al., 2016; dissertation §3.5.4).

    With weights ``w_i = 1 / p_i`` (rare items have small propensity, large weight) and
    ``m = min(|T_u|, k)``::

        PSP@k_u = [ (1/m) Σ_{r=1}^{k} 1[ŷ_r ∈ T_u] · w_{ŷ_r} ]  /  Σ_{j=1}^{m} w_(j)

    where ``w_(1) ≥ w_(2) ≥ …`` are the weights of the user's test items sorted in
    decreasing order — the denominator is the best weighted gain any length-k list
    can reach.

    Normalisation. The dissertation writes ``uPSP_u / mPSP_u`` with
    ``uPSP_u = (1/k) Σ_{top-k} 1[hit]·w`` and ``mPSP_u = Σ_{i∈T_u} w_i``. The reference
    implementation (noveens/infinite_ae_cf, ``eval.py: evaluate_batch``; ``utils.py:
    get_item_propensity`` returns ``w = 1/p``) instead accumulates, for each hit in the
    top-k, ``w / min(|T_u|, k)``, and divides by ``max_psp`` = the sum of the first
    ``min(|T_u|, k)`` test weights sorted in decreasing order — *without* a ``1/m``
    factor. That is the formula above (the default, ``unit=False``); its per-user
    value lies in ``[0, 1/m]``, which is why the published PSP@10 (Table 3.3, e.g.
    ML-1M 3.22 next to HR@10 31.51) are about ten times smaller than HR@10 on
    datasets whose users have ≥ 10 test items. We reproduce it so numbers compare
    with the paper. ``unit=True`` drops the ``1/m`` (the "ideal-list" normalisation,
    ``PSP ∈ [0, 1]``, 1 for a perfect list).

    Args:
      scores: ``(n_users, n_items)`` predicted relevance (any real dtype; no NaN).
      test_mask: ``(n_users, n_items)`` binary (any numeric/bool dtype) held-out items.
      train_mask: ``(n_users, n_items)`` binary train items, removed from the ranking;
        ``None`` removes nothing.
      k: list length, ``>= 1``; values above ``n_items`` are clipped.
      propensity: ``(n_items,)`` positive propensities ``p_i`` (e.g. from
        :func:`item_propensity`); hits are weighted by ``1 / p_i``.
      unit: use the ``[0, 1]`` ideal-list normalisation instead of the reference one.

    Returns:
      ``(n_users,)`` values; 0 for users without test items.

    Raises:
      ValueError: NaN scores, non-binary masks, shape mismatch, ``k < 1``, a
        propensity of the wrong shape or with non-positive / non-finite entries.
    """
    _check_inputs(scores, test_mask, train_mask)
    n_items = scores.shape[1]
    k = _clip_k(k, n_items)
    _check_propensity(propensity, n_items)
    if not isinstance(unit, bool):
        raise TypeError(f"unit: expected a bool, got {type(unit).__name__}")
    w = _weights(propensity, _float_dtype(scores), n_items)
    out = _per_user(scores, test_mask, train_mask, w, ks=(k,), metrics=("psp",))
    return out[f"psp_unit@{k}" if unit else f"psp@{k}"]


def auc(
    scores: jax.Array, test_mask: jax.Array, train_mask: jax.Array | None = None
) -> jax.Array:
    """Per-user area under the ROC curve over (positive, negative) item pairs.

    ``AUC_u = 1/(|T_u| |N_u|) Σ_{i∈T_u} Σ_{j∈N_u} (1[s_i > s_j] + ½ 1[s_i = s_j])``,
    ``N_u`` = items neither test nor train (dissertation §3.5.4: the probability that a
    positive is ranked above a negative). Computed exactly in ``O(n_items log n_items)``
    per user from one sort by score and running counts of negatives (the Mann–Whitney
    U statistic with ties), never forming the pair matrix.

    (The reference implementation pools 50 sampled negatives per user over all users
    into one global AUC; this is the exact per-user version, averaged over users.)

    Args:
      scores: ``(n_users, n_items)`` predicted relevance (any real dtype; no NaN).
      test_mask: ``(n_users, n_items)`` binary (any numeric/bool dtype) held-out items.
      train_mask: ``(n_users, n_items)`` binary train items, removed from the ranking;
        ``None`` removes nothing.

    Returns:
      ``(n_users,)`` values in ``[0, 1]``; 0 for users without test items or without
      negatives (no pair to compare).

    Raises:
      ValueError: NaN scores, non-binary masks, shape mismatch.
    """
    _check_inputs(scores, test_mask, train_mask)
    w = _weights(None, _float_dtype(scores), scores.shape[1])
    return _per_user(scores, test_mask, train_mask, w, ks=(1,), metrics=("auc",))["auc"]


def top_k_items(
    scores: jax.Array, train_mask: jax.Array | None = None, *, k: int
) -> jax.Array:
    """Each user's recommendation list: indices of the top-k non-train items.

    Ties go to the lower item index. If a user has fewer than ``k`` non-train items,
    the list is completed with train items (in index order), which no metric counts.

    Args:
      scores: ``(n_users, n_items)`` predicted relevance (no NaN).
      train_mask: ``(n_users, n_items)`` binary items to exclude, or ``None``.
      k: list length, ``>= 1``; clipped to ``n_items``.

    Returns:
      ``(n_users, min(k, n_items))`` int32 item indices, best first.
    """
    _check_scores(scores)
    if train_mask is not None:
        _check_mask(train_mask, "train_mask", tuple(scores.shape))
    return _top_k_items(scores, train_mask, _clip_k(k, scores.shape[1]))


@functools.partial(jax.jit, static_argnums=2)
def _top_k_items(scores, train_mask, k):
    s, _, train = _prepare(scores, jnp.zeros(scores.shape, bool), train_mask)
    return jax.lax.top_k(jnp.where(train, -jnp.inf, s), k)[1]


def valid_users(test_mask: jax.Array, train_mask: jax.Array | None = None) -> jax.Array:
    """``(n_users,)`` bool: users with at least one test item outside their train items.

    Only these users enter the means of :func:`evaluate` (for every user the metrics
    are undefined otherwise: ``0/0``).
    """
    check_array(test_mask, "test_mask", ndim=2, kind="numeric")
    check_binary(test_mask, "test_mask")
    if train_mask is not None:
        _check_mask(train_mask, "train_mask", tuple(test_mask.shape))
    return _valid(test_mask, train_mask)


@jax.jit
def _valid(test_mask, train_mask):
    pos = jnp.asarray(test_mask) != 0
    if train_mask is not None:
        pos = pos & (jnp.asarray(train_mask) == 0)
    return jnp.any(pos, axis=1)


# --------------------------------------------------------------------------------------
# Propensity model
# --------------------------------------------------------------------------------------


def item_propensity(train: jax.Array, *, A: float = 0.55, B: float = 1.5) -> jax.Array:
    """Item propensities ``p_i`` of Jain et al. (2016), adapted to items (§3.5.4).

    ``p_i = 1 / (1 + C · (N_i + B)^(−A))`` with ``C = (ln N − 1) · (B + 1)^A``, where
    ``N_i`` is item ``i``'s number of train interactions and ``N = Σ_i N_i`` the total
    number of train interactions (as ``utils.get_item_propensity`` of the reference
    implementation: ``num_interactions = len(train)``, natural log). Popular items
    get ``p_i → 1``; rare items a small ``p_i``, i.e. a large weight ``1/p_i`` in
    :func:`psp_at_k`. (The reference returns the weights ``1/p_i`` directly; this
    returns ``p_i``.)

    Args:
      train: either the ``(n_users, n_items)`` binary train matrix, or the
        ``(n_items,)`` non-negative per-item train counts ``N_i``.
      A, B: the curve's parameters (dissertation: ``A = 0.55``, ``B = 1.5``); ``A ≥ 0``,
        ``B > 0``.

    Returns:
      ``(n_items,)`` propensities in ``(0, 1]`` (float).

    Raises:
      ValueError: a non-binary matrix, negative counts, or fewer than 3 interactions
        (``ln N ≤ 1`` would make ``C ≤ 0`` and the propensities meaningless).
    """
    check_array(train, "train", ndim=(1, 2), kind="numeric")
    A = check_float(A, "A", min_value=0.0)
    B = check_float(B, "B", min_value=0.0, strict_min=True)
    if train.ndim == 2:
        check_binary(train, "train")
    elif is_concrete(train):
        check_finite(train, "train")
        if not bool(np.all(np.asarray(train) >= 0)):
            raise ValueError("train: expected non-negative item counts")
    if is_concrete(train):
        n = float(np.sum(np.asarray(train, dtype=np.float64)))
        if not n > math.e:
            raise ValueError(
                f"train: expected at least 3 interactions (C = (ln N - 1)(B + 1)^A > 0), got {n:g}"
            )
    return _item_propensity(train, A, B)


@jax.jit
def _item_propensity(train, A, B):
    x = jnp.asarray(train)
    dt = _float_dtype(x)
    counts = (jnp.sum(x != 0, axis=0) if x.ndim == 2 else x).astype(dt)
    n = jnp.sum(counts)
    c = (jnp.log(n) - 1.0) * (B + 1.0) ** A
    return 1.0 / (1.0 + c * (counts + B) ** (-A))


# --------------------------------------------------------------------------------------
# Batched evaluation
# --------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("ks", "metrics", "mesh", "auc_pos"))
def _batch_totals(scores, test_mask, train_mask, w, n_real, *, ks, metrics, mesh, auc_pos=None):
    """Sums of every metric over the batch's valid users, and the valid counts.

    ``n_real`` (traced, so the last batch reuses the compilation) is the number of real
    rows; ``n_nonfinite`` counts NaN/inf scores among them, so a ``score_fn``'s output
    is checked without copying the batch to the host.
    """
    s, pos, train = _prepare(scores, test_mask, train_mask)
    real = (jnp.arange(s.shape[0]) < n_real)[:, None]
    dt = s.dtype
    # map_rows shards one array; stacking keeps scores and both masks row-aligned.
    rows = jnp.stack([s, pos.astype(dt), train.astype(dt)], axis=1)  # (b, 3, n_items)

    def per_rows(x, w):
        fn = functools.partial(_user_metrics, ks=ks, metrics=metrics, auc_pos=auc_pos)
        return jax.vmap(fn, in_axes=(0, 0, 0, None))(x[:, 0], x[:, 1] != 0, x[:, 2] != 0, w)

    per_user = parallel.map_rows(per_rows, rows, w, mesh=mesh)
    valid = per_user["n_pos"] > 0  # padded rows have no test items
    valid_auc = valid & (per_user["n_neg"] > 0)
    totals = {
        "n_valid": jnp.sum(valid),
        "n_valid_auc": jnp.sum(valid_auc),
        "n_nonfinite": jnp.sum(real & ~jnp.isfinite(s)),
    }
    for key, v in per_user.items():
        if key in ("n_pos", "n_neg"):
            continue
        mask = valid_auc if key == "auc" else valid
        # where (not multiply): rows padded by score_fn may hold NaN scores.
        totals[key] = jnp.sum(jnp.where(mask, v, 0))
    return totals


def _pad_to(x: Any, rows: int) -> Any:
    """Zero-pad axis 0 of a numpy or jax array to ``rows`` (one compiled batch shape)."""
    n_pad = rows - x.shape[0]
    if n_pad == 0:
        return x
    xp = np if isinstance(x, np.ndarray) else jnp
    return xp.concatenate([x, xp.zeros((n_pad,) + tuple(x.shape[1:]), x.dtype)], axis=0)


# Named in the error :func:`evaluate` raises under a transformation (jit, grad, vmap).
_HOST_SIDE = (
    "evaluate: it is host-side (it batches users in a Python loop and returns Python "
    "floats), so it cannot run under jax.jit, grad or vmap; got a traced value for {what!r}. "
    "Call it outside the transformation, or use the jittable per-user functions "
    "hr_at_k, ndcg_at_k, psp_at_k and auc (and top_k_items, valid_users) from "
    "distill.metrics inside it."
)


def _check_host(**named: Any) -> None:
    """Raise the host-side ``TypeError`` for the first traced value (``evaluate`` under jit).

    Checked on the arguments and on each batch of ``score_fn`` scores: a ``score_fn``
    closing over traced parameters only shows up in what it returns.
    """
    for what, x in named.items():
        if isinstance(x, jax.core.Tracer):
            raise TypeError(_HOST_SIDE.format(what=what))


def evaluate(
    score_fn_or_scores: Callable[[jax.Array], jax.Array] | jax.Array,
    test: jax.Array,
    train: jax.Array | None = None,
    *,
    ks: Sequence[int] = (10, 100),
    metrics: Sequence[str] = METRICS,
    propensity: jax.Array | None = None,
    batch_size: int = 1024,
    mesh: Mesh | None = None,
) -> dict[str, float]:
    """Mean ranking metrics (×100) over the users that have at least one test item.

    Users are processed in equal batches of at most ``batch_size`` rows; the last
    batch is zero-padded to the same size so the metric function compiles once, and padded
    rows (no test items) are excluded like every user without test items. Per batch
    the metrics of all requested ``ks`` come from one top-``max(ks)``.

    Args:
      score_fn_or_scores: either the ``(n_users, n_items)`` score matrix, or a
        function ``score_fn(train_rows) -> scores`` mapping a ``(b, n_items)``
        block of train rows (the model's input, e.g. ``lambda x:
        infinite_ae.predict(params, x)``) to its ``(b, n_items)`` scores. It is
        called with a fixed number of rows (padding rows are all-zero), so a jitted
        ``score_fn`` compiles once; scores of real rows must be finite.
      test: ``(n_users, n_items)`` binary held-out items (numpy or jax array).
      train: ``(n_users, n_items)`` binary train items, removed from every ranking (and
        the input of ``score_fn``; required with a function).
      ks: list lengths for HR/nDCG/PSP; each ``>= 1``, clipped to ``n_items`` (the key
        keeps the requested value).
      metrics: a subset of ``("hr", "ndcg", "psp", "auc")``.
      propensity: ``(n_items,)`` item propensities for PSP; default
        ``item_propensity(train)`` (the reference computes it on the train set).
      batch_size: most users per batch (bounds memory: ``O(batch_size · n_items)``);
        the users are split into equal batches of at most this size.
      mesh: a device mesh (:func:`distill.parallel.make_mesh`); each batch's users are
        sharded over it with :func:`distill.parallel.map_rows`.

    Returns:
      ``{"HR@10": …, "HR@100": …, "nDCG@10": …, "PSP@10": …, "AUC": …, "n_users": n}``:
      python floats ``100 × mean`` over the ``n`` users with at least one test item
      (AUC additionally skips users with no negative item) and that count ``n``.

    Raises:
      ValueError: malformed inputs (each error names its argument), no user with a test
        item, NaN scores.
      TypeError: called under ``jax.jit``/``grad``/``vmap`` (a traced argument, or
        ``score_fn`` returning traced scores): ``evaluate`` is host-side; inside a
        transformation use the per-user :func:`hr_at_k`, :func:`ndcg_at_k`,
        :func:`psp_at_k` and :func:`auc`.
    """
    _check_host(scores=score_fn_or_scores, test=test, train=train, propensity=propensity)
    check_array(test, "test", ndim=2, kind="numeric")
    check_binary(test, "test")
    n_users, n_items = (int(d) for d in test.shape)
    if train is not None:
        _check_mask(train, "train", (n_users, n_items))
    metrics, ks, topk = _check_metric_names(metrics, ks)
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    if mesh is not None and not isinstance(mesh, Mesh):
        raise TypeError(f"mesh: expected a jax.sharding.Mesh or None, got {type(mesh).__name__}")
    score_fn, scores = _score_source(score_fn_or_scores, train, n_users, n_items)
    dtype = jnp.result_type(float) if scores is None else _float_dtype(scores)
    w = _psp_weights(metrics, propensity, train, dtype, n_items)
    ks_eff = tuple(sorted({min(k, n_items) for k in ks})) if topk else (1,)
    # Equal batches (6,040 users at batch_size 4,096: two of 3,020, not 4,096 + 1,944 padded).
    bs = -(-n_users // -(-n_users // batch_size))
    sums = _batched_sums(score_fn, scores, test, train, w, bs, ks=ks_eff, metrics=metrics, mesh=mesh)
    return _means(sums, metrics, topk, ks, n_items)


def _check_metric_names(metrics, ks):
    """Validated ``(metrics, ks, topk)``: unique names / list lengths in the given order,
    and the requested metrics that need a top-k list."""
    if isinstance(metrics, str) or not isinstance(metrics, Sequence):
        raise TypeError(f"metrics: expected a sequence of names, got {type(metrics).__name__}")
    metrics = tuple(dict.fromkeys(check_choice(m, "metrics", METRICS) for m in metrics))
    if not metrics:
        raise ValueError("metrics: expected at least one metric name, got none")
    if isinstance(ks, (int, np.integer)) or not isinstance(ks, Sequence):
        raise TypeError(f"ks: expected a sequence of ints, got {type(ks).__name__}")
    ks = tuple(dict.fromkeys(check_int(k, "ks", min_value=1) for k in ks))
    topk = tuple(m for m in metrics if m in _TOPK_METRICS)
    if topk and not ks:
        raise ValueError("ks: expected at least one list length for HR/nDCG/PSP, got none")
    return metrics, ks, topk


def _score_source(score_fn_or_scores, train, n_users, n_items):
    """``(score_fn, None)`` for a function of the train rows, else ``(None, scores)``."""
    if callable(score_fn_or_scores):
        if train is None:
            raise ValueError("train: required when scores come from score_fn(train_rows)")
        return score_fn_or_scores, None
    scores = score_fn_or_scores
    _check_scores(scores)
    if tuple(scores.shape) != (n_users, n_items):
        raise ValueError(
            f"scores: expected shape {(n_users, n_items)} like test, got {tuple(scores.shape)}"
        )
    return None, scores


def _psp_weights(metrics, propensity, train, dtype, n_items):
    """PSP's inverse-propensity weights (default propensities from ``train``), or none."""
    if "psp" not in metrics:
        return _weights(None, dtype, n_items)
    if propensity is None:
        if train is None:
            raise ValueError("propensity: required for 'psp' when train is None")
        propensity = item_propensity(train)
    _check_propensity(propensity, n_items)
    return _weights(propensity, dtype, n_items)


def _batch_scores(score_fn, scores, train_b, start, stop, bs, n_items):
    """One batch's ``(bs, n_items)`` scores: sliced and padded, or from ``score_fn``."""
    if score_fn is None:
        return _pad_to(scores[start:stop], bs)
    s_b = score_fn(train_b)
    _check_host(score_fn_scores=s_b)
    if not hasattr(s_b, "shape") or tuple(s_b.shape) != (bs, n_items):
        got = tuple(s_b.shape) if hasattr(s_b, "shape") else type(s_b).__name__
        raise ValueError(
            f"score_fn: expected scores of shape {(bs, n_items)} for a batch of "
            f"train rows, got {got}"
        )
    check_array(s_b, "scores", kind="numeric")
    return s_b


@jax.jit
def _max_test_items(test_b, train_b):
    pos = test_b != 0 if train_b is None else (test_b != 0) & (train_b == 0)
    return jnp.max(jnp.sum(pos, axis=1))


def _auc_bound(test_b, train_b, n_items):
    """A static bound on a batch's test items per user for the sort-free AUC (a power of 2,
    so few shapes compile), or ``None`` when it is large enough that sorting is as cheap."""
    p = int(_max_test_items(test_b, train_b))
    bound = 1 << max(p - 1, 0).bit_length()
    return bound if bound <= n_items // 8 else None


def _batched_sums(score_fn, scores, test, train, w, bs, *, ks, metrics, mesh):
    """Per-metric sums over users, ``bs`` users (zero-padded) per compiled batch,
    accumulated on the host in float64."""
    n_users, n_items = (int(d) for d in test.shape)
    sums: dict[str, float] = {}
    for start in range(0, n_users, bs):
        stop = min(start + bs, n_users)
        test_b = _pad_to(test[start:stop], bs)
        train_b = None if train is None else _pad_to(train[start:stop], bs)
        s_b = _batch_scores(score_fn, scores, train_b, start, stop, bs, n_items)
        auc_pos = _auc_bound(test_b, train_b, n_items) if "auc" in metrics else None
        totals = jax.device_get(
            _batch_totals(s_b, test_b, train_b, w, stop - start, ks=ks, metrics=metrics, mesh=mesh,
                          auc_pos=auc_pos)
        )
        if totals.pop("n_nonfinite"):  # only real rows: padding rows may score anything
            raise ValueError(
                f"scores: expected finite values, got NaN or inf from score_fn for users "
                f"{start}..{stop - 1}"
            )
        for key, v in totals.items():
            sums[key] = sums.get(key, 0.0) + float(v)
    return sums


def _means(sums, metrics, topk, ks, n_items):
    """``100 × mean`` per requested metric and list length, plus ``n_users``."""
    n_valid = int(sums["n_valid"])
    if n_valid == 0:
        raise ValueError("test: expected at least one user with a test item (outside train)")
    result: dict[str, float] = {}
    for m in topk:
        for k in ks:
            result[f"{_DISPLAY[m]}@{k}"] = 100.0 * sums[f"{m}@{min(k, n_items)}"] / n_valid
    if "auc" in metrics:
        n_auc = int(sums["n_valid_auc"])
        result["AUC"] = 100.0 * sums["auc"] / n_auc if n_auc else float("nan")
    result["n_users"] = n_valid
    return result
