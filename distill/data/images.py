"""Image classification data for the dataset-distillation baselines.

Images are kept as raw intensities in ``[0, 1]``, NHWC float32; standardisation is a
separate, explicit step (:func:`standardize`) so that its statistics can come from
the *real* training set and be reused for test data and for distilled images.

* :func:`load_digits` — scikit-learn's embedded 8×8 handwritten digits (1,797
  images, offline), the small benchmark used in the tests and quick experiments.
* :func:`load_tfds_images` — MNIST / CIFAR-10 and friends through TensorFlow Datasets.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np

from distill.checks import check_array, check_choice, check_float, check_int, check_path

__all__ = [
    "ImageData",
    "load_digits",
    "load_tfds_images",
    "standardize",
    "class_balanced_subset",
    "TFDS_IMAGE_DATASETS",
]

# TFDS image-classification builders with an `image` (uint8 HWC) and a ClassLabel `label`.
TFDS_IMAGE_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped")


class ImageData(NamedTuple):
    """Labelled images.

    Attributes:
      x: float32 ``(n, H, W, C)`` intensities in ``[0, 1]`` (before :func:`standardize`).
      y: int32 ``(n,)`` labels in ``0..n_classes-1``.
      n_classes: number of classes of the dataset (also those absent from a subset).
    """

    x: np.ndarray
    y: np.ndarray
    n_classes: int


def _check_image_data(data: Any, name: str = "data") -> ImageData:
    if not isinstance(data, ImageData):
        raise TypeError(f"{name}: expected an ImageData, got {type(data).__name__}")
    return data


def load_digits(*, test_frac: float = 0.2, seed: int = 0) -> tuple[ImageData, ImageData]:
    """scikit-learn's 8×8 digits, split into train and test, stratified by class.

    Pixels are counts in ``0..16`` (4×4 blocks of a 32×32 bitmap), divided by 16.
    Per class ``c`` with ``n_c`` images, ``round(test_frac * n_c)`` (half up, clamped
    to ``[1, n_c - 1]`` so both sides have every class) random images go to test.
    With the defaults: 1,438 train / 359 test images.

    Args:
      test_frac: fraction of each class for the test set, in ``(0, 1)``.
      seed: non-negative seed of the ``np.random.default_rng`` drawing the split.

    Returns:
      ``(train, test)`` :class:`ImageData` with ``x`` of shape ``(n, 8, 8, 1)``, each in
      the original dataset order.

    Raises:
      ImportError: scikit-learn is not installed (``pip install 'jax-distill[data]'``).
    """
    test_frac = check_float(test_frac, "test_frac", min_value=0.0, strict_min=True)
    if test_frac >= 1.0:
        raise ValueError(f"test_frac: expected a number < 1, got {test_frac}")
    seed = check_int(seed, "seed", min_value=0)
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as e:
        raise ImportError(
            "load_digits needs scikit-learn, part of the `data` extra: "
            "pip install 'jax-distill[data]'"
        ) from e
    d = _sk_load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    y = d.target.astype(np.int32)
    n_classes = int(y.max()) + 1
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in range(n_classes):
        idx = np.flatnonzero(y == c)
        n_test = int(np.clip(np.floor(test_frac * idx.size + 0.5), 1, idx.size - 1))
        test_idx.append(rng.permutation(idx)[:n_test])
    is_test = np.zeros(y.shape[0], bool)
    is_test[np.concatenate(test_idx)] = True
    return (
        ImageData(x[~is_test], y[~is_test], n_classes),
        ImageData(x[is_test], y[is_test], n_classes),
    )


def load_tfds_images(
    name: str, *, split: str = "train", data_dir: str | os.PathLike | None = None
) -> ImageData:
    """An image-classification dataset from TensorFlow Datasets, fully in memory.

    Args:
      name: one of :data:`TFDS_IMAGE_DATASETS` (``'mnist'``, ``'cifar10'``, ...).
      split: TFDS split string (``'train'``, ``'test'``, ``'train[:10%]'``, ...).
      data_dir: TFDS data directory (``None``: the TFDS default).

    Returns:
      :class:`ImageData` with uint8 pixels divided by 255, ``n_classes`` from the
      builder's label feature.

    Raises:
      ImportError: ``tensorflow_datasets`` is not installed
        (``pip install 'jax-distill[tfds]'``).
    """
    check_choice(name, "name", TFDS_IMAGE_DATASETS)
    if not isinstance(split, str):
        raise TypeError(f"split: expected a str, got {type(split).__name__}")
    if data_dir is not None:
        data_dir = check_path(data_dir, "data_dir")
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "load_tfds_images needs `tensorflow_datasets`, the `tfds` extra: "
            "pip install 'jax-distill[tfds]'"
        ) from e
    ds, info = tfds.load(
        name, split=split, data_dir=data_dir, batch_size=-1, as_supervised=True, with_info=True
    )
    x, y = tfds.as_numpy(ds)
    return ImageData(
        np.asarray(x, np.float32) / 255.0,
        np.asarray(y, np.int32),
        int(info.features["label"].num_classes),
    )


def standardize(
    x: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel standardisation ``(x - mean) / std`` over the last axis.

    Call it on the training images without statistics, then pass the returned
    ``mean``/``std`` for test (and distilled) images so all share one normalisation.

    Args:
      x: numeric ``(..., C)`` images (NHWC).
      mean: ``(C,)`` channel means; ``None`` computes them from ``x``.
      std: ``(C,)`` positive channel standard deviations; ``None`` computes them from
        ``x`` (a constant channel gets std 1, so it maps to 0 instead of NaN).
        ``mean`` and ``std`` are given together or not at all.

    Returns:
      ``(x_standardized float32, mean float32 (C,), std float32 (C,))``.
    """
    check_array(x, "x", kind="numeric", finite=True)
    if x.ndim < 2:
        raise ValueError(f"x: expected an array (..., C) with at least 2 dims, got shape {x.shape}")
    if (mean is None) != (std is None):
        raise ValueError("std: mean and std must be given together (or both None)")
    x = np.asarray(x)
    c = x.shape[-1]
    if mean is None:
        flat = x.reshape(-1, c).astype(np.float64)  # float64 sums: no drift on big sets
        mean = flat.mean(axis=0)
        std = flat.std(axis=0)
        std = np.where(std > 0, std, 1.0)
    else:
        check_array(mean, "mean", shape=(c,), kind="numeric", finite=True)
        check_array(std, "std", shape=(c,), kind="numeric", finite=True)
        if not np.all(np.asarray(std) > 0):
            raise ValueError("std: expected positive standard deviations")
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    return ((x - mean) / std).astype(np.float32), mean, std


def class_balanced_subset(data: ImageData, per_class: int, *, seed: int | np.random.Generator = 0) -> ImageData:
    """``per_class`` random examples of every class (e.g. to initialise distilled images).

    Args:
      data: the dataset.
      per_class: examples per class (>= 1); every class must have that many.
      seed: non-negative seed of the ``np.random.default_rng`` choosing them, or the
        generator itself (e.g. one seeded from a JAX key).

    Returns:
      :class:`ImageData` of ``n_classes * per_class`` examples, grouped by class
      (class 0 first), each group in dataset order.

    Raises:
      ValueError: a class has fewer than ``per_class`` examples.
    """
    _check_image_data(data)
    per_class = check_int(per_class, "per_class", min_value=1)
    if isinstance(seed, np.random.Generator):
        rng = seed
    else:
        rng = np.random.default_rng(check_int(seed, "seed", min_value=0))
    picks = []
    for c in range(data.n_classes):
        idx = np.flatnonzero(np.asarray(data.y) == c)
        if idx.size < per_class:
            raise ValueError(
                f"per_class: class {c} has only {idx.size} examples, fewer than {per_class}"
            )
        picks.append(np.sort(rng.choice(idx, per_class, replace=False)))
    sel = np.concatenate(picks)
    return ImageData(data.x[sel], data.y[sel], data.n_classes)
