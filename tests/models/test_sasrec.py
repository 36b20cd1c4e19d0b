"""SASRec: soft tokens (with and without pad column), causality, padding, input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.sasrec import sasrec

pytestmark = pytest.mark.x64  # compares to 1e-6 and tighter

N_ITEMS, L = 11, 6
PAD = N_ITEMS


def _model(dropout=0.0):
    return sasrec(N_ITEMS, max_len=L, d_model=16, n_heads=2, n_layers=2, dtype=jnp.float64, dropout=dropout)


@pytest.fixture(scope="module")
def rec():
    m = _model()
    x = jnp.array([[PAD, PAD, 3, 4, 5, 1], [0, 1, 2, 3, 4, 5], [PAD, PAD, PAD, PAD, PAD, 7]])
    # The parameter tree comes from init, traced but not compiled (init's program, the
    # forward pass plus every initialiser, is the largest of the module); the values are
    # N(0, 0.5²) from numpy: every property tested here holds for any parameters, and
    # these keep the LayerNorm scales and the scores of order 1.
    shapes = jax.eval_shape(m.init, jax.random.key(0), x)
    rng = np.random.default_rng(0)
    p = jax.tree_util.tree_map(lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), s.dtype), shapes)
    # Compiled: run eagerly, every op of apply compiles on its own.
    return m._replace(apply=jax.jit(m.apply, static_argnames="train")), p, x


def test_shapes_and_soft_equals_int(rec):
    m, p, x = rec
    out = m.apply(p, x)
    assert out.shape == (3, L, N_ITEMS)
    soft = jax.nn.one_hot(x, N_ITEMS + 1, dtype=jnp.float64)
    np.testing.assert_allclose(m.apply(p, soft), out, rtol=1e-12, atol=1e-12)
    # Without a pad column (Farzi's synthetic data): equal on an unpadded row.
    soft_nopad = jax.nn.one_hot(x[1:2], N_ITEMS, dtype=jnp.float64)
    np.testing.assert_allclose(m.apply(p, soft_nopad), out[1:2], rtol=1e-12, atol=1e-12)


def test_causality(rec):
    m, p, x = rec
    base = m.apply(p, x)
    for pos in range(L):
        y = x.at[:, pos].set((x[:, pos] + 1) % N_ITEMS)
        np.testing.assert_allclose(m.apply(p, y)[:, :pos], base[:, :pos], rtol=1e-12, atol=1e-12)


def test_padding_content_is_ignored(rec):
    m, p, x = rec
    # A left-padded row gives the same scores at its item positions only if pads are
    # inert; here we check that a padded prefix equals dropping the prefix columns
    # (positions are right-aligned). The padded row is the fixture's first one, so the
    # padded side reuses the fixture's compilation and only the shorter shape compiles.
    np.testing.assert_allclose(m.apply(p, x)[:1, 2:], m.apply(p, x[:1, 2:]), rtol=1e-10, atol=1e-10)


def test_bad_inputs(rec):
    _, p, x = rec
    m = _model()  # not the fixture's compiled apply: the checks must raise on an eager call
    with pytest.raises(ValueError, match="x"):
        m.apply(p, jnp.zeros((3, L, N_ITEMS + 2)))
    with pytest.raises(TypeError, match="x"):
        m.apply(p, jnp.zeros((3, L), bool))
    with pytest.raises(ValueError, match="n_items"):
        sasrec(0, max_len=3)


def test_dropout_masks_replay_with_the_key(rec):
    base, p, x = rec
    m = _model(dropout=0.5)
    # Compiled like the fixture's model: the calls of each mode share one compilation.
    m = m._replace(apply=jax.jit(m.apply, static_argnames="train"))
    # Evaluation mode ignores the rate (dropout has no parameters: the same params fit both).
    np.testing.assert_array_equal(m.apply(p, x), base.apply(p, x))
    k = jax.random.key(5)
    a, b = m.apply(p, x, train=True, key=k), m.apply(p, x, train=True, key=k)
    np.testing.assert_array_equal(a, b)
    other = m.apply(p, x, train=True, key=jax.random.key(6))
    a, other = np.asarray(a), np.asarray(other)
    assert np.abs(other - a).max() > 1e-3 and np.abs(a - np.asarray(base.apply(p, x))).max() > 1e-3
    np.testing.assert_array_equal(base.apply(p, x, train=True, key=k), base.apply(p, x))  # rate 0: no-op
    with pytest.raises(ValueError, match="key"):
        _model(dropout=0.5).apply(p, x, train=True)
    with pytest.raises(ValueError, match="dropout"):
        sasrec(N_ITEMS, max_len=L, dropout=1.0)
