"""EASE: embarrassingly shallow linear autoencoder (Steck 2019), the closed-form baseline.

    G = XᵀX,   P = (G + λI)⁻¹,   B = I − P · diag(1 / diag P)     (so diag B = 0)
    scores(x) = x · B

B is the ridge regression of every item on all other items with the constraint that
an item may not predict itself. Used as a baseline for ∞-AE (dissertation Table 3.3).

When there are fewer users than items (MovieLens latest-small: 610–671 users, 9k
items) the item-space inverse is the expensive part, and the Woodbury identity moves
the solve to user space::

    A = (XXᵀ + λI)⁻¹ X                 (n × I, one n × n Cholesky)
    P = (I − XᵀA) / λ,   XP = A,   diag P = (1 − Σ_u X_ui A_ui) / λ

so the training users' scores are ``X B = X − A · diag(1/diag P)`` without ever
forming an I × I matrix; :func:`select_lambda` uses this for every λ of its grid.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from distill.checks import check_array, check_float, is_concrete
from models import tuning

__all__ = ["EASE", "fit", "predict", "fit_predict", "select_lambda", "DEFAULT_LAMS"]

DEFAULT_LAMS = (1.0, 10.0, 50.0, 100.0, 200.0, 500.0, 1000.0)


class EASE(NamedTuple):
    """Fitted EASE: the ``(I, I)`` item–item weights with zero diagonal."""

    weights: jax.Array


def _as_float_matrix(x, name):
    check_array(x, name, ndim=2, kind="numeric", finite=True)
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def _chol_solve(a, lam, rhs):
    factor = jax.scipy.linalg.cho_factor(a + lam * jnp.eye(a.shape[0], dtype=a.dtype), lower=True)
    return jax.scipy.linalg.cho_solve(factor, rhs)


def _weights_from_p(p):
    b = -p / jnp.diag(p)[None, :]
    return b.at[jnp.diag_indices(p.shape[0])].set(0.0)


@jax.jit
def _weights_primal(x, lam):
    gram = x.T @ x
    return _weights_from_p(_chol_solve(gram, lam, jnp.eye(gram.shape[0], dtype=x.dtype)))


@jax.jit
def _weights_dual(x, lam):
    a = _chol_solve(x @ x.T, lam, x)
    p = (jnp.eye(x.shape[1], dtype=x.dtype) - x.T @ a) / lam
    return _weights_from_p(p)


@jax.jit
def _train_scores_dual(x, gram_users, lam):
    a = _chol_solve(gram_users, lam, x)
    diag_p = (1.0 - jnp.sum(x * a, axis=0)) / lam
    return x - a / diag_p[None, :]


@jax.jit
def _train_scores_primal(x, gram_items, lam):
    p = _chol_solve(gram_items, lam, jnp.eye(gram_items.shape[0], dtype=x.dtype))
    return x @ _weights_from_p(p)


def _weights(x, lam):
    # Solve in whichever space is smaller: users (Woodbury) or items.
    return (_weights_dual if x.shape[0] < x.shape[1] else _weights_primal)(x, lam)


def fit(x_train: jax.Array, *, lam: float = 200.0) -> EASE:
    """Fit EASE on a ``(n_users, n_items)`` matrix with ridge ``lam`` > 0.

    Returns:
      :class:`EASE` with ``weights = I − P·diag(1/diag P)``, ``P = (XᵀX + λI)⁻¹``.
    """
    x = _as_float_matrix(x_train, "x_train")
    lam = check_float(lam, "lam", min_value=0.0, strict_min=True)
    weights = _weights(x, jnp.asarray(lam, x.dtype))
    _check_solved(weights, lam)
    return EASE(_nan_unless_positive(weights, lam))


def _nan_unless_positive(out: jax.Array, lam: Any) -> jax.Array:
    # A traced λ skips the eager check; λ <= 0 can still factor (X full rank) and would
    # return plausible weights of an unregularised fit: make them NaN instead.
    return out if is_concrete(lam) else jnp.where(lam > 0, out, jnp.nan)


def _check_solved(out: jax.Array, lam: float) -> None:
    """Cholesky of a numerically singular ``XᵀX + λI`` gives NaN: say so instead of returning it."""
    if is_concrete(out) and not bool(jnp.all(jnp.isfinite(out))):
        raise ValueError(
            f"lam: XᵀX + λI is not positive definite in {out.dtype} at lam={lam} "
            "(rank-deficient data with a tiny lam); use a larger lam or float64"
        )


def predict(params: EASE, x_query: jax.Array) -> jax.Array:
    """Scores ``x_query · B`` of shape ``(m, n_items)``."""
    if not isinstance(params, EASE):
        raise TypeError(f"params: expected an EASE from fit(), got {type(params).__name__}")
    x = _as_float_matrix(x_query, "x_query")
    if x.shape[1] != params.weights.shape[0]:
        raise ValueError(
            f"x_query: expected {params.weights.shape[0]} items, got shape {tuple(x.shape)}"
        )
    return x.astype(params.weights.dtype) @ params.weights


@jax.jit
def _scores_dual(x, lam, q):
    a = _chol_solve(x @ x.T, lam, x)
    diag_p = (1.0 - jnp.sum(x * a, axis=0)) / lam
    qp = (q - (q @ x.T) @ a) / lam
    return q - qp / diag_p[None, :]


def fit_predict(x_train: jax.Array, x_query: jax.Array, *, lam: float = 200.0) -> jax.Array:
    """EASE scores ``x_query · B`` without forming the ``(I, I)`` weights when users ≪ items.

    With ``A = (XXᵀ + λI)⁻¹X`` (Woodbury: ``P = (XᵀX + λI)⁻¹ = (I − XᵀA)/λ``),
    ``x_query · P = (q − (q·Xᵀ)·A)/λ`` and ``diag P = (1 − Σ_u X_ui A_ui)/λ``, so
    ``q · B = q − (q·P) / diag P`` (the zero diagonal of ``B`` cancels the ``q_i`` term).
    Memory O(n·I) instead of O(I²); equal to ``predict(fit(x_train, lam=lam), x_query)``.
    Falls back to that when ``n_users ≥ n_items``.

    Args:
      x_train: ``(n, I)`` training matrix.
      x_query: ``(m, I)`` query rows.
      lam: ridge λ > 0.

    Returns:
      ``(m, I)`` scores.
    """
    x = _as_float_matrix(x_train, "x_train")
    q = _as_float_matrix(x_query, "x_query")
    lam = check_float(lam, "lam", min_value=0.0, strict_min=True)
    if q.shape[1] != x.shape[1]:
        raise ValueError(f"x_query: expected {x.shape[1]} items, got shape {tuple(q.shape)}")
    if x.shape[0] >= x.shape[1]:
        return predict(fit(x, lam=lam), q)
    scores = _scores_dual(x, jnp.asarray(lam, x.dtype), q.astype(x.dtype))
    _check_solved(scores, lam)
    return _nan_unless_positive(scores, lam)


def select_lambda(
    x_train: jax.Array,
    val: jax.Array,
    *,
    lams: Sequence[float] = DEFAULT_LAMS,
    metric: str = "HR@100",
    batch_size: int = 4096,
) -> tuning.GridSearch:
    """Choose λ on validation items and fit at the best one.

    The Gram matrix (``XXᵀ`` or ``XᵀX``, whichever is smaller) is computed once; each
    λ costs one Cholesky of it.

    Args:
      x_train: ``(n, I)`` binary training matrix.
      val: ``(n, I)`` binary validation items of the same users.
      lams: grid of λ (each > 0).
      metric: key of :func:`distill.metrics.evaluate` to maximise (e.g. ``'HR@100'``).
      batch_size: users per metric batch.

    Returns:
      :class:`models.tuning.GridSearch` with ``model`` = the :class:`EASE` fitted at
      the best λ.
    """
    x = _as_float_matrix(x_train, "x_train")
    for l in lams:
        check_float(l, "lams", min_value=0.0, strict_min=True)
    dual = x.shape[0] < x.shape[1]
    gram = x @ x.T if dual else x.T @ x
    scores = _train_scores_dual if dual else _train_scores_primal
    search = tuning.select_lambda(
        x,
        val,
        scores_for=lambda lam: scores(x, gram, jnp.asarray(lam, x.dtype)),
        lams=lams,
        metric=metric,
        batch_size=batch_size,
    )
    return search._replace(model=EASE(_weights(x, jnp.asarray(search.best_lam, x.dtype))))
