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

from distill.checks import check_array, check_choice, check_float, check_int, check_key, check_same_leading
from selection import scores
from selection.coresets import facility_location, pairwise_distances

__all__ = [
    "MinibatchCoresets",
    "minibatch_coresets",
    "make_weighted_step",
    "quadratic_model_error",
    "TrainHistory",
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


def make_weighted_step(apply: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """A jitted optax step on the weighted cross-entropy ``Σ_i w_i ℓ_i`` (``w`` sums to 1 for a mean).

    Returns:
      ``step(params, opt_state, x (m, ...), y (m,), w (m,)) -> (params, opt_state, loss)``.
    """
    if not callable(apply):
        raise TypeError(f"apply: expected a callable, got {type(apply).__name__}")
    # a module-level jit keyed on (apply, optimizer): repeated runs with the same model and
    # optimizer objects reuse the compiled step instead of tracing a fresh closure
    return functools.partial(_weighted_step, apply, optimizer)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _weighted_step(apply, optimizer, params, opt_state, x, y, w):
    loss, g = jax.value_and_grad(functools.partial(_weighted_ce, apply))(params, x, y, w)
    upd, opt_state = optimizer.update(g, opt_state, params)
    return optax.apply_updates(params, upd), opt_state, loss


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


class TrainHistory(NamedTuple):
    """What :func:`train_on_coresets` logged.

    Attributes:
      eval_steps: steps at which ``eval_fn`` ran.  eval_values: its values.
      eval_times: training wall time (s, selection included, evaluation excluded) there.
      selection_steps: steps at which coresets were (re)selected.
      losses: ``(steps,)`` weighted mini-batch training losses.
      selection_time: total seconds spent selecting.
    """

    eval_steps: list
    eval_values: list
    eval_times: list
    selection_steps: list
    losses: np.ndarray
    selection_time: float


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
) -> tuple[Any, TrainHistory]:
    """Optax training on weighted mini-batch coresets, re-selected by a rule (CREST / SSM loop).

    At every selection, :func:`minibatch_coresets` picks ``n_subsets`` coresets using
    ``features_fn(params, indices)``; each step trains on one of them, drawn uniformly.
    Re-selection happens when the quadratic model of the loss on the union of the
    coresets, anchored at the selection point, has relative error ``> tau``
    (:func:`quadratic_model_error`, checked every ``check_every`` steps — CREST), or every
    ``reselect_every`` steps (SSM: 1), or when both rules are off, never.

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
      ``(params, TrainHistory)``.
    """
    check_key(key)
    if not callable(apply):
        raise TypeError(f"apply: expected a callable, got {type(apply).__name__}")
    check_array(x, "x", kind="numeric", finite=True)
    check_array(y, "y", ndim=1, kind="int")
    check_same_leading([("x", x), ("y", y)])
    steps = check_int(steps, "steps", min_value=1)
    check_every = check_int(check_every, "check_every", min_value=1)
    eval_every = check_int(eval_every, "eval_every", min_value=1)
    if tau is not None:
        tau = check_float(tau, "tau", min_value=0.0, strict_min=True)
    if reselect_every is not None:
        reselect_every = check_int(reselect_every, "reselect_every", min_value=1)
    n = x.shape[0]
    batch_size = check_int(batch_size, "batch_size", min_value=1, max_value=n)
    subset_size = check_int(subset_size, "subset_size", min_value=batch_size, max_value=n)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    step_fn = make_weighted_step(apply, optimizer)
    opt_state = optimizer.init(params)
    hist = TrainHistory([], [], [], [], np.zeros(steps, np.float32), 0.0)
    sel_time, train_time = 0.0, 0.0
    cs, anchor, union = None, None, None
    for t in range(steps):
        t0 = time.perf_counter()
        key, k_sel, k_pick = jax.random.split(key, 3)
        need = cs is None
        if not need and reselect_every is not None and t % reselect_every == 0:
            need = True
        if not need and tau is not None and t % check_every == 0:
            need = float(quadratic_model_error(apply, anchor, params, *union)) > tau
        if need:
            s0 = time.perf_counter()
            cs = minibatch_coresets(
                k_sel, functools.partial(features_fn, params), n,
                batch_size=batch_size, subset_size=subset_size, n_subsets=n_subsets,
            )
            anchor = params
            flat_idx = cs.indices.reshape(-1)
            union = (xj[flat_idx], yj[flat_idx], jnp.asarray(cs.weights.reshape(-1) / cs.indices.shape[0]))
            hist.selection_steps.append(t)
            sel_time += time.perf_counter() - s0
        j = int(jax.random.randint(k_pick, (), 0, cs.indices.shape[0]))
        idx = cs.indices[j]
        params, opt_state, loss = step_fn(params, opt_state, xj[idx], yj[idx], jnp.asarray(cs.weights[j]))
        hist.losses[t] = float(loss)  # also a sync point, so train_time is honest
        train_time += time.perf_counter() - t0
        if eval_fn is not None and ((t + 1) % eval_every == 0 or t + 1 == steps):
            hist.eval_steps.append(t + 1)
            hist.eval_values.append(float(eval_fn(params)))
            hist.eval_times.append(train_time)
    return params, hist._replace(selection_time=sel_time)


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
) -> tuple[Any, TrainHistory]:
    """Train with CREST: mini-batch coresets on last-layer gradients, re-selected when the
    quadratic loss model's relative error exceeds ``tau`` (see the module docstring).

    Arguments as in :func:`train_on_coresets`; the features are
    :func:`selection.scores.output_gradients` under the current parameters.

    Returns:
      ``(params, TrainHistory)``.
    """
    check_key(key)
    return train_on_coresets(
        key, apply, params, optimizer, x, y,
        features_fn=last_layer_features(apply, x, y), steps=steps, batch_size=batch_size,
        subset_size=subset_size, n_subsets=n_subsets, tau=tau, check_every=check_every,
        eval_fn=eval_fn, eval_every=eval_every,
    )

