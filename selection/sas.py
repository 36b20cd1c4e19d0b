"""SAS — subsets for data-efficient contrastive learning (Joshi & Mirzasoleiman, ICML 2023).

Tutorial 003 ("SAS: Which Examples Contribute the Most to CL?"): the examples that
matter most for contrastive learning are those that (1) keep every latent class
*aligned* — a diverse subset of each class — and (2) keep the class centres
*divergent* — central examples; the distance between a latent class's centre on the
full data and on the subset is bounded by the expected augmentation distance
``‖μ_k − μ_k^S‖ ≤ c · E_{i∈V_k, j∈S_k} d_ij`` with

    d_ij = E_{x ∈ A(x_i), x' ∈ A(x_j)} ‖f(x) − f(x')‖      (expected augmentation distance)

under a cheap *proxy* encoder ``f``. Latent classes come from k-means on the proxy's
embeddings (or from labels / a linear probe when available). Within each latent class
SAS picks the examples that cover the class in this distance — here by facility location
``max_{S_k} Σ_{i∈V_k} max_{j∈S_k} (d_max − d_ij)`` with the library's greedy
(:func:`selection.coresets.facility_location`); budgets are proportional to class sizes.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from distill import parallel
from distill.checks import check_array, check_choice, check_int, check_key
from selection.coresets import facility_location, kmeans, proportional_budget

__all__ = ["augmentation_embeddings", "expected_augmentation_distance", "SAS", "sas", "latent_classes"]


def augmentation_embeddings(
    key: jax.Array,
    encode: Callable[[jax.Array], jax.Array],
    x: Any,
    augment: Callable[[jax.Array, jax.Array], jax.Array],
    *,
    n_augment: int = 4,
) -> jax.Array:
    """Proxy embeddings of ``n_augment`` random augmentations of every example.

    Args:
      key: PRNG key (augmentations).
      encode: ``encode(x_batch) -> (b, d)`` the proxy encoder (bind its parameters).
      x: ``(n, ...)`` inputs.
      augment: ``augment(key, x_batch) -> x_batch`` one random augmentation per example.
      n_augment: augmentations per example ``A >= 1``.

    Returns:
      ``(A, n, d)`` embeddings.
    """
    check_key(key)
    if not callable(encode):
        raise TypeError(f"encode: expected a callable, got {type(encode).__name__}")
    if not callable(augment):
        raise TypeError(f"augment: expected a callable, got {type(augment).__name__}")
    check_array(x, "x", kind="numeric", finite=True)
    n_augment = check_int(n_augment, "n_augment", min_value=1)
    xj = jnp.asarray(x)
    return jnp.stack([encode(augment(k, xj)) for k in jax.random.split(key, n_augment)])


def expected_augmentation_distance(emb: Any, *, mesh: Any = None) -> jax.Array:
    """``d_ij = (1/A²) Σ_{a,b} ‖e_{a,i} − e_{b,j}‖`` from :func:`augmentation_embeddings`.

    Rows ``i`` are sharded over ``mesh`` with :func:`distill.parallel.map_rows`. Note
    ``d_ii > 0``: two augmentations of the same example differ.

    Args:
      emb: float ``(A, n, d)`` embeddings.
      mesh: optional device mesh.

    Returns:
      ``(n, n)`` expected distances (symmetric).
    """
    check_array(emb, "emb", ndim=3, kind="float", finite=True)
    e = jnp.asarray(emb)
    return _ead(jnp.swapaxes(e, 0, 1), e, mesh)


@functools.partial(jax.jit, static_argnames=("mesh",))
def _ead(rows, e, mesh):
    n_aug, n = e.shape[:2]

    def fn(r_i, e):  # r: (b, A, d) augmentations of the row examples, i: (b,) their row indices
        r, i = r_i
        same_row = i[:, None] == jnp.arange(n)[None, :]

        def pair(ra, a, eb, b):  # (b, d), (n, d) -> (b, n)
            sq = jnp.sum(ra**2, 1)[:, None] - 2 * ra @ eb.T + jnp.sum(eb**2, 1)[None, :]
            # ‖x − x‖ is 0, but the expansion leaves rounding noise of order ε‖x‖² whose
            # square root (√ε‖x‖, ~3e-4‖x‖ in float32) would depend on the device layout.
            return jnp.where(same_row & (a == b), 0.0, jnp.sqrt(jnp.maximum(sq, 0.0)))

        aug = jnp.arange(n_aug)
        per_a = jax.vmap(lambda ra, a: jnp.mean(jax.vmap(lambda eb, b: pair(ra, a, eb, b))(e, aug), 0))(
            jnp.swapaxes(r, 0, 1), aug)
        return jnp.mean(per_a, 0)

    return parallel.map_rows(fn, (rows, jnp.arange(n)), e, mesh=mesh)


class SAS(NamedTuple):
    """Result of :func:`sas`: ``indices (k,)`` (grouped by latent class) and the ``latent (n,)`` classes."""

    indices: np.ndarray
    latent: np.ndarray


def sas(
    distances: Any,
    k: int,
    *,
    latent: Any = None,
    embeddings: Any = None,
    n_classes: int | None = None,
    key: jax.Array | None = None,
    method: str = "lazy",
) -> SAS:
    """SAS subset: per-latent-class facility location on expected augmentation distances.

    Args:
      distances: float ``(n, n)`` expected augmentation distances
        (:func:`expected_augmentation_distance`).
      k: subset size, ``1 <= k <= n``.
      latent: int ``(n,)`` latent classes; or give ``embeddings`` (``(n, d)``, e.g. the
        proxy's mean augmentation embedding), ``n_classes`` and ``key`` for k-means.
      method: facility-location greedy (``'lazy'``, ``'naive'``, ``'stochastic'``).

    Returns:
      :class:`SAS`; class ``c`` gets ``∝ n_c`` picks.
    """
    check_key(key, allow_none=True)
    check_array(distances, "distances", ndim=2, kind="float", finite=True)
    n = distances.shape[0]
    if distances.shape[1] != n:
        raise ValueError(f"distances: expected a square (n, n) matrix, got shape {tuple(distances.shape)}")
    k = check_int(k, "k", min_value=1, max_value=n)
    check_choice(method, "method", ("naive", "lazy", "stochastic"))
    lab = latent_classes(key, latent, embeddings, n_classes, n)
    d = np.asarray(distances)
    classes, sizes = np.unique(lab, return_counts=True)
    budget = proportional_budget(sizes, k)
    keys = jax.random.split(key if key is not None else jax.random.PRNGKey(0), len(classes))
    out = []
    for c, b, kc in zip(classes, budget, keys, strict=False):
        if b == 0:
            continue
        members = np.flatnonzero(lab == c)
        dc = d[np.ix_(members, members)]
        fl = facility_location((dc.max() - dc).astype(dc.dtype), int(b), method=method, key=kc)
        out.append(members[fl.indices])
    return SAS(np.concatenate(out).astype(np.int64), lab)


def latent_classes(
    key: jax.Array | None, latent: Any, embeddings: Any, n_classes: int | None, n: int
) -> np.ndarray:
    """Latent classes for per-class selection: given labels, or k-means on embeddings.

    SAS (Joshi & Mirzasoleiman 2023) and CLIPCov (Joshi et al. 2024) budget their picks per
    latent class; without labels the classes are the k-means clusters of the embeddings.
    Shared with :func:`selection.clipcov.clipcov`.

    Args:
      key: PRNG key for k-means (unused, may be None, when ``latent`` is given).
      latent: int ``(n,)`` classes, or None to cluster ``embeddings``.
      embeddings: float ``(n, d)`` (used only when ``latent`` is None).
      n_classes: number of k-means clusters, ``1 <= n_classes <= n``.
      n: number of examples.

    Returns:
      int ``(n,)`` class labels.
    """
    check_key(key, allow_none=True)
    if latent is not None:
        check_array(latent, "latent", shape=(n,), kind="int")
        return np.asarray(latent)
    if embeddings is None or n_classes is None or key is None:
        raise ValueError("latent: expected latent classes, or embeddings with n_classes and a key for k-means")
    check_array(embeddings, "embeddings", shape=(n, None), kind="float", finite=True)
    n_classes = check_int(n_classes, "n_classes", min_value=1, max_value=n)
    return np.asarray(kmeans(key, jnp.asarray(embeddings), n_classes).labels)
