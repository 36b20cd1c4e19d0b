"""Dataset Condensation by gradient matching (DC; DSA with Siamese augmentation).

Zhao, Mopuri & Bilen (ICLR 2021), "Dataset Condensation with Gradient Matching"; with
``dsa`` set, Zhao & Bilen (ICML 2021), "… with Differentiable Siamese Augmentation".
Lecture 001 ("Gradient matching"); dissertation §4.6.5, the DC row of Table 4.8.

The synthetic set S (``ipc`` images per class, class-grouped) should produce the same
training gradients as the real data along the trajectory of a network trained on S::

    L_DC(S) = E_{θ₀} [ (1/T) Σ_{t<T} Σ_c D( ∇_θ ℓ(θ_t; B_c^real), ∇_θ ℓ(θ_t; S_c) ) ],
    θ_{t+1} = θ_t − η ∇_θ ℓ(θ_t; sg(S))          (sg = stop-gradient: S is the data, not θ)

with the per-class real batches ``B_c``, cross-entropy ``ℓ`` and the layer-wise distance
(DC's Eq. 5)

    D(G, G') = Σ_layers Σ_{i ∈ output channels} ( 1 − ⟨G_i, G'_i⟩ / (‖G_i‖ ‖G'_i‖ + 10⁻⁶) ),

where ``G_i`` is the slice of a layer's weight gradient feeding output channel ``i``
(flax kernels keep output channels last: a conv kernel ``(kh, kw, in, out)`` gives
``out`` vectors of length ``kh·kw·in``). Like the paper, 1-d parameters (biases, norm
scales) are skipped unless ``include_bias``.

The DC algorithm alternates data and network updates; as a pure objective for
``loop.run`` each call draws a fresh θ₀ and sums the distance over the ``inner_steps``
points of the trajectory (the network update uses the current S without gradient), so
one outer step is one DC outer iteration with the data updates of its inner loop
accumulated. Per-class terms are summed with :func:`distill.parallel.sum_rows`: with a
``mesh`` the classes are spread over the devices.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from distill import parallel
from distill.checks import check_array, check_float, check_int, check_key
from distill.matching import augment
from distill.matching._common import (
    check_model,
    check_parametrization,
    class_grouped_setup,
    tree_map,
    xent,
)
from distill.parametrize import Parametrization

__all__ = ["layer_distance", "match_distance", "dc_loss"]


def layer_distance(g_real: jax.Array, g_syn: jax.Array) -> jax.Array:
    """``Σ_i (1 − cos(G_i, G'_i))`` over the output channels (last axis) of one layer's gradient.

    Args:
      g_real, g_syn: gradients of the same parameter, shape ``(..., out)`` (ndim ≥ 2).

    Returns:
      Scalar in ``[0, 2·out]``.
    """
    check_array(g_real, "g_real", kind="float")
    if g_real.ndim < 2:
        raise ValueError(f"g_real: expected a gradient of ndim >= 2 (..., out), got shape {tuple(g_real.shape)}")
    check_array(g_syn, "g_syn", kind="float", shape=tuple(g_real.shape))
    a = g_real.reshape((-1, g_real.shape[-1]))
    b = g_syn.reshape((-1, g_syn.shape[-1]))
    cos = jnp.sum(a * b, axis=0) / (_norm(a) * _norm(b) + 1e-6)
    return jnp.sum(1.0 - cos)


def _norm(a: jax.Array) -> jax.Array:
    # Column norms with a zero (not NaN) gradient for all-zero columns: a ReLU unit that
    # is dead on a class's images gives an all-zero gradient column.
    s = jnp.sum(a * a, axis=0)
    pos = s > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1.0)), 0.0)


def match_distance(g_real: Any, g_syn: Any, *, include_bias: bool = False) -> jax.Array:
    """DC's layer-wise gradient distance ``D(G, G')`` summed over the leaves of two gradient pytrees.

    Args:
      g_real, g_syn: gradient pytrees of the same structure (e.g. flax params).
      include_bias: also compare 1-d leaves (each as one vector); DC skips them.

    Returns:
      Scalar distance.

    Source: Zhao et al. (2021), Eq. 5 ("dist" of lecture 001, gradient matching).
    """
    la, ta = jax.tree_util.tree_flatten(g_real)
    lb, tb = jax.tree_util.tree_flatten(g_syn)
    if ta != tb:
        raise ValueError(f"g_syn: expected the same pytree structure as g_real, got {tb} vs {ta}")
    total = jnp.zeros((), jnp.result_type(*la) if la else jnp.float32)
    for a, b in zip(la, lb, strict=False):
        if a.shape != b.shape:
            raise ValueError(f"g_syn: expected leaf shapes to match g_real, got {b.shape} vs {a.shape}")
        if a.ndim >= 2:
            total = total + layer_distance(a, b)
        elif include_bias and a.ndim == 1:
            total = total + layer_distance(a[:, None], b[:, None])
    return total


def dc_loss(
    syn_params: Any,
    batch: jax.Array,
    key: jax.Array,
    *,
    parametrization: Parametrization,
    model: Any,
    n_classes: int,
    inner_steps: int = 10,
    inner_lr: float = 0.01,
    dsa: str | None = None,
    include_bias: bool = False,
    mesh: Mesh | None = None,
) -> jax.Array:
    """The gradient-matching objective ``L_DC`` (module docstring) for ``loop.run``.

    Args:
      syn_params: synthetic-data parameters; ``parametrization.materialize`` turns them into
        class-grouped inputs ``(C·ipc, ...)`` (class 0's ``ipc`` rows first).
      batch: real inputs per class, ``(C, B, ...)``.
      key: PRNG key (θ₀, augmentation, materialization).
      parametrization: how ``syn_params`` become data (identity, latent factorization, …).
      model: ``ModelFns`` classifier with ``C`` logits.
      n_classes: C.
      inner_steps: T, trajectory points per call (network SGD steps on S).
      inner_lr: η, the network's SGD learning rate on S.
      dsa: a DSA strategy (e.g. ``augment.DIGITS_STRATEGY``); ``None`` disables it. Each
        trajectory point draws one ω, applied to the real and synthetic images of every class.
      include_bias: compare 1-d parameters too.
      mesh: spread the classes over this mesh's devices.

    Returns:
      Scalar loss, differentiable in ``syn_params``.
    """
    check_key(key)
    check_parametrization(parametrization)
    check_model(model)
    n_classes = check_int(n_classes, "n_classes", min_value=1)
    inner_steps = check_int(inner_steps, "inner_steps", min_value=1)
    inner_lr = check_float(inner_lr, "inner_lr", min_value=0.0)
    if dsa is not None:
        augment.parse_strategy(dsa)
    x_syn, x_syn_c, x_real, theta0, k_aug = class_grouped_setup(parametrization, syn_params, batch, key, n_classes, model)
    y_syn = jnp.repeat(jnp.arange(n_classes), x_syn_c.shape[1])

    def class_terms(rows, w, theta, omega):
        xr, xs, c = rows

        def one(xr_c, xs_c, c_, w_c):
            if omega is not None:
                xr_c, xs_c = augment.apply(omega, xr_c), augment.apply(omega, xs_c)
            grad = jax.grad(lambda th, xx: xent(model.apply(th, xx), jnp.full((xx.shape[0],), c_)))
            g_r = jax.lax.stop_gradient(grad(theta, xr_c))
            g_s = grad(theta, xs_c)
            return w_c * match_distance(g_r, g_s, include_bias=include_bias)

        return jnp.sum(jax.vmap(one)(xr, xs, c, w))

    classes = jnp.arange(n_classes, dtype=jnp.int32)

    def step(theta, t):
        # One ω per trajectory point, shared by all classes: an unbatched ω keeps
        # augment.apply's switch a real branch under the class vmap (a per-class ω would
        # evaluate every transformation for every class).
        omega = None if dsa is None else augment.sample(jax.random.fold_in(k_aug, t), dsa)
        d = parallel.sum_rows(class_terms, (x_real, x_syn_c, classes), theta, omega, mesh=mesh)
        g = jax.grad(lambda th: xent(model.apply(th, jax.lax.stop_gradient(x_syn)), y_syn))(theta)
        theta = tree_map(lambda p, gg: p - inner_lr * gg, theta, g)
        return jax.lax.stop_gradient(theta), d

    _, ds = jax.lax.scan(step, theta0, jnp.arange(inner_steps))
    return jnp.mean(ds)
