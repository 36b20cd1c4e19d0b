"""The ConvNet of the dataset-distillation papers as ``ModelFns(init, apply)``.

``depth × [Conv 3×3 (width channels), InstanceNorm, ReLU, AvgPool 2×2] + Linear`` —
the "ConvNet-3" (width 128, depth 3) of Dataset Condensation (Zhao et al., 2021),
Distribution Matching and MTT, built after Gidaris & Komodakis (2018). Instance norm
is the per-image, per-channel normalisation with a learned affine map (GroupNorm with
one channel per group), so the model has no batch statistics and ``apply`` is pure.
Inputs are NHWC images; on 8×8 digits three poolings bring the map to 1×1.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill.checks import check_choice, check_int
from models.model_fns import ModelFns, from_flax

__all__ = ["ConvNet", "convnet"]


class ConvNet(nn.Module):
    """See the module docstring; ``features_only`` returns the flattened last feature map."""

    n_classes: int
    width: int = 128
    depth: int = 3
    norm: str = "instance"
    features_only: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        h = x.astype(self.dtype)
        for i in range(self.depth):
            h = nn.Conv(self.width, (3, 3), padding="SAME", dtype=self.dtype, param_dtype=self.dtype, name=f"conv_{i}")(h)
            if self.norm == "instance":
                h = nn.InstanceNorm(epsilon=1e-5, dtype=self.dtype, param_dtype=self.dtype, name=f"norm_{i}")(h)
            h = nn.relu(h)
            if h.shape[1] >= 2 and h.shape[2] >= 2:
                h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = h.reshape((h.shape[0], -1))
        if self.features_only:
            return h
        return nn.Dense(self.n_classes, dtype=self.dtype, param_dtype=self.dtype, name="head")(h)


def convnet(
    n_classes: int,
    *,
    width: int = 128,
    depth: int = 3,
    norm: str = "instance",
    features_only: bool = False,
    dtype: Any = jnp.float32,
) -> ModelFns:
    """ConvNet-``depth`` with ``width`` channels as ``ModelFns``.

    Args:
      n_classes: output logits C.
      width: channels of every conv layer (128 in the papers; smaller for CPU runs).
      depth: number of conv blocks (3 in the papers). A pooling is skipped once the
        feature map is 1 pixel wide.
      norm: ``'instance'`` (the papers) or ``'none'``.
      features_only: return the flattened features before the linear head.
      dtype: parameter and computation dtype.

    Returns:
      ``ModelFns``: ``init(key, x)``, ``apply(params, x (n, H, W, C), *, train=False) -> (n, C)``.
    """
    n_classes = check_int(n_classes, "n_classes", min_value=1)
    width = check_int(width, "width", min_value=1)
    depth = check_int(depth, "depth", min_value=1)
    check_choice(norm, "norm", ("instance", "none"))

    def check(x):
        if not hasattr(x, "ndim") or x.ndim != 4:
            raise ValueError(f"x: expected NHWC images of shape (n, H, W, C), got {getattr(x, 'shape', type(x).__name__)}")

    return from_flax(ConvNet(n_classes, width, depth, norm, features_only, dtype), check)
