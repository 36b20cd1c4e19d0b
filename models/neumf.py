"""NeuMF: neural matrix factorisation, GMF ⊕ MLP towers (He et al., 2017).

    φ_GMF = p_u^G ⊙ q_i^G                                      (§3.2, Eq. 9)
    φ_MLP = a_L(W_L ⋯ a_1(W_1 [p_u^M ; q_i^M] + b_1) ⋯ + b_L)   (§3.3, Eq. 10; a = ReLU)
    ŷ_ui  = σ(hᵀ [φ_GMF ; φ_MLP] + b)                          (§3.4, Eq. 12)

trained with binary cross-entropy on each observed interaction and ``n_negatives``
uniformly drawn items as negatives, redrawn every epoch (§3.1.1, Eq. 7)::

    L = −Σ_{(u,i)∈Y} log ŷ_ui − Σ_{(u,j)∈Y⁻} log(1 − ŷ_uj)

``mlp_layers=()`` gives the GMF-only model (``ŷ = σ(hᵀ(p_u ⊙ q_i) + b)``; with ``h = 1``,
``b = 0`` its logit is the dot product ``p_u · q_i``). Defaults are the paper's (§4.1,
"Parameter Settings"): 8 predictive factors, a three-layer tower ``32 → 16 → 8`` on
16-wide user/item MLP embeddings, 4 negatives per positive, Adam with learning rate
1e-3, batch size 256, ``N(0, 0.01²)`` initialisation, no pre-training. As in
:mod:`models.mf`, negatives are drawn over all items without excluding positives.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from distill import train
from distill.checks import check_array, check_float, check_index_range, check_int, check_key, check_same_leading

__all__ = ["NeuMF", "Fit", "init", "logits", "loss", "scores", "fit"]


class NeuMF(NamedTuple):
    """NeuMF parameters.

    Attributes:
      gmf_user, gmf_item: ``(n_users, f)``, ``(n_items, f)`` GMF embeddings.
      mlp_user, mlp_item: ``(n_users, m)``, ``(n_items, m)`` MLP embeddings (``m = layers[0] / 2``).
      mlp: tuple of ``(W, b)`` tower layers.
      out_w: ``(f + layers[-1],)`` h;  out_b: ``()`` b.
    """

    gmf_user: jax.Array
    gmf_item: jax.Array
    mlp_user: jax.Array
    mlp_item: jax.Array
    mlp: tuple
    out_w: jax.Array
    out_b: jax.Array


class Fit(NamedTuple):
    """What :func:`fit` returns: the trained :class:`NeuMF` and its :class:`distill.train.History`."""

    params: NeuMF
    history: train.History


def init(
    key: jax.Array, n_users: int, n_items: int, *, factors: int = 8, mlp_layers: tuple[int, ...] = (32, 16, 8),
    scale: float = 0.01,
) -> NeuMF:
    """``N(0, scale²)`` embeddings, Glorot-uniform tower and output weights, zero biases.

    Args:
      key: PRNG key.
      n_users, n_items: id-space sizes (>= 1).
      factors: GMF width f (>= 1).
      mlp_layers: tower widths; the first is the concatenated embedding width (even);
        ``()`` = GMF only.
      scale: embedding standard deviation (>= 0).
    """
    check_key(key)
    n_users = check_int(n_users, "n_users", min_value=1)
    n_items = check_int(n_items, "n_items", min_value=1)
    factors = check_int(factors, "factors", min_value=1)
    mlp_layers = tuple(check_int(w, "mlp_layers", min_value=1) for w in mlp_layers)
    if mlp_layers and mlp_layers[0] % 2:
        raise ValueError(f"mlp_layers: the first width is [p_u ; q_i] and must be even, got {mlp_layers[0]}")
    scale = check_float(scale, "scale", min_value=0.0)
    m = mlp_layers[0] // 2 if mlp_layers else 0
    ks = jax.random.split(key, 5 + len(mlp_layers))
    glorot = jax.nn.initializers.glorot_uniform()
    tower = tuple(
        (glorot(k, (a, b), jnp.float32), jnp.zeros((b,), jnp.float32))
        for k, a, b in zip(ks[5:], mlp_layers[:-1], mlp_layers[1:], strict=False)
    )
    width = factors + (mlp_layers[-1] if mlp_layers else 0)
    normal = lambda k, shape: scale * jax.random.normal(k, shape, jnp.float32)
    return NeuMF(
        normal(ks[0], (n_users, factors)), normal(ks[1], (n_items, factors)),
        normal(ks[2], (n_users, m)), normal(ks[3], (n_items, m)), tower,
        glorot(ks[4], (width, 1), jnp.float32)[:, 0], jnp.zeros((), jnp.float32),
    )


def _tower(layers, first):
    h = jax.nn.relu(first)
    for w, b in layers[1:]:
        h = jax.nn.relu(h @ w + b)
    return h


def _logits(params: NeuMF, users, items):
    f = params.gmf_user.shape[1]
    out = (params.gmf_user[users] * params.gmf_item[items]) @ params.out_w[:f] + params.out_b
    if params.mlp:
        w, b = params.mlp[0]
        m = params.mlp_user.shape[1]
        first = params.mlp_user[users] @ w[:m] + params.mlp_item[items] @ w[m:] + b
        out = out + _tower(params.mlp, first) @ params.out_w[f:]
    return out


def _check_params(params):
    if not isinstance(params, NeuMF):
        raise TypeError(f"params: expected a NeuMF from init()/fit(), got {type(params).__name__}")


def logits(params: NeuMF, users: jax.Array, items: jax.Array) -> jax.Array:
    """Pre-sigmoid scores ``hᵀφ + b`` for parallel int ``(n,)`` users and items → ``(n,)``."""
    _check_params(params)
    check_array(users, "users", ndim=1, kind="int")
    check_array(items, "items", ndim=1, kind="int")
    check_same_leading([("users", users), ("items", items)])
    check_index_range(users, "users", params.gmf_user.shape[0])
    check_index_range(items, "items", params.gmf_item.shape[0])
    return _logits(params, jnp.asarray(users), jnp.asarray(items))


def loss(params: NeuMF, batch, key: jax.Array) -> jax.Array:
    """Weighted binary cross-entropy of one batch ``(users, items, labels, weights)``, all ``(n,)``
    (``key`` unused: the negatives come with the batch)."""
    del key
    u, i, y, w = batch
    z = _logits(params, u, i)
    bce = -(y * jax.nn.log_sigmoid(z) + (1.0 - y) * jax.nn.log_sigmoid(-z))
    return jnp.sum(w * bce) / jnp.maximum(jnp.sum(w), 1.0)


@functools.partial(jax.jit, static_argnames=("chunk",))
def _all_scores(params, users, chunk):
    n_items = params.gmf_item.shape[0]
    items = jnp.arange(n_items)

    def rows(u):  # (chunk,) users -> (chunk, I) logits
        uu = jnp.repeat(u, n_items)
        return _logits(params, uu, jnp.tile(items, u.shape[0])).reshape(u.shape[0], n_items)

    m = users.shape[0]
    pad = -m % chunk
    u = jnp.concatenate([users, jnp.zeros(pad, users.dtype)]).reshape(-1, chunk)
    return jax.lax.map(rows, u).reshape(-1, n_items)[:m]


def scores(params: NeuMF, users: jax.Array, *, chunk: int = 32) -> jax.Array:
    """Logits of every item for the given users: ``(m,) → (m, n_items)``, ``chunk`` users at a time."""
    _check_params(params)
    check_array(users, "users", ndim=1, kind="int")
    check_index_range(users, "users", params.gmf_user.shape[0])
    chunk = check_int(chunk, "chunk", min_value=1)
    return _all_scores(params, jnp.asarray(users, jnp.int32), chunk)


def _epoch_batches(key, users, items, n_items, n_negatives, batch_size):
    """Positives plus ``n_negatives`` uniform negatives each, shuffled into ``(n_batches, batch_size)``;
    padding slots have weight 0."""
    n = users.shape[0] * (1 + n_negatives)
    k_neg, k_perm = jax.random.split(key)
    neg = jax.random.randint(k_neg, (users.shape[0] * n_negatives,), 0, n_items)
    u = jnp.concatenate([users, jnp.repeat(users, n_negatives)])
    i = jnp.concatenate([items, neg])
    y = jnp.concatenate([jnp.ones_like(users, jnp.float32), jnp.zeros(neg.shape, jnp.float32)])
    n_batches = -(-n // batch_size)
    pad = n_batches * batch_size - n
    perm = jnp.concatenate([jax.random.permutation(k_perm, n), jnp.zeros(pad, jnp.int32)])
    w = (jnp.arange(n + pad) < n).astype(jnp.float32)
    shape = (n_batches, batch_size)
    return u[perm].reshape(shape), i[perm].reshape(shape), y[perm].reshape(shape), w.reshape(shape)


@functools.partial(jax.jit, static_argnames=("epochs", "batch_size", "n_negatives", "n_items"))
def _train(params, key, users, items, lr, *, epochs, batch_size, n_negatives, n_items):
    opt = optax.adam(lr)
    state, losses = train.scan_epochs(
        train.init(params, opt), key, lambda k: _epoch_batches(k, users, items, n_items, n_negatives, batch_size),
        epochs=epochs, loss=loss, optimizer=opt)
    return state.params, losses


def fit(
    key: jax.Array,
    users: jax.Array,
    items: jax.Array,
    n_users: int,
    n_items: int,
    *,
    factors: int = 8,
    mlp_layers: tuple[int, ...] = (32, 16, 8),
    n_negatives: int = 4,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 256,
) -> Fit:
    """Train NeuMF with BCE on positives + sampled negatives and Adam (one jitted scan of epochs).

    Args:
      key: PRNG key (initialisation, negatives, shuffles).
      users, items: int ``(n,)`` positive interactions.
      n_users, n_items: id-space sizes.
      factors, mlp_layers: architecture (see :func:`init`).
      n_negatives: negatives per positive per epoch (>= 1; 4 in the paper).
      epochs: passes (>= 1).
      lr: Adam learning rate (> 0).
      batch_size: (user, item) pairs per update (>= 1).

    Returns:
      :class:`Fit`.
    """
    check_key(key)
    check_array(users, "users", ndim=1, kind="int")
    check_array(items, "items", ndim=1, kind="int")
    check_same_leading([("users", users), ("items", items)])
    n_users = check_int(n_users, "n_users", min_value=1)
    n_items = check_int(n_items, "n_items", min_value=1)
    check_index_range(users, "users", n_users)
    check_index_range(items, "items", n_items)
    n_negatives = check_int(n_negatives, "n_negatives", min_value=1)
    epochs = check_int(epochs, "epochs", min_value=1)
    lr = check_float(lr, "lr", min_value=0.0, strict_min=True)
    batch_size = min(check_int(batch_size, "batch_size", min_value=1), users.shape[0] * (1 + n_negatives))
    k_init, k_train = jax.random.split(key)
    params = init(k_init, n_users, n_items, factors=factors, mlp_layers=mlp_layers)
    params, losses = _train(
        params, k_train, jnp.asarray(users, jnp.int32), jnp.asarray(items, jnp.int32), jnp.float32(lr),
        epochs=epochs, batch_size=batch_size, n_negatives=n_negatives, n_items=n_items,
    )
    return Fit(params, train.history_of(losses))
