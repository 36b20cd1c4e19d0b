"""User–item interaction logs: the common format of every recommendation dataset.

All recommendation loaders (:mod:`distill.data.movielens`) return an
:class:`Interactions` — one row per logged event, with user and item ids remapped to
the dense ranges ``0..n_users-1`` / ``0..n_items-1`` so that they index matrix rows
and columns directly. The remaining functions are the standard preprocessing of the
implicit-feedback setting used for ∞-AE and Distill-CF (dissertation Ch. 3): treat
every rating as a positive, drop users with too few interactions, and build the
binary user × item matrix the models consume.

Every function returns a new :class:`Interactions`; nothing is modified in place.
Row order is preserved by every transformation (rows are only dropped), which is
what makes "ties broken by original order" well defined downstream.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from distill.checks import check_array, check_float, check_int, check_same_leading

__all__ = [
    "Interactions",
    "from_arrays",
    "to_implicit",
    "filter_min_interactions",
    "to_dense",
    "latest_per_pair",
    "check_interactions",
    "select_rows",
    "add_false_positives",
]


class Interactions(NamedTuple):
    """An interaction log with dense ids.

    Attributes:
      users: int32 ``(n,)`` user of each event, in ``0..n_users-1``.
      items: int32 ``(n,)`` item of each event, in ``0..n_items-1``.
      ratings: float32 ``(n,)`` explicit rating (1.0 for implicit feedback).
      timestamps: int64 ``(n,)`` event time in unix seconds. int64 rather than int32
        so that times after 2038-01-19 (the int32 overflow) are representable and so
        that sub-second logs scaled to integers (ms, µs) also fit.
      n_users: number of distinct users; every id in ``0..n_users-1`` occurs.
      n_items: number of distinct items; every id in ``0..n_items-1`` occurs.
      user_ids: ``(n_users,)`` raw ids, ``user_ids[u]`` is the original id of user
        ``u``; sorted increasingly (ids are assigned in sorted raw order).
      item_ids: ``(n_items,)`` raw ids of the items, likewise.
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    n_users: int
    n_items: int
    user_ids: np.ndarray
    item_ids: np.ndarray


def check_interactions(inter: Any, name: str = "inter") -> Interactions:
    if not isinstance(inter, Interactions):
        raise TypeError(f"{name}: expected an Interactions, got {type(inter).__name__}")
    # A hand-built Interactions can disagree with itself; an id past n_users/n_items
    # would be clamped or wrapped by the samplers' gathers instead of failing.
    for ids, n, what in ((inter.users, inter.n_users, "users"), (inter.items, inter.n_items, "items")):
        ids = np.asarray(ids)
        if ids.shape != np.shape(inter.users):
            raise ValueError(f"{name}.{what}: expected shape {np.shape(inter.users)}, got {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise ValueError(f"{name}.{what}: ids must lie in [0, n_{what}={n}), got [{ids.min()}, {ids.max()}]")
    return inter


def _check_ids(x: Any, name: str) -> np.ndarray:
    """Raw ids may be integers or strings (TFDS stores ids as byte strings)."""
    check_array(x, name, ndim=1)
    x = np.asarray(x)
    # Floats are refused: a float id usually means a column mix-up (e.g. ratings
    # passed as items), and 1.0 vs 1 would silently become the same id.
    if x.dtype.kind not in "iuSU":
        raise TypeError(f"{name}: expected integer or string ids, got {x.dtype}")
    return x


def from_arrays(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray | None = None,
    timestamps: np.ndarray | None = None,
) -> Interactions:
    """Build :class:`Interactions` from parallel arrays of raw ids.

    Ids are remapped to ``0..n-1`` in sorted order of the raw ids, so the mapping is
    deterministic and independent of row order; ``user_ids[users]`` recovers the raw
    user column exactly (same for items).

    Args:
      users: ``(n,)`` raw user ids (integer or string dtype).
      items: ``(n,)`` raw item ids (integer or string dtype).
      ratings: ``(n,)`` finite numeric ratings; ``None`` gives all-ones (implicit).
      timestamps: ``(n,)`` integer unix times; ``None`` gives all-zeros (then every
        time-ordered operation falls back to the row order).

    Returns:
      The remapped :class:`Interactions`, rows in the input order.

    Raises:
      TypeError: non-array inputs, float ids, float timestamps, non-numeric ratings.
      ValueError: empty input, arrays of different lengths, NaN/inf ratings.
    """
    users = _check_ids(users, "users")
    items = _check_ids(items, "items")
    named = [("users", users), ("items", items)]
    if ratings is not None:
        check_array(ratings, "ratings", ndim=1, kind="numeric", finite=True)
        named.append(("ratings", ratings))
    if timestamps is not None:
        check_array(timestamps, "timestamps", ndim=1, kind="int")
        named.append(("timestamps", timestamps))
    check_same_leading(named)
    n = users.shape[0]
    ratings = (
        np.ones(n, np.float32) if ratings is None else np.asarray(ratings, dtype=np.float32)
    )
    timestamps = (
        np.zeros(n, np.int64) if timestamps is None else np.asarray(timestamps, dtype=np.int64)
    )
    user_ids, u = np.unique(users, return_inverse=True)
    item_ids, i = np.unique(items, return_inverse=True)
    return Interactions(
        users=u.astype(np.int32),
        items=i.astype(np.int32),
        ratings=ratings,
        timestamps=timestamps,
        n_users=int(user_ids.shape[0]),
        n_items=int(item_ids.shape[0]),
        user_ids=user_ids,
        item_ids=item_ids,
    )


def select_rows(inter: Interactions, rows: np.ndarray) -> Interactions:
    """Keep ``rows`` (bool mask or sorted indices) and re-remap ids densely.

    Users/items left without any event disappear. Because old ids are already in
    sorted raw order, ``np.unique`` of the surviving old ids keeps that order, so the
    new ids are again the sorted raw order of the survivors.
    """
    users, items = inter.users[rows], inter.items[rows]
    kept_u, u = np.unique(users, return_inverse=True)
    kept_i, i = np.unique(items, return_inverse=True)
    return Interactions(
        users=u.astype(np.int32),
        items=i.astype(np.int32),
        ratings=inter.ratings[rows],
        timestamps=inter.timestamps[rows],
        n_users=int(kept_u.shape[0]),
        n_items=int(kept_i.shape[0]),
        user_ids=inter.user_ids[kept_u],
        item_ids=inter.item_ids[kept_i],
    )


def latest_per_pair(inter: Interactions) -> np.ndarray:
    """Row indices of the latest event of every distinct (user, item) pair.

    "Latest" is the largest timestamp, ties broken by the later row, so the result
    is deterministic even when all timestamps are equal (then: the last row).

    Args:
      inter: the interaction log.

    Returns:
      int64 ``(n_pairs,)`` row indices, increasing (original row order).
    """
    check_interactions(inter)
    n = inter.users.shape[0]
    pair = inter.users.astype(np.int64) * inter.n_items + inter.items
    # lexsort sorts by the last key first: pair, then time, then row position.
    order = np.lexsort((np.arange(n), inter.timestamps, pair))
    sorted_pair = pair[order]
    is_last = np.ones(n, bool)
    is_last[:-1] = sorted_pair[1:] != sorted_pair[:-1]
    return np.sort(order[is_last])


def to_implicit(inter: Interactions, *, min_rating: float | None = None) -> Interactions:
    """Convert explicit ratings to implicit positives (dissertation Ch. 3).

    Following the ∞-AE / Distill-CF reference preprocessing, every rated item is a
    positive (``min_rating=None``). Repeated (user, item) events are collapsed first,
    keeping the latest one — its rating is the user's current opinion, so the
    ``min_rating`` threshold is applied to it. Ids are re-remapped afterwards, so users
    or items whose events were all dropped disappear.

    Args:
      inter: the interaction log.
      min_rating: keep only pairs whose (latest) rating is ``>= min_rating``;
        ``None`` keeps all.

    Returns:
      :class:`Interactions` with one row per distinct pair, ratings all 1.0,
      timestamps of the kept (latest) events, rows in the original order.

    Raises:
      ValueError: when no interaction passes ``min_rating``.
    """
    check_interactions(inter)
    rows = latest_per_pair(inter)
    if min_rating is not None:
        min_rating = check_float(min_rating, "min_rating")
        rows = rows[inter.ratings[rows] >= min_rating]
        if rows.size == 0:
            raise ValueError(f"min_rating: no interaction has a rating >= {min_rating}")
    out = select_rows(inter, rows)
    return out._replace(ratings=np.ones_like(out.ratings))


def filter_min_interactions(
    inter: Interactions, *, min_user: int = 3, min_item: int = 0
) -> Interactions:
    """Drop users with fewer than ``min_user`` and items with fewer than ``min_item`` events.

    Counts are numbers of rows (apply :func:`to_implicit` first to count distinct
    items). Dropping items can push users below ``min_user`` and vice versa, so with
    both thresholds active the two filters alternate until neither removes anything
    (the ``(min_user, min_item)``-core); with ``min_item=0`` that is one user pass.
    The ∞-AE preprocessing keeps users with at least 3 interactions so that every
    user has a train, validation and test item.

    Args:
      inter: the interaction log.
      min_user: minimum events per kept user (0 or 1 keep everyone).
      min_item: minimum events per kept item (0 or 1 keep everything).

    Returns:
      The filtered :class:`Interactions`, ids re-remapped, rows in original order.

    Raises:
      ValueError: negative thresholds, or nothing survives the filter.
    """
    check_interactions(inter)
    min_user = check_int(min_user, "min_user", min_value=0)
    min_item = check_int(min_item, "min_item", min_value=0)
    keep = np.ones(inter.users.shape[0], bool)
    while True:
        before = int(keep.sum())
        if min_item > 0:
            counts = np.bincount(inter.items[keep], minlength=inter.n_items)
            keep &= counts[inter.items] >= min_item
        counts = np.bincount(inter.users[keep], minlength=inter.n_users)
        keep &= counts[inter.users] >= min_user
        if int(keep.sum()) == before:
            break
    if not keep.any():
        raise ValueError(
            f"min_user: no interaction survives min_user={min_user}, min_item={min_item}"
        )
    return select_rows(inter, keep)


def to_dense(
    inter: Interactions,
    *,
    n_users: int | None = None,
    n_items: int | None = None,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Binary user × item matrix, ``X[u, i] = 1`` iff ``u`` interacted with ``i``.

    Ratings are ignored (the implicit-feedback input of ∞-AE / EASE, dissertation
    Ch. 3); repeated events give a single 1.

    Args:
      inter: the interaction log.
      n_users: number of rows, ``>= inter.n_users`` (default ``inter.n_users``); larger
        values append empty users, e.g. to align with another matrix.
      n_items: number of columns, ``>= inter.n_items`` (default ``inter.n_items``).
      dtype: numeric dtype of the result.

    Returns:
      ``(n_users, n_items)`` array of 0/1.
    """
    check_interactions(inter)
    n_users = inter.n_users if n_users is None else check_int(
        n_users, "n_users", min_value=inter.n_users
    )
    n_items = inter.n_items if n_items is None else check_int(
        n_items, "n_items", min_value=inter.n_items
    )
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"dtype: expected a numpy dtype, got {dtype!r}") from e
    if dt.kind not in "fiub":
        raise TypeError(f"dtype: expected a numeric dtype, got {dt}")
    x = np.zeros((n_users, n_items), dt)
    x[inter.users, inter.items] = 1
    return x


def add_false_positives(
    x: np.ndarray,
    fraction: float,
    *,
    seed: int = 0,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Inject random false-positive interactions into a binary user × item matrix.

    The noise model of the dissertation's robustness study (Ch. 3, §3.6.4: "we randomly
    flip x % of the total number of items in the corpus for each user"), restricted to
    false positives: every user ``u`` gets exactly

        n_noise_u = min(round(fraction · I), #{i : X_ui = 0 and not exclude_ui})

    new interactions, drawn uniformly without replacement among those items. Existing
    interactions are never removed and excluded entries (e.g. a user's held-out
    validation / test items, which are true positives) are never touched.

    Args:
      x: ``(n_users, I)`` binary matrix (numpy or jax array, any numeric dtype).
      fraction: ``x`` in the equation above, in ``[0, 1]`` (0.01 = 1 % of the items).
      seed: non-negative seed of ``np.random.default_rng``; the same seed gives the
        same noise.
      exclude: optional ``(n_users, I)`` binary mask of entries that must stay 0.

    Returns:
      ``(n_users, I)`` array of ``x``'s dtype: ``x`` plus the injected ones.

    Raises:
      ValueError: ``x`` or ``exclude`` not binary / 2-d / of matching shape, or
        ``fraction`` outside ``[0, 1]``, or a negative ``seed``.
    """
    check_array(x, "x", ndim=2, kind="numeric")
    a = np.asarray(x)
    if not bool(np.all((a == 0) | (a == 1))):
        raise ValueError("x: expected a binary 0/1 matrix, found another value")
    fraction = check_float(fraction, "fraction", min_value=0.0, max_value=1.0)
    seed = check_int(seed, "seed", min_value=0)
    free = a == 0
    if exclude is not None:
        check_array(exclude, "exclude", shape=a.shape, kind="numeric")
        e = np.asarray(exclude)
        if not bool(np.all((e == 0) | (e == 1))):
            raise ValueError("exclude: expected a binary 0/1 matrix, found another value")
        free &= e == 0
    n_noise = int(round(fraction * a.shape[1]))
    rng = np.random.default_rng(seed)
    out = a.copy()
    for u in range(a.shape[0]):
        candidates = np.flatnonzero(free[u])
        take = min(n_noise, candidates.size)
        if take:
            out[u, rng.choice(candidates, take, replace=False)] = 1
    return out
