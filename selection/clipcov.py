"""ClipCov — image–caption subsets that preserve the cross-covariance (Joshi et al., AISTATS 2024).

Tutorial 003 ("ClipCov: Preserving cross-covariance"): CLIP's training dynamics are
governed by the image–caption cross-covariance
``C = (1/|V|) Σ_i (x_V^i − μ_V)(x_L^i − μ_L)ᵀ``; a subset that (1) captures the
cross-covariance inside every latent class (*diversity*) and (2) keeps the latent class
centres of both modalities (*centrality*) generalises like the full data. Per latent
class ``V_k`` the subset maximises

    F_k(S) = Σ_{i∈V_k, j∈S} csim(i, j) + Σ_{i∈S} csim(i, i) − λ Σ_{{i,j}⊆S, i≠j} s_ij

with ``csim(i, j) = cos(u_i, v_j)`` between image ``i`` and caption ``j`` (the first term
picks pairs whose image is similar to many captions of the class and whose caption is
similar to many images, the second aligned pairs). The tutorial's objective is the
``λ = 0`` case; because ``csim`` can be negative it is *non-monotone* (a modular
function with signed weights). ``λ > 0`` adds a redundancy penalty with
``s_ij = max(0, (csim(i,j) + csim(j,i))/2)`` (an option here, not in the tutorial),
which keeps ``F_k`` submodular (pairwise penalties are non-negative) but makes it
non-modular. Both are maximised by

* ``'random_greedy'`` — Buchbinder, Feldman, Naor & Schwartz (2014): under ``|S| ≤ k``,
  each step picks uniformly among the ``k`` largest marginal gains (dummy elements of
  gain 0 fill up), ``E[F] ≥ OPT/e`` for non-monotone submodular ``F``;
* ``'double_greedy'`` — Buchbinder, Feldman, Naor & Schwartz (2012), randomised,
  *unconstrained*: ``E[F] ≥ OPT/2``; the size is decided by ``F`` (``k`` must be None);
* ``'greedy'`` — deterministic greedy, stopping early when no gain is positive.

Latent classes come from labels (e.g. a zero-shot classifier on label text, as in the
paper) or k-means on the concatenated normalised embeddings.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from distill.checks import check_array, check_choice, check_float, check_index_range, check_int, check_key, check_same_leading
from selection.coresets import proportional_budget
from selection.sas import latent_classes

__all__ = ["cross_similarity", "clipcov_objective", "maximize", "ClipCov", "clipcov"]


def cross_similarity(u: Any, v: Any) -> jax.Array:
    """``csim(i, j) = u_iᵀ v_j / (‖u_i‖ ‖v_j‖)`` between image ``i`` and caption ``j``: ``(n, n)``."""
    check_array(u, "u", ndim=2, kind="float", finite=True)
    check_array(v, "v", shape=(u.shape[0], u.shape[1]), kind="float", finite=True)
    un = u / jnp.maximum(jnp.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    vn = v / jnp.maximum(jnp.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return jnp.asarray(un) @ jnp.asarray(vn).T


def _terms(csim: np.ndarray, diversity: float) -> tuple[np.ndarray, np.ndarray]:
    """(modular weights a_j, pairwise penalties λ s_ij with zero diagonal) of F on one class."""
    a = csim.sum(0) + np.diag(csim)
    s = np.maximum(0.0, 0.5 * (csim + csim.T))
    np.fill_diagonal(s, 0.0)
    return a, diversity * s


def clipcov_objective(csim: Any, subset: Any, *, diversity: float = 0.0) -> float:
    """``F(S) = Σ_{i, j∈S} csim_ij + Σ_{i∈S} csim_ii − λ Σ_{{i,j}⊆S} s_ij`` on one latent class."""
    check_array(csim, "csim", ndim=2, kind="float", finite=True)
    a, pen = _terms(np.asarray(csim, np.float64), check_float(diversity, "diversity", min_value=0.0))
    # A set of indices: any int sequence (an empty one included) is accepted.
    idx = np.asarray(subset)
    idx = check_array(idx if idx.size else idx.astype(np.int64), "subset", ndim=1, kind="int", nonempty=False)
    check_index_range(idx, "subset", a.shape[0], "index")
    return float(a[idx].sum() - 0.5 * pen[np.ix_(idx, idx)].sum())


def maximize(
    csim: Any,
    k: int | None,
    *,
    diversity: float = 0.0,
    method: str = "random_greedy",
    key: jax.Array | None = None,
) -> np.ndarray:
    """Maximise :func:`clipcov_objective` on one latent class.

    Args:
      csim: float ``(n, n)`` cross-modal similarities of the class.
      k: cardinality bound (``1 <= k <= n``); ``None`` only for ``'double_greedy'``.
      diversity: ``λ >= 0``.
      method: ``'random_greedy'``, ``'double_greedy'`` or ``'greedy'``.
      key: PRNG key (required by the randomised methods).

    Returns:
      int64 selected indices (in pick order; may be fewer than ``k`` when extra picks
      would lower ``F``).
    """
    check_key(key, allow_none=True)
    check_array(csim, "csim", ndim=2, kind="float", finite=True)
    n = csim.shape[0]
    if csim.shape[1] != n:
        raise ValueError(f"csim: expected a square (n, n) matrix, got shape {tuple(csim.shape)}")
    diversity = check_float(diversity, "diversity", min_value=0.0)
    check_choice(method, "method", ("random_greedy", "double_greedy", "greedy"))
    if method == "double_greedy":
        if k is not None:
            raise ValueError(f"k: double_greedy is unconstrained, expected None, got {k}")
    else:
        k = check_int(k, "k", min_value=1, max_value=n)
    if method != "greedy" and key is None:
        raise ValueError(f"key: method={method!r} needs a PRNG key, got None")
    a, pen = _terms(np.asarray(csim, np.float64), diversity)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist()) if key is not None else None
    if method == "double_greedy":
        return _double_greedy(a, pen, rng)
    return _greedy(a, pen, k, rng if method == "random_greedy" else None)


def _greedy(a, pen, k, rng):
    n = a.shape[0]
    gain = a.copy()  # marginal gain of j given S: a_j − Σ_{i∈S} pen_ij
    chosen = np.zeros(n, bool)
    picks = []
    for _ in range(k):
        g = np.where(chosen, -np.inf, gain)
        if rng is None:
            j = int(np.argmax(g))
            if g[j] <= 0:
                break
        else:
            top = np.argsort(-g, kind="stable")[:k]
            slot = int(rng.integers(k))  # uniform over the k best; dummies (gain 0) fill the rest
            if slot >= len(top) or g[top[slot]] <= 0:
                continue
            j = int(top[slot])
        chosen[j] = True
        picks.append(j)
        gain -= pen[:, j]
    return np.asarray(picks, np.int64)


def _double_greedy(a, pen, rng):
    n = a.shape[0]
    in_x = np.zeros(n, bool)
    in_y = np.ones(n, bool)
    for i in range(n):
        # F(X+i) − F(X) and F(Y−i) − F(Y) of the quadratic F
        add = a[i] - pen[i, in_x].sum()
        rem = -(a[i] - pen[i, in_y & (np.arange(n) != i)].sum())
        ap, rp = max(add, 0.0), max(rem, 0.0)
        p = 1.0 if ap + rp == 0 else ap / (ap + rp)
        if rng.random() < p:
            in_x[i] = True
        else:
            in_y[i] = False
    return np.flatnonzero(in_x).astype(np.int64)


class ClipCov(NamedTuple):
    """Result of :func:`clipcov`: ``indices`` (grouped by latent class) and ``latent (n,)``."""

    indices: np.ndarray
    latent: np.ndarray


def clipcov(
    u: Any,
    v: Any,
    k: int | None,
    *,
    latent: Any = None,
    n_classes: int | None = None,
    diversity: float = 0.0,
    method: str = "random_greedy",
    key: jax.Array | None = None,
) -> ClipCov:
    """ClipCov subset of image–caption pairs: per-latent-class maximisation of ``F_k``.

    Args:
      u: float ``(n, d)`` image embeddings.  v: float ``(n, d)`` caption embeddings.
      k: total budget (split ``∝`` class sizes); ``None`` with ``'double_greedy'``.
      latent: int ``(n,)`` latent classes, or ``n_classes`` for k-means on
        ``[u/‖u‖, v/‖v‖]`` (needs ``key``).
      diversity, method, key: see :func:`maximize`.

    Returns:
      :class:`ClipCov`.
    """
    check_key(key, allow_none=True)
    check_array(u, "u", ndim=2, kind="float", finite=True)
    check_array(v, "v", ndim=2, kind="float", finite=True)
    check_same_leading([("u", u), ("v", v)])
    n = u.shape[0]
    if k is not None:
        k = check_int(k, "k", min_value=1, max_value=n)
    csim = np.asarray(cross_similarity(u, v), np.float64)
    emb = None
    if latent is None and n_classes is not None:
        un = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
        vn = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        emb = np.concatenate([un, vn], axis=1)
    lab = latent_classes(key, latent, emb, n_classes, n)
    classes, sizes = np.unique(lab, return_counts=True)
    budget = proportional_budget(sizes, k) if k is not None else [None] * len(classes)
    keys = jax.random.split(key, len(classes)) if key is not None else [None] * len(classes)
    out = []
    for c, b, kc in zip(classes, budget, keys, strict=False):
        if b is not None and b == 0:
            continue
        members = np.flatnonzero(lab == c)
        picks = maximize(csim[np.ix_(members, members)], None if b is None else int(b), diversity=diversity, method=method, key=kc)
        out.append(members[picks])
    return ClipCov(np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64), lab)
