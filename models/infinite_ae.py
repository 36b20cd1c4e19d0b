"""∞-AE: the infinite-width autoencoder for collaborative filtering (dissertation Ch. 3).

A user is its bag-of-items row ``X_u ∈ {0,1}^I``. An autoencoder with infinitely wide
hidden layers trained to reconstruct its input by gradient descent converges to
kernel ridge regression with its NTK (Eq. 3.1; Algorithms 3–4)::

    K   = NTK(X, X)                                      (n × n, users × users)
    α   = (K + λ · tr(K)/n · I)⁻¹ X                      (n × I, dual coefficients)
    f(x) = NTK(x, X) · α                                 (scores for a query user)

λ is scaled by the mean diagonal ``tr(K)/n`` (as in the reference implementation) so
one grid fits every dataset. The solve uses a Cholesky factorisation; ``fit`` and
``predict`` are jittable and differentiable in ``x_train`` (Distill-CF meta-learns
the support set through them).

λ selection (:func:`select_lambda`) builds the kernel once and re-factorises only
``K + λ'I`` per grid value. For the training users themselves the scores need no
second product with K: ``K (K + λ'I)⁻¹ X = X − λ' α``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from distill.checks import check_array, check_float, check_int, is_concrete
from models.kernels import KernelSpec
from models import kernels, krr, tuning

__all__ = [
    "KernelSpec",
    "InfiniteAE",
    "fit",
    "predict",
    "select_lambda",
    "SpectralPath",
    "spectral_path",
    "spectral_scores",
    "DEFAULT_LAMS",
    "SPECTRAL_MIN_LAMS",
]

# The grid of the reference implementation (noveens/infinite_ae_cf), chosen by HR@100.
DEFAULT_LAMS = (1e-5, 1e-3, 0.1, 1.0, 5.0, 50.0)

#: Grid size from which :func:`select_lambda`'s ``'auto'`` path eigen-decomposes K once
#: instead of a Cholesky per λ. Measured on a 6,040-user kernel (2-core CPU,
#: ``benchmarks/infinite_ae_perf``): ``eigh`` costs ≈ 6.3 ``K·X`` products, a Cholesky
#: + two triangular solves ≈ 1.4, a spectral λ 1 — so the eigendecomposition (plus
#: ``QᵀX`` and the final α) pays off only beyond ≈ 20 λ.
SPECTRAL_MIN_LAMS = 20




class InfiniteAE(NamedTuple):
    """Fitted ∞-AE.

    Attributes:
      support: ``(n, I)`` support users (the training matrix).
      alpha: ``(n, I)`` dual coefficients ``(K + λ·tr(K)/n·I)⁻¹ X``.
      spec: the kernel settings (static).
    """

    support: jax.Array
    alpha: jax.Array
    spec: KernelSpec


@functools.partial(jax.jit, static_argnums=(1, 2))
def _gram(x, spec, mesh):
    """``NTK(X, X)``, rows sharded over ``mesh`` when given (jitted: op by op, the
    arc-cosine recursion would cost another pass over the ``(n, n)`` matrix per op)."""
    if mesh is None:
        return kernels.fc_relu(x, depth=spec.depth, w_std=spec.w_std, b_std=spec.b_std).ntk
    return kernels.fc_relu_blocked(
        x, depth=spec.depth, w_std=spec.w_std, b_std=spec.b_std, mesh=mesh
    ).ntk


def _check_matrix(x, name):
    check_array(x, name, ndim=2, kind="numeric", finite=True)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = jnp.asarray(x, jnp.result_type(float))
    return x


def fit(
    x_train: jax.Array,
    *,
    lam: float,
    spec: KernelSpec = KernelSpec(),
    mesh: Mesh | None = None,
) -> InfiniteAE:
    """Fit ∞-AE on a user × item matrix (Algorithm 3).

    Args:
      x_train: ``(n, I)`` interactions (binary, or soft as in Distill-CF summaries).
      lam: ridge λ ≥ 0, relative to the mean kernel diagonal ``tr(K)/n``.
      spec: the kernel (:class:`models.kernels.KernelSpec`).
      mesh: shard the kernel rows over this device mesh (the solve runs replicated).

    Returns:
      :class:`InfiniteAE` with ``alpha = (K + λ·tr(K)/n·I)⁻¹ X`` (Cholesky solve).
      Jittable; differentiable in ``x_train`` and ``lam``.
    """
    x_train = _check_matrix(x_train, "x_train")
    lam = check_float(lam, "lam", min_value=0.0)
    spec = kernels.check_spec(spec)
    params = _fit(x_train, lam, spec, mesh)  # a traced λ < 0 gives NaN (models.krr.solve)
    if is_concrete(params.alpha) and not bool(jnp.all(jnp.isfinite(params.alpha))):
        raise ValueError(
            f"lam: K + λ·tr(K)/n·I is not positive definite in {params.alpha.dtype} at "
            f"lam={lam} (e.g. duplicate users with lam=0); use a larger lam or float64"
        )
    return params


@functools.partial(jax.jit, static_argnums=(2, 3))
def _fit(x_train, lam, spec, mesh):
    k = _gram(x_train, spec, mesh)
    return InfiniteAE(x_train, krr.solve(k, x_train, lam), spec)


def predict(
    params: InfiniteAE,
    x_query: jax.Array,
    *,
    block_size: int | None = 512,
    mesh: Mesh | None = None,
) -> jax.Array:
    """Scores of query users (Algorithm 4, before the softmax): ``NTK(x_query, X) · α``.

    Args:
      params: a fitted :class:`InfiniteAE`.
      x_query: ``(m, I)`` query users' interaction rows (the model's input).
      block_size: query users per block: the ``(m, n)`` cross kernel is built and
        contracted with α one ``(block_size, n)`` slice at a time
        (:func:`models.kernels.fc_relu_apply`); ``None`` builds it whole.
      mesh: shard query users over this device mesh.

    Returns:
      ``(m, I)`` scores; rank items by them (softmax does not change the order).
    """
    if not isinstance(params, InfiniteAE):
        raise TypeError(f"params: expected an InfiniteAE from fit(), got {type(params).__name__}")
    x_query = _check_matrix(x_query, "x_query")
    if x_query.shape[1] != params.support.shape[1]:
        raise ValueError(
            f"x_query: expected {params.support.shape[1]} items, got shape {tuple(x_query.shape)}"
        )
    if block_size is not None:
        check_int(block_size, "block_size", min_value=1)
    spec = params.spec
    return kernels.fc_relu_apply(
        x_query.astype(params.support.dtype),
        params.support,
        params.alpha,
        depth=spec.depth,
        w_std=spec.w_std,
        b_std=spec.b_std,
        block_size=block_size,
        mesh=mesh,
    )


@jax.jit
def _train_fit(k, x, lam):
    """Training users' scores and α for one λ by Cholesky: ``(X − λ'α, α)`` (no K·α product)."""
    alpha = krr.solve(k, x, lam)
    return x - lam * jnp.trace(k) / k.shape[0] * alpha, alpha


class _Eigen(NamedTuple):
    """``K = Q diag(e) Qᵀ`` with ``QᵀX``: every λ then costs one ``Q (·)`` product."""

    evals: jax.Array  # (n,) clipped at 0
    evecs: jax.Array  # (n, n) Q
    qtx: jax.Array  # (n, I) QᵀX
    mean_diag: jax.Array  # tr(K)/n


@jax.jit
def _eigen(k, x):
    evals, evecs = jnp.linalg.eigh(k)
    return _Eigen(jnp.maximum(evals, 0.0), evecs, evecs.T @ x, jnp.trace(k) / k.shape[0])


@jax.jit
def _train_scores_eig(eig, x, lam):
    # X − λ'α = X − Q diag(λ'/(e + λ')) QᵀX: the spectral form of the training scores.
    reg = lam * eig.mean_diag
    return x - eig.evecs @ ((reg / (eig.evals + reg))[:, None] * eig.qtx)


@jax.jit
def _alpha_eig(eig, lam):
    return eig.evecs @ (eig.qtx / (eig.evals + lam * eig.mean_diag)[:, None])


class SpectralPath(NamedTuple):
    """λ-independent factors of ∞-AE's scores for one support set and one query set.

    With ``K(S, S) = Q diag(e) Qᵀ``, the scores at any λ are
    ``K(q, S)(K(S, S) + λ'I)⁻¹ X_S = (K(q, S) Q) diag(1/(e + λ')) (Qᵀ X_S)`` with
    ``λ' = λ · tr(K)/μ``, one ``(m, μ)·(μ, I)`` product per λ.
    """

    evals: jax.Array  # (μ,) eigenvalues of K(S, S), clipped at 0
    query_evecs: jax.Array  # (m, μ) K(q, S) Q
    evecs_support: jax.Array  # (μ, I) Qᵀ X_S
    mean_diag: jax.Array  # tr(K(S, S)) / μ


def spectral_path(
    support: jax.Array,
    queries: jax.Array,
    *,
    spec: KernelSpec = KernelSpec(),
) -> SpectralPath:
    """Eigen-decompose ``K(S, S)`` once so :func:`spectral_scores` is cheap for every λ.

    Unlike a Cholesky solve this never fails at tiny λ in float32 (the spectrum is
    clipped at 0). Used for λ selection when the queries are not the support users
    (Distill-CF summaries, user samples).

    Args:
      support: ``(μ, I)`` support users.  queries: ``(m, I)`` query users.
      spec: the kernel (:class:`models.kernels.KernelSpec`).
    """
    support = _check_matrix(support, "support")
    queries = _check_matrix(queries, "queries")
    if queries.shape[1] != support.shape[1]:
        raise ValueError(f"queries: expected {support.shape[1]} items, got shape {tuple(queries.shape)}")
    return _spectral_path(support, queries.astype(support.dtype), kernels.check_spec(spec))


@functools.partial(jax.jit, static_argnums=(2,))
def _spectral_path(support, queries, spec):
    k_ss = kernels.fc_relu(support, depth=spec.depth, w_std=spec.w_std, b_std=spec.b_std).ntk
    k_qs = kernels.fc_relu(queries, support, depth=spec.depth, w_std=spec.w_std, b_std=spec.b_std).ntk
    eig = _eigen(k_ss, support)
    return SpectralPath(eig.evals, k_qs @ eig.evecs, eig.qtx, eig.mean_diag)


def spectral_scores(path: SpectralPath, lam: float) -> jax.Array:
    """``(m, I)`` ∞-AE scores of the path's queries at ridge ``lam`` (> 0).

    A traced ``lam <= 0`` (no eager check under ``jit``) gives NaN scores.
    """
    lam = check_float(lam, "lam", min_value=0.0, strict_min=True)
    out = _spectral_scores(path, jnp.asarray(lam, path.evals.dtype))
    return out if is_concrete(lam) else jnp.where(lam > 0, out, jnp.nan)


@jax.jit
def _spectral_scores(path, lam):
    reg = lam * path.mean_diag
    return (path.query_evecs / (path.evals + reg)[None, :]) @ path.evecs_support


def select_lambda(
    x_train: jax.Array,
    val: jax.Array,
    *,
    lams: Sequence[float] = DEFAULT_LAMS,
    metric: str = "HR@100",
    spec: KernelSpec = KernelSpec(),
    mesh: Mesh | None = None,
    batch_size: int = 4096,
    path: str = "auto",
) -> tuning.GridSearch:
    """Choose λ by a validation metric and fit at the best λ, building the kernel once.

    For each λ the training users' own rows are the queries (as in the reference
    recipe): their scores are ``K(K + λ'I)⁻¹X = X − λ'α``, so no ``K·α`` product is
    needed. Two exact ways to get them for a grid of λ:

    * ``'cholesky'``: one Cholesky of ``K + λ'I`` and two triangular solves per λ;
      α of the best λ is kept from the sweep (no refit).
    * ``'spectral'``: one ``K = Q diag(e) Qᵀ`` and ``QᵀX``, then one ``Q (·)`` product
      per λ (and one more for α at the best λ).

    ``'auto'`` takes the spectral path from :data:`SPECTRAL_MIN_LAMS` grid values on
    (the measured break-even, see its note). Either path falls back to the spectral
    form for a λ whose float32 Cholesky fails (tiny λ). Train items are excluded from
    the ranking and ``val`` holds the held-out items.

    Args:
      x_train: ``(n, I)`` binary training matrix.
      val: ``(n, I)`` binary validation items of the same users.
      lams: grid of λ (relative to ``tr(K)/n``); all > 0 (λ = 0 would make the
        training users' held-out scores identically 0).
      metric: key of :func:`distill.metrics.evaluate` to maximise (e.g. ``'HR@100'``).
      spec, mesh: the kernel and its sharding, see :func:`fit`.
      batch_size: users per metric batch.
      path: ``'auto'``, ``'cholesky'`` or ``'spectral'`` (same results to float
        rounding).

    Returns:
      :class:`models.tuning.GridSearch` (metric per λ) with ``model`` = the
      :class:`InfiniteAE` fitted on ``x_train`` at the best λ (reusing the kernel).
    """
    x_train = _check_matrix(x_train, "x_train")
    # λ = 0 interpolates the training rows: their scores are X itself and every
    # held-out item scores 0, so a validation ranking could only measure tie-breaking.
    lams = tuple(check_float(l, "lams", min_value=0.0, strict_min=True) for l in lams)
    spec = kernels.check_spec(spec)
    if path not in ("auto", "cholesky", "spectral"):
        raise ValueError(f"path: expected 'auto', 'cholesky' or 'spectral', got {path!r}")
    spectral = path == "spectral" or (path == "auto" and len(lams) >= SPECTRAL_MIN_LAMS)
    k = _gram(x_train, spec, mesh)
    eig = []  # computed at most once, on first need

    def eigen():
        if not eig:
            eig.append(_eigen(k, x_train))
        return eig[0]

    def scores_for(lam):
        lam = jnp.asarray(lam, k.dtype)
        if not spectral:
            scores, alpha = _train_fit(k, x_train, lam)
            if bool(jnp.all(jnp.isfinite(alpha))):
                return scores, alpha
        return _train_scores_eig(eigen(), x_train, lam), None

    search = tuning.select_lambda(
        x_train, val, scores_for=scores_for, lams=lams, metric=metric, batch_size=batch_size
    )
    alpha = search.model  # the best λ's α from the Cholesky sweep, else None
    if alpha is None:
        alpha = _alpha_eig(eigen(), jnp.asarray(search.best_lam, k.dtype))
    return search._replace(model=InfiniteAE(x_train, alpha, spec))
