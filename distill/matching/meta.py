"""Meta-matching (MM): backpropagation through the unrolled inner training (BPTT).

Wang, Zhu, Torralba & Efros (2018), "Dataset Distillation"; Deng & Russakovsky (2022),
"Remember the Past"; dissertation §4.6.5 (MM, Table 4.8) and lecture 001
("Meta-learning": the full dataset as the validation set)::

    L_MM(S) = E_{θ₀ ~ P_θ} [ ℓ(θ_T; B_real) ],     θ_T = Adam_T(θ₀; S)

where ``Adam_T`` is T full-batch Adam steps on the synthetic set, run by
:func:`distill.inner.train` (``mode``: unrolled BPTT, √T checkpointing, or the
dissertation's reverse-mode Adam, Algorithm 6 — same gradient, different memory). The
real-batch loss is a sum over rows via :func:`distill.parallel.sum_rows` (sharded over a
``mesh`` when given).

The method in the one shape: ``Settings`` / ``Data`` / ``Result`` / :func:`init` /
:func:`sample_batch` / :func:`objective` / :func:`distill`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from distill import inner, parallel
from distill.checks import check_array, check_choice, check_int, check_key
from distill.matching import common
from distill.matching.common import Data, Latent, xent
from models.model_fns import ModelFns

__all__ = ["Settings", "Data", "Result", "init", "sample_batch", "objective", "distill"]


class Settings(NamedTuple):
    """Meta-matching settings (hashable: a static ``jit`` argument).

    Attributes:
      ipc: synthetic images per class (the benchmark's IPC 10).
      steps: outer Adam updates (the matching benchmark's 150).
      lr: outer Adam learning rate (the benchmark's 0.01).
      model: ``ModelFns`` classifier; ``None`` is an MLP 128-128 with C logits (the benchmark's).
      images: ``"pixels"`` or a :class:`distill.matching.Latent`.
      inner_steps: T, inner full-batch Adam steps on S (the benchmark's 20).
      inner_optimizer: the inner Adam. Default ``inner.Adam(0.3, eps=1.0)``: with ε far
        above √v̂ the update is ≈ 0.3·m̂ — momentum SGD, a smooth function of S. With the
        plain ``inner.Adam(1e-2)`` (ε = 1e-8; the first recorded runs) each early update
        is ≈ α·sign(g), the unrolled loss is rough below step sizes of ~0.1 in pixel
        space, a step along the key-averaged meta-gradient *raises* the loss on other
        θ₀, and meta-matching stays at random-real accuracy (digits IPC 1, MLP: 65.2 vs
        66.7); with this default it reaches 89.4 (docs/results.md, "Meta-matching").
      mode, reverse_every: :func:`distill.inner.train` settings (the dissertation's
        reverse-mode Adam; ``inner.train``'s default checkpoint spacing).
      real_batch: real rows per step (the benchmark's 256).
      eval_every: updates between ``evaluate`` calls (``loop.run``'s 50).
    """

    ipc: int = 10
    steps: int = 150
    lr: float = 0.01
    model: ModelFns | None = None
    images: str | Latent = "pixels"
    inner_steps: int = 20
    inner_optimizer: inner.Adam = inner.Adam(0.3, eps=1.0)
    mode: str = "reverse_adam"
    reverse_every: int | str | None = "auto"
    real_batch: int = 256
    eval_every: int = 50


#: :class:`distill.matching.common.Result` — ``(params, data, settings, history)``.
Result = common.Result


def _check_settings(settings: Any) -> Settings:
    common.check_base_settings(settings, Settings)
    common.check_model(settings.model, "settings.model")
    check_int(settings.inner_steps, "settings.inner_steps", min_value=1)
    if not isinstance(settings.inner_optimizer, inner.Adam):
        raise TypeError(f"settings.inner_optimizer: expected a distill.inner.Adam, got "
                        f"{type(settings.inner_optimizer).__name__}")
    check_choice(settings.mode, "settings.mode", inner.MODES)
    check_int(settings.real_batch, "settings.real_batch", min_value=1)
    return settings


def init(key: jax.Array, data: Data, settings: Settings = Settings(), *, start: Any = None) -> Any:
    """Initial synthetic parameters: ``ipc`` random real images per class (or ``start``,
    ``(C·ipc, ...)`` class-grouped images), or the latent factors for ``images=Latent``."""
    settings = _check_settings(settings)
    data = common.check_data(data, settings.ipc)
    return common.init_images(key, data, settings.ipc, settings.images, start)


def sample_batch(key: jax.Array, data: Data, settings: Settings = Settings()) -> tuple[jax.Array, jax.Array]:
    """``(x (m, ...), y (m,) int)`` of ``m = settings.real_batch`` distinct random real rows."""
    settings = _check_settings(settings)
    data = common.check_data(data)
    idx = common.row_batch(key, data.x.shape[0], settings.real_batch)
    return jnp.asarray(data.x[idx]), jnp.asarray(data.y[idx])


def objective(
    syn_params: Any, batch: tuple[jax.Array, jax.Array], key: jax.Array, settings: Settings = Settings(), *,
    mesh: Mesh | None = None,
) -> jax.Array:
    """``L_MM``: real-batch cross-entropy of a fresh network after T Adam steps on S.

    Args:
      syn_params: synthetic-image parameters (:func:`init`), class-grouped ``(C·ipc, ...)``.
      batch: ``(x_real (m, ...), y_real (m,) int)`` (:func:`sample_batch`).
      key: PRNG key (θ₀ and materialization).
      settings: :class:`Settings`.
      mesh: shard the real rows over this mesh.

    Returns:
      Scalar mean cross-entropy on the real batch.
    """
    check_key(key)
    settings = _check_settings(settings)
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"batch: expected (x_real, y_real), got {type(batch).__name__}")
    x_real, y_real = batch
    check_array(x_real, "batch", kind="float")
    check_array(y_real, "batch", ndim=1, kind="int", shape=(x_real.shape[0],))
    n = jax.tree_util.tree_leaves(syn_params)[0].shape[0]
    if n % settings.ipc:
        raise ValueError(f"syn_params: expected a multiple of settings.ipc={settings.ipc} images, got {n}")
    k_mat, k_init = jax.random.split(key)
    x_syn = common.parametrization(settings.images, n, tuple(x_real.shape[1:])).materialize(syn_params, k_mat)
    check_array(x_real, "batch", kind="float", shape=(None,) + tuple(x_syn.shape[1:]))
    labels = common.syn_labels(n // settings.ipc, settings.ipc)
    model = common.classifier(settings.model, n // settings.ipc)
    theta0 = model.init(k_init, jnp.zeros((1,) + x_syn.shape[1:], x_syn.dtype))
    theta = inner.train(model.apply, xent, theta0, (x_syn, labels), steps=settings.inner_steps,
                        optimizer=settings.inner_optimizer, mode=settings.mode, reverse_every=settings.reverse_every)

    def nll(rows, w, th):
        xr, yr = rows
        return jnp.sum(w * optax.softmax_cross_entropy_with_integer_labels(model.apply(th, xr), yr))

    return parallel.sum_rows(nll, (x_real.astype(x_syn.dtype), y_real), theta, mesh=mesh) / x_real.shape[0]


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
    """Distil ``data`` into ``settings.ipc`` images per class with meta-matching (BPTT).

    Args and keys as :func:`distill.matching.dc.distill` (``batches(step) -> (x, y)``).

    Returns:
      :class:`Result`.
    """
    settings = _check_settings(settings)
    data = common.check_data(data, settings.ipc)
    params, history = common.distill_images(
        (init, sample_batch, objective), key, data, settings, mesh=mesh, checkpoint_dir=checkpoint_dir,
        progress=progress, evaluate=evaluate, init_params=init_params, batches=batches)
    x_syn = common.synthetic_images(key, params, data, settings)
    return Result(params, (x_syn, np.asarray(common.syn_labels(data.n_classes, settings.ipc))), settings, history)
