"""GRU4Rec-style next-item model: a GRU over the item sequence (Hidasi et al., 2016).

Each item is embedded (``E ∈ R^{(I+1)×d}``, row ``I`` the pad token) and fed to one GRU
layer (§3.1, Eqs. 2–5 of the paper, after Cho et al., 2014)::

    z_t = σ(x_t W_z + h_{t−1} U_z + b_z),        r_t = σ(x_t W_r + h_{t−1} U_r + b_r)
    ĥ_t = tanh(x_t W_h + (r_t ⊙ h_{t−1}) U_h + b_h),  h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ ĥ_t

and the item scores at every position are ``logits_t = h_t W_out + b_out`` over the
``I`` real items, trained with next-item cross-entropy (the paper's "cross-entropy"
ranking loss; session-parallel mini-batches are replaced by whole left-padded user
sequences, the input convention of :mod:`distill.data.sequences` and
:mod:`models.sasrec`). Padding leaves the state unchanged (``h_t = h_{t−1}`` where
``x_t`` is the pad token; a soft token with pad probability p mixes the two with weight
``1 − p``), so the scores of a left-padded sequence do not depend on its padding.
Soft tokens ``(n, L, I[+1])`` are embedded as ``probs @ E`` (Farzi's synthetic data).

Defaults: 100 hidden units (the paper's smaller setting; §4, Table 2 uses 100 and
1000), embedding width equal to the hidden size (the paper feeds one-hot items, i.e. an
embedding folded into W), dropout 0 on the GRU output (the paper tunes it in [0, 0.5]),
Adam with learning rate 1e-3 here (the paper uses Adagrad).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from distill import train
from distill.checks import check_array, check_float, check_int, check_key
from distill.data.sequences import next_token_pairs
from models.model_fns import ModelFns, embed_tokens, item_inputs
from models.transformer import from_flax_dropout

__all__ = ["GRU4Rec", "gru4rec", "gru_step", "next_item_loss", "Fit", "fit"]


def gru_step(p: dict, h: jax.Array, x: jax.Array) -> jax.Array:
    """One GRU update ``h_{t−1}, x_t → h_t`` (module docstring); ``p`` holds ``w (d, 3H)``,
    ``u (H, 3H)``, ``b (3H,)`` with gate blocks ordered ``[z, r, h]``."""
    hdim = h.shape[-1]
    xw = x @ p["w"] + p["b"]
    hu = h @ p["u"][:, : 2 * hdim]
    z = jax.nn.sigmoid(xw[..., :hdim] + hu[..., :hdim])
    r = jax.nn.sigmoid(xw[..., hdim : 2 * hdim] + hu[..., hdim:])
    cand = jnp.tanh(xw[..., 2 * hdim :] + (r * h) @ p["u"][:, 2 * hdim :])
    return (1.0 - z) * h + z * cand


class GRU4Rec(nn.Module):
    """The GRU4Rec network; see the module docstring."""

    n_items: int
    hidden: int = 100
    embed_dim: int = 100
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        table = self.param("item_embed", nn.initializers.normal(0.02), (self.n_items + 1, self.embed_dim))
        glorot = nn.initializers.glorot_uniform()
        p = {"w": self.param("w", glorot, (self.embed_dim, 3 * self.hidden)),
             "u": self.param("u", nn.initializers.orthogonal(), (self.hidden, 3 * self.hidden)),
             "b": self.param("b", nn.initializers.zeros, (3 * self.hidden,))}
        if jnp.issubdtype(x.dtype, jnp.integer):
            keep = (x != self.n_items).astype(jnp.float32)
        else:
            if x.shape[-1] == self.n_items:
                x = jnp.concatenate([x, jnp.zeros(x.shape[:-1] + (1,), x.dtype)], axis=-1)
            keep = 1.0 - x[..., self.n_items].astype(jnp.float32)
        emb = embed_tokens(x, table)

        def step(h, xs):
            e, k = xs
            h = k[:, None] * gru_step(p, h, e) + (1.0 - k[:, None]) * h
            return h, h

        h0 = jnp.zeros((x.shape[0], self.hidden), emb.dtype)
        _, hs = jax.lax.scan(step, h0, (jnp.swapaxes(emb, 0, 1), jnp.swapaxes(keep, 0, 1)))
        hs = nn.Dropout(self.dropout, deterministic=not train)(jnp.swapaxes(hs, 0, 1))
        return nn.Dense(self.n_items, name="out")(hs)


def gru4rec(n_items: int, *, hidden: int = 100, embed_dim: int | None = None, dropout: float = 0.0) -> ModelFns:
    """GRU4Rec as ``ModelFns(init, apply)``.

    Args:
      n_items: number of items; the pad token is ``n_items``.
      hidden: GRU units H (>= 1).
      embed_dim: item embedding width (default ``hidden``).
      dropout: dropout rate in [0, 1) on the GRU outputs, active in ``apply(..., train=True, key=k)``.

    Returns:
      ``ModelFns`` with ``apply(params, x, *, train=False, key=None) -> (n, L, n_items)``
      next-item logits for int ``(n, L)`` or soft ``(n, L, n_items[+1])`` inputs.
    """
    n_items = check_int(n_items, "n_items", min_value=1)
    hidden = check_int(hidden, "hidden", min_value=1)
    embed_dim = hidden if embed_dim is None else check_int(embed_dim, "embed_dim", min_value=1)
    dropout = check_float(dropout, "dropout", min_value=0.0, max_value=1.0)
    if dropout >= 1.0:
        raise ValueError(f"dropout: expected a rate in [0, 1), got {dropout}")

    def check(x):
        item_inputs(x, n_items)

    return from_flax_dropout(GRU4Rec(n_items, hidden, embed_dim, dropout), check)


def next_item_loss(apply: Any, pad_id: int) -> Any:
    """``loss(params, tokens, key)``: mean next-item cross-entropy over the positions of int
    ``(n, L)`` ``tokens`` whose input and target are real items (:func:`distill.data.next_token_pairs`);
    ``key`` drives dropout."""

    def loss(params, tokens, key):
        inputs, targets, mask = next_token_pairs(tokens, pad_id)
        logits = apply(params, inputs, train=True, key=key)
        logp = jax.nn.log_softmax(logits)
        nll = -jnp.take_along_axis(logp, jnp.minimum(targets, logits.shape[-1] - 1)[..., None], -1)[..., 0]
        m = mask.astype(logp.dtype)
        return jnp.sum(nll * m) / jnp.maximum(jnp.sum(m), 1.0)

    return loss


class Fit(NamedTuple):
    """What :func:`fit` returns: the trained parameters, the :class:`distill.train.History`, and the model."""

    params: Any
    history: train.History
    model: ModelFns


def fit(
    key: jax.Array,
    tokens: jax.Array,
    n_items: int,
    *,
    hidden: int = 100,
    dropout: float = 0.0,
    steps: int = 1000,
    lr: float = 1e-3,
    batch_size: int = 64,
    evaluate: Any = None,
    eval_every: int | None = None,
    patience: int | None = None,
) -> Fit:
    """Train GRU4Rec on left-padded int sequences ``(n, L)`` (pad ``n_items``) with
    :func:`distill.train.train_model` (Adam, shuffled row batches per epoch).

    Args:
      key: PRNG key (``k_init, k_batches, k_run = split(key, 3)``).
      tokens: int ``(n, L)`` sequences, ``L >= 2``, ids in ``[0, n_items]``.
      n_items: number of items (the pad token is ``n_items``).
      hidden, dropout: see :func:`gru4rec`.
      steps: Adam updates (>= 1).
      lr: learning rate (> 0).
      batch_size: sequences per update.
      evaluate, eval_every, patience: :func:`distill.train.train_model`'s early stopping.

    Returns:
      :class:`Fit`.
    """
    check_key(key)
    check_array(tokens, "tokens", ndim=2, kind="int")
    n_items = check_int(n_items, "n_items", min_value=1)
    t = np.asarray(tokens)
    if t.shape[1] < 2:
        raise ValueError(f"tokens: expected at least 2 columns, got shape {t.shape}")
    if t.min() < 0 or t.max() > n_items:
        raise ValueError(f"tokens: expected ids in [0, {n_items}] (pad = {n_items}), got range [{t.min()}, {t.max()}]")
    steps = check_int(steps, "steps", min_value=1)
    lr = check_float(lr, "lr", min_value=0.0, strict_min=True)
    model = gru4rec(n_items, hidden=hidden, dropout=dropout)
    k_init, k_batches, k_run = jax.random.split(key, 3)
    t = jnp.asarray(t, jnp.int32)
    params = model.init(k_init, t[:1, :-1])
    rows = train.epoch_batches(k_batches, t.shape[0], batch_size)
    out = train.train_model(k_run, params, next_item_loss(model.apply, n_items), lambda s: t[rows(s)],
                            optimizer=optax.adam(lr), steps=steps, evaluate=evaluate, eval_every=eval_every,
                            patience=patience)
    return Fit(out.params, out.history, model)
