"""Leave-one-out data valuation without ``n`` refits.

The leave-one-out (LOO) value of a training point ``z_i`` is the increase of the test
loss when it is removed (lecture 001, "data valuation"; Koh & Liang 2017 §1)::

    v(z_i) = L_test(A(D ∖ z_i)) − L_test(A(D))          (> 0: z_i helps)

Three ways to get all ``n`` values for the price of about one fit:

* :func:`loo_ridge` — ridge regression, exact, by the Sherman–Morrison downdate of
  ``(XᵀX + λI)⁻¹``: ``θ₋ᵢ = θ − A⁻¹xᵢ rᵢ / (1 − hᵢ)`` with ``rᵢ = yᵢ − xᵢᵀθ``,
  ``hᵢ = xᵢᵀA⁻¹xᵢ`` (the leverage).
* :func:`loo_krr` — kernel ridge regression (∞-AE / NNGP / NTK kernels of
  :mod:`models.kernels`), exact, by the rank-one downdate of ``G = (K + λI)⁻¹``:
  removing row/column ``i`` turns the dual coefficients ``α = G Y`` into
  ``α⁽⁻ⁱ⁾ = α − G[:, i] αᵢᵀ / G_ii`` (entry ``i`` becomes 0), so the test predictions
  change by ``−(K_t G)[:, i] αᵢᵀ / G_ii``.
* :func:`loo_newton` — any twice-differentiable, strongly convex objective (e.g.
  L2-regularised logistic regression): a few Newton steps from the full-data optimum,
  ``vmap``-ped over the held-out point (quadratic convergence from a warm start, so the
  refit is cheap and exact to solver precision).

All three shard the ``n`` held-out points over a device mesh with
:func:`distill.parallel.map_rows` (``mesh=``); the result equals the single-device one.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from distill import parallel
from distill.checks import check_array, check_choice, check_float, check_int, check_same_leading, is_concrete

__all__ = ["loo_ridge", "loo_krr", "loo_newton", "heldout_loss", "check_batch"]


def _as_2d(y: jax.Array) -> jax.Array:
    return y[:, None] if y.ndim == 1 else y


def heldout_loss(pred: jax.Array, y_test: jax.Array, metric: str) -> jax.Array:
    """Test loss of predictions ``(m, c)`` against targets ``(m, c)``.

    ``'mse'``: ``mean_t ‖pred_t − y_t‖²``; ``'error'``: classification error
    ``mean_t [argmax pred_t ≠ argmax y_t]`` (one-hot targets), so that for both a larger
    value is worse and the LOO value ``v > 0`` means the point helps.
    """
    check_array(pred, "pred", ndim=2, kind="float")
    check_array(y_test, "y_test", shape=tuple(pred.shape), kind="float")
    check_choice(metric, "metric", ("mse", "error"))
    pred, y_test = jnp.asarray(pred), jnp.asarray(y_test)
    if metric == "mse":
        return jnp.mean(jnp.sum((pred - y_test) ** 2, axis=-1))
    return jnp.mean(jnp.argmax(pred, -1) != jnp.argmax(y_test, -1)).astype(pred.dtype)


def _check_regression(x, y, x_test, y_test, lam, metric):
    check_array(x, "x", ndim=2, kind="float", finite=True)
    check_array(y, "y", ndim=(1, 2), kind="float", finite=True)
    check_same_leading([("x", x), ("y", y)])
    check_array(x_test, "x_test", ndim=2, kind="float", finite=True)
    check_array(y_test, "y_test", ndim=y.ndim, kind="float", finite=True)
    check_same_leading([("x_test", x_test), ("y_test", y_test)])
    if y.ndim == 2 and y_test.shape[1] != y.shape[1]:
        raise ValueError(f"y_test: expected {y.shape[1]} outputs like y, got shape {tuple(y_test.shape)}")
    check_choice(metric, "metric", ("mse", "error"))
    return check_float(lam, "lam", min_value=0.0, strict_min=True)


def loo_ridge(
    x: Any,
    y: Any,
    x_test: Any,
    y_test: Any,
    *,
    lam: float = 1.0,
    metric: str = "mse",
    mesh: Any = None,
) -> jax.Array:
    """Exact leave-one-out values of ridge regression (Sherman–Morrison downdate).

    Ridge fits ``θ = A⁻¹XᵀY`` with ``A = XᵀX + λI`` (no intercept: append a column of
    ones to ``x`` for one, it is then regularised too). Without point ``i``,
    ``θ₋ᵢ = θ − A⁻¹xᵢ rᵢᵀ / (1 − hᵢ)``, ``rᵢ = yᵢ − θᵀxᵢ``, ``hᵢ = xᵢᵀA⁻¹xᵢ``.

    Args:
      x: float ``(n, d)`` training inputs.  y: float ``(n,)`` or ``(n, c)`` targets.
      x_test: float ``(m, d)``.  y_test: float ``(m,)`` or ``(m, c)`` (same rank as ``y``).
      lam: ridge penalty ``λ > 0``.
      metric: test loss, ``'mse'`` or ``'error'`` (one-hot targets), see :func:`heldout_loss`.
      mesh: optional device mesh; the ``n`` held-out points are sharded over it.

    Returns:
      ``(n,)`` values ``v_i = L_test(θ₋ᵢ) − L_test(θ)``.
    """
    lam = _check_regression(x, y, x_test, y_test, lam, metric)
    if x.shape[1] != x_test.shape[1]:
        raise ValueError(f"x_test: expected {x.shape[1]} features like x, got shape {tuple(x_test.shape)}")
    out = _loo_ridge(jnp.asarray(x), _as_2d(jnp.asarray(y)), jnp.asarray(x_test), _as_2d(jnp.asarray(y_test)), lam, metric, mesh)
    out = _nan_unless_positive(out, lam)
    if is_concrete(out) and not bool(jnp.all(jnp.isfinite(out))):
        # 1 − hᵢ rounded to 0: a point with leverage ≈ 1 (alone in its direction, λ tiny).
        bad = int(np.argmax(~np.isfinite(np.asarray(out))))
        raise ValueError(
            f"lam: point {bad} has leverage 1 − h = 0 in {out.dtype} at lam={lam}; "
            "its leave-one-out fit is undefined at this precision: use a larger lam or float64"
        )
    return out


@functools.partial(jax.jit, static_argnames=("metric", "mesh"))
def _loo_ridge(x, y, xt, yt, lam, metric, mesh):
    a = x.T @ x + lam * jnp.eye(x.shape[1], dtype=x.dtype)
    chol = jax.scipy.linalg.cho_factor(a)
    theta = jax.scipy.linalg.cho_solve(chol, x.T @ y)  # (d, c)
    ainv_x = jax.scipy.linalg.cho_solve(chol, x.T).T  # (n, d): rows A⁻¹xᵢ
    pred = xt @ theta
    base = heldout_loss(pred, yt, metric)

    def rows(r, theta, xt, yt, pred, base):  # r = (xᵢ, yᵢ, A⁻¹xᵢ) row-aligned
        xi, yi, ai = r
        h = jnp.sum(xi * ai, axis=1)  # (b,)
        res = yi - xi @ theta  # (b, c)
        dpred = -(xt @ ai.T).T[:, :, None] * res[:, None, :] / (1.0 - h)[:, None, None]  # (b, m, c)
        return jax.vmap(lambda dp: heldout_loss(pred + dp, yt, metric))(dpred) - base

    return parallel.map_rows(rows, (x, y, ainv_x), theta, xt, yt, pred, base, mesh=mesh)


def loo_krr(
    k_train: Any,
    y: Any,
    k_test: Any,
    y_test: Any,
    *,
    lam: float = 1.0,
    metric: str = "mse",
    mesh: Any = None,
) -> jax.Array:
    """Exact leave-one-out values of kernel ridge regression (rank-one downdate, no refits).

    KRR predicts ``f(x_t) = K_t α`` with ``α = G Y``, ``G = (K + λI)⁻¹``. Deleting point
    ``i`` (row and column of ``K``) gives ``α⁽⁻ⁱ⁾ = α − G[:, i] αᵢᵀ / G_ii`` — the
    block-inverse identity ``(K₋ᵢ + λI)⁻¹ = G₋ᵢ₋ᵢ − G₋ᵢ,ᵢ Gᵢ,₋ᵢ / G_ii`` applied to
    ``Y₋ᵢ`` — so every LOO prediction costs one column of ``K_t G``. This is the ∞-AE /
    NNGP / NTK regressor of :mod:`models.infinite_ae` with any kernel of
    :mod:`models.kernels` (dissertation ch. 3, ∞-AE closed form).

    Args:
      k_train: float ``(n, n)`` symmetric PSD training Gram matrix.
      y: float ``(n,)`` or ``(n, c)`` targets.
      k_test: float ``(m, n)`` test–train kernel.
      y_test: float ``(m,)`` or ``(m, c)`` test targets.
      lam: ridge ``λ > 0``.
      metric: ``'mse'`` or ``'error'`` (see :func:`heldout_loss`).
      mesh: optional device mesh over the ``n`` held-out points.

    Returns:
      ``(n,)`` values ``v_i = L_test(f₋ᵢ) − L_test(f)``.
    """
    check_array(k_train, "k_train", ndim=2, kind="float", finite=True)
    n = k_train.shape[0]
    if k_train.shape[1] != n:
        raise ValueError(f"k_train: expected a square (n, n) matrix, got shape {tuple(k_train.shape)}")
    check_array(k_test, "k_test", shape=(None, n), kind="float", finite=True)
    lam = _check_regression(k_train, y, k_test, y_test, lam, metric)
    out = _loo_krr(
        jnp.asarray(k_train), _as_2d(jnp.asarray(y)), jnp.asarray(k_test), _as_2d(jnp.asarray(y_test)), lam, metric, mesh
    )
    return _nan_unless_positive(out, lam)


def _nan_unless_positive(out: jax.Array, lam: Any) -> jax.Array:
    # A traced λ skips the eager check; λ <= 0 would give finite but meaningless values.
    return out if is_concrete(lam) else jnp.where(lam > 0, out, jnp.nan)


@functools.partial(jax.jit, static_argnames=("metric", "mesh"))
def _loo_krr(k, y, kt, yt, lam, metric, mesh):
    n = k.shape[0]
    g = jnp.linalg.inv(k + lam * jnp.eye(n, dtype=k.dtype))
    g = 0.5 * (g + g.T)
    alpha = g @ y  # (n, c)
    pred = kt @ alpha
    base = heldout_loss(pred, yt, metric)
    ktg_t = (kt @ g).T  # (n, m): row i is column i of K_t G

    def rows(r, yt, pred, base):
        col, ai, gii = r
        dpred = -col[:, :, None] * ai[:, None, :] / gii[:, None, None]  # (b, m, c)
        return jax.vmap(lambda dp: heldout_loss(pred + dp, yt, metric))(dpred) - base

    return parallel.map_rows(rows, (ktg_t, alpha, jnp.diag(g)), yt, pred, base, mesh=mesh)


def loo_newton(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    train: Any,
    test: Any,
    *,
    l2: float = 0.0,
    steps: int = 3,
    test_loss_fn: Callable[[Any, Any], jax.Array] | None = None,
    mesh: Any = None,
) -> jax.Array:
    """Leave-one-out values by warm-started Newton refits, ``vmap``-ped over held-out points.

    The training objective is ``R(θ) = (1/n) Σ_j ℓ(θ; z_j) + (l2/2)‖θ‖²`` and ``params``
    must be (close to) its minimiser. Removing ``z_i`` gives
    ``R₋ᵢ(θ) = (1/(n−1)) Σ_{j≠i} ℓ(θ; z_j) + (l2/2)‖θ‖²``, minimised by ``steps`` exact
    Newton iterations ``θ ← θ − ∇²R₋ᵢ⁻¹ ∇R₋ᵢ`` from ``params``. Meant for small convex
    models (the ``p × p`` Hessian is formed: logistic / softmax regression).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` *mean* loss over a batch (a pytree
        of arrays with leading dimension = batch size).
      params: the full-data minimiser (pytree).
      train: training batch pytree, leading dimension ``n``.
      test: test batch pytree.
      l2: L2 penalty of the objective (>= 0; > 0 keeps every Hessian invertible).
      steps: Newton steps per held-out point (>= 1).
      test_loss_fn: the test loss ``(params, batch) -> scalar`` (default ``loss_fn``).
      mesh: optional device mesh over the held-out points.

    Returns:
      ``(n,)`` values ``v_i = L_test(θ₋ᵢ) − L_test(θ)``.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a callable, got {type(loss_fn).__name__}")
    n = check_batch(train, "train")
    check_batch(test, "test")
    l2 = check_float(l2, "l2", min_value=0.0)
    steps = check_int(steps, "steps", min_value=1)
    if n < 2:
        raise ValueError(f"train: expected at least 2 examples to leave one out, got {n}")
    tl = loss_fn if test_loss_fn is None else test_loss_fn
    flat, unravel = ravel_pytree(params)
    return _loo_newton(loss_fn, tl, unravel, flat, train, test, l2, steps, mesh)


def check_batch(batch: Any, name: str) -> int:
    """Validate a data batch (an array or a pytree of arrays sharing the leading axis).

    Every leaf must be a finite numeric array with a leading batch dimension, and all
    leaves must agree on it (e.g. ``(x (n, d), y (n,))``). Shared by the LOO and
    influence-function valuations (:mod:`selection.influence`).

    Args:
      batch: the pytree to check.
      name: argument name used in the error messages.

    Returns:
      The batch size ``n``.

    Raises:
      ValueError: empty pytree, scalar leaves, non-finite values or unequal sizes.
      TypeError: non-numeric leaves.
    """
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves:
        raise ValueError(f"{name}: expected an array or a tuple of arrays, got an empty pytree")
    for leaf in leaves:
        check_array(leaf, name, kind="numeric", finite=True)
        if leaf.ndim == 0:
            raise ValueError(f"{name}: expected arrays with a leading batch dimension, got a scalar")
    check_same_leading([(f"{name}[{i}]", a) for i, a in enumerate(leaves)])
    return leaves[0].shape[0]


@functools.partial(jax.jit, static_argnames=("loss_fn", "test_loss_fn", "unravel", "steps", "mesh"))
def _loo_newton(loss_fn, test_loss_fn, unravel, flat, train, test, l2, steps, mesh):
    n = jax.tree_util.tree_leaves(train)[0].shape[0]

    def objective(f, w, train):  # weighted mean of per-example losses + L2
        per = jax.vmap(lambda ex: loss_fn(unravel(f), jax.tree_util.tree_map(lambda a: a[None], ex)))(train)
        return jnp.sum(w * per) / jnp.sum(w) + 0.5 * l2 * jnp.sum(f**2)

    def rows(idx, flat, train, test):
        base = test_loss_fn(unravel(flat), test)

        def one(i):
            w = jnp.ones((n,), flat.dtype).at[i].set(0.0)

            def newton(_, f):
                g = jax.grad(objective)(f, w, train)
                h = jax.hessian(objective)(f, w, train)
                return f - jnp.linalg.solve(h, g)

            f = jax.lax.fori_loop(0, steps, newton, flat)
            return test_loss_fn(unravel(f), test) - base

        return jax.lax.map(one, idx)

    return parallel.map_rows(rows, jnp.arange(n), flat, train, test, mesh=mesh)
