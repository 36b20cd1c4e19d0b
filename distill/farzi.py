"""Farzi: autoregressive data distillation with latent-factorised data and reverse-mode Adam.

Farzi (dissertation Ch. 4) summarises a dataset of token sequences into μ synthetic
sequences of length ξ, each token a distribution over the vocabulary,

    D_syn = softmax(Z · M / τ),   Z ∈ R^{μ×ξ×d},  M ∈ R^{d×V}            (Eq. 4.1, 4.2)

(:func:`distill.parametrize.latent_factorization`), optimised so that a model trained on
D_syn for T Adam steps from a checkpoint θ_i of a pretrained trajectory Ω has a low
next-token loss on the real data:

    min_{Z, M}  E_{θ_i ~ Ω} [ L_D(θ_{i+T}) ]
    s.t. θ_{t+1} = Adam(θ_t, ∇_θ L_{D_syn}(θ_t)),   D_syn = softmax(Z·M/τ).     (Eq. 4.2)

The inner loop is :func:`distill.inner.train` (``mode='reverse_adam'`` by default:
Algorithm 6, memory independent of T up to the stored segment states); the outer loop is
:func:`distill.loop.run` (optax Adam on (Z, M), orbax resume); the real-batch loss is
summed over devices with :func:`distill.parallel.sum_rows`; the result leaves through
:func:`distill.export.save`.

Data conventions: a real batch is an int token matrix ``(b, L+1)``; inputs are its first
L columns, targets the last L. With ``pad_id`` set (SASRec sequences from
:mod:`distill.data.sequences`), positions whose input or target is padding are ignored.
The synthetic data ``(μ, ξ, V)`` trains the model on inputs ``D[:, :-1]`` and soft
targets ``D[:, 1:]`` with the soft cross-entropy; V is the model's number of outputs
(``n_items`` for SASRec, the vocabulary for the LM).
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from distill import export as _export
from distill import inner, loop, parallel
from distill.checks import check_array, check_choice, check_float, check_index_range, check_int, is_concrete
from distill.parametrize import LatentFactors, Parametrization, latent_factorization
from models.model_fns import ModelFns

__all__ = [
    "popularity_data",
    "soft_cross_entropy",
    "token_loss",
    "pretrain_trajectories",
    "save_trajectories",
    "load_trajectories",
    "objective",
    "init_from_tokens",
    "fit_factors",
    "popularity",
    "target_logits",
    "initial_factors",
    "early_weights",
    "distill",
    "train_on",
    "export",
]

tree_map = jax.tree_util.tree_map


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean over positions of ``-Σ_v targets[..., v] · log_softmax(logits)[..., v]``."""
    return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1))


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
    n_vocab = jax.eval_shape(lambda p, x: model.apply(p, x), params, jnp.asarray(tokens)[:1, :-1]).shape[-1]
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


# --------------------------------------------------------------------------------------
# pretrained trajectories Ω


def pretrain_trajectories(
    model: ModelFns,
    tokens: Any,
    *,
    key: jax.Array,
    n_runs: int = 2,
    steps: int = 200,
    save_every: int = 50,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    pad_id: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
) -> Any:
    """Train ``model`` on the real data from ``n_runs`` random inits; return Ω.

    Ω is the flat set of episodic checkpoints θ_i (dissertation Ch. 4, §4.3.2), every
    ``save_every`` steps from step 0 to ``steps`` of every run, stacked along a new
    leading axis. With ``checkpoint_dir`` each checkpoint is also written with orbax
    (``<dir>/run<r>_step<s>``); :func:`load_trajectories` reads them back.

    Args:
      model: the model.
      tokens: int ``(n, L+1)`` real sequences.
      key: PRNG key (initialisations and minibatch order).
      n_runs, steps, save_every, batch_size, learning_rate: the pretraining schedule (Adam).
      pad_id: padding token to mask (SASRec sequences), or ``None``.
      checkpoint_dir: optional orbax destination.

    Returns:
      The stacked parameter pytree, leading dimension ``n_runs · (steps // save_every + 1)``.
    """
    if not isinstance(model, ModelFns):
        raise TypeError(f"model: expected a ModelFns, got {type(model).__name__}")
    check_array(tokens, "tokens", ndim=2, kind="int")
    n_runs = check_int(n_runs, "n_runs", min_value=1)
    steps = check_int(steps, "steps", min_value=0)
    save_every = check_int(save_every, "save_every", min_value=1)
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    learning_rate = check_float(learning_rate, "learning_rate", min_value=0.0, strict_min=True)
    tokens = jnp.asarray(tokens)
    n = tokens.shape[0]
    tx = optax.adam(learning_rate)

    @jax.jit
    def step(params, opt_state, k):
        idx = jax.random.randint(k, (min(batch_size, n),), 0, n)
        loss, g = jax.value_and_grad(lambda p: token_loss(model, p, tokens[idx], pad_id=pad_id))(params)
        upd, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, loss

    root = None if checkpoint_dir is None else os.path.abspath(os.fspath(checkpoint_dir))
    thetas = []
    for r in range(n_runs):
        kr = jax.random.fold_in(key, r)
        params = model.init(kr, tokens[:1, :-1])
        run_names = [f"run{r}_step{s}" for s in range(0, steps + 1, save_every)]
        if root is not None and all(os.path.isdir(os.path.join(root, nm)) for nm in run_names):
            # Resume: a run whose checkpoints were all written (orbax commits atomically) is read back.
            thetas.extend(_restore(root, run_names, params))
            continue
        opt_state = tx.init(params)
        run_thetas = []
        for s in range(steps + 1):
            if s % save_every == 0:
                run_thetas.append(params)
            if s < steps:
                params, opt_state, _ = step(params, opt_state, jax.random.fold_in(kr, s + 1))
        if root is not None:
            save_trajectories(root, run_thetas, run_names)
        thetas.extend(run_thetas)
    return tree_map(lambda *a: jnp.stack(a), *thetas)


def _restore(root, names, like):
    import orbax.checkpoint as ocp

    ckpt = ocp.StandardCheckpointer()
    abstract = tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), like)
    thetas = [ckpt.restore(os.path.join(root, nm), abstract) for nm in names]
    ckpt.close()
    return thetas


def save_trajectories(checkpoint_dir, thetas, names) -> None:
    """Write each parameter pytree of ``thetas`` with orbax to ``<dir>/<name>``."""
    import orbax.checkpoint as ocp

    root = os.path.abspath(os.fspath(checkpoint_dir))
    os.makedirs(root, exist_ok=True)
    ckpt = ocp.StandardCheckpointer()
    for theta, name in zip(thetas, names, strict=True):
        path = os.path.join(root, name)
        if not os.path.exists(path):
            ckpt.save(path, theta)
    ckpt.wait_until_finished()
    ckpt.close()


def load_trajectories(checkpoint_dir, like: Any) -> Any:
    """Read every orbax checkpoint in ``checkpoint_dir`` into a stacked Ω.

    Order: names are compared with their digit runs as numbers, so ``run<r>_step<s>``
    comes back run-major with steps ascending (``step50`` before ``step100``), the order
    :func:`pretrain_trajectories` returns. ``like`` is one parameter pytree (e.g.
    ``model.init(...)``) giving the structure.
    """
    root = os.path.abspath(os.fspath(checkpoint_dir))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"checkpoint_dir: {root} does not exist")
    names = sorted((d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))),
                   key=lambda nm: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", nm)])
    if not names:
        raise ValueError(f"checkpoint_dir: {root} holds no checkpoints")
    return tree_map(lambda *a: jnp.stack(a), *_restore(root, names, like))


# --------------------------------------------------------------------------------------
# the objective


def objective(
    model: ModelFns,
    parametrization: Parametrization,
    omega: Any,
    *,
    inner_steps: int,
    inner_optimizer: inner.Adam = inner.Adam(1e-2),
    mode: str = "reverse_adam",
    reverse_every: int | str | None = "auto",
    pad_id: int | None = None,
    mesh=None,
    omega_weights: Any = None,
    random_init_prob: float = 0.0,
    inner_dropout: bool = False,
) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    """Farzi's meta-objective (Eq. 4.2) as ``loss(syn_params, batch, key) -> scalar``.

    ``key`` picks θ_0 — a fresh ``model.init`` with probability ``random_init_prob``,
    else θ_i ~ Ω with probabilities ``omega_weights`` (uniform when ``None``) — and is
    passed to ``materialize``; the model is trained for ``inner_steps`` Adam steps on
    ``D_syn`` with :func:`distill.inner.train`; the value is the trained model's mean
    next-token loss on the real ``batch`` (int ``(b, L+1)``), summed over ``mesh`` rows
    by :func:`distill.parallel.sum_rows`.

    Why weight θ_0 towards early checkpoints and random inits: measured on SASRec /
    MovieLens, the objective's spread across Ω checkpoints (≈ 2 nats) swamps its spread
    across candidate data (≈ 0.2), and a well-trained θ_i is made *worse* by a few steps on
    any small D_syn, so late checkpoints reward data that disturbs θ least rather than data
    that teaches most (dissertation §4.3.2 samples Ω uniformly; its T of 100-300 steps
    moves θ much further than ours).

    Args:
      model: ``ModelFns`` accepting soft inputs ``(μ, ξ-1, V)``.
      parametrization: e.g. :func:`distill.parametrize.latent_factorization`.
      omega: stacked pretrained checkpoints (:func:`pretrain_trajectories`).
      inner_steps: T.
      inner_optimizer: inner :class:`distill.inner.Adam`.
      mode: inner differentiation mode (``'reverse_adam'``, ``'unrolled'``, ``'checkpointed'``).
      reverse_every: segment length for ``'reverse_adam'`` (see :func:`distill.inner.train`).
      pad_id: padding token of the real batches, or ``None``.
      mesh: a device mesh (``distill.parallel.make_mesh()``) to shard the real batch.
      omega_weights: ``(|Ω|,)`` non-negative sampling weights of the checkpoints (e.g.
        :func:`early_weights`), or ``None`` for uniform.
      random_init_prob: probability in [0, 1] of starting from ``model.init`` (a fresh
        random init, keyed by the step's key) instead of an Ω checkpoint.
      inner_dropout: train the inner model with ``model.apply(θ, x, train=True, key=k_t)``
        (dropout on; the model must accept ``key``): the inner loop draws replayable masks
        ``k_t = fold_in(k, t)`` (:func:`distill.inner.train`), so reverse-mode Adam stays
        exact. The real-batch loss is evaluated without dropout.
    """
    n_omega = _check_objective(model, parametrization, omega, inner_optimizer, mode)
    inner_steps = check_int(inner_steps, "inner_steps", min_value=1)
    random_init_prob = check_float(random_init_prob, "random_init_prob", min_value=0.0, max_value=1.0)
    logw = _omega_logits(omega_weights, n_omega)
    apply = (lambda p, x, k: model.apply(p, x, train=True, key=k)) if inner_dropout else model.apply

    def loss(syn_params, batch, key):
        k_omega, k_mat = jax.random.split(key)
        k_init, k_drop = jax.random.fold_in(key, 3), jax.random.fold_in(key, 4)
        data = parametrization.materialize(syn_params, k_mat)
        if omega_weights is None:
            idx = jax.random.randint(k_omega, (), 0, n_omega)
        else:
            idx = jax.random.categorical(k_omega, logw)
        theta0 = tree_map(lambda a: a[idx], omega)
        if random_init_prob > 0:
            fresh = model.init(k_init, batch[:1, :-1])
            use = jax.random.bernoulli(jax.random.fold_in(k_init, 1), random_init_prob)
            theta0 = tree_map(lambda a, b: jnp.where(use, a.astype(b.dtype), b), fresh, theta0)
        theta_t = inner.train(
            apply, soft_cross_entropy, theta0, (data[:, :-1], data[:, 1:]),
            steps=inner_steps, optimizer=inner_optimizer, mode=mode, reverse_every=reverse_every,
            key=k_drop if inner_dropout else None,
        )
        return token_loss(model, theta_t, batch, pad_id=pad_id, mesh=mesh)

    return loss


def _check_objective(model, parametrization, omega, inner_optimizer, mode):
    """Validate :func:`objective`'s arguments; returns |Ω|."""
    if not isinstance(model, ModelFns):
        raise TypeError(f"model: expected a ModelFns, got {type(model).__name__}")
    if not isinstance(parametrization, Parametrization):
        raise TypeError(f"parametrization: expected a Parametrization, got {type(parametrization).__name__}")
    leaves = jax.tree_util.tree_leaves(omega)
    if not leaves or any(getattr(a, "ndim", 0) < 1 for a in leaves):
        raise ValueError("omega: expected a stacked pytree of checkpoints (leading axis = checkpoint)")
    n_omega = leaves[0].shape[0]
    if any(a.shape[0] != n_omega for a in leaves):
        raise ValueError("omega: every leaf must have the same leading (checkpoint) dimension")
    if not isinstance(inner_optimizer, inner.Adam):
        raise TypeError(f"inner_optimizer: expected inner.Adam, got {type(inner_optimizer).__name__}")
    if mode not in inner.MODES:
        raise ValueError(f"mode: expected one of {list(inner.MODES)}, got {mode!r}")
    return n_omega


def _omega_logits(weights, n_omega):
    if weights is None:
        return jnp.zeros((n_omega,))
    w = np.asarray(weights, np.float64)
    if w.shape != (n_omega,) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"omega_weights: expected {n_omega} non-negative finite weights with a positive sum, "
                         f"got shape {w.shape}")
    return jnp.asarray(np.where(w > 0, np.log(np.where(w > 0, w, 1.0)), -np.inf), jnp.float32)


def early_weights(steps: Any, half_life: float) -> np.ndarray:
    """Sampling weights of Ω checkpoints, halving every ``half_life`` pretraining steps.

    ``w_i = 2^{-s_i / half_life} / Σ_j 2^{-s_j / half_life}`` for the checkpoint steps
    ``s_i`` (e.g. ``[0, 100, 200, 300, 400] * n_runs`` for :func:`pretrain_trajectories`'s
    run-major Ω). See :func:`objective` for why early checkpoints get more weight.

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


INITS = ("random", "real", "popularity", "mix")


def initial_factors(
    key: jax.Array,
    tokens: Any,
    *,
    n_seqs: int,
    seq_len: int,
    latent_dim: int,
    vocab_size: int,
    tau: float = 1.0,
    init: str = "popularity",
    init_logit: float = 8.0,
    pad_id: int | None = None,
    init_mix: float = 0.5,
) -> LatentFactors:
    """The (Z, M) that :func:`distill` called with the same ``key`` and settings starts from.

    * ``init='random'``: the factorisation's Gaussian init (near-uniform tokens);
    * ``'real'``: :func:`init_from_tokens` (real windows of ``tokens``, real-item logit
      ``init_logit``; needs d ≳ 32 for the real item to dominate);
    * ``'popularity'``: every token = the item popularity of ``tokens``
      (:func:`target_logits` with α = 0, fitted exactly by :func:`fit_factors`);
    * ``'mix'``: the rank-d least-squares fit (:func:`fit_factors`) of
      ``log(α·onehot(real window) + (1 − α)·pop)``, α = ``init_mix``.

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
    return latent_factorization(n_seqs, seq_len, latent_dim, vocab_size, tau=tau).init(k)


def distill(
    model: ModelFns,
    omega: Any,
    tokens: Any,
    *,
    key: jax.Array,
    n_seqs: int,
    seq_len: int,
    vocab_size: int,
    latent_dim: int = 8,
    tau: float = 1.0,
    steps: int = 200,
    batch_size: int = 64,
    inner_steps: int = 30,
    inner_optimizer: inner.Adam = inner.Adam(1e-2),
    outer_learning_rate: float = 1e-2,
    mode: str = "reverse_adam",
    reverse_every: int | str | None = "auto",
    init: str = "popularity",
    init_logit: float = 8.0,
    init_mix: float = 0.5,
    omega_weights: Any = None,
    random_init_prob: float = 0.25,
    inner_dropout: bool = False,
    pad_id: int | None = None,
    mesh=None,
    evaluate: Callable[[Any], float] | None = None,
    eval_every: int = 50,
    patience: int | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 100,
    progress: bool = True,
) -> tuple[LatentFactors, loop.History, Parametrization]:
    """Distil ``tokens`` into μ×ξ Farzi data (Eq. 4.2) with :func:`distill.loop.run`.

    Real batches are ``batch_size`` rows of ``tokens`` drawn from the step (a resumed run
    continues exactly). Returns ``(syn_params, history, parametrization)``;
    ``parametrization.materialize(syn_params, key)`` is D_syn ``(μ, ξ, V)``.

    ``init``/``init_mix``: :func:`initial_factors`; ``reverse_every``:
    :func:`distill.inner.train`; ``omega_weights``, ``random_init_prob``, ``inner_dropout``:
    :func:`objective`.

    Where the defaults come from:

    * ``latent_dim = 8``: dissertation Table 4.2 (ML-100k, Magazine); a low rank is the
      implicit regulariser of §4.4.
    * ``inner_steps = 30`` with inner Adam lr 1e-2 (T·lr = 0.3): the dissertation uses
      T = 100-300 at lr 0.01-0.02 (Table 4.2, §4.3.2: "in the order of 100s"). Measured
      on SASRec / MovieLens: at T = 10, lr 3e-3 ten steps on *any* D_syn make a trained θ
      worse and the objective ranks popularity-only data below one-hot real windows, the
      reverse of training from scratch (HR@10 5.1 vs 1.1); from T·lr ≳ 0.3 it ranks them
      like training from scratch (``tests/distill/test_farzi_objective.py``).
    * ``random_init_prob = 0.25`` (and ``omega_weights``, e.g. :func:`early_weights`):
      see :func:`objective`. ``outer_learning_rate = 1e-2``: Table 4.2.
    * ``init = 'popularity'``: measured on SASRec / MovieLens [10×150] (3 seeds) the
      popularity start trains a SASRec to test HR@10 5.22 while ``'real'`` at d = 8 gives
      1.14 and random real windows 0.99; on PTB [200×15] PPL 200.6 vs 1,577 for ``'real'``.
      The outer loop then starts at the trivial baseline it has to beat.

    With ``checkpoint_dir``, the settings above, the key and a signature of ``tokens`` are
    stored with every checkpoint; resuming with any of them changed is refused.
    """
    check_array(tokens, "tokens", ndim=2, kind="int")
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    outer_learning_rate = check_float(outer_learning_rate, "outer_learning_rate", min_value=0.0, strict_min=True)
    param = latent_factorization(n_seqs, seq_len, latent_dim, vocab_size, tau=tau)
    obj = objective(model, param, omega, inner_steps=inner_steps, inner_optimizer=inner_optimizer,
                    mode=mode, reverse_every=reverse_every, pad_id=pad_id, mesh=mesh, omega_weights=omega_weights,
                    random_init_prob=random_init_prob, inner_dropout=inner_dropout)
    tokens_np = np.asarray(tokens)
    n = tokens_np.shape[0]
    b = min(batch_size, n)
    seed = int(jax.random.randint(jax.random.fold_in(key, 7), (), 0, 2**31 - 1))

    def batches(step):
        rng = np.random.default_rng([seed, int(step)])
        return jnp.asarray(tokens_np[rng.choice(n, b, replace=False)])

    syn0 = initial_factors(key, tokens_np, n_seqs=n_seqs, seq_len=seq_len, latent_dim=latent_dim,
                           vocab_size=vocab_size, tau=tau, init=init, init_logit=init_logit, pad_id=pad_id,
                           init_mix=init_mix)
    fingerprint = {
        "n_seqs": n_seqs, "seq_len": seq_len, "vocab_size": vocab_size, "latent_dim": latent_dim, "tau": tau,
        "batch_size": batch_size, "inner_steps": inner_steps, "inner_optimizer": list(inner_optimizer),
        "outer_learning_rate": outer_learning_rate, "mode": mode, "reverse_every": reverse_every, "init": init,
        "init_logit": init_logit, "init_mix": init_mix, "random_init_prob": random_init_prob,
        "inner_dropout": bool(inner_dropout), "pad_id": pad_id,
        "key": loop.key_signature(key),
        "tokens": loop.array_signature(tokens_np),
        "omega": [list(np.shape(a)) for a in jax.tree_util.tree_leaves(omega)],
        "omega_weights": None if omega_weights is None else np.asarray(omega_weights).tolist(),
    }
    syn, hist = loop.run(obj, syn0, optax.adam(outer_learning_rate), batches, steps=steps, fingerprint=fingerprint,
                         key=jax.random.fold_in(key, 2), evaluate=evaluate, eval_every=eval_every,
                         patience=patience, maximize=True, checkpoint_dir=checkpoint_dir,
                         checkpoint_every=checkpoint_every, progress=progress)
    return syn, hist, param


def train_on(
    model: ModelFns,
    data: jax.Array,
    *,
    key: jax.Array,
    steps: int,
    learning_rate: float = 1e-3,
    batch_size: int | None = None,
    pad_id: int | None = None,
    theta0: Any = None,
) -> Any:
    """Train ``model`` from scratch (or ``theta0``) on a dataset — how Farzi data is used.

    ``data`` is soft ``(μ, ξ, V)`` sequences (soft cross-entropy on ``D[:, 1:]``) or int
    ``(n, L+1)`` tokens (masked next-token loss). Minibatches of ``batch_size`` rows
    (all rows when ``None``). Returns the trained parameters.
    """
    if not isinstance(model, ModelFns):
        raise TypeError(f"model: expected a ModelFns, got {type(model).__name__}")
    check_array(data, "data", ndim=(2, 3))
    steps = check_int(steps, "steps", min_value=0)
    data = jnp.asarray(data)
    soft = jnp.issubdtype(data.dtype, jnp.floating)
    n = data.shape[0]
    b = n if batch_size is None else min(check_int(batch_size, "batch_size", min_value=1), n)
    params = model.init(key, data[:1, :-1]) if theta0 is None else theta0
    tx = optax.adam(learning_rate)

    def loss_fn(p, rows):
        if soft:
            return soft_cross_entropy(model.apply(p, rows[:, :-1]), rows[:, 1:])
        return token_loss(model, p, rows, pad_id=pad_id)

    @jax.jit
    def run(params):
        def body(carry, s):
            p, st = carry
            idx = jax.random.permutation(jax.random.fold_in(key, s), n)[:b]
            g = jax.grad(loss_fn)(p, data[idx])
            upd, st = tx.update(g, st, p)
            return (optax.apply_updates(p, upd), st), None

        return jax.lax.scan(body, (params, tx.init(params)), jnp.arange(steps))[0][0]

    return run(params)


def export(path, syn_params: LatentFactors, parametrization: Parametrization,
           settings: Mapping[str, Any] | None = None) -> Any:
    """Save Farzi data: ``data`` = D_syn ``(μ, ξ, V)`` probabilities, ``z`` and ``m``.

    Uses :func:`distill.export.save` (``<path>.npz`` + ``<path>.json``, numpy-only
    loading); ``settings`` is stored with ``method='farzi'``.
    """
    if not isinstance(syn_params, LatentFactors):
        raise TypeError(f"syn_params: expected LatentFactors, got {type(syn_params).__name__}")
    data = parametrization.materialize(syn_params, jax.random.key(0))
    meta = {"method": "farzi", "equation": "D_syn = softmax(Z @ M / tau) (dissertation Eq. 4.1/4.2)",
            "n_seqs": int(data.shape[0]), "seq_len": int(data.shape[1]), "vocab_size": int(data.shape[2]),
            "latent_dim": int(syn_params.z.shape[-1])}
    meta.update(dict(settings or {}))
    return _export.save(path, {"data": np.asarray(data), "z": np.asarray(syn_params.z),
                               "m": np.asarray(syn_params.m)}, meta)
