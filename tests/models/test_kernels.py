"""Closed-form NNGP/NTK against neural-tangents golden values, a finite wide network,
finite differences, and the sharded evaluation on 8 devices."""

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import parallel
from models import kernels

pytestmark = pytest.mark.x64  # compares to 1e-6 and tighter

GOLDEN = json.loads(
    (pathlib.Path(__file__).resolve().parents[1] / "data" / "ntk_golden.json").read_text()
)
CASES = [(name, i) for name in ("binary", "gaussian") for i in range(len(GOLDEN[name]["cases"]))]


@pytest.mark.parametrize("name,i", CASES)
@pytest.mark.parametrize("blocked", [False, True])
def test_matches_neural_tangents(name, i, blocked):
    x1, x2 = np.array(GOLDEN[name]["x1"]), np.array(GOLDEN[name]["x2"])
    case = GOLDEN[name]["cases"][i]
    kw = dict(depth=case["depth"], w_std=case["w_std"], b_std=case["b_std"])
    k = kernels.fc_relu_blocked(x1, x2, block_size=3, **kw) if blocked else kernels.fc_relu(x1, x2, **kw)
    assert k.nngp.shape == k.ntk.shape == (x1.shape[0], x2.shape[0])
    np.testing.assert_allclose(k.nngp, case["nngp"], rtol=1e-6, atol=0)
    np.testing.assert_allclose(k.ntk, case["ntk"], rtol=1e-6, atol=0)


def _mlp_init(key, d, width, depth):
    keys = jax.random.split(key, 2 * (depth + 1))
    dims = [d] + [width] * depth + [1]
    return [
        (jax.random.normal(keys[2 * l], (dims[l], dims[l + 1])), jax.random.normal(keys[2 * l + 1], (dims[l + 1],)))
        for l in range(depth + 1)
    ]


def _mlp_apply(params, x, w_std, b_std):
    h = x
    for l, (w, b) in enumerate(params):
        h = w_std / np.sqrt(w.shape[0]) * h @ w + b_std * b  # NTK parameterization
        if l < len(params) - 1:
            h = jax.nn.relu(h)
    return h[:, 0]


def _empirical_ntk(params, x1, x2, w_std, b_std):
    j1 = jax.jacrev(lambda p: _mlp_apply(p, x1, w_std, b_std))(params)
    j2 = jax.jacrev(lambda p: _mlp_apply(p, x2, w_std, b_std))(params)
    prods = jax.tree_util.tree_map(
        lambda a, b: a.reshape(a.shape[0], -1) @ b.reshape(b.shape[0], -1).T, j1, j2
    )
    return sum(jax.tree_util.tree_leaves(prods))


@pytest.mark.parametrize("depth", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_matches_finite_wide_network(depth):
    """The empirical NTK of a width-2048 MLP, averaged over seeds, is within a few %."""
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(4, 6))
    x2 = rng.normal(size=(3, 6))
    w_std, b_std = 2**0.5, 0.1
    # One compiled program for the 8 draws (eagerly, every op of every Jacobian compiles on its own).
    ntk_of_seed = jax.jit(lambda key: _empirical_ntk(_mlp_init(key, 6, 2048, depth), x1, x2, w_std, b_std))
    emp = np.mean([ntk_of_seed(jax.random.PRNGKey(s)) for s in range(8)], axis=0)
    exact = kernels.fc_relu(x1, x2, depth=depth, w_std=w_std, b_std=b_std).ntk
    rel = np.abs(emp - exact) / np.abs(exact).max()
    assert rel.max() < 0.05, rel
    # and the kernel is not trivially close: the off-diagonal structure matters
    assert np.abs(exact - exact.mean()).max() > 0.1 * np.abs(exact).max()


@pytest.mark.parametrize("b_std", [0.0, 0.1])
def test_gradients_finite_at_coincident_and_zero_rows(b_std):
    x = jnp.array([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    for depth in (1, 2):
        def loss(x, depth=depth):
            k = kernels.fc_relu(x, depth=depth, w_std=1.4, b_std=b_std)
            return jnp.sum(k.ntk**2) + jnp.sum(k.nngp)

        k = jax.jit(lambda x, depth=depth: kernels.fc_relu(x, depth=depth, b_std=b_std))(x)
        assert np.all(np.isfinite(k.ntk)) and np.all(np.isfinite(k.nngp))
        g = jax.jit(jax.grad(loss))(x)
        assert np.all(np.isfinite(g)), g


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    x1 = jnp.asarray(rng.normal(size=(3, 5)))
    x2 = jnp.asarray(rng.normal(size=(4, 5)))
    w = jnp.asarray(rng.normal(size=(3, 4)))

    @jax.jit  # compiled once for the 31 evaluations below
    def loss(x1):
        k = kernels.fc_relu(x1, x2, depth=2, w_std=1.3, b_std=0.2)
        return jnp.sum(w * k.ntk) + jnp.sum(w * k.nngp) ** 2

    g = jax.jit(jax.grad(loss))(x1)
    eps = 1e-6
    fd = np.zeros(x1.shape)
    for idx in np.ndindex(*x1.shape):
        e = np.zeros(x1.shape)
        e[idx] = eps
        fd[idx] = (loss(x1 + e) - loss(x1 - e)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


def test_gram_diagonal_gradient_matches_norm_only_formula():
    """On the diagonal of K(X, X) the cosine is 1, so k(x, x) depends on ‖x‖ only."""
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 5)))
    depth, w, b = 2, 1.4, 0.1

    def diag_sum(x):
        return jnp.trace(kernels.fc_relu(x, depth=depth, w_std=w, b_std=b).ntk)

    def diag_closed(x):
        # k⁰ = w²‖x‖²/d + b²; for c = 1: kˡ = w²kˡ⁻¹/2 + b², Θˡ = w²Θˡ⁻¹/2 + kˡ
        k = w**2 * jnp.sum(x * x, 1) / x.shape[1] + b**2
        t = k
        for _ in range(depth):
            k = w**2 * k / 2 + b**2
            t = w**2 * t / 2 + k
        return jnp.sum(t)

    np.testing.assert_allclose(diag_sum(x), diag_closed(x), rtol=1e-12)
    np.testing.assert_allclose(jax.grad(diag_sum)(x), jax.grad(diag_closed)(x), rtol=1e-6)


def test_integer_inputs_and_default_x2():
    x = np.array([[1, 0, 1], [0, 1, 1]], dtype=np.int32)
    k = kernels.fc_relu(x)
    np.testing.assert_allclose(k.ntk, kernels.fc_relu(x.astype(np.float64), x.astype(np.float64)).ntk)
    np.testing.assert_allclose(k.ntk, k.ntk.T, rtol=1e-12)


def test_bad_input():
    x = np.ones((3, 4))
    with pytest.raises(ValueError, match="x2"):
        kernels.fc_relu(x, np.ones((2, 5)))
    with pytest.raises(ValueError, match="depth"):
        kernels.fc_relu(x, depth=-1)
    with pytest.raises(TypeError, match="depth"):
        kernels.fc_relu(x, depth=1.5)
    with pytest.raises(ValueError, match="w_std"):
        kernels.fc_relu(x, w_std=0.0)
    with pytest.raises(ValueError, match="b_std"):
        kernels.fc_relu(x, b_std=-0.1)
    with pytest.raises(ValueError, match="x1"):
        kernels.fc_relu(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="x1"):
        kernels.fc_relu(np.ones(3))
    with pytest.raises(ValueError, match="x1"):
        kernels.fc_relu(np.ones((0, 3)))
    with pytest.raises(ValueError, match="block_size"):
        kernels.fc_relu_blocked(x, block_size=0)
    with pytest.raises(ValueError, match="rhs"):
        kernels.fc_relu_apply(x, x, np.ones((4, 2)))
    with pytest.raises(ValueError, match="which"):
        kernels.fc_relu_apply(x, x, np.ones((3, 2)), which="gp")


@pytest.mark.parametrize("which", ["ntk", "nngp"])
@pytest.mark.parametrize("block_size", [None, 1, 4, 100])
def test_apply_equals_kernel_times_rhs(which, block_size):
    rng = np.random.default_rng(4)
    x1, x2, rhs = rng.normal(size=(9, 6)), rng.normal(size=(7, 6)), rng.normal(size=(7, 3))
    k = getattr(kernels.fc_relu(x1, x2, depth=2), which)
    out = kernels.fc_relu_apply(x1, x2, rhs, which=which, depth=2, block_size=block_size)
    np.testing.assert_allclose(out, k @ rhs, rtol=1e-12)


def test_apply_memory_is_bounded_by_the_block():
    """Compiled temp memory of K@rhs in blocks stays well under the (n1, n2) kernel."""
    jnp32 = np.float32
    x = jnp.asarray((np.random.default_rng(5).random((2048, 64)) < 0.1).astype(jnp32))
    rhs = jnp.ones((2048, 8), jnp32)

    def temp(block_size):
        f = lambda x: kernels.fc_relu_apply(x, x, rhs, block_size=block_size)
        return jax.jit(f).lower(x).compile().memory_analysis().temp_size_in_bytes

    full = 2048 * 2048 * 4
    assert temp(None) >= full  # the naive product materialises the kernel
    assert temp(256) < full / 4


def _sharded_kernel_equals_single():
    jax.config.update("jax_enable_x64", True)
    mesh = parallel.make_mesh()
    rng = np.random.default_rng(3)
    x1 = (rng.random((37, 20)) < 0.2).astype(np.float64)  # 37 rows: ragged over 8 devices
    x2 = (rng.random((11, 20)) < 0.2).astype(np.float64)
    single = kernels.fc_relu(x1, x2, depth=2)
    sharded = kernels.fc_relu_blocked(x1, x2, depth=2, block_size=2, mesh=mesh)
    np.testing.assert_allclose(sharded.ntk, single.ntk, rtol=1e-12)
    np.testing.assert_allclose(sharded.nngp, single.nngp, rtol=1e-12)
    assert len(sharded.ntk.sharding.device_set) in (1, 8)
    rhs = rng.normal(size=(11, 3))
    applied = kernels.fc_relu_apply(x1, x2, rhs, depth=2, block_size=3, mesh=mesh)
    np.testing.assert_allclose(applied, single.ntk @ rhs, rtol=1e-12)


def test_sharded_kernel_on_8_devices(multidevice):
    multidevice(_sharded_kernel_equals_single)


def test_deep_kernel_loops_instead_of_unrolling():
    # Past kernels._UNROLL_DEPTH the recursion runs in a fori_loop: same values as the
    # layer-by-layer Python recursion, and depth 300 compiles in seconds.
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 7)))
    depth = kernels._UNROLL_DEPTH + 3
    got = kernels.fc_relu(x, x, depth=depth, w_std=1.4, b_std=0.1)
    d, w_var, b_var = x.shape[1], 1.4**2, 0.1**2
    k12 = w_var * (x @ x.T) / d + b_var
    k11 = k22 = w_var * jnp.sum(x * x, axis=1) / d + b_var
    c = (k12, k11, k22, k12)
    for _ in range(depth):
        c = kernels._relu_layer(*c, w_var, b_var)
    # 1e-6: on the diagonal c rounds to ~1 where arccos amplifies a 1-ulp difference in
    # the fused vs eager evaluation order to ~1e-8 relative.
    np.testing.assert_allclose(got.nngp, c[0], rtol=1e-6)
    np.testing.assert_allclose(got.ntk, c[3], rtol=1e-6)
    t = time.perf_counter()
    deep = kernels.fc_relu(x, x, depth=300, w_std=2**0.5, b_std=0.1)
    assert np.isfinite(np.asarray(deep.ntk)).all()
    assert time.perf_counter() - t < 30.0
