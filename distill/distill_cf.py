"""Distill-CF: data distillation for collaborative filtering (dissertation Ch. 3, §3.4).

Distill-CF learns ``μ`` *synthetic users* whose interactions, used as ∞-AE's support
set, reconstruct the real users' interactions best. The learnable parameters are
logits ``Γ ∈ R^{μ×I}``; the summary is (:func:`distill.parametrize.gumbel_multisample`)::

    X̂ˢ = hardtanh( Σ_{s=1..γ} softmax((Γ + g_s) / τ) ),        g_s ~ Gumbel(0, 1)

and the outer objective on a batch ``X_b`` of real users (their training rows serve
both as ∞-AE queries and as reconstruction targets) is (Eq. 3.4, Algorithm 5)::

    L(Γ) = −(1/b) Σ_{u∈b} Σ_i X_{u,i} · log softmax(K(X_u, X̂ˢ) · α)_i  +  λ₂ · ‖X̂ˢ‖₁ / μ
    α    = (K(X̂ˢ, X̂ˢ) + λ · tr(K)/μ · I)⁻¹ X̂ˢ

The reconstruction term is the multinomial log-likelihood used by the reference
implementation (``log_softmax`` of ∞-AE's scores; Algorithm 5's line 13 writes a
Bernoulli form of the same idea). The L1 term is averaged over synthetic users, so
Table 3.2's grid ``λ₂ ∈ {1e-3, 10} / (avg. # interactions per user)`` carries over
by passing that ratio as ``lam2``.

Inner λ on the fly (§3.6.1: "we don't validate the inner-loop's λ at every outer-loop
iteration, but keep changing it on-the-fly at each validation cycle"): every
``eval_every`` steps the current summary (materialised with a fixed evaluation key)
is scored by :func:`select_lambda` — ∞-AE fitted on it for every λ of a small grid,
real users' training rows as queries, their validation items as targets — and the
best λ is used by the objective until the next validation. The same validation value
(nDCG@10 at the best λ by default) drives early stopping and the choice of the
returned parameters. The λ schedule is checkpointed with the parameters (the run state
of :func:`distill.loop.run`), so a resumed run uses exactly the λ the uninterrupted run
would have used; a checkpoint written with other settings or data is refused.

The module has the shape of every method (:class:`Settings`, :class:`Data`,
:func:`init`, :func:`sample_batch`, :func:`objective`, :func:`distill` → :class:`Result`).
Everything else is shared machinery: the outer loop is :func:`distill.loop.run`
(optax Adam, checkpoints, exact resume), the loss over the real batch is a
:func:`distill.parallel.sum_rows` (real users sharded over a mesh, summary replicated,
partial sums ``psum``-ed), and export is :mod:`distill.export`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from distill import export, loop, parallel, parametrize
from distill.checks import (
    check_array,
    check_binary,
    check_choice,
    check_float,
    check_int,
    check_key,
    check_path,
    is_concrete,
)
from models import infinite_ae, tuning
from models.kernels import KernelSpec, check_spec

__all__ = [
    "Settings",
    "Data",
    "Batch",
    "Result",
    "LoadedSummary",
    "init",
    "sample_batch",
    "objective",
    "select_lambda",
    "distill",
    "settings_json",
    "sample_binary",
    "export_summary",
    "load_summary",
    "EXPORT_KEY_SEED",
]


class Settings(NamedTuple):
    """Every setting of a Distill-CF run (hashable: a static ``jit`` argument).

    The tuned defaults come from the tuning runs at the 10 % budget of MovieLens
    latest-small (``benchmarks/results/distill_cf_10pct_tuning/run_*.json``, test nDCG@10
    of ∞-AE on the summary; random users 18.59) and the tuned Fig. 3.4 curve
    (``benchmarks/results/distill_cf_ml-latest-small_tuned.json``). With them, 34
    synthetic users (5 % of 671) reach a test nDCG@10 of ~1.5× that of 34 random real
    users after 200 steps, and already beat them after 30.

    Attributes:
      n_syn_users: μ, synthetic users (1 ≤ μ ≤ number of real users). 34: 5 % of
        MovieLens latest-small's 671 users, the budget of the all-defaults run
        (``benchmarks/results/distill_cf_ml-latest-small_defaults.json``).
      n_samples: γ, Gumbel samples per synthetic user. 200: 200 vs 100 at τ 10, η 0.04,
        400 steps: 24.11 vs 23.96 (run_d, run_c).
      tau: Gumbel-softmax temperature τ. 10: best of {1, 5, 10, 20} (run_a 21.84,
        run_i 24.05, run_g 24.59, run_e 23.21).
      lam2: λ₂, weight of the L1 penalty (mean per synthetic user). 0: λ₂ = 0.083
        (10 / avg. # interactions per user, Table 3.2's grid) changed nothing: 24.11 vs
        24.10 (run_d, run_f).
      learning_rate: Adam step size η. 0.1: best of {0.04, 0.1, 0.2} (run_d 24.11,
        run_g 24.59, run_h 24.14).
      init_scale: Γ = ``init_scale`` · the training rows of μ random real users. 10: the
        setting of every tuning run; it puts the sampled users' items 10× above the
        unit-scale Gumbel noise, so the first summaries resemble those users (the former
        defaults, 1 with τ 1, γ 50, η 0.04, were far below random users after 30 steps).
      steps: ξ, outer-loop updates. 200: the best validated step was 150–300 in the
        tuned runs (run_g–i, the tuned curve), and 200 keeps a default run at the 5 %
        budget to minutes on a CPU.
      batch_size: real users per step (``None``: all, as in the reference defaults).
      lams: the inner-λ grid re-evaluated at every validation (the ∞-AE reference grid,
        :data:`models.infinite_ae.DEFAULT_LAMS`); a tuple.
      metric: validation metric for λ and early stopping (``'nDCG@10'``, the metric of
        the dissertation's Distill-CF tables).
      eval_every: steps between validations. 50: the spacing of the tuned runs (run_g–i,
        the tuned curve).
      patience: validations without improvement before stopping (``None``: never).
        4 (200 steps without gain): the tuned curve's 1–5 % runs.
      checkpoint_every: steps between orbax checkpoints with a ``checkpoint_dir`` (100:
        a multiple of ``eval_every``, so every checkpoint sits on a validation).
      kernel: ∞-AE's kernel (:class:`models.kernels.KernelSpec`; its defaults are ∞-AE's).
      custom_vjp: use the memory-constant Gumbel VJP (``False``: naive autodiff; same
        values, kept for tests and the memory benchmark).
      noise: Gumbel noise generator, ``'hash'`` (fast, default) or ``'threefry'``
        (:data:`distill.parametrize.GUMBEL_NOISE`).
      init_users: which μ real users Γ₀ is built from (:data:`INIT_USERS`):
        ``'random'`` (default; drawn with the init key) or ``'active'`` (the μ users
        with the most training interactions, ties by row index; the key is unused).
        ``'random'``: at the 10 % budget 'active' scored 23.30 vs 24.59 (run_j, run_g).
      lr_schedule: Adam's step size over the run (:data:`LR_SCHEDULES`): ``'constant'``
        (default, η at every step) or ``'cosine'``
        (``η_t = η · ½(1 + cos(π · min(t, ξ)/ξ))``, ξ = ``steps``: η at step 0, 0 at ξ).
        ``'constant'``: cosine over 300 / 500 steps scored 24.12 / 24.70 vs 24.59 (run_k,
        run_l, run_g), within the seed spread of the constant η.
    """

    n_syn_users: int = 34
    n_samples: int = 200
    tau: float = 10.0
    lam2: float = 0.0
    learning_rate: float = 0.1
    init_scale: float = 10.0
    steps: int = 200
    batch_size: int | None = None
    lams: tuple[float, ...] = infinite_ae.DEFAULT_LAMS
    metric: str = "nDCG@10"
    eval_every: int = 50
    patience: int | None = 4
    checkpoint_every: int = 100
    kernel: KernelSpec = KernelSpec()
    custom_vjp: bool = True
    noise: str = "hash"
    init_users: str = "random"
    lr_schedule: str = "constant"


#: The choices of :attr:`Settings.init_users`.
INIT_USERS = ("random", "active")
#: The choices of :attr:`Settings.lr_schedule`.
LR_SCHEDULES = ("constant", "cosine")


class Data(NamedTuple):
    """The real data Distill-CF distils.

    Attributes:
      train: ``(n, I)`` binary training matrix of the real users (∞-AE's queries and
        reconstruction targets).
      val: ``(n, I)`` binary validation items of the same users (λ and early stopping).
    """

    train: Any
    val: Any


class Batch(NamedTuple):
    """One outer step's data.

    Attributes:
      rows: ``(b, I)`` training rows of a batch of real users (queries and targets).
      lam: ``()`` the inner KRR's λ currently selected on validation data.
    """

    rows: jax.Array
    lam: jax.Array


class Result(NamedTuple):
    """Outcome of :func:`distill`.

    Attributes:
      params: ``(μ, I)`` the learned logits Γ (best by validation).
      data: ``(μ, I)`` Γ materialised with the evaluation key: the summary that was
        validated, what ∞-AE is fitted on.
      settings: the :class:`Settings` of the run.
      history: the :class:`distill.loop.History` of the run.
      lam: the inner λ selected for ``data`` on validation data.
      val_value: its validation metric (``settings.metric`` at ``lam``).
      lams: ``{update count: λ}`` — the on-the-fly λ schedule.
    """

    params: jax.Array
    data: jax.Array
    settings: Settings
    history: loop.History
    lam: float
    val_value: float
    lams: dict


class LoadedSummary(NamedTuple):
    """What :func:`load_summary` returns (numpy arrays; settings as a dict)."""

    logits: np.ndarray
    probs: np.ndarray
    summary: np.ndarray
    binary: np.ndarray
    item_ids: np.ndarray
    settings: dict


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _check_numbers(s: Settings, n_real: int | None) -> None:
    check_int(s.n_syn_users, "settings.n_syn_users", min_value=1, max_value=n_real)
    check_int(s.n_samples, "settings.n_samples", min_value=1)
    check_float(s.tau, "settings.tau", min_value=0.0, strict_min=True)
    check_float(s.lam2, "settings.lam2", min_value=0.0)
    check_float(s.learning_rate, "settings.learning_rate", min_value=0.0, strict_min=True)
    check_float(s.init_scale, "settings.init_scale")
    check_int(s.steps, "settings.steps", min_value=0)
    if s.batch_size is not None:
        check_int(s.batch_size, "settings.batch_size", min_value=1, max_value=n_real)
    check_int(s.eval_every, "settings.eval_every", min_value=1)
    if s.patience is not None:
        check_int(s.patience, "settings.patience", min_value=1)
    check_int(s.checkpoint_every, "settings.checkpoint_every", min_value=1)


def _check_settings(settings: Any, n_real: int | None = None) -> Settings:
    """``settings`` if it is a valid :class:`Settings` (μ and the batch ≤ ``n_real``)."""
    if not isinstance(settings, Settings):
        raise TypeError(f"settings: expected a distill_cf.Settings, got {type(settings).__name__}")
    _check_numbers(settings, n_real)
    if not isinstance(settings.lams, tuple) or not settings.lams:
        raise (TypeError if not isinstance(settings.lams, tuple) else ValueError)(
            f"settings.lams: expected a non-empty tuple of λ, got {settings.lams!r}"
        )
    for lam in settings.lams:
        check_float(lam, "settings.lams", min_value=0.0)
    try:
        tuning.parse_metric(settings.metric)
    except ValueError as e:
        raise ValueError(f"settings.{e}") from None
    check_spec(settings.kernel, "settings.kernel")
    if not isinstance(settings.custom_vjp, bool):
        raise TypeError(f"settings.custom_vjp: expected a bool, got {type(settings.custom_vjp).__name__}")
    check_choice(settings.noise, "settings.noise", parametrize.GUMBEL_NOISE)
    check_choice(settings.init_users, "settings.init_users", INIT_USERS)
    check_choice(settings.lr_schedule, "settings.lr_schedule", LR_SCHEDULES)
    return settings


def _check_data(data: Any) -> tuple[Any, Any]:
    if not isinstance(data, Data):
        raise TypeError(f"data: expected a distill_cf.Data(train, val), got {type(data).__name__}")
    train, val = data
    check_array(train, "data.train", ndim=2, kind="numeric", finite=True)
    check_array(val, "data.val", ndim=2, kind="numeric", shape=tuple(train.shape), finite=True)
    check_binary(train, "data.train")
    check_binary(val, "data.val")
    if is_concrete(val) and not bool(np.any((np.asarray(val) != 0) & (np.asarray(train) == 0))):
        # Validation drives λ and early stopping; without held-out items every value is 0.
        raise ValueError("data.val: expected at least one user with a validation item outside train, got none")
    return train, val


def _check_batch(batch: Any) -> None:
    if not isinstance(batch, Batch):
        raise TypeError(f"batch: expected a distill_cf.Batch(rows, lam), got {type(batch).__name__}")
    check_array(batch.rows, "batch.rows", ndim=2, kind="numeric")
    check_array(batch.lam, "batch.lam", ndim=0, kind="numeric", nonempty=False)


# --------------------------------------------------------------------------------------
# Objective
# --------------------------------------------------------------------------------------


def _parametrization(settings: Settings, n_items: int, mesh: Mesh | None = None) -> parametrize.Parametrization:
    return parametrize.gumbel_multisample(
        settings.n_syn_users, n_items, n_samples=settings.n_samples, tau=settings.tau,
        init_scale=settings.init_scale, custom_vjp=settings.custom_vjp, noise=settings.noise, mesh=mesh,
    )


def _nll_sum(rows, weights, model):
    """``Σ_u w_u · (−Σ_i X_ui log softmax(f(X_u))_i)`` over a shard of real users."""
    scores = infinite_ae.predict(model, rows, block_size=None)
    loglik = jnp.sum(rows * jax.nn.log_softmax(scores, axis=-1), axis=-1)
    return -jnp.sum(weights * loglik)


def objective(
    syn_params: jax.Array,
    batch: Batch,
    key: jax.Array,
    settings: Settings = Settings(),
    *,
    mesh: Mesh | None = None,
) -> jax.Array:
    """Distill-CF's outer loss (Eq. 3.4): ∞-AE fitted on the summary, scored on real users.

    ``L = −(1/b) Σ_u Σ_i X_ui · log softmax(K(X_u, X̂ˢ) α)_i + λ₂ ‖X̂ˢ‖₁ / μ`` with
    ``X̂ˢ`` the Gumbel summary of Γ = ``syn_params`` at ``key``
    (:func:`distill.parametrize.gumbel_multisample` with the settings' γ, τ, noise) and
    ``α = (K(X̂ˢ, X̂ˢ) + λ·tr(K)/μ·I)⁻¹ X̂ˢ`` (``λ = batch.lam``).

    Args:
      syn_params: Γ, ``(μ, I)`` float logits (``μ = settings.n_syn_users``).
      batch: :class:`Batch` — ``rows`` ``(b, I)`` real users' training rows and the
        inner ``lam``.
      key: PRNG key of this step (the Gumbel noise).
      settings: :class:`Settings` (γ, τ, λ₂, the kernel, noise, custom VJP).
      mesh: shard the real users, and the Gumbel sampling of the synthetic users' rows,
        over this mesh (:func:`distill.parallel.sum_rows`); the summary and ∞-AE's α are
        replicated, the per-device sums are ``psum``-ed.

    Returns:
      Scalar loss; differentiable in ``syn_params``, jittable with ``settings`` static.

    Source: dissertation Ch. 3, Eq. 3.4 and Algorithm 5 (lines 8–13).
    """
    settings = _check_settings(settings)
    check_array(syn_params, "syn_params", ndim=2, kind="float", shape=(settings.n_syn_users, None))
    _check_batch(batch)
    summary = _parametrization(settings, syn_params.shape[1], mesh).materialize(syn_params, key)
    if summary.shape[1] != batch.rows.shape[1]:
        raise ValueError(
            f"batch.rows: expected {summary.shape[1]} items (the summary's), "
            f"got shape {tuple(batch.rows.shape)}"
        )
    rows = batch.rows.astype(summary.dtype)
    model = infinite_ae.fit(summary, lam=batch.lam.astype(summary.dtype), spec=settings.kernel)
    nll = parallel.sum_rows(_nll_sum, rows, model, mesh=mesh) / rows.shape[0]
    return nll + settings.lam2 * jnp.sum(jnp.abs(summary)) / summary.shape[0]


# --------------------------------------------------------------------------------------
# λ on validation data
# --------------------------------------------------------------------------------------


def select_lambda(
    summary: jax.Array,
    train: jax.Array,
    val: jax.Array,
    *,
    lams: Sequence[float] = infinite_ae.DEFAULT_LAMS,
    metric: str = "nDCG@10",
    spec: KernelSpec = KernelSpec(),
    batch_size: int = 4096,
) -> tuning.GridSearch:
    """Choose ∞-AE's λ for a support set by a validation metric of real users.

    For each λ, ∞-AE is fitted on ``summary`` and scores the real users from their
    training rows; training items are excluded from the ranking and ``val`` holds the
    targets. ``K(S,S)`` is eigen-decomposed once, so each λ costs one ``(n, μ)·(μ, I)``
    product (and no float32 Cholesky can fail at tiny λ).

    Args:
      summary: ``(μ, I)`` support set (a Distill-CF summary or a sample of users).
      train: ``(n, I)`` binary training rows of the real users (queries).
      val: ``(n, I)`` binary validation items of the same users.
      lams: λ grid (relative to the mean kernel diagonal, as in :func:`infinite_ae.fit`).
      metric: :func:`distill.metrics.evaluate` key to maximise.
      spec: the kernel (:class:`models.kernels.KernelSpec`).
      batch_size: users per metric batch.

    Returns:
      :class:`models.tuning.GridSearch` (``best_lam``, ``best_value``, the value per λ;
      ``model`` is ``None``).

    Source: dissertation §3.6.1 (λ re-selected on the fly at each validation cycle).
    """
    check_array(summary, "summary", ndim=2, kind="numeric", finite=True)
    check_array(train, "train", ndim=2, kind="numeric", shape=(None, summary.shape[1]))
    check_array(val, "val", ndim=2, kind="numeric", shape=tuple(train.shape))
    tuning.parse_metric(metric)
    dtype = jnp.result_type(float)
    q = jnp.asarray(train, dtype)
    path = infinite_ae.spectral_path(jnp.asarray(summary, dtype), q, spec=spec)
    return tuning.select_lambda(
        q, jnp.asarray(val), scores_for=lambda lam: infinite_ae.spectral_scores(path, lam), lams=lams,
        metric=metric, batch_size=batch_size,
    )


# --------------------------------------------------------------------------------------
# The method: init, sample_batch, distill
# --------------------------------------------------------------------------------------


class _Prepared(NamedTuple):
    """What :func:`init`, :func:`sample_batch` and :func:`distill` derive from their inputs."""

    train: jax.Array  # (n, I) float training rows
    val: jax.Array  # (n, I) float validation items
    keys: tuple  # (k_init, k_batch, k_steps, k_eval) = split(key, 4)
    settings: Settings


def _prepare(key: Any, data: Any, settings: Any) -> _Prepared:
    check_key(key)
    train, val = _check_data(data)
    settings = _check_settings(settings, n_real=train.shape[0])
    dtype = jnp.result_type(float)
    keys = tuple(jax.random.split(key, 4))
    return _Prepared(jnp.asarray(train, dtype), jnp.asarray(val, dtype), keys, settings)


def _initial_logits(prep: _Prepared) -> jax.Array:
    """Γ₀ = ``init_scale`` · the training rows of μ real users: drawn with ``k_init``
    (``init_users='random'``) or the μ most active ones (``'active'``)."""
    k_init, mu = prep.keys[0], prep.settings.n_syn_users
    if prep.settings.init_users == "active":
        users0 = jnp.argsort(-jnp.sum(prep.train, axis=1), stable=True)[:mu]
    else:
        users0 = jax.random.choice(k_init, prep.train.shape[0], (mu,), replace=False)
    return _parametrization(prep.settings, prep.train.shape[1]).init(k_init, prep.train[users0])


def _batch_rows(prep: _Prepared, step: int) -> jax.Array:
    """The real users of outer step ``step``: all, or ``batch_size`` drawn with ``fold_in(k_batch, step)``."""
    n, batch_size = prep.train.shape[0], prep.settings.batch_size
    if batch_size is None or batch_size == n:
        return prep.train
    idx = jax.random.choice(jax.random.fold_in(prep.keys[1], step), n, (batch_size,), replace=False)
    return prep.train[idx]


def _validator(prep: _Prepared, mesh: Mesh | None):
    """``(materialize, validate)``: the summary at the evaluation key, and its λ search."""
    s = prep.settings
    par = _parametrization(s, prep.train.shape[1], mesh)
    k_eval = prep.keys[3]
    materialize = jax.jit(lambda g: par.materialize(g, k_eval))

    def validate(summary: jax.Array) -> tuning.GridSearch:
        return select_lambda(summary, prep.train, prep.val, lams=s.lams, metric=s.metric, spec=s.kernel)

    return materialize, validate


def _optimizer(s: Settings) -> optax.GradientTransformation:
    """Adam with the step size of ``s.lr_schedule`` (constant η, or cosine decay η → 0 over ``s.steps``)."""
    if s.lr_schedule == "cosine" and s.steps > 0:
        return optax.adam(optax.cosine_decay_schedule(s.learning_rate, s.steps))
    return optax.adam(s.learning_rate)


def init(key: jax.Array, data: Data, settings: Settings = Settings()) -> jax.Array:
    """Γ₀ (``(μ, I)``): ``settings.init_scale`` · the training rows of μ real users
    (random ones, or the most active with ``settings.init_users='active'``).

    The same draw as :func:`distill` with the same ``key`` (its first of four splits).
    """
    return _initial_logits(_prepare(key, data, settings))


def sample_batch(key: jax.Array, data: Data, settings: Settings = Settings()) -> Batch:
    """The :class:`Batch` of :func:`distill`'s first step with the same ``key``.

    ``rows``: all training rows, or ``settings.batch_size`` users drawn as step 0 draws
    them; ``lam``: the λ :func:`select_lambda` picks on the summary of :func:`init`'s Γ₀
    (materialised with the evaluation key), the λ in force until the first validation.
    """
    prep = _prepare(key, data, settings)
    materialize, validate = _validator(prep, None)
    lam = validate(materialize(_initial_logits(prep))).best_lam
    return Batch(_batch_rows(prep, 0), jnp.asarray(lam, prep.train.dtype))


def _lam_at(schedule: dict[str, float], step: int) -> float:
    """The λ in force at ``step``: the one selected at the latest validation ≤ ``step``
    (keys are update counts as strings: the schedule is checkpointed as JSON)."""
    return schedule[str(max(int(s) for s in schedule if int(s) <= step))]


def settings_json(settings: Settings) -> dict[str, Any]:
    """``settings`` as a plain JSON-able dict (tuples as lists, the kernel as a dict)."""
    record = {**settings._asdict(), "kernel": dataclasses.asdict(settings.kernel)}
    return export.jsonable(record)


#: Settings that may change between a run and its resumption (extending it, stopping
#: it differently, checkpointing it differently); everything else must match.
_RESUMABLE = ("steps", "patience", "checkpoint_every")


def _fingerprint(key: jax.Array, data: Data, settings: Settings) -> dict[str, Any]:
    """What a checkpoint must match: the settings (but :data:`_RESUMABLE`), key and data."""
    fingerprint = {k: v for k, v in settings_json(settings).items() if k not in _RESUMABLE}
    if settings.lr_schedule == "cosine":
        fingerprint["steps"] = settings.steps  # the schedule's length: not resumable under another
    for name in ("init_users", "lr_schedule"):  # at their defaults: checkpoints from before they existed match
        if getattr(settings, name) == Settings._field_defaults[name]:
            del fingerprint[name]
    fingerprint.update(
        key_data=loop.key_signature(key), train=loop.array_signature(data.train),
        val=loop.array_signature(data.val),
    )
    return fingerprint


def _outcome(logits, history, schedule, materialize, validate, evaluate) -> tuple[jax.Array, float, float]:
    """``(summary, λ, validation value)`` of the returned Γ."""
    summary = materialize(logits)
    if history.best_step >= 0 and evaluate is None:
        return summary, schedule[str(history.best_step)], history.best_value
    search = validate(summary)  # nothing validated (steps == 0), or a user evaluate ranked the steps
    return summary, search.best_lam, search.best_value


def distill(
    key: jax.Array,
    data: Data,
    settings: Settings = Settings(),
    *,
    mesh: Mesh | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = False,
    evaluate: Callable[[jax.Array], float] | None = None,
) -> Result:
    """Synthesize a μ-user data summary with Distill-CF (Algorithm 5).

    Γ starts from :func:`init`; each step materialises the summary with fresh Gumbel
    noise (``fold_in(key, step)``), fits ∞-AE on it, scores a batch of real users
    (:func:`sample_batch` for step 0) and takes an Adam step on :func:`objective`. Every
    ``settings.eval_every`` steps (and after the last) the summary (fixed evaluation key)
    is validated by :func:`select_lambda`, which also re-selects the inner λ; the best
    validated Γ is returned, ``settings.patience`` validations without improvement stop
    the run. With ``checkpoint_dir``, orbax checkpoints are written every
    ``settings.checkpoint_every`` steps and a rerun with the same arguments resumes from
    the newest one with the same final result as an uninterrupted run (a checkpoint
    written with other settings, key or data is refused).

    Args:
      key: PRNG key (initial users, batches, Gumbel noise, evaluation noise).
      data: :class:`Data` — ``(n, I)`` binary training rows and validation items.
      settings: :class:`Settings` (tuned defaults; μ = ``settings.n_syn_users``).
      mesh: shard real users of each batch, and the Gumbel sampling of the synthetic
        users' rows, over this mesh.
      checkpoint_dir: orbax checkpoints / resume (see above).
      progress: tqdm bar.
      evaluate: ``evaluate(summary) -> float`` (larger is better) on the summary
        materialised at the evaluation key, replacing the validation metric for early
        stopping and the choice of the returned Γ; λ is still re-selected on ``data.val``.

    Returns:
      :class:`Result` (``params`` Γ, ``data`` its summary, the selected λ, ...).

    Source: dissertation Ch. 3, §3.4.3, Eq. 3.4, Algorithm 5; §3.6.1 (λ on the fly).
    """
    prep = _prepare(key, data, settings)
    s = prep.settings
    checkpoint_dir = None if checkpoint_dir is None else check_path(checkpoint_dir, "checkpoint_dir")
    if evaluate is not None and not callable(evaluate):
        raise TypeError(f"evaluate: expected a callable, got {type(evaluate).__name__}")
    materialize, validate = _validator(prep, mesh)
    logits0 = _initial_logits(prep)

    # The λ schedule {update count: λ}: entry 0 from the initial summary, then one per
    # validation. loop.run checkpoints it with the parameters and, on resume, refills
    # it in place with the schedule the checkpointed run had.
    schedule = {"0": float(validate(materialize(logits0)).best_lam)}

    def batches(t: int) -> Batch:
        return Batch(_batch_rows(prep, t), jnp.asarray(_lam_at(schedule, t), prep.train.dtype))

    def validation(logits, step: int) -> float:
        summary = materialize(logits)
        search = validate(summary)
        schedule[str(step)] = float(search.best_lam)
        return float(search.best_value) if evaluate is None else float(evaluate(summary))

    logits, history = loop.run(
        lambda g, batch, k: objective(g, batch, k, s, mesh=mesh), logits0, _optimizer(s),
        batches, steps=s.steps, key=prep.keys[2], evaluate=validation, eval_every=s.eval_every,
        patience=s.patience, maximize=True, checkpoint_dir=checkpoint_dir,
        checkpoint_every=s.checkpoint_every, progress=progress, fingerprint=_fingerprint(key, data, s),
        state=schedule,
    )
    summary, lam, value = _outcome(logits, history, schedule, materialize, validate, evaluate)
    lams_by_step = {int(k): v for k, v in schedule.items()}
    return Result(logits, summary, s, history, float(lam), float(value), lams_by_step)


# --------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------


def sample_binary(key: jax.Array, logits: jax.Array, *, n_samples: int) -> jax.Array:
    """A discrete summary: the union of γ categorical draws per row from ``softmax(Γ)``.

    The τ → 0 limit of the Gumbel-softmax summary (Gumbel-max: ``argmax(Γ + g_s)``),
    i.e. "sample X̂ˢ ∼ Xˢ to get the final, discrete support set" (§3.4.3).

    Args:
      key: PRNG key.  logits: ``(μ, I)`` Γ.  n_samples: γ ≥ 1.

    Returns:
      ``(μ, I)`` float 0/1 matrix with between 1 and γ ones per row.
    """
    check_key(key)
    check_array(logits, "logits", ndim=2, kind="float")
    n_samples = check_int(n_samples, "n_samples", min_value=1)
    rows = jnp.arange(logits.shape[0])

    def body(s, acc):
        g = jax.random.gumbel(jax.random.fold_in(key, s), logits.shape, logits.dtype)
        return acc.at[rows, jnp.argmax(logits + g, axis=-1)].set(1.0)

    return jax.lax.fori_loop(0, n_samples, body, jnp.zeros_like(logits))


#: The key :func:`export_summary` samples with when none is given.
EXPORT_KEY_SEED = 0


def _export_inputs(source, n_samples, tau, noise, settings):
    """``(logits, summary or None, n_samples, tau, noise, settings)`` from a result or Γ."""
    if settings is not None and not isinstance(settings, Mapping):
        raise TypeError(f"settings: expected a mapping, got {type(settings).__name__}")
    if not isinstance(source, Result):
        if n_samples is None or tau is None:
            raise TypeError("export_summary: n_samples and tau are required with raw logits")
        return source, None, n_samples, tau, noise or "hash", dict(settings or {})
    run = source.settings
    given = {"n_samples": n_samples, "tau": tau, "noise": noise}
    for name, value in given.items():
        if value is not None and value != getattr(run, name):
            raise ValueError(f"{name}: the result was distilled with {getattr(run, name)!r}, got {value!r}")
    meta = {**settings_json(run), "lam": source.lam, "val_value": source.val_value,
            "best_step": source.history.best_step, **dict(settings or {})}
    return source.params, source.data, run.n_samples, run.tau, run.noise, meta


def export_summary(
    path: str | os.PathLike,
    source: Result | Any,
    *,
    key: jax.Array | None = None,
    n_samples: int | None = None,
    tau: float | None = None,
    item_ids: Any | None = None,
    settings: Mapping[str, Any] | None = None,
    noise: str | None = None,
) -> pathlib.Path:
    """Write a Distill-CF summary with :func:`distill.export.save` (numpy-loadable).

    ``export_summary(path, result, item_ids=split.item_ids)`` writes a
    :class:`Result` with everything taken from it (γ, τ, noise, the selected
    λ, its validation value and every other setting); ``export_summary(path, logits,
    n_samples=γ, tau=τ, ...)`` writes a bare Γ.

    Arrays written: ``logits`` Γ ``(μ, I)``; ``probs`` = row-wise ``softmax(Γ)`` (the
    continuous sampling prior); ``summary`` = the hard-tanh Gumbel summary of Eq. 3.4
    (what ∞-AE is fitted on during distillation: for a result, exactly the validated
    ``result.data``; for bare Γ, materialised at ``key``); ``binary`` = a sampled
    0/1 summary (:func:`sample_binary`); ``item_ids`` ``(I,)`` = the original item id
    of every column. The JSON holds ``{"method": "distill_cf", "n_syn_users",
    "n_items", "n_samples", "tau", "noise", ...the result's settings (:func:`settings_json`), "lam", "val_value", ...settings}``.

    Args:
      path: destination without extension (``<path>.npz`` + ``<path>.json``).
      source: a :class:`Result`, or ``(μ, I)`` learned Γ.
      key: PRNG key of the sampled matrices (default ``jax.random.key(0)``,
        :data:`EXPORT_KEY_SEED`).
      n_samples: γ (required with bare Γ; with a result, taken from it — a different
        value is an error).
      tau: τ, likewise.
      item_ids: ``(I,)`` original item ids, e.g. ``Split.item_ids`` (default ``0..I-1``).
      settings: extra JSON-serialisable settings (dataset, ...); they override the
        result's entries of the same name.
      noise: the Gumbel noise generator of the distillation (bare Γ: default
        ``'hash'``; with a result, taken from it).

    Returns:
      The ``.npz`` path.
    """
    logits, summary, n_samples, tau, noise, meta = _export_inputs(source, n_samples, tau, noise, settings)
    check_array(logits, "logits", ndim=2, kind="float", finite=True)
    n_samples = check_int(n_samples, "n_samples", min_value=1)
    tau = check_float(tau, "tau", min_value=0.0, strict_min=True)
    mu, n_items = logits.shape
    if item_ids is None:
        item_ids = np.arange(n_items)
    check_array(item_ids, "item_ids", ndim=1, shape=(n_items,))
    logits = jnp.asarray(logits)
    k_soft, k_bin = jax.random.split(jax.random.key(EXPORT_KEY_SEED) if key is None else key)
    if summary is None:
        par = parametrize.gumbel_multisample(mu, n_items, n_samples=n_samples, tau=tau, noise=noise)
        summary = par.materialize(logits, k_soft)
    arrays = {
        "logits": np.asarray(logits),
        "probs": np.asarray(jax.nn.softmax(logits, axis=-1)),
        "summary": np.asarray(summary),
        "binary": np.asarray(sample_binary(k_bin, logits, n_samples=n_samples)),
        "item_ids": np.asarray(item_ids),
    }
    header = {"method": "distill_cf", "n_syn_users": mu, "n_items": n_items, "n_samples": n_samples,
              "tau": tau, "noise": noise}
    return export.save(path, arrays, {**header, **meta})


def load_summary(path: str | os.PathLike) -> LoadedSummary:
    """Read what :func:`export_summary` wrote (numpy arrays + the settings dict)."""
    arrays, settings = export.load(path)
    missing = [k for k in ("logits", "probs", "summary", "binary", "item_ids") if k not in arrays]
    if missing:
        raise ValueError(f"path: {path} is not a Distill-CF export (missing {missing})")
    return LoadedSummary(
        arrays["logits"], arrays["probs"], arrays["summary"], arrays["binary"], arrays["item_ids"], settings
    )
