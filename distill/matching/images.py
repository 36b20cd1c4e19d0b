"""Synthetic images for the matching objectives: Farzi's latent parametrization and export.

:func:`latent_images` reuses :func:`distill.parametrize.latent_factorization` (Farzi,
dissertation Ch. 4, Eq. 4.1) for images by treating every pixel as a *token* over
``levels`` grey levels: the summary is ``softmax(Z · M / τ)`` with ``Z ∈ R^{n×(H·W·C)×d}``
and a shared decoder ``M ∈ R^{d×levels}``, and a pixel's intensity is the expected level
``Σ_v p_v · v/(levels − 1)`` (then standardised like the real data). Storage is
``n·H·W·C·d + d·levels`` numbers and every pixel stays inside the data range. This is
how §4.6.5 / Table 4.8 compares DC, MM, MTT with Farzi's parametrization (there for
token sequences); sklearn digits have exactly 17 grey levels (0..16).

:func:`save_synthetic` writes a distilled set with :mod:`distill.export` (numpy-only
loading: ``np.load(path + '.npz')`` or ``export.load``).
"""

from __future__ import annotations

import pathlib
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from distill import export
from distill.checks import check_array, check_int
from distill.parametrize import Parametrization, latent_factorization

__all__ = ["latent_images", "save_synthetic"]


def latent_images(
    n_images: int,
    image_shape: Sequence[int],
    *,
    levels: int = 17,
    latent_dim: int = 8,
    tau: float = 1.0,
    init_scale: float = 1.0,
    mean: Any = 0.0,
    std: Any = 1.0,
) -> Parametrization:
    """Farzi's ``softmax(Z·M/τ)`` over per-pixel grey levels, decoded to images.

    Args:
      n_images: number of synthetic images (class-grouped by the caller's convention).
      image_shape: ``(H, W, C)``.
      levels: grey levels V ≥ 2 (intensity ``v/(V−1)`` for level v).
      latent_dim: d.
      tau: softmax temperature.
      init_scale: Gaussian scale of Z and M at ``init``.
      mean, std: per-channel standardisation applied after decoding (the real data's).

    Returns:
      ``Parametrization``: ``init(key) -> LatentFactors``; ``materialize(params, key) ->
      (n_images, H, W, C)`` standardised images.

    Source: dissertation Ch. 4, Eq. 4.1 (Farzi) and §4.6.5 (other objectives with it).
    """
    n_images = check_int(n_images, "n_images", min_value=1)
    if len(tuple(image_shape)) != 3:
        raise ValueError(f"image_shape: expected (H, W, C), got {tuple(image_shape)}")
    shape = tuple(check_int(s, "image_shape", min_value=1) for s in image_shape)
    levels = check_int(levels, "levels", min_value=2)
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    if not np.all(np.isfinite(mean)) or not np.all(std > 0):
        raise ValueError("std: expected positive standard deviations and a finite mean")
    base = latent_factorization(n_images, int(np.prod(shape)), latent_dim, levels, tau=tau, init_scale=init_scale)
    grey = jnp.linspace(0.0, 1.0, levels)

    def materialize(params: Any, key: jax.Array) -> jax.Array:
        probs = base.materialize(params, key)  # (n, H·W·C, V)
        x = (probs @ grey.astype(probs.dtype)).reshape((n_images,) + shape)
        return (x - mean) / std

    return Parametrization(base.init, materialize)


def save_synthetic(
    path: Any, images: Any, labels: Any, settings: Mapping[str, Any] | None = None
) -> pathlib.Path:
    """Write a synthetic set as ``<path>.npz`` (``images``, ``labels``) + ``<path>.json``.

    Args:
      path: destination without extension.
      images: ``(n, H, W, C)`` float images.
      labels: ``(n,)`` int or ``(n, C)`` soft labels.
      settings: JSON description (method, ipc, standardisation, …).

    Returns:
      The ``.npz`` path.
    """
    check_array(images, "images", kind="float", finite=True)
    check_array(labels, "labels", ndim=(1, 2), kind="numeric", shape=(images.shape[0],) + tuple(labels.shape[1:]))
    return export.save(path, {"images": np.asarray(images), "labels": np.asarray(labels)}, settings)
