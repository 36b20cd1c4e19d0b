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

Everything else is shared machinery: the outer loop is :func:`distill.loop.run`
(optax Adam, checkpoints, exact resume), the loss over the real batch is a
:func:`distill.parallel.sum_rows` (real users sharded over a mesh, summary replicated,
partial sums ``psum``-ed), and export is :mod:`distill.export`.
"""

from __future__ import annotations

import functools
import os
import pathlib
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from distill import export, loop, parallel, parametrize
from distill.checks import (
    check_array,
    check_binary,
    check_float,
    check_int,
    check_key,
    check_path,
    is_concrete,
)
from models import infinite_ae, tuning

__all__ = [
    "Batch",
    "DistillCFResult",
    "LoadedSummary",
    "objective",
    "select_lambda",
    "distill",
    "sample_binary",
    "export_summary",
    "load_summary",
    "DEFAULT_LAMS",
    "DEFAULTS",
    "EXPORT_KEY_SEED",
]

#: The inner-λ grid re-evaluated at every validation cycle (the ∞-AE reference grid).
DEFAULT_LAMS = infinite_ae.DEFAULT_LAMS



class Batch(NamedTuple):
    """One outer step's data.

    Attributes:
      rows: ``(b, I)`` training rows of a batch of real users (queries and targets).
      lam: ``()`` the inner KRR's λ currently selected on validation data.
    """

    rows: jax.Array
    lam: jax.Array


class DistillCFResult(NamedTuple):
    """Outcome of :func:`distill`.

    Attributes:
      logits: ``(μ, I)`` the learned Γ (best by validation when evaluated).
      summary: ``(μ, I)`` Γ materialised with the evaluation key (what was validated).
      lam: the inner λ selected for ``summary`` on validation data.
      val_value: its validation metric (``metric`` at ``lam``).
      history: the :class:`distill.loop.History` of the run.
      lams: ``{update count: λ}`` — the on-the-fly λ schedule.
      settings: every setting the run used, as a plain JSON-able dict (``n_users``,
        ``n_samples``, ``tau``, ``lam2``, ``learning_rate``, ``steps``, ``batch_size``,
        ``init_scale``, ``lams``, ``metric``, ``eval_every``, ``patience``, ``depth``,
        ``w_std``, ``b_std``, ``noise``, ``custom_vjp``, ``n_real_users``, ``n_items``,
        ``key_data`` (the key's raw words), ``n_devices``); :func:`export_summary`
        reads it.
    """

    logits: jax.Array
    summary: jax.Array
    lam: float
    val_value: float
    history: loop.History
    lams: dict
    settings: dict


class LoadedSummary(NamedTuple):
    """What :func:`load_summary` returns (numpy arrays; settings as a dict)."""

    logits: np.ndarray
    probs: np.ndarray
    summary: np.ndarray
    binary: np.ndarray
    item_ids: np.ndarray
    settings: dict


# --------------------------------------------------------------------------------------
# Objective
# --------------------------------------------------------------------------------------


def _check_batch(batch: Any) -> None:
    if not isinstance(batch, Batch):
        raise TypeError(f"batch: expected a distill_cf.Batch(rows, lam), got {type(batch).__name__}")
    check_array(batch.rows, "batch.rows", ndim=2, kind="numeric")
    check_array(batch.lam, "batch.lam", ndim=0, kind="numeric", nonempty=False)


def _nll_sum(rows, weights, model):
    """``Σ_u w_u · (−Σ_i X_ui log softmax(f(X_u))_i)`` over a shard of real users."""
    scores = infinite_ae.predict(model, rows, block_size=None)
    loglik = jnp.sum(rows * jax.nn.log_softmax(scores, axis=-1), axis=-1)
    return -jnp.sum(weights * loglik)


def objective(
    syn_params: Any,
    batch: Batch,
    key: jax.Array,
    *,
    parametrization: parametrize.Parametrization,
    lam2: float,
    depth: int = 1,
    w_std: float = 2**0.5,
    b_std: float = 0.1,
    mesh: Mesh | None = None,
) -> jax.Array:
    """Distill-CF's outer loss (Eq. 3.4): ∞-AE fitted on the summary, scored on real users.

    ``L = −(1/b) Σ_u Σ_i X_ui · log softmax(K(X_u, X̂ˢ) α)_i + λ₂ ‖X̂ˢ‖₁ / μ`` with
    ``X̂ˢ = parametrization.materialize(syn_params, key)`` and
    ``α = (K(X̂ˢ, X̂ˢ) + λ·tr(K)/μ·I)⁻¹ X̂ˢ`` (``λ = batch.lam``).

    Args:
      syn_params: the parametrization's parameters (Γ, ``(μ, I)``, for Distill-CF).
      batch: :class:`Batch` — ``rows`` ``(b, I)`` real users' training rows and the
        inner ``lam``.
      key: PRNG key of this step (the Gumbel noise).
      parametrization: e.g. :func:`distill.parametrize.gumbel_multisample`.
      lam2: λ₂ ≥ 0, weight of the mean-per-synthetic-user L1 norm.
      depth, w_std, b_std: ∞-AE's kernel (see :func:`models.infinite_ae.fit`).
      mesh: shard the real users over this mesh (:func:`distill.parallel.sum_rows`);
        the summary and ∞-AE's α are replicated, the per-device sums are ``psum``-ed.

    Returns:
      Scalar loss; differentiable in ``syn_params``, jittable.

    Source: dissertation Ch. 3, Eq. 3.4 and Algorithm 5 (lines 8–13).
    """
    if not isinstance(parametrization, parametrize.Parametrization):
        raise TypeError(
            f"parametrization: expected a Parametrization, got {type(parametrization).__name__}"
        )
    _check_batch(batch)
    lam2 = check_float(lam2, "lam2", min_value=0.0)
    summary = parametrization.materialize(syn_params, key)
    check_array(summary, "summary", ndim=2, kind="float")
    if summary.shape[1] != batch.rows.shape[1]:
        raise ValueError(
            f"batch.rows: expected {summary.shape[1]} items (the summary's), "
            f"got shape {tuple(batch.rows.shape)}"
        )
    rows = batch.rows.astype(summary.dtype)
    model = infinite_ae.fit(summary, lam=batch.lam.astype(summary.dtype), depth=depth, w_std=w_std, b_std=b_std)
    nll = parallel.sum_rows(_nll_sum, rows, model, mesh=mesh) / rows.shape[0]
    return nll + lam2 * jnp.sum(jnp.abs(summary)) / summary.shape[0]


# --------------------------------------------------------------------------------------
# λ on validation data
# --------------------------------------------------------------------------------------


def select_lambda(
    summary: jax.Array,
    train: jax.Array,
    val: jax.Array,
    *,
    lams: Sequence[float] = DEFAULT_LAMS,
    metric: str = "nDCG@10",
    depth: int = 1,
    w_std: float = 2**0.5,
    b_std: float = 0.1,
    batch_size: int = 4096,
) -> tuple[float, float, tuning.GridSearch]:
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
      depth, w_std, b_std: the kernel.
      batch_size: users per metric batch.

    Returns:
      ``(best_lam, best_value, search)`` (:class:`models.tuning.GridSearch`).

    Source: dissertation §3.6.1 (λ re-selected on the fly at each validation cycle).
    """
    check_array(summary, "summary", ndim=2, kind="numeric", finite=True)
    check_array(train, "train", ndim=2, kind="numeric", shape=(None, summary.shape[1]))
    check_array(val, "val", ndim=2, kind="numeric", shape=tuple(train.shape))
    tuning.parse_metric(metric)
    dtype = jnp.result_type(float)
    s = jnp.asarray(summary, dtype)
    q = jnp.asarray(train, dtype)
    path = infinite_ae.spectral_path(s, q, depth=depth, w_std=w_std, b_std=b_std)
    search = tuning.select_lambda(
        lambda lam: infinite_ae.spectral_scores(path, lam),
        lams,
        jnp.asarray(val),
        q,
        metric=metric,
        batch_size=batch_size,
    )
    return float(search.best_lam), float(max(search.values)), search


# --------------------------------------------------------------------------------------
# The distillation run
# --------------------------------------------------------------------------------------


def _lam_at(schedule: dict[str, float], step: int) -> float:
    """The λ in force at ``step``: the one selected at the latest validation ≤ ``step``
    (keys are update counts as strings: the schedule is checkpointed as JSON)."""
    return schedule[str(max(int(s) for s in schedule if int(s) <= step))]


#: Settings that may change between a run and its resumption (extending it, stopping
#: it differently, resuming on another device count); everything else must match.
_RESUMABLE = ("steps", "patience", "n_devices")


#: Where every default of :func:`distill` comes from: the tuning runs at the 10 % budget
#: of MovieLens latest-small (``benchmarks/results/distill_cf_10pct_tuning``, test nDCG@10
#: of ∞-AE on the summary; random users 18.59) and the tuned Fig. 3.4 curve
#: (``benchmarks/results/distill_cf_ml-latest-small_tuned.json``).
DEFAULTS: dict[str, Any] = {
    "n_samples": 200,  # γ: 200 vs 100 at τ 10, η 0.04, 400 steps: 24.11 vs 23.96 (run_d, run_c)
    "tau": 10.0,  # τ: best of {1, 5, 10, 20} (run_a 21.84, run_i 24.05, run_g 24.59, run_e 23.21)
    "lam2": 0.0,  # λ₂: 0 vs 0.083 = 10/(avg. # interactions per user): 24.11 vs 24.10 (run_d, run_f)
    "learning_rate": 0.1,  # η: best of {0.04, 0.1, 0.2} (run_d 24.11, run_g 24.59, run_h 24.14)
    "init_scale": 10.0,  # Γ = 10·X, real rows well above the Gumbel noise: every tuning run
    "steps": 200,  # ξ: best validated step 150–300 in the tuned runs (run_g–i, tuned curve)
    "eval_every": 50,  # validation every 50 steps: run_g–i and the tuned curve
    "patience": 4,  # 4 validations (200 steps) without gain: the tuned curve's 1–5 % runs
}


def _check_distill_args(train, val, n_users, steps, lam2, learning_rate, batch_size, lams, checkpoint_dir):
    check_array(train, "train", ndim=2, kind="numeric", finite=True)
    check_array(val, "val", ndim=2, kind="numeric", shape=tuple(train.shape), finite=True)
    check_binary(train, "train")
    check_binary(val, "val")
    if is_concrete(val) and not bool(np.any((np.asarray(val) != 0) & (np.asarray(train) == 0))):
        # Validation drives λ and early stopping; without held-out items every value is 0.
        raise ValueError("val: expected at least one user with a validation item outside train, got none")
    n = train.shape[0]
    n_users = check_int(n_users, "n_users", min_value=1, max_value=n)
    steps = check_int(steps, "steps", min_value=0)
    lam2 = check_float(lam2, "lam2", min_value=0.0)
    learning_rate = check_float(learning_rate, "learning_rate", min_value=0.0, strict_min=True)
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", min_value=1, max_value=n)
    lams = tuple(lams)
    if len(lams) == 0:
        raise ValueError("lams: expected at least one λ, got an empty grid")
    lams = tuple(check_float(lam, "lams", min_value=0.0) for lam in lams)
    checkpoint_dir = None if checkpoint_dir is None else check_path(checkpoint_dir, "checkpoint_dir")
    return n_users, steps, lam2, learning_rate, batch_size, lams, checkpoint_dir


def _run_settings(key: jax.Array, mesh: Mesh | None, **settings: Any) -> dict[str, Any]:
    """The JSON-able record of a run: every setting, the key's raw words, the device count."""
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}
    out["key_data"] = loop.key_signature(key)
    out["n_devices"] = 1 if mesh is None else int(mesh.size)
    return out


def distill(
    train: Any,
    val: Any,
    *,
    n_users: int,
    key: jax.Array,
    n_samples: int = DEFAULTS["n_samples"],
    tau: float = DEFAULTS["tau"],
    lam2: float = DEFAULTS["lam2"],
    learning_rate: float = DEFAULTS["learning_rate"],
    steps: int = DEFAULTS["steps"],
    batch_size: int | None = None,
    init_scale: float = DEFAULTS["init_scale"],
    lams: Sequence[float] = DEFAULT_LAMS,
    metric: str = "nDCG@10",
    eval_every: int = DEFAULTS["eval_every"],
    patience: int | None = DEFAULTS["patience"],
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 100,
    depth: int = 1,
    w_std: float = 2**0.5,
    b_std: float = 0.1,
    mesh: Mesh | None = None,
    custom_vjp: bool = True,
    noise: str = "hash",
    progress: bool = False,
) -> DistillCFResult:
    """Synthesize a μ-user data summary with Distill-CF (Algorithm 5).

    Γ starts from ``init_scale ·`` the training rows of μ random real users; each step
    materialises the summary with fresh Gumbel noise (``fold_in(key, step)``), fits
    ∞-AE on it, scores a batch of real users and takes an Adam step on
    :func:`objective`. Every ``eval_every`` steps (and after the last) the summary
    (fixed evaluation key) is validated by :func:`select_lambda`, which also re-selects
    the inner λ; the best validated Γ is returned, ``patience`` validations without
    improvement stop the run. With ``checkpoint_dir``, orbax checkpoints are written
    every ``checkpoint_every`` steps and a rerun with the same arguments resumes from
    the newest one with the same final result as an uninterrupted run (use
    ``checkpoint_every`` a multiple of ``eval_every`` so every checkpoint sits on a
    validation).

    The defaults are the setting tuned on MovieLens latest-small (:data:`DEFAULTS`;
    ``run_*`` are ``benchmarks/results/distill_cf_10pct_tuning/run_*.json``). With
    them, 34 synthetic users (5 % of 671) reach a test nDCG@10 of ~1.5× that of 34
    random real users after 200 steps, and already beat them after 30.

    Args:
      train: ``(n, I)`` binary training matrix of the real users.
      val: ``(n, I)`` binary validation items of the same users.
      n_users: μ, synthetic users (1 ≤ μ ≤ n).
      key: PRNG key (initial users, batches, Gumbel noise, evaluation noise).
      n_samples: γ, Gumbel samples per synthetic user. 200: better than 100 at the
        10 % budget (run_d vs run_c).
      tau: Gumbel-softmax temperature τ. 10: best of {1, 5, 10, 20} at the 10 %
        budget (run_a, run_i, run_g, run_e).
      lam2: λ₂, weight of the L1 penalty (mean per synthetic user). 0: λ₂ = 0.083
        (10 / avg. # interactions per user, Table 3.2's grid) changed nothing (run_f).
      learning_rate: Adam step size η. 0.1: best of {0.04, 0.1, 0.2} at the 10 %
        budget (run_d, run_g, run_h).
      steps: ξ, outer-loop updates. 200: the best validated step was 150–300 in
        the tuned runs (run_g–i; the tuned Fig. 3.4 curve), and 200 keeps a default
        run at the 5 % budget to minutes on a CPU.
      batch_size: real users per step (``None``: all, as in the reference defaults).
      init_scale: Γ = ``init_scale`` · real rows (see ``gumbel_multisample``). 10: the
        setting of every tuning run; it puts the sampled users' items 10× above the
        unit-scale Gumbel noise, so the first summaries resemble those users (the
        former defaults, 1 with τ 1, γ 50, η 0.04, were far below random users after
        30 steps).
      lams: inner-λ grid re-evaluated at each validation.
      metric: validation metric for λ and early stopping (``'nDCG@10'``).
      eval_every: steps between validations. 50: the spacing of the tuned runs
        (run_g–i, the tuned curve).
      patience: validations without improvement before stopping (``None``: never).
        4 (200 steps without gain): the tuned curve's 1–5 % runs.
      checkpoint_dir, checkpoint_every: orbax checkpoints / resume (see above).
      depth, w_std, b_std: ∞-AE's kernel.
      mesh: shard real users of each batch, and the Gumbel sampling of the synthetic
        users' rows, over this mesh.
      custom_vjp: use the memory-constant Gumbel VJP (``False``: naive autodiff).
      noise: Gumbel noise generator (``'hash'`` or ``'threefry'``).
      progress: tqdm bar.

    Returns:
      :class:`DistillCFResult`; its ``settings`` record every argument above that
      shapes the result (and the key's raw words), JSON-able.

    Source: dissertation Ch. 3, §3.4.3, Eq. 3.4, Algorithm 5; §3.6.1 (λ on the fly).
    """
    check_key(key)
    n_users, steps, lam2, learning_rate, batch_size, lams, checkpoint_dir = _check_distill_args(
        train, val, n_users, steps, lam2, learning_rate, batch_size, lams, checkpoint_dir
    )
    n, n_items = train.shape
    par = parametrize.gumbel_multisample(
        n_users, n_items, n_samples=n_samples, tau=tau, init_scale=init_scale, custom_vjp=custom_vjp,
        noise=noise, mesh=mesh,
    )
    settings = _run_settings(
        key, mesh, n_users=n_users, n_samples=n_samples, tau=float(tau), lam2=lam2,
        learning_rate=learning_rate, steps=steps, batch_size=batch_size, init_scale=float(init_scale),
        lams=lams, metric=metric, eval_every=eval_every, patience=patience, depth=depth,
        w_std=float(w_std), b_std=float(b_std), noise=noise, custom_vjp=bool(custom_vjp),
        n_real_users=n, n_items=n_items,
    )
    dtype = jnp.result_type(float)
    train_d = jnp.asarray(train, dtype)
    k_init, k_batch, k_steps, k_eval = jax.random.split(key, 4)
    users0 = jax.random.choice(k_init, n, (n_users,), replace=False)
    logits0 = par.init(k_init, train_d[users0])

    select = functools.partial(
        select_lambda, train=train_d, val=jnp.asarray(val, dtype), lams=lams, metric=metric,
        depth=depth, w_std=w_std, b_std=b_std,
    )
    materialize_eval = jax.jit(lambda g: par.materialize(g, k_eval))

    # The λ schedule {update count: λ}: entry 0 from the initial summary, then one per
    # validation. loop.run checkpoints it with the parameters and, on resume, refills
    # it in place with the schedule the checkpointed run had.
    schedule = {"0": select(materialize_eval(logits0))[0]}

    def batches(t: int) -> Batch:
        if batch_size is None or batch_size == n:
            rows = train_d
        else:
            idx = jax.random.choice(jax.random.fold_in(k_batch, t), n, (batch_size,), replace=False)
            rows = train_d[idx]
        return Batch(rows, jnp.asarray(_lam_at(schedule, t), dtype))

    def evaluate(logits, step: int) -> float:
        best_lam, best_value, _ = select(materialize_eval(logits))
        schedule[str(step)] = best_lam
        return best_value

    obj = functools.partial(
        objective, parametrization=par, lam2=lam2, depth=depth, w_std=w_std, b_std=b_std, mesh=mesh
    )
    fingerprint = {k: v for k, v in settings.items() if k not in _RESUMABLE}
    fingerprint.update(train=loop.array_signature(train), val=loop.array_signature(val))
    logits, history = loop.run(
        obj, logits0, optax.adam(learning_rate), batches, steps=steps, key=k_steps,
        evaluate=evaluate, eval_every=eval_every, patience=patience, maximize=True,
        checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, progress=progress,
        fingerprint=fingerprint, state=schedule,
    )
    summary = materialize_eval(logits)
    if history.best_step >= 0:
        lam, value = schedule[str(history.best_step)], history.best_value
    else:  # steps == 0: nothing was validated
        lam, value, _ = select(summary)
    lams_by_step = {int(k): v for k, v in schedule.items()}
    return DistillCFResult(logits, summary, float(lam), float(value), history, lams_by_step, settings)


# --------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------


def sample_binary(logits: jax.Array, key: jax.Array, *, n_samples: int) -> jax.Array:
    """A discrete summary: the union of γ categorical draws per row from ``softmax(Γ)``.

    The τ → 0 limit of the Gumbel-softmax summary (Gumbel-max: ``argmax(Γ + g_s)``),
    i.e. "sample X̂ˢ ∼ Xˢ to get the final, discrete support set" (§3.4.3).

    Args:
      logits: ``(μ, I)`` Γ.  key: PRNG key.  n_samples: γ ≥ 1.

    Returns:
      ``(μ, I)`` float 0/1 matrix with between 1 and γ ones per row.
    """
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
    if not isinstance(source, DistillCFResult):
        if n_samples is None or tau is None:
            raise TypeError("export_summary: n_samples and tau are required with raw logits")
        return source, None, n_samples, tau, noise or "hash", dict(settings or {})
    run = dict(source.settings)
    given = {"n_samples": n_samples, "tau": tau, "noise": noise}
    for name, value in given.items():
        if value is not None and name in run and value != run[name]:
            raise ValueError(f"{name}: the result was distilled with {run[name]!r}, got {value!r}")
    meta = {**run, "lam": source.lam, "val_value": source.val_value,
            "best_step": source.history.best_step, **dict(settings or {})}
    return (source.logits, source.summary, run.get("n_samples", n_samples), run.get("tau", tau),
            run.get("noise", noise or "hash"), meta)


def export_summary(
    path: str | os.PathLike,
    source: DistillCFResult | Any,
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
    :class:`DistillCFResult` with everything taken from it (γ, τ, noise, the selected
    λ, its validation value and every other setting); ``export_summary(path, logits,
    n_samples=γ, tau=τ, ...)`` writes a bare Γ.

    Arrays written: ``logits`` Γ ``(μ, I)``; ``probs`` = row-wise ``softmax(Γ)`` (the
    continuous sampling prior); ``summary`` = the hard-tanh Gumbel summary of Eq. 3.4
    (what ∞-AE is fitted on during distillation: for a result, exactly the validated
    ``result.summary``; for bare Γ, materialised at ``key``); ``binary`` = a sampled
    0/1 summary (:func:`sample_binary`); ``item_ids`` ``(I,)`` = the original item id
    of every column. The JSON holds ``{"method": "distill_cf", "n_users", "n_items",
    "n_samples", "tau", "noise", ...run settings, "lam", "val_value", ...settings}``.

    Args:
      path: destination without extension (``<path>.npz`` + ``<path>.json``).
      source: a :class:`DistillCFResult`, or ``(μ, I)`` learned Γ.
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
        "binary": np.asarray(sample_binary(logits, k_bin, n_samples=n_samples)),
        "item_ids": np.asarray(item_ids),
    }
    header = {"method": "distill_cf", "n_users": mu, "n_items": n_items, "n_samples": n_samples,
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
