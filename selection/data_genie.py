"""DATA-GENIE: predicting which CF sampler preserves the algorithm ranking (dissertation §1.4).

    τ̂(R_{f,m}, R^{s,p}_{f,m}) = Φ(E(D_f), E(D_f^{s,p}), m)                      (Eq. 1.1)

* E — :func:`embed`, the 53-dim handcrafted dataset embedding (§1.4.2): 10 evenly
  spaced samples of each of five distributions of the dataset and its user–item
  bipartite graph G — user frequencies, item frequencies, the top-100 adjacency
  eigenvalues, the hop plot and the connected-component sizes — plus the numbers of
  users, items and interactions (5 × 10 + 3 = 53).
* Φ — an MLP with two ReLU layers (:func:`models.mlp.mlp`) on
  ``[E(D), E(D^{s,p}), onehot(m)]`` (features standardised on the training set);
  DATA-GENIE-regression passes its output through tanh and minimises
  ``Σ (τ − τ̂)²``; DATA-GENIE-ranking minimises the BPR loss
  ``Σ_{s_i ≻ s_j} −ln σ(τ̂_i − τ̂_j)`` over pairs of samplers of the same
  (dataset, p, m) with ``τ_i > τ_j``.
* Evaluation — :func:`precision_at_1`: for each (dataset, p, m) group, is the
  sampler with the largest τ̂ one with the largest true τ; compared with a random
  choice (:func:`random_p_at_1`) and the best static sampler
  (:func:`static_p_at_1`).

Distribution samples are taken on ``log1p`` scales (the distributions are long-tailed
and datasets differ in size by orders of magnitude); the hop plot is estimated by BFS
from a fixed random set of source nodes (exact when ``n_sources`` ≥ nodes).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph

from distill import train
from distill.checks import check_array, check_choice, check_float, check_index_range, check_int, check_key, check_same_leading
from distill.data.interactions import Interactions, check_interactions
from models.mlp import mlp

__all__ = [
    "EMBED_DIM",
    "embed",
    "Genie",
    "features",
    "fit",
    "predict",
    "precision_at_1",
    "random_p_at_1",
    "static_p_at_1",
]

N_SAMPLES = 10
EMBED_DIM = 5 * N_SAMPLES + 3


def _samples(values: np.ndarray, n: int = N_SAMPLES) -> np.ndarray:
    """``n`` evenly spaced entries of a (sorted) distribution; zeros if it is empty."""
    if values.size == 0:
        return np.zeros(n)
    idx = np.round(np.linspace(0, values.size - 1, n)).astype(int)
    return values[idx].astype(np.float64)


def _adjacency(users: np.ndarray, items: np.ndarray) -> tuple[sp.csr_matrix, int, int]:
    _, u = np.unique(users, return_inverse=True)
    _, i = np.unique(items, return_inverse=True)
    n_u, n_i = int(u.max()) + 1, int(i.max()) + 1
    b = sp.csr_matrix((np.ones(u.size), (u, i)), shape=(n_u, n_i))
    b.data[:] = 1.0  # repeated pairs are one edge
    return b, n_u, n_i


def _top_singular_values(b: sp.csr_matrix, k: int = 100) -> np.ndarray:
    # Eigenvalues of the bipartite adjacency [[0, B], [Bᵀ, 0]] are ±σ(B): the top
    # eigenvalues are B's largest singular values, the square roots of the
    # eigenvalues of the smaller Gram matrix (users ≪ items: B Bᵀ).
    g = (b @ b.T if b.shape[0] <= b.shape[1] else b.T @ b).toarray()
    ev = np.linalg.eigvalsh(g)[::-1][:k]
    return np.sqrt(np.maximum(ev, 0.0))


def _hop_plot(graph: sp.csr_matrix, n_sources: int, max_hops: int, seed: int) -> np.ndarray:
    """Fraction of (source, node) pairs within ``h`` hops, ``h = 1..max_hops``."""
    n = graph.shape[0]
    src = np.random.default_rng(seed).choice(n, min(n_sources, n), replace=False)
    dist = csgraph.shortest_path(graph, unweighted=True, directed=False, indices=src)
    return np.array([(dist <= h).mean() for h in range(1, max_hops + 1)])


def embed(
    inter: Interactions, mask: Any = None, *, n_sources: int = 64, seed: int = 0
) -> np.ndarray:
    """The 53-dim handcrafted embedding E(D) of a dataset (or of its sample ``mask``).

    Args:
      inter: the interactions.
      mask: optional bool ``(n,)`` rows of a sample D^{s,p}; users/items without a kept
        row are absent from the sample's graph.
      n_sources: BFS sources for the hop plot.
      seed: seed of the hop plot's sources.

    Returns:
      float64 ``(53,)``: ``log1p`` of 10 samples each of the user and item frequencies
      (descending), the top-100 singular values (descending), the hop plot (fraction of
      pairs within 1..10 hops, as is), the component sizes as fractions of the nodes
      (10 largest, zero-padded), then ``log1p`` of #users, #items, #interactions.
    """
    inter = check_interactions(inter)
    users, items = inter.users, inter.items
    if mask is not None:
        check_array(mask, "mask", ndim=1, kind="bool")
        check_same_leading([("inter.users", users), ("mask", mask)])
        mask = np.asarray(mask)
        if not mask.any():
            raise ValueError("mask: expected at least one kept interaction")
        users, items = users[mask], items[mask]
    n_sources = check_int(n_sources, "n_sources", min_value=1)
    b, n_u, n_i = _adjacency(users, items)
    n_edges = int(b.nnz)
    user_freq = np.sort(np.asarray(b.sum(axis=1)).ravel())[::-1]
    item_freq = np.sort(np.asarray(b.sum(axis=0)).ravel())[::-1]
    sv = _top_singular_values(b)
    graph = sp.bmat([[None, b], [b.T, None]], format="csr")
    hops = _hop_plot(graph, n_sources, N_SAMPLES, seed)
    _, labels = csgraph.connected_components(graph, directed=False)
    comp = np.sort(np.bincount(labels))[::-1][:N_SAMPLES] / graph.shape[0]
    comp = np.pad(comp, (0, N_SAMPLES - comp.size))
    return np.concatenate([
        np.log1p(_samples(user_freq)),
        np.log1p(_samples(item_freq)),
        np.log1p(_samples(sv)),
        hops,
        comp,
        np.log1p([n_u, n_i, n_edges]),
    ])


def features(full_emb: Any, sample_emb: Any, metric: Any, n_metrics: int) -> np.ndarray:
    """Φ's input rows ``[E(D), E(D^{s,p}), onehot(m)]``.

    Args:
      full_emb: ``(n, 53)`` embeddings of the full datasets.
      sample_emb: ``(n, 53)`` embeddings of the samples.
      metric: int ``(n,)`` metric index in ``0..n_metrics-1``.
      n_metrics: number of metrics.

    Returns:
      ``(n, 106 + n_metrics)`` float32.
    """
    check_array(full_emb, "full_emb", ndim=2, kind="numeric", finite=True, shape=(None, EMBED_DIM))
    check_array(sample_emb, "sample_emb", ndim=2, kind="numeric", finite=True, shape=(None, EMBED_DIM))
    check_array(metric, "metric", ndim=1, kind="int")
    check_same_leading([("full_emb", full_emb), ("sample_emb", sample_emb), ("metric", metric)])
    n_metrics = check_int(n_metrics, "n_metrics", min_value=1)
    check_index_range(metric, "metric", n_metrics, "index")
    return np.concatenate([full_emb, sample_emb, np.eye(n_metrics)[np.asarray(metric)]], axis=1).astype(np.float32)


class Genie(NamedTuple):
    """A trained Φ: MLP parameters, input standardisation and the objective."""

    params: Any
    mean: jax.Array
    std: jax.Array
    hidden: int
    mode: str


def _pairs(tau: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """All (i, j) in the same group with τ_i > τ_j: ``(n_pairs, 2)``."""
    out = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        ti = tau[idx]
        a, b = np.nonzero(ti[:, None] > ti[None, :])
        out.append(np.stack([idx[a], idx[b]], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), int)


def _forward(apply, mode, params, x):
    out = apply(params, x)[:, 0]
    return jnp.tanh(out) if mode == "regression" else out


def _loss(params, batch, key, *, apply, mode):
    """Φ's full-batch loss: squared error of tanh outputs (regression) or BPR over the
    ``(i, j)`` pairs with ``τ_i > τ_j`` (ranking); ``key`` unused."""
    del key
    x, tau, pairs = batch
    pred = _forward(apply, mode, params, x)
    if mode == "regression":
        return jnp.mean((pred - tau) ** 2)
    return -jnp.mean(jax.nn.log_sigmoid(pred[pairs[:, 0]] - pred[pairs[:, 1]]))


@functools.partial(jax.jit, static_argnames=("apply", "mode", "steps"))
def _train(key, params, x, tau, pairs, lr, weight_decay, *, apply, mode, steps):
    opt = optax.adamw(lr, weight_decay=weight_decay)
    loss = functools.partial(_loss, apply=apply, mode=mode)

    def step(state, _):
        return train.update(state, (x, tau, pairs), key, loss=loss, optimizer=opt)

    state, losses = jax.lax.scan(step, train.init(params, opt), None, length=steps)
    return state.params, losses


def fit(
    key: jax.Array,
    x: Any,
    tau: Any,
    groups: Any,
    *,
    mode: str = "ranking",
    hidden: int = 64,
    steps: int = 1000,
    lr: float = 3e-3,
    weight_decay: float = 1e-3,
) -> tuple[Genie, train.History]:
    """Train Φ by DATA-GENIE-regression or DATA-GENIE-ranking (full-batch AdamW, every
    step one :func:`distill.train.update`).

    Args:
      key: PRNG key (initialisation).
      x: ``(n, d)`` inputs from :func:`features`.
      tau: ``(n,)`` true Kendall τ (finite; drop NaN rows first).
      groups: int ``(n,)`` id of each row's (dataset, p, m) group (ranking pairs only
        compare rows of the same group).
      mode: ``'regression'`` or ``'ranking'``.
      hidden: width of the two ReLU layers.
      steps: optimisation steps.
      lr, weight_decay: AdamW settings.

    Returns:
      ``(genie, history)``: the trained :class:`Genie` and its
      :class:`distill.train.History` (the loss before each of the ``steps`` updates).
    """
    check_key(key)
    check_array(x, "x", ndim=2, kind="numeric", finite=True)
    check_array(tau, "tau", ndim=1, kind="numeric", finite=True)
    check_array(groups, "groups", ndim=1, kind="int")
    check_same_leading([("x", x), ("tau", tau), ("groups", groups)])
    check_choice(mode, "mode", ("regression", "ranking"))
    hidden = check_int(hidden, "hidden", min_value=1)
    steps = check_int(steps, "steps", min_value=1)
    lr = check_float(lr, "lr", min_value=0.0, strict_min=True)
    weight_decay = check_float(weight_decay, "weight_decay", min_value=0.0)
    xn = np.asarray(x, np.float32)
    mean, std = xn.mean(0), xn.std(0) + 1e-6
    xs = jnp.asarray((xn - mean) / std)
    t = np.asarray(tau, np.float32)
    pairs = _pairs(t, np.asarray(groups)) if mode == "ranking" else np.zeros((1, 2), int)
    if mode == "ranking" and pairs.shape[0] == 0:
        raise ValueError("tau: expected at least one group with two different τ for ranking")
    model = mlp(1, hidden=(hidden, hidden))
    params = model.init(key, xs[:1])
    params, losses = _train(
        key, params, xs, jnp.asarray(t), jnp.asarray(pairs), jnp.float32(lr), jnp.float32(weight_decay),
        apply=model.apply, mode=mode, steps=steps,
    )
    return Genie(params, jnp.asarray(mean), jnp.asarray(std), hidden, mode), train.history_of(losses)


def predict(genie: Genie, x: Any) -> np.ndarray:
    """τ̂ for rows of :func:`features` (a score for ranking mode): ``(n, d) → (n,)``."""
    if not isinstance(genie, Genie):
        raise TypeError(f"genie: expected a Genie from fit(), got {type(genie).__name__}")
    check_array(x, "x", ndim=2, kind="numeric", finite=True, shape=(None, genie.mean.shape[0]))
    apply = mlp(1, hidden=(genie.hidden, genie.hidden)).apply
    xs = (jnp.asarray(x, jnp.float32) - genie.mean) / genie.std
    return np.asarray(_forward(apply, genie.mode, genie.params, xs))


def _check_group_args(score, tau, groups):
    check_array(score, "score", ndim=1, kind="numeric", finite=True)
    check_array(tau, "tau", ndim=1, kind="numeric")
    check_array(groups, "groups", ndim=1, kind="int")
    check_same_leading([("score", score), ("tau", tau), ("groups", groups)])
    t = np.asarray(tau, np.float64)
    return np.where(np.isnan(t), -np.inf, t), np.asarray(groups)


def precision_at_1(score: Any, tau: Any, groups: Any) -> float:
    """P@1: fraction of groups where the top-scored sampler has the group's best true τ.

    Ties in ``score`` go to the first row; NaN τ count as the worst.

    Args:
      score: ``(n,)`` predicted τ̂ (or ranking scores).
      tau: ``(n,)`` true τ.
      groups: int ``(n,)`` group id (one row per sampler per group).
    """
    s = np.asarray(check_array(score, "score", ndim=1, kind="numeric", finite=True))
    t, g = _check_group_args(score, tau, groups)
    hits = [t[idx][np.argmax(s[idx])] == t[idx].max() for idx in (np.flatnonzero(g == u) for u in np.unique(g))]
    return float(np.mean(hits))


def random_p_at_1(tau: Any, groups: Any) -> float:
    """Expected P@1 of choosing a sampler uniformly: mean over groups of #best / #samplers."""
    t, g = _check_group_args(np.zeros(np.shape(tau)), tau, groups)
    return float(np.mean([np.mean(t[g == u] == t[g == u].max()) for u in np.unique(g)]))


def static_p_at_1(sampler: Any, tau: Any, groups: Any, choice: Any) -> float:
    """P@1 of always picking sampler ``choice`` (e.g. the best on the training groups).

    Args:
      sampler: ``(n,)`` sampler id (int or str) of every row.
      tau, groups: as :func:`precision_at_1`.
      choice: the sampler id always predicted.
    """
    s = np.asarray(check_array(sampler, "sampler", ndim=1, nonempty=True))
    score = (s == choice).astype(np.float64)
    return precision_at_1(score, tau, groups)
