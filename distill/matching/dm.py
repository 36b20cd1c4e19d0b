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
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from distill import parallel
from distill.checks import check_array, check_int, check_key
from distill.matching import augment
from distill.matching._common import check_model, check_parametrization, class_grouped_setup
from distill.parametrize import Parametrization

__all__ = ["mmd", "dm_loss"]


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


def dm_loss(
    syn_params: Any,
    batch: jax.Array,
    key: jax.Array,
    *,
    parametrization: Parametrization,
    embed: Any,
    n_classes: int,
    dsa: str | None = None,
    mesh: Mesh | None = None,
) -> jax.Array:
    """The distribution-matching objective ``L_DM`` (module docstring) for ``loop.run``.

    Args:
      syn_params: synthetic-data parameters; materialized to class-grouped ``(C·ipc, ...)``.
      batch: real inputs per class ``(C, B, ...)``.
      key: PRNG key (the random embedding ϑ, augmentations, materialization).
      parametrization: how ``syn_params`` become data.
      embed: ``ModelFns`` of the embedding network ψ (e.g. ``convnet(..., features_only=True)``);
        re-initialised from ``key`` at every call.
      n_classes: C.
      dsa: DSA strategy or ``None``; one ω per call, applied to real and synthetic images alike.
      mesh: spread the classes over this mesh's devices.

    Returns:
      Scalar loss ``Σ_c MMD²_c``.

    Source: Zhao & Bilen (2023), Eq. 4 (DM).
    """
    check_key(key)
    check_parametrization(parametrization)
    check_model(embed, "embed")
    n_classes = check_int(n_classes, "n_classes", min_value=1)
    if dsa is not None:
        augment.parse_strategy(dsa)
    _, x_syn_c, x_real, theta, k_aug = class_grouped_setup(parametrization, syn_params, batch, key, n_classes, embed)

    def class_terms(rows, w, theta, omega):
        xr, xs, c = rows

        def one(xr_c, xs_c, c_, w_c):
            if omega is not None:
                xr_c, xs_c = augment.apply(omega, xr_c), augment.apply(omega, xs_c)
            f_r = jax.lax.stop_gradient(embed.apply(theta, xr_c))
            f_s = embed.apply(theta, xs_c)
            return w_c * mmd(f_r, f_s)

        return jnp.sum(jax.vmap(one)(xr, xs, c, w))

    classes = jnp.arange(n_classes, dtype=jnp.int32)
    # one ω for all classes (unbatched under the class vmap, see dc.py)
    omega = None if dsa is None else augment.sample(k_aug, dsa)
    return parallel.sum_rows(class_terms, (x_real, x_syn_c, classes), theta, omega, mesh=mesh)
