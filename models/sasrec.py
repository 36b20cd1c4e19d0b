"""SASRec: self-attentive sequential recommendation (Kang & McAuley, 2018), soft-token ready.

Architecture as in the paper: item embeddings scaled by ``√d`` plus learned position
embeddings; a *timeline mask* zeroes padding positions after every block and padding
keys are masked out of attention (so the scores of a left-padded sequence do not depend
on how much padding precedes it); each block
is causal self-attention with LayerNorm applied to the queries only (``Q = LN(h)``,
``K = V = h``), a residual, then LayerNorm and a point-wise two-layer ReLU feed-forward
with a residual; a final LayerNorm. Item scores are inner products with the shared
item embeddings: ``logits[n, l, i] = ⟨h_{n,l}, E_i⟩`` for the ``n_items`` real items.

Inputs follow :mod:`distill.data.sequences`: int tokens ``(n, L)`` with ``pad_id =
n_items``, left-padded; or soft tokens ``(n, L, n_items + 1)`` (a distribution over
items and the pad token) or ``(n, L, n_items)`` (no padding mass, as Farzi's synthetic
sequences). A soft token is embedded as ``probs @ E`` and its timeline mask is
``1 − P(pad)``, so a one-hot soft input reproduces the int input exactly.
Dropout (rate ``dropout``; on the embeddings, the attention output, the feed-forward
hidden layer and output, as in the paper) is active only in ``apply(params, x, train=True,
key=k)``. The masks are a pure function of ``k``, which is what keeps Farzi's inner loop
reversible: :func:`distill.inner.train` passes ``fold_in(key, t)`` at inner step t and
the reverse pass replays the same masks.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from distill.checks import check_float, check_int
from models.model_fns import ModelFns, embed_tokens, item_inputs
from models.transformer import CausalSelfAttention, from_flax_dropout

__all__ = ["sasrec", "SASRec"]


class SASRec(nn.Module):
    """The SASRec network; see the module docstring."""

    n_items: int
    max_len: int
    d_model: int = 64
    n_heads: int = 1
    n_layers: int = 2
    dtype: Any = jnp.float32
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        drop = lambda a: nn.Dropout(self.dropout, deterministic=not train)(a)
        length = x.shape[1]
        table = self.param("item_embed", nn.initializers.normal(0.02), (self.n_items + 1, self.d_model), self.dtype)
        pos = self.param("pos", nn.initializers.normal(0.02), (self.max_len, self.d_model), self.dtype)
        if jnp.issubdtype(x.dtype, jnp.integer):
            keep = (x != self.n_items).astype(self.dtype)[..., None]
        else:
            if x.shape[-1] == self.n_items:  # no padding mass: append a zero pad column
                x = jnp.concatenate([x, jnp.zeros(x.shape[:-1] + (1,), x.dtype)], axis=-1)
            keep = (1.0 - x[..., self.n_items]).astype(self.dtype)[..., None]
        # Padding embeds to zero (E[pad] is used only through the mask) as in SASRec.
        h = embed_tokens(x, table) * jnp.sqrt(jnp.asarray(self.d_model, self.dtype))
        h = drop(h + pos[-length:]) * keep
        ln = lambda name: nn.LayerNorm(epsilon=1e-8, dtype=self.dtype, param_dtype=self.dtype, name=name)
        for i in range(self.n_layers):
            q = ln(f"ln_att_{i}")(h)
            h = q + drop(CausalSelfAttention(self.n_heads, self.dtype, name=f"att_{i}")(q, h, keep[..., 0]))
            f = ln(f"ln_ff_{i}")(h)
            f = nn.Dense(self.d_model, dtype=self.dtype, param_dtype=self.dtype, name=f"ff1_{i}")(f)
            f = nn.Dense(self.d_model, dtype=self.dtype, param_dtype=self.dtype, name=f"ff2_{i}")(drop(jax.nn.relu(f)))
            h = (h + drop(f)) * keep
        h = ln("ln_out")(h)
        return h @ table[: self.n_items].T


def sasrec(
    n_items: int,
    *,
    max_len: int,
    d_model: int = 64,
    n_heads: int = 1,
    n_layers: int = 2,
    dtype: Any = jnp.float32,
    dropout: float = 0.0,
) -> ModelFns:
    """SASRec as ``ModelFns(init, apply)``.

    Args:
      n_items: number of items; the pad token is ``n_items`` (vocabulary ``n_items + 1``).
      max_len: longest input sequence (size of the position table). Positions are
        aligned to the *right* (the newest item always uses the last position embedding),
        matching left-padded sequences.
      d_model: embedding width, divisible by ``n_heads``.
      n_heads: attention heads (SASRec uses 1).
      n_layers: self-attention blocks (SASRec uses 2).
      dtype: parameter and computation dtype.
      dropout: dropout rate in [0, 1), active in ``apply(..., train=True, key=k)``
        (dissertation Table 4.2 searches {0, 0.2, 0.4}).

    Returns:
      ``ModelFns`` with ``apply(params, x, *, train=False, key=None) -> (n, L, n_items)`` next-item
      logits for int ``(n, L)`` or soft ``(n, L, n_items[+1])`` inputs.

    Source: Kang & McAuley (2018), "Self-Attentive Sequential Recommendation"; the
    recommendation model of Farzi (dissertation Ch. 4, Table 4.5).
    """
    n_items = check_int(n_items, "n_items", min_value=1)
    max_len = check_int(max_len, "max_len", min_value=1)
    d_model = check_int(d_model, "d_model", min_value=1)
    n_heads = check_int(n_heads, "n_heads", min_value=1)
    n_layers = check_int(n_layers, "n_layers", min_value=1)
    if d_model % n_heads:
        raise ValueError(f"d_model: expected a multiple of n_heads={n_heads}, got {d_model}")
    dropout = check_float(dropout, "dropout", min_value=0.0, max_value=1.0)
    if dropout >= 1.0:
        raise ValueError(f"dropout: expected a rate in [0, 1), got {dropout}")

    def check(x):
        item_inputs(x, n_items)
        if x.shape[1] > max_len:
            raise ValueError(f"x: expected at most max_len={max_len} positions, got shape {tuple(x.shape)}")

    return from_flax_dropout(SASRec(n_items, max_len, d_model, n_heads, n_layers, dtype, dropout), check)
