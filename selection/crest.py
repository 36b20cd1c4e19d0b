"""CREST: mini-batch coresets for training deep networks (Yang, Xie, Mirzasoleiman — ICML 2023).

Tutorial 003 ("CREST: Coresets for Data-efficient Deep Learning"): a non-convex loss is
modelled as *piece-wise quadratic*; inside one quadratic region

    F(δ) = L(w) + g_Sᵀ δ + ½ δᵀ H_S δ                         (second-order Taylor model)

a set of mini-batch coresets is selected and trained on until the model stops being
valid, i.e. until the relative error

    |F(δ) − L(w + δ)| / L(w + δ) > τ,

when the coresets are selected again at the new point. Mini-batch coresets of size
``m`` are chosen from ``n_subsets`` *random* subsets of size ``r`` by facility location on
last-layer gradients (CRAIG's per-example proxy ``softmax − onehot``), each medoid
weighted by the size of its cluster, so a weighted mini-batch gradient is a
nearly-unbiased, low-variance estimate of the gradient of ``r`` random examples
(convergence ``r/m`` times faster than random mini-batches of size ``m``).

Here ``H_S δ`` is an exact Hessian–vector product (``jax.jvp`` of ``jax.grad``) on the
union of the current mini-batch coresets (the paper uses a Hessian-diagonal estimate;
the exact product is affordable for the small models this library trains). The paper's
extra step of dropping already-learned examples is not implemented.

:func:`train_on_coresets` is the loop shared with SSM (:mod:`selection.ssm`), which only
swaps the per-example features and re-selects every step.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from distill import train
from distill.checks import check_array, check_choice, check_float, check_int, check_key, check_same_leading
from selection import scores
from selection.coresets import facility_location, pairwise_distances

__all__ = [
    "MinibatchCoresets",
    "minibatch_coresets",
    "WeightedCE",
    "make_weighted_step",
    "quadratic_model_error",
    "CoresetTraining",
    "train_on_coresets",
    "crest_train",
    "last_layer_features",
]


class MinibatchCoresets(NamedTuple):
    """``indices (s, m)`` into the dataset and ``weights (s, m)``; each row's weights sum to 1."""

    indices: np.ndarray
    weights: np.ndarray


def minibatch_coresets(
    key: jax.Array,
    features_fn: Callable[[np.ndarray], Any],
    n: int,
    *,
    batch_size: int,
    subset_size: int,
    n_subsets: int = 1,
    method: str = "lazy",
) -> MinibatchCoresets:
    """Select ``n_subsets`` weighted mini-batch coresets of size ``m`` from random subsets of size ``r``.

    For each of ``n_subsets`` uniformly random subsets ``V`` (``|V| = r``, without
    replacement), facility location on ``sim_ij = max d − d_ij`` with ``d_ij = ‖f_i − f_j‖``
    picks ``m`` medoids ``S`` (:func:`selection.coresets.facility_location`); medoid ``j``
    gets weight ``γ_j = |{i ∈ V : j = argmax_{s∈S} sim_is}| / r`` so that
    ``Σ_{j∈S} γ_j ∇ℓ_j ≈ (1/r) Σ_{i∈V} ∇ℓ_i``.

    Args:
      key: PRNG key (random subsets).
      features_fn: ``features_fn(indices (r,)) -> (r, d)`` per-example gradient proxies.
      n: dataset size.  batch_size: ``m``.  subset_size: ``r`` (``m <= r <= n``).
      n_subsets: number of coresets (>= 1).
      method: facility-location greedy (``'lazy'``, ``'naive'`` or ``'stochastic'``).

    Returns:
      :class:`MinibatchCoresets` with ``(n_subsets, m)`` arrays.
    """
    check_key(key)
    if not callable(features_fn):
        raise TypeError(f"features_fn: expected a callable, got {type(features_fn).__name__}")
    n = check_int(n, "n", min_value=1)
    m = check_int(batch_size, "batch_size", min_value=1, max_value=n)
    r = check_int(subset_size, "subset_size", min_value=m, max_value=n)
    n_subsets = check_int(n_subsets, "n_subsets", min_value=1)
    check_choice(method, "method", ("naive", "lazy", "stochastic"))
    idx_out, w_out = [], []
    for k in jax.random.split(key, n_subsets):
        k1, k2 = jax.random.split(k)
        pool = np.asarray(jax.random.choice(k1, n, (r,), replace=False))
        f = jnp.asarray(features_fn(pool))
        if f.shape[0] != r:
            raise ValueError(f"features_fn: expected ({r}, d) features, got shape {tuple(f.shape)}")
        d = np.asarray(pairwise_distances(f.reshape(r, -1)))
        fl = facility_location((d.max() - d).astype(d.dtype), m, method=method, key=k2)
        idx_out.append(pool[fl.indices])
        w_out.append(np.bincount(fl.assignment, minlength=m) / r)
    return MinibatchCoresets(np.stack(idx_out), np.stack(w_out).astype(np.float32))


def _weighted_ce(apply, params, x, y, w):
    logp = jax.nn.log_softmax(apply(params, x), axis=-1)
    return -jnp.sum(w * jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0])


class WeightedCE(NamedTuple):
    """The weighted cross-entropy ``Σ_i w_i ℓ_i`` as a :func:`distill.train.update` loss,
    ``loss(params, (x, y, w), key)`` (``w`` sums to 1 for a mean; ``key`` unused).

    A hashable value (equal for the same ``apply``), so the jitted step of
    :func:`make_weighted_step` is compiled once per model and optimizer.
    """

    apply: Callable

    def __call__(self, params: Any, batch: Any, key: Any = None) -> jax.Array:
        x, y, w = batch
        return _weighted_ce(self.apply, params, x, y, w)


# module level, keyed on (loss, optimizer): repeated runs with the same model and optimizer
# objects reuse the compiled step (a compile inside a run would pollute its timings)
_update = jax.jit(train.update, static_argnames=("loss", "optimizer"))


def make_weighted_step(apply: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """One jitted :func:`distill.train.update` on the weighted cross-entropy (:class:`WeightedCE`).

    Returns:
      ``step(state: TrainState, (x (m, ...), y (m,), w (m,)), key) -> (state, loss)``.
    """
    if not callable(apply):
        raise TypeError(f"apply: expected a callable, got {type(apply).__name__}")
    return functools.partial(_update, loss=WeightedCE(apply), optimizer=optimizer)


def quadratic_model_error(apply: Callable, anchor: Any, params: Any, x: Any, y: Any, w: Any) -> jax.Array:
    """Relative error ``|F(δ) − L(w₀+δ)| / L(w₀+δ)`` of the quadratic model at ``anchor = w₀``.

    ``F(δ) = L(w₀) + ∇L(w₀)ᵀδ + ½ δᵀ∇²L(w₀)δ`` with ``δ = params − anchor`` and ``L`` the
    weighted cross-entropy ``Σ_i w_i ℓ_i`` on ``(x, y)`` (the union of the coresets).
    """
    if not callable(apply):
        raise TypeError(f"apply: expected a callable, got {type(apply).__name__}")
    return _quad_err(apply, anchor, params, jnp.asarray(x), jnp.asarray(y), jnp.asarray(w))


@functools.partial(jax.jit, static_argnames=("apply",))
def _quad_err(apply, anchor, params, x, y, w):
    f0, unravel = ravel_pytree(anchor)
    f1, _ = ravel_pytree(params)
    loss = lambda f: _weighted_ce(apply, unravel(f), x, y, w)
    delta = f1 - f0
    l0, g0 = jax.value_and_grad(loss)(f0)
    hd = jax.jvp(jax.grad(loss), (f0,), (delta,))[1]
    model = l0 + g0 @ delta + 0.5 * delta @ hd
    actual = loss(f1)
    return jnp.abs(model - actual) / jnp.maximum(actual, 1e-12)


class CoresetTraining(NamedTuple):
    """What :func:`train_on_coresets` (and :func:`crest_train`, :func:`selection.ssm.ssm_train`) return.

    Attributes:
      params: the parameters after the last step.
      history: :class:`distill.train.History` — the ``(steps,)`` weighted mini-batch
        training losses and the evaluations (``eval_fn``; best = largest).
      eval_times: training wall time (s, selection included, evaluation excluded) at
        each of ``history.eval_steps``.
      selection_steps: steps at which coresets were (re)selected.
      selection_time: total seconds spent selecting.
    """

    params: Any
    history: train.History
    eval_times: list
    selection_steps: list
    selection_time: float


class _Schedule:
    """The coreset state of one :func:`train_on_coresets` run: when to re-select, and the
    weighted mini-batch of each step."""

    def __init__(self, apply, x, y, features_fn, *, batch_size, subset_size, n_subsets, tau, reselect_every, check_every):
        self.apply, self.x, self.y, self.features_fn = apply, jnp.asarray(x), jnp.asarray(y), features_fn
        self.sizes = dict(batch_size=batch_size, subset_size=subset_size, n_subsets=n_subsets)
        self.tau, self.reselect_every, self.check_every = tau, reselect_every, check_every
        self.cs, self.anchor, self.union = None, None, None
        self.selection_steps, self.selection_time = [], 0.0

    def _due(self, t, params):
        if self.cs is None:
            return True
        if self.reselect_every is not None and t % self.reselect_every == 0:
            return True
        if self.tau is not None and t % self.check_every == 0:
            return float(quadratic_model_error(self.apply, self.anchor, params, *self.union)) > self.tau
        return False

    def batch(self, t, params, k_sel, k_pick):
        """Re-select if due, then draw one of the coresets: ``(x, y, w)`` of ``m`` rows."""
        if self._due(t, params):
            s0 = time.perf_counter()
            cs = minibatch_coresets(k_sel, functools.partial(self.features_fn, params), self.x.shape[0], **self.sizes)
            flat_idx = cs.indices.reshape(-1)
            w = jnp.asarray(cs.weights.reshape(-1) / cs.indices.shape[0])
            self.cs, self.anchor, self.union = cs, params, (self.x[flat_idx], self.y[flat_idx], w)
            self.selection_steps.append(t)
            self.selection_time += time.perf_counter() - s0
        j = int(jax.random.randint(k_pick, (), 0, self.cs.indices.shape[0]))
        idx = self.cs.indices[j]
        return self.x[idx], self.y[idx], jnp.asarray(self.cs.weights[j])


def train_on_coresets(
    key: jax.Array,
    apply: Callable,
    params: Any,
    optimizer: optax.GradientTransformation,
    x: Any,
    y: Any,
    *,
    features_fn: Callable[[Any, np.ndarray], Any],
    steps: int,
    batch_size: int,
    subset_size: int,
    n_subsets: int = 1,
    tau: float | None = None,
    reselect_every: int | None = None,
    check_every: int = 1,
    eval_fn: Callable[[Any], float] | None = None,
    eval_every: int = 50,
) -> CoresetTraining:
    """Training on weighted mini-batch coresets, re-selected by a rule (CREST / SSM loop).

    At every selection, :func:`minibatch_coresets` picks ``n_subsets`` coresets using
    ``features_fn(params, indices)``; each step trains on one of them, drawn uniformly
    (one :func:`distill.train.update` on :class:`WeightedCE`). Re-selection happens when
    the quadratic model of the loss on the union of the coresets, anchored at the
    selection point, has relative error ``> tau`` (:func:`quadratic_model_error`, checked
    every ``check_every`` steps — CREST), or every ``reselect_every`` steps (SSM: 1), or
    when both rules are off, never.

    Args:
      key: PRNG key.  apply: ``apply(params, x) -> logits``.  params: initial parameters.
      optimizer: optax transformation.  x: ``(n, ...)`` inputs.  y: int ``(n,)`` labels.
      features_fn: ``(params, indices) -> (r, d)`` per-example gradient proxies.
      steps: optimisation steps.  batch_size: ``m``.  subset_size: ``r``.
      n_subsets: coresets per selection.
      tau: CREST threshold (> 0) or ``None``.  reselect_every: fixed period or ``None``.
      check_every: steps between quadratic-model checks.
      eval_fn: optional ``params -> float`` (e.g. test accuracy), run every ``eval_every``
        steps and after the last.

    Returns:
      :class:`CoresetTraining`.
    """
    sizes = _check_coreset_args(key, apply, x, y, steps, batch_size, subset_size, n_subsets, tau, reselect_every, check_every, eval_every)
    sched = _Schedule(apply, x, y, features_fn, **sizes, tau=tau, reselect_every=reselect_every, check_every=check_every)
    step_fn = make_weighted_step(apply, optimizer)
    state, losses, evals, eval_times, train_time = train.init(params, optimizer), [], [], [], 0.0
    for t in range(steps):
        t0 = time.perf_counter()
        key, k_sel, k_pick = jax.random.split(key, 3)
        batch = sched.batch(t, state.params, k_sel, k_pick)
        state, loss = step_fn(state, batch, k_pick)
        losses.append(float(loss))  # also a sync point, so train_time is honest
        train_time += time.perf_counter() - t0
        if eval_fn is not None and ((t + 1) % eval_every == 0 or t + 1 == steps):
            evals.append((t + 1, float(eval_fn(state.params))))
            eval_times.append(train_time)
    history = train.history_of(losses, evals)
    return CoresetTraining(state.params, history, eval_times, sched.selection_steps, sched.selection_time)


def _check_coreset_args(key, apply, x, y, steps, batch_size, subset_size, n_subsets, tau, reselect_every, check_every, eval_every):
    check_key(key)
    if not callable(apply):
        raise TypeError(f"apply: expected a callable, got {type(apply).__name__}")
    check_array(x, "x", kind="numeric", finite=True)
    check_array(y, "y", ndim=1, kind="int")
    check_same_leading([("x", x), ("y", y)])
    check_int(steps, "steps", min_value=1)
    check_int(check_every, "check_every", min_value=1)
    check_int(eval_every, "eval_every", min_value=1)
    if tau is not None:
        check_float(tau, "tau", min_value=0.0, strict_min=True)
    if reselect_every is not None:
        check_int(reselect_every, "reselect_every", min_value=1)
    n = x.shape[0]
    batch_size = check_int(batch_size, "batch_size", min_value=1, max_value=n)
    subset_size = check_int(subset_size, "subset_size", min_value=batch_size, max_value=n)
    return dict(batch_size=batch_size, subset_size=subset_size, n_subsets=check_int(n_subsets, "n_subsets", min_value=1))


def last_layer_features(apply: Callable, x: Any, y: Any) -> Callable[[Any, np.ndarray], jax.Array]:
    """``features_fn(params, idx)`` = CRAIG's last-layer gradient proxies ``softmax − onehot`` of ``x[idx]``."""
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    return lambda params, idx: scores.output_gradients(apply, params, (xj[idx], yj[idx]))


def crest_train(
    key: jax.Array,
    apply: Callable,
    params: Any,
    optimizer: optax.GradientTransformation,
    x: Any,
    y: Any,
    *,
    steps: int,
    batch_size: int = 32,
    subset_size: int = 256,
    n_subsets: int = 8,
    tau: float = 0.05,
    check_every: int = 5,
    eval_fn: Callable[[Any], float] | None = None,
    eval_every: int = 50,
) -> CoresetTraining:
    """Train with CREST: mini-batch coresets on last-layer gradients, re-selected when the
    quadratic loss model's relative error exceeds ``tau`` (see the module docstring).

    Arguments as in :func:`train_on_coresets`; the features are
    :func:`selection.scores.output_gradients` under the current parameters.

    Returns:
      :class:`CoresetTraining`.
    """
    check_key(key)
    return train_on_coresets(
        key, apply, params, optimizer, x, y,
        features_fn=last_layer_features(apply, x, y), steps=steps, batch_size=batch_size,
        subset_size=subset_size, n_subsets=n_subsets, tau=tau, check_every=check_every,
        eval_fn=eval_fn, eval_every=eval_every,
    )

