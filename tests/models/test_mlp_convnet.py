"""MLP and ConvNet as ModelFns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.convnet import convnet
from models.mlp import mlp
from models.model_fns import ModelFns


@pytest.fixture(autouse=True)
def _float32(x32):
    # The flax reference module and the numpy reference are float32; pin it whatever other modules set.
    yield


def test_mlp_shapes_and_features():
    x = jnp.ones((5, 8, 8, 1))
    model = mlp(10, hidden=(32, 16))
    assert isinstance(model, ModelFns)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x)
    assert model.apply(params, x).shape == (5, 10)
    assert mlp(10, hidden=(32, 16), features_only=True).apply(params, x).shape == (5, 16)
    assert params["dense_0"]["kernel"].shape == (64, 32)


@pytest.mark.slow
def test_convnet_architecture():
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))
    model = convnet(10, width=16, depth=3)
    params = model.init(jax.random.PRNGKey(0), x)
    apply = jax.jit(model.apply)
    assert apply(params, x).shape == (4, 10)
    assert [params[f"conv_{i}"]["kernel"].shape for i in range(3)] == [(3, 3, 1, 16), (3, 3, 16, 16), (3, 3, 16, 16)]
    assert params["head"]["kernel"].shape == (16, 10)  # 8 → 4 → 2 → 1 after three poolings
    # instance norm: each image is normalised on its own, so outputs do not depend on the batch
    np.testing.assert_allclose(apply(params, x[:2]), apply(params, x)[:2], rtol=1e-5, atol=1e-6)
    # ... and invariant to rescaling the input intensities (the conv bias cancels in the norm)
    np.testing.assert_allclose(apply(params, 3 * x), apply(params, x), rtol=1e-3, atol=1e-4)
    feats = jax.eval_shape(convnet(10, width=16, features_only=True).apply, params, x)
    assert feats.shape == (4, 16)
    # 32×32 inputs (CIFAR-size) reach a 4×4 map: 16·4·4 head inputs
    big = jax.eval_shape(convnet(10, width=8).init, jax.random.PRNGKey(0), jnp.ones((1, 32, 32, 3)))
    assert big["head"]["kernel"].shape == (8 * 4 * 4, 10)
    # 28×28 grayscale: SAME everywhere ends on 3×3 (28 → 14 → 7 → 3); the papers' stem padding of 3 on 4×4
    fm = jnp.ones((1, 28, 28, 1))
    assert jax.eval_shape(convnet(10, width=8).init, jax.random.PRNGKey(0), fm)["head"]["kernel"].shape == (72, 10)
    papers = jax.eval_shape(convnet(10, width=8, stem_padding=3).init, jax.random.PRNGKey(0), fm)
    assert papers["head"]["kernel"].shape == (8 * 4 * 4, 10)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="width"):
        convnet(10, width=0)
    with pytest.raises(ValueError, match="norm"):
        convnet(10, norm="batch")
    with pytest.raises(ValueError, match="conv"):
        convnet(10, conv="fft")
    with pytest.raises(ValueError, match="stem_padding"):
        convnet(10, stem_padding=-1)
    with pytest.raises(ValueError, match="stem_padding=0"):  # a 2×2 image has no 3×3 VALID output
        convnet(10, stem_padding=0).init(jax.random.PRNGKey(0), jnp.ones((1, 2, 2, 1)))
    with pytest.raises(ValueError, match="x"):
        convnet(10).init(jax.random.PRNGKey(0), jnp.ones((2, 64)))
    with pytest.raises(ValueError, match="hidden"):
        mlp(3, hidden=(), features_only=True)


def _numpy_convnet(params, x, depth, stem_padding=1):
    """Hand-written NumPy reference: explicit 3×3 convolution loops (the first padded by ``stem_padding``, the
    others SAME), instance norm, ReLU, 2×2 mean pool."""
    h = np.asarray(x, np.float64)
    for i in range(depth):
        k = np.asarray(params[f"conv_{i}"]["kernel"], np.float64)
        p = stem_padding if i == 0 else 1
        n, hh, ww, _ = h.shape
        ho, wo = hh + 2 * p - 2, ww + 2 * p - 2
        pad = np.pad(h, ((0, 0), (p, p), (p, p), (0, 0)))
        out = np.zeros((n, ho, wo, k.shape[-1])) + np.asarray(params[f"conv_{i}"]["bias"])
        for a in range(3):
            for b in range(3):
                out += pad[:, a:a + ho, b:b + wo, :] @ k[a, b]
        mu = out.mean((1, 2), keepdims=True)
        var = out.var((1, 2), keepdims=True)
        out = (out - mu) / np.sqrt(var + 1e-5) * np.asarray(params[f"norm_{i}"]["scale"]) + np.asarray(
            params[f"norm_{i}"]["bias"])
        h = np.maximum(out, 0)
        if h.shape[1] >= 2 and h.shape[2] >= 2:
            n, hh, ww, c = h.shape
            h = h[:, : hh // 2 * 2, : ww // 2 * 2].reshape(n, hh // 2, 2, ww // 2, 2, c).mean((2, 4))
    h = h.reshape(h.shape[0], -1)
    return h @ np.asarray(params["head"]["kernel"]) + np.asarray(params["head"]["bias"])


def _perturbed(params, seed):
    """Random non-default values for every parameter (scale ≠ 1, biases ≠ 0); numpy draws them,
    as eager ``jax.random`` calls would compile a sampler for every parameter shape."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a + 0.3 * rng.normal(size=a.shape), a.dtype), params)


@pytest.mark.parametrize("side,channels,depth,stem", [
    (7, 3, 2, 1), (8, 1, 2, 3), pytest.param(12, 2, 3, 1, marks=pytest.mark.slow)])
def test_convnet_matches_flax_module_and_numpy_reference(side, channels, depth, stem):
    from models.convnet import ConvNet

    x = jax.random.normal(jax.random.PRNGKey(1), (3, side, side, channels))
    model = convnet(10, width=6, depth=depth, stem_padding=stem)
    # Only the parameters' structure comes from the module (eval_shape: traced, not compiled); every value is drawn.
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    params = _perturbed(jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), 2)
    ref_apply = lambda p, xb: ConvNet(10, 6, depth, stem_padding=stem).apply({"params": p}, xb)
    if stem == 3:  # the papers' single-channel stem: 8 → 12 → pool 6 → 6 → pool 3, so 6·3·3 head inputs
        assert shapes["head"]["kernel"].shape == (6 * 3 * 3, 10)

    @jax.jit
    def both(p):  # logits and the gradient of Σ sin(logits) of the new apply and of the flax module
        f = lambda apply: jax.value_and_grad(lambda q: jnp.sum(jnp.sin(apply(q, x))), has_aux=False)(p)
        return (model.apply(p, x), ref_apply(p, x)), (f(model.apply)[1], f(ref_apply)[1])

    (out, ref), (g_new, g_ref) = both(params)
    # the flax module of the previous implementation, same parameters → same logits
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out, _numpy_convnet(params, x, depth, stem), rtol=1e-4, atol=1e-4)
    # the gradients agree as well (the skipped conv bias gets exactly 0: instance norm cancels it)
    flat_new, flat_ref = jax.tree_util.tree_leaves_with_path(g_new), jax.tree_util.tree_leaves(g_ref)
    for (path, a), b in zip(flat_new, flat_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=jax.tree_util.keystr(path))
    assert not np.any(np.asarray(g_new["conv_0"]["bias"]))
    # the lax convolution gives the same logits as the im2col one (the default)
    lax_out = jax.jit(convnet(10, width=6, depth=depth, conv="lax", stem_padding=stem).apply)(params, x)
    np.testing.assert_allclose(lax_out, out, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # the flax/numpy reference comparison stays in the default run
def test_convnet_without_norm_and_features():
    from models.convnet import ConvNet

    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1))
    params = _perturbed(convnet(4, width=5, depth=2, norm="none").init(jax.random.PRNGKey(0), x), 3)
    out, ref, feats = jax.jit(lambda p: (
        convnet(4, width=5, depth=2, norm="none").apply(p, x), ConvNet(4, 5, 2, "none").apply({"params": p}, x),
        convnet(4, width=5, depth=2, norm="none", features_only=True).apply(p, x)))(params)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert feats.shape == (2, 5 * 2 * 2)  # 8 → 4 → 2
    np.testing.assert_allclose(feats @ params["head"]["kernel"] + params["head"]["bias"], out, rtol=1e-5, atol=1e-5)


def test_torch_init_is_pytorchs_default_initialisation():
    """``init='torch'``: every kernel and bias ~ U(±1/√fan_in) (PyTorch's Conv2d / Linear
    defaults: kaiming_uniform(a=√5) = U(±1/√fan_in), std 1/√(3·fan_in)); the norm's affine
    map stays (1, 0); same structure, shapes and dtypes as the flax initialisation."""
    x = jnp.zeros((1, 8, 8, 1))
    flax_p = jax.eval_shape(convnet(10, width=32, depth=2).init, jax.random.PRNGKey(0), x)  # no compile
    torch_fns = convnet(10, width=32, depth=2, init="torch")
    init = jax.jit(torch_fns.init)
    p = init(jax.random.PRNGKey(0), x)
    assert jax.tree.structure(p) == jax.tree.structure(flax_p)
    assert all(a.shape == b.shape and a.dtype == b.dtype
               for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(flax_p), strict=True))
    fan_ins = {"conv_0": 9, "conv_1": 9 * 32, "head": 32 * 2 * 2}
    for name, fan_in in fan_ins.items():
        bound = fan_in ** -0.5
        for part in ("kernel", "bias"):
            w = np.asarray(p[name][part])
            assert 0 < np.abs(w).max() <= bound, (name, part)
            if w.size >= 100:
                assert np.abs(w).max() > 0.9 * bound, (name, part)
        w = np.asarray(p[name]["kernel"]).ravel()
        if w.size > 9_000:  # uniform, not normal (0.61 inside): std b/√3 and half the mass inside ±b/2
            assert np.std(w) == pytest.approx(bound / np.sqrt(3), rel=0.02)
            assert np.mean(np.abs(w) < bound / 2) == pytest.approx(0.5, abs=0.02)
    for i in range(2):
        np.testing.assert_array_equal(p[f"norm_{i}"]["scale"], 1.0)
        np.testing.assert_array_equal(p[f"norm_{i}"]["bias"], 0.0)
    # Deterministic in the key, new draws for a new key.
    again = init(jax.random.PRNGKey(0), x)
    np.testing.assert_array_equal(again["conv_1"]["kernel"], p["conv_1"]["kernel"])
    other = init(jax.random.PRNGKey(1), x)
    assert not np.allclose(other["conv_1"]["kernel"], p["conv_1"]["kernel"])
    with pytest.raises(ValueError, match="init"):
        convnet(10, init="kaiming")
