"""distill.matching.augment (DSA): exact shifts/flips/cutout, Siamese consistency, gradients, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill.matching import augment as A

N = 3  # every test uses (N, 6, 6, 2) images: one compilation per xdist worker


@jax.jit
def apply_and_grad(omega, x):
    """``A.apply(ω, x)`` and ``∇_x Σ A.apply(ω, x)²`` in one compiled function.

    ω is traced, so every transformation shares the compilation (eager lax.switch would
    re-trace all six branches on every call).
    """
    y, vjp = jax.vjp(lambda s: A.apply(omega, s), x)
    return y, vjp(2 * y)[0]


def apply(omega, x):
    return apply_and_grad(omega, x)[0]


def _images(n=N, h=6, w=6, c=2, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, h, w, c))


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


def test_siamese_same_omega_on_real_and_synthetic():
    # per-image transformations: every image's output depends only on that image and ω, not
    # on its position or batch companions — so augmenting [real; syn] together equals
    # augmenting each side. Checked for every family on one compiled shape (N images).
    real, syn = _images(2), _images(2, seed=1) * 2 - 1
    for which in A.TRANSFORMS:
        om = A.sample(jax.random.key(2), A.CIFAR_STRATEGY)._replace(which=jnp.int32(A.TRANSFORMS.index(which)))
        batch = jnp.concatenate([real, syn[:1]])  # [r0, r1, s0]
        y, g = apply_and_grad(om, batch)
        y_rolled = apply(om, jnp.roll(batch, 1, axis=0))  # [s0, r0, r1]: other positions
        np.testing.assert_allclose(y_rolled, jnp.roll(y, 1, axis=0), atol=1e-6, err_msg=which)
        y_other = apply(om, jnp.concatenate([real[:1], syn]))  # [r0, s0, s1]: other companions
        np.testing.assert_allclose(y_other[:1], y[:1], atol=1e-6, err_msg=which)
        np.testing.assert_allclose(y_other[1:2], y[2:], atol=1e-6, err_msg=which)
        assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).max()) > 0, which


def _switch_sizes(strategy, x):
    """Branch counts of the ``lax.switch``es in ``apply(ω, x, strategy)``'s program."""
    jaxpr = jax.make_jaxpr(lambda om: A.apply(om, x, strategy))(_omega("color")).jaxpr
    return [len(e.params["branches"]) for e in jaxpr.eqns if e.primitive.name == "cond"]


def test_apply_compiles_only_the_strategy_and_refuses_an_omega_outside_it():
    x, strategy = _images(), "flip_color_cutout"
    restricted = jax.jit(lambda om, xx: A.apply(om, xx, strategy))
    for which in ("color", "cutout", "flip"):  # each family inside the strategy: as with all six compiled
        om = _omega(which, flip=1.0)
        np.testing.assert_array_equal(restricted(om, x), apply(om, x), err_msg=which)
    assert _switch_sizes(strategy, x) == [3] and _switch_sizes(None, x) == [6] and _switch_sizes("cutout", x) == []
    with pytest.raises(ValueError, match="^omega:.*'crop'"):
        A.apply(_omega("crop"), x, strategy)
    assert np.all(np.isnan(np.asarray(restricted(_omega("crop"), x))))  # under jit: NaN, not a plausible image
    one = jax.jit(lambda om, xx: A.apply(om, xx, "cutout"))  # one family: no switch at all
    np.testing.assert_array_equal(one(_omega("cutout"), x), apply(_omega("cutout"), x))


def test_augment_each_draws_one_omega_per_image():
    x = _images()
    key = jax.random.key(3)
    each = jax.jit(A.augment_each, static_argnums=2)
    y = np.asarray(each(key, x, A.CIFAR_STRATEGY))
    keys = jax.random.split(key, N)
    for i in range(N):  # image i is augmented as augment() with the i-th split key would (per-image transforms)
        np.testing.assert_allclose(y[i], apply(A.sample(keys[i], A.CIFAR_STRATEGY), x)[i], atol=1e-6)
    # the draws differ between images: the same image repeated N times comes out in more than one way
    same = np.asarray(each(key, jnp.repeat(x[:1], N, axis=0), A.CIFAR_STRATEGY))
    assert np.abs(same - same[:1]).max() > 1e-3
    with pytest.raises(ValueError, match="^x:"):
        A.augment_each(key, x[0])
    with pytest.raises(ValueError, match="strategy"):
        A.augment_each(key, x, "color_blur")


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
