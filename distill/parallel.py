"""Device meshes and the data-parallel wrappers every method uses.

The library has exactly two parallel patterns, both over the *rows* of one array
(users, examples, sequences), with everything else replicated:

* :func:`map_rows` — a row-wise map (``f(x)[i]`` depends only on ``x[i]`` and the
  replicated arguments); rows are sharded over the mesh and the outputs concatenated.
  Used for kernel blocks, scores, per-example scorers.
* :func:`sum_rows` — a sum over rows (``f(x, w) = Σ_i w_i g(x_i)``, e.g. a loss or a
  gradient summed over a real batch); each device reduces its shard and the partial
  results are ``psum``-ed. Padding rows get weight 0, so any row count works.

Both pad the row count up to a multiple of the number of devices and are
differentiable and jittable, so meta-gradients flow through them.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from distill._checks import check_int

__all__ = ["make_mesh", "map_rows", "map_row_blocks", "sum_rows", "pad_rows", "replicate", "DATA_AXIS"]

DATA_AXIS = "data"


def make_mesh(n_devices: int | None = None, axis_name: str = DATA_AXIS) -> Mesh:
    """A 1-d device mesh over the first ``n_devices`` devices (all by default)."""
    devices = jax.devices()
    if n_devices is None:
        n_devices = len(devices)
    n_devices = check_int(n_devices, "n_devices", min_value=1, max_value=len(devices))
    return Mesh(np.asarray(devices[:n_devices]), (axis_name,))


def pad_rows(x: jax.Array, multiple: int) -> tuple[jax.Array, int]:
    """Zero-pad axis 0 of ``x`` to a multiple of ``multiple``; returns (padded, n_pad)."""
    n = x.shape[0]
    n_pad = (-n) % multiple
    if n_pad:
        x = jnp.concatenate([x, jnp.zeros((n_pad,) + x.shape[1:], x.dtype)], axis=0)
    return x, n_pad


def map_row_blocks(fn: Callable[..., Any], x: Any, *replicated: Any, block_size: int) -> Any:
    """Apply a row-wise ``fn`` to ``block_size`` rows at a time, sequentially.

    The memory counterpart of :func:`map_rows`: only one block's temporaries are alive
    at once, e.g. a ``(block_size, n)`` kernel slice that ``fn`` immediately contracts,
    or a block that stays cache-resident through a long inner loop. ``x`` is an array
    or a pytree of arrays sharing leading dimension ``n``. Blocks are written in place
    into the preallocated output (``fori_loop`` + ``dynamic_update_slice``); the last
    block is shifted back to end at row ``n`` (recomputing a few rows) instead of
    padding, so no padded copy of the output is ever made. Returns the same as
    ``fn(x, *replicated)``.
    """
    n = jax.tree_util.tree_leaves(x)[0].shape[0]
    if n <= block_size:
        return fn(x, *replicated)
    nb = -(-n // block_size)
    first = jax.tree_util.tree_map(lambda a: a[:block_size], x)
    shapes = jax.eval_shape(lambda b: fn(b, *replicated), first)
    out0 = jax.tree_util.tree_map(lambda s: jnp.zeros((n,) + s.shape[1:], s.dtype), shapes)

    def body(i, out):
        start = jnp.minimum(i * block_size, n - block_size)
        block = jax.tree_util.tree_map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, block_size, axis=0), x)
        res = fn(block, *replicated)
        return jax.tree_util.tree_map(
            lambda o, r: jax.lax.dynamic_update_slice_in_dim(o, r, start, axis=0), out, res
        )

    return jax.lax.fori_loop(0, nb, body, out0)


def _n_shards(mesh: Mesh, axis_name: str) -> int:
    return mesh.shape[axis_name]


def map_rows(
    fn: Callable[..., Any],
    x: Any,
    *replicated: Any,
    mesh: Mesh | None = None,
    axis_name: str = DATA_AXIS,
) -> Any:
    """Apply a row-wise ``fn(x_rows, *replicated)`` with rows sharded over ``mesh``.

    Args:
      fn: maps ``(m, ...)`` rows (plus the replicated arguments) to a pytree whose
        leaves all have leading dimension ``m``.
      x: ``(n, ...)`` array, or a pytree of arrays sharing leading dimension ``n``,
        whose rows are split across devices (padding rows are zeros).
      *replicated: pytrees broadcast to every device.
      mesh: the device mesh; ``None`` runs ``fn`` directly on one device.

    Returns:
      ``fn(x, *replicated)``, computed shard-by-shard and concatenated along axis 0.
    """
    if mesh is None:
        return fn(x, *replicated)
    n = jax.tree_util.tree_leaves(x)[0].shape[0]
    k = _n_shards(mesh, axis_name)
    xp = jax.tree_util.tree_map(lambda a: pad_rows(a, k)[0], x)
    x_specs = jax.tree_util.tree_map(lambda _: P(axis_name), x)
    rep_specs = jax.tree_util.tree_map(lambda _: P(), replicated)
    out = jax.shard_map(
        lambda xs, *r: fn(xs, *r),
        mesh=mesh,
        in_specs=(x_specs,) + tuple(rep_specs),
        out_specs=P(axis_name),
        check_vma=False,
    )(xp, *replicated)
    return jax.tree_util.tree_map(lambda o: o[:n], out)


def sum_rows(
    fn: Callable[..., Any],
    x: Any,
    *replicated: Any,
    mesh: Mesh | None = None,
    axis_name: str = DATA_AXIS,
) -> Any:
    """Compute ``fn(x, w, *replicated)`` — a weighted sum over rows — across devices.

    Args:
      fn: ``fn(x_rows, w_rows, *replicated) -> pytree`` that must equal
        ``Σ_i w_i · g(x_i, ...)`` (weights are 1 for real rows and 0 for padding).
      x: a pytree of arrays sharing leading dimension ``n`` (rows to shard).
      *replicated: pytrees broadcast to every device.
      mesh: the device mesh; ``None`` evaluates on one device with unit weights.

    Returns:
      The pytree ``Σ_i g(x_i)`` — the per-device partial sums ``psum``-ed over ``mesh``.
    """
    leaves = jax.tree_util.tree_leaves(x)
    n = leaves[0].shape[0]
    dtype = jnp.result_type(float)
    if mesh is None:
        return fn(x, jnp.ones((n,), dtype), *replicated)
    k = _n_shards(mesh, axis_name)
    xp = jax.tree_util.tree_map(lambda a: pad_rows(a, k)[0], x)
    w, _ = pad_rows(jnp.ones((n,), dtype), k)
    rep_specs = jax.tree_util.tree_map(lambda _: P(), replicated)
    x_specs = jax.tree_util.tree_map(lambda _: P(axis_name), x)

    def local(xs, ws, *r):
        return jax.lax.psum(fn(xs, ws, *r), axis_name)

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(x_specs, P(axis_name)) + tuple(rep_specs),
        out_specs=P(),
        check_vma=False,
    )(xp, w, *replicated)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a pytree on every device of ``mesh`` (fully replicated)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))
