"""Kernel ridge regression with the relative ridge, the one solve behind ∞-AE and KIP.

Both ∞-AE (dissertation Ch. 3, Eq. 3.2) and KIP (Nguyen et al. 2021) fit

    α = (K_ss + λ · tr(K_ss)/n · I)⁻¹ Y_s,        Ŷ_t = K_ts α,

with the ridge λ measured *relative to the mean diagonal* ``tr(K_ss)/n`` so that one λ
grid fits kernels of any scale (the ∞-AE reference recipe's grid
``{1e-5, 1e-3, 0.1, 1, 5, 50}``). The solve is a Cholesky factorisation (``K_ss`` is
symmetric PSD; the ridge makes it positive definite for λ > 0).

Under ``jit`` a traced λ < 0 cannot be refused eagerly; the results are then NaN, never
the fit of a negative ridge.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from distill.checks import check_array, check_float, is_concrete

__all__ = ["regularize", "solve", "predict"]


def regularize(k: jax.Array, lam: float | jax.Array) -> jax.Array:
    """``K + λ · tr(K)/n · I`` for a square ``(n, n)`` Gram matrix ``k``."""
    n = k.shape[0]
    return k + (lam * jnp.trace(k) / n) * jnp.eye(n, dtype=k.dtype)


def solve(k: jax.Array, y: jax.Array, lam: float | jax.Array) -> jax.Array:
    """``α = (K + λ · tr(K)/n · I)⁻¹ y`` by Cholesky.

    Args:
      k: ``(n, n)`` symmetric PSD Gram matrix of the support set.
      y: ``(n, C)`` support targets.
      lam: λ ≥ 0, relative to the mean diagonal.

    Returns:
      ``(n, C)`` dual coefficients α (NaN for a traced λ < 0).
    """
    if is_concrete(lam):
        check_float(lam, "lam", min_value=0.0)
    factor = jax.scipy.linalg.cho_factor(regularize(k, jnp.asarray(lam, k.dtype)), lower=True)
    alpha = jax.scipy.linalg.cho_solve(factor, y)
    return alpha if is_concrete(lam) else jnp.where(lam >= 0, alpha, jnp.nan)


def predict(k_ts: jax.Array, k_ss: jax.Array, y_s: jax.Array, lam: float | jax.Array) -> jax.Array:
    """Kernel ridge regression ``K_ts (K_ss + λ tr(K_ss)/n I)⁻¹ Y_s``.

    Args:
      k_ts: ``(m, n)`` kernel between targets and support.
      k_ss: ``(n, n)`` support Gram matrix (symmetric PSD).
      y_s: ``(n, C)`` support targets.
      lam: λ ≥ 0, relative to the mean diagonal ``tr(K_ss)/n``.

    Returns:
      ``(m, C)`` predictions.
    """
    n = k_ss.shape[0]
    check_array(k_ss, "k_ss", ndim=2, kind="float", shape=(n, n), finite=True)
    check_array(k_ts, "k_ts", ndim=2, kind="float", shape=(None, n), finite=True)
    check_array(y_s, "y_s", ndim=2, kind="float", shape=(n, None), finite=True)
    return k_ts @ solve(k_ss, y_s, lam)
