"""Pieces shared by the matching objectives (private): labels, cross-entropy, class grouping."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from distill.checks import check_array, check_index_range, check_int
from distill.parametrize import Parametrization

tree_map = jax.tree_util.tree_map


def syn_labels(n_classes: int, ipc: int) -> jax.Array:
    """Class-grouped labels ``[0]*ipc + [1]*ipc + …`` of a synthetic set, int32 ``(C·ipc,)``."""
    n_classes = check_int(n_classes, "n_classes", min_value=1)
    ipc = check_int(ipc, "ipc", min_value=1)
    return jnp.repeat(jnp.arange(n_classes, dtype=jnp.int32), ipc)


def xent(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy; ``labels`` int ``(n,)`` or soft/one-hot ``(n, C)``.

    Integer labels outside ``[0, C)`` raise when concrete and make the loss NaN under
    ``jit`` (optax would clamp them to a real class).
    """
    check_array(logits, "logits", ndim=2, kind="float")
    if jnp.issubdtype(labels.dtype, jnp.integer):
        check_array(labels, "labels", shape=(logits.shape[0],))
        n_classes = logits.shape[-1]
        check_index_range(labels, "labels", n_classes, "label")
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return jnp.mean(jnp.where((labels >= 0) & (labels < n_classes), ce, jnp.nan))
    check_array(labels, "labels", kind="float", shape=tuple(logits.shape))
    return jnp.mean(optax.softmax_cross_entropy(logits, labels))


def check_parametrization(p: Any) -> Parametrization:
    if not isinstance(p, Parametrization):
        raise TypeError(f"parametrization: expected a distill.parametrize.Parametrization, got {type(p).__name__}")
    return p


def check_model(m: Any, name: str = "model") -> Any:
    if not (hasattr(m, "init") and hasattr(m, "apply") and callable(m.apply)):
        raise TypeError(f"{name}: expected a ModelFns(init, apply), got {type(m).__name__}")
    return m


def group_by_class(x_syn: jax.Array, n_classes: int) -> jax.Array:
    """``(C·ipc, ...)`` class-grouped synthetic inputs → ``(C, ipc, ...)``."""
    if x_syn.shape[0] % n_classes:
        raise ValueError(
            f"syn_params: expected materialized data with a multiple of n_classes={n_classes} rows "
            f"(class-grouped, ipc per class), got {x_syn.shape[0]}"
        )
    return x_syn.reshape((n_classes, x_syn.shape[0] // n_classes) + x_syn.shape[1:])


def check_real_per_class(x_real: Any, n_classes: int, x_syn: jax.Array) -> jax.Array:
    """The real batch of DC/DM: ``(C, B, ...)`` with the synthetic inputs' trailing shape."""
    check_array(x_real, "batch", kind="float")
    if x_real.ndim != x_syn.ndim + 1 or x_real.shape[0] != n_classes or x_real.shape[2:] != x_syn.shape[1:]:
        raise ValueError(
            f"batch: expected real inputs per class of shape ({n_classes}, B, {', '.join(map(str, x_syn.shape[1:]))}), "
            f"got {tuple(x_real.shape)}"
        )
    return x_real


def class_grouped_setup(
    parametrization: Parametrization, syn_params: Any, batch: Any, key: jax.Array, n_classes: int, net: Any
) -> tuple[jax.Array, jax.Array, jax.Array, Any, jax.Array]:
    """The prologue shared by the per-class objectives (DC, DM).

    Splits ``key`` into (materialization, network init, augmentation) keys, materializes
    the synthetic set, groups it by class, checks the real ``(C, B, ...)`` batch against it
    and initialises ``net`` on the synthetic input shape.

    Returns:
      ``(x_syn (C·ipc, ...), x_syn_c (C, ipc, ...), x_real (C, B, ...) in x_syn's dtype,
      θ of net, augmentation key)``.
    """
    k_mat, k_init, k_aug = jax.random.split(key, 3)
    x_syn = parametrization.materialize(syn_params, k_mat)
    x_syn_c = group_by_class(x_syn, n_classes)
    check_real_per_class(batch, n_classes, x_syn)
    x_real = batch.astype(x_syn.dtype)
    theta = net.init(k_init, jnp.zeros((1,) + x_syn.shape[1:], x_syn.dtype))
    return x_syn, x_syn_c, x_real, theta, k_aug
