"""Random and temporal per-user splits, checked by brute force; row mini-batches."""

import math

import numpy as np
import pytest

from distill.data import interactions as I
from distill.data import movielens as ML
from distill.data import splits as S


@pytest.fixture(scope="module")
def ml():
    return ML.load_movielens_small()


def _half_up(x):
    return math.floor(x + 0.5)


def _check_partition(split, full):
    tr, va, te = split.train, split.val, split.test
    assert tr.shape == va.shape == te.shape == (split.n_users, split.n_items)
    assert tr.dtype == va.dtype == te.dtype == np.float32
    for m in (tr, va, te):
        assert set(np.unique(m)) <= {0.0, 1.0}
    assert not np.any(tr * va) and not np.any(tr * te) and not np.any(va * te)
    np.testing.assert_array_equal(tr + va + te, full)
    assert tr.sum(1).min() >= 1 and va.sum(1).min() >= 1 and te.sum(1).min() >= 1


def test_random_split_real_data_brute_force(ml):
    split = S.random_split(ml, seed=0)
    full = I.to_dense(I.filter_min_interactions(I.to_implicit(ml), min_user=3))
    assert (split.n_users, split.n_items) == (671, 9_066)
    _check_partition(split, full)
    for u in range(split.n_users):
        n_u = int(full[u].sum())
        n_te = max(1, _half_up(0.1 * n_u))
        n_va = max(1, _half_up(0.1 * n_u))
        assert split.test[u].sum() == n_te
        assert split.val[u].sum() == n_va
        assert split.train[u].sum() == n_u - n_te - n_va
    assert (split.train.sum(), split.val.sum(), split.test.sum()) == (79_942, 10_031, 10_031)


def test_random_split_determinism_and_seed(ml):
    a = S.random_split(ml, seed=3)
    b = S.random_split(ml, seed=3)
    c = S.random_split(ml, seed=4)
    for x, y in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.test, c.test)
    # same sizes per user, different items
    np.testing.assert_array_equal(a.test.sum(1), c.test.sum(1))
    assert (a.test * c.test).sum() < 0.3 * a.test.sum()  # mostly different test items


def _one_user(n_items, user=0, start=0):
    return np.full(n_items, user), np.arange(start, start + n_items)


def test_random_split_rounding_rule_and_filtering():
    # user 0: 25 items -> test = val = round(2.5) = 3 (half up), train 19
    # user 1: 3 items -> 1/1/1; user 2: 2 items (+1 duplicate) -> dropped
    parts = [_one_user(25, 0), _one_user(3, 1, 100), _one_user(2, 2, 200)]
    users = np.concatenate([p[0] for p in parts] + [np.array([2])])
    items = np.concatenate([p[1] for p in parts] + [np.array([200])])
    split = S.random_split(I.from_arrays(users, items), seed=7)
    assert split.n_users == 2
    assert split.n_items == 28  # user 2's items disappear with it
    np.testing.assert_array_equal(split.test.sum(1), [3, 1])
    np.testing.assert_array_equal(split.val.sum(1), [3, 1])
    np.testing.assert_array_equal(split.train.sum(1), [19, 1])


def test_random_split_large_fractions_keep_one_train_item():
    parts = [_one_user(n, u, 10 * u) for u, n in enumerate((3, 4, 10))]
    inter = I.from_arrays(*(np.concatenate(cols) for cols in zip(*parts, strict=True)))
    split = S.random_split(inter, val_frac=0.45, test_frac=0.45)
    # n=3: 1/1 -> train 1; n=4: test 2, val 2 -> val gives one back; n=10: 5/5 -> val 4
    np.testing.assert_array_equal(split.test.sum(1), [1, 2, 5])
    np.testing.assert_array_equal(split.val.sum(1), [1, 1, 4])
    np.testing.assert_array_equal(split.train.sum(1), [1, 1, 1])


def test_split_rows_align_with_filtered_interactions():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 40, 600)
    items = rng.integers(0, 70, 600)
    inter = I.from_arrays(users, items, timestamps=rng.integers(0, 10**9, 600))
    ref = I.filter_min_interactions(I.to_implicit(inter), min_user=5)
    for split in (
        S.random_split(inter, min_interactions=5, seed=1),
        S.temporal_split(inter, min_interactions=5),
        S.random_split(ref, min_interactions=5, seed=1),
    ):
        assert (split.n_users, split.n_items) == (ref.n_users, ref.n_items)
        _check_partition(split, I.to_dense(ref))


def test_temporal_split_hand_built():
    # user 0 (raw 'a'): items 3@5, 1@9, 2@1, 0@7  -> test 1, val 0, train {2, 3}
    # user 1 (raw 'b'): items 5@4, 6@4, 7@4 (all tied) -> later row is more recent:
    #                   test 7, val 6, train {5}
    # user 2 (raw 'c'): item 4@8, item 8@2 re-consumed @10, item 9@9 -> test 8, val 9
    users = np.array(["a"] * 4 + ["b"] * 3 + ["c"] * 4)
    items = np.array([3, 1, 2, 0, 5, 6, 7, 4, 8, 9, 8])
    ts = np.array([5, 9, 1, 7, 4, 4, 4, 8, 2, 9, 10])
    split = S.temporal_split(I.from_arrays(users, items, timestamps=ts))
    assert (split.n_users, split.n_items) == (3, 10)
    assert [set(np.flatnonzero(r)) for r in split.test] == [{1}, {7}, {8}]
    assert [set(np.flatnonzero(r)) for r in split.val] == [{0}, {6}, {9}]
    assert [set(np.flatnonzero(r)) for r in split.train] == [{2, 3}, {5}, {4}]


def test_temporal_split_real_data(ml):
    split = S.temporal_split(ml)
    full = I.to_dense(ml)
    _check_partition(split, full)
    np.testing.assert_array_equal(split.test.sum(1), np.ones(671))
    np.testing.assert_array_equal(split.val.sum(1), np.ones(671))
    # the test item is an event with the user's largest timestamp, no train event is later
    latest = np.full(ml.n_users, -1, np.int64)
    np.maximum.at(latest, ml.users, ml.timestamps)
    t_test = np.zeros(ml.n_users, np.int64)
    t_test[ml.users[split.test[ml.users, ml.items] == 1]] = ml.timestamps[
        split.test[ml.users, ml.items] == 1
    ]
    np.testing.assert_array_equal(t_test, latest)
    is_train = split.train[ml.users, ml.items] == 1
    assert np.all(ml.timestamps[is_train] <= t_test[ml.users[is_train]])


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(val_frac=-0.1), ValueError, "val_frac"),
        (dict(test_frac=1.5), ValueError, "test_frac"),
        (dict(val_frac=0.5, test_frac=0.5), ValueError, "val_frac"),
        (dict(test_frac="0.1"), TypeError, "test_frac"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(seed=1.0), TypeError, "seed"),
        (dict(min_interactions=2), ValueError, "min_interactions"),
        (dict(min_interactions=100), ValueError, "min_interactions"),
    ],
)
def test_random_split_bad_input(kwargs, exc, match):
    inter = I.from_arrays(*_one_user(10))
    with pytest.raises(exc, match=match):
        S.random_split(inter, **kwargs)


def test_temporal_split_bad_input():
    inter = I.from_arrays(*_one_user(2))
    with pytest.raises(ValueError, match="min_interactions"):
        S.temporal_split(inter)
    with pytest.raises(ValueError, match="min_interactions"):
        S.temporal_split(inter, min_interactions=0)
    with pytest.raises(TypeError, match="inter"):
        S.temporal_split(np.ones((3, 3)))


def test_iterate_batches():
    m = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)
    batches = list(S.iterate_batches(m, 5))
    assert [b[0].shape[0] for b in batches] == [5, 5, 5, 5, 3]
    for rows, x in batches:
        assert rows.dtype == np.int32
        np.testing.assert_array_equal(x, m[rows])
    np.testing.assert_array_equal(np.concatenate([r for r, _ in batches]), np.arange(23))
    shuffled = list(S.iterate_batches(m, 5, shuffle=True, seed=2, drop_last=True))
    assert [b[0].shape[0] for b in shuffled] == [5, 5, 5, 5]
    seen = np.concatenate([r for r, _ in shuffled])
    assert len(set(seen.tolist())) == 20 and not np.array_equal(seen, np.arange(20))
    again = np.concatenate([r for r, _ in S.iterate_batches(m, 5, shuffle=True, seed=2)])
    np.testing.assert_array_equal(again[:20], seen)
    assert sorted(again.tolist()) == list(range(23))


def test_iterate_batches_validates_eagerly():
    m = np.ones((4, 3))
    # errors are raised at the call, before any iteration
    with pytest.raises(ValueError, match="batch_size"):
        S.iterate_batches(m, 0)
    with pytest.raises(TypeError, match="batch_size"):
        S.iterate_batches(m, 2.0)
    with pytest.raises(ValueError, match="batch_size"):
        S.iterate_batches(m, 5, drop_last=True)
    with pytest.raises(TypeError, match="matrix"):
        S.iterate_batches([[1, 2]], 1)
    with pytest.raises(ValueError, match="matrix"):
        S.iterate_batches(np.ones((0, 3)), 1)
    with pytest.raises(TypeError, match="shuffle"):
        S.iterate_batches(m, 2, shuffle=1)
    with pytest.raises(ValueError, match="seed"):
        S.iterate_batches(m, 2, seed=-3)


def _raw_pairs(split):
    """Every (raw user, raw item) of train + val + test, through the split's id maps."""
    full = split.train + split.val + split.test
    rows, cols = np.nonzero(full)
    return set(zip(split.user_ids[rows].tolist(), split.item_ids[cols].tolist(), strict=True))


@pytest.mark.parametrize("make", [lambda i: S.random_split(i, seed=2), S.temporal_split])
def test_split_id_maps_hand_built(make):
    # raw users 'u9', 'u1', 'u5' (u5 has 2 items: dropped); raw items are movie ids.
    # Kept, sorted raw order: users ['u1', 'u9'], items [7, 30, 41, 42, 500] (99 only u5's).
    users = np.array(["u9", "u9", "u9", "u1", "u1", "u1", "u1", "u5", "u5", "u9"])
    items = np.array([500, 42, 7, 41, 42, 30, 7, 99, 42, 42])  # (u9, 42) twice: counted once
    ts = np.arange(10)
    split = make(I.from_arrays(users, items, timestamps=ts))
    np.testing.assert_array_equal(split.user_ids, ["u1", "u9"])
    np.testing.assert_array_equal(split.item_ids, [7, 30, 41, 42, 500])
    assert split.user_ids.shape == (split.n_users,) and split.item_ids.shape == (split.n_items,)
    expected = {("u9", 500), ("u9", 42), ("u9", 7), ("u1", 41), ("u1", 42), ("u1", 30), ("u1", 7)}
    assert _raw_pairs(split) == expected
    # column of raw item 500 holds exactly user 'u9'
    col = int(np.flatnonzero(split.item_ids == 500)[0])
    full = split.train + split.val + split.test
    np.testing.assert_array_equal(split.user_ids[np.flatnonzero(full[:, col])], ["u9"])


def test_split_id_maps_real_data(ml):
    split = S.random_split(ml, seed=0)
    implicit = I.to_implicit(ml)
    raw = set(zip(implicit.user_ids[implicit.users].tolist(), implicit.item_ids[implicit.items].tolist(), strict=True))
    assert _raw_pairs(split) == raw  # every user of latest-small has >= 20 ratings: nothing dropped
    assert split.item_ids.dtype.kind == "i" and np.all(np.diff(split.item_ids) > 0)
    # the temporal split's test item of every user is one of that user's raw events
    tsplit = S.temporal_split(ml)
    u, c = np.nonzero(tsplit.test)
    assert set(zip(tsplit.user_ids[u].tolist(), tsplit.item_ids[c].tolist(), strict=True)) <= raw


def test_split_built_by_hand_has_no_id_maps():
    z = np.zeros((2, 3), np.float32)
    split = S.Split(z, z, z, 2, 3)
    assert split.user_ids is None and split.item_ids is None
