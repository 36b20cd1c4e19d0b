"""The model interface every distillation method trains on: ``ModelFns(init, apply)``.

A model is a pair of pure functions

* ``init(key, x) -> params`` — parameters for inputs shaped like ``x``;
* ``apply(params, x, *, train=False) -> out`` — the forward pass.

No module objects, no mutable state: ``inner.train`` differentiates through
``apply`` and the outer loop only ever sees pytrees. :func:`from_flax` wraps a
``flax.linen`` module into this interface.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ModelFns", "from_flax", "n_outputs", "token_inputs", "item_inputs", "embed_tokens"]


class ModelFns(NamedTuple):
    """``init(key, x) -> params`` and ``apply(params, x, *, train=False) -> out``."""

    init: Callable[..., Any]
    apply: Callable[..., Any]


def from_flax(module: Any, check: Any = None) -> ModelFns:
    """Wrap a ``flax.linen`` module whose ``__call__(x, train)`` returns the output.

    ``init`` returns the module's ``params`` collection only (the models here have no
    other state); ``apply`` re-wraps it as ``{'params': params}``. ``check(x)``, when
    given, validates the input of both (raising ``ValueError``/``TypeError``).
    """

    def init(key: jax.Array, x: Any) -> Any:
        if check is not None:
            check(x)
        return module.init(key, x, False)["params"]

    def apply(params: Any, x: Any, *, train: bool = False) -> Any:
        if check is not None:
            check(x)
        return module.apply({"params": params}, x, train)

    return ModelFns(init, apply)


def n_outputs(apply: Callable[..., Any], params: Any, x: Any) -> int:
    """Size of the last axis of ``apply(params, x[:1])`` — the number of classes or
    tokens a model scores — found by shape evaluation alone (no compile, no FLOPs).

    ``params`` may be arrays or ``jax.ShapeDtypeStruct``s; to size a model before
    initialising it pass ``jax.eval_shape(model.init, key, x[:1])``.
    """
    return int(jax.eval_shape(lambda p, xb: apply(p, xb), params, jnp.asarray(x)[:1]).shape[-1])


def token_inputs(x: Any, vocab_size: int, name: str = "x") -> None:
    """Check that ``x`` is int tokens ``(n, L)`` or soft tokens ``(n, L, vocab_size)``."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
    kind = np.dtype(x.dtype).kind
    if kind in "iu":
        if x.ndim != 2:
            raise ValueError(f"{name}: expected int tokens of shape (n, L), got {tuple(x.shape)}")
    elif kind == "f":
        if x.ndim != 3 or x.shape[-1] != vocab_size:
            raise ValueError(
                f"{name}: expected soft tokens of shape (n, L, {vocab_size}), got {tuple(x.shape)}"
            )
    else:
        raise TypeError(f"{name}: expected an int or float dtype, got {x.dtype}")
    if any(d == 0 for d in x.shape):
        raise ValueError(f"{name}: expected a non-empty array, got shape {tuple(x.shape)}")


def item_inputs(x: Any, n_items: int, name: str = "x") -> None:
    """Check item-sequence inputs of a sequential recommender: int ids ``(n, L)`` (``n_items``
    is the padding id) or soft items ``(n, L, n_items)`` / ``(n, L, n_items + 1)`` (with a
    padding column), non-empty."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
    if jnp.issubdtype(x.dtype, jnp.integer):
        if x.ndim != 2:
            raise ValueError(f"{name}: expected int tokens of shape (n, L), got {tuple(x.shape)}")
    elif jnp.issubdtype(x.dtype, jnp.floating):
        if x.ndim != 3 or x.shape[-1] not in (n_items, n_items + 1):
            raise ValueError(f"{name}: expected soft tokens of shape (n, L, {n_items}) or (n, L, {n_items + 1}), "
                             f"got {tuple(x.shape)}")
    else:
        raise TypeError(f"{name}: expected an int or float dtype, got {x.dtype}")
    if any(d == 0 for d in x.shape):
        raise ValueError(f"{name}: expected a non-empty array, got shape {tuple(x.shape)}")


def embed_tokens(x: jax.Array, table: jax.Array) -> jax.Array:
    """Embed int tokens (row lookup) or soft tokens (``probs @ E``) with ``table`` ``(V, d)``.

    A one-hot soft token gives exactly the looked-up row, so the two input kinds agree.
    """
    if jnp.issubdtype(x.dtype, jnp.integer):
        return jnp.take(table, x, axis=0)
    return jnp.einsum("nlv,vd->nld", x.astype(table.dtype), table)
