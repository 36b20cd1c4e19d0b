"""IDX files (the MNIST / Fashion-MNIST format) and the Fashion-MNIST loader.

An IDX file is a big-endian header followed by the raw array (LeCun et al., "The MNIST
database"): two zero bytes, a type code (``0x08`` = unsigned byte), the number of
dimensions ``d``, then ``d`` big-endian ``uint32`` sizes. Images are ``idx3``
(``n × rows × cols``), labels ``idx1`` (``n``). Files may be gzip-compressed.

Fashion-MNIST (Xiao et al. 2017, MIT licence) installs offline from Debian's package
``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``), which puts the four
standard files under ``/usr/share/datasets/fashion-mnist/``; MNIST files a user already
has load the same way with ``load_idx_dataset(root)``.
"""

from __future__ import annotations

import gzip
import os
import pathlib
from typing import Any

import numpy as np

from distill.checks import check_int, check_path
from distill.data.images import ImageData

__all__ = [
    "FASHION_MNIST_ROOT",
    "FASHION_MNIST_CLASSES",
    "load_idx",
    "load_idx_images",
    "load_idx_labels",
    "load_idx_dataset",
    "load_fashion_mnist",
]

#: Where Debian's ``dataset-fashion-mnist`` package installs the files.
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _read(path: pathlib.Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            raw = f.read()
        return gzip.decompress(raw) if head == b"\x1f\x8b" else raw
    except (OSError, EOFError) as e:  # gzip raises BadGzipFile (an OSError) / EOFError when cut short
        raise ValueError(f"path: {path} could not be read ({type(e).__name__}: {e})") from None


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzip or plain) into a numpy array of its declared type and shape.

    Args:
      path: the file.

    Returns:
      The array, e.g. ``uint8 (n, 28, 28)`` for an ``idx3-ubyte`` image file.

    Raises:
      FileNotFoundError: no such file.
      ValueError: a wrong magic number, an unknown type code, or a truncated / too long
        payload (the message names the path and the sizes).
    """
    path = pathlib.Path(check_path(path, "path"))
    if not path.is_file():
        raise FileNotFoundError(f"path: {path} does not exist")
    data = _read(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _TYPES or data[3] == 0:
        raise ValueError(f"path: {path} is not an IDX file (magic number {data[:4].hex() or 'missing'})")
    ndim, dtype = data[3], np.dtype(_TYPES[data[2]])
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"path: {path} is truncated inside its header")
    shape = tuple(int(v) for v in np.frombuffer(data, ">u4", ndim, 4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"path: {path} holds {len(data) - header} payload bytes, its header {shape} "
                         f"declares {expected - header} ({'truncated' if len(data) < expected else 'trailing data'})")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def load_idx_images(path: str | os.PathLike) -> np.ndarray:
    """``uint8 (n, H, W)`` images of an ``idx3-ubyte`` file (raw intensities 0..255)."""
    x = load_idx(path)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise ValueError(f"path: {path} holds {x.dtype}{list(x.shape)}, expected uint8 images (n, H, W)")
    return x


def load_idx_labels(path: str | os.PathLike) -> np.ndarray:
    """``int32 (n,)`` labels of an ``idx1-ubyte`` file."""
    y = load_idx(path)
    if y.ndim != 1 or y.dtype != np.uint8:
        raise ValueError(f"path: {path} holds {y.dtype}{list(y.shape)}, expected uint8 labels (n,)")
    return y.astype(np.int32)


def _find(root: pathlib.Path, stem: str, hint: str) -> pathlib.Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"root: neither {stem}.gz nor {stem} is in {root}{hint}")


def load_idx_dataset(root: str | os.PathLike, *, n_classes: int = 10) -> tuple[ImageData, ImageData]:
    """The four standard files of an MNIST-format dataset in ``root`` as ``(train, test)``.

    Looks for ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
    ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``.

    Args:
      root: the folder.
      n_classes: classes of the dataset (labels must lie in ``0..n_classes-1``).

    Returns:
      ``(train, test)`` :class:`~distill.data.images.ImageData`: ``x`` float32
      ``(n, H, W, 1)`` in ``[0, 1]`` (``uint8 / 255``, like every image loader here; the raw
      bytes come from :func:`load_idx_images`), ``y`` int32.
    """
    return _load_dataset(root, n_classes, "")


def _load_dataset(root: Any, n_classes: int, hint: str) -> tuple[ImageData, ImageData]:
    root = pathlib.Path(check_path(root, "root"))
    n_classes = check_int(n_classes, "n_classes", min_value=1)
    out = []
    for part in ("train", "test"):
        img_stem, lab_stem = _STEMS[part]
        x = load_idx_images(_find(root, img_stem, hint))
        y = load_idx_labels(_find(root, lab_stem, hint))
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"root: {root} has {x.shape[0]} {part} images but {y.shape[0]} labels")
        if y.size and y.max() >= n_classes:
            raise ValueError(f"root: {root} has {part} label {int(y.max())} ≥ n_classes={n_classes}")
        out.append(ImageData((x.astype(np.float32) / 255.0)[..., None], y, n_classes))
    return out[0], out[1]


def load_fashion_mnist(root: Any = FASHION_MNIST_ROOT) -> tuple[ImageData, ImageData]:
    """Fashion-MNIST (60,000 train / 10,000 test 28×28 grey images, 10 classes), offline.

    Args:
      root: folder with the four IDX files (default: where ``apt-get install
        dataset-fashion-mnist`` puts them).

    Returns:
      ``(train, test)`` as :func:`load_idx_dataset`.

    Raises:
      FileNotFoundError: the files are missing; the message says how to install them.

    Source: Xiao, Rasul & Vollgraf (2017), "Fashion-MNIST: a Novel Image Dataset for
    Benchmarking Machine Learning Algorithms".
    """
    hint = ("; install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or pass "
            "root= a folder holding the four files from the Fashion-MNIST release")
    return _load_dataset(root, 10, hint)
