"""Bias-only and matrix-factorisation recommenders trained with BPR (dissertation §1.3.1).

    bias-only:  r̂(u, i) = α + β_u + β_i
    MF:         r̂(u, i) = α + β_u + β_i + γ_u · γ_i          (γ ∈ R^d; Koren et al., 2009)

Both are trained on implicit feedback with the pairwise BPR loss (Rendle et al., 2009)
over one uniformly drawn negative item per positive interaction per epoch::

    L = −Σ_{(u,i)} w_ui · log σ(r̂(u, i) − r̂(u, j)) + l2 · (‖β‖² + ‖γ‖²) / 2,   j ~ U(items)

(α and β_u cancel in the difference: they do not change a user's ranking, exactly as in
the dissertation's bias-only baseline). ``dim = 0`` is the bias-only model.

They are the two proxies of SVP-CF (:mod:`selection.svp_cf`) and two members of the
Ψ panel (:mod:`benchmarks.psi`). For SVP-CF, :func:`fit` records after every epoch each
training interaction's *inverse AUC*: the fraction of ``n_negatives`` uniformly drawn
items that the current model scores at least as high as the positive — the per-epoch
term of Δ(u, i | P) in §1.3.3 (the dissertation's ``1 / 1(P_e(u,i) > P_e(u,j))`` is
infinite whenever a negative wins; its bounded Monte-Carlo form is used here).

Negatives are drawn uniformly over all items without excluding the user's positives:
with MovieLens densities (~1.6 %) that changes the loss by a negligible amount and
keeps the whole training loop one jitted ``lax.scan``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from distill import train
from distill.checks import check_array, check_float, check_index_range, check_int, check_key, check_same_leading
from distill.parallel import map_rows

__all__ = ["MF", "Fit", "init", "score_pairs", "predict", "fit", "inverse_auc"]


class MF(NamedTuple):
    """Parameters of bias-only (``dim = 0``) / MF models.

    Attributes:
      global_bias: ``()`` α.
      user_bias: ``(n_users,)`` β_u.
      item_bias: ``(n_items,)`` β_i.
      user_emb: ``(n_users, dim)`` γ_u (``dim`` may be 0).
      item_emb: ``(n_items, dim)`` γ_i.
    """

    global_bias: jax.Array
    user_bias: jax.Array
    item_bias: jax.Array
    user_emb: jax.Array
    item_emb: jax.Array


class Fit(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      params: the trained :class:`MF`.
      history: :class:`distill.train.History` — ``losses`` holds the BPR loss of every
        Adam update (``epochs × ceil(n / batch_size)`` of them, before the update);
        no evaluations.
      inverse_auc: ``(epochs, n)`` per interaction: fraction of sampled negatives
        scored ``>=`` the positive after each epoch (0 = ranked above every negative).
    """

    params: MF
    history: train.History
    inverse_auc: jax.Array


def _check_params(params) -> None:
    if not isinstance(params, MF):
        raise TypeError(f"params: expected an MF from init()/fit(), got {type(params).__name__}")


def init(key: jax.Array, n_users: int, n_items: int, *, dim: int = 0, scale: float = 0.01) -> MF:
    """Zero biases and ``N(0, scale²)`` embeddings.

    Args:
      key: PRNG key.
      n_users, n_items: sizes of the id spaces (>= 1).
      dim: latent size d (0 = bias-only).
      scale: standard deviation of the initial embeddings (>= 0).

    Returns:
      :class:`MF` in float32.
    """
    check_key(key)
    n_users = check_int(n_users, "n_users", min_value=1)
    n_items = check_int(n_items, "n_items", min_value=1)
    dim = check_int(dim, "dim", min_value=0)
    scale = check_float(scale, "scale", min_value=0.0)
    ku, ki = jax.random.split(key)
    return MF(
        global_bias=jnp.zeros((), jnp.float32),
        user_bias=jnp.zeros((n_users,), jnp.float32),
        item_bias=jnp.zeros((n_items,), jnp.float32),
        user_emb=scale * jax.random.normal(ku, (n_users, dim), jnp.float32),
        item_emb=scale * jax.random.normal(ki, (n_items, dim), jnp.float32),
    )


def _pairs(params: MF, users, items):
    return (
        params.global_bias
        + params.user_bias[users]
        + params.item_bias[items]
        + jnp.sum(params.user_emb[users] * params.item_emb[items], axis=-1)
    )


def _in_range(ids: jax.Array, n: int) -> jax.Array:
    return (ids >= 0) & (ids < n)


def score_pairs(params: MF, users: jax.Array, items: jax.Array) -> jax.Array:
    """``r̂(u, i)`` for parallel ``(n,)`` int arrays of users and items → ``(n,)``.

    Out-of-range ids raise when concrete and give NaN under ``jit``.
    """
    _check_params(params)
    check_array(users, "users", kind="int", nonempty=False)
    check_array(items, "items", kind="int", nonempty=False)
    if np.shape(users) != np.shape(items):
        raise ValueError(f"items: expected shape {np.shape(users)} like users, got {np.shape(items)}")
    n_users, n_items = params.user_bias.shape[0], params.item_bias.shape[0]
    check_index_range(users, "users", n_users)
    check_index_range(items, "items", n_items)
    u, i = jnp.asarray(users), jnp.asarray(items)
    return jnp.where(_in_range(u, n_users) & _in_range(i, n_items), _pairs(params, u, i), jnp.nan)


def predict(params: MF, users: jax.Array) -> jax.Array:
    """Scores of every item for the given users: ``(m,) → (m, n_items)``.

    ``r̂(u, ·) = α + β_u + β + γ_u Γᵀ``.
    """
    _check_params(params)
    check_array(users, "users", ndim=1, kind="int")
    n_users = params.user_bias.shape[0]
    check_index_range(users, "users", n_users)
    u = jnp.asarray(users)
    scores = (
        params.global_bias
        + params.user_bias[u][:, None]
        + params.item_bias[None, :]
        + params.user_emb[u] @ params.item_emb.T
    )
    return jnp.where(_in_range(u, n_users)[:, None], scores, jnp.nan)


def _inverse_auc_rows(rows, params):
    # rows: (m, 2 + n_negatives) = [user, positive, negatives...]; row-wise, so it
    # shards over devices with map_rows.
    pos = _pairs(params, rows[:, 0], rows[:, 1])
    negs = _pairs(params, rows[:, :1], rows[:, 2:])
    return jnp.mean((negs >= pos[:, None]).astype(jnp.float32), axis=1)


def _inverse_auc(params, users, items, key, n_items, n_negatives, mesh=None):
    # Negatives are drawn before sharding so the result does not depend on the mesh.
    neg = jax.random.randint(key, (users.shape[0], n_negatives), 0, n_items)
    rows = jnp.concatenate([users[:, None], items[:, None], neg], axis=1)
    return map_rows(_inverse_auc_rows, rows, params, mesh=mesh)


@functools.partial(jax.jit, static_argnames=("n_items", "n_negatives", "mesh"))
def _inverse_auc_jit(params, users, items, key, n_items, n_negatives, mesh):
    return _inverse_auc(params, users, items, key, n_items, n_negatives, mesh)


def inverse_auc(
    key: jax.Array,
    params: MF,
    users: jax.Array,
    items: jax.Array,
    *,
    n_negatives: int = 16,
    mesh: Mesh | None = None,
) -> jax.Array:
    """Monte-Carlo inverse AUC of each positive ``(u, i)``: ``mean_j 1[r̂(u,j) ≥ r̂(u,i)]``.

    Args:
      key: PRNG key for the ``n_negatives`` uniform negatives per positive.
      params: a fitted :class:`MF`.
      users, items: int ``(n,)`` positives.
      n_negatives: negatives per positive (>= 1).
      mesh: optional device mesh; the interactions are sharded over it
        (:func:`distill.parallel.map_rows`), same result as without.

    Returns:
      float32 ``(n,)`` in ``[0, 1]``.
    """
    check_key(key)
    _check_params(params)
    check_array(users, "users", ndim=1, kind="int")
    check_array(items, "items", ndim=1, kind="int")
    check_same_leading([("users", users), ("items", items)])
    n_negatives = check_int(n_negatives, "n_negatives", min_value=1)
    if mesh is not None and not isinstance(mesh, Mesh):
        raise TypeError(f"mesh: expected a jax.sharding.Mesh or None, got {type(mesh).__name__}")
    n_users, n_items = params.user_bias.shape[0], params.item_bias.shape[0]
    check_index_range(users, "users", n_users)
    check_index_range(items, "items", n_items)
    u, i = jnp.asarray(users, jnp.int32), jnp.asarray(items, jnp.int32)
    out = _inverse_auc_jit(params, u, i, key, n_items, n_negatives, mesh)
    return jnp.where(_in_range(u, n_users) & _in_range(i, n_items), out, jnp.nan)


def _bpr_loss(params: MF, batch, key, *, l2, n_batches):
    """Weighted BPR loss of one mini-batch ``(users, positives, negatives, weights)`` plus
    its share ``1/n_batches`` of the L2 penalty (``key`` unused: negatives come with the batch)."""
    del key
    u, i, j, w = batch
    diff = _pairs(params, u, i) - _pairs(params, u, j)
    data = -jnp.sum(w * jax.nn.log_sigmoid(diff)) / jnp.maximum(jnp.sum(w), 1.0)
    reg = 0.5 * l2 * (
        jnp.sum(params.user_bias**2) + jnp.sum(params.item_bias**2)
        + jnp.sum(params.user_emb**2) + jnp.sum(params.item_emb**2)
    )
    return data + reg / n_batches


def _epoch_batches(key, users, items, weights, n_items, batch_size):
    """One epoch's shuffled ``(n_batches, batch_size)`` batches with one uniform negative
    per positive; padding slots point at row 0 with weight 0 so every batch has the same shape."""
    n = users.shape[0]
    n_batches = -(-n // batch_size)
    pad = n_batches * batch_size - n
    k_perm, k_neg = key
    perm = jnp.concatenate([jax.random.permutation(k_perm, n), jnp.zeros(pad, jnp.int32)])
    w = jnp.where(jnp.arange(n + pad) < n, weights[perm], 0.0)
    negs = jax.random.randint(k_neg, (n + pad,), 0, n_items)
    shape = (n_batches, batch_size)
    return users[perm].reshape(shape), items[perm].reshape(shape), negs.reshape(shape), w.reshape(shape)


@functools.partial(
    jax.jit, static_argnames=("epochs", "batch_size", "n_negatives", "n_items")
)
def _train(params, key, users, items, weights, lr, l2, *, epochs, batch_size, n_negatives, n_items):
    n_batches = -(-users.shape[0] // batch_size)
    opt = optax.adam(lr)
    loss = functools.partial(_bpr_loss, l2=l2, n_batches=n_batches)

    def epoch(state, k):
        k_perm, k_neg, k_eval = jax.random.split(k, 3)
        batches = _epoch_batches((k_perm, k_neg), users, items, weights, n_items, batch_size)
        state, losses = train.scan(state, batches, k_eval, loss=loss, optimizer=opt)
        inv = _inverse_auc(state.params, users, items, k_eval, n_items, n_negatives)
        return state, (losses, inv)

    state, (losses, inv) = jax.lax.scan(epoch, train.init(params, opt), jax.random.split(key, epochs))
    return state.params, losses.reshape(-1), inv


def fit(
    key: jax.Array,
    users: jax.Array,
    items: jax.Array,
    n_users: int,
    n_items: int,
    *,
    dim: int = 0,
    epochs: int = 20,
    lr: float = 0.05,
    l2: float = 1e-3,
    batch_size: int = 4096,
    n_negatives: int = 16,
    weights: jax.Array | None = None,
) -> Fit:
    """Train bias-only (``dim=0``) or MF with BPR and Adam, recording per-epoch inverse AUC.

    The whole run (epochs × shuffled mini-batches) is one jitted ``lax.scan`` of
    :func:`distill.train.scan` epochs; it
    compiles once per ``(n, epochs, batch_size, n_negatives, n_items, dim)``. Pad a
    changing number of interactions to a fixed ``n`` with ``weights = 0`` to reuse the
    compilation (what :mod:`benchmarks.psi` does for every sample size).

    Args:
      key: PRNG key (initialisation, shuffles, negatives).
      users, items: int ``(n,)`` positive interactions (ids in range).
      n_users, n_items: id-space sizes.
      dim: latent size (0 = bias-only).
      epochs: number of passes (>= 1).
      lr: Adam learning rate (> 0).
      l2: L2 penalty on biases and embeddings (>= 0).
      batch_size: interactions per step (>= 1).
      n_negatives: negatives per positive for the recorded inverse AUC.
      weights: optional ``(n,)`` non-negative per-interaction weights (0 = padding).

    Returns:
      :class:`Fit` (the trained :class:`MF`, its :class:`distill.train.History` and the
      per-epoch inverse AUC).
    """
    check_key(key)
    check_array(users, "users", ndim=1, kind="int")
    check_array(items, "items", ndim=1, kind="int")
    check_same_leading([("users", users), ("items", items)])
    n_users = check_int(n_users, "n_users", min_value=1)
    n_items = check_int(n_items, "n_items", min_value=1)
    u, i = jnp.asarray(users, jnp.int32), jnp.asarray(items, jnp.int32)
    check_index_range(u, "users", n_users)
    check_index_range(i, "items", n_items)
    epochs = check_int(epochs, "epochs", min_value=1)
    lr = check_float(lr, "lr", min_value=0.0, strict_min=True)
    l2 = check_float(l2, "l2", min_value=0.0)
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    n_negatives = check_int(n_negatives, "n_negatives", min_value=1)
    if weights is None:
        w = jnp.ones(u.shape[0], jnp.float32)
    else:
        check_array(weights, "weights", ndim=1, kind="numeric", finite=True)
        check_same_leading([("users", users), ("weights", weights)])
        w = jnp.asarray(weights, jnp.float32)
        if bool(jnp.any(w < 0)):
            raise ValueError("weights: expected non-negative weights")
    k_init, k_train = jax.random.split(key)
    params = init(k_init, n_users, n_items, dim=dim)
    batch_size = min(batch_size, u.shape[0])
    params, losses, inv = _train(
        params, k_train, u, i, w, jnp.float32(lr), jnp.float32(l2),
        epochs=epochs, batch_size=batch_size, n_negatives=n_negatives, n_items=n_items,
    )
    return Fit(params, train.history_of(losses), inv)
