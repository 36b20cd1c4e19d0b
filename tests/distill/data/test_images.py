"""Image data: digits split, standardisation, class-balanced subsets, TFDS guards."""

import math
import sys
from collections import Counter

import numpy as np
import pytest
from sklearn.datasets import load_digits as sk_load_digits

from distill.data import images as IM

DIGITS_PER_CLASS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


@pytest.fixture(scope="module")
def digits():
    return IM.load_digits()


def _rows(x, y):
    """Multiset of (image bytes, label): compares datasets up to row order."""
    flat = np.ascontiguousarray(x, np.float32).reshape(x.shape[0], -1)
    return Counter((r.tobytes(), int(label)) for r, label in zip(flat, y, strict=False))


def test_digits_shapes_ranges_and_partition(digits):
    train, test = digits
    assert train.x.shape == (1_438, 8, 8, 1) and test.x.shape == (359, 8, 8, 1)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int32
    assert train.n_classes == test.n_classes == 10
    for d in digits:
        assert d.x.min() == 0.0 and d.x.max() == 1.0
        # pixels are counts 0..16 divided by 16
        np.testing.assert_array_equal(d.x * 16, np.round(d.x * 16))
    raw = sk_load_digits()
    whole = _rows(raw.images.astype(np.float32) / 16, raw.target)
    assert _rows(train.x, train.y) + _rows(test.x, test.y) == whole  # disjoint union


def test_digits_stratified(digits):
    train, test = digits
    np.testing.assert_array_equal(np.bincount(train.y) + np.bincount(test.y), DIGITS_PER_CLASS)
    want = [math.floor(0.2 * n + 0.5) for n in DIGITS_PER_CLASS]
    np.testing.assert_array_equal(np.bincount(test.y, minlength=10), want)
    t2, s2 = IM.load_digits(test_frac=0.5, seed=0)
    np.testing.assert_array_equal(
        np.bincount(s2.y), [math.floor(0.5 * n + 0.5) for n in DIGITS_PER_CLASS]
    )
    # a tiny fraction still puts one image of every class in test
    _, tiny = IM.load_digits(test_frac=0.001)
    np.testing.assert_array_equal(np.bincount(tiny.y), np.ones(10))


def test_digits_seed(digits):
    again = IM.load_digits(seed=0)
    other = IM.load_digits(seed=1)
    np.testing.assert_array_equal(again[1].x, digits[1].x)
    assert not np.array_equal(other[1].x, digits[1].x)
    np.testing.assert_array_equal(np.bincount(other[1].y), np.bincount(digits[1].y))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(test_frac=0.0), ValueError, "test_frac"),
        (dict(test_frac=1.0), ValueError, "test_frac"),
        (dict(test_frac=-0.2), ValueError, "test_frac"),
        (dict(test_frac=None), TypeError, "test_frac"),
        (dict(seed=-1), ValueError, "seed"),
    ],
)
def test_digits_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        IM.load_digits(**kwargs)


def test_standardize(digits):
    train, test = digits
    z, mean, std = IM.standardize(train.x)
    assert z.dtype == mean.dtype == std.dtype == np.float32 and mean.shape == std.shape == (1,)
    np.testing.assert_allclose(z.reshape(-1, 1).mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.reshape(-1, 1).std(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(mean, train.x.mean(), rtol=1e-6)
    zt, mt, st = IM.standardize(test.x, mean, std)
    np.testing.assert_allclose(zt, (test.x - mean) / std, rtol=1e-6)
    np.testing.assert_array_equal(mt, mean)
    np.testing.assert_array_equal(st, std)
    # per channel, constant channel -> 0 rather than NaN
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(3.0, 2.0, (50, 4, 4, 1)), np.full((50, 4, 4, 1), 7.0)], -1)
    z, mean, std = IM.standardize(x)
    np.testing.assert_allclose(mean, [x[..., 0].mean(), 7.0], rtol=1e-6)
    np.testing.assert_allclose(std, [x[..., 0].std(), 1.0], rtol=1e-5)
    assert np.all(z[..., 1] == 0.0) and np.isfinite(z).all()


def test_standardize_bad_input(digits):
    x = digits[0].x
    m, s = np.zeros(1, np.float32), np.ones(1, np.float32)
    with pytest.raises(ValueError, match="std"):
        IM.standardize(x, mean=m)
    with pytest.raises(ValueError, match="std"):
        IM.standardize(x, m, np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="mean"):
        IM.standardize(x, np.zeros(3, np.float32), np.ones(3, np.float32))
    with pytest.raises(TypeError, match="mean"):
        IM.standardize(x, [0.0], s)
    with pytest.raises(ValueError, match="x"):
        IM.standardize(np.array([1.0, np.nan]).reshape(1, 2))
    with pytest.raises(TypeError, match="x"):
        IM.standardize(x.tolist())
    with pytest.raises(ValueError, match="x"):
        IM.standardize(np.ones(5))


def test_class_balanced_subset(digits):
    train = digits[0]
    sub = IM.class_balanced_subset(train, 10, seed=0)
    assert sub.x.shape == (100, 8, 8, 1) and sub.n_classes == 10
    np.testing.assert_array_equal(sub.y, np.repeat(np.arange(10), 10))  # grouped by class
    have = _rows(train.x, train.y)
    for k, c in _rows(sub.x, sub.y).items():
        assert have[k] >= c  # drawn from the data, without replacement
    again = IM.class_balanced_subset(train, 10, seed=0)
    np.testing.assert_array_equal(again.x, sub.x)
    other = IM.class_balanced_subset(train, 10, seed=1)
    assert not np.array_equal(other.x, sub.x)
    # a generator draws exactly what its seed would
    np.testing.assert_array_equal(IM.class_balanced_subset(train, 10, seed=np.random.default_rng(0)).x, sub.x)
    smallest = int(np.bincount(train.y).min())
    assert IM.class_balanced_subset(train, smallest).y.shape == (10 * smallest,)
    with pytest.raises(ValueError, match="per_class"):
        IM.class_balanced_subset(train, smallest + 1)
    with pytest.raises(ValueError, match="per_class"):
        IM.class_balanced_subset(train, 0)
    with pytest.raises(TypeError, match="data"):
        IM.class_balanced_subset((train.x, train.y), 1)


def test_tfds_images_argument_checks_and_missing_package(monkeypatch):
    with pytest.raises(ValueError, match="name"):
        IM.load_tfds_images("imagenet2012")
    with pytest.raises(TypeError, match="split"):
        IM.load_tfds_images("mnist", split=None)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"`tfds` extra"):
        IM.load_tfds_images("mnist")


@pytest.mark.slow  # downloads MNIST on first use
def test_tfds_mnist():
    pytest.importorskip("tensorflow_datasets")
    d = IM.load_tfds_images("mnist", split="test")
    assert d.x.shape == (10_000, 28, 28, 1) and d.n_classes == 10
    assert d.x.min() == 0.0 and d.x.max() == 1.0 and d.y.dtype == np.int32
