"""Scenarios run on every process of a multi-controller job (see ``mh_harness``).

Each scenario takes a :class:`Context` and returns a dict of arrays. Inputs come from
seeded numpy generators, so every process builds the same global data (except where a
scenario deliberately gives each process only its own rows, via
``distill.parallel.shard_rows``). A key ending in ``_plain`` holds the same quantity
computed without a mesh on this process, for a check that does not need the reference.
The worker runs with float64 enabled, so tolerances can be tight.
"""

from __future__ import annotations

import functools
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from distill import loop, parallel


class Context(NamedTuple):
    """What a scenario gets: the global mesh and a folder common to all processes."""

    mesh: Mesh
    shared_dir: str


def interactions(n_users: int = 24, n_items: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A binary (train, val) user × item pair with every user having train and val items."""
    rng = np.random.default_rng(seed)
    full = (rng.random((n_users, n_items)) < 0.3).astype(np.float64)
    full[np.arange(n_users), np.arange(n_users) % n_items] = 1.0
    full[np.arange(n_users), (np.arange(n_users) + 7) % n_items] = 1.0
    held = (rng.random((n_users, n_items)) < 0.3) & (full > 0)
    held[np.arange(n_users), (np.arange(n_users) + 7) % n_items] = True
    held[np.arange(n_users), np.arange(n_users) % n_items] = False
    return full * ~held, full * held


def matrix(n_rows: int, n_cols: int = 5, seed: int = 1) -> np.ndarray:
    """The global matrix of the input-pipeline scenario (every process can rebuild it)."""
    return np.random.default_rng(seed).normal(size=(n_rows, n_cols))


def _row_loss(rows, wts, w):
    return jnp.sum(wts * jnp.sum(jnp.tanh(rows @ w) ** 2, axis=1))


def shard_rows(ctx: Context) -> dict:
    """Each process loads only its rows; the global array and row-wise results match."""
    out = {"process": np.array([jax.process_index(), jax.process_count(), jax.local_device_count(),
                                jax.device_count()])}
    w = np.random.default_rng(2).normal(size=(5, 3))
    for n in (16, 13):  # a multiple of the 8 devices (stays sharded), and ragged
        start, stop = parallel.process_rows(n, ctx.mesh)
        local = matrix(n)[start:stop]  # the only rows this process ever holds
        x = parallel.shard_rows(local, ctx.mesh, n)
        out[f"range_{n}"] = np.array([start, stop])
        out[f"x_{n}"] = x
        out[f"sharded_{n}"] = np.array(len(x.sharding.device_set) == ctx.mesh.size and not x.is_fully_replicated)
        out[f"map_{n}"] = jax.jit(lambda x: parallel.map_rows(lambda r, w: jnp.tanh(r @ w), x, w, mesh=ctx.mesh))(x)
        # A global array must be an argument of jit, never a closed-over constant.
        loss = lambda w, x: parallel.sum_rows(_row_loss, x, w, mesh=ctx.mesh)
        out[f"loss_{n}"], out[f"grad_{n}"] = jax.jit(jax.value_and_grad(loss))(w, x)
    return out


def ntk(ctx: Context) -> dict:
    """∞-AE's NTK: the row-sharded Gram and ``K @ rhs`` in blocks (host inputs, replicated)."""
    from models import kernels

    x, _ = interactions()
    n = x.shape[0]
    k = kernels.fc_relu_blocked(x, depth=2, block_size=2, mesh=ctx.mesh)
    rhs = np.random.default_rng(3).normal(size=(n, 4))
    applied = kernels.fc_relu_apply(x[:11], x, rhs, depth=2, block_size=3, mesh=ctx.mesh)
    plain = kernels.fc_relu(x, depth=2)
    return {"ntk": k.ntk, "nngp": k.nngp, "apply": applied,
            "ntk_plain": plain.ntk, "nngp_plain": plain.nngp, "apply_plain": plain.ntk[:11] @ rhs}


def ntk_sharded_input(ctx: Context) -> dict:
    """The NTK Gram of a matrix whose rows no process holds in full (from ``shard_rows``).

    Returns ``{"error": message}`` instead when the library cannot take such an array
    (its value checks read the whole array on one process).
    """
    from models import kernels

    x, _ = interactions()
    n = x.shape[0]
    start, stop = parallel.process_rows(n, ctx.mesh)
    x_sharded = parallel.shard_rows(x[start:stop], ctx.mesh, n)
    try:
        k = kernels.fc_relu_blocked(x_sharded, x, depth=2, mesh=ctx.mesh)
    except RuntimeError as e:  # every process raises alike, before any collective
        return {"error": np.array(str(e).splitlines()[0])}
    return {"ntk": k.ntk, "ntk_plain": kernels.fc_relu(x, depth=2).ntk}


def select_lambda(ctx: Context) -> dict:
    """``models.infinite_ae.select_lambda`` with the Gram rows sharded over the mesh."""
    from models import infinite_ae

    train, val = interactions()
    kw = dict(lams=(0.3, 3.0, 30.0), metric="HR@10", batch_size=8)
    search = infinite_ae.select_lambda(train, val, mesh=ctx.mesh, **kw)
    plain_search = infinite_ae.select_lambda(train, val, **kw)
    model, plain = search.model, plain_search.model
    return {"alpha": model.alpha, "values": np.asarray(search.values), "best_lam": np.asarray(search.best_lam),
            "alpha_plain": plain.alpha, "values_plain": np.asarray(plain_search.values)}


def distill_cf(ctx: Context) -> dict:
    """Three Distill-CF steps: real users and the Gumbel sampling sharded over the mesh."""
    from distill import distill_cf as dcf

    train, val = interactions()
    settings = dcf.Settings(n_syn_users=5, steps=3, n_samples=6, tau=1.0, eval_every=3, lams=(1.0, 10.0),
                            metric="HR@10")
    res = dcf.distill(jax.random.key(0), dcf.Data(train, val), settings, mesh=ctx.mesh)
    return {"logits": res.params, "summary": res.data, "losses": np.asarray(res.history.losses),
            "eval_values": np.asarray(res.history.eval_values)}


def distill_cf_resume(ctx: Context) -> dict:
    """Distill-CF checkpointed to a folder shared by all processes: 2 steps, resumed to 4.

    Returns ``{"error": message}`` when orbax refuses a checkpoint leaf that lives on one
    process's device only (a host-local array, not a global one).
    """
    from distill import distill_cf as dcf

    train, val = interactions()
    settings = dcf.Settings(n_syn_users=5, n_samples=6, tau=1.0, eval_every=2, checkpoint_every=2,
                            lams=(1.0, 10.0), metric="HR@10")
    key, data = jax.random.key(0), dcf.Data(train, val)
    ckpt = os.path.join(ctx.shared_dir, "dcf")
    try:
        dcf.distill(key, data, settings._replace(steps=2), mesh=ctx.mesh, checkpoint_dir=ckpt)
        res = dcf.distill(key, data, settings._replace(steps=4), mesh=ctx.mesh, checkpoint_dir=ckpt)
    except ValueError as e:  # raised alike on every process, inside orbax's save
        if "host local" not in str(e):
            raise
        return {"error": np.array(str(e)[:120])}
    full = dcf.distill(key, data, settings._replace(steps=4), mesh=ctx.mesh)
    return {"logits": res.params, "losses": np.asarray(res.history.losses),
            "full_logits": full.params, "full_losses": np.asarray(full.history.losses)}


def _tanh_embed(hidden: int = 6):
    from models.model_fns import ModelFns

    def init(key, x):
        return {"w": 0.5 * jax.random.normal(key, (int(np.prod(x.shape[1:])), hidden), x.dtype)}

    def apply(p, x, *, train=False):
        return jnp.tanh(x.reshape((x.shape[0], -1)) @ p["w"])

    return ModelFns(init, apply)


def dm(ctx: Context) -> dict:
    """The DM objective and its gradient, classes spread over the mesh (``sum_rows``)."""
    from distill.matching import dm as dm_module

    rng = np.random.default_rng(4)
    n_classes, ipc, b = 5, 2, 6  # 5 classes over 8 devices: padding classes
    real = jnp.asarray(rng.normal(size=(n_classes, b, 4, 4, 1)))
    syn = jnp.asarray(rng.normal(size=(n_classes * ipc, 4, 4, 1)))
    obj = functools.partial(dm_module.objective, settings=dm_module.Settings(ipc=ipc, embed=_tanh_embed()))
    key = jax.random.key(5)
    value, grad = jax.jit(jax.value_and_grad(functools.partial(obj, mesh=ctx.mesh)))(syn, real, key)
    value_plain, grad_plain = jax.jit(jax.value_and_grad(obj))(syn, real, key)
    return {"value": value, "grad": grad, "value_plain": value_plain, "grad_plain": grad_plain}


def el2n(ctx: Context) -> dict:
    """``selection.scores.el2n`` over a two-model ensemble, examples sharded over the mesh."""
    from selection import scores

    rng = np.random.default_rng(6)
    x = rng.normal(size=(21, 7))
    y = rng.integers(0, 4, size=21).astype(np.int32)
    params = [{"w": rng.normal(size=(7, 4))}, {"w": rng.normal(size=(7, 4))}]
    apply = lambda p, x: x @ p["w"]
    return {"el2n": scores.el2n(apply, params, (x, y), mesh=ctx.mesh, block_size=2),
            "el2n_plain": scores.el2n(apply, params, (x, y))}


def inverse_auc(ctx: Context) -> dict:
    """``models.mf.inverse_auc`` with the positives sharded over the mesh."""
    from models import mf

    p = mf.init(jax.random.key(0), 7, 11, dim=3, scale=1.0)
    u = np.arange(29) % 7
    i = (np.arange(29) * 3) % 11  # 29 rows over 8 devices: the padding path
    key = jax.random.key(2)
    return {"iauc": mf.inverse_auc(key, p, u, i, n_negatives=4, mesh=ctx.mesh),
            "iauc_plain": mf.inverse_auc(key, p, u, i, n_negatives=4)}


def checkpoint_resume(ctx: Context) -> dict:
    """``loop.run`` with a ``sum_rows`` objective: killed after 4 steps, resumed to 8.

    The parameters are replicated over the global mesh (committed), so orbax writes and
    restores them as global arrays; all processes use the same checkpoint folder.
    """
    x = jnp.asarray(matrix(16, 3, seed=7))

    def objective(p, batch, key):
        return parallel.sum_rows(lambda rows, wts, c: jnp.sum(wts * jnp.sum((rows - c) ** 2, axis=1)),
                                 batch, p["w"], mesh=ctx.mesh)

    def objective_plain(p, batch, key):
        return jnp.sum((batch - p["w"]) ** 2)

    kw = dict(key=jax.random.key(0), progress=False, checkpoint_every=2)
    plain, _ = loop.run(objective_plain, {"w": jnp.zeros(3)}, optax.adam(0.1), x, steps=8, **kw)
    init = parallel.replicate({"w": jnp.zeros(3)}, ctx.mesh)
    full, full_hist = loop.run(objective, init, optax.adam(0.1), x, steps=8, **kw)
    ckpt = os.path.join(ctx.shared_dir, "ckpt")
    loop.run(objective, init, optax.adam(0.1), x, steps=4, checkpoint_dir=ckpt, **kw)
    saved = loop.latest_step(ckpt)
    resumed, hist = loop.run(objective, init, optax.adam(0.1), x, steps=8, checkpoint_dir=ckpt, **kw)
    extra = {}
    try:  # host (uncommitted) initial parameters, as on one process
        host, _ = loop.run(objective, {"w": jnp.zeros(3)}, optax.adam(0.1), x, steps=8,
                           checkpoint_dir=os.path.join(ctx.shared_dir, "host"), **kw)
        extra["host_init"] = host["w"]
    except ValueError as e:  # raised alike on every process, inside orbax's save
        if "host local" not in str(e):
            raise
        extra["host_init_error"] = np.array(str(e)[:120])
    return {**extra, "full": full["w"], "resumed": resumed["w"], "full_plain": plain["w"], "losses": np.asarray(hist.losses),
            "full_losses": np.asarray(full_hist.losses), "saved_step": np.asarray(saved)}


def _best_of(fn, *args, repeats: int) -> np.ndarray:
    """``[wall, cpu]`` seconds of the fastest call: CPU time (this process, all threads)
    is what the step costs without the other work on the machine; wall time includes it."""
    jax.block_until_ready(fn(*args))  # compile and warm up
    best = np.array([np.inf, np.inf])
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        best = np.minimum(best, [time.perf_counter() - t0, time.process_time() - c0])
    return best


def weak_scaling(ctx: Context) -> dict:
    """Step times at a fixed number of rows *per process* (``MH_ROWS``, default 4096).

    Two workloads, each process loading only its own rows with ``shard_rows``: the
    value and gradient of a ``sum_rows`` loss (an MLP layer per row, Distill-CF's and
    the matching methods' real-data term), and ∞-AE's prediction ``NTK(Q, S) α`` with
    queries ``Q`` row-sharded and a fixed support ``S`` of 512 users (``map_rows``).
    Ideal weak scaling keeps both times constant as processes are added. Each time is
    ``[wall, cpu]`` seconds of the fastest of ``MH_REPEATS`` calls.
    """
    from models import kernels

    rows = int(os.environ.get("MH_ROWS", "4096"))
    repeats = int(os.environ.get("MH_REPEATS", "5"))
    n = rows * jax.process_count()
    start, stop = parallel.process_rows(n, ctx.mesh)
    rng = np.random.default_rng(100 + jax.process_index())  # each process's own data
    x = parallel.shard_rows(rng.normal(size=(stop - start, 256)), ctx.mesh, n)
    w = np.random.default_rng(0).normal(size=(256, 256)) / 16
    grad = jax.jit(jax.value_and_grad(lambda w, x: parallel.sum_rows(_row_loss, x, w, mesh=ctx.mesh)))
    q = parallel.shard_rows((rng.random((stop - start, 512)) < 0.05).astype(np.float64), ctx.mesh, n)
    support = (np.random.default_rng(1).random((512, 512)) < 0.05).astype(np.float64)
    alpha = np.random.default_rng(2).normal(size=(512, 64))
    predict = jax.jit(lambda q: parallel.map_rows(
        lambda r, s, a: kernels.fc_relu(r, s).ntk @ a, q, support, alpha, mesh=ctx.mesh))
    return {"rows_per_process": np.array(rows), "sum_rows_grad_s": _best_of(grad, w, x, repeats=repeats),
            "ntk_predict_s": _best_of(predict, q, repeats=repeats)}


def hang(ctx: Context) -> dict:
    """Never returns on its own: for the test of the harness's timeout."""
    time.sleep(3600)
    return {}


# Cheap enough for the default test run (one 2-process job), and the longer ones.
FAST = ("shard_rows", "ntk", "ntk_sharded_input", "dm", "el2n", "inverse_auc", "checkpoint_resume")
SLOW = ("select_lambda", "distill_cf", "distill_cf_resume")
ALL = FAST + SLOW
