"""The one trajectory store: training trajectories of models on disk (orbax).

A *trajectory* is a parameter pytree whose leaves carry a leading checkpoint axis
``(C, ...)`` — what :func:`distill.train.train_model` returns as ``snapshots``. A store
is a directory holding one orbax checkpoint per run, ``<root>/run<r>``, each a
trajectory; :func:`load` stacks them into ``(R, C, ...)``. MTT's expert trajectories
(``R`` experts × ``E + 1`` epochs) and Farzi's Ω (``R`` pretraining runs × their
checkpoints) are both stored this way.

Runs are written atomically (orbax commits a checkpoint by renaming a finished
temporary directory), so an interrupted pretraining keeps the runs it finished and
:func:`completed_runs` tells a resumed one which to skip.
"""

from __future__ import annotations

import os
import re
from typing import Any

import jax
import jax.numpy as jnp

from distill.checks import check_int, check_path

__all__ = ["run_path", "save_run", "save", "completed_runs", "load_run", "load"]

tree_map = jax.tree_util.tree_map

_RUN = re.compile(r"run(\d+)")


def run_path(root: Any, run: int) -> str:
    """``<root>/run<run>`` as an absolute path."""
    return os.path.join(os.path.abspath(check_path(root, "root")), f"run{int(run)}")


def save_run(root: Any, run: int, trajectory: Any) -> str:
    """Write one run's trajectory (leaves ``(C, ...)``) to ``<root>/run<run>``, replacing
    an existing one; returns the path."""
    import orbax.checkpoint as ocp

    run = check_int(run, "run", min_value=0)
    path = run_path(root, run)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, trajectory, force=True)
    return path


def save(root: Any, trajectories: Any) -> str:
    """Write every run of ``trajectories`` (leaves ``(R, C, ...)``) as ``run0 … run{R-1}``."""
    leaves = jax.tree_util.tree_leaves(trajectories)
    if not leaves or any(jnp.ndim(a) < 2 for a in leaves):
        raise ValueError("trajectories: expected a pytree whose leaves have leading axes (runs, checkpoints)")
    for r in range(leaves[0].shape[0]):
        save_run(root, r, tree_map(lambda a, r=r: a[r], trajectories))
    return os.path.abspath(os.fspath(root))


def completed_runs(root: Any) -> list[int]:
    """Sorted indices of the runs stored under ``root`` (empty when it does not exist)."""
    root = os.path.abspath(check_path(root, "root"))
    if not os.path.isdir(root):
        return []
    found = (_RUN.fullmatch(d) for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    return sorted(int(m.group(1)) for m in found if m)


def load_run(root: Any, run: int, like: Any | None = None) -> Any:
    """Read ``<root>/run<run>``; ``like`` (a pytree of arrays or ShapeDtypeStructs with
    the trajectory's shapes) restores into that structure and dtypes."""
    import orbax.checkpoint as ocp

    path = run_path(root, run)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"root: {path} is not a stored trajectory")
    with ocp.StandardCheckpointer() as ckpt:
        if like is None:
            return ckpt.restore(path)
        return ckpt.restore(path, tree_map(ocp.utils.to_shape_dtype_struct, like))


def load(root: Any, like: Any | None = None) -> Any:
    """Every run under ``root`` stacked: leaves ``(R, C, ...)`` in run order.

    ``like``: one run's trajectory structure (leaves ``(C, ...)``), or ``None`` to restore
    the saved structure as is."""
    runs = completed_runs(root)
    if not runs:
        raise FileNotFoundError(f"root: {os.path.abspath(os.fspath(root))} holds no stored trajectories")
    if runs != list(range(len(runs))):
        raise ValueError(f"root: runs {runs} are not numbered 0..{len(runs) - 1}; a run is missing")
    return tree_map(lambda *a: jnp.stack(a), *[load_run(root, r, like) for r in runs])
