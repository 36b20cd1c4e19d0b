"""MLP and ConvNet as ModelFns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.convnet import convnet
from models.mlp import mlp
from models.model_fns import ModelFns


def test_mlp_shapes_and_features():
    x = jnp.ones((5, 8, 8, 1))
    model = mlp(10, hidden=(32, 16))
    assert isinstance(model, ModelFns)
    params = model.init(jax.random.PRNGKey(0), x)
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


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="width"):
        convnet(10, width=0)
    with pytest.raises(ValueError, match="norm"):
        convnet(10, norm="batch")
    with pytest.raises(ValueError, match="x"):
        convnet(10).init(jax.random.PRNGKey(0), jnp.ones((2, 64)))
    with pytest.raises(ValueError, match="hidden"):
        mlp(3, hidden=(), features_only=True)
