"""Dataset Condensation with Distribution Matching (DM).

Zhao & Bilen (WACV 2023), "Dataset Condensation with Distribution Matching"; lecture
001 ("Distribution matching": random embeddings, MMD). The synthetic images of each
class should have the same mean embedding as the real ones under randomly initialised
networks ψ_ϑ (no training, no bilevel problem)::

    L_DM(S) = E_{ϑ ~ P_ϑ, ω ~ Ω} Σ_c ‖ (1/|B_c|) Σ_{x∈B_c} ψ_ϑ(A_ω(x)) − (1/|S_c|) Σ_{s∈S_c} ψ_ϑ(A_ω(s)) ‖²

— the (biased) squared MMD with the linear kernel on the embedding,
``MMD² = mean K(r, r') + mean K(s, s') − 2 mean K(r, s)`` with ``K(a, b) = ⟨ψ(a), ψ(b)⟩``,
which equals the squared distance of the means. ``A_ω`` is the optional DSA
augmentation shared by both sides. Classes are summed with
:func:`distill.parallel.sum_rows` (spread over a mesh's devices when given).

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

from distill import parallel
from distill.checks import check_array, check_int, check_key
from distill.matching import augment, common
from distill.matching.common import Data, Latent
from models.model_fns import ModelFns

__all__ = ["Settings", "Data", "Result", "init", "outer_optimizer", "sample_batch", "objective", "distill", "mmd"]


class Settings(NamedTuple):
    """DM settings (hashable: a static ``jit`` argument).

    Attributes:
      ipc: synthetic images per class (the benchmark's IPC 10).
      steps: outer Adam updates (the matching benchmark's 150).
      lr: outer Adam learning rate (the benchmark's 0.01 on pixels; 0.05 for ``Latent``).
      embed: ``ModelFns`` of the embedding network ψ, re-initialised from the key at
        every call; ``None`` is the hidden features of an MLP 128-128 (the benchmark's
        model; the paper uses the ConvNet without its head,
        ``models.convnet.convnet(C, features_only=True)``).
      images: ``"pixels"`` or a :class:`distill.matching.Latent`.
      dsa: DSA strategy or ``None`` (the benchmark's); one ω per call, applied to real
        and synthetic images alike.
      real_batch: real images per class per step (the benchmark's 64; DM uses 256).
      outer_momentum: ``None`` updates the images with Adam(``lr``); a float μ with SGD(``lr``)
        and momentum μ, PyTorch's form ``v ← μv + g, S ← S − lr·v`` as DM's code updates its
        images (lr 1, μ 0.5, 20,000 steps). The default is Adam: on digits at IPC 1 (ConvNet-2,
        width 128) DM's SGD got there much sooner (88.9 after 50 steps) but not further (89.1
        against Adam's 89.5 after 1,000), and the reference code itself, run on the same split,
        gives 89.2–90.1 from 500 to 4,000 iterations (docs/results.md).
      eval_every: updates between ``evaluate`` calls (``loop.run``'s 50).
    """

    ipc: int = 10
    steps: int = 150
    lr: float = 0.01
    embed: ModelFns | None = None
    images: str | Latent = "pixels"
    dsa: str | None = None
    real_batch: int = 64
    outer_momentum: float | None = None
    eval_every: int = 50


#: :class:`distill.matching.common.Result` — ``(params, data, settings, history)``.
Result = common.Result


def _check_settings(settings: Any) -> Settings:
    common.check_base_settings(settings, Settings)
    common.check_model(settings.embed, "settings.embed")
    check_int(settings.real_batch, "settings.real_batch", min_value=1)
    if settings.dsa is not None:
        augment.parse_strategy(settings.dsa)
    return settings


def outer_optimizer(settings: Settings = Settings()) -> optax.GradientTransformation:
    """The optimizer of the synthetic images: Adam(``lr``), or SGD(``lr``) with momentum
    ``outer_momentum`` when that is set (DM's code: SGD 1, μ 0.5)."""
    return common.outer_optimizer(_check_settings(settings))


def init(key: jax.Array, data: Data, settings: Settings = Settings(), *, start: Any = None) -> Any:
    """Initial synthetic parameters: ``ipc`` random real images per class (or ``start``,
    ``(C·ipc, ...)`` class-grouped images), or the latent factors for ``images=Latent``."""
    settings = _check_settings(settings)
    data = common.check_data(data, settings.ipc)
    return common.init_images(key, data, settings.ipc, settings.images, start)


def sample_batch(key: jax.Array, data: Data, settings: Settings = Settings()) -> jax.Array:
    """``settings.real_batch`` random real images of every class, ``(C, B, ...)``."""
    settings = _check_settings(settings)
    return common.per_class_batch(key, common.check_data(data), settings.real_batch)


def mmd(f_real: jax.Array, f_syn: jax.Array) -> jax.Array:
    """Squared MMD with the linear kernel: ``‖mean(f_real) − mean(f_syn)‖²``.

    Args:
      f_real: ``(n, d)`` embeddings of real examples.
      f_syn: ``(m, d)`` embeddings of synthetic examples.

    Returns:
      Scalar ``≥ 0``.
    """
    check_array(f_real, "f_real", ndim=2, kind="float")
    check_array(f_syn, "f_syn", ndim=2, kind="float", shape=(None, f_real.shape[1]))
    return jnp.sum((jnp.mean(f_real, axis=0) - jnp.mean(f_syn, axis=0)) ** 2)


def objective(
    syn_params: Any, batch: jax.Array, key: jax.Array, settings: Settings = Settings(), *, mesh: Mesh | None = None
) -> jax.Array:
    """The distribution-matching objective ``L_DM`` (module docstring), pure and jittable.

    Args:
      syn_params: synthetic-image parameters (:func:`init`); materialized to
        class-grouped ``(C·ipc, ...)``.
      batch: real images per class ``(C, B, ...)`` (:func:`sample_batch`).
      key: PRNG key (the random embedding ϑ, augmentations, materialization).
      settings: :class:`Settings`.
      mesh: spread the classes over this mesh's devices.

    Returns:
      Scalar loss ``Σ_c MMD²_c``.

    Source: Zhao & Bilen (2023), Eq. 4 (DM).
    """
    check_key(key)
    settings = _check_settings(settings)
    _, x_syn_c, x_real, embed, theta, k_aug = common.class_grouped_setup(
        key, settings.images, settings.ipc, syn_params, batch,
        lambda c: common.classifier(settings.embed, c, features_only=True))

    def class_terms(rows, w, theta, omega):
        xr, xs, c = rows

        def one(xr_c, xs_c, c_, w_c):
            if omega is not None:
                xr_c, xs_c = augment.apply(omega, xr_c, settings.dsa), augment.apply(omega, xs_c, settings.dsa)
            f_r = jax.lax.stop_gradient(embed.apply(theta, xr_c))
            f_s = embed.apply(theta, xs_c)
            return w_c * mmd(f_r, f_s)

        return jnp.sum(jax.vmap(one)(xr, xs, c, w))

    classes = jnp.arange(x_syn_c.shape[0], dtype=jnp.int32)
    # one ω for all classes (unbatched under the class vmap, see dc.py)
    omega = None if settings.dsa is None else augment.sample(k_aug, settings.dsa)
    return parallel.sum_rows(class_terms, (x_real, x_syn_c, classes), theta, omega, mesh=mesh)


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
    """Distil ``data`` into ``settings.ipc`` images per class with DM.

    Args and keys as :func:`distill.matching.dc.distill` (``batches(step) -> (C, B, ...)``).

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
