"""IDX reader and Fashion-MNIST loader on tiny files the tests write."""

import gzip
import struct

import numpy as np
import pytest

from distill import data as D


def _idx(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_dataset(root, rng, n_train=7, n_test=3, h=4, w=5, compress=True):
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, h, w), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, h, w), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, a in arrays.items():
        raw = _idx(a)
        if compress:
            (root / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (root / stem).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_round_trip_gzip_and_plain(tmp_path, compress):
    arrays = _write_dataset(tmp_path / "fm", np.random.default_rng(0), compress=compress)
    train, test = D.load_fashion_mnist(tmp_path / "fm")
    np.testing.assert_array_equal(train.x[..., 0], arrays["train-images-idx3-ubyte"] / np.float32(255))
    np.testing.assert_array_equal(test.y, arrays["t10k-labels-idx1-ubyte"])
    assert train.x.shape == (7, 4, 5, 1) and train.x.dtype == np.float32 and train.y.dtype == np.int32
    assert train.n_classes == 10
    raw = D.load_idx_images(tmp_path / "fm" / ("train-images-idx3-ubyte" + (".gz" if compress else "")))
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw, arrays["train-images-idx3-ubyte"])


def test_other_types_are_read_big_endian(tmp_path):
    a = np.arange(6, dtype=np.int32).reshape(2, 3) - 2
    (tmp_path / "a.idx").write_bytes(_idx(a, 0x0C))
    got = D.load_idx(tmp_path / "a.idx")
    np.testing.assert_array_equal(got, a)
    assert got.dtype == np.int32


def test_bad_files_name_the_path(tmp_path):
    good = _idx(np.zeros((2, 3, 3), np.uint8))
    cases = {
        "magic": b"\x08\x03" + good[2:],
        "type": good[:2] + b"\x42" + good[3:],
        "header": good[:6],
        "truncated": good[:-2],
        "trailing": good + b"\x00",
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(ValueError, match=f"path: .*{name}"):
            D.load_idx(tmp_path / name)
    (tmp_path / "cut.gz").write_bytes(gzip.compress(good)[:-5])
    with pytest.raises(ValueError, match="cut.gz could not be read"):
        D.load_idx(tmp_path / "cut.gz")
    (tmp_path / "labels").write_bytes(_idx(np.zeros(4, np.uint8)))
    with pytest.raises(ValueError, match="expected uint8 images"):
        D.load_idx_images(tmp_path / "labels")
    with pytest.raises(FileNotFoundError, match="path"):
        D.load_idx(tmp_path / "missing")


def test_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        D.load_fashion_mnist(tmp_path)
    arrays = _write_dataset(tmp_path / "m", np.random.default_rng(1))
    (tmp_path / "m" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(arrays["t10k-labels-idx1-ubyte"][:2])))
    with pytest.raises(ValueError, match="3 test images but 2 labels"):
        D.load_idx_dataset(tmp_path / "m")
    with pytest.raises(ValueError, match="n_classes"):
        D.load_idx_dataset(tmp_path / "m", n_classes=3)


def test_installed_fashion_mnist_if_present():
    import os

    if not os.path.isdir(D.FASHION_MNIST_ROOT):
        pytest.skip("dataset-fashion-mnist is not installed")
    train, test = D.load_fashion_mnist()
    assert train.x.shape == (60000, 28, 28, 1) and test.x.shape == (10000, 28, 28, 1)
    assert np.bincount(train.y).tolist() == [6000] * 10
