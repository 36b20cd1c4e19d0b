"""The ConvNet of the dataset-distillation papers as ``ModelFns(init, apply)``.

``depth × [Conv 3×3 (width channels), InstanceNorm, ReLU, AvgPool 2×2] + Linear`` —
the "ConvNet-3" (width 128, depth 3) of Dataset Condensation (Zhao et al., 2021),
Distribution Matching and MTT, built after Gidaris & Komodakis (2018). Instance norm
is the per-image, per-channel normalisation with a learned affine map (GroupNorm with
one channel per group), so the model has no batch statistics and ``apply`` is pure.
Inputs are NHWC images; on 8×8 digits three poolings bring the map to 1×1.

Every convolution pads by 1 ("SAME") except the first, which pads by ``stem_padding``.
The papers' PyTorch ConvNet pads the first convolution of single-channel inputs by 3
(``padding=3 if channel == 1``), so 28×28 (Fashion-)MNIST maps become 32×32 and
ConvNet-3 ends on a 4×4 map (2,048 features at width 128) instead of 3×3 with
``stem_padding=1``; ``stem_padding=3`` is that architecture.

``init`` is the flax module :class:`ConvNet` (its parameter names and initialisers:
lecun-normal kernels, zero biases), or with ``init='torch'`` the same parameters redrawn
as PyTorch initialises ``Conv2d`` and ``Linear`` (:func:`torch_init`), as the papers' code
runs; the instance norm's affine map starts at (1, 0) either way. ``apply`` is
:func:`convnet_apply`, the same function written directly on JAX primitives, with the
instance norm, affine map and ReLU fused into one elementwise pass and the pooling as a
reshape-mean. It returns the module's logits for the module's parameters. Two convolutions (``conv=``):

* ``'im2col'`` (default): the 9 shifted copies of the padded map concatenated on the
  channel axis and one ``(n·H·W, 9·C_in) @ (9·C_in, width)`` matmul. Inside a loop body
  (``lax.scan``: training loops, DC's inner trajectory, unrolled students) XLA's CPU
  ``lax.conv_general_dilated`` runs 35–40× slower than outside one (jax-ml/jax#12868;
  ``python -m benchmarks.convnet_perf --contexts``), while the matmul does not (one DC
  objective gradient, ConvNet width 32 on digits: 1.0 s vs 10.2 s).
* ``'lax'``: ``lax.conv_general_dilated`` (NHWC/HWIO), the fastest for one model's plain
  forward+backward on CPU (8×8 digits, width 128: ≈ 1.7× the flax module, ≈ 1.5× im2col;
  ``python -m benchmarks.convnet_perf``).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from distill.checks import check_choice, check_int
from models.model_fns import ModelFns

__all__ = ["ConvNet", "convnet", "convnet_apply", "conv3x3_im2col", "instance_norm_relu", "avg_pool2", "torch_init"]

#: Instance-norm ε (flax ``InstanceNorm``'s default, and PyTorch's).
EPS = 1e-5


class ConvNet(nn.Module):
    """The reference flax module (``init`` and the test reference); see the module docstring."""

    n_classes: int
    width: int = 128
    depth: int = 3
    norm: str = "instance"
    features_only: bool = False
    dtype: Any = jnp.float32
    stem_padding: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        h = x.astype(self.dtype)
        for i in range(self.depth):
            p = self.stem_padding if i == 0 else 1
            h = nn.Conv(self.width, (3, 3), padding=((p, p), (p, p)), dtype=self.dtype, param_dtype=self.dtype,
                        name=f"conv_{i}")(h)
            if self.norm == "instance":
                h = nn.InstanceNorm(epsilon=EPS, dtype=self.dtype, param_dtype=self.dtype, name=f"norm_{i}")(h)
            h = nn.relu(h)
            if h.shape[1] >= 2 and h.shape[2] >= 2:
                h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = h.reshape((h.shape[0], -1))
        if self.features_only:
            return h
        return nn.Dense(self.n_classes, dtype=self.dtype, param_dtype=self.dtype, name="head")(h)


def instance_norm_relu(h: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = EPS) -> jax.Array:
    """``relu(γ (h − μ) / √(σ² + ε) + β)`` per image and channel, as one ``h · a + c``.

    Args:
      h: ``(n, H, W, C)`` feature map.
      scale, bias: ``(C,)`` affine map γ, β.
      eps: ε.

    Returns:
      ``(n, H, W, C)``. μ, σ² are the mean and (biased) variance over H, W
      (σ² = E[h²] − μ², clipped at 0, as flax's fast variance); ``a = γ/√(σ²+ε)``,
      ``c = β − μ a`` are ``(n, 1, 1, C)``, so the map is normalised in one pass.
    """
    mean = jnp.mean(h, axis=(1, 2), keepdims=True)
    var = jnp.maximum(jnp.mean(h * h, axis=(1, 2), keepdims=True) - mean * mean, 0.0)
    a = scale * lax.rsqrt(var + eps)
    return jax.nn.relu(h * a + (bias - mean * a))


def avg_pool2(h: jax.Array) -> jax.Array:
    """2×2 average pooling, stride 2, VALID (an odd last row/column is dropped): ``(n, ⌊H/2⌋, ⌊W/2⌋, C)``."""
    n, hh, ww, c = h.shape
    h = h[:, : hh // 2 * 2, : ww // 2 * 2]
    return jnp.mean(h.reshape(n, hh // 2, 2, ww // 2, 2, c), axis=(2, 4))


def conv3x3_im2col(h: jax.Array, kernel: jax.Array, padding: int = 1) -> jax.Array:
    """3×3 convolution as one matmul over the 9 shifted copies of the zero-padded map.

    Args:
      h: ``(n, H, W, C_in)``.
      kernel: ``(3, 3, C_in, C_out)`` (HWIO).
      padding: zeros added on each side (1: SAME).

    Returns:
      ``(n, H + 2p − 2, W + 2p − 2, C_out)``, ``y[q] = Σ_{a,b} h_pad[q + (a, b)] · K[a, b]``
      (cross-correlation, as ``lax.conv_general_dilated``).
    """
    n, hh, ww, c = h.shape
    ho, wo = hh + 2 * padding - 2, ww + 2 * padding - 2
    pad = jnp.pad(h, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    cols = jnp.concatenate([pad[:, a:a + ho, b:b + wo, :] for a in range(3) for b in range(3)], axis=-1)
    return jnp.einsum("nhwk,ko->nhwo", cols, kernel.reshape(9 * c, kernel.shape[-1]))


def _conv(h: jax.Array, kernel: jax.Array, conv: str, padding: int) -> jax.Array:
    if conv == "im2col":
        return conv3x3_im2col(h, kernel, padding)
    pads = ((padding, padding), (padding, padding))
    return lax.conv_general_dilated(h, kernel, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def convnet_apply(params: Any, x: jax.Array, *, depth: int, norm: str = "instance", features_only: bool = False,
                  dtype: Any = jnp.float32, conv: str = "im2col", stem_padding: int = 1) -> jax.Array:
    """The ConvNet forward pass on :class:`ConvNet`'s parameters.

    Args:
      params: ``{'conv_i': {kernel (3, 3, C_in, width), bias}, 'norm_i': {scale, bias}, 'head': {kernel, bias}}``.
      x: ``(n, H, W, C_in)`` NHWC images.
      depth: conv blocks.
      norm: ``'instance'`` or ``'none'``. With instance norm the conv bias is skipped: the
        per-channel mean subtraction cancels it exactly, so the logits are unchanged.
      features_only: return the flattened last feature map ``(n, H'·W'·width)``.
      dtype: computation dtype.
      conv: ``'im2col'`` or ``'lax'`` (module docstring).
      stem_padding: zero padding of the first convolution (the others pad by 1).

    Returns:
      ``(n, n_classes)`` logits, ``W_head · vec(h_depth) + b`` with
      ``h_i = pool(relu(IN(conv(h_{i−1}))))`` (a pooling skipped once the map is 1 pixel wide).
    """
    h = x.astype(dtype)
    for i in range(depth):
        h = _conv(h, params[f"conv_{i}"]["kernel"].astype(dtype), conv, stem_padding if i == 0 else 1)
        if norm == "instance":
            h = instance_norm_relu(h, params[f"norm_{i}"]["scale"], params[f"norm_{i}"]["bias"])
        else:
            h = jax.nn.relu(h + params[f"conv_{i}"]["bias"])
        if h.shape[1] >= 2 and h.shape[2] >= 2:
            h = avg_pool2(h)
    h = h.reshape((h.shape[0], -1))
    if features_only:
        return h
    return h @ params["head"]["kernel"] + params["head"]["bias"]


@jax.jit  # one compiled program instead of a dozen eager random ops
def torch_init(key: jax.Array, params: Any) -> Any:
    """Redraw every kernel and bias as PyTorch's ``Conv2d`` / ``Linear`` defaults do.

    PyTorch initialises both layers with ``kaiming_uniform_(a=√5)`` for the weight and
    ``U(-1/√fan_in, 1/√fan_in)`` for the bias, and kaiming-uniform with ``a = √5`` is
    ``U(-b, b)`` with ``b = gain·√(3/fan_in)``, ``gain = √(2/(1+a²)) = √(1/3)``, i.e. the same
    ``U(±1/√fan_in)``: standard deviation ``1/√(3·fan_in)`` against lecun-normal's
    ``1/√fan_in``, and non-zero biases. ``fan_in`` is ``9·C_in`` for a 3×3 kernel and the
    number of features for the head. Parameters without a ``kernel`` (the instance norm's
    scale and bias) are returned unchanged.

    Args:
      key: PRNG key.
      params: :class:`ConvNet` parameters (``{layer: {"kernel", "bias"} | {"scale", "bias"}}``).

    Returns:
      Parameters of the same structure, dtypes and shapes.
    """
    out = {}
    for i, name in enumerate(sorted(params)):
        layer = params[name]
        if "kernel" not in layer:
            out[name] = layer
            continue
        kernel, bias = layer["kernel"], layer["bias"]
        bound = math.prod(kernel.shape[:-1]) ** -0.5  # fan_in: HWIO / (in, out) less the output axis
        k_w, k_b = jax.random.split(jax.random.fold_in(key, i))
        out[name] = {**layer, "kernel": jax.random.uniform(k_w, kernel.shape, kernel.dtype, -bound, bound),
                     "bias": jax.random.uniform(k_b, bias.shape, bias.dtype, -bound, bound)}
    return out


def convnet(
    n_classes: int,
    *,
    width: int = 128,
    depth: int = 3,
    norm: str = "instance",
    features_only: bool = False,
    dtype: Any = jnp.float32,
    conv: str = "im2col",
    stem_padding: int = 1,
    init: str = "flax",
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
      conv: ``'im2col'`` (inside loops on CPU: training, the distillation objectives) or
        ``'lax'`` (one plain gradient outside a loop); the same function either way.
      stem_padding: zero padding of the first convolution. 1 (default) keeps every map's
        size; 3 is the papers' PyTorch ConvNet for single-channel images (28×28 → 32×32
        maps; module docstring). The default stays 1 so that recorded runs reproduce.
      init: ``'flax'`` (default; the module's initialisers, every recorded run) or
        ``'torch'`` (:func:`torch_init`, the papers' PyTorch initialisation).

    Returns:
      ``ModelFns``: ``init(key, x)`` (the flax module's parameters), ``apply(params, x (n, H, W, C), *,
      train=False) -> (n, C)`` (:func:`convnet_apply`).
    """
    n_classes = check_int(n_classes, "n_classes", min_value=1)
    width = check_int(width, "width", min_value=1)
    depth = check_int(depth, "depth", min_value=1)
    check_choice(norm, "norm", ("instance", "none"))
    check_choice(conv, "conv", ("im2col", "lax"))
    stem_padding = check_int(stem_padding, "stem_padding", min_value=0)
    scheme = check_choice(init, "init", ("flax", "torch"))  # the name ``init`` is rebound below
    module = ConvNet(n_classes, width, depth, norm, features_only, dtype, stem_padding)

    def check(x):
        if not hasattr(x, "ndim") or x.ndim != 4:
            raise ValueError(f"x: expected NHWC images of shape (n, H, W, C), got {getattr(x, 'shape', type(x).__name__)}")
        if min(x.shape[1:3]) + 2 * stem_padding - 2 < 1:  # the first 3×3 convolution would leave no pixel
            raise ValueError(f"x: images of shape {tuple(x.shape)} are too small for "
                             f"stem_padding={stem_padding}")

    def init(key: jax.Array, x: jax.Array) -> Any:
        check(x)
        params = module.init(key, x, False)["params"]
        # A derived key: the torch draw must not reuse the flax draw's random bits.
        return torch_init(jax.random.fold_in(key, 1), params) if scheme == "torch" else params

    def apply(params: Any, x: jax.Array, *, train: bool = False) -> jax.Array:
        del train  # no dropout / batch statistics
        check(x)
        return convnet_apply(params, x, depth=depth, norm=norm, features_only=features_only, dtype=dtype, conv=conv,
                             stem_padding=stem_padding)

    return ModelFns(init, apply)
