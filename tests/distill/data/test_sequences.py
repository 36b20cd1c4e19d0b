"""SASRec-style user sequences: ordering, truncation, left padding, leave-last-out."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill.data import interactions as I
from distill.data import movielens as ML
from distill.data import sequences as Q
from distill.data import splits as S


def _example():
    # user 0: items 2@30, 0@10, 1@20, 3@40   -> 0 1 2 3
    # user 1: item 4@5                       -> 4
    # user 2: items 5@7, 1@7, 5@3 (tie at 7) -> 5(@3) 5(@7) 1(@7)
    users = np.array([0, 0, 1, 0, 2, 2, 0, 2])
    items = np.array([2, 0, 4, 1, 5, 1, 3, 5])
    ts = np.array([30, 10, 5, 20, 7, 7, 40, 3])
    return I.from_arrays(users, items, timestamps=ts)


def test_user_sequences_hand_built():
    seqs = Q.user_sequences(_example(), max_len=6)
    p = 6  # pad_id = n_items
    assert (seqs.pad_id, seqs.n_items) == (p, 6)
    np.testing.assert_array_equal(
        seqs.tokens,
        [[p, p, 0, 1, 2, 3], [p, p, p, p, p, 4], [p, p, p, 5, 5, 1]],
    )
    np.testing.assert_array_equal(seqs.lengths, [4, 1, 3])
    assert seqs.tokens.dtype == np.int32 and seqs.lengths.dtype == np.int32


def test_user_sequences_truncation_keeps_most_recent():
    seqs = Q.user_sequences(_example(), max_len=2)
    np.testing.assert_array_equal(seqs.tokens, [[2, 3], [6, 4], [5, 1]])
    np.testing.assert_array_equal(seqs.lengths, [2, 1, 2])


def test_user_sequences_min_len_drops_rows():
    seqs = Q.user_sequences(_example(), max_len=3, min_len=3)
    np.testing.assert_array_equal(seqs.tokens, [[1, 2, 3], [5, 5, 1]])  # users 0 and 2
    np.testing.assert_array_equal(seqs.lengths, [3, 3])
    with pytest.raises(ValueError, match="min_len"):
        Q.user_sequences(_example(), min_len=5)


def test_leave_last_out_hand_built():
    seqs = Q.user_sequences(_example(), max_len=5, min_len=3)
    train, val, test = Q.leave_last_out(seqs)
    p = 6
    np.testing.assert_array_equal(train.tokens, [[p, p, p, 0, 1], [p, p, p, p, 5]])
    np.testing.assert_array_equal(train.lengths, [2, 1])
    np.testing.assert_array_equal(val, [2, 5])
    np.testing.assert_array_equal(test, [3, 1])
    assert (train.pad_id, train.n_items) == (p, 6)
    with pytest.raises(ValueError, match="seqs"):
        Q.leave_last_out(Q.user_sequences(_example()))  # user 1 has length 1
    with pytest.raises(TypeError, match="seqs"):
        Q.leave_last_out(seqs.tokens)


def test_real_sequences_agree_with_temporal_split():
    ml = ML.load_movielens_small()
    seqs = Q.user_sequences(ml, max_len=200)
    counts = np.bincount(ml.users)
    assert seqs.tokens.shape == (671, 200)
    np.testing.assert_array_equal(seqs.lengths, np.minimum(counts, 200))
    assert int((seqs.lengths == 200).sum()) == 137
    # non-pad tokens exactly fill the last `length` columns
    is_item = seqs.tokens != seqs.pad_id
    np.testing.assert_array_equal(is_item.sum(1), seqs.lengths)
    cols = np.arange(200)
    np.testing.assert_array_equal(is_item, cols[None, :] >= 200 - seqs.lengths[:, None])
    # ML-latest-small has no repeated pairs, so leave-last-out == temporal_split
    _, val, test = Q.leave_last_out(seqs)
    split = S.temporal_split(ml)
    np.testing.assert_array_equal(split.test.argmax(1), test)
    np.testing.assert_array_equal(split.val.argmax(1), val)


def test_next_token_pairs_numpy_and_jit():
    p = 9
    tokens = np.array([[p, p, 1, 2, 3], [p, 4, 5, 6, 7]], np.int32)
    inputs, targets, mask = Q.next_token_pairs(tokens, p)
    np.testing.assert_array_equal(inputs, tokens[:, :-1])
    np.testing.assert_array_equal(targets, tokens[:, 1:])
    np.testing.assert_array_equal(
        mask, [[False, False, True, True], [False, True, True, True]]
    )
    assert mask.dtype == bool
    ji, jt, jm = jax.jit(Q.next_token_pairs, static_argnums=1)(jnp.asarray(tokens), p)
    np.testing.assert_array_equal(jm, mask)
    np.testing.assert_array_equal(jt, targets)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(max_len=0), ValueError, "max_len"),
        (dict(max_len=2.5), TypeError, "max_len"),
        (dict(min_len=0), ValueError, "min_len"),
        (dict(min_len=True), TypeError, "min_len"),
    ],
)
def test_user_sequences_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Q.user_sequences(_example(), **kwargs)


def test_next_token_pairs_bad_input():
    with pytest.raises(TypeError, match="tokens"):
        Q.next_token_pairs(np.ones((2, 3), np.float32), 0)
    with pytest.raises(ValueError, match="tokens"):
        Q.next_token_pairs(np.ones(3, np.int32), 0)
    with pytest.raises(ValueError, match="tokens"):
        Q.next_token_pairs(np.ones((3, 1), np.int32), 0)
    with pytest.raises(ValueError, match="pad_id"):
        Q.next_token_pairs(np.ones((3, 2), np.int32), -1)
    with pytest.raises(TypeError, match="inter"):
        Q.user_sequences(np.ones((3, 2), np.int32))
