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

from distill.checks import check_int

__all__ = [
    "make_mesh", "map_rows", "map_row_blocks", "sum_rows", "pad_rows", "replicate", "DATA_AXIS",
    "process_rows", "shard_rows",
]

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
    multiple = check_int(multiple, "multiple", min_value=1)
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
    block_size = check_int(block_size, "block_size", min_value=1)
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


def _check_mesh(mesh: Any) -> None:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh: expected a jax.sharding.Mesh or None, got {type(mesh).__name__}")


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
    _check_mesh(mesh)
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
    _check_mesh(mesh)
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
    _check_mesh(mesh)
    return jax.device_put(tree, NamedSharding(mesh, P()))


# ----------------------------------------------------------------------------- multi-process input


def _row_blocks(n_rows: int, mesh: Mesh, axis_name: str) -> tuple[int, list[int]]:
    """Rows per device ``b = ⌈n/k⌉`` and this process's (sorted) device positions on the axis."""
    _check_mesh(mesh)
    if mesh.devices.ndim != 1 or mesh.axis_names != (axis_name,):
        raise ValueError(f"mesh: expected a 1-d mesh with axis {axis_name!r}, got axes {mesh.axis_names}")
    k = _n_shards(mesh, axis_name)
    mine = {d.id for d in mesh.local_devices}
    positions = [i for i, d in enumerate(mesh.devices.flat) if d.id in mine]
    if not positions:
        raise ValueError("mesh: none of its devices belongs to this process")
    if positions != list(range(positions[0], positions[-1] + 1)):
        # Each process must own one contiguous block of rows; make_mesh orders devices by process.
        raise ValueError(f"mesh: this process's devices sit at non-contiguous positions {positions}")
    return -(-n_rows // k), positions


def process_rows(n_rows: int, mesh: Mesh, axis_name: str = DATA_AXIS) -> tuple[int, int]:
    """The rows ``[start, stop)`` of an ``n_rows`` array this process should load.

    Rows are dealt to the ``k`` devices of ``mesh`` in contiguous blocks of
    ``b = ⌈n_rows / k⌉`` (device ``j`` owns rows ``[j·b, min((j+1)·b, n_rows))``, the
    layout :func:`map_rows` and :func:`sum_rows` shard with), and a process owns the
    blocks of its own devices. With one process this is ``(0, n_rows)``.

    Args:
      n_rows: rows of the global array (users, examples).
      mesh: a 1-d mesh over all processes' devices (:func:`make_mesh`).
      axis_name: the mesh axis rows are sharded over.

    Returns:
      ``(start, stop)``; pass ``data[start:stop]`` to :func:`shard_rows`. The range is
      empty (``start == stop``) for a process whose devices hold only padding.
    """
    n_rows = check_int(n_rows, "n_rows", min_value=1)
    b, positions = _row_blocks(n_rows, mesh, axis_name)
    return min(positions[0] * b, n_rows), min((positions[-1] + 1) * b, n_rows)


def _first_rows_fn(x: Any, n: int) -> Any:
    return jax.tree_util.tree_map(lambda a: a[:n], x)


_first_rows = jax.jit(_first_rows_fn, static_argnums=1)


def shard_rows(local_rows: Any, mesh: Mesh, global_rows: int, axis_name: str = DATA_AXIS) -> Any:
    """Assemble a row-sharded global array from the rows each process loaded itself.

    The input-pipeline side of multi-process runs: no process ever holds the whole
    array. Process ``p`` passes rows ``[start_p, stop_p)`` from :func:`process_rows`;
    each is zero-padded to its devices' blocks and the blocks are placed with
    ``jax.make_array_from_process_local_data`` under ``NamedSharding(mesh, P(axis))``.
    The result is the global ``(global_rows, ...)`` array: sharded over ``mesh`` when
    ``global_rows`` is a multiple of the device count ``k``; otherwise the padding is
    cut inside ``jit`` and, since a ``jax.Array`` cannot be unevenly sharded, the
    result is replicated (pad or trim data to a multiple of ``k`` to keep it sharded).

    Args:
      local_rows: this process's ``(stop − start, ...)`` rows, an array or a pytree of
        arrays sharing the leading dimension (host numpy arrays are best).
      mesh: a 1-d mesh over all processes' devices (:func:`make_mesh`).
      global_rows: rows of the global array, the same on every process.
      axis_name: the mesh axis rows are sharded over.

    Returns:
      The global array (pytree) of shape ``(global_rows, ...)``, equal to the
      concatenation of all processes' ``local_rows`` in process order.
    """
    global_rows = check_int(global_rows, "global_rows", min_value=1)
    b, positions = _row_blocks(global_rows, mesh, axis_name)
    start, stop = process_rows(global_rows, mesh, axis_name)
    k = _n_shards(mesh, axis_name)
    leaves = jax.tree_util.tree_leaves(local_rows)
    if not leaves:
        raise ValueError("local_rows: expected an array or a pytree with at least one array, got none")
    for a in leaves:
        if np.ndim(a) < 1 or np.shape(a)[0] != stop - start:
            raise ValueError(f"local_rows: expected {stop - start} rows (rows [{start}, {stop}) of {global_rows} "
                             f"belong to this process), got shape {tuple(np.shape(a))}")
    local_padded = len(positions) * b
    sharding = NamedSharding(mesh, P(axis_name))

    def place(a):
        a = np.asarray(a)
        pad = np.zeros((local_padded - a.shape[0],) + a.shape[1:], a.dtype)
        return jax.make_array_from_process_local_data(sharding, np.concatenate([a, pad]), (k * b,) + a.shape[1:])

    out = jax.tree_util.tree_map(place, local_rows)
    return out if k * b == global_rows else _first_rows(out, global_rows)
