"""A fully-connected classifier ``[Dense, ReLU] × depth + Dense`` as ``ModelFns(init, apply)``.

Inputs of any shape ``(n, ...)`` are flattened to ``(n, d)``. Used as the proxy and
target model of the pruning benchmarks (sklearn digits) and as the small model of the
dataset-distillation baselines.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill.checks import check_int
from models.model_fns import ModelFns, from_flax

__all__ = ["MLP", "mlp"]


class MLP(nn.Module):
    """``x ↦ W_{L+1} relu(… relu(W_1 x + b_1) …) + b_{L+1}``; ``features_only`` drops the head."""

    n_classes: int
    hidden: Sequence[int] = (256, 256)
    features_only: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout / batch norm: apply is a pure function of params
        h = x.reshape((x.shape[0], -1)).astype(self.dtype)
        for i, width in enumerate(self.hidden):
            h = nn.relu(nn.Dense(width, dtype=self.dtype, param_dtype=self.dtype, name=f"dense_{i}")(h))
        if self.features_only:
            return h
        return nn.Dense(self.n_classes, dtype=self.dtype, param_dtype=self.dtype, name="head")(h)


def mlp(n_classes: int, *, hidden: Sequence[int] = (256, 256), features_only: bool = False, dtype: Any = jnp.float32) -> ModelFns:
    """An MLP classifier as ``ModelFns``.

    Args:
      n_classes: output logits C (>= 1).
      hidden: widths of the hidden ReLU layers (may be empty: a linear model).
      features_only: ``apply`` returns the last hidden layer ``(n, hidden[-1])`` instead of
        logits (the same parameter names, so a trained classifier's params work).
      dtype: parameter and computation dtype.

    Returns:
      ``ModelFns``: ``init(key, x)``, ``apply(params, x, *, train=False) -> (n, C)``.
    """
    n_classes = check_int(n_classes, "n_classes", min_value=1)
    hidden = tuple(check_int(h, "hidden", min_value=1) for h in hidden)
    if features_only and not hidden:
        raise ValueError("hidden: features_only needs at least one hidden layer, got ()")
    return from_flax(MLP(n_classes, hidden, features_only, dtype))
