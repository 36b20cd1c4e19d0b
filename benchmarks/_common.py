"""What every benchmark shares: environment capture, result JSON, tables, timing."""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import platform
import resource
import time
from importlib import metadata
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from distill import train
from distill.matching import augment as dsa

#: Recorded results (tracked by git): written only with ``--record``.
RESULTS = pathlib.Path(__file__).resolve().parent / "results"
#: Where a user's runs go by default (untracked: listed in ``.gitignore``).
RUNS = pathlib.Path(__file__).resolve().parent.parent / "runs"

__all__ = [
    "RESULTS",
    "RUNS",
    "parser",
    "output_dir",
    "environment",
    "write_result",
    "format_table",
    "mean_std",
    "seed_row",
    "timed",
    "peak_rss_mb",
    "draw_weighted",
    "EVAL_OPTIMIZERS",
    "eval_optimizer",
    "train_eval",
    "train_many",
]


def parser(module: str, doc: str | None, *, out: bool = True) -> argparse.ArgumentParser:
    """The command-line parser every benchmark starts from.

    Usage reads ``python -m benchmarks.<module>``, the description is the first line of
    the module docstring (the rest is the epilog), every flag shows its default, and —
    unless ``out=False`` — the two output flags mean the same thing everywhere:
    ``--out DIR`` (default ``runs/`` at the repository root, untracked) and ``--record``
    (write into ``benchmarks/results/``, the recorded results, instead).
    """
    lines = (doc or "").strip().splitlines() or [module]
    p = argparse.ArgumentParser(
        prog=f"python -m benchmarks.{module}",
        description=lines[0],
        epilog="\n".join(lines[1:]).strip("\n") or None,
        formatter_class=_Formatter,
    )
    if out:
        p.add_argument("--out", default=str(RUNS),
                       help="folder for this run's JSON, plots and exports (created if missing)")
        p.add_argument("--record", action="store_true",
                       help="write into benchmarks/results/ (the recorded results) instead of --out")
    return p


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after every help text; the epilog (the module docstring) kept as written."""


def output_dir(args: argparse.Namespace) -> pathlib.Path:
    """The folder a run writes to: ``benchmarks/results`` with ``--record``, else ``--out``."""
    out = RESULTS if getattr(args, "record", False) else pathlib.Path(getattr(args, "out", None) or RUNS)
    out.mkdir(parents=True, exist_ok=True)
    return out


def environment() -> tuple[dict[str, Any], dict[str, str]]:
    """``(hardware, versions)`` of this run, for the result JSON."""
    dev = jax.devices()
    hardware = {
        "platform": dev[0].platform,
        "device_kind": dev[0].device_kind,
        "device_count": len(dev),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
    versions = {"python": platform.python_version()}
    for pkg in ("jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return hardware, versions


def write_result(name: str, config: dict, results: Any, wall_time_s: float, out_dir=None) -> pathlib.Path:
    """Write ``<out_dir>/<name>.json`` (default ``runs/``): config, results, hardware, versions, wall time."""
    hardware, versions = environment()
    out = pathlib.Path(out_dir) if out_dir else RUNS
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    payload = {
        "benchmark": name,
        "config": config,
        "results": results,
        "hardware": hardware,
        "versions": versions,
        "wall_time_s": round(wall_time_s, 3),
    }
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return path


def mean_std(per_seed: Sequence[dict], metrics: Sequence[str]) -> dict[str, tuple[float, float]]:
    """``{metric: (mean, std)}`` over per-seed result dicts."""
    return {m: (float(np.mean([r[m] for r in per_seed])), float(np.std([r[m] for r in per_seed]))) for m in metrics}


def seed_row(method: str, data: str, res: dict[str, tuple[float, float]], steps: Any, time_s: float,
             **extra) -> dict:
    """A result-table row: the means of :func:`mean_std` as columns, their stds under ``"std"``."""
    return {"method": method, "data": data, **{k: v[0] for k, v in res.items()},
            "std": {k: v[1] for k, v in res.items()}, "steps": steps, "time_s": time_s, **extra}


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A plain fixed-width table (floats with 2 decimals)."""
    def cell(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    widths = [max(len(c), *(len(cell(r.get(c, ""))) for r in rows)) for c in columns]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths, strict=True))
    out = [line(columns), line(["-" * w for w in widths])]
    out += [line([cell(r.get(c, "")) for c in columns]) for r in rows]
    return "\n".join(out)


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[Any, float]:
    """Run ``fn`` (already warmed up by the caller if it compiles) and return (result, best s)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return out, best


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------------------------- evaluation training
# Shared by benchmarks.pruning (subsets as 0/1 or CRAIG weights), benchmarks.matching
# (synthetic sets) and benchmarks.valuation: train fresh models on a weighted training
# set and report test accuracy, many runs vmapped in one compiled call.


def draw_weighted(key: jax.Array, cdf: jax.Array, batch: int) -> jax.Array:
    """``batch`` indices drawn with replacement ∝ weights, by inverse CDF (O(batch·log n)).

    Args:
      key: PRNG key.
      cdf: ``(n,)`` cumulative sum of the non-negative example weights.
      batch: number of indices.

    Returns:
      ``(batch,)`` int indices ``i`` with ``P(i) = w_i / Σ w``.
    """
    u = jax.random.uniform(key, (batch,)) * cdf[-1]
    return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), cdf.shape[0] - 1)


#: ``train_eval``'s optimisers: Adam at ``lr``; or the DC/DSA/DM papers' evaluation training,
#: SGD with momentum 0.9 and weight decay 5e-4 whose learning rate drops 10× at half the steps.
EVAL_OPTIMIZERS = ("adam", "sgd")


def eval_optimizer(name: str, lr: float, steps: int) -> optax.GradientTransformation:
    """The optimiser of :func:`train_eval` called ``name`` (one of :data:`EVAL_OPTIMIZERS`)."""
    if name == "adam":
        return optax.adam(lr)
    if name == "sgd":  # Zhao et al. (2021) and Zhao & Bilen (2021, 2023): the evaluation of the synthetic sets
        sched = optax.piecewise_constant_schedule(lr, {steps // 2: 0.1})
        return optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(sched, momentum=0.9))
    raise ValueError(f"optimizer: expected one of {EVAL_OPTIMIZERS}, got {name!r}")


@functools.partial(jax.jit, static_argnames=("apply", "steps", "batch", "optimizer", "augment"))
def train_eval(key, params0, w, x, y, xt, yt, apply, steps, batch, lr, optimizer="adam", augment=None):
    """Test accuracy after ``steps`` optimiser steps on minibatches drawn ∝ ``w``.

    Args:
      key: PRNG key (minibatch draws, augmentations).
      params0: initial model parameters.
      w: ``(n,)`` example weights (0 outside the subset).
      x, y: ``(n, ...)`` training inputs, ``(n,)`` int labels.
      xt, yt: test inputs and int labels.
      apply: ``apply(params, x) -> logits`` (static).
      steps, batch: optimiser steps and minibatch size (static).
      lr: learning rate.
      optimizer: ``"adam"`` or ``"sgd"`` (:func:`eval_optimizer`; static).
      augment: ``None``, or a DSA strategy with which every training image of a batch is
        augmented by its own draw (:func:`distill.matching.augment.augment_each`; static).

    Returns:
      Scalar test accuracy in ``[0, 1]``.
    """
    opt = eval_optimizer(optimizer, lr, steps)
    cdf = jnp.cumsum(w)

    def loss_fn(p, k_batch, key):
        # The step's batch *is* its key: indices are drawn ∝ w inside the compiled step.
        idx = draw_weighted(k_batch, cdf, batch)
        xb = x[idx] if augment is None else dsa.augment_each(key, x[idx], augment)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(apply(p, xb)), y[idx][:, None], 1))

    state, _ = train.scan(train.init(params0, opt), jax.random.split(key, steps), key, loss=loss_fn, optimizer=opt)
    p = state.params
    return jnp.mean(jnp.argmax(apply(p, xt), -1) == yt)


def train_many(model, keys, weights, x, y, xt, yt, *, steps, batch, lr, optimizer="adam", augment=None) -> np.ndarray:
    """Test accuracy of ``len(keys)`` runs of :func:`train_eval`, vmapped over seed and weights.

    Args:
      model: ``ModelFns`` (``init(key, x)``, ``apply(params, x)``); a fresh init per key.
      keys: ``(R,)`` PRNG keys.
      weights: ``(R, n)`` example weights of each run.
      x, y, xt, yt: training and test data.
      steps, batch, lr, optimizer, augment: :func:`train_eval` settings.

    Returns:
      ``(R,)`` numpy test accuracies in ``[0, 1]``.
    """
    params0 = jax.vmap(lambda k: model.init(k, x[:1]))(keys)
    fn = jax.vmap(lambda k, p, w: train_eval(k, p, w, x, y, xt, yt, model.apply, steps, batch, lr, optimizer, augment))
    return np.asarray(fn(keys, params0, jnp.asarray(weights, jnp.float32)))
