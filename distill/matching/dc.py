"""Dataset Condensation by gradient matching (DC; DSA with Siamese augmentation).

Zhao, Mopuri & Bilen (ICLR 2021), "Dataset Condensation with Gradient Matching"; with
``dsa`` set, Zhao & Bilen (ICML 2021), "… with Differentiable Siamese Augmentation".
Lecture 001 ("Gradient matching"); dissertation §4.6.5, the DC row of Table 4.8.

The synthetic set S (``ipc`` images per class, class-grouped) should produce the same
training gradients as the real data along the trajectory of a network trained on S::

    L_DC(S) = E_{θ₀} [ (1/T) Σ_{t<T} Σ_c D( ∇_θ ℓ(θ_t; B_c^real), ∇_θ ℓ(θ_t; S_c) ) ],
    θ_{t+1} = SGD_η^K(θ_t; sg(S))                 (sg = stop-gradient: S is the data, not θ)

where ``SGD_η^K`` is K = ``net_steps`` full-batch SGD steps of learning rate η on the
cross-entropy of S (DC's ``inner_loop``; K = 1 by default),

with the per-class real batches ``B_c``, cross-entropy ``ℓ`` and the layer-wise distance
(DC's Eq. 5)

    D(G, G') = Σ_layers Σ_{i ∈ output channels} ( 1 − ⟨G_i, G'_i⟩ / (‖G_i‖ ‖G'_i‖ + 10⁻⁶) ),

where ``G_i`` is the slice of a layer's weight gradient feeding output channel ``i``
(flax kernels keep output channels last: a conv kernel ``(kh, kw, in, out)`` gives
``out`` vectors of length ``kh·kw·in``). Like the paper, 1-d parameters (biases, norm
scales) are skipped unless ``include_bias``.

The DC algorithm alternates data and network updates; as a pure objective for
``loop.run`` each call draws a fresh θ₀ and sums the distance over the ``inner_steps``
points of the trajectory (the network update uses the current S without gradient), so
one outer step is one DC outer iteration with the data updates of its inner loop
accumulated; ``Settings(interleave=True)`` applies them one by one, as DC's Algorithm 1
(:func:`interleaved_step`). Per-class terms are summed with :func:`distill.parallel.sum_rows`: with a
``mesh`` the classes are spread over the devices.

The method in the one shape: ``Settings`` / ``Data`` / ``Result`` / :func:`init` /
:func:`sample_batch` / :func:`objective` / :func:`distill`; DSA is ``Settings(dsa=...)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from distill import parallel
from distill.checks import check_array, check_choice, check_float, check_int, check_key
from distill.matching import augment, common
from distill.matching.common import Data, Latent, tree_map, xent
from models.model_fns import ModelFns

__all__ = ["Settings", "Data", "Result", "init", "outer_optimizer", "batch_size", "sample_batch", "objective",
           "interleaved_step", "distill", "layer_distance", "match_distance"]


class Settings(NamedTuple):
    """DC / DSA settings (hashable: a static ``jit`` argument).

    Attributes:
      ipc: synthetic images per class (the benchmark's IPC 10).
      steps: outer updates of the synthetic images (the matching benchmark's 150).
      lr: outer learning rate (the benchmark's Adam 0.01 on pixels; 0.05 for ``Latent``;
        DC's code: SGD 0.1 with ``outer_momentum=0.5``).
      model: ``ModelFns`` classifier whose gradients are matched, built for C classes by
        the caller; ``None`` is an MLP 128-128 with C logits (the benchmark's default
        model: on CPU a ConvNet step costs 20-50× an MLP step; the papers use
        ``models.convnet.convnet``).
      images: ``"pixels"`` (initialised from random real images) or a
        :class:`distill.matching.Latent` (Farzi's factorization, random init).
      inner_steps: T, trajectory points per objective call (the benchmark's 10; DC's
        ``outer_loop``, 10 at IPC 10, whose image updates are summed into one unless
        ``interleave``).
      inner_lr: η, the network's SGD learning rate on S (DC's 0.01).
      net_steps: K, full-batch SGD steps of the network on S between two trajectory
        points (DC's ``inner_loop``). The default 1 is DC's schedule at IPC 1 and that of
        the recorded runs without ``_net`` in their name; DC's code takes 50 at IPC 10 (10
        at IPC 50), so its later points are networks trained on S for hundreds of steps.
        The last point needs no network update, so one objective call costs
        ``inner_steps`` matches and ``(inner_steps − 1)·net_steps`` network steps. The
        network trains on un-augmented S unless ``net_augment``.
      net_momentum: μ of the network's SGD on S, PyTorch's form ``v ← μv + g, θ ← θ − ηv``,
        the buffer kept across the trajectory points of one outer step as DC's code keeps
        its ``optimizer_net``: μ = 0.5 in the code of the DC paper (2021-01 to 2021-03
        releases), plain SGD from the DSA release on. The default 0 is plain SGD, as in
        DSA's code; with ``net_steps=50``, μ = 0.5 roughly doubles how far the later
        points are trained, and on Fashion-MNIST IPC 10 it did not help (78.0 against
        78.4 after 30 interleaved steps).
      net_augment: with ``dsa``, each network step on S trains on every image augmented by
        its own draw (:func:`augment.augment_each`), as DSA's code trains its network between
        matches; the default ``False`` trains on un-augmented S (DC's code). On
        Fashion-MNIST IPC 10 it changed nothing (77.8 against 77.9 after 20 interleaved
        steps) and cost 17 % more per step.
      interleave: update S at every trajectory point, the network then training on the
        updated S (:func:`interleaved_step`; DC's Algorithm 1 and code: T image updates per
        outer iteration). The default ``False`` (the recorded runs without ``_interleave``
        in their name) takes one update per step on :func:`objective`, the mean over the
        T points of one S. Interleaved, each step makes T updates, so ``lr`` must be
        smaller: on Fashion-MNIST IPC 10 with ``net_steps=50``, Adam at 0.01 matched the
        summed run's accuracy in half the steps (78.4 after 30, against 78.5 after 60 at
        0.05) and reached 79.2 after 60 (79.1 after 80); 0.05 overshot (77.1).
      dsa: a DSA strategy (e.g. ``augment.DIGITS_STRATEGY``) — DSA — or ``None`` — DC.
      include_bias: compare 1-d parameters too (DC skips them).
      real_batch: real images per class per match. The default 64 is the benchmark's; DC's
        code takes 256, which on Fashion-MNIST IPC 10 gave the same set (78.3 against 78.4
        after 30 interleaved steps) at 1.44× the time per step.
      point_batches: every trajectory point matches its own ``real_batch`` real images
        per class, as DC's code draws a fresh batch at each ``outer_loop`` iteration:
        :func:`sample_batch` then draws ``inner_steps · real_batch`` per class and point
        ``t`` takes the ``t``-th block of ``real_batch``. The default ``False`` (every
        recorded run but one) matches all T points to one batch per outer step; on
        Fashion-MNIST IPC 10 the fresh batches did not help (77.9 against 78.4 after 30
        interleaved steps).
      outer_momentum: ``None`` updates the images with Adam(``lr``); a float μ with SGD(``lr``)
        and momentum μ, PyTorch's form ``v ← μv + g, S ← S − lr·v`` as DC's code updates its
        images (lr 0.1, μ 0.5). The default is Adam(0.01). On Fashion-MNIST IPC 10, DC's SGD
        reached the same set after 60 interleaved steps (79.2 against 79.2) and trailed
        it after 30 (77.6 against 78.4; DSA after 20: 77.2 against 77.9).
      eval_every: updates between ``evaluate`` calls (``loop.run``'s 50).
    """

    ipc: int = 10
    steps: int = 150
    lr: float = 0.01
    model: ModelFns | None = None
    images: str | Latent = "pixels"
    inner_steps: int = 10
    inner_lr: float = 0.01
    net_steps: int = 1
    net_momentum: float = 0.0
    net_augment: bool = False
    interleave: bool = False
    dsa: str | None = None
    include_bias: bool = False
    real_batch: int = 64
    point_batches: bool = False
    outer_momentum: float | None = None
    eval_every: int = 50


#: :class:`distill.matching.common.Result` — ``(params, data, settings, history)``.
Result = common.Result


def _check_settings(settings: Any) -> Settings:
    common.check_base_settings(settings, Settings)
    common.check_model(settings.model, "settings.model")
    check_int(settings.inner_steps, "settings.inner_steps", min_value=1)
    check_float(settings.inner_lr, "settings.inner_lr", min_value=0.0)
    check_int(settings.net_steps, "settings.net_steps", min_value=1)
    check_float(settings.net_momentum, "settings.net_momentum", min_value=0.0, max_value=1.0)
    check_choice(settings.net_augment, "settings.net_augment", (False, True))
    if settings.net_augment and settings.dsa is None:
        raise ValueError("settings.net_augment: augments with the DSA strategy; set settings.dsa too")
    check_choice(settings.interleave, "settings.interleave", (False, True))
    check_int(settings.real_batch, "settings.real_batch", min_value=1)
    check_choice(settings.point_batches, "settings.point_batches", (False, True))
    if settings.dsa is not None:
        augment.parse_strategy(settings.dsa)
    return settings


def outer_optimizer(settings: Settings = Settings()) -> optax.GradientTransformation:
    """The optimizer of the synthetic images: Adam(``lr``), or SGD(``lr``) with momentum
    ``outer_momentum`` when that is set (DC's code: SGD 0.1, μ 0.5)."""
    return common.outer_optimizer(_check_settings(settings))


def init(key: jax.Array, data: Data, settings: Settings = Settings(), *, start: Any = None) -> Any:
    """Initial synthetic parameters: ``ipc`` random real images per class (or ``start``,
    ``(C·ipc, ...)`` class-grouped images), or the latent factors for ``images=Latent``."""
    settings = _check_settings(settings)
    data = common.check_data(data, settings.ipc)
    return common.init_images(key, data, settings.ipc, settings.images, start)


def batch_size(settings: Settings = Settings()) -> int:
    """Real images per class in one step's batch: ``real_batch``, or ``inner_steps · real_batch``
    with ``point_batches`` (one block per trajectory point)."""
    settings = _check_settings(settings)
    return settings.real_batch * (settings.inner_steps if settings.point_batches else 1)


def sample_batch(key: jax.Array, data: Data, settings: Settings = Settings()) -> jax.Array:
    """:func:`batch_size` random real images of every class, ``(C, B, ...)``."""
    return common.per_class_batch(key, common.check_data(data), batch_size(settings))


def layer_distance(g_real: jax.Array, g_syn: jax.Array) -> jax.Array:
    """``Σ_i (1 − cos(G_i, G'_i))`` over the output channels (last axis) of one layer's gradient.

    Args:
      g_real, g_syn: gradients of the same parameter, shape ``(..., out)`` (ndim ≥ 2).

    Returns:
      Scalar in ``[0, 2·out]``.
    """
    check_array(g_real, "g_real", kind="float")
    if g_real.ndim < 2:
        raise ValueError(f"g_real: expected a gradient of ndim >= 2 (..., out), got shape {tuple(g_real.shape)}")
    check_array(g_syn, "g_syn", kind="float", shape=tuple(g_real.shape))
    a = g_real.reshape((-1, g_real.shape[-1]))
    b = g_syn.reshape((-1, g_syn.shape[-1]))
    cos = jnp.sum(a * b, axis=0) / (_norm(a) * _norm(b) + 1e-6)
    return jnp.sum(1.0 - cos)


def _norm(a: jax.Array) -> jax.Array:
    # Column norms with a zero (not NaN) gradient for all-zero columns: a ReLU unit that
    # is dead on a class's images gives an all-zero gradient column.
    s = jnp.sum(a * a, axis=0)
    pos = s > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1.0)), 0.0)


def match_distance(g_real: Any, g_syn: Any, *, include_bias: bool = False) -> jax.Array:
    """DC's layer-wise gradient distance ``D(G, G')`` summed over the leaves of two gradient pytrees.

    Args:
      g_real, g_syn: gradient pytrees of the same structure (e.g. flax params).
      include_bias: also compare 1-d leaves (each as one vector); DC skips them.

    Returns:
      Scalar distance.

    Source: Zhao et al. (2021), Eq. 5 ("dist" of lecture 001, gradient matching).
    """
    la, ta = jax.tree_util.tree_flatten(g_real)
    lb, tb = jax.tree_util.tree_flatten(g_syn)
    if ta != tb:
        raise ValueError(f"g_syn: expected the same pytree structure as g_real, got {tb} vs {ta}")
    total = jnp.zeros((), jnp.result_type(*la) if la else jnp.float32)
    for a, b in zip(la, lb, strict=False):
        if a.shape != b.shape:
            raise ValueError(f"g_syn: expected leaf shapes to match g_real, got {b.shape} vs {a.shape}")
        if a.ndim >= 2:
            total = total + layer_distance(a, b)
        elif include_bias and a.ndim == 1:
            total = total + layer_distance(a[:, None], b[:, None])
    return total


def objective(
    syn_params: Any, batch: jax.Array, key: jax.Array, settings: Settings = Settings(), *, mesh: Mesh | None = None
) -> jax.Array:
    """The gradient-matching objective ``L_DC`` (module docstring), pure and jittable.

    Args:
      syn_params: synthetic-image parameters (:func:`init`); they materialize to
        class-grouped images ``(C·ipc, ...)``.
      batch: real images per class, ``(C, B, ...)`` (:func:`sample_batch`).
      key: PRNG key (θ₀, augmentation, materialization).
      settings: :class:`Settings` (``model``, ``inner_steps``, ``inner_lr``, ``dsa``, ...).
        With ``dsa``, each trajectory point draws one ω, applied to the real and
        synthetic images of every class.
      mesh: spread the classes over this mesh's devices.

    Returns:
      Scalar loss, differentiable in ``syn_params``.
    """
    check_key(key)
    settings = _check_settings(settings)
    x_syn, x_syn_c, x_real, model, theta0, k_aug = common.class_grouped_setup(
        key, settings.images, settings.ipc, syn_params, batch, lambda c: common.classifier(settings.model, c))
    _check_point_batches(x_real, settings)

    def step(net, t):
        d = _point_distance(model, net[0], _point_batch(x_real, t, settings), x_syn_c, _omega(k_aug, t, settings),
                            settings, mesh)
        return _advance(model, net, x_syn, t, k_aug, settings), d

    _, ds = jax.lax.scan(step, _net_state(theta0, settings), jnp.arange(settings.inner_steps))
    return jnp.mean(ds)


def interleaved_step(
    params: Any, opt_state: Any, batch: jax.Array, key: jax.Array, apply: Any, settings: Settings = Settings(),
    *, mesh: Mesh | None = None,
) -> tuple[Any, Any, jax.Array]:
    """One outer iteration of DC's Algorithm 1: an image update at every trajectory point.

    For ``t < T``: ``S ← apply(S, ∇_S Σ_c D(∇_θ ℓ(θ_t; B_c^real), ∇_θ ℓ(θ_t; S_c)))``, then
    ``θ_{t+1} = SGD_η^K(θ_t; S)`` on the *updated* S — where :func:`objective` sums the T
    distances of one S into one update. Same keys, θ₀, ω and real batch as
    :func:`objective`; with T = 1 the two steps coincide. The ``update`` of
    :func:`distill.loop.run` (``Settings(interleave=True)``).

    Args:
      params, opt_state: synthetic-image parameters and their optimizer state.
      batch: real images per class, ``(C, B, ...)``.
      key: PRNG key (θ₀, augmentation, materialization).
      apply: ``apply(params, opt_state, grads) -> (params, opt_state)``, the optimizer update.
      settings: :class:`Settings`.
      mesh: spread the classes over this mesh's devices.

    Returns:
      ``(params, opt_state, mean distance before each update)``.
    """
    check_key(key)
    settings = _check_settings(settings)
    _, _, x_real, model, theta0, k_aug = common.class_grouped_setup(
        key, settings.images, settings.ipc, params, batch, lambda c: common.classifier(settings.model, c))
    _check_point_batches(x_real, settings)
    n_classes = x_real.shape[0]
    param = common.parametrization(settings.images, n_classes * settings.ipc, tuple(x_real.shape[2:]))
    k_mat = common.setup_keys(key)[0]  # the key class_grouped_setup materializes with

    def point(carry, t):
        p, o, net = carry
        omega = _omega(k_aug, t, settings)
        x_real_t = _point_batch(x_real, t, settings)
        d, g = jax.value_and_grad(lambda q: _point_distance(
            model, net[0], x_real_t, common.group_by_class(param.materialize(q, k_mat), n_classes), omega, settings,
            mesh))(p)
        p, o = apply(p, o, g)
        return (p, o, _advance(model, net, param.materialize(p, k_mat), t, k_aug, settings)), d

    (params, opt_state, _), ds = jax.lax.scan(
        point, (params, opt_state, _net_state(theta0, settings)), jnp.arange(settings.inner_steps))
    return params, opt_state, jnp.mean(ds)


def _check_point_batches(batch: jax.Array, settings: Settings) -> None:
    if settings.point_batches and batch.shape[1] % settings.inner_steps:
        raise ValueError(f"batch: point_batches splits the {batch.shape[1]} real images per class into "
                         f"{settings.inner_steps} equal blocks, one per trajectory point; draw a multiple")


def _point_batch(x_real: jax.Array, t: jax.Array, settings: Settings) -> jax.Array:
    """The real images point ``t`` matches: all of them, or its block with ``point_batches``."""
    if not settings.point_batches:
        return x_real
    size = x_real.shape[1] // settings.inner_steps
    return jax.lax.dynamic_slice_in_dim(x_real, t * size, size, axis=1)


def _omega(k_aug: jax.Array, t: jax.Array, settings: Settings) -> Any:
    # One ω per trajectory point, shared by all classes: an unbatched ω keeps
    # augment.apply's switch a real branch under the class vmap (a per-class ω would
    # evaluate every transformation for every class).
    return None if settings.dsa is None else augment.sample(jax.random.fold_in(k_aug, t), settings.dsa)


def _point_distance(model, theta, x_real, x_syn_c, omega, settings: Settings, mesh) -> jax.Array:
    """``Σ_c D(∇_θ ℓ(θ; B_c^real), ∇_θ ℓ(θ; S_c))`` at one trajectory point (ω-augmented with DSA)."""
    include_bias = settings.include_bias

    def class_terms(rows, w, theta, omega):
        def one(xr_c, xs_c, c_, w_c):
            if omega is not None:
                xr_c, xs_c = augment.apply(omega, xr_c, settings.dsa), augment.apply(omega, xs_c, settings.dsa)
            grad = jax.grad(lambda th, xx: xent(model.apply(th, xx), jnp.full((xx.shape[0],), c_)))
            g_r = jax.lax.stop_gradient(grad(theta, xr_c))
            g_s = grad(theta, xs_c)
            return w_c * match_distance(g_r, g_s, include_bias=include_bias)

        return jnp.sum(jax.vmap(one)(*rows, w))

    classes = jnp.arange(x_syn_c.shape[0], dtype=jnp.int32)
    return parallel.sum_rows(class_terms, (x_real, x_syn_c, classes), theta, omega, mesh=mesh)


def _net_state(theta: Any, settings: Settings) -> tuple[Any, Any]:
    """``(θ, v)``: the network and its SGD momentum buffer (``None`` without momentum)."""
    return theta, (tree_map(jnp.zeros_like, theta) if settings.net_momentum else None)


def _advance(model, net: tuple[Any, Any], x_syn: jax.Array, t: jax.Array, k_aug: jax.Array,
             settings: Settings) -> tuple[Any, Any]:
    """``(θ, v)`` after ``net_steps`` full-batch SGD steps on (stop-gradient) S, each image
    augmented by its own draw with ``net_augment``."""
    n_classes, inner_lr, mu = x_syn.shape[0] // settings.ipc, settings.inner_lr, settings.net_momentum
    y_syn = jnp.repeat(jnp.arange(n_classes), settings.ipc)

    def inputs(i):
        if not settings.net_augment:
            return jax.lax.stop_gradient(x_syn)
        # keys T + t, apart from the matches' ω (fold_in(k_aug, t), t < T)
        k = jax.random.fold_in(jax.random.fold_in(k_aug, settings.inner_steps + t), i)
        return augment.augment_each(k, jax.lax.stop_gradient(x_syn), settings.dsa)

    def sgd(i, state):
        th, v = state
        g = jax.grad(lambda th_: xent(model.apply(th_, inputs(i)), y_syn))(th)
        if v is None:  # plain SGD: the recorded runs' program, op for op
            return tree_map(lambda p, gg: p - inner_lr * gg, th, g), None
        v = tree_map(lambda vv, gg: mu * vv + gg, v, g)
        return tree_map(lambda p, vv: p - inner_lr * vv, th, v), v

    if settings.net_steps == 1:  # the recorded runs' program, kept as it was compiled
        net = sgd(0, net)
    else:  # the last point's network update is never used: skip it
        net = jax.lax.cond(t < settings.inner_steps - 1, lambda s: jax.lax.fori_loop(
            0, settings.net_steps, sgd, s), lambda s: s, net)
    return jax.lax.stop_gradient(net)


def distill(
    key: jax.Array,
    data: Data,
    settings: Settings = Settings(),
    *,
    mesh: Mesh | None = None,
    checkpoint_dir: Any = None,
    progress: bool = False,
    evaluate: Any = None,
    init_params: Any = None,
    batches: Any = None,
) -> Result:
    """Distil ``data`` into ``settings.ipc`` images per class with DC (DSA with ``settings.dsa``).

    Args:
      key: PRNG key. Step ``t``'s objective key is ``fold_in(key, t)``; the initial images
        and the real batches come from :func:`distill.matching.common.data_keys`.
      data: :class:`Data` of standardised real images.
      settings: :class:`Settings`.
      mesh: spread the classes over this mesh's devices.
      checkpoint_dir: orbax checkpoints; a killed run resumes (``distill.loop.run``).
      progress: show progress on stderr.
      evaluate: ``evaluate(params)`` or ``evaluate(params, step)`` → float, higher is
        better (every ``settings.eval_every`` updates); the best parameters are returned.
      init_params: start from these parameters instead of :func:`init`.
      batches: ``batches(step) -> (C, B, ...)`` real batches instead of
        ``sample_batch(fold_in(k_batch, step), ...)``.

    Returns:
      :class:`Result`.
    """
    settings = _check_settings(settings)
    data = common.check_data(data, settings.ipc)
    update = None
    if settings.interleave:
        update = lambda p, o, b, k, apply: interleaved_step(p, o, b, k, apply, settings, mesh=mesh)  # noqa: E731
    params, history = common.distill_images(
        (init, sample_batch, objective), key, data, settings, mesh=mesh, checkpoint_dir=checkpoint_dir,
        progress=progress, evaluate=evaluate, init_params=init_params, batches=batches, update=update)
    x_syn = common.synthetic_images(key, params, data, settings)
    return Result(params, (x_syn, np.asarray(common.syn_labels(data.n_classes, settings.ipc))), settings, history)
