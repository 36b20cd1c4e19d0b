"""Matching Training Trajectories (MTT).

Cazenavette, Wang, Torralba, Efros & Zhu (CVPR 2022), "Dataset Distillation by
Matching Training Trajectories"; lecture 001 ("Trajectory matching": normalized
distance); dissertation §4.6.5, the MTT row of Table 4.8 (with Adam in the inner loop).

*Experts* ``θ*_0, θ*_1, …, θ*_E`` (one checkpoint per epoch) are trained on the real
data once (:func:`expert_trajectories`, through :func:`distill.train.scan` vmapped over
the experts) and can be kept with :mod:`distill.trajectories`. Each call
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

The method in the one shape: ``Settings`` / ``Data`` / ``Result`` / :func:`init` /
:func:`sample_batch` / :func:`objective` / :func:`distill`. The real data enter the
objective only through the experts: its batch is :class:`Batch` ``(experts, x_like)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from distill import inner, loop, train
from distill.checks import check_choice, check_float, check_index_range, check_int, check_key
from distill.matching import common
from distill.matching.common import Latent, tree_map, xent
from models.model_fns import ModelFns, n_outputs

__all__ = [
    "Settings",
    "Data",
    "Batch",
    "MTTParams",
    "Result",
    "init",
    "expert_trajectories",
    "sample_batch",
    "objective",
    "distill",
    "student",
]


class Settings(NamedTuple):
    """MTT settings (hashable: a static ``jit`` argument).

    Attributes:
      ipc: synthetic images per class (the benchmark's IPC 10).
      steps: outer Adam updates (the matching benchmark's 150).
      lr: outer Adam learning rate of the images and ``log α`` (the benchmark's 0.01).
      model: ``ModelFns`` classifier of experts and student; ``None`` is an MLP 128-128
        with C logits (the benchmark's; the paper's ConvNet is ``models.convnet.convnet``).
      images: ``"pixels"`` or a :class:`distill.matching.Latent`.
      student_lr: α₀, the initial learnable student learning rate (the benchmark's 1e-3,
        the experts' Adam rate).
      syn_steps: N, student Adam steps per call (the benchmark's 20).
      expert_epochs: M, how many expert epochs ahead the target is (the benchmark's 2, as MTT).
      max_start_epoch: the start epoch is uniform in ``0..max_start_epoch``; ``None`` is
        ``expert_train_epochs − expert_epochs`` (the benchmark's).
      n_experts, expert_train_epochs, expert_batch_size, expert_lr: the experts
        (:func:`expert_trajectories`): 5 × 10 epochs of minibatch Adam (128, 1e-3), the
        benchmark's.
      mode, reverse_every: :func:`distill.inner.train` settings of the student (same
        gradients, different memory; ``inner.train``'s defaults).
      eval_every: updates between ``evaluate`` calls (``loop.run``'s 50).
    """

    ipc: int = 10
    steps: int = 150
    lr: float = 0.01
    model: ModelFns | None = None
    images: str | Latent = "pixels"
    student_lr: float = 1e-3
    syn_steps: int = 20
    expert_epochs: int = 2
    max_start_epoch: int | None = None
    n_experts: int = 5
    expert_train_epochs: int = 10
    expert_batch_size: int = 128
    expert_lr: float = 1e-3
    mode: str = "reverse_adam"
    reverse_every: int | str | None = "auto"
    eval_every: int = 50


class Data(NamedTuple):
    """The real images MTT distils and, optionally, the experts trained on them.

    Attributes:
      x: float ``(n, H, W, C)`` standardised images.
      y: int ``(n,)`` labels in ``0..n_classes-1``.
      n_classes: C (≥ 2).
      experts: params with leaves ``(n_experts, E + 1, ...)`` (:func:`expert_trajectories`,
        or :func:`distill.trajectories.load`); ``None``: trained by :func:`distill`.
    """

    x: Any
    y: Any
    n_classes: int
    experts: Any = None


class Batch(NamedTuple):
    """The objective's batch: the expert trajectories and ``x_like``, an empty
    ``(0, H, W, C)`` array giving the image shape (for the latent parametrization)."""

    experts: Any
    x_like: jax.Array


class MTTParams(NamedTuple):
    """MTT's learnables: the synthetic-image parameters and ``log α`` (scalar)."""

    data: Any
    log_lr: jax.Array


class Result(NamedTuple):
    """What :func:`distill` returns: the learned :class:`MTTParams` (best by ``evaluate``
    when given), the synthetic set ``(x_syn (C·ipc, ...), y_syn (C·ipc,) int)``, the
    settings, the History, and the learned student learning rate α."""

    params: MTTParams
    data: tuple[np.ndarray, np.ndarray]
    settings: Settings
    history: loop.History
    student_lr: float


def _check_settings(settings: Any) -> Settings:
    common.check_base_settings(settings, Settings)
    common.check_model(settings.model, "settings.model")
    check_float(settings.student_lr, "settings.student_lr", min_value=0.0, strict_min=True)
    check_int(settings.syn_steps, "settings.syn_steps", min_value=1)
    check_int(settings.expert_epochs, "settings.expert_epochs", min_value=1)
    check_int(settings.n_experts, "settings.n_experts", min_value=1)
    check_int(settings.expert_train_epochs, "settings.expert_train_epochs", min_value=1)
    check_int(settings.expert_batch_size, "settings.expert_batch_size", min_value=1)
    check_float(settings.expert_lr, "settings.expert_lr", min_value=0.0, strict_min=True)
    check_choice(settings.mode, "settings.mode", inner.MODES)
    if settings.max_start_epoch is not None:
        check_int(settings.max_start_epoch, "settings.max_start_epoch", min_value=0)
    return settings


def _check_data(data: Any, ipc: int | None = None) -> Data:
    if not isinstance(data, Data):
        raise TypeError(f"data: expected a distill.matching.mtt.Data(x, y, n_classes, experts), got {type(data).__name__}")
    plain = common.check_data(common.Data(data.x, data.y, data.n_classes), ipc)
    return Data(plain.x, plain.y, plain.n_classes, data.experts)


def init(key: jax.Array, data: Data, settings: Settings = Settings(), *, start: Any = None) -> MTTParams:
    """``MTTParams``: the initial images (``ipc`` random real images per class, ``start``,
    or the latent factors for ``images=Latent``) and ``log settings.student_lr``."""
    settings = _check_settings(settings)
    data = _check_data(data, settings.ipc)
    images = common.init_images(key, common.Data(data.x, data.y, data.n_classes), settings.ipc, settings.images, start)
    return MTTParams(images, jnp.log(jnp.asarray(settings.student_lr, jnp.result_type(float))))


def expert_trajectories(key: jax.Array, data: Data, settings: Settings = Settings()) -> Any:
    """Train ``settings.n_experts`` networks on the real data with minibatch Adam, keeping every epoch.

    Each expert ``k`` (``split(key, n_experts)``) splits into (init, shuffle) keys; epoch
    ``e`` visits the rows in the order of ``permutation(split(k_shuffle, E)[e], n)``, in
    ``n // expert_batch_size`` minibatches (the last partial one dropped), each one
    :func:`distill.train.update` (Adam, ``expert_lr``). The experts are one
    :func:`distill.train.scan` program vmapped over experts.

    Returns:
      A params pytree whose leaves are ``(n_experts, E + 1, *leaf_shape)``: θ*_0 … θ*_E,
      ready for :func:`distill.trajectories.save`.
    """
    check_key(key)
    settings = _check_settings(settings)
    data = _check_data(data)
    check_int(settings.expert_batch_size, "settings.expert_batch_size", max_value=data.x.shape[0])
    model = common.classifier(settings.model, data.n_classes)
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    # Labels must index the model's outputs (shape-only evaluation, no compile).
    check_index_range(y, "data.y", n_outputs(model.apply, jax.eval_shape(model.init, key, x[:1]), x), "label",
                      of="the model's outputs")
    opt = optax.adam(settings.expert_lr)
    bs, n_epochs = settings.expert_batch_size, settings.expert_train_epochs
    n_batches = x.shape[0] // bs
    loss = lambda p, idx, k: xent(model.apply(p, x[idx]), y[idx])  # noqa: E731

    def one_expert(k):
        k_init, k_shuf = jax.random.split(k)
        theta0 = model.init(k_init, x[:1])

        def epoch(state, ke):
            perm = jax.random.permutation(ke, x.shape[0])[: n_batches * bs].reshape(n_batches, bs)
            state, _ = train.scan(state, perm, ke, loss=loss, optimizer=opt)
            return state, state.params

        _, thetas = jax.lax.scan(epoch, train.init(theta0, opt), jax.random.split(k_shuf, n_epochs))
        return tree_map(lambda a0, a: jnp.concatenate([a0[None], a]), theta0, thetas)

    return jax.jit(jax.vmap(one_expert))(jax.random.split(key, settings.n_experts))


def sample_batch(key: jax.Array, data: Data, settings: Settings = Settings()) -> Batch:
    """:class:`Batch` ``(experts, x_like)``: ``data.experts``, or experts trained now with
    :func:`expert_trajectories` from ``key`` when ``data.experts`` is ``None`` (the
    expert and start epoch of a step are drawn by :func:`objective` from its key)."""
    settings = _check_settings(settings)
    data = _check_data(data)
    experts = data.experts if data.experts is not None else expert_trajectories(key, data, settings)
    return Batch(experts, jnp.zeros((0,) + data.x.shape[1:], data.x.dtype))


def student(
    model: ModelFns,
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


def _check_experts(experts: Any, settings: Settings) -> tuple[int, int]:
    """``(n_experts, max_start_epoch)`` of trajectories with leaves ``(n_experts, E + 1, ...)``."""
    leaves = jax.tree_util.tree_leaves(experts)
    if not leaves or any(a.ndim < 2 for a in leaves):
        raise ValueError("batch.experts: expected params with leaves (n_experts, E + 1, ...), got none or rank < 2")
    n_experts, n_points = leaves[0].shape[:2]
    max_start = settings.max_start_epoch
    if max_start is None:
        max_start = n_points - 1 - settings.expert_epochs
    if max_start < 0 or max_start + settings.expert_epochs > n_points - 1:
        raise ValueError(
            f"settings.max_start_epoch: expected max_start_epoch + expert_epochs <= {n_points - 1} (the experts' "
            f"epochs), got {max_start} + {settings.expert_epochs}"
        )
    return n_experts, max_start


def objective(syn_params: MTTParams, batch: Batch, key: jax.Array, settings: Settings = Settings(), *,
              mesh: Any = None) -> jax.Array:
    """The trajectory-matching objective ``L_MTT`` (module docstring), pure and jittable.

    Args:
      syn_params: :class:`MTTParams` (image parameters and ``log α``).
      batch: :class:`Batch` (the experts, leaves ``(n_experts, E + 1, ...)``, and the image shape).
      key: PRNG key (expert, start epoch, materialization).
      settings: :class:`Settings`.
      mesh: unused (the student trains on the whole synthetic set on one device).

    Returns:
      Scalar ``‖θ̂_{t+N} − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖²``.
    """
    del mesh
    check_key(key)
    settings = _check_settings(settings)
    if not isinstance(syn_params, MTTParams):
        raise TypeError(f"syn_params: expected MTTParams (see init), got {type(syn_params).__name__}")
    if not isinstance(batch, Batch):
        raise TypeError(f"batch: expected an mtt.Batch(experts, x_like) (see sample_batch), got {type(batch).__name__}")
    n_experts, max_start = _check_experts(batch.experts, settings)
    k_e, k_t, k_mat = jax.random.split(key, 3)
    e = jax.random.randint(k_e, (), 0, n_experts)
    t = jax.random.randint(k_t, (), 0, max_start + 1)
    start = tree_map(lambda a: a[e, t], batch.experts)
    target = tree_map(lambda a: a[e, t + settings.expert_epochs], batch.experts)
    n = jax.tree_util.tree_leaves(syn_params.data)[0].shape[0]
    if n % settings.ipc:
        raise ValueError(f"syn_params: expected a multiple of settings.ipc={settings.ipc} images, got {n}")
    x_syn = common.parametrization(settings.images, n, tuple(batch.x_like.shape[1:])).materialize(syn_params.data, k_mat)
    labels = common.syn_labels(n // settings.ipc, settings.ipc)
    model = common.classifier(settings.model, n // settings.ipc)
    theta = student(model, start, (x_syn, labels), jnp.exp(syn_params.log_lr), steps=settings.syn_steps,
                    mode=settings.mode, reverse_every=settings.reverse_every)
    return _sq_dist(theta, target) / _sq_dist(start, target)


def distill(
    key: jax.Array,
    data: Data,
    settings: Settings = Settings(),
    *,
    mesh: Any = None,
    checkpoint_dir: Any = None,
    progress: bool = False,
    evaluate: Any = None,
    init_params: Any = None,
) -> Result:
    """Distil ``data`` into ``settings.ipc`` images per class (and α) with MTT.

    Args:
      key: PRNG key. Step ``t``'s objective key is ``fold_in(key, t)``; the initial images
        and (when ``data.experts`` is ``None``) the experts come from
        :func:`distill.matching.common.data_keys`.
      data: :class:`Data`; without experts they are trained first (:func:`expert_trajectories`).
      settings: :class:`Settings`.
      mesh: unused (MTT's student runs on one device).
      checkpoint_dir, progress, evaluate, init_params: as :func:`distill.matching.dc.distill`.

    Returns:
      :class:`Result`.
    """
    settings = _check_settings(settings)
    data = _check_data(data, settings.ipc)
    if data.experts is None:  # trained here, from the batch key (as sample_batch would)
        data = data._replace(experts=expert_trajectories(common.data_keys(key)[1], data, settings))
    experts = [loop.array_signature(a) for a in jax.tree_util.tree_leaves(data.experts)]
    params, history = common.distill_images(
        (init, sample_batch, objective), key, data, settings, mesh=mesh, checkpoint_dir=checkpoint_dir,
        progress=progress, evaluate=evaluate, init_params=init_params, batches=None, fixed_batch=True,
        fingerprint_extra={"experts": experts})
    x_syn = common.synthetic_images(key, params.data, data, settings)
    labels = np.asarray(common.syn_labels(data.n_classes, settings.ipc))
    return Result(params, (x_syn, labels), settings, history, float(jnp.exp(params.log_lr)))
