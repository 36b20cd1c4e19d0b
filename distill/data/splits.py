"""Train / validation / test splits of implicit feedback, and row mini-batches.

Two protocols, both per user and both returning dense binary matrices over the same
user and item space (so ``train + val + test`` is the full implicit matrix):

* :func:`random_split` — each user's items are shuffled and cut 80/10/10 (the
  ∞-AE / Distill-CF protocol, dissertation Ch. 3).
* :func:`temporal_split` — leave-last-out by timestamp: the most recent item is
  the test item, the one before it the validation item.

Both first collapse repeated (user, item) events to one (the latest) — otherwise the
same item could land in train *and* test — and drop users with fewer than
``min_interactions`` distinct items, so every kept user has at least one train,
validation and test item. Items that only occurred with dropped users are dropped as
well. When the input has already been through
``filter_min_interactions(to_implicit(inter), min_user=min_interactions)`` nothing is
dropped, and row ``u`` / column ``i`` of the split are user ``u`` / item ``i`` of
that :class:`~distill.data.interactions.Interactions`. Either way the split carries
the raw ids of its rows and columns (``Split.user_ids`` / ``Split.item_ids``).
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple

import numpy as np

from distill.checks import check_array, check_float, check_int
from distill.data.interactions import (
    Interactions,
    check_interactions,
    select_rows,
    latest_per_pair,
)

__all__ = ["Split", "random_split", "temporal_split", "iterate_batches"]


class Split(NamedTuple):
    """A per-user split of an implicit-feedback matrix.

    Attributes:
      train: float32 ``(n_users, n_items)`` binary matrix of training interactions.
      val: float32 ``(n_users, n_items)`` binary matrix of validation interactions.
      test: float32 ``(n_users, n_items)`` binary matrix of test interactions.
      n_users: number of (kept) users.
      n_items: number of items (those of the kept users' interactions).
      user_ids: ``(n_users,)`` original id of every row (``user_ids[u]`` is the raw
        user id of row ``u``, as in :attr:`Interactions.user_ids`); ``None`` when the
        split was built by hand.
      item_ids: ``(n_items,)`` original id of every column, likewise; e.g. the raw ids
        an exported summary's columns refer to.

    The three matrices are disjoint, and every row has at least one 1 in each.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    n_users: int
    n_items: int
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None


def _distinct_pairs(inter: Interactions, min_interactions: int) -> Interactions:
    """One row per (user, item) (latest event), users with < min_interactions dropped."""
    pairs = select_rows(inter, latest_per_pair(inter))
    counts = np.bincount(pairs.users, minlength=pairs.n_users)
    keep = counts[pairs.users] >= min_interactions
    if not keep.any():
        raise ValueError(
            f"min_interactions: no user has >= {min_interactions} distinct items "
            f"(largest: {int(counts.max())})"
        )
    return select_rows(pairs, keep)


def _user_offsets(sorted_users: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user counts and start offsets for rows sorted by user."""
    counts = np.bincount(sorted_users, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return counts, starts


def _matrices(data: Interactions, part: np.ndarray) -> Split:
    """Scatter rows into three matrices by ``part`` (0 train, 1 val, 2 test)."""
    mats = []
    for p in range(3):
        m = np.zeros((data.n_users, data.n_items), np.float32)
        sel = part == p
        m[data.users[sel], data.items[sel]] = 1.0
        mats.append(m)
    return Split(
        mats[0], mats[1], mats[2], data.n_users, data.n_items,
        user_ids=np.asarray(data.user_ids), item_ids=np.asarray(data.item_ids),
    )


def _round_half_up(x: np.ndarray) -> np.ndarray:
    # np.round rounds half to even (0.5 -> 0, 2.5 -> 2); half-up is the rule users
    # expect from "10% of 25 items" and is documented in random_split.
    return np.floor(x + 0.5).astype(np.int64)


def random_split(
    inter: Interactions,
    *,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
    seed: int = 0,
    min_interactions: int = 3,
) -> Split:
    """Per-user random split of each user's items (dissertation Ch. 3 protocol).

    For a user with ``n_u`` distinct items: ``n_test = max(1, round(test_frac * n_u))``
    and ``n_val = max(1, round(val_frac * n_u))`` (rounding half up), and train gets
    the remaining ``n_u - n_test - n_val``. If that would leave no training item (only
    possible with large fractions), validation and then test items are handed back to
    train, never going below one each; ``min_interactions >= 3`` makes that always
    possible. Which items go where is a uniformly random permutation of the user's
    items drawn from ``np.random.default_rng(seed)``.

    Args:
      inter: the interaction log (ratings are ignored; repeated pairs count once).
      val_frac: fraction of each user's items for validation, in ``[0, 1)``.
      test_frac: fraction for test, in ``[0, 1)``; ``val_frac + test_frac < 1``.
      seed: non-negative seed; the same seed gives the same split.
      min_interactions: users with fewer distinct items are dropped first (>= 3).

    Returns:
      :class:`Split` over the kept users and their items.

    Raises:
      ValueError: fractions out of range, ``min_interactions < 3``, or no user kept.
    """
    check_interactions(inter)
    val_frac = check_float(val_frac, "val_frac", min_value=0.0)
    test_frac = check_float(test_frac, "test_frac", min_value=0.0)
    if val_frac + test_frac >= 1.0:
        raise ValueError(
            f"val_frac: expected val_frac + test_frac < 1, got {val_frac} + {test_frac}"
        )
    seed = check_int(seed, "seed", min_value=0)
    min_interactions = check_int(min_interactions, "min_interactions", min_value=3)
    data = _distinct_pairs(inter, min_interactions)

    n_u = np.bincount(data.users, minlength=data.n_users)
    n_test = np.maximum(1, _round_half_up(test_frac * n_u))
    n_val = np.maximum(1, _round_half_up(val_frac * n_u))
    excess = np.maximum(0, n_test + n_val + 1 - n_u)  # train must keep >= 1
    give = np.minimum(excess, n_val - 1)
    n_val -= give
    n_test -= np.minimum(excess - give, n_test - 1)

    rng = np.random.default_rng(seed)
    key = rng.random(data.users.shape[0])
    order = np.lexsort((key, data.users))  # by user, random within user
    _, starts = _user_offsets(data.users[order], data.n_users)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0]) - starts[data.users[order]]
    u = data.users
    part = np.where(rank < n_test[u], 2, np.where(rank < n_test[u] + n_val[u], 1, 0))
    return _matrices(data, part)


def temporal_split(inter: Interactions, *, min_interactions: int = 3) -> Split:
    """Per-user leave-last-out by time.

    Each user's distinct items are ordered by the time of their (latest) event with a
    stable sort, so equal timestamps keep the original row order (a later row counts
    as more recent). The last item goes to test, the last-but-one to validation, the
    rest to train.

    Args:
      inter: the interaction log.
      min_interactions: users with fewer distinct items are dropped first (>= 3).

    Returns:
      :class:`Split` with exactly one test and one validation item per user.
    """
    check_interactions(inter)
    min_interactions = check_int(min_interactions, "min_interactions", min_value=3)
    data = _distinct_pairs(inter, min_interactions)
    n = data.users.shape[0]
    order = np.lexsort((np.arange(n), data.timestamps, data.users))
    counts, starts = _user_offsets(data.users[order], data.n_users)
    from_end = np.empty(n, np.int64)
    su = data.users[order]
    from_end[order] = starts[su] + counts[su] - 1 - np.arange(n)
    part = np.where(from_end == 0, 2, np.where(from_end == 1, 1, 0))
    return _matrices(data, part)


def iterate_batches(
    matrix: Any,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Mini-batches of the rows of ``matrix``.

    Arguments are validated when this is called, not at the first ``next()``.

    Args:
      matrix: array with rows along axis 0 (numpy or jax), e.g. ``Split.train``.
      batch_size: rows per batch (>= 1); the last batch may be smaller.
      shuffle: visit rows in a random order drawn from ``default_rng(seed)``.
      seed: non-negative seed for the shuffle.
      drop_last: skip a final batch smaller than ``batch_size``.

    Yields:
      ``(rows, matrix[rows])`` with ``rows`` int32 ``(b,)`` row indices.
    """
    check_array(matrix, "matrix")
    if matrix.ndim < 1:
        raise ValueError("matrix: expected an array with at least 1 dimension, got shape ()")
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    seed = check_int(seed, "seed", min_value=0)
    for flag, name in ((shuffle, "shuffle"), (drop_last, "drop_last")):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name}: expected a bool, got {type(flag).__name__}")
    n = matrix.shape[0]
    if drop_last and batch_size > n:
        raise ValueError(
            f"batch_size: {batch_size} exceeds the {n} rows, so drop_last=True yields nothing"
        )
    idx = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    idx = idx.astype(np.int32)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, n, batch_size):
            rows = idx[start : start + batch_size]
            if drop_last and rows.shape[0] < batch_size:
                return
            yield rows, matrix[rows]

    return batches()
