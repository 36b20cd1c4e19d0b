"""Closed-form infinite-width kernels (NNGP and NTK) of fully-connected ReLU networks.

For the network ``[Dense(w_std, b_std), ReLU] × depth + Dense(w_std, b_std)`` in the
NTK parameterization (a layer computes ``w_std/√fan_in · W h + b_std · b`` with
standard-normal ``W, b``), the infinite-width kernels follow the layer recursion
(Jacot et al. 2018; Arora et al. 2019; Cho & Saul 2009 for the arc-cosine
expectations)::

    K⁰(x, x') = w² · x·x' / d + b²                 Θ⁰ = K⁰
    for l = 1..depth:
        c      = Kˡ⁻¹(x, x') / √(Kˡ⁻¹(x, x) Kˡ⁻¹(x', x'))      (cosine, clipped to [-1, 1])
        θ      = arccos c
        E[φφ]  = √(Kˡ⁻¹(x,x) Kˡ⁻¹(x',x')) · (sin θ + (π − θ) cos θ) / (2π)
        E[φ'φ']= (π − θ) / (2π)
        Kˡ     = w² · E[φφ] + b²
        Θˡ     = w² · E[φ'φ'] · Θˡ⁻¹ + Kˡ
    nngp = K^depth,  ntk = Θ^depth

This is the kernel of ∞-AE (dissertation Ch. 3, Eq. 3.1, where the single hidden
layer case reads 𝕂(x, x') = σ̃(xᵀx') + σ̃'(xᵀx')·xᵀx'). The values match
neural-tangents' ``stax`` (checked against ``tests/data/ntk_golden.json``, generated with neural-tangents 0.6.5).

Numerics: the cosine is clipped to [-1, 1] for values, and the two arc-cosine
factors carry custom JVPs. ``J(c) = √(1−c²) + (π − arccos c)·c`` has the finite
derivative ``π − arccos c`` everywhere (its naive autodiff is ∞ − ∞ = NaN at c = ±1);
the derivative of ``π − arccos c`` is ``1/√(1−c²)``, which is infinite at c = ±1 and
is capped (its cotangent at the diagonal of K(X, X) multiplies a cosine change that
is zero up to round-off). Zero rows with ``b_std = 0`` give a zero kernel, not NaN.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from distill import parallel
from distill.checks import check_array, check_float, check_int, is_concrete

__all__ = ["Kernel", "KernelSpec", "check_spec", "fc_relu", "fc_relu_blocked", "fc_relu_apply"]


class Kernel(NamedTuple):
    """Infinite-width kernels of one architecture, each ``(n1, n2)``."""

    nngp: jax.Array
    ntk: jax.Array


@jax.custom_jvp
def _arccos_j1(c: jax.Array) -> jax.Array:
    """``sin θ + (π − θ) cos θ`` with ``θ = arccos c`` (the ReLU arc-cosine J₁)."""
    return jnp.sqrt(jnp.maximum(1.0 - c * c, 0.0)) + (jnp.pi - jnp.arccos(c)) * c


@_arccos_j1.defjvp
def _arccos_j1_jvp(primals, tangents):
    (c,), (dc,) = primals, tangents
    return _arccos_j1(c), (jnp.pi - jnp.arccos(c)) * dc


@jax.custom_jvp
def _arccos_j0(c: jax.Array) -> jax.Array:
    """``π − arccos c`` (the ReLU derivative's arc-cosine J₀)."""
    return jnp.pi - jnp.arccos(c)


@_arccos_j0.defjvp
def _arccos_j0_jvp(primals, tangents):
    (c,), (dc,) = primals, tangents
    # 1/√(1−c²) is infinite at |c| = 1; cap it at 1/√eps of the dtype.
    tiny = jnp.finfo(c.dtype).eps
    return _arccos_j0(c), dc / jnp.sqrt(jnp.maximum(1.0 - c * c, tiny))


def _safe_sqrt(x: jax.Array) -> jax.Array:
    """√x with a finite gradient at 0 (zero rows of inputs without bias)."""
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def _relu_layer(k12, k11, k22, t12, w_var, b_var):
    """One ``ReLU → Dense`` step of the recursion on cross and diagonal terms."""
    norm = _safe_sqrt(k11[:, None] * k22[None, :])
    safe_norm = jnp.where(norm > 0, norm, 1.0)
    c = jnp.clip(jnp.where(norm > 0, k12 / safe_norm, 0.0), -1.0, 1.0)
    inv_2pi = 1.0 / (2.0 * jnp.pi)
    e_phi = norm * _arccos_j1(c) * inv_2pi
    e_dphi = _arccos_j0(c) * inv_2pi
    k12_new = w_var * e_phi + b_var
    t12_new = w_var * e_dphi * t12 + k12_new
    # Diagonal: c = 1, so E[φφ] = k/2 (ReLU halves the second moment).
    k11_new = w_var * 0.5 * k11 + b_var
    k22_new = w_var * 0.5 * k22 + b_var
    return k12_new, k11_new, k22_new, t12_new


#: Deeper kernels run the layer recursion in a ``fori_loop`` instead of unrolling it.
_UNROLL_DEPTH = 4


def _fc_relu_dense(x1, x2, depth, w_std, b_std) -> Kernel:
    d = x1.shape[1]
    w_var, b_var = w_std**2, b_std**2
    # NTK parameterization: the first layer sees inputs scaled by 1/d.
    k12 = w_var * (x1 @ x2.T) / d + b_var
    k11 = w_var * jnp.sum(x1 * x1, axis=1) / d + b_var
    k22 = w_var * jnp.sum(x2 * x2, axis=1) / d + b_var
    t12 = k12
    carry = (k12, k11, k22, t12)
    if depth <= _UNROLL_DEPTH:  # unrolled: XLA fuses the recursion into the matmul's epilogue
        for _ in range(depth):
            carry = _relu_layer(*carry, w_var, b_var)
    else:  # a loop keeps compile time and memory flat in depth (300 unrolled layers take minutes)
        carry = jax.lax.fori_loop(0, depth, lambda _, c: _relu_layer(*c, w_var, b_var), carry)
    k12, _, _, t12 = carry
    return Kernel(nngp=k12, ntk=t12)


def _validate(x1, x2, depth, w_std, b_std):
    check_array(x1, "x1", ndim=2, kind="numeric", finite=True)
    if x2 is not None:
        check_array(x2, "x2", ndim=2, kind="numeric", finite=True)
        if x2.shape[1] != x1.shape[1]:
            raise ValueError(
                f"x2: expected {x1.shape[1]} features to match x1, got shape {tuple(x2.shape)}"
            )
    depth = check_int(depth, "depth", min_value=0)
    w_std = check_float(w_std, "w_std", min_value=0.0, strict_min=True)
    b_std = check_float(b_std, "b_std", min_value=0.0)
    return depth, w_std, b_std


def _nan_if_invalid(out, w_std, b_std):
    # Traced σ's skip the eager range checks: an invalid one (σ_w <= 0, σ_b < 0) makes
    # every entry NaN rather than the plausible kernel of |σ| the recursion would give.
    if is_concrete(w_std) and is_concrete(b_std):
        return out
    ok = (w_std > 0) & (b_std >= 0)
    return jax.tree_util.tree_map(lambda a: jnp.where(ok, a, jnp.nan), out)


def _require_static(w_std, b_std):
    # The blocked paths compile per (σ_w, σ_b): a traced value cannot be a static argument.
    for v, name in ((w_std, "w_std"), (b_std, "b_std")):
        if not is_concrete(v):
            raise TypeError(f"{name}: expected a concrete number (static in the blocked kernel), got a traced value")


def _as_float(x):
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def fc_relu(
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    depth: int = 1,
    w_std: float = 2**0.5,
    b_std: float = 0.1,
) -> Kernel:
    """NNGP and NTK of ``[Dense, ReLU] × depth + Dense`` between two sets of inputs.

    Args:
      x1: ``(n1, d)`` inputs (e.g. users' bag-of-items rows).
      x2: ``(n2, d)`` inputs; ``None`` means ``x1`` (the Gram matrix).
      depth: number of hidden ``[Dense, ReLU]`` blocks (0 gives the linear kernel).
      w_std: weight standard deviation σ_w of every Dense layer.
      b_std: bias standard deviation σ_b of every Dense layer.

    Returns:
      ``Kernel(nngp, ntk)``, each ``(n1, n2)``. Differentiable in ``x1`` and ``x2``.

    Source: dissertation Ch. 3, Eq. 3.1 (∞-AE's kernel); recursion in the module doc.
    """
    depth, w_std, b_std = _validate(x1, x2, depth, w_std, b_std)
    x1 = _as_float(jnp.asarray(x1))
    x2 = x1 if x2 is None else _as_float(jnp.asarray(x2))
    return _nan_if_invalid(_fc_relu_dense(x1, x2, depth, w_std, b_std), w_std, b_std)


def _rows_fn(depth, w_std, b_std, block_size, rhs_fn=None):
    """Row-wise kernel evaluation (optionally contracted with ``rhs``) in row blocks."""

    def one_block(b, x2, *rhs):
        k = _fc_relu_dense(b, x2, depth, w_std, b_std)
        return k if rhs_fn is None else rhs_fn(k, *rhs)

    def rows(xb, x2, *rhs):
        if block_size is None:
            return one_block(xb, x2, *rhs)
        return parallel.map_row_blocks(one_block, xb, x2, *rhs, block_size=block_size)

    return rows


@functools.partial(jax.jit, static_argnames=("depth", "w_std", "b_std", "block_size", "mesh"))
def _blocked(x1, x2, *, depth, w_std, b_std, block_size, mesh):
    return parallel.map_rows(_rows_fn(depth, w_std, b_std, block_size), x1, x2, mesh=mesh)


@functools.partial(jax.jit, static_argnames=("which", "depth", "w_std", "b_std", "block_size", "mesh"))
def _apply(x1, x2, rhs, *, which, depth, w_std, b_std, block_size, mesh):
    contract = lambda k, rhs: getattr(k, which) @ rhs
    return parallel.map_rows(_rows_fn(depth, w_std, b_std, block_size, contract), x1, x2, rhs, mesh=mesh)


def fc_relu_blocked(
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    depth: int = 1,
    w_std: float = 2**0.5,
    b_std: float = 0.1,
    block_size: int | None = None,
    mesh: Mesh | None = None,
) -> Kernel:
    """:func:`fc_relu` with rows of ``x1`` sharded over a device mesh and/or in row blocks.

    With ``mesh``, rows of ``x1`` are split across devices (``x2`` replicated) via
    :func:`distill.parallel.map_rows`, so each device holds ``n1/devices × n2`` of the
    kernel; the result equals the single-device one. ``block_size`` evaluates each
    device's rows ``block_size`` at a time.

    Memory note (measured in ``benchmarks/infinite_ae_perf``): XLA fuses the whole
    elementwise recursion into the ``x1 @ x2ᵀ`` output, so the dense forward pass
    has no ``(n1, n2)`` temporaries besides its result, and row blocks only add a
    copy. Blocks pay off when each block is consumed at once — use
    :func:`fc_relu_apply` for ``K @ rhs`` with memory ``O(block_size · n2)``.

    Args:
      x1, x2, depth, w_std, b_std: as in :func:`fc_relu`.
      block_size: rows of ``x1`` per block (per device); ``None`` for one block.
      mesh: optional 1-d mesh from :func:`distill.parallel.make_mesh`.

    Returns:
      ``Kernel(nngp, ntk)`` of shape ``(n1, n2)``.
    """
    depth, w_std, b_std = _validate(x1, x2, depth, w_std, b_std)
    if block_size is not None:
        block_size = check_int(block_size, "block_size", min_value=1)
    x1 = _as_float(jnp.asarray(x1))
    x2 = x1 if x2 is None else _as_float(jnp.asarray(x2))
    _require_static(w_std, b_std)
    return _blocked(x1, x2, depth=depth, w_std=w_std, b_std=b_std, block_size=block_size, mesh=mesh)


def fc_relu_apply(
    x1: jax.Array,
    x2: jax.Array,
    rhs: jax.Array,
    *,
    which: str = "ntk",
    depth: int = 1,
    w_std: float = 2**0.5,
    b_std: float = 0.1,
    block_size: int | None = 512,
    mesh: Mesh | None = None,
) -> jax.Array:
    """``K(x1, x2) @ rhs`` without materialising the ``(n1, n2)`` kernel.

    Each block of ``block_size`` rows of ``x1`` builds its ``(block_size, n2)`` kernel
    slice and contracts it with ``rhs`` at once, so kernel memory is
    ``O(block_size · n2)`` per device instead of ``O(n1 · n2)``. This is ∞-AE's
    prediction ``NTK(x_query, X) · α`` (Algorithm 4) for many query users.

    Args:
      x1: ``(n1, d)`` queries.  x2: ``(n2, d)`` support.  rhs: ``(n2, m)``.
      which: ``'ntk'`` or ``'nngp'``.
      depth, w_std, b_std: as in :func:`fc_relu`.
      block_size: rows per block; ``None`` evaluates all rows at once.
      mesh: optional mesh; rows of ``x1`` are sharded across it.

    Returns:
      ``(n1, m)`` array ``K(x1, x2) @ rhs``.
    """
    depth, w_std, b_std = _validate(x1, x2, depth, w_std, b_std)
    if which not in ("ntk", "nngp"):
        raise ValueError(f"which: expected 'ntk' or 'nngp', got {which!r}")
    check_array(rhs, "rhs", ndim=2, kind="numeric", shape=(x2.shape[0], None))
    if block_size is not None:
        block_size = check_int(block_size, "block_size", min_value=1)
    x1 = _as_float(jnp.asarray(x1))
    x2 = _as_float(jnp.asarray(x2))
    _require_static(w_std, b_std)
    return _apply(
        x1, x2, jnp.asarray(rhs, x1.dtype), which=which, depth=depth, w_std=w_std, b_std=b_std,
        block_size=block_size, mesh=mesh,
    )


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """Static settings of the ``[Dense, ReLU] × depth + Dense`` NTK (:func:`fc_relu`).

    The one way kernel settings travel through the library (∞-AE, Distill-CF, KIP).
    Defaults: depth 1 as in ∞-AE (dissertation §3.3, one hidden layer); σ_w = √2,
    σ_b = 0.1 as in the reference implementation's ``FanOut``/``Dense`` stack."""

    depth: int = 1
    w_std: float = 2**0.5
    b_std: float = 0.1

    def __post_init__(self):
        check_int(self.depth, "depth", min_value=0)
        check_float(self.w_std, "w_std", min_value=0.0, strict_min=True)
        check_float(self.b_std, "b_std", min_value=0.0)


# A static pytree node: jit treats the spec as part of the function, not as data.
jax.tree_util.register_static(KernelSpec)


def check_spec(spec: Any, name: str = "spec") -> KernelSpec:
    """``spec`` if it is a :class:`KernelSpec`, else a ``TypeError`` naming ``name``."""
    if not isinstance(spec, KernelSpec):
        raise TypeError(f"{name}: expected a models.kernels.KernelSpec, got {type(spec).__name__}")
    return spec
