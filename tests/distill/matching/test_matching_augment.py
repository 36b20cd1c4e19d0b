"""distill.matching.augment (DSA): exact shifts/flips/cutout, Siamese consistency, gradients, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill.matching import augment as A

# one compilation per input shape for every transformation (ω is traced); eager
# lax.switch would re-trace all six branches on every call
apply = jax.jit(A.apply)


def _images(n=3, h=6, w=6, c=2):
    return jax.random.uniform(jax.random.key(0), (n, h, w, c))


def _omega(which, **kw):
    om = A.sample(jax.random.key(1), A.CIFAR_STRATEGY)._replace(which=jnp.int32(A.TRANSFORMS.index(which)))
    return om._replace(**{k: jnp.asarray(v, jnp.float32) for k, v in kw.items()})


def test_crop_is_an_integer_shift_with_zero_fill():
    x = _images()
    # shift fractions 0.75 → round((2·0.75 − 1) · 6 · 1/8) = round(0.375) = 0; 1.0 → round(0.75) = 1
    y = apply(_omega("crop", shift=[1.0, 0.0]), x)
    # output row i samples input row i + 1; column shift round(−0.75) = −1: output col j samples j − 1
    ref = np.zeros_like(np.asarray(x))
    ref[:, :-1, 1:, :] = np.asarray(x)[:, 1:, :-1, :]
    np.testing.assert_allclose(y, ref, atol=1e-6)


def test_flip_cutout_and_identity_scale():
    x = _images()
    np.testing.assert_allclose(apply(_omega("flip", flip=1.0), x), np.asarray(x)[:, :, ::-1], atol=0)
    np.testing.assert_allclose(apply(_omega("flip", flip=0.0), x), x, atol=0)
    np.testing.assert_allclose(apply(_omega("scale", scale=[1.0, 1.0]), x), x, atol=1e-6)
    np.testing.assert_allclose(apply(_omega("rotate", angle=0.0), x), x, atol=1e-6)
    y = np.asarray(apply(_omega("cutout", cut_center=[0.5, 0.5]), x))
    hole = np.all(y == 0, axis=(0, 3))
    assert hole.sum() == 9 and np.all(y[:, ~hole] == np.asarray(x)[:, ~hole])  # a 3×3 square of a 6×6 image


def test_color_matches_formula():
    x = _images()
    u = np.asarray([0.7, 0.4, 0.9])
    y = np.asarray(apply(_omega("color", color=u), x))
    r = np.asarray(x) + (u[0] - 0.5)
    r = (r - r.mean(-1, keepdims=True)) * 2 * u[1] + r.mean(-1, keepdims=True)
    r = (r - r.mean((1, 2, 3), keepdims=True)) * (u[2] + 0.5) + r.mean((1, 2, 3), keepdims=True)
    np.testing.assert_allclose(y, r, atol=1e-5)


@pytest.mark.parametrize("which", A.TRANSFORMS)
def test_siamese_same_omega_on_real_and_synthetic(which):
    # per-image transformations: augmenting [real; syn] together equals augmenting each side
    om = A.sample(jax.random.key(2), A.CIFAR_STRATEGY)._replace(which=jnp.int32(A.TRANSFORMS.index(which)))
    real, syn = _images(4), _images(2) * 2 - 1
    both = apply(om, jnp.concatenate([real, syn]))
    np.testing.assert_allclose(both[:4], apply(om, real), atol=1e-6)
    np.testing.assert_allclose(both[4:], apply(om, syn), atol=1e-6)
    g = jax.grad(lambda s: jnp.sum(apply(om, s) ** 2))(syn)
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).max()) > 0


def test_sample_respects_strategy():
    picks = {int(A.sample(jax.random.key(i), "flip_rotate").which) for i in range(40)}
    assert picks == {A.TRANSFORMS.index("flip"), A.TRANSFORMS.index("rotate")}


def test_validation():
    with pytest.raises(ValueError, match="strategy"):
        A.sample(jax.random.key(0), "color_blur")
    with pytest.raises(TypeError, match="strategy"):
        A.parse_strategy("")
    with pytest.raises(ValueError, match="x"):
        A.augment(jax.random.key(0), jnp.ones((6, 6, 1)))
    with pytest.raises(TypeError, match="omega"):
        A.apply(None, _images())
