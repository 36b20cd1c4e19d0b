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
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from distill import inner, parallel
from distill.checks import check_array, check_choice, check_int, check_key
from distill.matching._common import check_model, check_parametrization, xent
from distill.parametrize import Parametrization

__all__ = ["meta_matching_loss"]


def meta_matching_loss(
    syn_params: Any,
    batch: tuple[jax.Array, jax.Array],
    key: jax.Array,
    *,
    parametrization: Parametrization,
    model: Any,
    labels: jax.Array,
    steps: int,
    optimizer: inner.Adam = inner.Adam(1e-2),
    mode: str = "reverse_adam",
    reverse_every: int | str | None = "auto",
    mesh: Mesh | None = None,
) -> jax.Array:
    """``L_MM``: real-batch cross-entropy of a fresh network after T Adam steps on S.

    Args:
      syn_params: synthetic-data parameters (materialized to ``(n, ...)`` inputs).
      batch: ``(x_real (m, ...), y_real (m,) int)``.
      key: PRNG key (θ₀ and materialization).
      parametrization: how ``syn_params`` become inputs.
      model: ``ModelFns`` classifier.
      labels: ``(n,)`` int or ``(n, C)`` soft labels of the synthetic inputs.
      steps: T, inner Adam steps.
      optimizer: inner Adam settings.
      mode, reverse_every: :func:`distill.inner.train` settings.
      mesh: shard the real rows over this mesh.

    Returns:
      Scalar mean cross-entropy on the real batch.
    """
    check_key(key)
    check_parametrization(parametrization)
    check_model(model)
    steps = check_int(steps, "steps", min_value=1)
    check_choice(mode, "mode", inner.MODES)
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"batch: expected (x_real, y_real), got {type(batch).__name__}")
    x_real, y_real = batch
    check_array(y_real, "batch", ndim=1, kind="int", shape=(x_real.shape[0],))
    k_mat, k_init = jax.random.split(key)
    x_syn = parametrization.materialize(syn_params, k_mat)
    check_array(labels, "labels", ndim=(1, 2), shape=(x_syn.shape[0],) + tuple(labels.shape[1:]))
    check_array(x_real, "batch", kind="float", shape=(None,) + tuple(x_syn.shape[1:]))
    theta0 = model.init(k_init, jnp.zeros((1,) + x_syn.shape[1:], x_syn.dtype))
    theta = inner.train(
        model.apply, xent, theta0, (x_syn, labels), steps=steps, optimizer=optimizer, mode=mode, reverse_every=reverse_every
    )

    def nll(rows, w, th):
        xr, yr = rows
        return jnp.sum(w * optax.softmax_cross_entropy_with_integer_labels(model.apply(th, xr), yr))

    return parallel.sum_rows(nll, (x_real.astype(x_syn.dtype), y_real), theta, mesh=mesh) / x_real.shape[0]
