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
    params = model.init(jax.random.key(0), jnp.asarray(w[:1, :-1]))
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
    return {"train": w[:80], "val_es": w[80:90], "test": w[90:], "valid": w[80:90]}


def test_fit_learns_a_cyclic_language_from_tokens_and_soft_data():
    vocab, length = 6, 5
    d = _cyclic_data(vocab, length)
    model = transformer(vocab, max_len=length, d_model=16, n_heads=1, n_layers=1)
    kw = dict(lr=3e-2, batch=16, max_steps=80, eval_every=40, patience=2)
    params, best = bench.fit(model, d["train"], d, jax.random.key(0), **kw)
    m = bench.lm_metrics(model.apply, params, d["test"])
    assert m["Acc"] == 1.0 and m["PPL"] < 1.5 and best > 0
    # The same windows as one-hot soft data (how Farzi data enters): same behaviour.
    soft = jax.nn.one_hot(d["train"][:10], vocab)
    res, steps = bench.trials(model, soft, d, [0], **kw)
    assert res["Acc"] == (1.0, 0.0)
    assert 1.0 <= res["PPL"][0] < 1.5
    assert len(steps) == 1


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
                       "--seeds", "0", "--train-steps", "20", "--val-windows", "100", "--omega-steps", "10",
                       "--omega-every", "5", "--d-model", "8", "--latent-dim", "8", "--out", str(tmp_path),
                       "--cache", str(tmp_path / "cache")])
    out = json.loads(path.read_text())
    assert set(out) == {"benchmark", "config", "results", "hardware", "versions", "wall_time_s"}
    rows = {(r["method"], r["data"]): r for r in out["results"]["rows"]}
    assert {m for m, _ in rows} == {"unigram (add-one)", "full data", "random", "Farzi init (0 outer steps)", "Farzi"}
    for r in rows.values():
        assert 1.0 < r["PPL"] < 50.0 and 0.0 <= r["Acc"] <= 1.0
    assert out["config"]["vocab_size"] == 50 and out["config"]["uniform_ppl"] == 50
    assert path.with_suffix(".png").exists()
