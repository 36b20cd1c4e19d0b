"""Interactions: id remapping, implicit conversion, filtering, dense matrices."""

from collections import Counter

import numpy as np
import pytest

from distill.data import interactions as I


def _example():
    # rows:       0    1    2    3    4    5
    users = np.array([10, 5, 10, 7, 10, 5])
    items = np.array(["b", "a", "c", "a", "b", "c"])
    ratings = np.array([4.0, 2.0, 5.0, 1.0, 2.0, 3.5])
    ts = np.array([5, 1, 2, 3, 9, 4])
    return I.from_arrays(users, items, ratings, ts)


def test_from_arrays_remaps_in_sorted_order_and_round_trips():
    inter = _example()
    np.testing.assert_array_equal(inter.user_ids, [5, 7, 10])
    np.testing.assert_array_equal(inter.item_ids, ["a", "b", "c"])
    np.testing.assert_array_equal(inter.users, [2, 0, 2, 1, 2, 0])
    np.testing.assert_array_equal(inter.items, [1, 0, 2, 0, 1, 2])
    np.testing.assert_array_equal(inter.user_ids[inter.users], [10, 5, 10, 7, 10, 5])
    np.testing.assert_array_equal(inter.item_ids[inter.items], ["b", "a", "c", "a", "b", "c"])
    assert (inter.n_users, inter.n_items) == (3, 3)
    assert inter.users.dtype == np.int32 and inter.items.dtype == np.int32
    assert inter.ratings.dtype == np.float32 and inter.timestamps.dtype == np.int64


def test_from_arrays_defaults_and_large_timestamps():
    inter = I.from_arrays(np.array([3, 1]), np.array([0, 0]))
    np.testing.assert_array_equal(inter.ratings, [1.0, 1.0])
    np.testing.assert_array_equal(inter.timestamps, [0, 0])
    # after 2038-01-19: must not overflow (int64 timestamps)
    late = np.array([2**31 + 5, 4_102_444_800])
    inter = I.from_arrays(np.array([1, 2]), np.array([1, 2]), timestamps=late)
    np.testing.assert_array_equal(inter.timestamps, late)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(users=np.array([1, 2]), items=np.array([1])), ValueError, "items"),
        (dict(users=np.array([], np.int64), items=np.array([], np.int64)), ValueError, "users"),
        (dict(users=np.array([1.0, 2.0]), items=np.array([1, 2])), TypeError, "users"),
        (dict(users=[1, 2], items=np.array([1, 2])), TypeError, "users"),
        (dict(users=np.array([1, 2]), items=np.array([[1, 2]])), ValueError, "items"),
        (
            dict(users=np.array([1, 2]), items=np.array([1, 2]), ratings=np.array([1.0, np.nan])),
            ValueError,
            "ratings",
        ),
        (
            dict(users=np.array([1, 2]), items=np.array([1, 2]), ratings=np.array(["a", "b"])),
            TypeError,
            "ratings",
        ),
        (
            dict(users=np.array([1, 2]), items=np.array([1, 2]), timestamps=np.array([1.5, 2.0])),
            TypeError,
            "timestamps",
        ),
        (
            dict(users=np.array([1, 2]), items=np.array([1, 2]), timestamps=np.array([1, 2, 3])),
            ValueError,
            "timestamps",
        ),
    ],
)
def test_from_arrays_rejects_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        I.from_arrays(**kwargs)


def test_to_implicit_keeps_latest_duplicate_and_thresholds():
    inter = _example()
    imp = I.to_implicit(inter)
    # (10,'b') occurs at rows 0 (t=5) and 4 (t=9): the later one survives.
    raw = list(zip(imp.user_ids[imp.users].tolist(), imp.item_ids[imp.items].tolist(), strict=False))
    assert raw == [(5, "a"), (10, "c"), (7, "a"), (10, "b"), (5, "c")]
    np.testing.assert_array_equal(imp.timestamps, [1, 2, 3, 9, 4])
    np.testing.assert_array_equal(imp.ratings, np.ones(5))
    # The threshold applies to the latest rating: (10,'b') was re-rated 4 -> 2.
    pos = I.to_implicit(inter, min_rating=3.0)
    raw = list(zip(pos.user_ids[pos.users].tolist(), pos.item_ids[pos.items].tolist(), strict=False))
    assert raw == [(10, "c"), (5, "c")]
    # user 7 and item 'a', 'b' lost all events: ids re-remapped densely.
    np.testing.assert_array_equal(pos.user_ids, [5, 10])
    np.testing.assert_array_equal(pos.item_ids, ["c"])
    assert (pos.n_users, pos.n_items) == (2, 1)
    np.testing.assert_array_equal(pos.users, [1, 0])


def test_to_implicit_ties_keep_later_row():
    inter = I.from_arrays(
        np.array([1, 1, 1]), np.array([4, 4, 4]), np.array([1.0, 2.0, 3.0]), np.array([7, 7, 6])
    )
    rows = I.latest_per_pair(inter)
    np.testing.assert_array_equal(rows, [1])
    assert I.to_implicit(inter, min_rating=2.0).users.shape == (1,)
    with pytest.raises(ValueError, match="min_rating"):
        I.to_implicit(inter, min_rating=2.5)


def test_to_implicit_bad_input():
    with pytest.raises(TypeError, match="inter"):
        I.to_implicit((np.array([1]), np.array([1])))
    with pytest.raises(TypeError, match="min_rating"):
        I.to_implicit(_example(), min_rating="3")
    with pytest.raises(ValueError, match="min_rating"):
        I.to_implicit(_example(), min_rating=float("nan"))


def _naive_core(pairs, min_user, min_item):
    pairs = list(pairs)
    while True:
        cu = Counter(u for u, _ in pairs)
        ci = Counter(i for _, i in pairs)
        kept = [(u, i) for u, i in pairs if ci[i] >= min_item]
        cu = Counter(u for u, _ in kept)
        kept = [(u, i) for u, i in kept if cu[u] >= min_user]
        if len(kept) == len(pairs):
            return kept
        pairs = kept


@pytest.mark.parametrize("min_user, min_item", [(3, 0), (2, 2), (4, 3), (0, 5)])
def test_filter_min_interactions_matches_brute_force(min_user, min_item):
    rng = np.random.default_rng(1)
    users = rng.integers(100, 160, size=400)
    items = rng.zipf(1.6, size=400) % 90
    inter = I.from_arrays(users, items)
    out = I.filter_min_interactions(inter, min_user=min_user, min_item=min_item)
    raw = list(zip(out.user_ids[out.users].tolist(), out.item_ids[out.items].tolist(), strict=False))
    assert raw == _naive_core(zip(users.tolist(), items.tolist(), strict=False), min_user, min_item)
    assert out.n_users == len(set(u for u, _ in raw)) and out.n_items == len(set(i for _, i in raw))
    assert np.bincount(out.users).min() >= min_user
    if min_item:
        assert np.bincount(out.items).min() >= min_item


def test_filter_min_interactions_cascade_and_errors():
    # item 9 has one event; removing it leaves user 2 with one event -> removed too,
    # which leaves item 8 with one event; with min_item=2 that is removed as well.
    users = np.array([1, 1, 2, 2, 3, 3, 1])
    items = np.array([7, 8, 9, 8, 7, 6, 6])
    out = I.filter_min_interactions(I.from_arrays(users, items), min_user=2, min_item=2)
    np.testing.assert_array_equal(out.user_ids, [1, 3])
    np.testing.assert_array_equal(out.item_ids, [6, 7])
    assert out.users.shape == (4,)
    inter = I.from_arrays(users, items)
    with pytest.raises(ValueError, match="min_user"):
        I.filter_min_interactions(inter, min_user=-1)
    with pytest.raises(ValueError, match="min_item"):
        I.filter_min_interactions(inter, min_item=-2)
    with pytest.raises(TypeError, match="min_user"):
        I.filter_min_interactions(inter, min_user=2.0)
    with pytest.raises(ValueError, match="min_user"):
        I.filter_min_interactions(inter, min_user=4)


def test_to_dense():
    inter = _example()
    x = I.to_dense(inter)
    want = np.zeros((3, 3), np.float32)
    for u, i in zip(inter.users, inter.items, strict=False):
        want[u, i] = 1
    np.testing.assert_array_equal(x, want)
    assert x.dtype == np.float32 and x.sum() == 5  # (10,'b') twice -> one 1
    big = I.to_dense(inter, n_users=5, n_items=4, dtype=np.int8)
    assert big.shape == (5, 4) and big.dtype == np.int8
    np.testing.assert_array_equal(big[:3, :3], want)
    assert big[3:].sum() == 0 and big[:, 3].sum() == 0
    with pytest.raises(ValueError, match="n_users"):
        I.to_dense(inter, n_users=2)
    with pytest.raises(ValueError, match="n_items"):
        I.to_dense(inter, n_items=0)
    with pytest.raises(TypeError, match="dtype"):
        I.to_dense(inter, dtype="not-a-dtype")
    with pytest.raises(TypeError, match="dtype"):
        I.to_dense(inter, dtype=str)
    with pytest.raises(TypeError, match="inter"):
        I.to_dense(want)
