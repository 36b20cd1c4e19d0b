"""SSM — Select Small Mini-batches from random subsets with zeroth-order gradient sketches.

Tutorial 003 ("Data-efficient Training: Preliminary results (SSM)"): mini-batch
coresets need per-example gradients, but even last-layer gradients are high
dimensional. SSM estimates them with **two forward passes per random direction**
(SPSA / MeZO-style zeroth order, restricted to the last layer)::

    g_z(θ) = [L(θ + εz) − L(θ − εz)] / (2ε) · z ≈ z zᵀ g(θ),       z ~ N(0, I_d)

and **sparsifies** the directions to the coordinates with the largest gradient
magnitude, ``ẑ = m ⊙ z`` with ``m ∈ {0,1}^d`` the top-``s`` coordinates of the
(zeroth-order) mini-batch gradient estimate. Example ``i`` is then represented by its
``P`` directional derivatives ``c_ip = [ℓ_i(θ + εẑ_p) − ℓ_i(θ − εẑ_p)] / (2ε)`` — a
random projection of its sparsified gradient, whose pairwise distances approximate
(Johnson–Lindenstrauss) those of the gradients. Mini-batches of size ``m`` are selected
from random subsets of size ``r`` by facility location on these sketches, every step
(:func:`selection.crest.train_on_coresets` with ``reselect_every=1``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from distill.checks import check_array, check_float, check_int, check_key, check_same_leading
from selection.crest import CoresetTraining, train_on_coresets

__all__ = ["layer_mask", "zeroth_order_features", "ssm_features", "ssm_train"]


def layer_mask(params: Any, layer: str | None = "head") -> jax.Array:
    """Boolean ``(p,)`` mask over ``ravel_pytree(params)`` marking the leaves under key ``layer``.

    ``None`` (or a ``layer`` absent from the top level of ``params``) marks every parameter.
    """
    if layer is None or not isinstance(params, dict) or layer not in params:
        return jnp.ones(ravel_pytree(params)[0].shape, bool)
    marked = {k: jax.tree_util.tree_map(lambda a, on=(k == layer): jnp.full(jnp.shape(a), on), v) for k, v in params.items()}
    return ravel_pytree(marked)[0].astype(bool)


def zeroth_order_features(
    key: jax.Array,
    apply: Callable,
    params: Any,
    x: Any,
    y: Any,
    *,
    n_directions: int = 32,
    eps: float = 1e-3,
    sparsity: int | None = 64,
    layer: str | None = "head",
) -> jax.Array:
    """Per-example zeroth-order gradient sketches ``c_ip = [ℓ_i(θ+εẑ_p) − ℓ_i(θ−εẑ_p)]/(2ε)``.

    Directions ``z_p ~ N(0, I)`` live on the parameters of ``layer``. With
    ``sparsity = s``, a first round of the same two-point estimates on the batch-mean loss
    gives ``ĝ = (1/P) Σ_p c̄_p z_p``; the mask keeps the ``s`` largest ``|ĝ|`` coordinates
    and the second round uses ``ẑ_p = m ⊙ z'_p``. Only forward passes are used.

    Args:
      key: PRNG key (directions).  apply: ``apply(params, x) -> logits``.
      params: model parameters.  x: ``(b, ...)`` inputs.  y: int ``(b,)`` labels.
      n_directions: ``P >= 1``.  eps: step ``ε > 0``.
      sparsity: coordinates kept (``None``: all of the layer).
      layer: top-level parameter key perturbed (``None``: all parameters).

    Returns:
      ``(b, P)`` sketches (``E[c_i c_iᵀ]``-geometry of the sparsified gradients).
    """
    check_key(key)
    if not callable(apply):
        raise TypeError(f"apply: expected a callable, got {type(apply).__name__}")
    check_array(x, "x", kind="numeric", finite=True)
    check_array(y, "y", ndim=1, kind="int")
    check_same_leading([("x", x), ("y", y)])
    n_directions = check_int(n_directions, "n_directions", min_value=1)
    eps = check_float(eps, "eps", min_value=0.0, strict_min=True)
    mask = layer_mask(params, layer)
    n_layer = int(jnp.sum(mask))
    s = n_layer if sparsity is None else check_int(sparsity, "sparsity", min_value=1)
    s = min(s, n_layer)
    # only the flat dtype is needed here: eval_shape reads it without copying the parameters
    dtype = jax.eval_shape(lambda q: ravel_pytree(q)[0], params).dtype
    z1, z2 = _directions(key, mask, n_directions, dtype)
    return _zo(apply, params, mask, z1, z2, jnp.asarray(x), jnp.asarray(y), eps, s)


@functools.partial(jax.jit, static_argnames=("p", "dtype"))
def _directions(key, mask, p, dtype):
    """The Gaussian directions of both rounds, ``(P, d)`` each, the first restricted to the layer.

    A program of their own: fused into the sketch, the inverse-error-function polynomial of
    ``jax.random.normal`` is duplicated into every consumer, which multiplies compile time.
    """
    k1, k2 = jax.random.split(key)
    z1 = jax.random.normal(k1, (p,) + mask.shape, dtype) * mask
    return z1, jax.random.normal(k2, (p,) + mask.shape, dtype)


@functools.partial(jax.jit, static_argnames=("apply", "s"))
def _zo(apply, params, mask, z1, z2, x, y, eps, s):
    flat, unravel = ravel_pytree(params)  # inside the jit: a fresh unravel must not retrace

    def per_example(f):
        logp = jax.nn.log_softmax(apply(unravel(f), x), axis=-1)
        return -jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0]

    def coeffs(z):  # (b,) two forward passes along z
        return (per_example(flat + eps * z) - per_example(flat - eps * z)) / (2 * eps)

    if s < flat.shape[0]:
        g_hat = jnp.mean(jax.vmap(lambda z: jnp.mean(coeffs(z)) * z)(z1), axis=0)
        score = jnp.where(mask, jnp.abs(g_hat), -jnp.inf)
        top = jax.lax.top_k(score, s)[1]
        sparse = jnp.zeros(flat.shape, bool).at[top].set(True)
    else:
        sparse = mask
    return jax.vmap(coeffs)(z2 * sparse).T  # (b, P)


def ssm_features(
    key: jax.Array,
    apply: Callable,
    x: Any,
    y: Any,
    **zo_kwargs: Any,
) -> Callable[[Any, np.ndarray], jax.Array]:
    """``features_fn(params, idx)`` for :func:`selection.crest.train_on_coresets`: fresh
    :func:`zeroth_order_features` of ``x[idx]`` at every call (a new key each time)."""
    check_key(key)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    counter = iter(range(1 << 62))

    def features(params, idx):
        return zeroth_order_features(jax.random.fold_in(key, next(counter)), apply, params, xj[idx], yj[idx], **zo_kwargs)

    return features


def ssm_train(
    key: jax.Array,
    apply: Callable,
    params: Any,
    optimizer: optax.GradientTransformation,
    x: Any,
    y: Any,
    *,
    steps: int,
    batch_size: int = 32,
    subset_size: int = 128,
    n_subsets: int = 1,
    reselect_every: int = 1,
    n_directions: int = 16,
    eps: float = 1e-3,
    sparsity: int | None = 64,
    layer: str | None = "head",
    eval_fn: Callable[[Any], float] | None = None,
    eval_every: int = 50,
) -> CoresetTraining:
    """Train with SSM: weighted mini-batches of ``m`` medoids of random subsets of ``r``
    examples under zeroth-order gradient sketches (see the module docstring).

    By default one mini-batch is selected every step; ``n_subsets > 1`` with
    ``reselect_every > 1`` amortises the selection (``n_subsets`` mini-batches per
    selection, drawn uniformly for ``reselect_every`` steps).

    Returns:
      :class:`selection.crest.CoresetTraining` (as :func:`selection.crest.train_on_coresets`).
    """
    check_key(key)
    k_feat, k_train = jax.random.split(key)
    feats = ssm_features(k_feat, apply, x, y, n_directions=n_directions, eps=eps, sparsity=sparsity, layer=layer)
    return train_on_coresets(
        k_train, apply, params, optimizer, x, y,
        features_fn=feats, steps=steps, batch_size=batch_size, subset_size=subset_size,
        n_subsets=n_subsets, reselect_every=reselect_every, eval_fn=eval_fn, eval_every=eval_every,
    )
