"""Influence functions for any differentiable model (Koh & Liang, 2017).

For the training objective ``R(θ) = (1/n) Σ_j ℓ(θ; z_j) + (l2/2)‖θ‖²`` minimised at
``θ̂`` with Hessian ``H = ∇²R(θ̂)`` (plus ``damping · I``), up-weighting ``z`` by ``ε``
moves the parameters and the test loss by (lecture 001, "influence functions")::

    I_param(z)          = dθ̂_ε/dε       = −H⁻¹ ∇ℓ(θ̂; z)
    I_loss(z, z_test)   = dL(z_test)/dε = −∇L(θ̂; z_test)ᵀ H⁻¹ ∇ℓ(θ̂; z)

Removing ``z`` is ``ε = −1/n``, so the leave-one-out value of
:mod:`selection.valuation` is approximated by ``v(z) ≈ −I_loss(z, test) / n``
(:func:`influence_loo`).

The inverse-Hessian–vector products never form ``H``: both solvers only call the
Hessian–vector product ``v ↦ ∇²R(θ̂) v`` (forward-over-reverse, ``jax.jvp`` of
``jax.grad``):

* :func:`ihvp_cg` — conjugate gradient on ``(H + δI) x = v`` (exact for PD ``H`` in
  ≤ p iterations);
* :func:`ihvp_lissa` — LiSSA (Agarwal et al., 2017): the Neumann recursion
  ``h_j = v + (I − (H + δI)/s) h_{j−1}``, ``H⁻¹v ≈ h_J / s``, with mini-batch Hessians
  when ``batch_size`` is given (``s`` must exceed the largest eigenvalue).

:func:`influence_loss` solves once for ``s_test = H⁻¹ ∇L_test`` and then takes one
``vmap``-ped per-example gradient dot product per training point (sharded over a mesh
with :func:`distill.parallel.map_rows`); :func:`influence_params` ``vmap``-s the solver
itself over the training points.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from distill import parallel
from distill.checks import check_choice, check_float, check_int, check_key, is_concrete
from selection.valuation import check_batch

__all__ = ["Objective", "objective", "ihvp_cg", "ihvp_lissa", "influence_params", "influence_loss", "influence_loo"]


class Objective(NamedTuple):
    """The flattened training objective the solvers work on.

    Attributes:
      flat: ``(p,)`` the parameters ``θ̂`` as one vector.
      unravel: ``(p,) -> params`` pytree.
      loss: ``loss(flat, batch) -> scalar`` mean loss (no penalty).
      l2: the L2 penalty of ``R``.
    """

    flat: jax.Array
    unravel: Callable
    loss: Callable
    l2: float


def objective(loss_fn: Callable[[Any, Any], jax.Array], params: Any, *, l2: float = 0.0) -> Objective:
    """Flatten ``params`` and wrap ``loss_fn(params, batch) -> mean loss`` for the solvers."""
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a callable, got {type(loss_fn).__name__}")
    l2 = check_float(l2, "l2", min_value=0.0)
    flat, unravel = ravel_pytree(params)
    return Objective(flat, unravel, lambda f, b: loss_fn(unravel(f), b), l2)


def _hvp(obj: Objective, batch, v, damping):
    g = lambda f: jax.grad(obj.loss)(f, batch) + obj.l2 * f
    return jax.jvp(g, (obj.flat,), (v,))[1] + damping * v


def ihvp_cg(
    obj: Objective,
    batch: Any,
    v: jax.Array,
    *,
    damping: float = 0.0,
    maxiter: int = 100,
    tol: float = 1e-6,
) -> jax.Array:
    """``(H + δI)⁻¹ v`` by conjugate gradient over Hessian–vector products.

    Args:
      obj: :func:`objective` at the trained parameters.
      batch: the training data defining ``H = ∇²[(1/n)Σ ℓ + (l2/2)‖θ‖²]``.
      v: ``(p,)`` or ``(k, p)`` right-hand sides (a leading axis is ``vmap``-ped).
      damping: ``δ >= 0`` added to the diagonal (makes a non-convex ``H`` usable).
      maxiter: CG iterations (>= 1).  tol: relative residual tolerance (> 0).

    Returns:
      ``(p,)`` or ``(k, p)`` solutions.
    """
    _check_ihvp(obj, batch, v)
    damping = check_float(damping, "damping", min_value=0.0)
    maxiter = check_int(maxiter, "maxiter", min_value=1)
    tol = check_float(tol, "tol", min_value=0.0, strict_min=True)
    return _ihvp_cg(obj, batch, jnp.asarray(v), damping, maxiter, tol)


def _check_ihvp(obj, batch, v):
    if not isinstance(obj, Objective):
        raise TypeError(f"obj: expected an Objective from influence.objective, got {type(obj).__name__}")
    check_batch(batch, "batch")
    if not hasattr(v, "shape") or v.ndim not in (1, 2) or v.shape[-1] != obj.flat.shape[0]:
        raise ValueError(f"v: expected shape ({obj.flat.shape[0]},) or (k, {obj.flat.shape[0]}), got {getattr(v, 'shape', type(v).__name__)}")


@functools.partial(jax.jit, static_argnames=("obj", "maxiter"))
def _ihvp_cg_jit(obj, flat, batch, v, damping, maxiter, tol):
    o = obj._replace(flat=flat)
    solve = lambda b: jax.scipy.sparse.linalg.cg(lambda u: _hvp(o, batch, u, damping), b, tol=tol, maxiter=maxiter)[0]
    return jax.vmap(solve)(v) if v.ndim == 2 else solve(v)


def _static(obj: Objective) -> Objective:
    # the flat vector is traced; the callables / penalty are the static part of the jit
    return obj._replace(flat=None)


def _ihvp_cg(obj, batch, v, damping, maxiter, tol):
    return _ihvp_cg_jit(_static(obj), obj.flat, batch, v, damping, maxiter, tol)


def ihvp_lissa(
    key: jax.Array,
    obj: Objective,
    batch: Any,
    v: jax.Array,
    *,
    damping: float = 0.0,
    scale: float = 10.0,
    depth: int = 1000,
    batch_size: int | None = None,
    repeats: int = 1,
) -> jax.Array:
    """``(H + δI)⁻¹ v`` by LiSSA (Agarwal, Bullins & Hazan 2017; Koh & Liang 2017 §3).

    ``h_0 = v``, ``h_j = v + h_{j−1} − (H_j + δI) h_{j−1} / s``, answer ``h_J / s``, where
    ``H_j`` is the Hessian on a random mini-batch of ``batch_size`` examples (the full
    batch when ``None``: then LiSSA is the deterministic truncated Neumann series of
    ``s (H + δI)⁻¹``). Converges when ``s > λ_max(H + δI)``; the error decays like
    ``(1 − λ_min/s)^J``. ``repeats`` independent recursions are averaged.

    Args:
      key: PRNG key (mini-batches).  obj, batch, v: as in :func:`ihvp_cg`.
      damping: ``δ >= 0``.  scale: ``s > 0``.  depth: ``J >= 1``.
      batch_size: examples per Hessian estimate (``None``: all).
      repeats: averaged recursions (>= 1).

    Returns:
      ``(p,)`` or ``(k, p)`` approximate solutions.
    """
    check_key(key)
    _check_ihvp(obj, batch, v)
    damping = check_float(damping, "damping", min_value=0.0)
    scale = check_float(scale, "scale", min_value=0.0, strict_min=True)
    depth = check_int(depth, "depth", min_value=1)
    repeats = check_int(repeats, "repeats", min_value=1)
    n = check_batch(batch, "batch")
    bs = n if batch_size is None else check_int(batch_size, "batch_size", min_value=1, max_value=n)
    if is_concrete(obj.flat) and is_concrete(v):
        # The Neumann series diverges when s ≤ λ_max(H + δI): say so instead of
        # returning inf or a huge finite vector. Power iteration gives a lower bound.
        lam_max = float(_lambda_max(_static(obj), obj.flat, batch, damping))
        if scale <= lam_max:
            raise ValueError(
                f"scale: LiSSA needs scale > λ_max(H + δI) ≈ {lam_max:.4g} (power iteration), got {scale}"
            )
    return _lissa(_static(obj), obj.flat, key, batch, jnp.asarray(v), damping, scale, depth, bs, repeats)


@functools.partial(jax.jit, static_argnames=("obj", "iters"))
def _lambda_max(obj, flat, batch, damping, iters=50):
    """Rayleigh quotient after ``iters`` power iterations on ``H + δI`` (full batch)."""
    o = obj._replace(flat=flat)
    u0 = jnp.ones_like(flat) / jnp.sqrt(flat.shape[0])

    def step(u, _):
        w = _hvp(o, batch, u, damping)
        return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(flat.dtype).tiny), None

    u, _ = jax.lax.scan(step, u0, None, length=iters)
    return jnp.vdot(u, _hvp(o, batch, u, damping))


@functools.partial(jax.jit, static_argnames=("obj", "depth", "bs", "repeats"))
def _lissa(obj, flat, key, batch, v, damping, scale, depth, bs, repeats):
    o = obj._replace(flat=flat)
    n = jax.tree_util.tree_leaves(batch)[0].shape[0]

    def one(key, b):
        def step(h, k):
            if bs == n:
                mb = batch
            else:
                idx = jax.random.choice(k, n, (bs,), replace=False)
                mb = jax.tree_util.tree_map(lambda a: a[idx], batch)
            return b + h - _hvp(o, mb, h, damping) / scale, None

        h, _ = jax.lax.scan(step, b, jax.random.split(key, depth))
        return h / scale

    def avg(b):
        return jnp.mean(jax.vmap(lambda k: one(k, b))(jax.random.split(key, repeats)), axis=0)

    return jax.vmap(avg)(v) if v.ndim == 2 else avg(v)


def _per_example_grads(obj: Objective, train, flat):
    return jax.vmap(lambda ex: jax.grad(obj.loss)(flat, jax.tree_util.tree_map(lambda a: a[None], ex)))(train)


def _solve(method, obj, batch, v, key, damping, maxiter, tol, lissa):
    if method == "cg":
        return _ihvp_cg(obj, batch, v, damping, maxiter, tol)
    if key is None:
        raise ValueError("key: method='lissa' needs a PRNG key, got None")
    return ihvp_lissa(key, obj, batch, v, damping=damping, **lissa)


def influence_params(
    obj: Objective,
    train: Any,
    *,
    damping: float = 0.0,
    method: str = "cg",
    key: jax.Array | None = None,
    maxiter: int = 100,
    tol: float = 1e-6,
    lissa: dict | None = None,
) -> jax.Array:
    """``I_param(z_i) = −(H + δI)⁻¹ ∇ℓ(θ̂; z_i)`` for every training point (``vmap``-ped solver).

    Args:
      obj: :func:`objective` at the trained parameters.
      train: training batch pytree (leading dimension ``n``); defines ``H`` too.
      damping: ``δ >= 0``.  method: ``'cg'`` or ``'lissa'`` (then ``key`` and the
        :func:`ihvp_lissa` keyword arguments in ``lissa``).
      maxiter, tol: CG settings.

    Returns:
      ``(n, p)`` parameter influences (flattened like ``obj.flat``).
    """
    check_key(key, allow_none=True)
    check_batch(train, "train")
    check_choice(method, "method", ("cg", "lissa"))
    grads = _per_example_grads(obj, train, obj.flat)
    return -_solve(method, obj, train, grads, key, damping, maxiter, tol, lissa or {})


def influence_loss(
    obj: Objective,
    train: Any,
    test: Any,
    *,
    damping: float = 0.0,
    method: str = "cg",
    key: jax.Array | None = None,
    per_test: bool = False,
    maxiter: int = 100,
    tol: float = 1e-6,
    lissa: dict | None = None,
    mesh: Any = None,
) -> jax.Array:
    """``I_loss(z_i, test) = −∇L(θ̂; test)ᵀ (H + δI)⁻¹ ∇ℓ(θ̂; z_i)`` for every training point.

    Solves for ``s_test = (H + δI)⁻¹ ∇L_test`` (Koh & Liang's trick: one solve per test
    loss instead of one per training point), then ``I_i = −s_testᵀ ∇ℓ_i`` with the
    per-example gradients ``vmap``-ped and sharded over ``mesh``.

    Args:
      obj: :func:`objective` at the trained parameters.
      train: training batch (defines ``H``; ``n`` points to value).
      test: test batch; ``L_test`` is ``obj.loss`` on it (the mean over test points).
      damping, method, key, maxiter, tol, lissa: as in :func:`influence_params`.
      per_test: return the ``(n, m)`` matrix ``I_loss(z_i, z_t)`` (one solve per test
        point, ``vmap``-ped) instead of the ``(n,)`` influence on the mean test loss.
      mesh: optional device mesh over the training points.

    Returns:
      ``(n,)`` or ``(n, m)`` influences (``< 0``: up-weighting ``z_i`` lowers the test loss).
    """
    check_key(key, allow_none=True)
    check_batch(train, "train")
    check_batch(test, "test")
    check_choice(method, "method", ("cg", "lissa"))
    flat = obj.flat
    if per_test:
        g_test = _per_example_grads(obj, test, flat)  # (m, p)
    else:
        g_test = jax.grad(obj.loss)(flat, test)[None]
    s_test = _solve(method, obj, train, g_test, key, damping, maxiter, tol, lissa or {})  # (k, p)
    out = _dot_grads(_static(obj), flat, train, s_test, mesh)
    return out if per_test else out[:, 0]


@functools.partial(jax.jit, static_argnames=("obj", "mesh"))
def _dot_grads(obj, flat, train, s_test, mesh):
    o = obj._replace(flat=flat)
    idx = jnp.arange(jax.tree_util.tree_leaves(train)[0].shape[0])

    def rows(i, flat, train, s_test):
        ex = jax.tree_util.tree_map(lambda a: a[i], train)
        return -_per_example_grads(o, ex, flat) @ s_test.T

    return parallel.map_rows(rows, idx, flat, train, s_test, mesh=mesh)


def influence_loo(influence: Any, n: int) -> jax.Array:
    """First-order leave-one-out values ``v_i ≈ −I_loss(z_i, test) / n`` (removal is ``ε = −1/n``)."""
    n = check_int(n, "n", min_value=1)
    return -jnp.asarray(influence) / n
