"""Farzi: autoregressive data distillation with latent-factorised data and reverse-mode Adam.

Farzi (dissertation Ch. 4) summarises a dataset of token sequences into μ synthetic
sequences of length ξ, each token a distribution over the vocabulary,

    D_syn = softmax(Z · M / τ),   Z ∈ R^{μ×ξ×d},  M ∈ R^{d×V}            (Eq. 4.1, 4.2)

(:func:`distill.parametrize.latent_factorization`), optimised so that a model trained on
D_syn for T Adam steps from a checkpoint θ_i of a pretrained trajectory Ω has a low
next-token loss on the real data:

    min_{Z, M}  E_{θ_i ~ Ω} [ L_D(θ_{i+T}) ]
    s.t. θ_{t+1} = Adam(θ_t, ∇_θ L_{D_syn}(θ_t)),   D_syn = softmax(Z·M/τ).     (Eq. 4.2)

The method has the library's one shape::

    settings = farzi.Settings(model=sasrec(n_items, max_len=L), n_seqs=10, seq_len=150)
    data = farzi.pretrain(key, farzi.Data(tokens, pad_id=pad), settings)   # adds Ω
    result = farzi.distill(key, data, settings)        # Result(params, data, settings, history, ...)

with :func:`init`, :func:`sample_batch` and the pure :func:`objective` for custom loops.
The inner loop is :func:`distill.inner.train` (``mode='reverse_adam'`` by default:
Algorithm 6, memory independent of T up to the stored segment states); the outer loop is
:func:`distill.loop.run` (optax Adam on (Z, M), orbax resume); Ω is trained with
:func:`distill.train.train_model` and stored with :mod:`distill.trajectories`; the
real-batch loss is summed over devices with :func:`distill.parallel.sum_rows`; D_syn
(``result.data``) leaves through :func:`distill.export.save`; :func:`train_student` trains
a model on D_syn or on real tokens.

Data conventions: a real batch is an int token matrix ``(b, L+1)``; inputs are its first
L columns, targets the last L. With ``pad_id`` set (SASRec sequences from
:mod:`distill.data.sequences`), positions whose input or target is padding are ignored.
The synthetic data ``(μ, ξ, V)`` trains the model on inputs ``D[:, :-1]`` and soft
targets ``D[:, 1:]`` with the soft cross-entropy; V is the model's number of outputs
(``n_items`` for SASRec, the vocabulary for the LM), read from the model.
"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from distill import inner, loop, parallel, trajectories, train
from distill.checks import (check_array, check_choice, check_float, check_index_range, check_int, check_key,
                            is_concrete)
from distill.parametrize import LatentFactors, Parametrization, latent_factorization, latent_logits
from models.model_fns import ModelFns, n_outputs

__all__ = [
    "Settings",
    "Data",
    "Batch",
    "Result",
    "init",
    "sample_batch",
    "objective",
    "distill",
    "pretrain",
    "train_student",
    "popularity_data",
    "soft_cross_entropy",
    "student_pairs",
    "token_loss",
    "init_from_tokens",
    "fit_factors",
    "popularity",
    "target_logits",
    "initial_factors",
    "markov_teacher",
    "fit_factors_kl",
    "early_weights",
]

tree_map = jax.tree_util.tree_map


class Settings(NamedTuple):
    """Farzi's settings (hashable: a static argument of a jitted :func:`objective`).

    Attributes:
      model: the :class:`models.model_fns.ModelFns` trained in the inner loop and on Ω;
        it must accept soft inputs ``(μ, ξ-1, V)`` and int tokens, e.g.
        ``models.sasrec.sasrec(n_items, max_len=L)`` or
        ``models.transformer.transformer(vocab_size, max_len=L)`` (build it once and reuse
        the same object: settings compare their model by identity). Required.
      n_seqs, seq_len: μ and ξ of D_syn (default [10×150]: the SASRec / MovieLens
        benchmark's shape). V is the model's number of outputs (:func:`models.model_fns.n_outputs`).
      latent_dim: d = 32, chosen on validation: the Markov-teacher start (``init``) at
        d = 8 / 32 / 64 trains SASRecs to validation HR@10 7.10 / 8.89 / 7.80 on MovieLens
        [10×150] (3 seeds; test 7.00 / 9.64 / 8.89). The dissertation's d = 8 (Table 4.2)
        cannot hold a teacher's next-item distributions over 1,303 items.
      tau: the factorisation's temperature τ = 1 (Eq. 4.1).
      steps: outer updates (200).
      batch_size: real rows per outer step (64).
      learning_rate: outer Adam learning rate 1e-3. With argmax inputs (the default) the
        outer loop improves the Markov start a little: MovieLens [10×150] test HR@10 10.93 ±
        0.98 → 11.72 ± 1.10 (best validation at step 10 of 40); 3e-4 raises validation
        steadily over 120 steps but tests at 11.42 ± 0.68 against 11.03 ± 0.77 (5 seeds).
        Those students were validated every 50 steps; validated every 10 (6 seeds) the
        start tests 12.20 ± 1.18 and the best Farzi data 12.39 ± 0.84, a gain of +0.20 ±
        0.56 paired by seed: equal within noise (``docs/results.md``).
        With soft inputs the dissertation's 1e-2 (Table 4.2)
        destroys a good start: from the Markov-teacher start (test HR@10 9.64) 40 outer
        steps at 1e-2 give 7.00 ± 0.61 and the outer loss rises (6.71 → 7.47); at 1e-3
        validation HR@10 drifts 7.45 → 6.86 over 40 steps and ``distill`` returns the
        start. Why: the meta-gradients of distinct θ_0 are nearly
        orthogonal (cosines 0.00-0.03, :mod:`benchmarks.farzi_diagnose` ``--part theta0``),
        so one outer step mostly fits the θ_0 it was computed on — a step that lowers
        the objective by 0.05 there leaves it unchanged on held-out θ_0 (+0.003).
      inner_steps, inner_optimizer: T = 30 with inner Adam lr 1e-2 (T·lr = 0.3): the
        dissertation uses T = 100-300 at lr 0.01-0.02 (Table 4.2, §4.3.2: "in the order of
        100s"). Measured on SASRec / MovieLens: at T = 10, lr 3e-3 ten steps on *any* D_syn
        make a trained θ worse and the objective ranks popularity-only data below one-hot
        real windows, the reverse of training from scratch (HR@10 5.1 vs 1.1); from
        T·lr ≳ 0.3 it ranks them like training from scratch
        (``tests/distill/test_farzi_objective.py``).
      mode, reverse_every: inner differentiation (``'reverse_adam'``, ``'unrolled'``,
        ``'checkpointed'``) and segment length, see :func:`distill.inner.train`.
      init, init_logit, init_mix, teacher_mix, teacher_walk: the start of (Z, M), see
        :func:`initial_factors`. ``'markov'`` (the real data's first-order Markov chain
        distilled into soft tokens along a walk, α = ``teacher_mix`` = 0.1): measured on
        SASRec / MovieLens [10×150] (3 seeds, d = 32, argmax inputs) it trains a SASRec to
        test HR@10 10.93 ± 0.98 — 68 % of the tuned full-data SASRec; 12.20 ± 1.18, 76 %,
        when students are validated every 10 steps — where popularity-only data gives 5.17,
        ``'popularity'`` 5.71 and random real windows 1.19; α = 0.05 / 0.1 / 0.2 / 0.35 give
        validation HR@10 10.23 / 10.43 / 9.69 / 7.80 (soft inputs: α 0.1 / 0.2 / 0.3 give
        7.70 / 8.89 / 7.30). The outer loop starts from data that already
        beats the trivial and random baselines, and :func:`distill` evaluates that start
        too, so it never returns worse data by validation. ``teacher_walk``: ``'greedy'``
        (visits nearly every item; MovieLens validation HR@10 10.43 vs 8.59 for
        ``'sampled'``) or ``'sampled'`` from the chain, which visits words as often as they
        occur — use it for language models: on PTB [200×15] (V = 2,000, a d = 16
        Transformer, α = 0.2) it trains to perplexity 164.4, below the unigram model's
        196.5, where the greedy walk gives 207.0 and ``'popularity'`` 199.3 (soft inputs).
      hard_inputs: ``True``: models read D_syn's inputs as their argmax tokens and learn its
        soft targets (:func:`student_pairs`) — in the inner loop here, in
        :func:`train_student`, and in the benchmarks' students. One tensor holds both
        inputs and targets, so read softly a teacher's next-item distributions blur the
        item a model is given. Measured from the Markov start: MovieLens [10×150] test
        HR@10 10.93 ± 0.98 (argmax, α = 0.1) vs 9.64 ± 0.31 (soft, α = 0.2); PTB 164.4 vs
        ≈ 206 (sampled walk). With it, no gradient reaches the inputs, so the outer loop
        learns the soft targets of a fixed item skeleton. Starts whose argmax covers few
        items (``'popularity'``: one item) train badly this way (PTB 263.4): keep
        ``False`` for them, which is the dissertation's reading (§4.3).
      omega_weights: ``(|Ω|,)`` tuple of non-negative sampling weights of the Ω
        checkpoints (e.g. ``tuple(early_weights(...))``), or ``None`` for uniform (§4.3.2).
      random_init_prob: 0.25, probability of starting the inner loop from a fresh
        ``model.init`` instead of an Ω checkpoint. Why (and why early checkpoints get
        weight): measured on SASRec / MovieLens, the objective's spread across Ω checkpoints
        (≈ 2 nats) swamps its spread across candidate data (≈ 0.2), and a well-trained θ_i
        is made *worse* by a few steps on any small D_syn, so late checkpoints reward data
        that disturbs θ least rather than data that teaches most (the dissertation samples
        Ω uniformly; its T of 100-300 steps moves θ much further than ours).
      theta0_draws: draws of θ_0 averaged in one outer step (1; n draws cost n inner
        runs). Measured from the Markov start (:mod:`benchmarks.farzi_diagnose`
        ``--part theta0``): at these defaults a step along the mean of 8 draws' gradients
        does not lower the objective on held-out draws either (+0.002); in a probe with
        fresh inits only and the students' Adam 1e-3, T = 50 it does (−0.009). In that
        regime with 4 draws and outer lr 3e-3, 20 outer steps raise validation HR@10
        7.45 → 8.94 but test HR@10 ends at 8.94 ± 0.68 against the start's 9.64 ± 0.31:
        that was with soft inputs. With argmax inputs (the default) the same setting (fresh
        inits, inner Adam 1e-3, T = 50, 4 draws, outer lr 1e-3) gives the best Farzi data
        measured: test HR@10 11.87 ± 0.62 after 15 outer steps against the start's 10.93
        (students validated every 50 steps; every 10 steps: 12.39 ± 0.84 vs 12.20 ± 1.18).
      inner_dropout: train the inner model with ``model.apply(θ, x, train=True, key=k_t)``
        (replayable masks ``k_t = fold_in(k, t)``, so reverse-mode Adam stays exact); the
        real-batch loss is evaluated without dropout.
      eval_every, patience, checkpoint_every: :func:`distill.loop.run`'s (50, None, 100).
      omega_runs, omega_steps, omega_every, omega_batch_size, omega_learning_rate: Ω's
        pretraining (:func:`pretrain`): 2 runs of 200 Adam steps at 1e-3 on 64 random real
        rows, a checkpoint every 50 steps from step 0 (the dissertation's "episodic
        checkpoints", §4.3.2; its schedule is not given, these are this library's).
    """

    model: ModelFns | None = None
    n_seqs: int = 10
    seq_len: int = 150
    latent_dim: int = 32
    tau: float = 1.0
    steps: int = 200
    batch_size: int = 64
    learning_rate: float = 1e-3
    inner_steps: int = 30
    inner_optimizer: inner.Adam = inner.Adam(1e-2)
    mode: str = "reverse_adam"
    reverse_every: int | str | None = "auto"
    init: str = "markov"
    init_logit: float = 8.0
    init_mix: float = 0.5
    teacher_mix: float = 0.1
    teacher_walk: str = "greedy"
    omega_weights: tuple[float, ...] | None = None
    random_init_prob: float = 0.25
    theta0_draws: int = 1
    hard_inputs: bool = True
    inner_dropout: bool = False
    eval_every: int = 50
    patience: int | None = None
    checkpoint_every: int = 100
    omega_runs: int = 2
    omega_steps: int = 200
    omega_every: int = 50
    omega_batch_size: int = 64
    omega_learning_rate: float = 1e-3


_DEFAULTS = Settings()  # immutable; ``model`` must still be given


class Data(NamedTuple):
    """The real data Farzi distils.

    Attributes:
      train: int ``(n, L+1)`` token rows (inputs = first L columns, targets = last L).
      omega: Ω, the pretrained checkpoints stacked run-major along a leading axis
        ``(|Ω|, ...)`` (:func:`pretrain`), or ``None`` (then :func:`distill` pretrains it).
      pad_id: the padding token of ``train`` (SASRec sequences), or ``None``.
    """

    train: Any
    omega: Any = None
    pad_id: int | None = None


class Batch(NamedTuple):
    """What :func:`objective` takes: real ``tokens`` ``(b, L+1)``, Ω and the padding token."""

    tokens: Any
    omega: Any
    pad_id: Any = None


class Result(NamedTuple):
    """What :func:`distill` returns.

    Attributes:
      params: the learned :class:`LatentFactors` (best by validation when evaluated).
      data: D_syn ``(μ, ξ, V)`` = ``parametrization.materialize(params, jax.random.key(0))``.
      settings: the :class:`Settings` used.
      history: :class:`distill.loop.History`.
      parametrization: the latent factorisation (``materialize``).
    """

    params: Any
    data: Any
    settings: Settings
    history: loop.History
    parametrization: Parametrization


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean over positions of ``-Σ_v targets[..., v] · log_softmax(logits)[..., v]``."""
    return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def student_pairs(data: jax.Array, hard_inputs: bool = False) -> tuple[jax.Array, jax.Array]:
    """How a model reads soft D_syn ``(μ, ξ, V)``: ``(inputs, targets)`` of next-token training.

    Targets are always the soft tokens ``D[:, 1:]``. Inputs are ``D[:, :-1]`` read as soft
    tokens (embedding ``Σ_v D_tv E_v``, the dissertation's Farzi, §4.3) or, with
    ``hard_inputs``, as their argmax tokens (int ``(μ, ξ-1)``; no gradient flows through
    them, so the data is learned through its targets). Why the option: one tensor is both
    the inputs and the targets, so soft targets blur the inputs the model reads. Measured on
    PTB (Transformer d 16, [200×15] Markov-teacher tokens of :func:`markov_teacher` along a
    walk sampled from the chain): read as soft tokens they train to perplexity ≈ 199 (the
    unigram model's 196.5); the same targets with one-hot inputs give 128, and with the
    argmax inputs of the same tensor 141.
    """
    check_array(data, "data", ndim=3, kind="float")
    return (jnp.argmax(data[:, :-1], axis=-1) if hard_inputs else data[:, :-1]), data[:, 1:]


def _token_sums(logits, targets, mask):
    logp = jax.nn.log_softmax(logits, axis=-1)
    n_vocab = logits.shape[-1]
    safe = jnp.clip(targets, 0, n_vocab - 1)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    # An out-of-vocabulary target that is not padding would be clamped to a real token
    # and scored as one: NaN instead (eager calls refuse it before tracing).
    bad = (mask > 0) & ((targets < 0) | (targets >= n_vocab))
    nll = jnp.where(bad, jnp.nan, nll)
    return jnp.sum(nll * mask), jnp.sum(mask)


def _check_tokens_in_vocab(model: ModelFns, params: Any, tokens: Any, pad_id: int | None) -> None:
    """Concrete tokens must index the model's vocabulary (or be ``pad_id``)."""
    if not is_concrete(tokens):
        return
    n_vocab = n_outputs(model.apply, params, jnp.asarray(tokens)[:1, :-1])
    check_index_range(tokens, "tokens", n_vocab, "token", allowed=pad_id, of="the model's vocabulary")


def _mask(inputs, targets, pad_id, dtype):
    if pad_id is None:
        return jnp.ones(targets.shape, dtype)
    return ((targets != pad_id) & (inputs != pad_id)).astype(dtype)


def token_loss(model: ModelFns, params: Any, tokens: jax.Array, *, pad_id: int | None = None,
               mesh=None) -> jax.Array:
    """Mean next-token cross-entropy of ``model`` on int ``tokens`` ``(b, L+1)``.

    Rows are summed across ``mesh`` with :func:`distill.parallel.sum_rows`, so the value
    (and its gradient) equals the single-device one. Padding positions are excluded.
    """
    check_array(tokens, "tokens", ndim=2, kind="int")
    if tokens.shape[1] < 2:
        raise ValueError(f"tokens: expected at least 2 columns, got shape {tuple(tokens.shape)}")
    _check_tokens_in_vocab(model, params, tokens, pad_id)

    def rows(tok, w, theta):
        inputs, targets = tok[:, :-1], tok[:, 1:]
        logits = model.apply(theta, inputs)
        mask = _mask(inputs, targets, pad_id, logits.dtype) * w[:, None].astype(logits.dtype)
        return _token_sums(logits, targets, mask)

    num, den = parallel.sum_rows(rows, tokens, params, mesh=mesh)
    return num / jnp.maximum(den, 1.0)


def _omega_logits(weights, n_omega):
    if weights is None:
        return jnp.zeros((n_omega,))
    w = np.asarray(weights, np.float64)
    if w.shape != (n_omega,) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"settings.omega_weights: expected {n_omega} non-negative finite weights with a positive sum, "
                         f"got shape {w.shape}")
    return jnp.asarray(np.where(w > 0, np.log(np.where(w > 0, w, 1.0)), -np.inf), jnp.float32)


def early_weights(steps: Any, half_life: float) -> np.ndarray:
    """Sampling weights of Ω checkpoints, halving every ``half_life`` pretraining steps.

    ``w_i = 2^{-s_i / half_life} / Σ_j 2^{-s_j / half_life}`` for the checkpoint steps
    ``s_i`` (e.g. ``[0, 100, 200, 300, 400] * n_runs`` for :func:`pretrain`'s
    run-major Ω). See :class:`Settings` (``random_init_prob``) for why early checkpoints get more weight.

    Returns:
      ``(|Ω|,)`` float64 weights summing to 1.
    """
    s = np.asarray(steps, np.float64)
    half_life = check_float(half_life, "half_life", min_value=0.0, strict_min=True)
    if s.ndim != 1 or s.size == 0 or (s < 0).any():
        raise ValueError(f"steps: expected a non-empty 1-D array of non-negative steps, got shape {s.shape}")
    w = np.exp2(-(s - s.min()) / half_life)
    return w / w.sum()


def init_from_tokens(
    key: jax.Array,
    tokens: Any,
    *,
    n_seqs: int,
    seq_len: int,
    latent_dim: int,
    vocab_size: int,
    tau: float = 1.0,
    logit: float = 8.0,
    pad_id: int | None = None,
) -> LatentFactors:
    """Latent factors whose D_syn = softmax(Z·M/τ) peaks at the items of real sequences.

    The default Gaussian init gives logits of size ~1 over V items: every synthetic token
    is nearly uniform, so every inner step pulls θ toward uniform predictions and the
    meta-gradient starts from a useless D_syn. Here μ real windows (the last ``seq_len``
    tokens of rows of ``tokens``, preferring rows without padding) seed the data:

        M[:, v] = m_v ~ N(0, (logit/d) I_d),      Z[s, l] = τ · logit · m_{x_{s,l}} / ‖m_{x_{s,l}}‖²,

    so the logit of the real item x_{s,l} is ``logit`` and every other item's is
    ``logit · ⟨m_x, m_v⟩/‖m_x‖²`` ~ N(0, logit²/d): the real item dominates when
    ``logit`` exceeds ~√(2 ln V)·logit/√d, i.e. for d ≳ 32 (p(x) ≈ 0.9 at d = 64,
    ``logit`` = 10, V ≈ 1,300). Padding positions get Z = 0 (a uniform token). The scale
    of M makes ‖m_x‖² ≈ logit, so Z[s, l] ≈ m_x/τ: both factors have entries of the same
    size (√(logit/d)), which is what a per-coordinate optimiser such as Adam assumes (with
    M ~ N(0, I/d) the entries of M are √logit times smaller than those of Z, and an outer
    Adam step of 1e-2 changed M by ~8 % — measured: the outer loss rose).

    Args:
      key: PRNG key (choice of rows, M).
      tokens: int ``(n, L+1)`` real sequences, ``L+1 >= seq_len``.
      n_seqs, seq_len, latent_dim, vocab_size: μ, ξ, d, V of the factorisation.
      tau: the factorisation's temperature τ (Z is scaled by it so the logits are τ-free).
      logit: the logit of the real item, > 0.
      pad_id: padding token of ``tokens`` (or ``None``).

    Returns:
      :class:`LatentFactors` ``(z (μ, ξ, d), m (d, V))`` for
      :func:`distill.parametrize.latent_factorization` with the same μ, ξ, d, V, τ.
    """
    check_array(tokens, "tokens", ndim=2, kind="int")
    n_seqs = check_int(n_seqs, "n_seqs", min_value=1)
    seq_len = check_int(seq_len, "seq_len", min_value=1)
    latent_dim = check_int(latent_dim, "latent_dim", min_value=1)
    vocab_size = check_int(vocab_size, "vocab_size", min_value=2)
    tau = check_float(tau, "tau", min_value=0.0, strict_min=True)
    logit = check_float(logit, "logit", min_value=0.0, strict_min=True)
    tok = np.asarray(tokens)
    if tok.shape[1] < seq_len:
        raise ValueError(f"tokens: expected at least seq_len={seq_len} columns, got shape {tok.shape}")
    window = tok[:, -seq_len:]
    real = np.ones(window.shape, bool) if pad_id is None else window != pad_id
    if (window[real] < 0).any() or (window[real] >= vocab_size).any():
        raise ValueError(f"tokens: expected items in [0, {vocab_size}) outside padding")
    k_rows, k_m = jax.random.split(key)
    # Fullest windows first (random order among equally full ones).
    rng = np.random.default_rng(np.asarray(jax.random.randint(k_rows, (2,), 0, 2**31 - 1)))
    order = np.lexsort((rng.random(tok.shape[0]), -real.sum(1)))
    rows = np.resize(order[: min(n_seqs, tok.shape[0])], n_seqs)
    m = jax.random.normal(k_m, (latent_dim, vocab_size)) * np.sqrt(logit / latent_dim)
    items = jnp.asarray(np.where(real[rows], window[rows], 0))
    cols = m[:, items].transpose(1, 2, 0)  # (μ, ξ, d)
    z = tau * logit * cols / jnp.sum(cols * cols, axis=-1, keepdims=True)
    z = jnp.where(jnp.asarray(real[rows])[..., None], z, 0.0)
    return LatentFactors(z, m)


def popularity(tokens: Any, vocab_size: int, *, pad_id: int | None = None) -> np.ndarray:
    """Item frequencies of ``tokens`` (padding excluded), add-one smoothed: ``(V,)`` summing to 1."""
    tok = np.asarray(tokens).ravel()
    tok = tok if pad_id is None else tok[tok != pad_id]
    counts = np.bincount(tok[(tok >= 0) & (tok < vocab_size)], minlength=vocab_size)[:vocab_size]
    return (counts + 1.0) / (counts.sum() + vocab_size)


def popularity_data(tokens: Any, *, n_seqs: int, seq_len: int, vocab_size: int,
                    pad_id: int | None = None) -> jax.Array:
    """The trivial synthetic set: μ×ξ soft tokens that are all :func:`popularity`.

    A model trained on it by soft cross-entropy learns the popularity (unigram) model
    whatever its inputs: the control row every Farzi result is compared with.

    Returns:
      float32 ``(μ, ξ, V)``, rows summing to 1.
    """
    n_seqs = check_int(n_seqs, "n_seqs", min_value=1)
    seq_len = check_int(seq_len, "seq_len", min_value=2)
    p = jnp.asarray(popularity(tokens, vocab_size, pad_id=pad_id), jnp.float32)
    return jnp.broadcast_to(p, (n_seqs, seq_len, p.shape[0]))


def _real_windows(key, tokens, n_seqs, seq_len, pad_id):
    """μ real windows (last ξ items of the fullest rows, random among equals) and their mask."""
    tok = np.asarray(tokens)
    if tok.shape[1] < seq_len:
        raise ValueError(f"tokens: expected at least seq_len={seq_len} columns, got shape {tok.shape}")
    window = tok[:, -seq_len:]
    real = np.ones(window.shape, bool) if pad_id is None else window != pad_id
    rng = np.random.default_rng(np.asarray(jax.random.randint(key, (2,), 0, 2**31 - 1)))
    order = np.lexsort((rng.random(tok.shape[0]), -real.sum(1)))
    rows = np.resize(order[: min(n_seqs, tok.shape[0])], n_seqs)
    return np.where(real[rows], window[rows], 0), real[rows]


def target_logits(key: jax.Array, tokens: Any, *, n_seqs: int, seq_len: int, vocab_size: int, alpha: float,
                  pad_id: int | None = None) -> np.ndarray:
    """Log of the popularity-smoothed real windows ``q = α·onehot(x) + (1 − α)·pop``.

    ``x`` are μ real windows of ``tokens`` (as :func:`init_from_tokens` picks them; padding
    positions get ``pop`` alone) and ``pop`` is :func:`popularity`. ``alpha = 0`` is the
    popularity-only data (every token = pop); ``alpha → 1`` the one-hot real windows.

    Returns:
      ``(μ, ξ, V)`` float64 log-probabilities.
    """
    alpha = check_float(alpha, "alpha", min_value=0.0, max_value=1.0)
    pop = popularity(tokens, vocab_size, pad_id=pad_id)
    items, real = _real_windows(key, tokens, n_seqs, seq_len, pad_id)
    if (items < 0).any() or (items >= vocab_size).any():
        raise ValueError(f"tokens: expected items in [0, {vocab_size}) outside padding")
    q = np.tile((1.0 - alpha) * pop, items.shape + (1,))
    s_idx, l_idx = np.nonzero(real)
    q[s_idx, l_idx, items[real]] += alpha
    q[~real] = pop
    return np.log(np.maximum(q, 1e-30))


def fit_factors(key: jax.Array, logits: Any, *, latent_dim: int, tau: float = 1.0,
                noise: float = 0.1) -> LatentFactors:
    """Least-squares latent factors for target logits: the truncated SVD of the centred logits.

    ``softmax`` ignores a per-token constant, so the target ``(μ, ξ, V)`` logits ℓ are
    centred per token; with ``τ·ℓ_c = U S Vᵀ`` (rows μ·ξ, columns V),

        Z = U_d S_d^{1/2},   M = S_d^{1/2} V_dᵀ,

    is the rank-d factorisation closest to τ·ℓ_c in Frobenius norm (Eckart-Young), with
    both factors on the same scale (what a per-coordinate optimiser such as Adam assumes).
    A popularity-only target is rank 1 after centring and is reproduced exactly at any d;
    one-hot real windows are not (d = 8 directions cannot hold ~1,000 distinct peaks: the
    fit keeps the popularity direction and the d − 1 strongest co-occurrence directions).
    Directions with a singular value below 10⁻³·s₁ would be zero in both Z and M — a
    saddle Adam never leaves — so their entries are drawn N(0, ``noise``²) instead.

    Args:
      key: PRNG key (noise of the unused directions).
      logits: ``(μ, ξ, V)`` target logits (e.g. :func:`target_logits`).
      latent_dim: d.
      tau: the factorisation's temperature τ.
      noise: std of the entries of the unused directions.

    Returns:
      :class:`LatentFactors` ``(z (μ, ξ, d), m (d, V))``.
    """
    check_array(logits, "logits", ndim=3)
    latent_dim = check_int(latent_dim, "latent_dim", min_value=1)
    tau = check_float(tau, "tau", min_value=0.0, strict_min=True)
    noise = check_float(noise, "noise", min_value=0.0)
    lg = np.asarray(logits, np.float64)
    mu, xi, v = lg.shape
    a = tau * (lg - lg.mean(-1, keepdims=True)).reshape(mu * xi, v)
    u, sv, vt = np.linalg.svd(a, full_matrices=False)
    d = min(latent_dim, sv.size)
    root = np.sqrt(sv[:d])
    z = np.zeros((mu * xi, latent_dim))
    m = np.zeros((latent_dim, v))
    z[:, :d], m[:d] = u[:, :d] * root, root[:, None] * vt[:d]
    dead = np.ones(latent_dim, bool)
    dead[:d] = sv[:d] < 1e-3 * sv[0]
    kz, km = jax.random.split(key)
    z[:, dead] = noise * np.asarray(jax.random.normal(kz, (mu * xi, int(dead.sum()))))
    m[dead] = noise * np.asarray(jax.random.normal(km, (int(dead.sum()), v)))
    return LatentFactors(jnp.asarray(z.reshape(mu, xi, latent_dim), jnp.float32), jnp.asarray(m, jnp.float32))


def _successors(tokens: np.ndarray, vocab_size: int, pad_id: int | None):
    """Consecutive-pair counts of ``tokens`` as CSR rows: ``row(i)`` = counts of the items after ``i``."""
    prev, nxt = tokens[:, :-1].ravel(), tokens[:, 1:].ravel()
    ok = (prev >= 0) & (prev < vocab_size) & (nxt >= 0) & (nxt < vocab_size)
    if pad_id is not None:
        ok &= (prev != pad_id) & (nxt != pad_id)
    order = np.argsort(prev[ok], kind="stable")
    prev, nxt = prev[ok][order], nxt[ok][order]
    indptr = np.searchsorted(prev, np.arange(vocab_size + 1))
    return lambda i: np.bincount(nxt[indptr[i]:indptr[i + 1]], minlength=vocab_size).astype(np.float64)


def markov_teacher(tokens: Any, vocab_size: int, *, n_seqs: int, seq_len: int, alpha: float = 0.1,
                   pad_id: int | None = None, backoff: float = 1.0, revisit_penalty: float = 5.0,
                   key: jax.Array | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A walk over the vocabulary and the first-order Markov teacher's soft tokens along it.

    The teacher is the real data's transition matrix with a popularity back-off,

        P(j | i) = (C_ij + β·pop_j) / (Σ_j' C_ij' + β),

    (C: counts of consecutive pairs, pop: :func:`popularity`, β = ``backoff``). The walk
    x_0 … x_{μξ−1} (row-major over the μ rows) starts at the most popular item and greedily
    steps to ``argmax_j P(j | x_t) / (1 + ρ·visits_j)`` (ρ = ``revisit_penalty``), so it
    follows frequent transitions and still visits most of the vocabulary (1,273 of 1,303
    items at [10×150] on MovieLens). With a ``key`` the walk is *sampled* from the chain
    instead (x_0 ~ pop, x_{t+1} ~ P(· | x_t), by inverse CDF at ``uniform(key, (μξ,))``; ρ is
    not used), so items are visited about as often as they occur (the chain's stationary
    distribution) — what a perplexity weighs. Its soft tokens are

        q_t = α·onehot(x_t) + (1 − α)·P(· | x_{t−1}),   q_0 = α·onehot(x_0) + (1 − α)·pop,

    so a model trained on ``q[:, :-1] → q[:, 1:]`` reads item x_t (mostly) and learns the
    teacher's whole next-item distribution P(· | x_t) at each visited item — the data
    knowledge-distils the Markov chain; read with argmax inputs (:func:`student_pairs`) the
    model sees item x_t itself. α = 0.1 was chosen on validation (:mod:`benchmarks.farzi`,
    see :class:`Settings`).

    Args:
      tokens: int ``(n, L)`` real sequences (``pad_id`` positions ignored).
      vocab_size: V.
      n_seqs, seq_len: μ, ξ.
      alpha: weight of the walk's own item, in [0, 1].
      pad_id: padding token of ``tokens`` or ``None``.
      backoff: β ≥ 0 of the popularity back-off (items never followed by anything get pop).
      revisit_penalty: ρ ≥ 0 (greedy walk).
      key: PRNG key of a sampled walk, or ``None`` for the greedy one.

    Returns:
      ``(walk, q)``: int ``(μ, ξ)`` items and float32 ``(μ, ξ, V)`` tokens summing to 1.
    """
    check_array(tokens, "tokens", ndim=2, kind="int")
    n_seqs, seq_len = check_int(n_seqs, "n_seqs", min_value=1), check_int(seq_len, "seq_len", min_value=1)
    vocab_size = check_int(vocab_size, "vocab_size", min_value=2)
    alpha = check_float(alpha, "alpha", min_value=0.0, max_value=1.0)
    backoff = check_float(backoff, "backoff", min_value=0.0)
    revisit_penalty = check_float(revisit_penalty, "revisit_penalty", min_value=0.0)
    tok = np.asarray(tokens)
    pop = popularity(tok, vocab_size, pad_id=pad_id)
    row = _successors(tok, vocab_size, pad_id)
    walk, visits = np.zeros(n_seqs * seq_len, np.int64), np.zeros(vocab_size)
    q = np.zeros((n_seqs * seq_len, vocab_size), np.float32)
    if key is None:
        def step(p, t):
            return int(np.argmax(p / (1.0 + revisit_penalty * visits)))
    else:
        u = np.asarray(jax.random.uniform(check_key(key), (walk.size + 1,)), np.float64)

        def step(p, t):  # inverse CDF; the clip guards against u·Σp rounding past the last bin
            return min(int(np.searchsorted(np.cumsum(p), u[t] * p.sum(), side="right")), vocab_size - 1)
    cur, prev_p = step(pop, 0), pop  # greedy: argmax(pop), nothing visited yet
    for t in range(walk.size):
        walk[t], visits[cur] = cur, visits[cur] + 1
        q[t] = (1.0 - alpha) * prev_p
        q[t, cur] += alpha
        c = row(cur)
        total = c.sum() + backoff
        prev_p = (c + backoff * pop) / total if total > 0 else pop
        cur = step(prev_p, t + 1)
    return walk.reshape(n_seqs, seq_len), q.reshape(n_seqs, seq_len, vocab_size)


def fit_factors_kl(key: jax.Array, probs: Any, *, latent_dim: int, tau: float = 1.0, steps: int = 1000,
                   learning_rate: float = 0.05) -> LatentFactors:
    """Latent factors whose softmax(Z·M/τ) is closest to ``probs`` in KL divergence.

    Minimises the soft cross-entropy ``−Σ_v q_v log softmax(Z·M/τ)_v`` (KL(q ‖ D_syn) up to
    q's entropy) with ``steps`` Adam steps at ``learning_rate`` (:func:`distill.train.scan`)
    from the least-squares fit of log q (:func:`fit_factors`). Why not the least-squares
    fit alone: it weighs every logit alike, so the many near-zero probabilities of a
    teacher distribution dominate it; measured on the Markov-teacher tokens of
    :func:`markov_teacher` ([10×150], V = 1,303) the mean L1 error of the data is 1.78 / 1.07
    at d = 8 / 256 after least squares and 1.57 / 0.07 (d = 8 / 128) after this fit,
    and a SASRec trained on the d = 8 data reaches test HR@10 7.3 instead of 6.4.

    Args:
      key: PRNG key (:func:`fit_factors`' noise).
      probs: ``(μ, ξ, V)`` target distributions.
      latent_dim, tau: d and τ of the factorisation.
      steps, learning_rate: the Adam fit (``steps = 0``: least squares only).

    Returns:
      :class:`LatentFactors` ``(z (μ, ξ, d), m (d, V))``.
    """
    check_array(probs, "probs", ndim=3)
    p64 = np.asarray(probs, np.float64)
    if not np.all(np.isfinite(p64)) or (p64 < 0).any():
        raise ValueError("probs: expected finite, non-negative probabilities")
    steps = check_int(steps, "steps", min_value=0)
    learning_rate = check_float(learning_rate, "learning_rate", min_value=0.0, strict_min=True)
    q = jnp.asarray(probs, jnp.float32)
    factors = fit_factors(key, np.log(np.maximum(p64, 1e-30)), latent_dim=latent_dim, tau=tau)
    if steps == 0:
        return factors
    opt = optax.adam(learning_rate)

    def loss(f, batch, k):
        del batch, k
        return soft_cross_entropy(latent_logits(f, tau), q)

    run = jax.jit(lambda st: train.scan(st, jnp.arange(steps), key, loss=loss, optimizer=opt)[0].params)
    return run(train.init(factors, opt))


INITS = ("random", "real", "popularity", "mix", "markov")
WALKS = ("greedy", "sampled")


def initial_factors(
    key: jax.Array,
    tokens: Any,
    *,
    n_seqs: int,
    seq_len: int,
    latent_dim: int,
    vocab_size: int,
    tau: float = 1.0,
    init: str = "markov",
    init_logit: float = 8.0,
    pad_id: int | None = None,
    init_mix: float = 0.5,
    teacher_mix: float = 0.1,
    teacher_walk: str = "greedy",
) -> LatentFactors:
    """The (Z, M) that :func:`distill` called with the same ``key`` and settings starts from.

    * ``init='random'``: the factorisation's Gaussian init (near-uniform tokens);
    * ``'real'``: :func:`init_from_tokens` (real windows of ``tokens``, real-item logit
      ``init_logit``; needs d ≳ 32 for the real item to dominate);
    * ``'popularity'``: every token = the item popularity of ``tokens``
      (:func:`target_logits` with α = 0, fitted exactly by :func:`fit_factors`);
    * ``'mix'``: the rank-d least-squares fit (:func:`fit_factors`) of
      ``log(α·onehot(real window) + (1 − α)·pop)``, α = ``init_mix``;
    * ``'markov'``: the KL fit (:func:`fit_factors_kl`) of the first-order Markov
      teacher's tokens along a walk over the vocabulary (:func:`markov_teacher`),
      α = ``teacher_mix``; ``teacher_walk`` ``'greedy'`` or ``'sampled'`` (with the key
      ``fold_in(fold_in(key, 1), 1)``).

    Why the popularity-based starts: measured on SASRec / MovieLens [10×150], near-one-hot
    real windows train a SASRec to test HR@10 1.5 while popularity-only data reaches 5.1,
    so a start at popularity is already past the trivial baseline the distillation must
    beat. Use this function to evaluate the starting point (0 outer steps) without
    repeating how :func:`distill` derives its keys.
    """
    check_choice(init, "init", INITS)
    k = jax.random.fold_in(key, 1)
    if init == "real":
        return init_from_tokens(k, tokens, n_seqs=n_seqs, seq_len=seq_len, latent_dim=latent_dim,
                                vocab_size=vocab_size, tau=tau, logit=init_logit, pad_id=pad_id)
    if init in ("popularity", "mix"):
        check_array(tokens, "tokens", ndim=2, kind="int")
        alpha = 0.0 if init == "popularity" else init_mix
        k_rows, k_fit = jax.random.split(k)
        lg = target_logits(k_rows, tokens, n_seqs=n_seqs, seq_len=seq_len, vocab_size=vocab_size, alpha=alpha,
                           pad_id=pad_id)
        return fit_factors(k_fit, lg, latent_dim=latent_dim, tau=tau)
    if init == "markov":
        check_choice(teacher_walk, "teacher_walk", WALKS)
        _, q = markov_teacher(tokens, vocab_size, n_seqs=n_seqs, seq_len=seq_len, alpha=teacher_mix, pad_id=pad_id,
                              key=jax.random.fold_in(k, 1) if teacher_walk == "sampled" else None)
        return fit_factors_kl(k, q, latent_dim=latent_dim, tau=tau)
    return latent_factorization(n_seqs, seq_len, latent_dim, vocab_size, tau=tau).init(k)


# --------------------------------------------------------------------------------------
# settings and data checks


def _check_settings(settings: Settings) -> Settings:
    """Validate every field; errors name ``settings.<field>``."""
    if not isinstance(settings, Settings):
        raise TypeError(f"settings: expected farzi.Settings, got {type(settings).__name__}")
    s = settings
    if not isinstance(s.model, ModelFns):
        raise TypeError(f"settings.model: expected a ModelFns (e.g. models.sasrec.sasrec(...)), "
                        f"got {type(s.model).__name__}")
    for name, low in (("n_seqs", 1), ("seq_len", 2), ("latent_dim", 1), ("steps", 0), ("batch_size", 1),
                      ("theta0_draws", 1),
                      ("inner_steps", 1), ("eval_every", 1), ("checkpoint_every", 1), ("omega_runs", 1),
                      ("omega_steps", 0), ("omega_every", 1), ("omega_batch_size", 1)):
        check_int(getattr(s, name), f"settings.{name}", min_value=low)
    if s.patience is not None:
        check_int(s.patience, "settings.patience", min_value=1)
    for name in ("tau", "learning_rate", "init_logit", "omega_learning_rate"):
        check_float(getattr(s, name), f"settings.{name}", min_value=0.0, strict_min=True)
    check_float(s.init_mix, "settings.init_mix", min_value=0.0, max_value=1.0)
    check_float(s.teacher_mix, "settings.teacher_mix", min_value=0.0, max_value=1.0)
    check_float(s.random_init_prob, "settings.random_init_prob", min_value=0.0, max_value=1.0)
    if not isinstance(s.inner_optimizer, inner.Adam):
        raise TypeError(f"settings.inner_optimizer: expected inner.Adam, got {type(s.inner_optimizer).__name__}")
    check_choice(s.mode, "settings.mode", inner.MODES)
    check_choice(s.init, "settings.init", INITS)
    check_choice(s.teacher_walk, "settings.teacher_walk", WALKS)
    for name in ("inner_dropout", "hard_inputs"):
        if not isinstance(getattr(s, name), bool):
            raise TypeError(f"settings.{name}: expected a bool, got {type(getattr(s, name)).__name__}")
    if s.omega_weights is not None and not isinstance(s.omega_weights, tuple):
        raise TypeError(f"settings.omega_weights: expected a tuple of floats or None, "
                        f"got {type(s.omega_weights).__name__}")
    return s


def _check_data(data: Data) -> Data:
    if not isinstance(data, Data):
        raise TypeError(f"data: expected farzi.Data, got {type(data).__name__}")
    check_array(data.train, "data.train", ndim=2, kind="int")
    if data.train.shape[1] < 2:
        raise ValueError(f"data.train: expected at least 2 columns, got shape {tuple(data.train.shape)}")
    if data.pad_id is not None:
        check_int(data.pad_id, "data.pad_id")
    return data


def _n_omega(omega: Any, name: str = "omega") -> int:
    leaves = jax.tree_util.tree_leaves(omega)
    if not leaves or any(getattr(a, "ndim", 0) < 1 for a in leaves):
        raise ValueError(f"{name}: expected a stacked pytree of checkpoints (leading axis = checkpoint)")
    n_omega = leaves[0].shape[0]
    if any(a.shape[0] != n_omega for a in leaves):
        raise ValueError(f"{name}: every leaf must have the same leading (checkpoint) dimension")
    return n_omega


def _vocab_size(model: ModelFns, tokens: Any) -> int:
    x = jnp.asarray(tokens)[:1, :-1]
    return n_outputs(model.apply, jax.eval_shape(model.init, jax.random.key(0), x), x)


# --------------------------------------------------------------------------------------
# pretrained trajectories Ω


def _omega_loss(model, pad_id, batch_size):
    def loss(params, batch, key):
        del key  # the batch is the step's key (the draws of the original pretraining loop)
        tokens, k = batch
        idx = jax.random.randint(k, (min(batch_size, tokens.shape[0]),), 0, tokens.shape[0])
        return token_loss(model, params, tokens[idx], pad_id=pad_id)

    return loss


def pretrain(key: jax.Array, data: Data, settings: Settings = _DEFAULTS, *,
             checkpoint_dir: str | os.PathLike | None = None) -> Data:
    """Train ``settings.model`` on ``data.train`` from ``settings.omega_runs`` random inits; return ``data`` with Ω.

    Ω is the flat set of episodic checkpoints θ_i (dissertation Ch. 4, §4.3.2): every
    ``omega_every`` steps from step 0 to ``omega_steps`` of every run, stacked run-major
    along a new leading axis (run r's checkpoint at step s is entry ``C·r + s/omega_every``,
    C = ``omega_steps // omega_every + 1``). Run r starts from ``model.init(fold_in(key, r))``
    and is trained by :func:`distill.train.train_model` (Adam at ``omega_learning_rate``);
    its step t draws ``omega_batch_size`` rows with replacement from ``fold_in(key_r, t + 1)``.

    With ``checkpoint_dir`` every run is stored with :func:`distill.trajectories.save_run`
    (``<dir>/run<r>``); runs already there are read back, so a larger ``omega_runs`` trains
    only the new runs.
    """
    settings, data = _check_settings(settings), _check_data(data)
    s, model = settings, settings.model
    tokens = jnp.asarray(data.train)
    _check_tokens_in_vocab(model, model.init(jax.random.key(0), tokens[:1, :-1]), tokens, data.pad_id)
    done = [] if checkpoint_dir is None else trajectories.completed_runs(checkpoint_dir)
    loss = _omega_loss(model, data.pad_id, s.omega_batch_size)
    runs = []
    for r in range(s.omega_runs):
        kr = jax.random.fold_in(key, r)
        params = model.init(kr, tokens[:1, :-1])
        if r in done:
            like = tree_map(lambda a: jax.ShapeDtypeStruct((s.omega_steps // s.omega_every + 1,) + a.shape, a.dtype),
                            params)
            runs.append(trajectories.load_run(checkpoint_dir, r, like))
            continue
        trained = train.train_model(kr, params, loss, lambda t, kr=kr: (tokens, jax.random.fold_in(kr, t + 1)),
                                    optimizer=optax.adam(s.omega_learning_rate), steps=s.omega_steps,
                                    snapshot_every=s.omega_every)
        if checkpoint_dir is not None:
            trajectories.save_run(checkpoint_dir, r, trained.snapshots)
        runs.append(trained.snapshots)
    omega = tree_map(lambda *a: jnp.concatenate(a), *runs)
    return data._replace(omega=omega)


# --------------------------------------------------------------------------------------
# the method


def _parametrization(settings: Settings, vocab_size: int) -> Parametrization:
    return latent_factorization(settings.n_seqs, settings.seq_len, settings.latent_dim, vocab_size, tau=settings.tau)


def init(key: jax.Array, data: Data, settings: Settings = _DEFAULTS) -> LatentFactors:
    """The (Z, M) that :func:`distill` with the same ``key`` starts from (:func:`initial_factors`)."""
    settings, data = _check_settings(settings), _check_data(data)
    s = settings
    return initial_factors(key, np.asarray(data.train), n_seqs=s.n_seqs, seq_len=s.seq_len,
                           latent_dim=s.latent_dim, vocab_size=_vocab_size(s.model, data.train), tau=s.tau,
                           init=s.init, init_logit=s.init_logit, pad_id=data.pad_id, init_mix=s.init_mix,
                           teacher_mix=s.teacher_mix, teacher_walk=s.teacher_walk)


def _batch_seed(key: jax.Array) -> int:
    return int(jax.random.randint(jax.random.fold_in(key, 7), (), 0, 2**31 - 1))


def _rows_at(tokens: np.ndarray, seed: int, step: int, batch_size: int) -> jax.Array:
    """The real rows of outer step ``step``: ``batch_size`` distinct rows (all when fewer)."""
    n = tokens.shape[0]
    rng = np.random.default_rng([seed, int(step)])
    return jnp.asarray(tokens[rng.choice(n, min(batch_size, n), replace=False)])


def sample_batch(key: jax.Array, data: Data, settings: Settings = _DEFAULTS) -> Batch:
    """The real batch of :func:`distill`'s first outer step with this ``key``, with Ω.

    Step t's rows are ``batch_size`` distinct rows drawn by numpy from
    ``[seed(key), t]`` (a resumed run sees the same batches). ``data.omega`` is required
    (:func:`pretrain`)."""
    settings, data = _check_settings(settings), _check_data(data)
    if data.omega is None:
        raise ValueError("data.omega: expected pretrained checkpoints (farzi.pretrain), got None")
    _n_omega(data.omega, "data.omega")
    return Batch(_rows_at(np.asarray(data.train), _batch_seed(key), 0, settings.batch_size), data.omega,
                 data.pad_id)


def _theta0(settings: Settings, batch: Batch, key: jax.Array) -> Any:
    """θ_0: a fresh ``model.init`` with probability ``random_init_prob``, else θ_i ~ Ω."""
    n_omega = _n_omega(batch.omega, "batch.omega")
    k_omega = jax.random.split(key)[0]
    if settings.omega_weights is None:
        idx = jax.random.randint(k_omega, (), 0, n_omega)
    else:
        idx = jax.random.categorical(k_omega, _omega_logits(settings.omega_weights, n_omega))
    theta0 = tree_map(lambda a: a[idx], batch.omega)
    if settings.random_init_prob > 0:
        k_init = jax.random.fold_in(key, 3)
        fresh = settings.model.init(k_init, batch.tokens[:1, :-1])
        use = jax.random.bernoulli(jax.random.fold_in(k_init, 1), settings.random_init_prob)
        theta0 = tree_map(lambda a, b: jnp.where(use, a.astype(b.dtype), b), fresh, theta0)
    return theta0


def objective(syn_params: LatentFactors, batch: Batch, key: jax.Array, settings: Settings = _DEFAULTS, *,
              mesh=None) -> jax.Array:
    """Farzi's meta-objective (Eq. 4.2): pure and jittable (``settings`` static).

    ``key`` picks θ_0 — a fresh ``model.init`` with probability ``random_init_prob``, else
    θ_i ~ Ω with probabilities ``omega_weights`` (uniform when ``None``) — and is passed to
    ``materialize`` (with ``theta0_draws`` = n > 1 the value is the mean over n draws of θ_0
    with the keys ``split(fold_in(key, 6), n)``); the model is trained for ``inner_steps`` Adam steps on D_syn read by
    :func:`student_pairs` (``hard_inputs``) with :func:`distill.inner.train` (with
    replayable dropout masks when ``inner_dropout``); the
    value is the trained model's mean next-token loss on the real ``batch.tokens``
    (int ``(b, L+1)``, ``batch.pad_id`` masked), summed over ``mesh`` rows by
    :func:`distill.parallel.sum_rows`.
    """
    s = _check_settings(settings)
    check_array(batch.tokens, "batch.tokens", ndim=2, kind="int")
    model = s.model
    param = _parametrization(s, syn_params.m.shape[-1])
    k_mat = jax.random.split(key)[1]
    data = param.materialize(syn_params, k_mat)
    if s.inner_dropout:
        def apply(p, x, k):
            return model.apply(p, x, train=True, key=k)
    else:
        apply = model.apply

    def loss_from(k):
        theta_t = inner.train(
            apply, soft_cross_entropy, _theta0(s, batch, k), student_pairs(data, s.hard_inputs),
            steps=s.inner_steps, optimizer=s.inner_optimizer, mode=s.mode, reverse_every=s.reverse_every,
            key=jax.random.fold_in(k, 4) if s.inner_dropout else None,
        )
        return token_loss(model, theta_t, batch.tokens, pad_id=batch.pad_id, mesh=mesh)

    if s.theta0_draws == 1:
        return loss_from(key)
    # One draw's meta-gradient is mostly about its own θ_0 (see Settings.theta0_draws):
    # average several, one after the other (memory of one inner run at a time).
    return jnp.mean(jax.lax.map(loss_from, jax.random.split(jax.random.fold_in(key, 6), s.theta0_draws)))


# Not part of a run's identity: the loop's own schedule (resuming with more steps continues a
# run) and Ω's pretraining schedule (Ω's contents are signed instead).
_UNSIGNED = ("model", "steps", "eval_every", "patience", "checkpoint_every", "omega_runs", "omega_steps",
             "omega_every", "omega_batch_size", "omega_learning_rate")


def _fingerprint(key, data: Data, settings: Settings) -> dict:
    fp = {k: v for k, v in settings._asdict().items() if k not in _UNSIGNED}
    fp["inner_optimizer"] = list(settings.inner_optimizer)
    fp["omega_weights"] = None if settings.omega_weights is None else list(settings.omega_weights)
    fp.update(pad_id=data.pad_id, key=loop.key_signature(key), tokens=loop.array_signature(np.asarray(data.train)),
              omega=[loop.array_signature(np.asarray(a)) for a in jax.tree_util.tree_leaves(data.omega)])
    return fp


def distill(key: jax.Array, data: Data, settings: Settings = _DEFAULTS, *, mesh=None,
            checkpoint_dir: str | os.PathLike | None = None, progress: bool = False,
            evaluate: Callable[[Any], float] | None = None) -> Result:
    """Distil ``data.train`` into μ×ξ Farzi data (Eq. 4.2) with :func:`distill.loop.run`.

    Starts from :func:`init` ``(key)``; outer step t uses the real rows of
    :func:`sample_batch`'s schedule and the key ``fold_in(fold_in(key, 2), t)``. Without
    ``data.omega``, Ω is first pretrained by :func:`pretrain` with ``fold_in(key, 5)``
    (stored under ``<checkpoint_dir>/omega`` when given). ``evaluate(syn_params) -> float``
    (larger is better) runs on the start and every ``settings.eval_every`` steps, and the
    best parameters are returned (the start when no step beats it). With ``checkpoint_dir``,
    the settings, the key and signatures of the data and Ω are stored with every checkpoint;
    resuming with any of them changed is refused.
    """
    settings, data = _check_settings(settings), _check_data(data)
    s = settings
    if data.omega is None:
        omega_dir = None if checkpoint_dir is None else os.path.join(os.fspath(checkpoint_dir), "omega")
        data = pretrain(jax.random.fold_in(key, 5), data, s, checkpoint_dir=omega_dir)
    _n_omega(data.omega, "data.omega")
    if s.omega_weights is not None:
        _omega_logits(s.omega_weights, _n_omega(data.omega))
    tokens = np.asarray(data.train)
    seed = _batch_seed(key)
    syn0 = init(key, data, s)
    param = _parametrization(s, syn0.m.shape[-1])

    def batches(step):
        return Batch(_rows_at(tokens, seed, step, s.batch_size), data.omega, data.pad_id)

    syn, hist = loop.run(lambda p, b, k: objective(p, b, k, s, mesh=mesh), syn0, optax.adam(s.learning_rate),
                         batches, steps=s.steps, fingerprint=_fingerprint(key, data, s),
                         key=jax.random.fold_in(key, 2), evaluate=evaluate, eval_every=s.eval_every,
                         patience=s.patience, maximize=True, checkpoint_dir=checkpoint_dir,
                         checkpoint_every=s.checkpoint_every, progress=progress, evaluate_start=True)
    return Result(syn, param.materialize(syn, jax.random.key(0)), s, hist, param)


# --------------------------------------------------------------------------------------
# training a model on D_syn or on real tokens


def _step_keys(key: jax.Array, steps: int, chunk: int | None) -> Callable[[int], jax.Array]:
    if chunk is None:
        return lambda t: jax.random.fold_in(key, t)
    chunk = check_int(chunk, "chunk", min_value=1)
    parts = [jax.random.split(jax.random.fold_in(key, a), min(chunk, steps - a)) for a in range(0, steps, chunk)]
    keys = jnp.concatenate(parts) if parts else None
    return lambda t: keys[t]


def _student_loss(apply, n, b, *, soft, replace, dropout, pad_id, hard_inputs=False):
    def loss(params, batch, key):
        del key  # the batch carries the step's key
        tokens, k = batch
        k_rows, k_drop = jax.random.split(k)
        if not replace:
            rows = tokens[jax.random.choice(k_rows, n, (b,), replace=False)]
        else:
            rows = tokens if b >= n else tokens[jax.random.randint(k_rows, (b,), 0, n)]
        inputs, targets = student_pairs(rows, hard_inputs) if soft else (rows[:, :-1], rows[:, 1:])
        logits = apply(params, inputs, train=True, key=k_drop) if dropout else apply(params, inputs)
        if soft:
            return soft_cross_entropy(logits, targets)
        logp = jax.nn.log_softmax(logits, axis=-1)
        if pad_id is None:
            return -jnp.mean(jnp.take_along_axis(logp, rows[:, 1:, None], axis=-1))
        mask = ((inputs != pad_id) & (targets != pad_id)).astype(logits.dtype)
        nll = -jnp.take_along_axis(logp, jnp.clip(targets, 0, logits.shape[-1] - 1)[..., None], -1)[..., 0]
        return jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)

    return loss


def train_student(key: jax.Array, model: ModelFns, tokens: Any, *, steps: int, learning_rate: float = 1e-3,
                  batch_size: int | None = None, replace: bool = False, pad_id: int | None = None,
                  dropout: bool = True, params: Any = None, init_inputs: Any = None, chunk: int | None = None,
                  evaluate: Callable[[Any], float] | None = None, eval_every: int | None = None,
                  patience: int | None = None, maximize: bool = True, hard_inputs: bool = True) -> train.Trained:
    """Train ``model`` on soft D_syn ``(μ, ξ, V)`` or int tokens ``(n, L+1)`` — how Farzi data is used.

    Soft rows: soft cross-entropy on ``D[:, 1:]``; int rows: next-token loss, positions
    whose input or target is ``pad_id`` excluded. :func:`distill.train.train_model` with
    Adam at ``learning_rate``; ``k_init, k_run = split(key)``: ``params`` default to
    ``model.init(k_init, init_inputs)`` (``init_inputs`` default: the first row's inputs,
    argmax tokens for soft data). Step t's key ``k_t`` is ``fold_in(k_run, t)`` (or, with
    ``chunk``, the t-th of ``split(fold_in(k_run, a), chunk)`` for the chunk starting at
    step a — the schedule of one scan per chunk); ``k_rows, k_drop = split(k_t)`` draw the
    step's ``batch_size`` rows (all rows when ``None``; distinct rows unless ``replace``,
    which takes every row when ``batch_size >= n``) and the dropout masks (``dropout``:
    ``model.apply(θ, x, train=True, key=k_drop)``). ``evaluate``, ``eval_every``,
    ``patience``, ``maximize``: :func:`distill.train.train_model`'s. ``hard_inputs``: soft
    rows are read by :func:`student_pairs` — argmax inputs and soft targets by default, as
    :func:`distill` (``Settings.hard_inputs``) reads them; ``False`` reads soft inputs.

    Returns:
      :class:`distill.train.Trained` (``params`` = the best evaluated ones).
    """
    if not isinstance(model, ModelFns):
        raise TypeError(f"model: expected a ModelFns, got {type(model).__name__}")
    check_array(tokens, "tokens", ndim=(2, 3))
    steps = check_int(steps, "steps", min_value=0)
    learning_rate = check_float(learning_rate, "learning_rate", min_value=0.0, strict_min=True)
    tokens = jnp.asarray(tokens)
    soft = bool(jnp.issubdtype(tokens.dtype, jnp.floating))
    n = tokens.shape[0]
    b = n if batch_size is None else min(check_int(batch_size, "batch_size", min_value=1), n)
    k_init, k_run = jax.random.split(key)
    if params is None:
        if init_inputs is None:
            init_inputs = jnp.argmax(tokens[:1, :-1], -1) if soft else tokens[:1, :-1]
        params = model.init(k_init, init_inputs)
    loss = _student_loss(model.apply, n, b, soft=soft, replace=replace, dropout=dropout, pad_id=pad_id,
                         hard_inputs=hard_inputs)
    keys = _step_keys(k_run, steps, chunk)
    return train.train_model(k_run, params, loss, lambda t: (tokens, keys(t)), optimizer=optax.adam(learning_rate),
                             steps=steps, evaluate=evaluate, eval_every=eval_every, patience=patience,
                             maximize=maximize)
