"""Differentiable Siamese Augmentation (DSA) for image distillation.

DSA (Zhao & Bilen, ICML 2021, "Dataset Condensation with Differentiable Siamese
Augmentation") applies *the same* randomly drawn augmentation ``A_ω`` to the real and
the synthetic batch before a matching objective compares them, e.g. for DC::

    D( ∇_θ L(A_ω(x_real)), ∇_θ L(A_ω(x_syn)) ),      ω ~ Ω  shared by both sides,

and every transformation is differentiable in the image, so the gradient reaches the
synthetic pixels through ``A_ω``. Following the paper's default ("single" mode), one
transformation family is picked uniformly per call among those of ``strategy`` and all
images of the call share its parameters:

* ``color``  — brightness ``x + (u₁ − ½)``, saturation ``(x − x̄_ch)·2u₂ + x̄_ch``,
  contrast ``(x − x̄)·(u₃ + ½) + x̄`` (DSA's ratios 1, 2, 0.5);
* ``crop``   — integer translation by up to ``1/8`` of the side, zero fill;
* ``cutout`` — a zeroed square of half the side at a random centre;
* ``flip``   — horizontal flip with probability ½ (off for digits: it changes classes);
* ``scale``  — per-axis scale in ``[1/1.2, 1.2]`` (bilinear resampling, zero fill);
* ``rotate`` — rotation by up to ±15° (bilinear resampling, zero fill).

Images are NHWC. ``sample(key, strategy)`` draws ω; ``apply(omega, x, strategy)`` applies it —
call ``apply`` with the same ω on both sides to get the Siamese pair (passing the strategy
compiles only its families). ``augment_each`` draws an independent ω for every image: the
augmentation with which the DSA and DM papers train their evaluation models on a synthetic set.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from distill.checks import check_array, check_choice, check_key, is_concrete

__all__ = ["DSAParams", "TRANSFORMS", "DIGITS_STRATEGY", "CIFAR_STRATEGY", "parse_strategy", "sample", "apply", "augment",
           "augment_each"]

TRANSFORMS = ("color", "crop", "cutout", "flip", "scale", "rotate")
#: DSA's MNIST strategy (no flips: they change digit identity).
DIGITS_STRATEGY = "color_crop_cutout_scale_rotate"
#: DSA's CIFAR strategy.
CIFAR_STRATEGY = "color_crop_cutout_flip_scale_rotate"

_CROP, _CUTOUT, _SCALE, _ROTATE = 0.125, 0.5, 1.2, 15.0


class DSAParams(NamedTuple):
    """One draw ω of the augmentation (scalars; ``which`` indexes ``TRANSFORMS``)."""

    which: jax.Array
    color: jax.Array  # (3,) uniforms for brightness, saturation, contrast
    shift: jax.Array  # (2,) integer-valued (rows, cols) fractions of the side
    cut_center: jax.Array  # (2,) uniforms
    flip: jax.Array  # () 0/1
    scale: jax.Array  # (2,)
    angle: jax.Array  # () radians


def parse_strategy(strategy: str) -> tuple[int, ...]:
    """``'color_crop'`` → indices into :data:`TRANSFORMS` (validated)."""
    if not isinstance(strategy, str) or not strategy:
        raise TypeError(f"strategy: expected a non-empty string like {DIGITS_STRATEGY!r}, got {strategy!r}")
    return tuple(TRANSFORMS.index(check_choice(s, "strategy", TRANSFORMS)) for s in strategy.split("_"))


def sample(key: jax.Array, strategy: str = DIGITS_STRATEGY) -> DSAParams:
    """Draw one augmentation ω: a transformation family of ``strategy`` and its parameters."""
    check_key(key)
    allowed = jnp.asarray(parse_strategy(strategy), jnp.int32)
    ks = jax.random.split(key, 7)
    u = lambda k, shape=(): jax.random.uniform(k, shape)
    which = allowed[jax.random.randint(ks[0], (), 0, allowed.shape[0])]
    log_s = jnp.log(_SCALE)
    return DSAParams(
        which=which,
        color=u(ks[1], (3,)),
        shift=u(ks[2], (2,)),
        cut_center=u(ks[3], (2,)),
        flip=(u(ks[4]) < 0.5).astype(jnp.float32),
        scale=jnp.exp(jax.random.uniform(ks[5], (2,), minval=-log_s, maxval=log_s)),
        angle=(2 * u(ks[6]) - 1) * math.radians(_ROTATE),
    )


def _resample(x: jax.Array, matrix: jax.Array, offset: jax.Array) -> jax.Array:
    """Output pixel p samples input at ``c + matrix·(p − c) + offset`` (bilinear, zero fill)."""
    _, h, w, _ = x.shape
    c = jnp.asarray([(h - 1) / 2, (w - 1) / 2], x.dtype)
    grid = jnp.stack(jnp.meshgrid(jnp.arange(h, dtype=x.dtype), jnp.arange(w, dtype=x.dtype), indexing="ij"))
    src = c[:, None, None] + jnp.einsum("ij,jhw->ihw", matrix.astype(x.dtype), grid - c[:, None, None]) + offset.astype(x.dtype)[:, None, None]
    one = lambda img: jax.scipy.ndimage.map_coordinates(img, [src[0], src[1]], order=1, mode="constant", cval=0.0)
    # vmap over images, then channels (channel axis last).
    return jax.vmap(jax.vmap(one, in_axes=-1, out_axes=-1))(x)


def _color(om, x):
    x = x + (om.color[0] - 0.5)
    m = jnp.mean(x, axis=-1, keepdims=True)
    x = (x - m) * (2 * om.color[1]) + m
    m = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    return (x - m) * (om.color[2] + 0.5) + m


def _crop(om, x):
    _, h, w, _ = x.shape
    # integer shifts in [-h/8, h/8]: bilinear sampling at integer offsets is an exact shift
    sh = jnp.round((2 * om.shift - 1) * jnp.asarray([h, w], x.dtype) * _CROP)
    return _resample(x, jnp.eye(2), sh)


def _cutout(om, x):
    _, h, w, _ = x.shape
    ch, cw = int(h * _CUTOUT + 0.5), int(w * _CUTOUT + 0.5)
    r0 = jnp.floor(om.cut_center[0] * (h + 1 - ch % 2)) - ch // 2
    c0 = jnp.floor(om.cut_center[1] * (w + 1 - cw % 2)) - cw // 2
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    hole = (rows >= r0) & (rows < r0 + ch) & (cols >= c0) & (cols < c0 + cw)
    return x * (1.0 - hole.astype(x.dtype))[None, :, :, None]


def _flip(om, x):
    return om.flip * x[:, :, ::-1, :] + (1 - om.flip) * x


def _scale(om, x):
    return _resample(x, jnp.diag(om.scale), jnp.zeros(2))


def _rotate(om, x):
    c, s = jnp.cos(om.angle), jnp.sin(om.angle)
    return _resample(x, jnp.asarray([[c, -s], [s, c]]), jnp.zeros(2))


_FNS = (_color, _crop, _cutout, _flip, _scale, _rotate)


def apply(omega: DSAParams, x: jax.Array, strategy: str | None = None) -> jax.Array:
    """Apply the drawn augmentation ω to NHWC images ``x`` (all images alike); differentiable in ``x``.

    Args:
      omega: a :class:`DSAParams` from :func:`sample`.
      x: ``(n, H, W, C)`` float images.
      strategy: the strategy ω was drawn with. Only its families are compiled: each family
        is a branch of a ``lax.switch`` that XLA compiles whichever branch runs, and the
        resampling families cost the most. ``None`` compiles all six. An ω outside
        ``strategy`` is a ``ValueError`` when ω is concrete and NaN images under ``jit``.

    Returns:
      ``(n, H, W, C)`` augmented images.
    """
    if not isinstance(omega, DSAParams):
        raise TypeError(f"omega: expected DSAParams from augment.sample, got {type(omega).__name__}")
    check_array(x, "x", ndim=4, kind="float")
    if strategy is None:
        return _switch(omega, tuple(range(len(TRANSFORMS))), x)
    families = tuple(sorted(set(parse_strategy(strategy))))
    if is_concrete(omega.which) and int(omega.which) not in families:
        raise ValueError(f"omega: draws {TRANSFORMS[int(omega.which)]!r}, which strategy {strategy!r} does not hold")
    inside = jnp.any(jnp.asarray(families) == omega.which)
    return jnp.where(inside, _switch(omega, families, x), jnp.nan)


def _switch(omega: DSAParams, families: tuple[int, ...], x: jax.Array) -> jax.Array:
    # ω's parameters are drawn in the default float dtype (float64 under jax_enable_x64); every
    # branch returns x's dtype so lax.switch sees equal branch types.
    branches = [lambda xx, f=_FNS[i]: f(omega, xx).astype(xx.dtype) for i in families]
    if len(branches) == 1:
        return branches[0](x)
    # position of ω.which among the compiled families (the full set: ω.which itself)
    position = omega.which if len(families) == len(TRANSFORMS) else jnp.argmax(jnp.asarray(families) == omega.which)
    return jax.lax.switch(position, branches, x)


def augment(key: jax.Array, x: jax.Array, strategy: str = DIGITS_STRATEGY) -> jax.Array:
    """``apply(sample(key, strategy), x)``: call it with the same key on real and synthetic images."""
    check_array(x, "x", ndim=4, kind="float")  # before sampling ω: a bad batch fails fast
    check_key(key)
    return apply(sample(key, strategy), x, strategy)


def augment_each(key: jax.Array, x: jax.Array, strategy: str = DIGITS_STRATEGY) -> jax.Array:
    """Every image augmented with its own ω: image ``i`` is ``augment(split(key, n)[i], x[i:i+1])``.

    Training a network on a synthetic set with this augmentation is the evaluation protocol
    of DSA (Zhao & Bilen 2021, §4) and DM (Zhao & Bilen 2023, §4.1); the matching objectives
    use :func:`augment` instead, one ω shared by the real and the synthetic batch.

    Args:
      key: PRNG key.
      x: ``(n, H, W, C)`` float images.
      strategy: the transformation families, as for :func:`sample`.

    Returns:
      ``(n, H, W, C)`` augmented images.
    """
    check_array(x, "x", ndim=4, kind="float")
    check_key(key)
    parse_strategy(strategy)
    one = lambda k, xi: apply(sample(k, strategy), xi[None], strategy)[0]
    return jax.vmap(one)(jax.random.split(key, x.shape[0]), x)
