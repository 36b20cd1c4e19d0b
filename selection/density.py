"""DENSITY sampling (dissertation Ch. 2, §2.3.2, Algorithm 2): an LSH sketch of the
embedding KDE, one score per example, inverse propensity sampling.

A p-stable (Gaussian) LSH function (Datar et al., 2004) of bucket width ``w`` is

    h(x) = ⌊(aᵀx + b) / w⌋,   a ~ N(0, I_d),  b ~ U[0, w),

and two points at distance ``c`` collide with probability

    p(c) = 1 − 2Φ(−w/c) − 2/(√(2π)·w/c) · (1 − exp(−(w/c)²/2)),

a positive-definite, decreasing kernel of the distance. Concatenating ``K`` such hashes
(and folding the tuple into ``B`` buckets) gives the kernel ``k(x, y) = p(‖x − y‖)^K``.
A RACE sketch (Coleman & Shrivastava, 2020) keeps ``R`` independent rows of ``B``
counters: pass 1 adds every example to bucket ``h_r(x)`` of each row; pass 2 scores

    S(x) = (1/R) Σ_r sketch[r, h_r(x)]  ≈  Σ_i k(x_i, x)   (the self term included),

an unbiased estimate of the kernel sum (up to bucket-folding collisions, O(n/B)).
Examples are then kept with probability ∝ 1/S(x) (:func:`selection.select.ips_sample`),
which uniformises the sample over the embedding space (Theorem 2.3.2). Algorithm 2's
last line, ``p = S/ΣS``, contradicts the theorem and the text ("keeping x with
probability proportional to 1/S(x)"); the inverse is implemented.

Both passes are data-parallel: the sketch is a sum over rows
(:func:`distill.parallel.sum_rows`) and scoring a row-wise map (:func:`~distill.parallel.map_rows`).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from distill import parallel
from distill.checks import check_array, check_float, check_int, check_key, is_concrete
from selection import select

__all__ = [
    "LSHParams",
    "make_lsh",
    "lsh_hash",
    "build_sketch",
    "query_sketch",
    "density_scores",
    "density_sample",
    "collision_probability",
    "exact_kernel_sum",
    "default_width",
]


class LSHParams(NamedTuple):
    """``R`` rows of ``K`` concatenated p-stable hashes folded into ``n_buckets`` buckets.

    Attributes:
      a: ``(R, K, d)`` Gaussian projections.
      b: ``(R, K)`` offsets in ``[0, width)``.
      mult: uint32 ``(R, K)`` odd multipliers folding the ``K`` codes into one bucket id.
      width: bucket width ``w`` (the kernel bandwidth).
      n_buckets: ``B``, buckets per row.
    """

    a: jax.Array
    b: jax.Array
    mult: jax.Array
    width: float
    n_buckets: int


def make_lsh(key: jax.Array, dim: int, *, n_rows: int = 256, n_concat: int = 1, width: float = 1.0, n_buckets: int = 4096) -> LSHParams:
    """Draw the hash functions ``h_1..h_R`` of Algorithm 2 (line 2) for ``dim``-d embeddings."""
    check_key(key)
    dim = check_int(dim, "dim", min_value=1)
    n_rows = check_int(n_rows, "n_rows", min_value=1)
    n_concat = check_int(n_concat, "n_concat", min_value=1)
    n_buckets = check_int(n_buckets, "n_buckets", min_value=1)
    width = check_float(width, "width", min_value=0.0, strict_min=True)
    ka, kb, km = jax.random.split(key, 3)
    a = jax.random.normal(ka, (n_rows, n_concat, dim))
    b = jax.random.uniform(kb, (n_rows, n_concat), minval=0.0, maxval=width)
    mult = jax.random.bits(km, (n_rows, n_concat), jnp.uint32) | jnp.uint32(1)
    return LSHParams(a, b, mult, width, n_buckets)


def lsh_hash(lsh: LSHParams, x: jax.Array) -> jax.Array:
    """Bucket ids ``h_r(x_i)``: int32 ``(n, R)`` for embeddings ``x`` ``(n, d)``."""
    proj = jnp.einsum("nd,rkd->nrk", x.astype(lsh.a.dtype), lsh.a) + lsh.b
    codes = jnp.floor(proj / lsh.width).astype(jnp.int32).astype(jnp.uint32)
    mixed = jnp.sum(codes * lsh.mult, axis=-1, dtype=jnp.uint32)  # wraps mod 2^32
    mixed = mixed ^ (mixed >> 16)
    mixed = mixed * jnp.uint32(0x45D9F3B)
    mixed = mixed ^ (mixed >> 16)
    return (mixed % jnp.uint32(lsh.n_buckets)).astype(jnp.int32)


def _with_arrays(lsh: LSHParams, arrays: tuple) -> LSHParams:
    # width / n_buckets stay static (closed over); only the arrays travel to devices
    return LSHParams(*arrays, lsh.width, lsh.n_buckets)


def build_sketch(lsh: LSHParams, x: Any, *, mesh: Any = None) -> jax.Array:
    """Pass 1 (Alg. 2 lines 3–5): the ``(R, B)`` count sketch of ``x`` ``(n, d)``."""
    check_array(x, "x", ndim=2, kind="float", finite=True)
    if x.shape[1] != lsh.a.shape[-1]:
        raise ValueError(f"x: expected {lsh.a.shape[-1]} features (the LSH dimension), got shape {tuple(x.shape)}")

    def rows(xs, ws, arrays):
        h = lsh_hash(_with_arrays(lsh, arrays), xs)  # (m, R)
        r = jnp.broadcast_to(jnp.arange(h.shape[1]), h.shape)
        return jnp.zeros((h.shape[1], lsh.n_buckets), ws.dtype).at[r, h].add(ws[:, None])

    return parallel.sum_rows(rows, jnp.asarray(x), (lsh.a, lsh.b, lsh.mult), mesh=mesh)


def query_sketch(lsh: LSHParams, sketch: jax.Array, x: Any, *, mesh: Any = None) -> jax.Array:
    """Pass 2 (Alg. 2 lines 7–11): ``S(x) = (1/R) Σ_r sketch[r, h_r(x)]`` for each row of ``x``."""
    check_array(x, "x", ndim=2, kind="float", finite=True)
    check_array(sketch, "sketch", shape=(lsh.a.shape[0], lsh.n_buckets), kind="numeric")

    def rows(xs, sk, arrays):
        h = lsh_hash(_with_arrays(lsh, arrays), xs)  # (m, R)
        return jnp.mean(jnp.take_along_axis(sk, h.T, axis=1), axis=0)

    return parallel.map_rows(rows, jnp.asarray(x), sketch, (lsh.a, lsh.b, lsh.mult), mesh=mesh)


def default_width(key: jax.Array, x: Any, *, n_pairs: int = 2000) -> float:
    """Bandwidth heuristic: the median distance between ``n_pairs`` random pairs (drawn with
    ``key``), divided by 2."""
    check_key(key)
    check_array(x, "x", ndim=2, kind="float", finite=True)
    n = x.shape[0]
    i, j = jax.random.randint(key, (2, n_pairs), 0, n)
    d = jnp.linalg.norm(jnp.asarray(x)[i] - jnp.asarray(x)[j], axis=1)
    d = d[d > 0] if bool(jnp.any(d > 0)) else jnp.ones((1,))
    return float(jnp.median(d)) / 2.0


def density_scores(
    key: jax.Array,
    embeddings: Any,
    *,
    n_rows: int = 256,
    n_buckets: int = 4096,
    n_concat: int = 1,
    width: float | None = None,
    mesh: Any = None,
) -> jax.Array:
    """DENSITY scores: the LSH-sketch estimate of the KDE at every example (Alg. 2, lines 1–11).

    Args:
      key: PRNG key of the hash functions (Alg. 2's seed ``s``).
      embeddings: float ``(n, d)`` example embeddings.
      n_rows: sketch rows ``R`` (estimator error ``O(√(log R / R))``).
      n_buckets: buckets per row ``B``.
      n_concat: p-stable hashes concatenated per row ``K`` (sharper kernel ``p(c)^K``).
      width: bucket width ``w`` (bandwidth); default :func:`default_width`.
      mesh: shard both passes over this mesh.

    Returns:
      ``(n,)`` scores ``S(x_i) ≈ Σ_j p(‖x_i − x_j‖)^K`` (in ``[1, n]`` up to noise;
      higher = denser region).
    """
    check_key(key)
    check_array(embeddings, "embeddings", ndim=2, kind="float", finite=True)
    x = jnp.asarray(embeddings)
    if width is None:
        width = default_width(jax.random.fold_in(key, 1), x)
    n_rows = check_int(n_rows, "n_rows", min_value=1)
    n_concat = check_int(n_concat, "n_concat", min_value=1)
    n_buckets = check_int(n_buckets, "n_buckets", min_value=1)
    width = check_float(width, "width", min_value=0.0, strict_min=True)
    return _density_scores(key, x, jnp.asarray(width, x.dtype), n_rows, n_buckets, n_concat, mesh)


@functools.partial(jax.jit, static_argnames=("n_rows", "n_buckets", "n_concat", "mesh"))
def _density_scores(key, x, width, n_rows, n_buckets, n_concat, mesh):
    lsh = make_lsh(key, x.shape[1], n_rows=n_rows, n_concat=n_concat, width=width, n_buckets=n_buckets)
    sketch = build_sketch(lsh, x, mesh=mesh)
    return query_sketch(lsh, sketch, x, mesh=mesh)


def density_sample(key: jax.Array, embeddings: Any, k: int, **kwargs: Any) -> np.ndarray:
    """DENSITY sampler: :func:`density_scores` then IPS, ``P(keep i) ∝ 1/S(x_i)`` (Alg. 2, line 12).

    Args:
      key: PRNG key (split for hashing and sampling).
      embeddings: float ``(n, d)``.
      k: sample size.
      **kwargs: forwarded to :func:`density_scores`.

    Returns:
      int64 ``(k,)`` indices, sorted ascending.
    """
    check_key(key)
    # Fail before hashing the whole set: the budget must fit the number of examples.
    check_array(embeddings, "embeddings", ndim=2, kind="float")
    check_int(k, "k", min_value=1, max_value=embeddings.shape[0])
    kh, ks = jax.random.split(key)
    s = density_scores(kh, embeddings, **kwargs)
    return select.ips_sample(ks, np.maximum(np.asarray(s), 1e-6), k)


def collision_probability(dist: Any, width: float, n_concat: int = 1) -> jax.Array:
    """Exact kernel of the sketch: ``p(c)^K`` for distances ``c`` (``p(0) = 1``).

    A negative distance or a width ``<= 0`` raises when concrete; traced under ``jit``
    they give NaN (a clipped probability would look like a real kernel value).
    """
    check_array(dist, "dist", kind="float", nonempty=False)
    width = check_float(width, "width", min_value=0.0, strict_min=True)
    n_concat = check_int(n_concat, "n_concat", min_value=1)
    if is_concrete(dist) and bool(np.any(np.asarray(dist) < 0)):
        raise ValueError("dist: expected non-negative distances")
    d = jnp.asarray(dist)
    r = width / jnp.maximum(d, 1e-30)
    p = 1.0 - 2.0 * norm.cdf(-r) - 2.0 / (math.sqrt(2 * math.pi) * r) * (1.0 - jnp.exp(-(r**2) / 2.0))
    p = jnp.where(d > 0, p, 1.0)
    p = jnp.clip(p, 0.0, 1.0) ** n_concat
    return jnp.where((d >= 0) & (width > 0), p, jnp.nan)


def exact_kernel_sum(embeddings: Any, width: float, n_concat: int = 1) -> jax.Array:
    """``Σ_j p(‖x_i − x_j‖)^K`` exactly, O(n²) — what :func:`density_scores` estimates."""
    from selection.coresets import pairwise_distances

    check_array(embeddings, "embeddings", ndim=2, kind="float", finite=True)
    return jnp.sum(collision_probability(pairwise_distances(jnp.asarray(embeddings)), width, n_concat), axis=1)
