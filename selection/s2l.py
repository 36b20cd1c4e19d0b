"""S2L — SmallToLarge (Yang et al., 2024): cluster the loss trajectories of a small
proxy model and sample evenly from the clusters.

Examples whose losses move alike during training have similar gradients (small
curvature), so a sample that covers every trajectory cluster approximates the full
gradient. Trajectories come from :func:`selection.training_dynamics.train_with_dynamics`
(``Dynamics.loss.T``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from distill.checks import check_array, check_int, check_key
from selection.coresets import kmeans
from selection.select import stratified_sample

__all__ = ["s2l"]


def s2l(key: jax.Array, trajectories: Any, k: int, *, n_clusters: int = 20, iters: int = 50) -> np.ndarray:
    """Select ``k`` examples by clustering loss trajectories and sampling clusters evenly.

    Args:
      key: PRNG key (k-means initialisation and within-cluster sampling).
      trajectories: float ``(n, T)``: loss of each example at ``T`` checkpoints of the proxy.
      k: subset size, ``1 <= k <= n``.
      n_clusters: k-means clusters (capped at ``n``).
      iters: Lloyd iterations.

    Returns:
      int64 ``(k,)`` indices, sorted ascending: the budget is split evenly over the
      clusters (smallest first, leftovers redistributed —
      :func:`selection.select.even_allocation`), uniformly at random inside each.
    """
    check_key(key)
    check_array(trajectories, "trajectories", ndim=2, kind="float", finite=True)
    n = trajectories.shape[0]
    k = check_int(k, "k", min_value=1, max_value=n)
    n_clusters = check_int(n_clusters, "n_clusters", min_value=1)
    kc, ks = jax.random.split(key)
    km = kmeans(kc, jnp.asarray(trajectories), min(n_clusters, n), iters=iters)
    return stratified_sample(ks, np.asarray(km.labels), k)
