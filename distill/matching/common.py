"""What the matching methods share: the image data, the synthetic-image parametrization,
labels, cross-entropy, class grouping, real-batch sampling and the distillation driver.

Every method module (:mod:`~distill.matching.dc`, :mod:`~distill.matching.dm`,
:mod:`~distill.matching.mtt`, :mod:`~distill.matching.kip`, :mod:`~distill.matching.meta`)
distils a :class:`Data` of standardised images into ``ipc`` synthetic images per class,
class-grouped (class 0's ``ipc`` rows first). The synthetic images are either the pixels
themselves (``images="pixels"``, initialised from random real images of each class) or
Farzi's latent factorization (``images=Latent(...)``, :func:`distill.matching.latent_images`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from distill import loop
from distill.checks import check_array, check_float, check_index_range, check_int, check_key
from distill.data.images import ImageData, class_balanced_subset
from distill.matching.images import latent_images
from distill.parametrize import Parametrization, identity
from models.kernels import KernelSpec
from models.mlp import mlp
from models.model_fns import ModelFns

__all__ = [
    "Data",
    "Result",
    "distill_images",
    "synthetic_images",
    "Latent",
    "syn_labels",
    "xent",
    "parametrization",
    "numpy_rng",
    "init_images",
    "per_class_batch",
    "row_batch",
]

tree_map = jax.tree_util.tree_map

#: The hidden widths of the default model (an MLP 128-128, the matching benchmark's model:
#: on CPU a ConvNet step costs 20-50× an MLP step).
DEFAULT_HIDDEN = (128, 128)


class Data(NamedTuple):
    """The real images a matching method distils.

    Attributes:
      x: float ``(n, H, W, C)`` standardised images.
      y: int ``(n,)`` labels in ``0..n_classes-1``.
      n_classes: number of classes C (≥ 2).
    """

    x: Any
    y: Any
    n_classes: int


class Latent(NamedTuple):
    """Farzi's latent parametrization of the synthetic images (hashable settings of
    :func:`distill.matching.latent_images`): per-pixel grey ``levels``, latent dimension,
    softmax temperature, the Gaussian scale of the initial factors and the real data's
    per-channel standardisation (``mean``, ``std`` as tuples, one per channel).

    Defaults: 17 levels (sklearn digits' 0..16), d = 8, τ = 1, scale 1 — the matching
    benchmark's Farzi rows (dissertation §4.6.5)."""

    levels: int = 17
    latent_dim: int = 8
    tau: float = 1.0
    init_scale: float = 1.0
    mean: tuple = (0.0,)
    std: tuple = (1.0,)


def syn_labels(n_classes: int, ipc: int) -> jax.Array:
    """Class-grouped labels ``[0]*ipc + [1]*ipc + …`` of a synthetic set, int32 ``(C·ipc,)``."""
    n_classes = check_int(n_classes, "n_classes", min_value=1)
    ipc = check_int(ipc, "ipc", min_value=1)
    return jnp.repeat(jnp.arange(n_classes, dtype=jnp.int32), ipc)


def xent(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy; ``labels`` int ``(n,)`` or soft/one-hot ``(n, C)``.

    Integer labels outside ``[0, C)`` raise when concrete and make the loss NaN under
    ``jit`` (optax would clamp them to a real class).
    """
    check_array(logits, "logits", ndim=2, kind="float")
    if jnp.issubdtype(labels.dtype, jnp.integer):
        check_array(labels, "labels", shape=(logits.shape[0],))
        n_classes = logits.shape[-1]
        check_index_range(labels, "labels", n_classes, "label")
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return jnp.mean(jnp.where((labels >= 0) & (labels < n_classes), ce, jnp.nan))
    check_array(labels, "labels", kind="float", shape=tuple(logits.shape))
    return jnp.mean(optax.softmax_cross_entropy(logits, labels))


# ----------------------------------------------------------------------------- settings


def check_model(m: Any, name: str = "model", *, allow_none: bool = True) -> Any:
    if m is None and allow_none:
        return m
    if not (hasattr(m, "init") and hasattr(m, "apply") and callable(m.apply)):
        raise TypeError(f"{name}: expected a ModelFns(init, apply), got {type(m).__name__}")
    return m


def classifier(model: ModelFns | None, n_classes: int, *, features_only: bool = False) -> ModelFns:
    """``model``, or the default MLP 128-128 with ``n_classes`` logits (its hidden features
    with ``features_only``)."""
    return model if model is not None else mlp(n_classes, hidden=DEFAULT_HIDDEN, features_only=features_only)


def check_images(images: Any, name: str = "settings.images") -> Any:
    if isinstance(images, Latent):
        check_int(images.levels, f"{name}.levels", min_value=2)
        check_int(images.latent_dim, f"{name}.latent_dim", min_value=1)
        check_float(images.tau, f"{name}.tau", min_value=0.0, strict_min=True)
        if not isinstance(images.mean, tuple) or not isinstance(images.std, tuple):
            raise TypeError(f"{name}: expected mean and std as tuples of floats (hashable settings)")
        return images
    if images != "pixels":
        raise ValueError(f"{name}: expected 'pixels' or a distill.matching.Latent, got {images!r}")
    return images


def check_base_settings(settings: Any, settings_type: type) -> Any:
    """The fields every matching method has: ``ipc``, ``steps``, ``lr``, ``images``, ``eval_every``
    (and ``outer_momentum`` where a method has it)."""
    if not isinstance(settings, settings_type):
        raise TypeError(f"settings: expected {settings_type.__module__}.Settings, got {type(settings).__name__}")
    check_int(settings.ipc, "settings.ipc", min_value=1)
    check_int(settings.steps, "settings.steps", min_value=1)
    check_float(settings.lr, "settings.lr", min_value=0.0, strict_min=True)
    check_int(settings.eval_every, "settings.eval_every", min_value=1)
    check_images(settings.images)
    if getattr(settings, "outer_momentum", None) is not None:
        check_float(settings.outer_momentum, "settings.outer_momentum", min_value=0.0, max_value=1.0)
    return settings


def check_data(data: Any, ipc: int | None = None) -> Data:
    """``data`` as a :class:`Data` of numpy arrays, validated; with ``ipc``, every class
    must have at least that many images."""
    if not isinstance(data, Data):
        raise TypeError(f"data: expected a distill.matching Data(x, y, n_classes), got {type(data).__name__}")
    n_classes = check_int(data.n_classes, "data.n_classes", min_value=2)
    check_array(data.x, "data.x", kind="float", finite=True)
    if np.ndim(data.x) < 2:
        raise ValueError(f"data.x: expected images (n, ...), got shape {np.shape(data.x)}")
    check_array(data.y, "data.y", ndim=1, kind="int", shape=(np.shape(data.x)[0],))
    y = np.asarray(data.y)
    check_index_range(y, "data.y", n_classes, "label")
    if ipc is not None:
        counts = np.bincount(y, minlength=n_classes)
        if counts.min() < ipc:
            raise ValueError(f"settings.ipc: class {int(counts.argmin())} has {int(counts.min())} images, fewer than {ipc}")
    return data._replace(x=np.asarray(data.x), y=y, n_classes=n_classes)


# ----------------------------------------------------------------------------- synthetic images


def parametrization(images: Any, n_images: int, image_shape: tuple) -> Parametrization:
    """The :class:`~distill.parametrize.Parametrization` of ``n_images`` synthetic images
    of ``image_shape``: the pixels (identity) or :func:`latent_images` for a :class:`Latent`."""
    if isinstance(images, Latent):
        return latent_images(n_images, image_shape, levels=images.levels, latent_dim=images.latent_dim, tau=images.tau,
                             init_scale=images.init_scale, mean=np.asarray(images.mean), std=np.asarray(images.std))
    return identity()


def numpy_rng(key: jax.Array) -> np.random.Generator:
    """A numpy generator seeded with the bits of a JAX key: real batches are drawn on the
    host (no device work or compilation per step), still a pure function of the key."""
    check_key(key)
    bits = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.random.default_rng(np.asarray(bits, np.uint32).ravel())


def init_images(key: jax.Array, data: Data, ipc: int, images: Any, start: Any = None) -> Any:
    """Initial parameters of the class-grouped synthetic images.

    Pixels: ``start`` (``(C·ipc, ...)`` images) when given, else ``ipc`` random real images
    of every class (:func:`distill.data.class_balanced_subset` with ``numpy_rng(key)``).
    Latent: the factorization's random init from ``key`` (``start`` must be ``None``).
    """
    check_key(key)
    shape = tuple(np.shape(data.x)[1:])
    n = data.n_classes * ipc
    if isinstance(images, Latent):
        if start is not None:
            raise ValueError("start: the latent parametrization starts from random factors, got images")
        return parametrization(images, n, shape).init(key)
    if start is None:
        start = class_balanced_subset(ImageData(data.x, data.y, data.n_classes), ipc, seed=numpy_rng(key)).x
    check_array(start, "start", kind="float", shape=(n,) + shape, finite=True)
    return identity().init(None, jnp.asarray(start))


def per_class_batch(key: jax.Array, data: Data, batch_size: int) -> jax.Array:
    """``batch_size`` real images of every class, ``(C, B, ...)`` (with replacement only for
    a class smaller than ``B``)."""
    rng = numpy_rng(key)
    x, y = np.asarray(data.x), np.asarray(data.y)
    rows = [rng.choice(ix, batch_size, replace=len(ix) < batch_size)
            for ix in (np.flatnonzero(y == c) for c in range(data.n_classes))]
    return jnp.asarray(np.stack([x[r] for r in rows]))


def row_batch(key: jax.Array, n: int, batch_size: int) -> np.ndarray:
    """``min(batch_size, n)`` distinct random row indices of ``n``."""
    return numpy_rng(key).choice(n, min(batch_size, n), replace=False)


# ----------------------------------------------------------------------------- class-grouped objectives


def group_by_class(x_syn: jax.Array, n_classes: int) -> jax.Array:
    """``(C·ipc, ...)`` class-grouped synthetic inputs → ``(C, ipc, ...)``."""
    if x_syn.shape[0] % n_classes:
        raise ValueError(
            f"syn_params: expected materialized data with a multiple of n_classes={n_classes} rows "
            f"(class-grouped, ipc per class), got {x_syn.shape[0]}"
        )
    return x_syn.reshape((n_classes, x_syn.shape[0] // n_classes) + x_syn.shape[1:])


def check_real_per_class(x_real: Any) -> jax.Array:
    """The real batch of DC/DM: ``(C, B, ...)`` float images."""
    check_array(x_real, "batch", kind="float")
    if x_real.ndim < 3:
        raise ValueError(f"batch: expected real inputs per class (C, B, ...), got {tuple(x_real.shape)}")
    return x_real


def setup_keys(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The (materialization, network init, augmentation) keys of :func:`class_grouped_setup`."""
    k_mat, k_init, k_aug = jax.random.split(key, 3)
    return k_mat, k_init, k_aug


def class_grouped_setup(key: jax.Array, images: Any, ipc: int, syn_params: Any, batch: Any, net: Any):
    """The prologue shared by the per-class objectives (DC, DM).

    Splits ``key`` into (materialization, network init, augmentation) keys, materializes
    the synthetic set (C = ``batch.shape[0]`` classes of ``ipc`` images), groups it by
    class, checks the real ``(C, B, ...)`` batch against it and initialises ``net(C)``.

    Returns:
      ``(x_syn (C·ipc, ...), x_syn_c (C, ipc, ...), x_real (C, B, ...) in x_syn's dtype,
      the network, θ of it, augmentation key)``.
    """
    check_real_per_class(batch)
    n_classes = batch.shape[0]
    k_mat, k_init, k_aug = setup_keys(key)
    x_syn = parametrization(images, n_classes * ipc, tuple(batch.shape[2:])).materialize(syn_params, k_mat)
    if x_syn.ndim + 1 != batch.ndim or x_syn.shape[1:] != batch.shape[2:]:
        raise ValueError(
            f"batch: expected real inputs per class of shape (C, B, {', '.join(map(str, x_syn.shape[1:]))}), "
            f"got {tuple(batch.shape)}"
        )
    x_syn_c = group_by_class(x_syn, n_classes)
    if x_syn_c.shape[1] != ipc:
        raise ValueError(f"syn_params: expected {n_classes} classes × ipc {ipc} = {n_classes * ipc} synthetic images "
                         f"for a real batch of {n_classes} classes, got {x_syn.shape[0]}")
    x_real = batch.astype(x_syn.dtype)
    model = net(n_classes)
    theta = model.init(k_init, jnp.zeros((1,) + x_syn.shape[1:], x_syn.dtype))
    return x_syn, x_syn_c, x_real, model, theta, k_aug


# ----------------------------------------------------------------------------- the driver


def describe(value: Any) -> Any:
    """A JSON-able description of a settings field for the checkpoint fingerprint."""
    if isinstance(value, ModelFns) or (hasattr(value, "init") and hasattr(value, "apply")):
        return f"ModelFns({getattr(value.init, '__qualname__', type(value.init).__name__)})"
    if isinstance(value, KernelSpec):
        return {"depth": value.depth, "w_std": value.w_std, "b_std": value.b_std}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: describe(v) for k, v in value._asdict().items()}
    return value


#: Settings fields added after checkpoints had been written without them: at their
#: default they are left out of the fingerprint, so those checkpoints still resume.
_LATER_FIELDS = ("net_momentum", "net_augment", "point_batches", "outer_momentum")


def fingerprint(settings: Any, data: Data, **extra: Any) -> dict:
    """Settings and data signatures of a run, compared when a checkpoint is resumed."""
    # steps is not compared: a finished run extended to more steps resumes (distill.loop.run)
    defaults = type(settings)._field_defaults
    return {"settings": {k: describe(v) for k, v in settings._asdict().items() if k != "steps" and not (
                k in _LATER_FIELDS and k in defaults and v == defaults[k])},
            "x": loop.array_signature(data.x), "y": loop.array_signature(data.y), **extra}


def outer_optimizer(settings: Any) -> optax.GradientTransformation:
    """The optimizer of the synthetic images: Adam(``settings.lr``), or SGD(``settings.lr``)
    with momentum μ when the settings have ``outer_momentum = μ`` set — PyTorch's form
    ``v ← μv + g, S ← S − lr·v``, as DC's code (lr 0.1, μ 0.5) and DM's (lr 1, μ 0.5)
    update their images."""
    momentum = getattr(settings, "outer_momentum", None)
    if momentum is None:
        return optax.adam(settings.lr)
    return optax.sgd(settings.lr, momentum=momentum)


def run(
    key: jax.Array,
    objective: Callable[[Any, Any, jax.Array], jax.Array],
    syn_params: Any,
    batches: Callable[[int], Any] | Any,
    settings: Any,
    fingerprint_: dict,
    *,
    checkpoint_dir: Any,
    progress: bool,
    evaluate: Any,
    update: Any = None,
    optimizer: Any = None,
) -> tuple[Any, loop.History]:
    """:func:`distill.loop.run` with ``optimizer`` (default :func:`outer_optimizer`) for
    ``settings.steps`` steps; step ``t``'s objective key is ``fold_in(key, t)``; ``update``
    replaces the step."""
    optimizer = outer_optimizer(settings) if optimizer is None else optimizer
    return loop.run(objective, syn_params, optimizer, batches, steps=settings.steps, key=key,
                    evaluate=evaluate, eval_every=settings.eval_every, checkpoint_dir=checkpoint_dir,
                    progress=progress, fingerprint=fingerprint_, update=update)


class Result(NamedTuple):
    """What an image method's ``distill`` returns (DC/DSA, DM, KIP, meta-matching; MTT adds
    its learned student learning rate).

    Attributes:
      params: the learned synthetic parameters (best by ``evaluate`` when given).
      data: the synthetic set ``(x_syn (C·ipc, ...), y_syn)``: int labels ``(C·ipc,)``, or
        KIP's regression labels ``(C·ipc, C)``.
      settings: the method's ``Settings``.
      history: the :class:`distill.loop.History` of the run.
    """

    params: Any
    data: tuple[np.ndarray, np.ndarray]
    settings: Any
    history: loop.History


def distill_images(
    method: tuple[Callable, Callable, Callable],
    key: jax.Array,
    data: Data,
    settings: Any,
    *,
    mesh: Any,
    checkpoint_dir: Any,
    progress: bool,
    evaluate: Any,
    init_params: Any,
    batches: Any,
    fixed_batch: bool = False,
    fingerprint_extra: dict | None = None,
    update: Any = None,
    optimizer: Any = None,
) -> tuple[Any, loop.History]:
    """The run every image method's ``distill`` shares: initial parameters from
    ``init(k_init, ...)`` (or ``init_params``), step ``t``'s real batch
    ``sample_batch(fold_in(k_batch, t), ...)`` (or ``batches(t)``; with ``fixed_batch`` the
    one batch ``sample_batch(k_batch, ...)`` at every step, as MTT's expert pool), the
    objective with ``settings`` bound, and :func:`run`. ``method`` is the module's
    ``(init, sample_batch, objective)``; ``k_init, k_batch = data_keys(key)``; ``update``
    replaces the loop's step (:func:`distill.loop.run`); ``optimizer`` replaces :func:`outer_optimizer`."""
    init, sample_batch, objective = method
    k_init, k_batch = data_keys(key)
    params = init(k_init, data, settings) if init_params is None else init_params
    if batches is None and fixed_batch:
        batches = sample_batch(k_batch, data, settings)
    elif batches is None:
        batches = lambda t: sample_batch(jax.random.fold_in(k_batch, t), data, settings)  # noqa: E731
    obj = lambda p, b, k: objective(p, b, k, settings, mesh=mesh)  # noqa: E731
    fp = fingerprint(settings, Data(data.x, data.y, data.n_classes), **(fingerprint_extra or {}))
    return run(key, obj, params, batches, settings, fp, checkpoint_dir=checkpoint_dir, progress=progress,
               evaluate=evaluate, update=update, optimizer=optimizer)


def synthetic_images(key: jax.Array, image_params: Any, data: Data, settings: Any) -> np.ndarray:
    """The ``(C·ipc, ...)`` synthetic images of ``image_params`` (materialised with ``key``)."""
    n = data.n_classes * settings.ipc
    return np.asarray(parametrization(settings.images, n, data.x.shape[1:]).materialize(image_params, key))


def data_keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The (init, batch) keys of ``distill``: ``split(fold_in(key, 2³¹ − 1))`` — apart from
    the loop's step keys ``fold_in(key, t)`` for any realistic number of steps."""
    k_init, k_batch = jax.random.split(jax.random.fold_in(check_key(key), 2**31 - 1))
    return k_init, k_batch
