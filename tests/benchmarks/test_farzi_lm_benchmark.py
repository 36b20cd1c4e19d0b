"""The pieces of benchmarks.farzi_lm (Farzi on PTB) on tiny inputs, against exact values."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import farzi_lm as bench
from models.transformer import transformer


def _table_apply(table, x):
    # A bigram "model": the logits at each position are the row of its input token.
    return table[x]


def _windows(n=13, length=5, vocab=7, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, (n, length)).astype(np.int32)


def test_uniform_transformer_has_perplexity_v():
    vocab = 11
    model = transformer(vocab, max_len=4, d_model=8, n_heads=1, n_layers=1)
    w = _windows(n=9, length=5, vocab=vocab)
    params = jax.jit(model.init)(jax.random.key(0), jnp.asarray(w[:1, :-1]))  # jit: compiles faster than eager
    # All-zero parameters: LayerNorm(0) = 0, so every logit is 0 and p = 1/V everywhere.
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    m = bench.lm_metrics(model.apply, zero, w, batch=4)
    assert m["PPL"] == pytest.approx(vocab, rel=1e-5)
    assert m["NLL"] == pytest.approx(np.log(vocab), rel=1e-6)
    # Greedy argmax of equal logits is token 0.
    assert m["Acc"] == pytest.approx(np.mean(w[:, 1:] == 0))


@pytest.mark.parametrize("batch", [1, 4, 13, 100])
def test_lm_metrics_matches_numpy(batch):
    vocab = 7
    table = jax.random.normal(jax.random.key(1), (vocab, vocab)) * 3
    w = _windows(vocab=vocab)
    m = bench.lm_metrics(_table_apply, table, w, batch=batch)
    t = np.asarray(table, np.float64)
    logp = t - np.log(np.exp(t).sum(1, keepdims=True))
    x, y = w[:, :-1], w[:, 1:]
    nll = -logp[x, y].mean()
    acc = np.mean(np.argmax(t, 1)[x] == y)
    assert m["NLL"] == pytest.approx(nll, rel=1e-5)
    assert m["PPL"] == pytest.approx(np.exp(nll), rel=1e-5)
    assert m["Acc"] == pytest.approx(acc)
    assert 0.0 <= m["Acc"] <= 1.0


def test_lm_metrics_validation():
    table = jnp.zeros((3, 3))
    with pytest.raises(TypeError, match="windows"):
        bench.lm_metrics(_table_apply, table, np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="windows"):
        bench.lm_metrics(_table_apply, table, np.zeros((2, 1), np.int32))
    with pytest.raises(ValueError, match="batch"):
        bench.lm_metrics(_table_apply, table, np.zeros((2, 3), np.int32), batch=0)


def test_unigram_perplexity_by_hand():
    train = np.array([0, 0, 0, 1, 2, 0], np.int32)  # counts 4, 1, 1, 0 (V = 4)
    w = np.array([[3, 0, 1], [0, 2, 3]], np.int32)  # targets 0, 1, 2, 3
    p = np.array([5, 2, 2, 1]) / 10.0
    expect = np.exp(-np.mean(np.log(p[[0, 1, 2, 3]])))
    assert bench.unigram_perplexity(train, w, 4) == pytest.approx(expect, rel=1e-12)
    # Equal counts give the uniform model: PPL = V.
    assert bench.unigram_perplexity(np.arange(8, dtype=np.int32), w, 8) == pytest.approx(8.0)


def test_unigram_perplexity_validation():
    w = np.array([[0, 1]], np.int32)
    with pytest.raises(ValueError, match="train_stream"):
        bench.unigram_perplexity(np.array([0, 5], np.int32), w, 4)
    with pytest.raises(ValueError, match="windows"):
        bench.unigram_perplexity(np.array([0, 1], np.int32), np.array([[0, 4]], np.int32), 4)
    with pytest.raises(TypeError, match="windows"):
        bench.unigram_perplexity(np.array([0, 1], np.int32), w.astype(float), 4)
    with pytest.raises(ValueError, match="vocab_size"):
        bench.unigram_perplexity(np.array([0, 1], np.int32), w, 1)


# A hand-made stream for the n-gram baselines: V = 4, counts 0:3, 1:3, 2:1, 3:1 (N = 8).
_STREAM = np.array([0, 1, 0, 2, 1, 0, 1, 3], np.int32)


def _brute_bigram(stream, vocab, k, lam):
    # Straight from the definition, one (v, w) pair at a time.
    uni = [(sum(int(t == w) for t in stream) + 1) / (len(stream) + vocab) for w in range(vocab)]
    table = np.zeros((vocab, vocab))
    for v in range(vocab):
        c_v = sum(1 for a in stream[:-1] if a == v)
        for w in range(vocab):
            c_vw = sum(1 for a, b in zip(stream[:-1], stream[1:], strict=True) if a == v and b == w)
            table[v, w] = lam * (c_vw + k) / (c_v + k * vocab) + (1 - lam) * uni[w]
    return table


def test_bigram_table_by_hand_and_brute_force():
    # context 0 is followed by 1, 2, 1: c_0 = 3, c_01 = 2; p_uni(1) = (3 + 1)/(8 + 4) = 1/3.
    t = bench.bigram_table(_STREAM, 4, k=0.5, lam=0.6)
    assert t[0, 1] == pytest.approx(0.6 * 2.5 / 5.0 + 0.4 / 3.0, rel=1e-12)
    # context 3 is never followed by anything: the bigram part is uniform.
    assert t[3, 2] == pytest.approx(0.6 * 0.25 + 0.4 * 2 / 12, rel=1e-12)
    for k, lam in [(0.5, 0.6), (1e-3, 1.0), (2.0, 0.0)]:
        np.testing.assert_allclose(bench.bigram_table(_STREAM, 4, k=k, lam=lam),
                                   _brute_bigram(_STREAM.tolist(), 4, k, lam), rtol=1e-12)
    np.testing.assert_allclose(bench.bigram_table(_STREAM, 4, k=0.5, lam=0.6).sum(1), 1.0, rtol=1e-12)
    # repeated and partial contexts give the same rows
    np.testing.assert_allclose(bench.bigram_table(_STREAM, 4, k=0.5, lam=0.6, contexts=[2, 0, 2]), t[[2, 0, 2]])
    with pytest.raises(ValueError, match="k"):
        bench.bigram_table(_STREAM, 4, k=0.0, lam=0.5)
    with pytest.raises(ValueError, match="lam"):
        bench.bigram_table(_STREAM, 4, k=1.0, lam=1.5)


@pytest.mark.parametrize("chunk", [1, 3, 512])
def test_ngram_stats_against_brute_force(chunk):
    w = np.array([[0, 1, 3, 3], [2, 0, 0, 1], [3, 2, 1, 0]], np.int32)
    table = _brute_bigram(_STREAM.tolist(), 4, 0.1, 0.8)
    nll, hit = bench.ngram_stats(_STREAM, w, 4, order=2, k=0.1, lam=0.8, chunk=chunk)
    for i in range(3):
        for t in range(3):
            assert nll[i, t] == pytest.approx(-np.log(table[w[i, t], w[i, t + 1]]), rel=1e-12)
            assert hit[i, t] == (np.argmax(table[w[i, t]]) == w[i, t + 1])
    uni = np.array([4, 4, 2, 2]) / 12.0
    nll1, hit1 = bench.ngram_stats(_STREAM, w, 4, order=1)
    np.testing.assert_allclose(nll1, -np.log(uni[w[:, 1:]]), rtol=1e-12)
    np.testing.assert_array_equal(hit1, w[:, 1:] == 0)  # argmax tie 0/1 → lowest id
    assert np.exp(nll1.mean()) == pytest.approx(bench.unigram_perplexity(_STREAM, w, 4), rel=1e-12)
    with pytest.raises(ValueError, match="order"):
        bench.ngram_stats(_STREAM, w, 4, order=3)


def test_tune_bigram_picks_the_validation_minimum():
    valid = np.array([[0, 1, 0, 1, 3], [1, 0, 2, 1, 0]], np.int32)
    ks, lams = (0.01, 0.5, 2.0), (0.3, 0.9, 1.0)
    k, lam, grid = bench.tune_bigram(_STREAM, valid, 4, ks=ks, lams=lams)
    ppl = {(a, b): np.exp(-np.mean(np.log(_brute_bigram(_STREAM.tolist(), 4, a, b)[valid[:, :-1], valid[:, 1:]])))
           for a in ks for b in lams}
    assert (k, lam) == min(ppl, key=ppl.get)
    assert len(grid) == 9
    assert grid[f"k={k:g},lam={lam:g}"] == pytest.approx(ppl[(k, lam)], rel=1e-12)


def test_sequence_perplexity_by_hand():
    nll = np.array([1.0, 2.0, 3.0, 0.5])
    assert bench.sequence_perplexity(nll, [0, 0, 1, 1]) == pytest.approx((np.exp(1.5) + np.exp(1.75)) / 2)
    assert bench.sequence_perplexity(nll, [7, 7, 7, 7]) == pytest.approx(np.exp(1.625))  # one sequence: corpus PPL
    # ids need not be sorted or consecutive
    assert bench.sequence_perplexity(nll, [3, 9, 3, 9]) == pytest.approx((np.exp(2.0) + np.exp(1.25)) / 2)
    with pytest.raises(ValueError, match="ids"):
        bench.sequence_perplexity(nll, [0, 1])
    # a sentence runs up to and including its <eos> (id 2)
    np.testing.assert_array_equal(bench.sentence_ids([5, 2, 7, 2, 2, 9], 2), [0, 0, 1, 1, 2, 3])


def test_lm_metrics_sentence_and_window_perplexity_by_hand():
    # Bigram table model, V = 3, <eos> = 2; windows cut from the stream 0 1 2 | 1 2 | 0 0 (3 sentences).
    table = jnp.log(jnp.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]]))
    stream = np.array([0, 1, 2, 1, 2, 0, 0], np.int32)
    from distill.data.ptb import lm_windows

    w = lm_windows(stream, 3)  # [[0 1 2 1], [1 2 0 0]]
    m = bench.lm_metrics(_table_apply, table, w, eos=2, batch=1)
    p = np.array([[0.25, 0.8, 0.2], [0.8, 0.6, 0.5]])  # p(target | previous token)
    nll = -np.log(p)
    # sentences of the targets 1 2 | 1 2 | 0 0 0 (the first word, 0, is never a target)
    sent = [nll[0, :2], np.array([nll[0, 2], nll[1, 0]]), nll[1, 1:]]
    assert m["PPL"] == pytest.approx(np.exp(nll.mean()), rel=1e-5)
    assert m["PPL_win"] == pytest.approx(np.mean(np.exp(nll.mean(1))), rel=1e-5)
    assert m["PPL_seq"] == pytest.approx(np.mean([np.exp(s.mean()) for s in sent]), rel=1e-5)
    assert m["Acc"] == pytest.approx(4 / 6)  # greedy 0, 2, 0 after 0, 1, 2: hits [[0 1 0], [1 1 1]]
    assert "PPL_seq" not in bench.lm_metrics(_table_apply, table, w)


def test_unigram_dsyn_holds_the_unigram_distribution():
    data = bench.unigram_dsyn(_STREAM, 3, 5, 4)
    chex.assert_shape(data, (3, 5, 4))
    assert data.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(data), np.broadcast_to(np.array([4, 4, 2, 2]) / 12.0, (3, 5, 4)),
                               rtol=1e-6)
    # The soft cross-entropy of D_syn is minimised by predicting p_uni everywhere: its value
    # there is the unigram entropy, and the gradient w.r.t. the logits vanishes.
    logits = jnp.broadcast_to(jnp.log(data[0, 0]), (3, 4, 4))
    from distill.farzi import soft_cross_entropy

    ce, g = jax.value_and_grad(soft_cross_entropy)(logits, data[:, 1:])
    p = np.array([4, 4, 2, 2]) / 12.0
    assert float(ce) == pytest.approx(-np.sum(p * np.log(p)), rel=1e-6)
    np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-7)
    with pytest.raises(ValueError, match="xi"):
        bench.unigram_dsyn(_STREAM, 3, 1, 4)


def test_random_windows_are_distinct_stream_slices():
    stream = np.arange(100, dtype=np.int32)  # token = position, so a slice is identifiable
    w = np.asarray(bench.random_windows(stream, 6, 5, seed=3))
    chex.assert_shape(w, (6, 5))
    np.testing.assert_array_equal(np.diff(w, axis=1), 1)  # contiguous
    assert np.all(w[:, 0] % 4 == 0)  # lm_windows(stream, ξ − 1): stride ξ − 1
    assert len(set(w[:, 0].tolist())) == 6
    np.testing.assert_array_equal(w, np.asarray(bench.random_windows(stream, 6, 5, seed=3)))
    with pytest.raises(ValueError, match="mu"):
        bench.random_windows(stream, 30, 5)
    with pytest.raises(ValueError, match="xi"):
        bench.random_windows(stream, 3, 1)


def test_prepare_validation():
    with pytest.raises(ValueError, match="vocab_size"):
        bench.prepare(1, 5)
    with pytest.raises(ValueError, match="seq_len"):
        bench.prepare(100, 0)
    with pytest.raises(ValueError, match="val_windows"):
        bench.prepare(100, 5, val_windows=0)


def _cyclic_data(vocab=6, length=5):
    # Token t is always followed by (t + 1) mod V: a perfectly learnable language.
    stream = (np.arange(600) % vocab).astype(np.int32)
    from distill.data.ptb import lm_windows

    w = jnp.asarray(lm_windows(stream, length))
    return {"train": w[:80], "val_es": w[80:90], "test": w[90:], "valid": w[80:90], "eos": 0}


@pytest.mark.slow
def test_fit_learns_a_cyclic_language_from_tokens_and_soft_data():
    vocab, length = 6, 5
    d = _cyclic_data(vocab, length)
    model = transformer(vocab, max_len=length, d_model=16, n_heads=1, n_layers=1)
    kw = dict(lr=3e-2, batch=16, max_steps=80, eval_every=40, patience=2)
    params, best, val = bench.fit(model, d["train"], d, jax.random.key(0), **kw)
    m = bench.lm_metrics(model.apply, params, d["test"])
    assert m["Acc"] == 1.0 and m["PPL"] < 1.5 and best > 0
    assert val == pytest.approx(bench.lm_metrics(model.apply, params, d["val_es"])["NLL"], rel=1e-6)
    # The same windows as one-hot soft data (how Farzi data enters): same behaviour.
    soft = jax.nn.one_hot(d["train"][:10], vocab)
    res, steps, per_seed = bench.trials(model, soft, d, [0], **kw)
    assert res["Acc"] == (1.0, 0.0)
    assert 1.0 <= res["PPL"][0] < 1.5
    assert len(steps) == 1 and per_seed[0]["Acc"] == 1.0
    # every test target of the cyclic stream is predicted with p ≈ 1: each sentence PPL ≈ 1
    assert 1.0 <= res["PPL_seq"][0] < 1.5 and 1.0 <= res["PPL_win"][0] < 1.5


@pytest.mark.slow
def test_omega_cache_round_trip(tmp_path):
    vocab, length = 6, 5
    d = _cyclic_data(vocab, length)
    model = transformer(vocab, max_len=length, d_model=8, n_heads=1, n_layers=1)
    kw = dict(n_runs=1, steps=4, save_every=2, batch=8, lr=1e-2)
    omega = bench.load_or_pretrain_omega_lm(model, d, str(tmp_path), "tiny", **kw)
    leaves = jax.tree_util.tree_leaves(omega)
    assert all(a.shape[0] == 3 for a in leaves)  # steps 0, 2, 4
    assert (tmp_path / "omega_tiny").is_dir()
    again = bench.load_or_pretrain_omega_lm(model, d, str(tmp_path), "tiny", **kw)
    chex.assert_trees_all_close(omega, again)
    # checkpoints of one run differ along the trajectory
    assert not np.allclose(np.asarray(leaves[0][0]), np.asarray(leaves[0][2]))


@pytest.mark.slow
def test_main_tiny_end_to_end(tmp_path):
    path = bench.main(["--vocab", "50", "--shapes", "5x6", "--outer-steps", "2", "--inner-steps", "2",
                       "--seeds", "0", "1", "--syn-steps", "20", "--full-steps", "20", "--full-lrs", "1e-2", "2e-2",
                       "--full-dropouts", "0", "--val-windows", "100", "--omega-steps", "10", "--omega-every", "5",
                       "--d-model", "8", "--latent-dim", "8", "--init", "real", "--init-rows", "random",
                       "--evals", "2", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")])
    out = json.loads(path.read_text())
    assert set(out) == {"benchmark", "config", "results", "hardware", "versions", "wall_time_s"}
    rows = {r["method"].split(" (")[0]: r for r in out["results"]["rows"]}
    assert set(rows) == {"unigram", "bigram", "full data", "random", "unigram D_syn", "Farzi init random",
                         "Farzi init real", "Farzi real"}
    for name, r in rows.items():
        # Models fitted on the real data beat the uniform PPL (= vocab 50); a model trained 20 steps on
        # 5 tiny synthetic or random windows may overfit them and land slightly above it.
        bound = 50.0 if name in ("unigram", "bigram", "full data") else 100.0
        assert 1.0 < r["PPL"] < bound and 0.0 <= r["Acc"] <= 1.0, (name, r["PPL"])
        assert r["PPL_seq"] >= r["PPL"] * (1 - 1e-9)  # Jensen: the mean of exp ≥ exp of the mean
        assert set(r["std"]) == {"PPL", "PPL_seq", "PPL_win", "Acc"}
    assert rows["unigram"]["std"]["PPL"] == 0.0 and len(rows["random"]["per_seed"]) == 2
    cfg = out["config"]
    assert cfg["vocab_size"] == 50 and cfg["uniform_ppl"] == 50
    assert set(cfg["full_data_tuning"]["grid"]) == {"lr=0.01,dropout=0", "lr=0.02,dropout=0"}
    assert cfg["farzi"]["init"] == "real" and cfg["farzi"]["inner_steps"] == 2 and cfg["farzi"]["steps"] == 2
    assert path.with_suffix(".png").exists() and (tmp_path / "farzi_ptb_5x6.npz").exists()
