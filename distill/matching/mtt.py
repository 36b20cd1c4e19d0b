"""Matching Training Trajectories (MTT).

Cazenavette, Wang, Torralba, Efros & Zhu (CVPR 2022), "Dataset Distillation by
Matching Training Trajectories"; lecture 001 ("Trajectory matching": normalized
distance); dissertation §4.6.5, the MTT row of Table 4.8 (with Adam in the inner loop).

*Experts* ``θ*_0, θ*_1, …, θ*_E`` (one checkpoint per epoch) are trained on the real
data once and saved (:func:`expert_trajectories`, :func:`save_trajectories`). Each call
of the objective picks an expert and a start epoch ``t``, starts a *student* at
``θ*_t`` and trains it for N steps on the synthetic set with a learnable learning
rate α; the loss is the normalized distance to the expert M epochs later::

    L_MTT(S, α) = ‖θ̂_{t+N} − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖².

The student runs on :func:`distill.inner.train` (the one differentiable inner loop;
``mode`` picks unrolled / checkpointed / reverse-mode Adam — same gradients, different
memory, see ``benchmarks/matching.py``). The learnable α enters through a
reparametrization that keeps ``inner.train``'s optimizer fixed: the student trains φ
with Adam(learning rate 1) and the network sees ``θ = θ*_t + α (φ − θ*_t)``; since
Adam's step is invariant to the gradient's scale, this is exactly Adam on θ with
learning rate α (and ε/α), and α — an array the apply function closes over — gets
its gradient in every mode. α is stored as ``log α``. The student trains full-batch on
S (MTT samples minibatches of S; with ``ipc·C`` ≤ a few hundred we use all of it).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from distill import inner
from distill.checks import check_array, check_choice, check_float, check_index_range, check_int, check_key, check_path
from distill.matching._common import check_model, check_parametrization, tree_map, xent
from distill.parametrize import Parametrization

__all__ = [
    "MTTParams",
    "mtt_init",
    "expert_trajectories",
    "save_trajectories",
    "load_trajectories",
    "student",
    "mtt_loss",
]


class MTTParams(NamedTuple):
    """MTT's learnables: the synthetic-data parameters and ``log α`` (scalar)."""

    data: Any
    log_lr: jax.Array


def mtt_init(data_params: Any, lr: float) -> MTTParams:
    """``MTTParams(data_params, log(lr))`` — the initial student learning rate α₀ = ``lr``."""
    lr = check_float(lr, "lr", min_value=0.0, strict_min=True)
    return MTTParams(data_params, jnp.log(jnp.asarray(lr, jnp.result_type(float))))


def expert_trajectories(
    key: jax.Array,
    model: Any,
    x: jax.Array,
    y: jax.Array,
    *,
    n_experts: int,
    n_epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
) -> Any:
    """Train ``n_experts`` networks on the real data with minibatch Adam, keeping every epoch.

    Args:
      key: PRNG key (initialisations and shuffles).
      model: ``ModelFns`` classifier.
      x: ``(n, ...)`` real inputs.
      y: ``(n,)`` int labels.
      n_experts: number of trajectories (vmapped).
      n_epochs: E, epochs per trajectory.
      batch_size: minibatch size (the last partial batch of an epoch is dropped).
      lr: Adam learning rate.

    Returns:
      A params pytree whose leaves are ``(n_experts, E + 1, *leaf_shape)``: θ*_0 … θ*_E.
    """
    check_key(key)
    check_model(model)
    check_array(x, "x", kind="float", finite=True)
    check_array(y, "y", ndim=1, kind="int", shape=(x.shape[0],))
    n_experts = check_int(n_experts, "n_experts", min_value=1)
    n_epochs = check_int(n_epochs, "n_epochs", min_value=1)
    batch_size = check_int(batch_size, "batch_size", min_value=1, max_value=x.shape[0])
    lr = check_float(lr, "lr", min_value=0.0, strict_min=True)
    x, y = jnp.asarray(x), jnp.asarray(y)
    # Labels must index the model's outputs (shape-only evaluation, no compile).
    out = jax.eval_shape(lambda k, xb: model.apply(model.init(k, xb), xb), key, x[:1])
    check_index_range(y, "y", out.shape[-1], "label", of="the model's outputs")
    opt = optax.adam(lr)
    n_batches = x.shape[0] // batch_size

    def one_expert(k):
        k_init, k_shuf = jax.random.split(k)
        theta0 = model.init(k_init, x[:1])

        def epoch(carry, ke):
            theta, st = carry
            perm = jax.random.permutation(ke, x.shape[0])[: n_batches * batch_size].reshape(n_batches, batch_size)

            def step(c, idx):
                th, s = c
                g = jax.grad(lambda p: xent(model.apply(p, x[idx]), y[idx]))(th)
                u, s = opt.update(g, s, th)
                return (optax.apply_updates(th, u), s), None

            (theta, st), _ = jax.lax.scan(step, (theta, st), perm)
            return (theta, st), theta

        _, thetas = jax.lax.scan(epoch, (theta0, opt.init(theta0)), jax.random.split(k_shuf, n_epochs))
        return tree_map(lambda a0, a: jnp.concatenate([a0[None], a]), theta0, thetas)

    return jax.jit(jax.vmap(one_expert))(jax.random.split(key, n_experts))


def save_trajectories(path: Any, trajectories: Any) -> str:
    """Save expert trajectories with orbax (a directory; overwritten if present)."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(check_path(path))
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path, trajectories, force=True)
    return path


def load_trajectories(path: Any, like: Any | None = None) -> Any:
    """Load what :func:`save_trajectories` wrote (``like``: a pytree giving the structure/dtypes)."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(check_path(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"path: {path} is not a saved trajectory directory")
    with ocp.StandardCheckpointer() as ckpt:
        if like is None:
            return ckpt.restore(path)
        return ckpt.restore(path, tree_map(ocp.utils.to_shape_dtype_struct, like))


def student(
    model: Any,
    theta_start: Any,
    data: tuple[jax.Array, jax.Array],
    lr: jax.Array,
    *,
    steps: int,
    mode: str = "reverse_adam",
    reverse_every: int | str | None = "auto",
) -> Any:
    """θ̂_N: N full-batch Adam steps (learning rate ``lr``) on ``data`` from ``theta_start``.

    Differentiable in ``data`` and ``lr`` through :func:`distill.inner.train` in any
    ``mode`` (the scale reparametrization of the module docstring).
    """
    lr = jnp.asarray(lr)

    def apply(phi, xx):
        return model.apply(tree_map(lambda s, p: s + lr * (p - s), theta_start, phi), xx)

    phi = inner.train(
        apply, xent, theta_start, data, steps=steps, optimizer=inner.Adam(1.0), mode=mode, reverse_every=reverse_every
    )
    return tree_map(lambda s, p: s + lr * (p - s), theta_start, phi)


def _sq_dist(a: Any, b: Any) -> jax.Array:
    return sum(jnp.sum((x - y) ** 2) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=False))


def mtt_loss(
    syn_params: MTTParams,
    batch: Any,
    key: jax.Array,
    *,
    parametrization: Parametrization,
    model: Any,
    trajectories: Any,
    labels: jax.Array,
    syn_steps: int,
    expert_epochs: int,
    max_start_epoch: int,
    mode: str = "reverse_adam",
    reverse_every: int | str | None = "auto",
) -> jax.Array:
    """The trajectory-matching objective ``L_MTT`` (module docstring) for ``loop.run``.

    Args:
      syn_params: :class:`MTTParams` (data parameters and ``log α``).
      batch: unused (the real data enter through ``trajectories``); pass ``None``.
      key: PRNG key (expert, start epoch, materialization).
      parametrization: how ``syn_params.data`` become inputs ``(n, ...)``.
      model: ``ModelFns`` of the experts.
      trajectories: expert params with leaves ``(n_experts, E + 1, ...)``.
      labels: ``(n,)`` int or ``(n, C)`` soft labels of the synthetic inputs.
      syn_steps: N, student steps.
      expert_epochs: M, how many expert epochs ahead the target is.
      max_start_epoch: the start epoch t is uniform in ``0..max_start_epoch``
        (needs ``max_start_epoch + M ≤ E``).
      mode, reverse_every: :func:`distill.inner.train` settings.

    Returns:
      Scalar ``‖θ̂_{t+N} − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖²``.
    """
    check_key(key)
    if not isinstance(syn_params, MTTParams):
        raise TypeError(f"syn_params: expected MTTParams (see mtt_init), got {type(syn_params).__name__}")
    check_parametrization(parametrization)
    check_model(model)
    syn_steps = check_int(syn_steps, "syn_steps", min_value=1)
    expert_epochs = check_int(expert_epochs, "expert_epochs", min_value=1)
    max_start_epoch = check_int(max_start_epoch, "max_start_epoch", min_value=0)
    check_choice(mode, "mode", inner.MODES)
    leaves = jax.tree_util.tree_leaves(trajectories)
    if not leaves or any(a.ndim < 2 for a in leaves):
        raise ValueError("trajectories: expected params with leaves (n_experts, E + 1, ...), got none or rank < 2")
    n_experts, n_points = leaves[0].shape[:2]
    if max_start_epoch + expert_epochs > n_points - 1:
        raise ValueError(
            f"max_start_epoch: expected max_start_epoch + expert_epochs <= {n_points - 1} (the trajectories' epochs), "
            f"got {max_start_epoch} + {expert_epochs}"
        )
    k_e, k_t, k_mat = jax.random.split(key, 3)
    e = jax.random.randint(k_e, (), 0, n_experts)
    t = jax.random.randint(k_t, (), 0, max_start_epoch + 1)
    start = tree_map(lambda a: a[e, t], trajectories)
    target = tree_map(lambda a: a[e, t + expert_epochs], trajectories)
    x_syn = parametrization.materialize(syn_params.data, k_mat)
    check_array(labels, "labels", ndim=(1, 2), shape=(x_syn.shape[0],) + tuple(labels.shape[1:]))
    theta = student(model, start, (x_syn, labels), jnp.exp(syn_params.log_lr), steps=syn_steps, mode=mode, reverse_every=reverse_every)
    return _sq_dist(theta, target) / _sq_dist(start, target)
