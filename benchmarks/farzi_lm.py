"""Farzi on language modelling: a Transformer LM on Farzi data vs n-gram, random-window and full-PTB baselines.

    python -m benchmarks.farzi_lm --cache runs/cache   # reduced CPU configuration (below)
    python -m benchmarks.farzi_lm --quick              # one shape, fewer outer steps, 2 seeds
    python -m benchmarks.farzi_lm --full               # the dissertation's configuration (GPU)

The dissertation's Table 4.5 PTB rows (Ch. 4, §4.5): Penn Treebank (Mikolov split,
:func:`distill.data.ptb.load_ptb`) with the 2,000 most frequent words (§4.5.4; the rest →
``<unk>``), a small decoder-only Transformer (:func:`models.transformer.transformer`, Table
4.3: d_model 16, 1 layer, 1 head), metrics on the **test** stream cut into windows
(:func:`distill.data.ptb.lm_windows`, ξ_max inputs each). Two perplexities:

    corpus PPL   = exp( −(1/N) Σ_t log p(w_t | w_<t) )                       (all N test targets)
    sequence PPL = (1/S) Σ_s PPL_s,   log PPL_s = −(1/|s|) Σ_{t∈s} log p(w_t | w_<t)   (§4.5.3)

where s runs over the test **sentences** (a sentence's targets are its words and its
``<eos>``; the context is what precedes the word inside its window); ``PPL_win`` is the same
average over windows. The sequence PPL is the dissertation's number: by Jensen it is ≥ the
corpus PPL, and short sentences weigh as much as long ones. ``Acc`` is greedy next-token
accuracy over all targets. The validation stream selects every hyper-parameter (n-gram
smoothing, the full-data Transformer's lr and dropout), early-stops every Transformer and
selects D_syn. Rows, each mean ± std over ``--seeds`` (n-gram models are deterministic):

* **unigram (add-one)**: ``p(w) ∝ c_w + 1`` — the floor a context-free model reaches;
* **bigram (interpolated add-k)**: ``p(w | v) = λ (c_vw + k)/(c_v + kV) + (1 − λ) p_uni(w)``, (k, λ)
  chosen on validation;
* **full data (tuned)**: the Transformer on every training window, lr × dropout from Table 4.3's
  grid ({1e-2, 2e-2, 5e-2} × {0, 0.2}) chosen by validation NLL (seed 0), then all seeds;
* **random [μ×ξ]**: μ random training windows of ξ tokens (a fresh draw per seed);
* **unigram D_syn [μ×ξ]**: μ×ξ soft tokens that all equal the unigram distribution — what a
  synthetic set holding no context at all teaches;
* **Farzi init <init> [μ×ξ]**: :func:`distill.farzi.initial_factors` with no outer step;
* **Farzi <init> [μ×ξ]**: :func:`distill.farzi.distill` — D_syn meta-learned through T inner
  steps (reverse-mode Adam, Algorithm 6) from the checkpoints Ω of pretraining runs on the
  real windows (orbax cache under ``--cache``); the outer loop keeps the D_syn whose Transformer
  (trained ``--eval-fit-steps`` steps on it) has the lowest validation NLL.

Every Transformer is trained with Adam (:func:`fit`: ``jax.lax.scan`` chunks of
``eval_every`` steps, early stopping on the validation NLL of a fixed random
``--val-windows`` subset); test metrics of the best validated parameters.

**Reduced CPU configuration (default)**: ξ = 15 (Table 4.3: ξ ∈ {5, 15}), [50×15] and
[200×15], Farzi with :func:`distill.farzi.distill`'s defaults for T, inner lr, latent d and
the random-θ_0 probability unless a flag overrides them, ``init='mix'`` (real windows blended
with the unigram distribution), Ω checkpoints sampled with a half-life of 100 pretraining
steps (:func:`distill.farzi.early_weights`), 80 outer steps at 1e-2 (Table 4.3: 8,000),
real batch 256 (Table 4.3), Ω = 2 runs × 9 checkpoints (0, 50, …, 400 Adam steps, batch 64,
lr 1e-2; Table 4.3: |Ω| = 400). ``--full``: V = 10,000, [400×50] (Table 4.5's 1 % row), 8,000
outer steps, T = 400, |Ω| = 400, d = 8 — a multi-hour GPU job.

Measured on 2 shared CPU cores (V = 2,000, windows of 15 inputs, test set; pieces run
separately, not one default run). n-gram (deterministic): unigram PPL 196.5 / PPL_seq
245.4 / Acc 17.95 %; bigram (k = 0.01, λ = 0.9 chosen on validation) 73.3 / 95.0 / 24.11 %.
Full-data Transformer, seed 0, 3,000 steps: validation PPL 84.6 (lr 2e-2, dropout 0), 94.2
(2e-2, 0.2), 105.4 (5e-2, 0), 150.2 (5e-2, 0.2) — lr 2e-2 still improving at the cap, and
the bigram model beats every one of them. [200×15], 3 seeds: ``init='mix'`` (α = 0.5, d = 8)
with no outer step 207.5 ± 5.8, after 20 outer steps (T = 30, inner lr 1e-2, Ω half-life 100,
random θ_0 w.p. 0.25) 200.0 ± 2.5 (validation PPL of the selection fit 197.2, 196.5, 198.1,
197.7 at outer steps 10–40: a plateau; unigram 195.3); every inner run from a random θ_0
(``--random-init-prob 1``), 30 steps: 201.7 ± 1.4, outer loss 5.42 → 5.34;
``init='popularity'`` after 40 outer steps at outer lr 3e-2 206.2 ± 3.5 (worse than its
start, the unigram D_syn, ≈ 198). At tens of outer steps Farzi does not get below the
unigram model; the outer loss is dominated by which θ_0 is drawn (5.0–5.4 from step to step).
"""

from __future__ import annotations

import ast
import functools
import inspect
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import format_table, mean_std, output_dir, parser, seed_row, write_result
from distill import export, farzi, inner
from distill.checks import check_array, check_float, check_index_range, check_int
from distill.data.ptb import EOS, lm_windows, load_ptb
from distill.parametrize import latent_factorization
from models.model_fns import ModelFns
from models.transformer import transformer

__all__ = ["prepare", "lm_metrics", "summarize", "sentence_ids", "sequence_perplexity", "unigram_logprobs",
           "unigram_perplexity", "bigram_table", "ngram_stats", "tune_bigram", "unigram_dsyn", "random_windows",
           "fit", "trials", "tune_full", "load_or_pretrain_omega_lm", "main"]

METRICS = ("PPL", "PPL_seq", "PPL_win", "Acc")
COLUMNS = ["method", "data", "PPL", "PPL_seq", "Acc", "PPL_%full", "steps", "time_s"]

# Full data: batch 64 (Table 4.3: 256) — far cheaper per step on a CPU; validation every 200 steps.
# Synthetic sets (μ ≤ 400 rows) are used whole (Table 4.3's D_syn batch 256); validation every 5
# steps because a 50–200-window set is over-fitted within ~25 steps at lr 1e-2 (measured).
TRAIN_FULL = dict(lr=1e-2, batch=64, max_steps=6000, eval_every=200, patience=5)
TRAIN_SYN = dict(lr=1e-2, batch=256, max_steps=600, eval_every=5, patience=4)
BIGRAM_K = (1e-3, 1e-2, 1e-1, 1.0)
BIGRAM_LAMBDA = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


# ----------------------------------------------------------------------------- data and metrics


def prepare(vocab_size: int, seq_len: int, *, val_windows: int | None = 1000) -> dict:
    """PTB with ``vocab_size`` tokens cut into ``(n, seq_len + 1)`` windows per split.

    Returns a dict with ``train``/``valid``/``test`` int32 windows (jax), ``val_es`` — a
    fixed random subset of ``val_windows`` validation windows (all when ``None``) for early
    stopping, where a full validation pass would cost more than the steps it judges — the
    raw ``train_stream`` (numpy), ``vocab_size``, the ``eos`` id and the stream lengths.
    """
    vocab_size = check_int(vocab_size, "vocab_size", min_value=2)
    seq_len = check_int(seq_len, "seq_len", min_value=1)
    if val_windows is not None:
        val_windows = check_int(val_windows, "val_windows", min_value=1)
    corpus = load_ptb(vocab_size=vocab_size)
    out = {k: jnp.asarray(lm_windows(getattr(corpus, k), seq_len)) for k in ("train", "valid", "test")}
    n_val = out["valid"].shape[0]
    keep = np.arange(n_val) if val_windows is None or val_windows >= n_val else \
        np.sort(np.random.default_rng(0).choice(n_val, val_windows, replace=False))
    out["val_es"] = out["valid"][keep]
    out.update(train_stream=corpus.train, vocab_size=len(corpus.vocab), eos=corpus.vocab.index(EOS),
               tokens={k: int(getattr(corpus, k).shape[0]) for k in ("train", "valid", "test")})
    return out


def sentence_ids(targets: Any, eos: int) -> np.ndarray:
    """Sentence index of every target of a stream: int ``(N,)`` for int ``(N,)`` targets.

    A sentence is the run of targets up to and including an ``<eos>``, so ``ids[t]`` is the
    number of ``<eos>`` among ``targets[:t]``. ``targets`` must be in stream order — the
    flattened ``windows[:, 1:]`` of :func:`distill.data.ptb.lm_windows` with its default stride.
    """
    targets = np.asarray(targets).reshape(-1)
    is_eos = (targets == eos).astype(np.int64)
    return np.concatenate([[0], np.cumsum(is_eos[:-1])])


def sequence_perplexity(nll: Any, ids: Any) -> float:
    """Mean over sequences of their perplexities (dissertation §4.5.3).

    ``PPL_C = (1/S) Σ_s exp( (1/|s|) Σ_{t∈s} nll_t )`` — log₂ and 2^ in the dissertation, the
    same number.

    Args:
      nll: float ``(N,)`` per-target negative log-likelihoods (nats).
      ids: int ``(N,)`` sequence index of each target (any labels; every label is a sequence).

    Returns:
      The average sequence perplexity.
    """
    nll, ids = np.asarray(nll, np.float64).reshape(-1), np.asarray(ids).reshape(-1)
    if nll.shape != ids.shape:
        raise ValueError(f"ids: expected shape {nll.shape} like nll, got {ids.shape}")
    _, inv = np.unique(ids, return_inverse=True)
    mean = np.bincount(inv, weights=nll) / np.bincount(inv)
    return float(np.mean(np.exp(mean)))


def summarize(nll: Any, hit: Any, targets: Any, eos: int | None = None) -> dict[str, float]:
    """Corpus, per-window and per-sentence perplexity and accuracy from per-target values.

    Args:
      nll: float ``(n, L)`` negative log-likelihood of each target (nats).
      hit: bool ``(n, L)`` whether the greedy prediction equals the target.
      targets: int ``(n, L)`` targets ``windows[:, 1:]`` (consecutive stream windows when ``eos``).
      eos: the ``<eos>`` id; ``None`` skips the sentence-level ``PPL_seq``.

    Returns:
      ``{"NLL", "PPL", "PPL_win", "Acc"}`` plus ``"PPL_seq"`` with ``eos``.
    """
    nll = np.asarray(nll, np.float64)
    out = {"NLL": float(nll.mean()), "PPL": float(np.exp(nll.mean())), "Acc": float(np.mean(hit)),
           "PPL_win": float(np.mean(np.exp(nll.mean(axis=1))))}
    if eos is not None:
        out["PPL_seq"] = sequence_perplexity(nll, sentence_ids(targets, eos))
    return out


@functools.partial(jax.jit, static_argnums=0)
def _token_stats(apply, params, rows):
    logits = apply(params, rows[:, :-1]).astype(jnp.float32)
    targets = rows[:, 1:]
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), targets[..., None], axis=-1)[..., 0]
    return nll, jnp.argmax(logits, -1) == targets


def lm_metrics(apply: Callable[[Any, jax.Array], jax.Array], params: Any, windows: Any, *,
               batch: int = 1024, eos: int | None = None) -> dict[str, float]:
    """Perplexities and greedy next-token accuracy of a model on int windows (:func:`summarize`).

    ``NLL = −(1/N) Σ log p(w_t | w_<t)`` over all ``N = n·L`` targets ``windows[:, 1:]``
    (inputs ``windows[:, :-1]``); ``PPL = exp(NLL)``; ``Acc = (1/N) Σ [argmax_v p(v) = w_t]``
    (ties go to the lowest token id). A model with constant logits has PPL = V exactly.

    Args:
      apply: ``apply(params, x) -> (n, L, V)`` logits for int ``(n, L)`` inputs (hashable:
        it is a static argument of the jitted batch).
      params: the model parameters.
      windows: int ``(n, L + 1)`` windows (:func:`distill.data.ptb.lm_windows`).
      batch: windows per jitted call (memory: ``batch · L · V`` floats).
      eos: the ``<eos>`` id for the sentence-level ``PPL_seq`` (windows in stream order).

    Returns:
      ``{"NLL", "PPL", "PPL_win", "Acc"}`` (+ ``"PPL_seq"``), Acc in [0, 1].
    """
    check_array(windows, "windows", ndim=2, kind="int")
    batch = check_int(batch, "batch", min_value=1)
    if windows.shape[1] < 2:
        raise ValueError(f"windows: expected at least 2 columns, got shape {tuple(windows.shape)}")
    windows = jnp.asarray(windows)
    n = windows.shape[0]
    b = min(batch, n)
    nll, hit = [], []
    for i in range(0, n, b):
        rows = windows[i : i + b]
        k = rows.shape[0]
        # The tail is padded to the batch size (and cut off) so one compilation serves every call.
        rows = jnp.concatenate([rows, jnp.broadcast_to(rows[:1], (b - k, rows.shape[1]))]) if k < b else rows
        s, h = _token_stats(apply, params, rows)
        nll.append(np.asarray(s)[:k])
        hit.append(np.asarray(h)[:k])
    return summarize(np.concatenate(nll), np.concatenate(hit), np.asarray(windows[:, 1:]), eos)


# ----------------------------------------------------------------------------- n-gram baselines


def _check_stream(a: Any, name: str, vocab_size: int, ndim: int) -> np.ndarray:
    check_array(a, name, ndim=ndim, kind="int")
    check_index_range(a, name, vocab_size, "token")
    return np.asarray(a)


def unigram_logprobs(train_stream: Any, vocab_size: int, k: float = 1.0) -> np.ndarray:
    """Add-k unigram model ``log p(v) = log (c_v + k) / (Σ c + kV)``: float64 ``(V,)``."""
    vocab_size = check_int(vocab_size, "vocab_size", min_value=2)
    k = check_float(k, "k", min_value=0.0, strict_min=True)
    counts = np.bincount(_check_stream(train_stream, "train_stream", vocab_size, 1), minlength=vocab_size)
    return np.log((counts + k) / (counts.sum() + k * vocab_size))


def unigram_perplexity(train_stream: Any, windows: Any, vocab_size: int) -> float:
    """Corpus perplexity of the add-one unigram model on the targets ``windows[:, 1:]``."""
    vocab_size = check_int(vocab_size, "vocab_size", min_value=2)
    logp = unigram_logprobs(train_stream, vocab_size)
    windows = _check_stream(windows, "windows", vocab_size, 2)
    return float(np.exp(-logp[windows[:, 1:]].mean()))


def bigram_table(train_stream: Any, vocab_size: int, *, k: float, lam: float, contexts: Any = None) -> np.ndarray:
    """Interpolated add-k bigram probabilities ``p(w | v)`` for the context rows ``contexts``.

    ``p(w | v) = λ (c_vw + k) / (c_v + kV) + (1 − λ) p_uni(w)``, with ``c_vw`` the count of
    ``v`` followed by ``w`` in ``train_stream``, ``c_v = Σ_w c_vw`` and ``p_uni`` the add-one
    unigram model (:func:`unigram_logprobs`); ``λ = 1`` is plain add-k. Each row sums to 1.

    Args:
      train_stream: int ``(n,)`` training tokens.
      vocab_size: V.
      k: add-k pseudo-count, > 0 (an unseen context then gives the uniform bigram part).
      lam: interpolation weight λ in [0, 1].
      contexts: int ``(c,)`` context tokens (default all V).

    Returns:
      float64 ``(c, V)``.
    """
    vocab_size = check_int(vocab_size, "vocab_size", min_value=2)
    k = check_float(k, "k", min_value=0.0, strict_min=True)
    lam = check_float(lam, "lam", min_value=0.0, max_value=1.0)
    stream = _check_stream(train_stream, "train_stream", vocab_size, 1)
    contexts = np.arange(vocab_size) if contexts is None else np.asarray(contexts)
    # Pair counts for the requested contexts only: (c, V) instead of V².
    row_of = np.full(vocab_size, -1)
    row_of[contexts] = np.arange(contexts.shape[0])
    prev, nxt = stream[:-1], stream[1:]
    keep = row_of[prev] >= 0
    counts = np.zeros((contexts.shape[0], vocab_size))
    np.add.at(counts, (row_of[prev[keep]], nxt[keep]), 1.0)
    # Duplicate contexts share the one row np.add.at filled: copy it to each occurrence.
    counts = counts[row_of[contexts]]
    p_bi = (counts + k) / (counts.sum(axis=1, keepdims=True) + k * vocab_size)
    return lam * p_bi + (1.0 - lam) * np.exp(unigram_logprobs(stream, vocab_size))[None, :]


def ngram_stats(train_stream: Any, windows: Any, vocab_size: int, *, order: int, k: float = 1.0,
                lam: float = 1.0, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Per-target NLL and greedy hits of the add-one unigram (``order=1``) or bigram model.

    The bigram's context of target ``windows[:, t+1]`` is ``windows[:, t]`` (every target
    has one); :func:`bigram_table` is built ``chunk`` contexts at a time (``chunk · V`` floats).

    Returns:
      ``(nll, hit)``: float64 and bool ``(n, L)`` for :func:`summarize`.
    """
    vocab_size = check_int(vocab_size, "vocab_size", min_value=2)
    order = check_int(order, "order", min_value=1, max_value=2)
    w = _check_stream(windows, "windows", vocab_size, 2)
    if w.shape[1] < 2:
        raise ValueError(f"windows: expected at least 2 columns, got shape {w.shape}")
    prev, tgt = w[:, :-1], w[:, 1:]
    if order == 1:
        logp = unigram_logprobs(train_stream, vocab_size)
        return -logp[tgt], tgt == np.argmax(logp)
    nll, hit = np.empty(tgt.shape), np.empty(tgt.shape, bool)
    for lo in range(0, vocab_size, chunk):
        ctx = np.arange(lo, min(lo + chunk, vocab_size))
        table = bigram_table(train_stream, vocab_size, k=k, lam=lam, contexts=ctx)
        sel = (prev >= lo) & (prev < lo + chunk)
        rows = prev[sel] - lo
        nll[sel] = -np.log(table[rows, tgt[sel]])
        hit[sel] = np.argmax(table, axis=1)[rows] == tgt[sel]
    return nll, hit


def tune_bigram(train_stream: Any, valid: Any, vocab_size: int, *, ks: Sequence[float] = BIGRAM_K,
                lams: Sequence[float] = BIGRAM_LAMBDA) -> tuple[float, float, dict[str, float]]:
    """The (k, λ) of :func:`bigram_table` with the lowest validation NLL.

    Returns:
      ``(k, lam, grid)`` with ``grid["k=…,lam=…"]`` the validation corpus PPL of each pair.
    """
    grid, best = {}, (np.inf, None, None)
    for k in ks:
        for lam in lams:
            nll, _ = ngram_stats(train_stream, valid, vocab_size, order=2, k=k, lam=lam)
            grid[f"k={k:g},lam={lam:g}"] = float(np.exp(nll.mean()))
            best = min(best, (float(nll.mean()), k, lam), key=lambda t: t[0])
    return best[1], best[2], grid


def unigram_dsyn(train_stream: Any, mu: int, xi: int, vocab_size: int) -> jax.Array:
    """A [μ×ξ] synthetic set whose every soft token is the add-one unigram distribution.

    ``D[s, l, :] = p_uni`` (:func:`unigram_logprobs`): a model trained on it by soft
    cross-entropy is pulled towards the unigram model whatever its inputs.

    Returns:
      float32 ``(μ, ξ, V)``, rows summing to 1.
    """
    mu = check_int(mu, "mu", min_value=1)
    xi = check_int(xi, "xi", min_value=2)
    vocab_size = check_int(vocab_size, "vocab_size", min_value=2)
    stream = _check_stream(train_stream, "train_stream", vocab_size, 1)
    return farzi.popularity_data(stream, n_seqs=mu, seq_len=xi, vocab_size=vocab_size)


def random_windows(train_stream: Any, mu: int, xi: int, *, seed: int = 0) -> jax.Array:
    """``mu`` random non-overlapping training windows of ``xi`` tokens: int ``(μ, ξ)``.

    The windows of :func:`lm_windows` with ``seq_len = ξ − 1`` (inputs ξ−1, targets ξ−1),
    the same μ·ξ tokens as a [μ×ξ] Farzi summary.
    """
    mu = check_int(mu, "mu", min_value=1)
    xi = check_int(xi, "xi", min_value=2)
    windows = lm_windows(np.asarray(train_stream), xi - 1)
    if mu > windows.shape[0]:
        raise ValueError(f"mu: expected at most {windows.shape[0]} windows of {xi} tokens, got {mu}")
    pick = np.random.default_rng(seed).choice(windows.shape[0], mu, replace=False)
    return jnp.asarray(windows[pick])


# ----------------------------------------------------------------------------- Transformer training


def fit(model: ModelFns, data: jax.Array, d: dict, key: jax.Array, *, lr: float, batch: int, max_steps: int,
        eval_every: int, patience: int, hard_inputs: bool = False) -> tuple[Any, int, float]:
    """Train a fresh model on int ``(n, L+1)`` windows or soft ``(μ, ξ, V)`` data.

    :func:`distill.farzi.train_student`: Adam at ``lr`` on ``batch`` rows drawn with
    replacement per step (all rows when ``batch >= n``; dropout when the model has it), the
    step keys split per ``eval_every``-step chunk, then the validation NLL on
    ``d["val_es"]``; stops after ``patience`` evaluations without improvement. The initial
    parameters count as evaluated at step 0. Soft data are read by
    :func:`distill.farzi.student_pairs` (``hard_inputs``: argmax inputs).

    Returns:
      ``(params, best_step, best_val_nll)`` of the best validated parameters.
    """
    params = model.init(jax.random.split(key)[0], d["train"][:1, :-1])
    nll = lambda p: lm_metrics(model.apply, p, d["val_es"])["NLL"]  # noqa: E731
    start = nll(params)
    out = farzi.train_student(key, model, data, steps=max_steps, learning_rate=lr, batch_size=batch, replace=True,
                              params=params, chunk=eval_every, evaluate=nll, eval_every=eval_every,
                              patience=patience, maximize=False, hard_inputs=hard_inputs)
    hist = out.history
    if not hist.eval_values or not hist.best_value < start:
        return params, 0, start
    return out.params, hist.best_step, hist.best_value


def trials(model: ModelFns, data: jax.Array | Callable[[int], jax.Array], d: dict, seeds: Sequence[int],
           **kw) -> tuple[dict, list[int], list[dict]]:
    """Test metrics of :func:`fit` over ``seeds`` (``data(seed)`` when callable).

    Returns:
      ``({metric: (mean, std)}, best steps, per-seed metrics)``.
    """
    res, steps = [], []
    for s in seeds:
        p, best, _ = fit(model, data(s) if callable(data) else data, d, jax.random.key(1000 + s), **kw)
        res.append(lm_metrics(model.apply, p, d["test"], eos=d["eos"]))
        steps.append(best)
    return mean_std(res, METRICS), steps, res


def tune_full(make_model: Callable[[float], ModelFns], d: dict, seeds: Sequence[int], lrs: Sequence[float],
              dropouts: Sequence[float], **kw) -> tuple[dict, list[int], dict]:
    """The full-data Transformer with (lr, dropout) chosen on validation (Table 4.3's grid).

    Every pair is trained with seed ``seeds[0]``; the pair with the lowest validation NLL is
    then trained with every seed (its ``seeds[0]`` run re-used).

    Returns:
      ``(res, best steps, info)`` as :func:`trials`, ``info`` holding the grid and the choice.
    """
    grid, runs = {}, {}
    for lr in lrs:
        for rate in dropouts:
            model = make_model(rate)
            p, step, val = fit(model, d["train"], d, jax.random.key(1000 + seeds[0]), **{**kw, "lr": lr})
            grid[f"lr={lr:g},dropout={rate:g}"] = {"val_ppl": float(np.exp(val)), "best_step": step}
            runs[(lr, rate)] = (model, p, step, val)
            print(f"  full data lr {lr:g} dropout {rate:g}: valid PPL {np.exp(val):.1f} at step {step}", flush=True)
    lr, rate = min(runs, key=lambda c: runs[c][3])
    model, p, step, _ = runs[(lr, rate)]
    first = lm_metrics(model.apply, p, d["test"], eos=d["eos"])
    res, steps, per_seed = trials(model, d["train"], d, seeds[1:], **{**kw, "lr": lr}) if len(seeds) > 1 else \
        ({}, [], [])
    per_seed = [first, *per_seed]
    info = {"grid": grid, "lr": lr, "dropout": rate, "per_seed": per_seed}
    return mean_std(per_seed, METRICS), [step, *steps], info


def load_or_pretrain_omega_lm(model: ModelFns, d: dict, cache: str | None, tag: str, *, n_runs: int = 2,
                              steps: int = 400, save_every: int = 50, batch: int = 256, lr: float = 1e-2) -> Any:
    """Ω — Transformer checkpoints every ``save_every`` of ``steps`` steps of ``n_runs`` runs.

    :func:`distill.farzi.pretrain` on the training windows with its trajectory store at
    ``cache/omega_<tag>`` (runs already there are read back, not retrained). ``tag`` must
    name everything Ω depends on (vocabulary, window length, model, schedule).
    """
    omega_dir = None if cache is None else os.path.join(cache, f"omega_{tag}")
    settings = farzi.Settings(model=model, omega_runs=n_runs, omega_steps=steps, omega_every=save_every,
                              omega_batch_size=batch, omega_learning_rate=lr)
    return farzi.pretrain(jax.random.key(7), farzi.Data(d["train"]), settings, checkpoint_dir=omega_dir).omega


# ----------------------------------------------------------------------------- the benchmark


def _farzi_kwargs(args) -> dict:
    """The :class:`distill.farzi.Settings` fields given on the command line (others: its defaults)."""
    kw = {"steps": args.outer_steps, "inner_steps": args.inner_steps, "latent_dim": args.latent_dim,
          "tau": args.tau, "batch_size": args.real_batch, "learning_rate": args.outer_lr,
          "init": args.init, "init_logit": args.init_logit}
    kw = {k: v for k, v in kw.items() if v is not None}
    if args.inner_lr is not None:
        kw["inner_optimizer"] = inner.Adam(args.inner_lr)
    if args.init_mix is not None:
        kw["init_mix"] = args.init_mix
    if args.random_init_prob is not None:
        kw["random_init_prob"] = args.random_init_prob
    if args.omega_half_life:
        # Ω is run-major (farzi.pretrain): checkpoint i of every run is at step i·every.
        steps = np.tile(np.arange(0, args.omega_steps + 1, args.omega_every), args.omega_runs)
        kw["omega_weights"] = tuple(float(w) for w in farzi.early_weights(steps, args.omega_half_life))
    if args.inner_dropout:
        kw["inner_dropout"] = True
    for item in args.farzi_arg:
        name, _, value = item.partition("=")
        kw[_RENAMED.get(name, name)] = ast.literal_eval(value)
    return kw


# Settings fields recorded under their earlier keyword names (the keys of the recorded results).
_RENAMED = {"outer_learning_rate": "learning_rate"}
_RECORDED = ("latent_dim", "tau", "steps", "batch_size", "inner_steps", "inner_optimizer", "learning_rate", "mode",
             "reverse_every", "init", "init_logit", "init_mix", "teacher_mix", "teacher_walk", "omega_weights",
             "random_init_prob", "inner_dropout", "hard_inputs", "patience", "checkpoint_every")


def _effective(kw: dict) -> dict:
    """Every setting :func:`distill.farzi.distill` runs with: the given ones and its defaults."""
    out = {}
    for name in _RECORDED:
        v = kw.get(name, farzi.Settings._field_defaults[name])
        if isinstance(v, inner.Adam):
            v = {"lr": v.learning_rate, **{f: getattr(v, f) for f in ("b1", "b2", "eps") if hasattr(v, f)}}
        key = {v2: k2 for k2, v2 in _RENAMED.items()}.get(name, name)
        out[key] = list(v) if isinstance(v, tuple) else v
    out["pad_id"] = None
    return out


def _init_data(d: dict, mu: int, xi: int, init: str, kw: dict) -> jax.Array:
    """D_syn of :func:`distill.farzi.distill`'s starting point (0 outer steps) for ``init``."""
    eff = _effective(kw)
    init_kw = {k: v for k, v in kw.items() if k in inspect.signature(farzi.initial_factors).parameters}
    init_kw.update(latent_dim=eff["latent_dim"], tau=eff["tau"], init=init)
    syn0 = farzi.initial_factors(jax.random.key(0), np.asarray(d["train"]), n_seqs=mu, seq_len=xi,
                                 vocab_size=d["vocab_size"], **init_kw)
    param = latent_factorization(mu, xi, eff["latent_dim"], d["vocab_size"], tau=eff["tau"])
    return param.materialize(syn0, jax.random.key(0))


def _shape_rows(model: ModelFns, omega: Any, d: dict, mu: int, xi: int, args, syn_kw: dict) -> tuple[list, dict]:
    """The rows of one [μ×ξ] budget: random, unigram D_syn, Farzi inits, Farzi."""
    label, rows, seeds = f"[{mu}×{xi}]", [], args.seeds

    def add(method, data, hard=False, **extra):
        t = time.perf_counter()
        res, steps, per_seed = trials(model, data, d, seeds, **syn_kw, hard_inputs=hard)
        rows.append(seed_row(method, label, res, steps, time.perf_counter() - t, per_seed=per_seed, **extra))
        print(format_table(rows[-1:], COLUMNS[:5]), flush=True)

    add("random", lambda s: random_windows(d["train_stream"], mu, xi, seed=s))
    add("unigram D_syn", unigram_dsyn(d["train_stream"], mu, xi, d["vocab_size"]))
    kw = _farzi_kwargs(args)
    eff = _effective(kw)
    hard = eff["hard_inputs"]  # Farzi data are read as distill reads them
    for init in dict.fromkeys([*args.init_rows, eff["init"]]):
        data0 = _init_data(d, mu, xi, init, kw)
        add(f"Farzi init {init}", data0, hard, mean_max_prob=float(jnp.mean(jnp.max(data0, axis=-1))))
    if args.skip_farzi:
        return rows, {}

    # the parametrisation distill builds (and returns): needed by evaluate before distill returns
    param = latent_factorization(mu, xi, eff["latent_dim"], d["vocab_size"], tau=eff["tau"])

    def evaluate(syn):
        _, _, val = fit(model, param.materialize(syn, jax.random.key(0)), d, jax.random.key(99),
                        **{**syn_kw, "max_steps": args.eval_fit_steps}, hard_inputs=hard)
        return -val

    t = time.perf_counter()
    inner_model = model if not args.inner_dropout else transformer(
        d["vocab_size"], max_len=max(x for _, x in args.shapes), d_model=args.d_model, n_heads=1, n_layers=1,
        dropout=args.inner_dropout)
    settings = farzi.Settings(model=inner_model, n_seqs=mu, seq_len=xi,
                              eval_every=max(1, kw.get("steps", 200) // args.evals), **kw)
    res = farzi.distill(jax.random.key(0), farzi.Data(d["train"], omega), settings, evaluate=evaluate, progress=True)
    hist = res.history
    distill_time = time.perf_counter() - t
    history = {"losses": hist.losses, "eval_steps": hist.eval_steps, "best_step": hist.best_step,
               "val_ppl": [float(np.exp(-v)) for v in hist.eval_values], "distill_time_s": distill_time}
    data = res.data
    add(f"Farzi {eff['init']}", data, hard, distill_time_s=distill_time, best_outer_step=hist.best_step,
        mean_max_prob=float(jnp.mean(jnp.max(data, axis=-1))))
    # D_syn is μ·ξ·V floats: written next to the result JSON, never into the tracked results
    export.save(output_dir(args) / f"farzi_ptb_{mu}x{xi}",
                {"data": np.asarray(data), "z": np.asarray(res.params.z), "m": np.asarray(res.params.m)},
                {"method": "farzi", "equation": "D_syn = softmax(Z @ M / tau) (dissertation Eq. 4.1/4.2)",
                 "n_seqs": mu, "seq_len": xi, "vocab_size": d["vocab_size"], "latent_dim": eff["latent_dim"],
                 "dataset": "ptb", "model": f"transformer d{args.d_model} L1 H1",
                 "inputs": "argmax tokens of data[:, :-1]" if hard else "soft tokens"})
    return rows, history


def _ngram_rows(d: dict, seeds: Sequence[int]) -> tuple[list, dict]:
    """Unigram and validation-tuned bigram rows (deterministic: std 0 over the seeds)."""
    test, stream, v = np.asarray(d["test"]), d["train_stream"], d["vocab_size"]
    k, lam, grid = tune_bigram(stream, np.asarray(d["valid"]), v)
    rows = []
    for method, data, kw in (("unigram (add-one)", "train counts", dict(order=1)),
                             (f"bigram (add-{k:g}, λ={lam:g})", "train counts", dict(order=2, k=k, lam=lam))):
        m = summarize(*ngram_stats(stream, test, v, **kw), test[:, 1:], d["eos"])
        rows.append(seed_row(method, data, mean_std([m] * len(seeds), METRICS), "-", 0.0))
    return rows, {"k": k, "lambda": lam, "valid_ppl_grid": grid}


def _arguments(argv):
    ap = parser("farzi_lm", __doc__)
    ap.add_argument("--quick", action="store_true", help="one shape (50x15), 40 outer steps, 2 seeds")
    ap.add_argument("--full", action="store_true",
                    help="the dissertation's configuration (V=10,000, [400x50], T=400, 8,000 outer steps, |Ω|=400)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds of every Transformer")
    ap.add_argument("--vocab", type=int, default=None, help="vocabulary size (default 2000; --full 10000)")
    ap.add_argument("--shapes", type=str, nargs="+", default=None, help="budgets μxξ, e.g. 50x15 200x15")
    ap.add_argument("--d-model", type=int, default=16, help="Transformer width (Table 4.3: 16)")
    ap.add_argument("--outer-steps", type=int, default=None, help="Farzi outer steps (default 80; --full 8000)")
    ap.add_argument("--inner-steps", type=int, default=None, help="Farzi inner steps T (default: distill's)")
    ap.add_argument("--inner-lr", type=float, default=None, help="inner Adam lr (default: distill's)")
    ap.add_argument("--outer-lr", type=float, default=1e-2, help="outer Adam lr on (Z, M) (Table 4.3: 0.01)")
    ap.add_argument("--latent-dim", type=int, default=8,
                    help="d of Z·M (Table 4.3: 8; the recorded PTB runs; distill's default is 32)")
    ap.add_argument("--tau", type=float, default=None, help="temperature τ of softmax(Z·M/τ) (default: distill's)")
    ap.add_argument("--init", default="mix", choices=list(farzi.INITS), help="distill's init of D_syn")
    ap.add_argument("--init-mix", type=float, default=None,
                    help="α of init 'mix': log(α·onehot(real window) + (1 − α)·popularity) (default: distill's)")
    ap.add_argument("--init-rows", nargs="*", default=["real", "popularity"],
                    help="inits evaluated with 0 outer steps besides --init")
    ap.add_argument("--omega-half-life", type=float, default=100.0,
                    help="Ω checkpoints sampled ∝ 2^(−step/half-life) (farzi.early_weights); 0 = uniform")
    ap.add_argument("--random-init-prob", type=float, default=None,
                    help="probability of a fresh random θ_0 instead of an Ω checkpoint (default: distill's)")
    ap.add_argument("--inner-dropout", type=float, default=0.0,
                    help="dropout rate of the Transformer inside Farzi's inner loop (0 = off)")
    ap.add_argument("--init-logit", type=float, default=None, help="real-token logit of init_from_tokens")
    ap.add_argument("--farzi-arg", action="append", default=[],
                    help="extra distill keyword as NAME=PYTHON_LITERAL (repeatable)")
    ap.add_argument("--real-batch", type=int, default=256, help="real windows per outer step (Table 4.3: 256)")
    ap.add_argument("--eval-fit-steps", type=int, default=200, help="Transformer steps on D_syn per outer evaluation")
    ap.add_argument("--evals", type=int, default=5, help="outer-loop evaluations (every outer_steps/evals steps)")
    ap.add_argument("--val-windows", type=int, default=1000, help="validation windows for early stopping/selection")
    ap.add_argument("--full-steps", type=int, default=TRAIN_FULL["max_steps"], help="max Adam steps on full data")
    ap.add_argument("--full-lrs", type=float, nargs="+", default=[1e-2, 2e-2, 5e-2], help="full-data lr grid")
    ap.add_argument("--full-dropouts", type=float, nargs="+", default=[0.0, 0.2], help="full-data dropout grid")
    ap.add_argument("--syn-steps", type=int, default=TRAIN_SYN["max_steps"], help="max Adam steps on a D_syn")
    ap.add_argument("--syn-patience", type=int, default=TRAIN_SYN["patience"],
                    help="validations (every 5 steps) without improvement before a D_syn student stops")
    ap.add_argument("--omega-runs", type=int, default=None, help="pretraining runs in Ω (default 2; --full 40)")
    ap.add_argument("--omega-steps", type=int, default=None, help="steps per Ω run (default 400; --full 450)")
    ap.add_argument("--omega-every", type=int, default=50, help="steps between Ω checkpoints")
    ap.add_argument("--skip-farzi", action="store_true", help="only the baseline and Farzi-init rows, no distillation")
    ap.add_argument("--skip-full", action="store_true", help="no full-data Transformer row")
    ap.add_argument("--cache", default=None, help="directory for Ω (orbax): reused when present")
    ap.add_argument("--name", default=None, help="result file name (default farzi_ptb[_quick|_full])")
    args = ap.parse_args(argv)
    full = dict(vocab=10000, shapes=["400x50"], outer_steps=8000, inner_steps=400, omega_runs=40, omega_steps=450,
                latent_dim=8)
    reduced = dict(vocab=2000, shapes=["50x15"] if args.quick else ["50x15", "200x15"],
                   outer_steps=40 if args.quick else 80, omega_runs=2, omega_steps=400)
    for k, v in (full if args.full else reduced).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.seeds = args.seeds[:2] if args.quick else args.seeds
    args.name = args.name or "farzi_ptb" + ("_quick" if args.quick else "_full" if args.full else "")
    args.shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes]
    if any(args.name == f"farzi_ptb_{mu}x{xi}" for mu, xi in args.shapes):
        raise ValueError(f"--name: {args.name} is the D_syn export's file name")
    return args


def main(argv=None):
    """Run the benchmark; returns the path of the result JSON."""
    args = _arguments(argv)
    t_start = time.perf_counter()
    max_len = max(xi for _, xi in args.shapes)
    d = prepare(args.vocab, max_len, val_windows=args.val_windows)
    make = lambda rate: transformer(d["vocab_size"], max_len=max_len, d_model=args.d_model, n_heads=1, n_layers=1,
                                    dropout=rate)
    model = make(0.0)
    print(f"PTB V={d['vocab_size']}: {d['tokens']} tokens; windows of {max_len} inputs: "
          f"train {d['train'].shape[0]}, valid {d['valid'].shape[0]}, test {d['test'].shape[0]}", flush=True)
    full_kw = {**TRAIN_FULL, "max_steps": args.full_steps}
    syn_kw = {**TRAIN_SYN, "max_steps": args.syn_steps, "patience": args.syn_patience}
    for kw in (full_kw, syn_kw):
        kw["eval_every"] = max(1, min(kw["eval_every"], kw["max_steps"] // 4))

    rows, bigram = _ngram_rows(d, args.seeds)
    print(format_table(rows, COLUMNS[:5]), flush=True)
    state = {"bigram": bigram, "full_data_tuning": None, "omega": None}
    histories: dict = {}

    def save(complete: bool):
        # Written after every block too, so a run cut short still leaves its finished rows.
        full = [r["PPL"] for r in rows if r["method"].startswith("full data")]
        for r in rows:
            r["PPL_%full"] = 100.0 * full[0] / r["PPL"] if full else None  # 100 = as good as full data
        config = {**_config(args, d, full_kw, syn_kw), **state, "complete": complete}
        return write_result(args.name, config, {"rows": rows, "histories": histories},
                            time.perf_counter() - t_start, out_dir=output_dir(args))

    t = time.perf_counter()
    tag = (f"ptb_V{d['vocab_size']}_len{max_len}_d{args.d_model}_runs{args.omega_runs}_steps{args.omega_steps}"
           f"_every{args.omega_every}")
    omega = None if args.skip_farzi else load_or_pretrain_omega_lm(
        model, d, args.cache, tag, n_runs=args.omega_runs, steps=args.omega_steps, save_every=args.omega_every,
        batch=TRAIN_FULL["batch"], lr=TRAIN_FULL["lr"])
    state["omega"] = None if omega is None else {
        "n_runs": args.omega_runs, "steps": args.omega_steps, "save_every": args.omega_every,
        "n_checkpoints": int(jax.tree_util.tree_leaves(omega)[0].shape[0]),
        "batch": TRAIN_FULL["batch"], "lr": TRAIN_FULL["lr"], "time_s": time.perf_counter() - t}
    for mu, xi in args.shapes:
        shape_rows, histories[f"[{mu}×{xi}]"] = _shape_rows(model, omega, d, mu, xi, args, syn_kw)
        rows += shape_rows
        save(False)
    if args.skip_full:
        print(format_table(rows, COLUMNS[:5]), flush=True)
        return save(True)
    # The full-data Transformer comes last: the Farzi rows, the costly ones, are saved first.
    t = time.perf_counter()
    res, steps, tuned = tune_full(make, d, args.seeds, args.full_lrs, args.full_dropouts, **full_kw)
    rows.append(seed_row(f"full data (lr {tuned['lr']:g}, dropout {tuned['dropout']:g})",
                         f"{d['train'].shape[0]}×{max_len + 1}", res, steps, time.perf_counter() - t,
                         per_seed=tuned.pop("per_seed")))
    state["full_data_tuning"] = tuned
    print(format_table(rows, COLUMNS[:5]), flush=True)
    path = save(True)
    table = [{**r, **{m: f"{r[m]:.1f}±{r['std'][m]:.1f}" for m in ("PPL", "PPL_seq")},
              "Acc": f"{100 * r['Acc']:.2f}±{100 * r['std']['Acc']:.2f}"} for r in rows]
    print(format_table(table, COLUMNS))
    _plot(rows, histories, path.with_suffix(".png"))
    print(f"wrote {path} ({time.perf_counter() - t_start:.0f} s)")
    return path


def _config(args, d, full_kw, syn_kw) -> dict:
    return {
        "dataset": "ptb (Mikolov split, treebank package)", "vocab_size": d["vocab_size"], "tokens": d["tokens"],
        "configuration": "full (dissertation)" if args.full else ("quick" if args.quick else "reduced CPU"),
        "protocol": f"test stream cut into windows of {max(xi for _, xi in args.shapes)} inputs (lm_windows); "
                    "PPL = corpus exp(mean NLL); PPL_seq = mean of per-sentence PPLs (§4.5.3; sentence = targets "
                    "up to <eos>); PPL_win = mean of per-window PPLs; Acc = greedy next-token accuracy; "
                    "validation for hyper-parameters, early stopping and D_syn selection only",
        "model": f"transformer d_model {args.d_model}, 1 layer, 1 head, d_ff {2 * args.d_model}",
        "shapes": args.shapes, "seeds": list(args.seeds), "train_full": full_kw, "train_synthetic": syn_kw,
        "full_data_grid": {"lr": args.full_lrs, "dropout": args.full_dropouts},
        "early_stopping_valid_windows": int(d["val_es"].shape[0]), "uniform_ppl": d["vocab_size"],
        "farzi": {**_effective(_farzi_kwargs(args)), "eval_fit_steps": args.eval_fit_steps, "evals": args.evals,
                  "eval_every": max(1, args.outer_steps // args.evals),
                  "omega_half_life": args.omega_half_life, "inner_dropout_rate": args.inner_dropout},
    }


def _plot(rows, histories, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    labels = [f"{r['method']} {r['data']}" if r["data"] != "train counts" and not r["method"].startswith("full")
              else r["method"] for r in rows]
    axes[0].barh(labels, [r["PPL"] for r in rows], xerr=[r["std"]["PPL"] for r in rows])
    axes[0].set_xlabel("test corpus perplexity (lower is better)")
    axes[0].tick_params(axis="y", labelsize=7)
    axes[0].set_title("Transformer on PTB")
    for label, h in histories.items():
        axes[1].plot(h["eval_steps"], h["val_ppl"], marker="o", label=f"Farzi {label}")
    for r in rows:
        if r["method"].startswith(("unigram (", "full data")):
            axes[1].axhline(r["PPL"], ls="--", color="k" if r["method"].startswith("full") else "r",
                            label=f"{r['method'].split(' (')[0]} (test)")
    axes[1].set_xlabel("outer step")
    axes[1].set_ylabel("validation PPL of a Transformer trained on D_syn")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
