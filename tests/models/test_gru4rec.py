"""GRU4Rec: shapes, the GRU equations, padding invariance, soft = int tokens, learning, checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import gru4rec


def _sequences(n=40, n_items=12, length=8, seed=0):
    """Deterministic cycles: the next item is always (item + 1) mod n_items."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, n_items, n)
    return ((start[:, None] + np.arange(length)[None]) % n_items).astype(np.int32)


def test_shapes_and_gru_equations():
    model = gru4rec.gru4rec(12, hidden=6, embed_dim=5)
    x = jnp.asarray(_sequences()[:3])
    params = jax.jit(model.init)(jax.random.key(0), x)
    out = model.apply(params, x)
    assert out.shape == (3, 8, 12)
    # Reference: the textbook GRU loop in numpy.
    p = {k: np.asarray(params[k]) for k in ("w", "u", "b")}
    sig = lambda a: 1 / (1 + np.exp(-a))
    e = np.asarray(params["item_embed"])[np.asarray(x)]
    h = np.zeros((3, 6))
    for t in range(8):
        xw = e[:, t] @ p["w"] + p["b"]
        z = sig(xw[:, :6] + h @ p["u"][:, :6])
        r = sig(xw[:, 6:12] + h @ p["u"][:, 6:12])
        c = np.tanh(xw[:, 12:] + (r * h) @ p["u"][:, 12:])
        h = (1 - z) * h + z * c
    want = h @ np.asarray(params["out"]["kernel"]) + np.asarray(params["out"]["bias"])
    np.testing.assert_allclose(np.asarray(out[:, -1]), want, rtol=1e-4, atol=1e-5)


def test_left_padding_and_soft_tokens():
    model = gru4rec.gru4rec(12, hidden=6)
    x = jnp.asarray(_sequences()[:4, :5])
    params = jax.jit(model.init)(jax.random.key(1), x)
    padded = jnp.concatenate([jnp.full((4, 3), 12, jnp.int32), x], axis=1)
    np.testing.assert_allclose(np.asarray(model.apply(params, padded)[:, -1]),
                               np.asarray(model.apply(params, x)[:, -1]), rtol=1e-5, atol=1e-6)
    soft = jax.nn.one_hot(padded, 13)
    np.testing.assert_allclose(np.asarray(model.apply(params, soft)), np.asarray(model.apply(params, padded)),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_learns_a_deterministic_successor():
    seqs = _sequences()
    f = gru4rec.fit(jax.random.key(0), seqs, 12, hidden=16, steps=150, lr=1e-2, batch_size=16)
    assert np.mean(f.history.losses[-10:]) < 0.2 * np.mean(f.history.losses[:10])
    pred = np.asarray(jnp.argmax(f.model.apply(f.params, jnp.asarray(seqs[:, :-1]))[:, -1], -1))
    np.testing.assert_array_equal(pred, seqs[:, -1])


def test_bad_inputs_name_the_argument():
    seqs = _sequences()
    with pytest.raises(ValueError, match="tokens"):
        gru4rec.fit(jax.random.key(0), seqs + 20, 12)
    with pytest.raises(ValueError, match="dropout"):
        gru4rec.gru4rec(12, dropout=1.0)
    model = gru4rec.gru4rec(12)
    with pytest.raises(ValueError, match="x"):
        model.init(jax.random.key(0), jnp.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="key"):
        m = gru4rec.gru4rec(12, dropout=0.5)
        m.apply(m.init(jax.random.key(0), jnp.asarray(seqs[:1])), jnp.asarray(seqs[:1]), train=True)
