"""A small decoder-only Transformer language model that accepts soft tokens.

Farzi (dissertation Ch. 4) trains autoregressive models on *soft* synthetic
sequences: every position is a distribution over the vocabulary, embedded as
``probs @ E``. The model here is a standard pre-LayerNorm GPT-style decoder
(Radford et al. 2019): token + learned position embeddings, ``n_layers`` blocks of
causal multi-head self-attention and a GELU MLP, a final LayerNorm and an output
layer tied to the token embedding, so ``logits = LN(h) @ Eᵀ + b``.

``transformer(V, max_len=...)`` returns ``ModelFns(init, apply)`` with
``apply(params, x) -> (n, L, V)`` logits for int tokens ``(n, L)`` or soft tokens
``(n, L, V)``; position ``i``'s logits depend on inputs ``0..i`` only.

Dropout (rate ``dropout``, after the embeddings, on each residual branch and in the MLP)
is active only in ``apply(params, x, train=True, key=k)``: the masks are a pure function of
``k``, so Farzi's inner loop can replay a step's masks exactly when it reverses Adam
(:func:`distill.inner.train` passes ``fold_in(key, t)`` at inner step t).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill.checks import check_float, check_int
from models.model_fns import ModelFns, embed_tokens, token_inputs

__all__ = ["transformer", "TransformerLM", "CausalSelfAttention", "causal_mask", "from_flax_dropout"]


def causal_mask(length: int) -> jax.Array:
    """Bool ``(L, L)``: query ``i`` may attend to keys ``j <= i``."""
    return jnp.tril(jnp.ones((length, length), bool))


def from_flax_dropout(module: Any, check: Any = None) -> ModelFns:
    """Like :func:`models.model_fns.from_flax`, with a dropout key for training mode.

    ``apply(params, x, *, train=False, key=None)``: with ``train=True`` the module runs in
    training mode with ``rngs={'dropout': key}`` (the masks depend on ``key`` only, so a
    call with the same key replays them); without ``train`` it is deterministic.

    Raises:
      ValueError: ``train=True`` without a ``key`` on a module with a positive dropout rate.
    """

    def init(key: jax.Array, x: Any) -> Any:
        if check is not None:
            check(x)
        return module.init(key, x, False)["params"]

    def apply(params: Any, x: Any, *, train: bool = False, key: jax.Array | None = None) -> Any:
        if check is not None:
            check(x)
        if not train or getattr(module, "dropout", 0.0) == 0.0:
            return module.apply({"params": params}, x, False)
        if key is None:
            raise ValueError("key: apply(train=True) with dropout > 0 needs a PRNG key for the dropout masks")
        return module.apply({"params": params}, x, True, rngs={"dropout": key})

    return ModelFns(init, apply)


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention ``softmax(QKᵀ/√d_h + mask) V`` followed by an output map.

    ``__call__(queries, keys, key_keep=None)``: queries and keys/values come from separate
    inputs so that SASRec's "LayerNorm on the queries only" variant can share the code;
    ``key_keep`` ``(n, L)`` in [0, 1] multiplies each key's attention weight before
    normalisation (0 masks padding; a soft pad probability p gives weight 1 − p).
    """

    n_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, xq: jax.Array, xkv: jax.Array, key_keep: jax.Array | None = None) -> jax.Array:
        d = xq.shape[-1]
        h = self.n_heads
        dh = d // h
        dense = lambda name: nn.DenseGeneral((h, dh), dtype=self.dtype, param_dtype=self.dtype, name=name)
        # No key bias: it adds a per-query constant to every score, which the softmax
        # cancels; its gradient is pure rounding noise, which makes reversed Adam (and
        # the unrolled meta-gradient itself) ill-conditioned for that parameter.
        key_dense = nn.DenseGeneral((h, dh), use_bias=False, dtype=self.dtype, param_dtype=self.dtype, name="key")
        q, k, v = dense("query")(xq), key_dense(xkv), dense("value")(xkv)
        scores = jnp.einsum("nqhd,nkhd->nhqk", q, k) / jnp.sqrt(jnp.asarray(dh, self.dtype))
        mask = causal_mask(xq.shape[1])
        if key_keep is not None:  # (n, L) weight of each key in [0, 1]; 0 = padding
            logk = jnp.log(jnp.where(key_keep > 0, key_keep, 1.0))
            scores = jnp.where(key_keep[:, None, None, :] > 0, scores + logk[:, None, None, :], jnp.finfo(scores.dtype).min)
        scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
        att = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("nhqk,nkhd->nqhd", att, v)
        return nn.DenseGeneral(d, axis=(-2, -1), dtype=self.dtype, param_dtype=self.dtype, name="out")(out)


class TransformerLM(nn.Module):
    """Pre-LN decoder-only Transformer; see the module docstring."""

    vocab_size: int
    max_len: int
    d_model: int = 64
    n_heads: int = 2
    n_layers: int = 2
    d_ff: int = 128
    dtype: Any = jnp.float32
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        n, length = x.shape[0], x.shape[1]
        init = nn.initializers.normal(0.02)
        drop = lambda a: nn.Dropout(self.dropout, deterministic=not train)(a)
        table = self.param("embed", init, (self.vocab_size, self.d_model), self.dtype)
        pos = self.param("pos", init, (self.max_len, self.d_model), self.dtype)
        h = drop(embed_tokens(x, table) + pos[:length])
        ln = lambda name: nn.LayerNorm(dtype=self.dtype, param_dtype=self.dtype, name=name)
        for i in range(self.n_layers):
            a = ln(f"ln_att_{i}")(h)
            h = h + drop(CausalSelfAttention(self.n_heads, self.dtype, name=f"att_{i}")(a, a))
            f = ln(f"ln_ff_{i}")(h)
            f = nn.Dense(self.d_ff, dtype=self.dtype, param_dtype=self.dtype, name=f"ff1_{i}")(f)
            f = nn.Dense(self.d_model, dtype=self.dtype, param_dtype=self.dtype, name=f"ff2_{i}")(
                drop(jax.nn.gelu(f))
            )
            h = h + drop(f)
        h = ln("ln_out")(h)
        bias = self.param("out_bias", nn.initializers.zeros, (self.vocab_size,), self.dtype)
        del n
        return h @ table.T + bias


def transformer(
    vocab_size: int,
    *,
    max_len: int,
    d_model: int = 64,
    n_heads: int = 2,
    n_layers: int = 2,
    d_ff: int | None = None,
    dtype: Any = jnp.float32,
    dropout: float = 0.0,
) -> ModelFns:
    """A small causal Transformer LM as ``ModelFns(init, apply)``.

    Args:
      vocab_size: V, the number of tokens (input and output).
      max_len: longest input sequence (size of the position table).
      d_model: model width; must be divisible by ``n_heads``.
      n_heads: attention heads.
      n_layers: Transformer blocks.
      d_ff: MLP hidden width (default ``2 * d_model``).
      dtype: parameter and computation dtype (``jnp.float64`` for exact gradient tests).
      dropout: dropout rate in [0, 1) used by ``apply(..., train=True, key=k)``
        (dissertation Table 4.3 searches {0, 0.2}).

    Returns:
      ``ModelFns``: ``init(key, x)``, ``apply(params, x, *, train=False, key=None) -> (n, L, V)``
      logits, for int ``(n, L)`` or soft ``(n, L, V)`` inputs with ``L <= max_len``.

    Source: the decoder-only LM of Farzi's text experiments (dissertation Ch. 4, §4.5).
    """
    vocab_size = check_int(vocab_size, "vocab_size", min_value=2)
    max_len = check_int(max_len, "max_len", min_value=1)
    d_model = check_int(d_model, "d_model", min_value=1)
    n_heads = check_int(n_heads, "n_heads", min_value=1)
    n_layers = check_int(n_layers, "n_layers", min_value=1)
    d_ff = 2 * d_model if d_ff is None else check_int(d_ff, "d_ff", min_value=1)
    dropout = check_float(dropout, "dropout", min_value=0.0, max_value=1.0)
    if dropout >= 1.0:
        raise ValueError(f"dropout: expected a rate in [0, 1), got {dropout}")
    if d_model % n_heads:
        raise ValueError(f"d_model: expected a multiple of n_heads={n_heads}, got {d_model}")

    def check(x):
        token_inputs(x, vocab_size)
        if x.shape[1] > max_len:
            raise ValueError(f"x: expected at most max_len={max_len} positions, got shape {tuple(x.shape)}")

    return from_flax_dropout(TransformerLM(vocab_size, max_len, d_model, n_heads, n_layers, d_ff, dtype, dropout), check)
