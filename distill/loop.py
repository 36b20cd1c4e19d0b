"""The one outer loop of every distillation method.

``run`` optimises synthetic-data parameters with an optax optimizer on an objective
``loss(syn_params, batch, key) -> scalar``: one jitted step (``value_and_grad`` +
optax update + optional projection), progress (a tqdm bar, or plain lines in a log),
periodic evaluation with early stopping, and orbax checkpoints from which a killed
run resumes exactly.

Exact resume rests on three rules: the batch of step ``t`` is ``batches(t)`` (a pure
function of the step), the step's PRNG key is ``fold_in(key, t)``, and the checkpoint
holds the parameters, the optimizer state, the best parameters and the history. A run
resumed from step ``t`` therefore computes the same steps ``t, t+1, …`` as one that
never stopped, and returns the same result.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from typing import Any, Callable, Iterable, NamedTuple

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from distill._checks import check_int

__all__ = ["History", "run", "latest_step", "progress_bar", "LineProgress"]


class LineProgress:
    """A tqdm stand-in for log files: one plain line every ``every`` updates.

    tqdm redraws its bar in place with carriage returns; written to a file (a batch
    job's log, ``> run.log 2>&1``) every redraw stays, as a long run of duplicated
    carriage-return segments. This prints ``desc: n/total [elapsed<remaining, rate,
    postfix]`` on its own line when the count crosses a multiple of ``every`` and when
    it ends, so each count appears at most once. Only the tqdm calls used here are
    provided: iteration, ``update``, ``set_postfix``, ``close`` and ``with``.

    Args:
      iterable: what to iterate over (optional: call ``update`` instead).
      total: expected number of updates (``len(iterable)`` when it has one).
      desc: label printed before the count.
      initial: starting count (a resumed run); the rate counts from here.
      every: updates between lines (default ``ceil(total / 20)``, 1 without a total).
      file: where lines go (default: ``sys.stderr`` at construction).
    """

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 initial: int = 0, every: int | None = None, file=None):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc = iterable, total, desc
        self.n = self._printed = self.initial = initial
        # ~20 lines per run: enough to follow it, few enough to keep the log readable.
        self.every = max(1, every if every is not None else -(-(total or 20) // 20))
        self.file = file if file is not None else sys.stderr
        self.postfix = ""
        self._t0 = time.perf_counter()
        self._closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more updates; print a line on every ``every``-th count and the last."""
        self.n += n
        if self.n // self.every > self._printed // self.every or self.n == self.total:
            self._print()

    def set_postfix(self, **kwargs) -> None:
        """Extra ``key=value`` fields for the next printed line (printed with it, not now)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in kwargs.items())

    def close(self) -> None:
        """Print the final count unless it was just printed."""
        if not self._closed and self.n != self._printed:
            self._print()
        self._closed = True

    def _print(self) -> None:
        elapsed = time.perf_counter() - self._t0
        rate = (self.n - self.initial) / elapsed if elapsed > 0 else None
        line = tqdm.format_meter(
            self.n, self.total, elapsed, prefix=self.desc, rate=rate, postfix=self.postfix or None,
            bar_format="{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]",
        )
        print(line, file=self.file, flush=True)
        self._printed = self.n


def _interactive() -> bool:
    """Whether a redrawn bar is shown as such: stderr is a terminal, or a notebook widget draws it."""
    isatty = getattr(sys.stderr, "isatty", None)
    if isatty is not None and isatty():
        return True
    from tqdm import autonotebook, std

    return autonotebook.tqdm is not std.tqdm


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 initial: int = 0, disable: bool = False, leave: bool = False, every: int | None = None):
    """A progress bar that suits where stderr goes.

    A terminal or a notebook gets the usual ``tqdm.auto`` bar; anything else (a file, a
    pipe) gets :class:`LineProgress`, one plain line per ``every`` updates (default:
    ``ceil(total / 20)``), because a redrawn bar floods a log with duplicates.

    Args:
      iterable: what to iterate over (optional: call ``update`` instead).
      total: expected number of updates (``len(iterable)`` when it has one).
      desc: label printed before the count.
      initial: starting count (a resumed run).
      disable: no output at all (a disabled tqdm bar, which still counts).
      leave: keep the finished tqdm bar on screen (terminal only).
      every: updates between lines when not interactive.

    Returns:
      A ``tqdm`` or :class:`LineProgress`, with ``update``, ``set_postfix`` and ``close``.
    """
    if disable or _interactive():
        return tqdm(iterable, total=total, desc=desc, initial=initial, disable=disable, leave=leave)
    return LineProgress(iterable, total=total, desc=desc, initial=initial, every=every)


class History(NamedTuple):
    """What happened in a run (python lists, JSON-friendly).

    Attributes:
      steps: step index of every recorded loss.
      losses: objective value at each step (before that step's update).
      eval_steps: steps (1-based count of updates done) at which ``evaluate`` ran.
      eval_values: the evaluation values.
      best_step: update count of the best evaluation (``-1`` without ``evaluate``).
      best_value: best evaluation value (``nan`` without ``evaluate``).
      stopped_early: whether ``patience`` ended the run.
    """

    steps: list
    losses: list
    eval_steps: list
    eval_values: list
    best_step: int
    best_value: float
    stopped_early: bool


def _manager(checkpoint_dir: str):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    return ocp.CheckpointManager(os.path.abspath(checkpoint_dir), options=options)


def latest_step(checkpoint_dir: str) -> int | None:
    """The step of the newest checkpoint in ``checkpoint_dir`` (``None`` if none)."""
    if not os.path.isdir(checkpoint_dir):
        return None
    mngr = _manager(checkpoint_dir)
    try:
        return mngr.latest_step()
    finally:
        mngr.close()


def _empty_meta() -> dict:
    return {
        "step": 0,
        "steps": [],
        "losses": [],
        "eval_steps": [],
        "eval_values": [],
        "best_step": -1,
        "best_value": None,
        "bad_evals": 0,
        "stopped_early": False,
    }


def run(
    objective: Callable[[Any, Any, jax.Array], jax.Array],
    syn_params: Any,
    optimizer: optax.GradientTransformation,
    batches: Callable[[int], Any] | Any,
    *,
    steps: int,
    key: jax.Array,
    evaluate: Callable[[Any], float] | None = None,
    eval_every: int = 50,
    patience: int | None = None,
    maximize: bool = True,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 100,
    project: Callable[[Any], Any] | None = None,
    progress: bool = True,
) -> tuple[Any, History]:
    """Optimise ``syn_params`` for ``steps`` updates of ``optimizer`` on ``objective``.

    Args:
      objective: ``loss(syn_params, batch, key) -> scalar``, differentiable in
        ``syn_params`` (custom VJPs inside are fine).
      syn_params: initial parameters (any pytree of float arrays).
      optimizer: an optax ``GradientTransformation`` (e.g. ``optax.adam(1e-2)``).
      batches: ``batches(step) -> batch``, a deterministic function of the step, or a
        fixed batch pytree used at every step.
      steps: total number of updates (a resumed run continues up to this count).
      key: PRNG key; step ``t`` uses ``jax.random.fold_in(key, t)``.
      evaluate: ``evaluate(syn_params) -> float`` run every ``eval_every`` updates and
        after the last one; the returned parameters are the best evaluated ones. (The
        final off-grid evaluation is not checkpointed, so extending a finished run
        to more steps reproduces the longer uninterrupted run exactly.)
      eval_every: updates between evaluations.
      patience: stop after this many evaluations without improvement (``None``: never).
      maximize: whether larger evaluation values are better.
      checkpoint_dir: where orbax checkpoints go; a run whose directory already holds a
        checkpoint resumes from it.
      checkpoint_every: updates between checkpoints (plus one at the end).
      project: applied to the parameters after each update (e.g. clipping), jitted
        with the step.
      progress: show progress on stderr: a tqdm bar on a terminal, a plain line every
        ``ceil(steps / 20)`` updates when stderr is a file (:func:`progress_bar`).

    Returns:
      ``(params, history)``: the best-by-``evaluate`` parameters (the final ones when
      ``evaluate`` is ``None``) and the :class:`History`.

    Raises:
      FloatingPointError: the objective became NaN/inf (the step is named).
    """
    steps = check_int(steps, "steps", min_value=0)
    eval_every = check_int(eval_every, "eval_every", min_value=1)
    checkpoint_every = check_int(checkpoint_every, "checkpoint_every", min_value=1)
    if patience is not None:
        patience = check_int(patience, "patience", min_value=1)
    if not hasattr(optimizer, "init") or not hasattr(optimizer, "update"):
        raise TypeError(f"optimizer: expected an optax GradientTransformation, got {type(optimizer).__name__}")
    if not callable(objective):
        raise TypeError(f"objective: expected a callable, got {type(objective).__name__}")
    if not jax.tree_util.tree_leaves(syn_params):
        raise ValueError("syn_params: expected a pytree with at least one array, got none")

    @jax.jit
    def step_fn(params, opt_state, batch, step_key):
        loss, grads = jax.value_and_grad(objective)(params, batch, step_key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if project is not None:
            params = project(params)
        return params, opt_state, loss

    params = syn_params
    opt_state = optimizer.init(params)
    best_params = params
    meta = _empty_meta()

    mngr = _manager(checkpoint_dir) if checkpoint_dir is not None else None
    if mngr is not None and mngr.latest_step() is not None:
        import orbax.checkpoint as ocp

        target = {"params": params, "opt_state": opt_state, "best_params": best_params}
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        restored = mngr.restore(
            mngr.latest_step(),
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()),
        )
        params = restored.state["params"]
        opt_state = restored.state["opt_state"]
        best_params = restored.state["best_params"]
        meta = restored.meta

    def save():
        if mngr is None:
            return
        import orbax.checkpoint as ocp

        state = {"params": params, "opt_state": opt_state, "best_params": best_params}
        # orbax writes asynchronously: hand it a snapshot, since `meta` keeps changing.
        snapshot = copy.deepcopy(meta)
        mngr.save(
            meta["step"],
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(snapshot)),
            force=True,
        )

    def better(value):
        best = meta["best_value"]
        return best is None or (value > best if maximize else value < best)

    def run_evaluation():
        nonlocal best_params
        value = float(evaluate(params))
        meta["eval_steps"].append(meta["step"])
        meta["eval_values"].append(value)
        if better(value):
            meta["best_value"], meta["best_step"], meta["bad_evals"] = value, meta["step"], 0
            best_params = params
        else:
            meta["bad_evals"] += 1

    start = meta["step"]
    bar = progress_bar(total=steps, initial=min(start, steps), disable=not progress, desc="distill")
    try:
        while meta["step"] < steps and not meta["stopped_early"]:
            t = meta["step"]
            batch = batches(t) if callable(batches) else batches
            params, opt_state, loss = step_fn(params, opt_state, batch, jax.random.fold_in(key, t))
            loss = float(loss)
            if not np.isfinite(loss):
                raise FloatingPointError(f"objective: loss is {loss} at step {t}")
            meta["steps"].append(t)
            meta["losses"].append(loss)
            meta["step"] = t + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}")
            done = meta["step"] == steps
            on_grid = meta["step"] % eval_every == 0
            if evaluate is not None and on_grid:
                run_evaluation()
                if patience is not None and meta["bad_evals"] >= patience:
                    meta["stopped_early"] = True
            if meta["step"] % checkpoint_every == 0 or done or meta["stopped_early"]:
                save()
            if evaluate is not None and done and not on_grid:
                # Off the evaluation grid: evaluate the final parameters too, but after
                # the checkpoint, so a longer run resumed from here matches a run that
                # never stopped (which would not have evaluated this step).
                run_evaluation()
    finally:
        bar.close()
        if mngr is not None:
            mngr.wait_until_finished()
            mngr.close()

    history = History(
        steps=meta["steps"],
        losses=meta["losses"],
        eval_steps=meta["eval_steps"],
        eval_values=meta["eval_values"],
        best_step=meta["best_step"],
        best_value=float("nan") if meta["best_value"] is None else meta["best_value"],
        stopped_early=meta["stopped_early"],
    )
    return (best_params if evaluate is not None else params), history
