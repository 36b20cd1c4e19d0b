"""Small causal Transformer LM: soft tokens, causality, input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.transformer import transformer

pytestmark = pytest.mark.x64  # compares to 1e-6 and tighter

V, L = 13, 7


def _model(dropout=0.0):
    return transformer(V, max_len=L, d_model=16, n_heads=2, n_layers=2, dtype=jnp.float64, dropout=dropout)


@pytest.fixture(scope="module")
def lm():
    m = _model()
    x = jax.random.randint(jax.random.key(0), (3, L), 0, V)
    # Compiled: run eagerly, every op of init and apply compiles on its own.
    return m._replace(apply=jax.jit(m.apply, static_argnames="train")), jax.jit(m.init)(jax.random.key(1), x), x


def test_shapes_and_soft_equals_int(lm):
    m, p, x = lm
    out = m.apply(p, x)
    assert out.shape == (3, L, V) and out.dtype == jnp.float64
    np.testing.assert_allclose(m.apply(p, jax.nn.one_hot(x, V, dtype=jnp.float64)), out, rtol=1e-12, atol=1e-12)


def test_soft_input_is_linear_in_embedding(lm):
    m, p, x = lm
    probs = jax.nn.softmax(jax.random.normal(jax.random.key(2), (3, L, V), jnp.float64))
    out = m.apply(p, probs)
    assert np.all(np.isfinite(out))
    # A mixture input differs from any single token (soft tokens are really used).
    assert not np.allclose(out, m.apply(p, x))


def test_causality(lm):
    m, p, x = lm
    base = m.apply(p, x)
    for pos in range(L):
        y = x.at[:, pos].set((x[:, pos] + 1) % V)
        out = m.apply(p, y)
        np.testing.assert_allclose(out[:, :pos], base[:, :pos], rtol=1e-12, atol=1e-12)
        assert not np.allclose(out[:, pos:], base[:, pos:])


def test_shorter_sequences(lm):
    m, p, x = lm
    assert m.apply(p, x[:, :3]).shape == (3, 3, V)


def test_bad_inputs(lm):
    _, p, x = lm
    m = _model()  # not the fixture's compiled apply: the checks must raise on an eager call
    with pytest.raises(ValueError, match="x"):
        m.apply(p, jnp.zeros((3, L, V + 1)))
    with pytest.raises(ValueError, match="max_len"):
        m.apply(p, jnp.zeros((3, L + 1), jnp.int32))
    with pytest.raises(TypeError, match="x"):
        m.apply(p, [[1, 2]])
    with pytest.raises(ValueError, match="d_model"):
        transformer(V, max_len=4, d_model=10, n_heads=3)
    with pytest.raises(ValueError, match="vocab_size"):
        transformer(1, max_len=4)


def test_dropout_masks_replay_and_scale(lm):
    m0, p, x = lm
    m = _model(dropout=0.3)
    apply = jax.jit(m.apply, static_argnames="train")  # compiled like the fixture's model
    np.testing.assert_array_equal(apply(p, x), m0.apply(p, x))  # evaluation mode: no dropout
    k = jax.random.key(2)
    a = apply(p, x, train=True, key=k)
    np.testing.assert_array_equal(a, apply(p, x, train=True, key=k))
    assert float(jnp.abs(a - apply(p, x, train=True, key=jax.random.key(3))).max()) > 1e-3
    # Causal under the same masks: changing the last input leaves earlier positions unchanged.
    y = x.at[:, -1].set((x[:, -1] + 1) % V)
    np.testing.assert_allclose(apply(p, y, train=True, key=k)[:, :-1], a[:, :-1], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="key"):
        m.apply(p, x, train=True)
    with pytest.raises(ValueError, match="dropout"):
        transformer(V, max_len=L, dropout=-0.1)
