"""The one loop that trains *models* (students, experts, Ω, MF/BPR, DATA-GENIE's Φ, ...).

:func:`distill.loop.run` optimises *synthetic data* (checkpointed, fingerprinted,
resumable); this module optimises a model's parameters on data. The two are the only
places the library applies optax updates.

Three layers, from pure to driven:

* :func:`update` — one optax step ``θ ← θ + opt(∇_θ loss(θ, batch, key))``; pure,
  jittable, vmappable (e.g. over seeds).
* :func:`scan` — ``S`` steps over a stacked batch pytree with :func:`jax.lax.scan`;
  pure, so a vmap over it trains several models in one program (MTT's experts).
* :func:`train_model` — the Python driver: a jitted step per update, a batch function
  of the step, periodic evaluation with early stopping and best-parameter selection,
  snapshots of the parameters (trajectories), a per-step callback and progress. Its
  record is the same :class:`distill.loop.History` as the distillation loop's.

``loss(params, batch, key) -> scalar`` is the one loss signature, shared with
:func:`distill.loop.run`'s objective; ``key`` is ``fold_in(key, step)`` at step
``step`` (dropout, sampled negatives), so a run is a deterministic function of its key.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from distill import loop
from distill.loop import History  # the one history type, shared with the outer loop
from distill.checks import check_int, check_key

__all__ = ["History", "TrainState", "Trained", "init", "update", "scan", "scan_epochs", "train_model", "epoch_batches",
           "history_of"]

tree_map = jax.tree_util.tree_map

Loss = Callable[[Any, Any, jax.Array], jax.Array]


class TrainState(NamedTuple):
    """Parameters and optimiser state of a model being trained."""

    params: Any
    opt_state: Any


class Trained(NamedTuple):
    """What :func:`train_model` returns.

    Attributes:
      params: the trained parameters (the best evaluated ones when ``evaluate`` is given
        and ``keep_best``; else the last).
      history: :class:`distill.loop.History` (losses every step, evaluations, best step).
      snapshots: the parameters every ``snapshot_every`` updates from step 0, stacked
        along a new leading axis (``None`` without ``snapshot_every``).
      last_params: the parameters after the last update (equal to ``params`` without
        evaluation).
    """

    params: Any
    history: History
    snapshots: Any
    last_params: Any


def init(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
    """``TrainState(params, optimizer.init(params))``."""
    return TrainState(params, optimizer.init(params))


def update(
    state: TrainState, batch: Any, key: jax.Array, *, loss: Loss, optimizer: optax.GradientTransformation
) -> tuple[TrainState, jax.Array]:
    """One optax step on ``loss(params, batch, key)``; returns the new state and the loss
    value before the step. Pure: jit it, vmap it, or scan it (:func:`scan`)."""
    value, grads = jax.value_and_grad(loss)(state.params, batch, key)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state), value


def scan(
    state: TrainState, batches: Any, key: jax.Array, *, loss: Loss, optimizer: optax.GradientTransformation,
    start: int | jax.Array = 0,
) -> tuple[TrainState, jax.Array]:
    """``S`` updates over ``batches`` (a pytree whose leaves have a leading axis ``S``),
    step ``start + s`` keyed by ``fold_in(key, start + s)``. Returns the final state and
    the ``(S,)`` losses. Pure and vmappable."""
    n = jax.tree_util.tree_leaves(batches)[0].shape[0]

    def body(st, xs):
        batch, s = xs
        return update(st, batch, jax.random.fold_in(key, s), loss=loss, optimizer=optimizer)

    return jax.lax.scan(body, state, (batches, start + jnp.arange(n)))


def scan_epochs(
    state: TrainState, key: jax.Array, batches_of: Callable[[jax.Array], Any], *, epochs: int, loss: Loss,
    optimizer: optax.GradientTransformation,
) -> tuple[TrainState, jax.Array]:
    """``epochs`` passes, each :func:`scan` over the stacked batches ``batches_of(k_batches)``
    of that epoch (a fresh shuffle / negative draw): epoch ``e`` splits ``split(key, epochs)[e]``
    into ``(k_batches, k_steps)``. Returns the final state and the ``(epochs · S,)`` losses.
    Pure: the whole run is one program under ``jit``."""

    def epoch(st, k):
        k_batches, k_steps = jax.random.split(k)
        return scan(st, batches_of(k_batches), k_steps, loss=loss, optimizer=optimizer)

    state, losses = jax.lax.scan(epoch, state, jax.random.split(key, epochs))
    return state, losses.reshape(-1)


def history_of(losses: Any, evals: Any = ()) -> History:
    """:class:`History` of a run without early stopping: every step's loss and its
    ``(step, value)`` evaluations, the best being the largest (``-1``/NaN without any)."""
    values = [float(v) for v in np.asarray(losses)]
    evals = list(evals)
    best = max(evals, key=lambda e: e[1]) if evals else (-1, float("nan"))
    return History(steps=list(range(len(values))), losses=values, eval_steps=[s for s, _ in evals],
                   eval_values=[v for _, v in evals], best_step=best[0], best_value=best[1], stopped_early=False)


def epoch_batches(key: jax.Array, n: int, batch_size: int, *, drop_last: bool = True) -> Callable[[int], jax.Array]:
    """``indices(step) -> (batch_size,)`` row indices: a fresh permutation of ``n`` rows
    per epoch (``fold_in(key, epoch)``), consumed ``batch_size`` at a time; the partial
    last batch of an epoch is dropped (``drop_last``) or wraps into the same epoch's
    first rows. Deterministic in ``step``, so a resumed or replayed run sees the same
    batches."""
    n = check_int(n, "n", min_value=1)
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    b = min(batch_size, n)
    per_epoch = max(n // b, 1) if drop_last else math.ceil(n / b)

    def indices(step: int) -> jax.Array:
        epoch, i = divmod(int(step), per_epoch)
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))
        return jnp.asarray(np.take(perm, np.arange(i * b, i * b + b), mode="wrap"))

    return indices


def _evaluation_due(step: int, steps: int, eval_every: int | None) -> bool:
    return step == steps or (eval_every is not None and step % eval_every == 0)


def _better(value: float, best: float, maximize: bool) -> bool:
    if math.isnan(value):
        return False
    return math.isnan(best) or (value > best if maximize else value < best)


def train_model(
    key: jax.Array,
    params: Any,
    loss: Loss,
    batches: Callable[[int], Any] | Any,
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
    evaluate: Callable[[Any], float] | None = None,
    eval_every: int | None = None,
    patience: int | None = None,
    maximize: bool = True,
    keep_best: bool = True,
    snapshot_every: int | None = None,
    callback: Callable[[Any, int], None] | None = None,
    progress: bool = False,
    desc: str = "train",
) -> Trained:
    """Train ``params`` for ``steps`` optax updates of ``loss``.

    Args:
      key: PRNG key; update ``t`` (0-based) uses ``fold_in(key, t)``.
      params: initial model parameters (any pytree of float arrays).
      loss: ``loss(params, batch, key) -> scalar``.
      batches: ``batches(step) -> batch`` (deterministic in ``step``, e.g. via
        :func:`epoch_batches`) or one fixed batch pytree used at every step.
      optimizer: an optax ``GradientTransformation``.
      steps: number of updates (≥ 0).
      evaluate: ``evaluate(params) -> float``, run every ``eval_every`` updates and after
        the last; NaN is never the best value.
      eval_every: updates between evaluations (``None``: only after the last update).
      patience: stop after this many evaluations without improvement (``None``: never).
      maximize: whether larger evaluation values are better.
      keep_best: return the best evaluated parameters (else the last).
      snapshot_every: also return the parameters at every multiple of this many updates,
        step 0 included, stacked (a training trajectory, e.g. MTT's experts, Farzi's Ω).
      callback: ``callback(params, step)`` after every update (``step`` = updates done),
        e.g. to record training dynamics.
      progress: show progress (:func:`distill.loop.progress_bar`).
      desc: the progress line's label.

    Returns:
      :class:`Trained`.
    """
    check_key(key)
    steps = check_int(steps, "steps", min_value=0)
    for value, name in ((eval_every, "eval_every"), (snapshot_every, "snapshot_every"), (patience, "patience")):
        if value is not None:
            check_int(value, name, min_value=1)
    batch_at = batches if callable(batches) else (lambda _t: batches)
    step_fn = jax.jit(lambda st, b, k: update(st, b, k, loss=loss, optimizer=optimizer))
    ticks = loop.progress_bar(range(steps), total=steps, desc=desc) if progress else range(steps)
    run = _Run(init(params, optimizer), [], [], [], params, float("nan"), 0, False)
    for t in ticks:
        if snapshot_every is not None and t % snapshot_every == 0:
            run.snaps.append(run.state.params)
        run.state, value = step_fn(run.state, batch_at(t), jax.random.fold_in(key, t))
        run.losses.append(value)
        if callback is not None:
            callback(run.state.params, t + 1)
        if evaluate is not None and _evaluation_due(t + 1, steps, eval_every):
            _record(run, t + 1, float(evaluate(run.state.params)), maximize, patience)
            if run.stopped:
                break
    if snapshot_every is not None and steps % snapshot_every == 0 and not run.stopped:
        run.snaps.append(run.state.params)
    if evaluate is not None and steps == 0:
        _record(run, 0, float(evaluate(params)), maximize, None)
    return _finish(run, keep_best=evaluate is not None and keep_best)


@dataclasses.dataclass
class _Run:
    """The bookkeeping of one :func:`train_model` call (private, mutated by its loop)."""

    state: TrainState
    losses: list
    snaps: list
    evals: list
    best: Any
    best_value: float
    stale: int
    stopped: bool


def _record(run: _Run, step: int, score: float, maximize: bool, patience: int | None) -> None:
    run.evals.append((step, score))
    if _better(score, run.best_value, maximize):
        run.best, run.best_value, run.stale = run.state.params if step else run.best, score, 0
    else:
        run.stale += 1
    run.stopped = patience is not None and run.stale >= patience


def _finish(run: _Run, keep_best: bool) -> Trained:
    best_step = next((s for s, v in run.evals if v == run.best_value), -1)
    history = History(
        steps=list(range(len(run.losses))), losses=[float(v) for v in jax.device_get(run.losses)],
        eval_steps=[s for s, _ in run.evals], eval_values=[v for _, v in run.evals],
        best_step=best_step, best_value=run.best_value, stopped_early=run.stopped,
    )
    out = run.best if (keep_best and best_step >= 0) else run.state.params
    stacked = tree_map(lambda *a: jnp.stack(a), *run.snaps) if run.snaps else None
    return Trained(out, history, stacked, run.state.params)
