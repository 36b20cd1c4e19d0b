"""map_rows / sum_rows on 8 fake CPU devices equal the single-device computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import parallel


def _rowwise(x, w):
    return jnp.tanh(x @ w)


def _weighted_loss(x, weights, w):
    return jnp.sum(weights * jnp.sum(jnp.tanh(x @ w) ** 2, axis=1))


def _sharded_equals_single():
    jax.config.update("jax_enable_x64", True)
    mesh = parallel.make_mesh()
    assert mesh.size == 8
    rng = np.random.default_rng(0)
    for n in (8, 13, 3):  # divisible, ragged, fewer rows than devices
        x = jnp.asarray(rng.normal(size=(n, 5)))
        w = jnp.asarray(rng.normal(size=(5, 4)))
        single = _rowwise(x, w)
        sharded = jax.jit(lambda x, w: parallel.map_rows(_rowwise, x, w, mesh=mesh))(x, w)
        np.testing.assert_allclose(sharded, single, rtol=1e-12)
        loss1 = lambda w, x=x: parallel.sum_rows(_weighted_loss, x, w)
        loss8 = lambda w, x=x: parallel.sum_rows(_weighted_loss, x, w, mesh=mesh)
        np.testing.assert_allclose(jax.jit(loss8)(w), loss1(w), rtol=1e-12)
        np.testing.assert_allclose(jax.jit(jax.grad(loss8))(w), jax.grad(loss1)(w), rtol=1e-12)


def test_parallel_on_8_devices(multidevice):
    multidevice(_sharded_equals_single)


def test_single_device_is_plain_call():
    x = jnp.arange(6.0).reshape(3, 2)
    w = jnp.ones((2, 2))
    np.testing.assert_allclose(parallel.map_rows(_rowwise, x, w), _rowwise(x, w))
    np.testing.assert_allclose(
        parallel.sum_rows(_weighted_loss, x, w), jnp.sum(jnp.tanh(x @ w) ** 2)
    )


def test_make_mesh_rejects_too_many_devices():
    with pytest.raises(ValueError, match="n_devices"):
        parallel.make_mesh(jax.device_count() + 1)


def _shard_rows_single_process():
    jax.config.update("jax_enable_x64", True)
    mesh = parallel.make_mesh()
    rng = np.random.default_rng(1)
    for n in (16, 13):  # divisible: stays sharded; ragged: replicated
        x = rng.normal(size=(n, 3))
        assert parallel.process_rows(n, mesh) == (0, n)  # one process holds every row
        g = parallel.shard_rows({"x": x, "i": np.arange(n)}, mesh, n)
        np.testing.assert_array_equal(g["x"], x)
        np.testing.assert_array_equal(g["i"], np.arange(n))
        assert g["x"].is_fully_replicated == (n % 8 != 0)
        if n % 8 == 0:
            assert [s.data.shape[0] for s in g["x"].addressable_shards] == [2] * 8
        w = rng.normal(size=(3, 2))
        loss = lambda w, x: parallel.sum_rows(_weighted_loss, x, w, mesh=mesh)
        np.testing.assert_allclose(jax.jit(loss)(w, g["x"]), np.sum(np.tanh(x @ w) ** 2), rtol=1e-12)
    half = parallel.make_mesh(4)
    with pytest.raises(ValueError, match="local_rows: expected 13 rows"):
        parallel.shard_rows(np.zeros((12, 3)), half, 13)


def test_shard_rows_on_8_devices(multidevice):
    multidevice(_shard_rows_single_process)


def test_shard_rows_one_device_and_errors():
    mesh = parallel.make_mesh(1)
    x = np.arange(10.0).reshape(5, 2)
    assert parallel.process_rows(5, mesh) == (0, 5)
    np.testing.assert_array_equal(parallel.shard_rows(x, mesh, 5), x)
    with pytest.raises(ValueError, match="local_rows: expected 5 rows"):
        parallel.shard_rows(x[:4], mesh, 5)
    with pytest.raises(ValueError, match="local_rows: expected an array"):
        parallel.shard_rows({}, mesh, 5)
    with pytest.raises(ValueError, match="global_rows"):
        parallel.shard_rows(x, mesh, 0)
    with pytest.raises(TypeError, match="mesh"):
        parallel.process_rows(5, "data")
    grid = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("data", "model"))
    with pytest.raises(ValueError, match="1-d mesh"):
        parallel.process_rows(5, grid)
