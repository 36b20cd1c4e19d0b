"""Kernel Inducing Points (KIP): kernel ridge regression on the synthetic support.

Nguyen, Chen & Lee (ICLR 2021), "Dataset Meta-Learning from Kernel Ridge-Regression";
lecture 001 (further reading "NTK kernel for meta-learning"). The inner problem — train
an infinitely wide network on S — has the closed form of kernel ridge regression, so
the bilevel objective needs no unrolling::

    ŷ(X_t) = K(X_t, X_s) (K(X_s, X_s) + λ · tr(K_ss)/|S| · I)⁻¹ Y_s
    L_KIP(X_s, Y_s) = ½ · (1/|B|) Σ_{(x, y) ∈ B} ‖ŷ(x) − y‖²

with the NTK (or NNGP) of a fully-connected ReLU network from
:func:`models.kernels.fc_relu` on *flattened* images (the papers use conv kernels from
neural-tangents; an FC kernel is what this library has) and targets ``one_hot − 1/C``
(mean-zero, as in KIP). The labels ``Y_s`` are learnable (``learn_labels``) or fixed.
The solve is :func:`models.krr.solve` (Cholesky, the relative ridge shared with ∞-AE);
the kernel rows of the real batch are spread over devices with
:func:`distill.parallel.sum_rows` when a ``mesh`` is given.

The method in the one shape: ``Settings`` / ``Data`` / ``Result`` / :func:`init` /
:func:`sample_batch` / :func:`objective` / :func:`distill`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from distill import parallel
from distill.checks import check_array, check_choice, check_float, check_index_range, check_int, check_key
from distill.matching import common
from distill.matching.common import Data, Latent
from models import krr
from models.kernels import KernelSpec, check_spec, fc_relu

__all__ = ["Settings", "Data", "KIPParams", "Result", "init", "sample_batch", "objective", "distill", "kip_targets"]


class Settings(NamedTuple):
    """KIP settings (hashable: a static ``jit`` argument).

    Attributes:
      ipc: synthetic images per class (the benchmark's IPC 10).
      steps: outer Adam updates (the matching benchmark's 150).
      lr: outer Adam learning rate (the benchmark's 0.01 on pixels; 0.05 for ``Latent``).
      images: ``"pixels"`` or a :class:`distill.matching.Latent`.
      kernel: the FC ReLU kernel's architecture (:class:`models.kernels.KernelSpec`);
        depth 3 as KIP's FC kernels (Nguyen et al. 2021 use 1-3 hidden layers), σ_w = √2,
        σ_b = 0.1.
      kind: ``'ntk'`` (KIP's default) or ``'nngp'``.
      lam: λ, the relative ridge (1e-6: KIP's small regulariser; the benchmark's).
      learn_labels: let the gradient reach the labels (KIP's label learning; the
        benchmark keeps them fixed).
      real_batch: real rows per step (the benchmark's 256).
      eval_every: updates between ``evaluate`` calls (``loop.run``'s 50).
    """

    ipc: int = 10
    steps: int = 150
    lr: float = 0.01
    images: str | Latent = "pixels"
    kernel: KernelSpec = KernelSpec(depth=3)
    kind: str = "ntk"
    lam: float = 1e-6
    learn_labels: bool = True
    real_batch: int = 256
    eval_every: int = 50


class KIPParams(NamedTuple):
    """KIP's learnables: synthetic-image parameters and labels ``(n, C)``."""

    data: Any
    labels: jax.Array


#: :class:`distill.matching.common.Result` — ``(params, data, settings, history)``.
Result = common.Result


def _check_settings(settings: Any) -> Settings:
    common.check_base_settings(settings, Settings)
    check_spec(settings.kernel, "settings.kernel")
    check_choice(settings.kind, "settings.kind", ("ntk", "nngp"))
    check_float(settings.lam, "settings.lam", min_value=0.0)
    check_int(settings.real_batch, "settings.real_batch", min_value=1)
    if not isinstance(settings.learn_labels, bool):
        raise TypeError(f"settings.learn_labels: expected a bool, got {type(settings.learn_labels).__name__}")
    return settings


def kip_targets(y: jax.Array, n_classes: int) -> jax.Array:
    """Mean-zero regression targets ``one_hot(y) − 1/C``, ``(n, C)`` float.

    Labels outside ``[0, C)`` raise when concrete; under ``jit`` their rows are NaN.
    """
    check_array(y, "y", ndim=1, kind="int")
    n_classes = check_int(n_classes, "n_classes", min_value=2)
    check_index_range(y, "y", n_classes, "label")
    y = jnp.asarray(y)
    valid = (y >= 0) & (y < n_classes)
    return jnp.where(valid[:, None], jax.nn.one_hot(y, n_classes) - 1.0 / n_classes, jnp.nan)


def init(key: jax.Array, data: Data, settings: Settings = Settings(), *, start: Any = None) -> KIPParams:
    """``KIPParams``: the initial images (``ipc`` random real images per class, ``start``, or
    the latent factors for ``images=Latent``) and labels :func:`kip_targets` of their classes."""
    settings = _check_settings(settings)
    data = common.check_data(data, settings.ipc)
    images = common.init_images(key, data, settings.ipc, settings.images, start)
    return KIPParams(images, kip_targets(common.syn_labels(data.n_classes, settings.ipc), data.n_classes))


def sample_batch(key: jax.Array, data: Data, settings: Settings = Settings()) -> tuple[jax.Array, jax.Array]:
    """``(x (m, ...), kip_targets(y) (m, C))`` of ``m = settings.real_batch`` distinct random real rows."""
    settings = _check_settings(settings)
    data = common.check_data(data)
    idx = common.row_batch(key, data.x.shape[0], settings.real_batch)
    return jnp.asarray(data.x[idx]), kip_targets(jnp.asarray(data.y[idx]), data.n_classes)


def objective(
    syn_params: KIPParams, batch: tuple[jax.Array, jax.Array], key: jax.Array, settings: Settings = Settings(), *,
    mesh: Mesh | None = None,
) -> jax.Array:
    """The KIP objective ``L_KIP`` (module docstring), pure and jittable.

    Args:
      syn_params: :class:`KIPParams` (image parameters, labels ``(n, C)``).
      batch: ``(x_real (m, ...), y_real (m, C))`` — real inputs and their targets
        (:func:`sample_batch`).
      key: PRNG key (materialization only).
      settings: :class:`Settings`.
      mesh: spread the real rows over this mesh's devices.

    Returns:
      Scalar loss.
    """
    check_key(key)
    settings = _check_settings(settings)
    if not isinstance(syn_params, KIPParams):
        raise TypeError(f"syn_params: expected KIPParams (see init), got {type(syn_params).__name__}")
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"batch: expected (x_real, y_real), got {type(batch).__name__}")
    x_real, y_real = batch
    check_array(x_real, "batch", kind="float")
    n = syn_params.labels.shape[0]
    x_s = common.parametrization(settings.images, n, tuple(x_real.shape[1:])).materialize(syn_params.data, key)
    y_s = syn_params.labels if settings.learn_labels else jax.lax.stop_gradient(syn_params.labels)
    check_array(y_s, "syn_params.labels", ndim=2, kind="float", shape=(x_s.shape[0], None))
    check_array(x_real, "batch", kind="float", shape=(None,) + tuple(x_s.shape[1:]))
    check_array(y_real, "batch", ndim=2, kind="float", shape=(x_real.shape[0], y_s.shape[1]))
    x_s = x_s.reshape((n, -1))
    spec, kind = settings.kernel, settings.kind
    kern = lambda a, b: getattr(fc_relu(a, b, depth=spec.depth, w_std=spec.w_std, b_std=spec.b_std), kind)  # noqa: E731
    alpha = krr.solve(kern(x_s, None), y_s, settings.lam)

    def sq_err(rows, w, x_s, alpha):
        xt, yt = rows
        pred = kern(xt.reshape((xt.shape[0], -1)), x_s) @ alpha  # krr.predict, the solve shared by the rows
        return jnp.sum(w * jnp.sum((pred - yt) ** 2, axis=-1))

    total = parallel.sum_rows(sq_err, (x_real.astype(x_s.dtype), y_real.astype(x_s.dtype)), x_s, alpha, mesh=mesh)
    return 0.5 * total / x_real.shape[0]


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
    """Distil ``data`` into ``settings.ipc`` images per class (and their labels) with KIP.

    Args and keys as :func:`distill.matching.dc.distill` (``batches(step) -> (x, targets)``).

    Returns:
      :class:`Result`.
    """
    settings = _check_settings(settings)
    data = common.check_data(data, settings.ipc)
    params, history = common.distill_images(
        (init, sample_batch, objective), key, data, settings, mesh=mesh, checkpoint_dir=checkpoint_dir,
        progress=progress, evaluate=evaluate, init_params=init_params, batches=batches)
    x_syn = common.synthetic_images(key, params.data, data, settings)
    return Result(params, (x_syn, np.asarray(params.labels)), settings, history)
