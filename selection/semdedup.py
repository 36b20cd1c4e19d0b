"""SemDeDup: semantic de-duplication inside k-means clusters (Abbas et al., 2023).

1. L2-normalise the embeddings and cluster them with spherical k-means.
2. Inside each cluster, order the members by decreasing distance to the centroid
   (the paper keeps the *least* prototypical member of a duplicate group).
3. Walking that order, drop a member whose cosine similarity to any *earlier* member
   exceeds ``threshold = 1 − ε`` (the upper-triangular max of the paper's Alg. 1).

Only pairs inside one cluster are compared, so the cost is ``Σ_c n_c²`` instead of ``n²``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from distill.checks import check_array, check_float, check_int, check_key
from selection.coresets import kmeans

__all__ = ["SemDeDup", "semdedup", "semdedup_fraction"]


class SemDeDup(NamedTuple):
    """Result of :func:`semdedup`.

    Attributes:
      keep: bool ``(n,)`` — True for kept examples.
      labels: int ``(n,)`` cluster of each example.
      max_sim: ``(n,)`` cosine similarity of each example to its most similar earlier
        cluster-mate (``-1`` for the first of its cluster): it is dropped iff this
        exceeds the threshold, so any other threshold is one comparison away.
    """

    keep: np.ndarray
    labels: np.ndarray
    max_sim: np.ndarray


@jax.jit
def _max_sim_earlier(e):
    sim = e @ e.T
    tri = jnp.tril(jnp.ones(sim.shape, bool), k=-1)  # row j compares to earlier rows i < j
    return jnp.max(jnp.where(tri, sim, -1.0), axis=1)


def semdedup(
    key: jax.Array,
    embeddings: Any,
    *,
    n_clusters: int,
    threshold: float = 0.95,
    iters: int = 50,
) -> SemDeDup:
    """Remove semantic near-duplicates (cosine similarity > ``threshold``) within clusters.

    Args:
      key: PRNG key of the k-means initialisation.
      embeddings: float ``(n, d)`` (any scale; normalised internally).
      n_clusters: k-means clusters, ``1 <= n_clusters <= n``.
      threshold: cosine-similarity threshold ``1 − ε`` in ``[-1, 1]``.
      iters: Lloyd iterations.

    Returns:
      :class:`SemDeDup`; from every group of mutual near-duplicates exactly one member
      (the one farthest from its centroid) is kept.
    """
    check_key(key)
    check_array(embeddings, "embeddings", ndim=2, kind="float", finite=True)
    n_clusters = check_int(n_clusters, "n_clusters", min_value=1, max_value=embeddings.shape[0])
    threshold = check_float(threshold, "threshold", min_value=-1.0, max_value=1.0)
    e = jnp.asarray(embeddings)
    e = e / jnp.maximum(jnp.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    km = kmeans(key, e, n_clusters, iters=iters, spherical=True)
    labels = np.asarray(km.labels)
    en = np.asarray(e)
    cent = np.asarray(km.centroids)
    max_sim = np.full(en.shape[0], -1.0, en.dtype)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if members.size < 2:
            continue
        to_centroid = en[members] @ cent[c]
        order = members[np.argsort(to_centroid, kind="stable")]  # farthest from centroid first
        max_sim[order] = np.asarray(_max_sim_earlier(jnp.asarray(en[order])))
    return SemDeDup(max_sim <= threshold, labels, max_sim)


def semdedup_fraction(result: SemDeDup, fraction: float) -> np.ndarray:
    """Indices kept when the threshold is set to keep ``fraction`` of the data.

    Sorting by :attr:`SemDeDup.max_sim` and keeping the lowest ``round(fraction·n)``
    is the same as choosing ``threshold`` between consecutive ``max_sim`` values.
    """
    from selection.select import bottom_k, budget

    return bottom_k(result.max_sim, budget(result.max_sim.shape[0], fraction))
