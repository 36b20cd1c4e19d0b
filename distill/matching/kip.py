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
The kernel rows of the real batch are spread over devices with
:func:`distill.parallel.sum_rows` when a ``mesh`` is given.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from distill import parallel
from distill.checks import check_array, check_choice, check_float, check_index_range, check_int, check_key, is_concrete
from distill.matching._common import check_parametrization
from distill.parametrize import Parametrization
from models.kernels import fc_relu

__all__ = ["KIPParams", "kip_init", "kip_targets", "krr_predict", "kip_loss"]


class KIPParams(NamedTuple):
    """KIP's learnables: synthetic-data parameters and labels ``(n, C)``."""

    data: Any
    labels: jax.Array


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


def kip_init(data_params: Any, y: jax.Array, n_classes: int) -> KIPParams:
    """``KIPParams`` with the labels initialised to :func:`kip_targets` of the int labels ``y``."""
    return KIPParams(data_params, kip_targets(y, n_classes))


def krr_predict(k_ts: jax.Array, k_ss: jax.Array, y_s: jax.Array, reg: float) -> jax.Array:
    """Kernel ridge regression ``K_ts (K_ss + λ tr(K_ss)/n I)⁻¹ Y_s``.

    Args:
      k_ts: ``(m, n)`` kernel between targets and support.
      k_ss: ``(n, n)`` support Gram matrix (symmetric PSD).
      y_s: ``(n, C)`` support labels.
      reg: λ ≥ 0, relative to the mean diagonal ``tr(K_ss)/n``.

    Returns:
      ``(m, C)`` predictions.
    """
    n = k_ss.shape[0]
    check_array(k_ss, "k_ss", ndim=2, kind="float", shape=(n, n), finite=True)
    check_array(k_ts, "k_ts", ndim=2, kind="float", shape=(None, n), finite=True)
    check_array(y_s, "y_s", ndim=2, kind="float", shape=(n, None), finite=True)
    reg = check_float(reg, "reg", min_value=0.0)
    a = k_ss + reg * jnp.trace(k_ss) / n * jnp.eye(n, dtype=k_ss.dtype)
    out = k_ts @ jax.scipy.linalg.solve(a, y_s, assume_a="pos")
    return out if is_concrete(reg) else jnp.where(reg >= 0, out, jnp.nan)  # traced reg < 0: NaN


def kip_loss(
    syn_params: KIPParams,
    batch: tuple[jax.Array, jax.Array],
    key: jax.Array,
    *,
    parametrization: Parametrization,
    kernel: str = "ntk",
    depth: int = 3,
    w_std: float = 2**0.5,
    b_std: float = 0.1,
    reg: float = 1e-6,
    learn_labels: bool = True,
    mesh: Mesh | None = None,
) -> jax.Array:
    """The KIP objective ``L_KIP`` (module docstring) for ``loop.run``.

    Args:
      syn_params: :class:`KIPParams` (data parameters, labels ``(n, C)``).
      batch: ``(x_real (m, ...), y_real (m, C))`` — real inputs and their targets
        (e.g. :func:`kip_targets`).
      key: PRNG key (materialization only).
      parametrization: how ``syn_params.data`` become inputs ``(n, ...)``.
      kernel: ``'ntk'`` or ``'nngp'``.
      depth, w_std, b_std: the FC ReLU kernel's architecture (:func:`models.kernels.fc_relu`).
      reg: λ, relative ridge.
      learn_labels: let the gradient reach ``syn_params.labels``.
      mesh: spread the real rows over this mesh's devices.

    Returns:
      Scalar loss.
    """
    check_key(key)
    if not isinstance(syn_params, KIPParams):
        raise TypeError(f"syn_params: expected KIPParams (see kip_init), got {type(syn_params).__name__}")
    check_parametrization(parametrization)
    check_choice(kernel, "kernel", ("ntk", "nngp"))
    depth = check_int(depth, "depth", min_value=0)
    reg = check_float(reg, "reg", min_value=0.0)
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"batch: expected (x_real, y_real), got {type(batch).__name__}")
    x_real, y_real = batch
    x_s = parametrization.materialize(syn_params.data, key)
    n = x_s.shape[0]
    y_s = syn_params.labels if learn_labels else jax.lax.stop_gradient(syn_params.labels)
    check_array(y_s, "syn_params.labels", ndim=2, kind="float", shape=(n, None))
    check_array(x_real, "batch", kind="float", shape=(None,) + tuple(x_s.shape[1:]))
    check_array(y_real, "batch", ndim=2, kind="float", shape=(x_real.shape[0], y_s.shape[1]))
    x_s = x_s.reshape((n, -1))
    kern = lambda a, b: getattr(fc_relu(a, b, depth=depth, w_std=w_std, b_std=b_std), kernel)
    k_ss = kern(x_s, None)
    a = k_ss + reg * jnp.trace(k_ss) / n * jnp.eye(n, dtype=k_ss.dtype)
    alpha = jax.scipy.linalg.solve(a, y_s, assume_a="pos")

    def sq_err(rows, w, x_s, alpha):
        xt, yt = rows
        pred = kern(xt.reshape((xt.shape[0], -1)), x_s) @ alpha
        return jnp.sum(w * jnp.sum((pred - yt) ** 2, axis=-1))

    total = parallel.sum_rows(sq_err, (x_real.astype(x_s.dtype), y_real.astype(x_s.dtype)), x_s, alpha, mesh=mesh)
    return 0.5 * total / x_real.shape[0]
