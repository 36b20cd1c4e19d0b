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
import hashlib
import inspect
import json
import os
import pathlib
import sys
import time
import warnings
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from distill import export, parallel
from distill.checks import check_int

__all__ = ["History", "run", "latest_step", "array_signature", "key_signature", "progress_bar", "LineProgress"]


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


def array_signature(x: Any) -> dict:
    """``{"shape", "dtype", "sha256"}`` of an array's contents, for a run's ``fingerprint``.

    Hashing the bytes (≈ 0.2 s per 100 MB) lets a resumed run check that it sees the same
    data, not only data of the same shape.
    """
    a = np.ascontiguousarray(np.asarray(x))
    return {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": hashlib.sha256(a.tobytes()).hexdigest()}


def key_signature(key: jax.Array) -> list[int]:
    """The raw words of a PRNG key (typed or ``uint32``), for a run's settings record."""
    return np.asarray(jax.random.key_data(key)).reshape(-1).tolist()


def _json_roundtrip(x: Any) -> Any:
    try:
        return json.loads(json.dumps(export.jsonable(x)))
    except (TypeError, ValueError) as e:
        raise TypeError(f"fingerprint/state: expected JSON-serialisable values ({e})") from None


def _fingerprint(user: Mapping | None, params: Any, eval_every: int, maximize: bool,
                 evaluate_start: bool = False) -> dict:
    """What must agree for a checkpoint to be resumed: the caller's settings and data, the
    parameters' structure, and the loop settings that decide which steps are evaluated."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    auto = {
        "params": {"tree": str(treedef), "leaves": [[list(np.shape(a)), str(a.dtype)] for a in leaves]},
        "eval_every": eval_every,
        "maximize": maximize,
    }
    if evaluate_start:  # only when set: checkpoints written before the option still resume
        auto["evaluate_start"] = True
    return _json_roundtrip({"run": dict(user or {}), "loop": auto})


def _differences(saved: Any, now: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for k in sorted(set(saved) | set(now)):
            out += _differences(saved.get(k, "<missing>"), now.get(k, "<missing>"), f"{prefix}{k}.")
        return out
    return [] if saved == now else [f"{prefix[:-1]}: checkpoint has {saved!r}, this run has {now!r}"]


def _check_fingerprint(saved: Any, now: dict, where: str) -> None:
    if saved is None:
        raise ValueError(f"checkpoint_dir: {where} holds a checkpoint without a settings fingerprint; "
                         "it cannot be checked against this run: use a new checkpoint_dir")
    diff = _differences(saved, now)
    if diff:
        shown = "; ".join(diff[:6]) + (f"; … ({len(diff)} differences)" if len(diff) > 6 else "")
        raise ValueError(f"checkpoint_dir: {where} was written by a run with different settings or data "
                         f"({shown}); use a new checkpoint_dir or the same settings")


def _restore_target(tree: Any) -> Any:
    """Restore committed (sharded) arrays with their sharding, everything else to the host.

    Host arrays become uncommitted ``jnp`` arrays, so a step jitted over a mesh may place
    them where it wants, as it does the fresh initial parameters.
    """
    def leaf(a):
        if isinstance(a, jax.Array) and a.committed:
            return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding)
        return np.empty(np.shape(a), a.dtype)

    return jax.tree_util.tree_map(leaf, tree)


def _to_device(tree: Any) -> Any:
    return _global_params(jax.tree_util.tree_map(lambda a: jnp.asarray(a) if isinstance(a, np.ndarray) else a, tree))


def _global_params(tree: Any) -> Any:
    """With several processes, replicate host-local parameters over all devices.

    Multi-process orbax saves only global arrays; an uncommitted (host-local) leaf would
    fail at the first checkpoint. One process: unchanged (fresh arrays stay uncommitted,
    so a jitted step places them freely).
    """
    if jax.process_count() == 1:
        return tree
    mesh = parallel.make_mesh()
    return jax.tree_util.tree_map(
        lambda a: a if isinstance(a, jax.Array) and a.committed else parallel.replicate(jnp.asarray(a), mesh), tree)


def _restore(mngr, target: dict, fingerprint: dict) -> tuple[dict, dict] | None:
    """The newest intact checkpoint ``(state, meta)``; a damaged newest one falls back to the
    previous (with a warning); a fingerprint mismatch raises."""
    import orbax.checkpoint as ocp

    steps = sorted(mngr.all_steps(), reverse=True)
    for i, step in enumerate(steps):
        try:
            meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
            if not isinstance(meta, dict):
                raise ValueError("unreadable run record")
        except Exception as e:  # any read failure means this step is damaged
            _warn_damaged(mngr, step, steps[i + 1:], e)
            continue
        _check_fingerprint(meta.get("fingerprint"), fingerprint, str(mngr.directory))
        try:
            args = ocp.args.Composite(state=ocp.args.StandardRestore(_restore_target(target)))
            state = mngr.restore(step, args=args).state
        except Exception as e:  # likewise: a damaged array file
            _warn_damaged(mngr, step, steps[i + 1:], e)
            continue
        return _to_device(state), meta
    if steps:
        raise ValueError(f"checkpoint_dir: no intact checkpoint in {mngr.directory} (steps {steps} are damaged)")
    return None


def _warn_damaged(mngr, step: int, rest: list, err: Exception) -> None:
    # Moved aside, not deleted (the user may want to inspect it), so that the resumed
    # run can write this step again.
    src = pathlib.Path(str(mngr.directory)) / str(step)
    dst = src.with_name(f"{step}.damaged")
    if jax.process_index() == 0 and src.exists() and not dst.exists():  # one process renames
        src.rename(dst)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"distill.loop: step {step} moved aside")
    mngr.reload()
    nxt = f"resuming from step {rest[0]}" if rest else "no older checkpoint"
    warnings.warn(f"checkpoint_dir: step {step} in {mngr.directory} is damaged "
                  f"({type(err).__name__}: {str(err)[:200]}; moved to {dst.name}); {nxt}",
                  RuntimeWarning, stacklevel=3)


def _save(mngr, state: dict, meta: dict) -> None:
    import orbax.checkpoint as ocp

    # orbax writes asynchronously: hand it a snapshot, since `meta` keeps changing.
    snapshot = copy.deepcopy(meta)
    mngr.save(meta["step"], args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(snapshot)), force=True)


def _empty_meta(fingerprint: dict) -> dict:
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
        "fingerprint": fingerprint,
        "user_state": {},
    }


def _check_run_args(objective, syn_params, optimizer, steps, eval_every, checkpoint_every, patience, evaluate, state,
                    update=None):
    steps = check_int(steps, "steps", min_value=0)
    eval_every = check_int(eval_every, "eval_every", min_value=1)
    checkpoint_every = check_int(checkpoint_every, "checkpoint_every", min_value=1)
    if patience is not None:
        patience = check_int(patience, "patience", min_value=1)
    if not hasattr(optimizer, "init") or not hasattr(optimizer, "update"):
        raise TypeError(f"optimizer: expected an optax GradientTransformation, got {type(optimizer).__name__}")
    if not callable(objective) and not (objective is None and update is not None):
        raise TypeError(f"objective: expected a callable, got {type(objective).__name__}")
    if update is not None and not callable(update):
        raise TypeError(f"update: expected a callable, got {type(update).__name__}")
    if evaluate is not None and not callable(evaluate):
        raise TypeError(f"evaluate: expected a callable, got {type(evaluate).__name__}")
    if not jax.tree_util.tree_leaves(syn_params):
        raise ValueError("syn_params: expected a pytree with at least one array, got none")
    if state is not None and not isinstance(state, dict):
        raise TypeError(f"state: expected a dict, got {type(state).__name__}")
    return steps, eval_every, checkpoint_every, patience


def _optimizer_step(optimizer, project):
    """``apply(params, opt_state, grads) -> (params, opt_state)``: one optimizer update
    followed by ``project``."""
    def apply(params, opt_state, grads):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if project is not None:
            params = project(params)
        return params, opt_state

    return apply


def _make_step(objective, optimizer, project, update=None):
    apply = _optimizer_step(optimizer, project)
    if update is not None:
        return jax.jit(lambda params, opt_state, batch, step_key: update(params, opt_state, batch, step_key, apply))

    def scalar_objective(params, batch, key):
        out = objective(params, batch, key)
        if jnp.shape(out) != ():
            raise TypeError(f"objective: expected a scalar loss, got shape {jnp.shape(out)}")
        return out

    @jax.jit
    def step_fn(params, opt_state, batch, step_key):
        loss, grads = jax.value_and_grad(scalar_objective)(params, batch, step_key)
        params, opt_state = apply(params, opt_state, grads)
        return params, opt_state, loss

    return step_fn


def _wants_step(fn: Callable) -> bool:
    """Whether ``evaluate`` takes ``(params, step)`` rather than ``(params)``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    positional = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())


def _record_evaluation(meta: dict, value: float, maximize: bool) -> bool:
    """Append an evaluation; return whether it is the new best. NaN is never best."""
    meta["eval_steps"].append(meta["step"])
    meta["eval_values"].append(value)
    best = meta["best_value"]
    improved = np.isfinite(value) and (best is None or (value > best if maximize else value < best))
    if not np.isfinite(value):
        warnings.warn(f"evaluate: returned {value} at step {meta['step']}; not counted as an improvement",
                      RuntimeWarning, stacklevel=3)
    if improved:
        meta["best_value"], meta["best_step"], meta["bad_evals"] = value, meta["step"], 0
    else:
        meta["bad_evals"] += 1
    return bool(improved)


def _history(meta: dict) -> History:
    return History(
        steps=meta["steps"],
        losses=meta["losses"],
        eval_steps=meta["eval_steps"],
        eval_values=meta["eval_values"],
        best_step=meta["best_step"],
        best_value=float("nan") if meta["best_value"] is None else meta["best_value"],
        stopped_early=meta["stopped_early"],
    )


def run(
    objective: Callable[[Any, Any, jax.Array], jax.Array] | None,
    syn_params: Any,
    optimizer: optax.GradientTransformation,
    batches: Callable[[int], Any] | Any,
    *,
    steps: int,
    key: jax.Array,
    evaluate: Callable[..., float] | None = None,
    eval_every: int = 50,
    evaluate_start: bool = False,
    patience: int | None = None,
    maximize: bool = True,
    checkpoint_dir: str | None = None,
    checkpoint_every: int = 100,
    project: Callable[[Any], Any] | None = None,
    progress: bool = True,
    fingerprint: Mapping[str, Any] | None = None,
    state: dict | None = None,
    update: Callable[..., tuple[Any, Any, jax.Array]] | None = None,
) -> tuple[Any, History]:
    """Optimise ``syn_params`` for ``steps`` updates of ``optimizer`` on ``objective``.

    Args:
      objective: ``loss(syn_params, batch, key) -> scalar``, differentiable in
        ``syn_params`` (custom VJPs inside are fine).
      syn_params: initial parameters (any pytree of float arrays).
      optimizer: an optax ``GradientTransformation`` (e.g. ``optax.adam(1e-2)``).
      batches: ``batches(step) -> batch``, a deterministic function of the step, or a
        fixed batch pytree used at every step.
      steps: total number of steps (a resumed run continues up to this count).
      key: PRNG key; step ``t`` uses ``jax.random.fold_in(key, t)``.
      evaluate: ``evaluate(params) -> float`` or ``evaluate(params, step) -> float``, run
        every ``eval_every`` steps and after the last; the best evaluated parameters are
        returned (NaN is never best). The final off-grid evaluation is not checkpointed,
        so extending a finished run reproduces the longer uninterrupted run exactly.
      eval_every: updates between evaluations.
      evaluate_start: also evaluate the start (step 0): the result never validates worse.
      patience: stop after this many evaluations without improvement (``None``: never).
      maximize: whether larger evaluation values are better.
      checkpoint_dir: orbax checkpoints; a run resumes from the newest intact one (a
        damaged newest step falls back to the previous one with a warning) and refuses,
        naming the differences, one with another ``fingerprint``, parameter structure or
        ``eval_every``. Restored arrays keep ``syn_params``' committed sharding.
      checkpoint_every: updates between checkpoints (plus one at the end).
      project: applied to the parameters after each update (e.g. clipping), jitted.
      progress: show progress on stderr (a tqdm bar; plain lines in a file: :func:`progress_bar`).
      fingerprint: JSON-able settings and data signatures (:func:`array_signature`) of
        the caller's run, stored with every checkpoint and compared on resume.
      state: a JSON-able dict the caller's ``batches``/``evaluate`` read and update (e.g.
        a schedule chosen on validation), checkpointed with the parameters, refilled on resume.
      update: ``update(params, opt_state, batch, key, apply) -> (params, opt_state, loss)``,
        a whole step in place of ``value_and_grad(objective)`` + one update, for methods
        that update the data several times per step (DC's Algorithm 1); it calls
        ``apply(params, opt_state, grads) -> (params, opt_state)`` (``optimizer`` + ``project``)
        for each. ``objective`` may then be ``None``.

    Returns:
      ``(params, history)``: the best-by-``evaluate`` parameters (the final ones when
      ``evaluate`` is ``None`` or never finite) and the :class:`History`.

    Raises:
      FloatingPointError: the objective became NaN/inf (the step is named).
      ValueError: the checkpoint belongs to a different run, or none is intact.
    """
    steps, eval_every, checkpoint_every, patience = _check_run_args(
        objective, syn_params, optimizer, steps, eval_every, checkpoint_every, patience, evaluate, state, update)
    fp = _fingerprint(fingerprint, syn_params, eval_every, maximize, bool(evaluate_start))
    syn_params = _global_params(syn_params)
    ckpt = {"params": syn_params, "opt_state": optimizer.init(syn_params), "best_params": syn_params}
    mngr = _manager(checkpoint_dir) if checkpoint_dir is not None else None
    try:
        ckpt, meta = _resume(mngr, ckpt, fp, state)
        _drive(ckpt, meta, mngr, _make_step(objective, optimizer, project, update), batches, key, steps=steps,
               evaluate=evaluate, eval_every=eval_every, patience=patience, maximize=maximize, progress=progress,
               checkpoint_every=checkpoint_every, state=state, evaluate_start=bool(evaluate_start))
    finally:
        _close(mngr)
    best = evaluate is not None and meta["best_step"] >= 0
    return (ckpt["best_params"] if best else ckpt["params"]), _history(meta)


def _close(mngr) -> None:
    if mngr is not None:
        mngr.wait_until_finished()
        mngr.close()


def _resume(mngr, ckpt: dict, fp: dict, state: dict | None) -> tuple[dict, dict]:
    """The newest intact checkpoint with this fingerprint (refilling ``state`` in place),
    or the fresh ``ckpt`` and empty metadata."""
    restored = _restore(mngr, ckpt, fp) if mngr is not None else None
    if restored is None:
        return ckpt, _empty_meta(fp)
    if state is not None:
        state.clear()
        state.update(restored[1].get("user_state", {}))
    return restored


def _drive(ckpt, meta, mngr, step_fn, batches, key, *, steps, evaluate, eval_every, patience, maximize,
           checkpoint_every, progress, state, evaluate_start=False) -> None:
    """:func:`run`'s loop: updates, evaluations and checkpoints from ``meta['step']`` on."""
    pass_step = evaluate is not None and _wants_step(evaluate)
    bar = progress_bar(total=steps, initial=min(meta["step"], steps), disable=not progress, desc="distill")

    def evaluation():
        value = float(evaluate(ckpt["params"], meta["step"]) if pass_step else evaluate(ckpt["params"]))
        if _record_evaluation(meta, value, maximize):
            ckpt["best_params"] = ckpt["params"]

    def save():
        if mngr is not None:
            meta["user_state"] = _json_roundtrip(state or {})
            _save(mngr, ckpt, meta)

    try:
        if evaluate is not None and evaluate_start and meta["step"] == 0 and not meta["eval_steps"]:
            evaluation()
        while meta["step"] < steps and not meta["stopped_early"]:
            t = meta["step"]
            batch = batches(t) if callable(batches) else batches
            ckpt["params"], ckpt["opt_state"], loss = step_fn(
                ckpt["params"], ckpt["opt_state"], batch, jax.random.fold_in(key, t))
            loss = float(loss)
            if not np.isfinite(loss):
                raise FloatingPointError(f"objective: loss is {loss} at step {t}")
            meta["steps"].append(t)
            meta["losses"].append(loss)
            meta["step"] = t + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}")
            done, on_grid = meta["step"] == steps, meta["step"] % eval_every == 0
            if evaluate is not None and on_grid:
                evaluation()
                meta["stopped_early"] = patience is not None and meta["bad_evals"] >= patience
            if meta["step"] % checkpoint_every == 0 or done or meta["stopped_early"]:
                save()
            if evaluate is not None and done and not on_grid:
                # Off the evaluation grid: evaluate the final parameters too, but after
                # the checkpoint, so a longer run resumed from here matches a run that
                # never stopped (which would not have evaluated this step).
                evaluation()
    finally:
        bar.close()
