"""LightGCN: linear propagation on the user–item graph, trained with BPR (He et al., 2020).

With the bipartite interaction graph ``A = [[0, R], [Rᵀ, 0]]`` and its symmetric
normalisation ``Â = D^{-1/2} A D^{-1/2}`` (§3.1, Eq. 7), layer k+1 is ``E^{(k+1)} = Â E^{(k)}``,
i.e. per edge (§3.1.1, Eq. 3)::

    e_u^{(k+1)} = Σ_{i ∈ N_u} e_i^{(k)} / √(|N_u| |N_i|),   e_i^{(k+1)} = Σ_{u ∈ N_i} e_u^{(k)} / √(|N_i| |N_u|)

(computed as gathers and ``segment_sum`` over the edge list, never a dense matrix). The
final embeddings average the layers, ``e = Σ_{k=0}^{K} e^{(k)} / (K + 1)`` (Eq. 4, α_k = 1/(K+1)),
and ``ŷ_ui = e_u · e_i`` (Eq. 5). Training minimises BPR with L2 on the layer-0
("ego") embeddings of the batch (Eq. 15)::

    L = −mean log σ(ŷ_ui − ŷ_uj) + l2 · (‖e_u^{(0)}‖² + ‖e_i^{(0)}‖² + ‖e_j^{(0)}‖²) / (2 · batch)

``n_layers = 0`` is plain matrix factorisation ``ŷ = e_u^{(0)} · e_i^{(0)}``. Defaults are the
paper's (§4.1.2 and its released code): embedding size 64, K = 3, Adam with learning
rate 1e-3, L2 1e-4, batch 2048, ``N(0, 0.1²)`` initialisation; one uniform negative per
positive per epoch (over all items, as in :mod:`models.mf`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from distill import train
from distill.checks import check_array, check_float, check_index_range, check_int, check_key, check_same_leading

__all__ = ["LightGCN", "Graph", "Fit", "init", "graph", "propagate", "loss", "scores", "fit"]


class LightGCN(NamedTuple):
    """Layer-0 embeddings: ``user_emb`` ``(n_users, d)``, ``item_emb`` ``(n_items, d)``."""

    user_emb: jax.Array
    item_emb: jax.Array


class Graph(NamedTuple):
    """The normalised bipartite graph as an edge list.

    Attributes:
      users, items: int ``(E,)`` edge endpoints (one per distinct interaction).
      norm: ``(E,)`` ``1 / √(|N_u| |N_i|)``.
    """

    users: jax.Array
    items: jax.Array
    norm: jax.Array


class Fit(NamedTuple):
    """What :func:`fit` returns: the trained :class:`LightGCN`, its :class:`distill.train.History`
    and the training :class:`Graph` (needed by :func:`scores`)."""

    params: LightGCN
    history: train.History
    graph: Graph


def init(key: jax.Array, n_users: int, n_items: int, *, dim: int = 64, scale: float = 0.1) -> LightGCN:
    """``N(0, scale²)`` layer-0 embeddings of width ``dim`` (>= 1)."""
    check_key(key)
    n_users = check_int(n_users, "n_users", min_value=1)
    n_items = check_int(n_items, "n_items", min_value=1)
    dim = check_int(dim, "dim", min_value=1)
    scale = check_float(scale, "scale", min_value=0.0)
    ku, ki = jax.random.split(key)
    return LightGCN(scale * jax.random.normal(ku, (n_users, dim), jnp.float32),
                    scale * jax.random.normal(ki, (n_items, dim), jnp.float32))


def graph(users: jax.Array, items: jax.Array, n_users: int, n_items: int) -> Graph:
    """The normalised graph of the distinct ``(user, item)`` pairs (duplicates count once).

    Args:
      users, items: int ``(n,)`` interactions (ids in range).
      n_users, n_items: id-space sizes.
    """
    check_array(users, "users", ndim=1, kind="int")
    check_array(items, "items", ndim=1, kind="int")
    check_same_leading([("users", users), ("items", items)])
    n_users = check_int(n_users, "n_users", min_value=1)
    n_items = check_int(n_items, "n_items", min_value=1)
    check_index_range(users, "users", n_users)
    check_index_range(items, "items", n_items)
    pairs = np.unique(np.stack([np.asarray(users), np.asarray(items)], 1).astype(np.int64), axis=0)
    u, i = pairs[:, 0], pairs[:, 1]
    deg_u = np.bincount(u, minlength=n_users)
    deg_i = np.bincount(i, minlength=n_items)
    norm = 1.0 / np.sqrt(deg_u[u] * deg_i[i])
    return Graph(jnp.asarray(u, jnp.int32), jnp.asarray(i, jnp.int32), jnp.asarray(norm, jnp.float32))


def _propagate(params: LightGCN, g: Graph, n_layers: int):
    eu, ei = params.user_emb, params.item_emb
    su, si = eu, ei
    w = g.norm[:, None]
    for _ in range(n_layers):
        eu, ei = (
            jax.ops.segment_sum(w * ei[g.items], g.users, num_segments=eu.shape[0]),
            jax.ops.segment_sum(w * eu[g.users], g.items, num_segments=ei.shape[0]),
        )
        su, si = su + eu, si + ei
    return su / (n_layers + 1), si / (n_layers + 1)


def propagate(params: LightGCN, g: Graph, *, n_layers: int = 3) -> tuple[jax.Array, jax.Array]:
    """Final user and item embeddings ``Σ_k Â^k E / (K+1)``: ``(n_users, d)``, ``(n_items, d)``."""
    if not isinstance(params, LightGCN):
        raise TypeError(f"params: expected a LightGCN from init()/fit(), got {type(params).__name__}")
    if not isinstance(g, Graph):
        raise TypeError(f"g: expected a Graph from graph(), got {type(g).__name__}")
    n_layers = check_int(n_layers, "n_layers", min_value=0)
    return _propagate(params, g, n_layers)


def loss(params: LightGCN, batch, key: jax.Array, *, g: Graph, n_layers: int = 3, l2: float = 1e-4) -> jax.Array:
    """BPR + ego-embedding L2 of one batch ``(users, positives, negatives, weights)`` (Eq. 15;
    ``key`` unused: the negatives come with the batch)."""
    del key
    u, i, j, w = batch
    eu, ei = _propagate(params, g, n_layers)
    diff = jnp.sum(eu[u] * (ei[i] - ei[j]), axis=-1)
    total = jnp.maximum(jnp.sum(w), 1.0)
    reg = sum(jnp.sum(w[:, None] * e**2) for e in (params.user_emb[u], params.item_emb[i], params.item_emb[j]))
    return -jnp.sum(w * jax.nn.log_sigmoid(diff)) / total + 0.5 * l2 * reg / total


def scores(params: LightGCN, g: Graph, users: jax.Array, *, n_layers: int = 3) -> jax.Array:
    """``ŷ(u, ·) = e_u Eᵀ_items`` for the given users: ``(m,) → (m, n_items)``."""
    check_array(users, "users", ndim=1, kind="int")
    eu, ei = propagate(params, g, n_layers=n_layers)
    check_index_range(users, "users", eu.shape[0])
    return eu[jnp.asarray(users)] @ ei.T


def _epoch_batches(key, users, items, n_items, batch_size):
    n = users.shape[0]
    n_batches = -(-n // batch_size)
    pad = n_batches * batch_size - n
    k_perm, k_neg = jax.random.split(key)
    perm = jnp.concatenate([jax.random.permutation(k_perm, n), jnp.zeros(pad, jnp.int32)])
    w = (jnp.arange(n + pad) < n).astype(jnp.float32)
    negs = jax.random.randint(k_neg, (n + pad,), 0, n_items)
    shape = (n_batches, batch_size)
    return users[perm].reshape(shape), items[perm].reshape(shape), negs.reshape(shape), w.reshape(shape)


@functools.partial(jax.jit, static_argnames=("epochs", "batch_size", "n_layers", "n_items"))
def _train(params, key, g, lr, l2, *, epochs, batch_size, n_layers, n_items):
    opt = optax.adam(lr)
    obj = functools.partial(loss, g=g, n_layers=n_layers, l2=l2)
    state, losses = train.scan_epochs(
        train.init(params, opt), key, lambda k: _epoch_batches(k, g.users, g.items, n_items, batch_size),
        epochs=epochs, loss=obj, optimizer=opt)
    return state.params, losses


def fit(
    key: jax.Array,
    users: jax.Array,
    items: jax.Array,
    n_users: int,
    n_items: int,
    *,
    dim: int = 64,
    n_layers: int = 3,
    epochs: int = 100,
    lr: float = 1e-3,
    l2: float = 1e-4,
    batch_size: int = 2048,
) -> Fit:
    """Train LightGCN with BPR and Adam (one jitted scan of :func:`distill.train.scan` epochs).

    Every update propagates the whole graph (as in the paper), so an update costs
    ``O(K · E · d)``.

    Args:
      key: PRNG key (initialisation, shuffles, negatives).
      users, items: int ``(n,)`` positive interactions (the graph's edges; duplicates count once).
      n_users, n_items: id-space sizes.
      dim: embedding size (>= 1).
      n_layers: K propagation layers (>= 0; 0 = MF).
      epochs: passes over the edges (>= 1).
      lr: Adam learning rate (> 0).
      l2: L2 weight on the batch's layer-0 embeddings (>= 0).
      batch_size: positives per update (>= 1).

    Returns:
      :class:`Fit`.
    """
    check_key(key)
    g = graph(users, items, n_users, n_items)
    n_layers = check_int(n_layers, "n_layers", min_value=0)
    epochs = check_int(epochs, "epochs", min_value=1)
    lr = check_float(lr, "lr", min_value=0.0, strict_min=True)
    l2 = check_float(l2, "l2", min_value=0.0)
    batch_size = min(check_int(batch_size, "batch_size", min_value=1), g.users.shape[0])
    k_init, k_train = jax.random.split(key)
    params = init(k_init, n_users, n_items, dim=dim)
    params, losses = _train(params, k_train, g, jnp.float32(lr), jnp.float32(l2), epochs=epochs,
                            batch_size=batch_size, n_layers=n_layers, n_items=n_items)
    return Fit(params, train.history_of(losses), g)
