"""Per-user item sequences for sequential recommendation (dissertation Ch. 4).

Farzi distils sequential data for autoregressive models — SASRec on recommendation
logs and a Transformer LM on text — so a recommendation log is turned into one
time-ordered item sequence per user, SASRec style: sequences are truncated to their
most recent ``max_len`` items and LEFT-padded, so the newest item always sits in the
last column and a causal model's final position predicts the next item.

Item ids keep their values ``0..n_items-1``; the padding token is ``pad_id =
n_items``, so a model's vocabulary (embedding table) has ``n_items + 1`` rows.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from distill.checks import check_array, check_int
from distill.data.interactions import Interactions, check_interactions

__all__ = ["Sequences", "user_sequences", "leave_last_out", "next_token_pairs"]


class Sequences(NamedTuple):
    """Left-padded item sequences, one row per user.

    Attributes:
      tokens: int32 ``(n_users, max_len)``; row ``r`` holds the user's most recent
        ``lengths[r]`` items oldest → newest in its last ``lengths[r]`` columns,
        ``pad_id`` before them.
      lengths: int32 ``(n_users,)`` number of non-pad tokens per row (after truncation).
      pad_id: the padding token, equal to ``n_items``.
      n_items: number of items; vocabulary size for models is ``n_items + 1``.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    pad_id: int
    n_items: int


def _check_sequences(seqs: Any, name: str = "seqs") -> Sequences:
    if not isinstance(seqs, Sequences):
        raise TypeError(f"{name}: expected a Sequences, got {type(seqs).__name__}")
    return seqs


def user_sequences(inter: Interactions, *, max_len: int = 200, min_len: int = 1) -> Sequences:
    """Time-ordered item sequence of every user (SASRec preprocessing).

    Each user's events are ordered by ``(timestamp, row)`` — a stable sort, so equal
    timestamps keep the log's order. Every event is kept (a re-consumed item appears
    again; apply :func:`~distill.data.interactions.to_implicit` first to collapse
    repeats). Only the most recent ``max_len`` events are kept (SASRec's ``maxlen``,
    200 for MovieLens).

    Args:
      inter: the interaction log.
      max_len: width of the token matrix (>= 1).
      min_len: users with fewer events (before truncation) are dropped (>= 1).

    Returns:
      :class:`Sequences` whose rows are the kept users in increasing user id, i.e.
      ``np.flatnonzero(np.bincount(inter.users) >= min_len)``; with ``min_len=1`` row
      ``u`` is user ``u``.

    Raises:
      ValueError: non-positive sizes, or no user has ``min_len`` events.
    """
    check_interactions(inter)
    max_len = check_int(max_len, "max_len", min_value=1)
    min_len = check_int(min_len, "min_len", min_value=1)
    counts = np.bincount(inter.users, minlength=inter.n_users)
    kept = np.flatnonzero(counts >= min_len)
    if kept.size == 0:
        raise ValueError(
            f"min_len: no user has >= {min_len} interactions (largest: {int(counts.max())})"
        )
    n = inter.users.shape[0]
    order = np.lexsort((np.arange(n), inter.timestamps, inter.users))
    su = inter.users[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    from_end = starts[su] + counts[su] - 1 - np.arange(n)  # 0 = user's newest event
    keep = (from_end < max_len) & (counts[su] >= min_len)
    row_of = np.full(inter.n_users, -1, np.int64)
    row_of[kept] = np.arange(kept.size)
    pad_id = inter.n_items
    tokens = np.full((kept.size, max_len), pad_id, np.int32)
    tokens[row_of[su[keep]], max_len - 1 - from_end[keep]] = inter.items[order][keep]
    lengths = np.minimum(counts[kept], max_len).astype(np.int32)
    return Sequences(tokens, lengths, int(pad_id), int(inter.n_items))


def leave_last_out(seqs: Sequences) -> tuple[Sequences, np.ndarray, np.ndarray]:
    """SASRec's leave-one-out protocol: last item → test, last-but-one → validation.

    The training sequences are the inputs with their last two items removed, shifted
    right by two so they stay left-padded at the same width. To score the validation
    target, feed the training sequences; to score the test target, feed the sequences
    with only the last item removed (``tokens[:, :-1]``, which is still left-padded).

    Args:
      seqs: sequences with every length >= 3 (so training keeps at least one item).

    Returns:
      ``(train, val_targets, test_targets)``: training :class:`Sequences`
      (``lengths - 2``), int32 ``(n_users,)`` last-but-one items, int32
      ``(n_users,)`` last items.

    Raises:
      ValueError: a sequence shorter than 3.
    """
    _check_sequences(seqs)
    short = np.flatnonzero(seqs.lengths < 3)
    if short.size:
        r = int(short[0])
        raise ValueError(
            f"seqs: every length must be >= 3 for leave-last-out, row {r} has "
            f"length {int(seqs.lengths[r])} ({short.size} rows too short; "
            f"use user_sequences(..., min_len=3))"
        )
    tokens = np.asarray(seqs.tokens)
    train = np.full_like(tokens, seqs.pad_id)
    train[:, 2:] = tokens[:, :-2]
    return (
        Sequences(train, (seqs.lengths - 2).astype(np.int32), seqs.pad_id, seqs.n_items),
        tokens[:, -2].copy(),
        tokens[:, -1].copy(),
    )


def next_token_pairs(tokens: Any, pad_id: int) -> tuple[Any, Any, Any]:
    """Shifted inputs/targets for next-token training of a causal model.

    Works on numpy and jax arrays alike (only slicing and comparisons), so it can be
    called inside a jitted training step.

    Args:
      tokens: int ``(n, L)`` token matrix, ``L >= 2`` (e.g. :attr:`Sequences.tokens`).
      pad_id: the padding token.

    Returns:
      ``(inputs, targets, mask)``: ``inputs = tokens[:, :-1]``, ``targets =
      tokens[:, 1:]``, both ``(n, L-1)``, and the bool ``(n, L-1)`` mask of positions
      where neither the input nor the target is padding — with left padding the
      first real item is an input only, never a target.
    """
    check_array(tokens, "tokens", ndim=2, kind="int")
    if tokens.shape[1] < 2:
        raise ValueError(f"tokens: expected at least 2 columns, got shape {tuple(tokens.shape)}")
    pad_id = check_int(pad_id, "pad_id", min_value=0)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    return inputs, targets, (targets != pad_id) & (inputs != pad_id)
