"""Dataset distillation by matching: gradients (DC/DSA), distributions (DM), trajectories
(MTT), meta-matching (BPTT) and KIP.

Each method is a module in the one method shape — ``Settings`` / ``Data`` / ``Result`` /
``init`` / ``sample_batch`` / ``objective`` / ``distill``: :mod:`~distill.matching.dc`
(DC, and DSA with ``Settings(dsa=...)``), :mod:`~distill.matching.dm`,
:mod:`~distill.matching.mtt`, :mod:`~distill.matching.meta` and
:mod:`~distill.matching.kip`. Every ``objective(syn_params, batch, key, settings)`` is pure
and jittable (``settings`` static); the synthetic images are the pixels or Farzi's latent
factorization (``Settings(images=Latent(...))``).
"""

from distill.matching import augment, common, dc, dm, kip, meta, mtt
from distill.matching.common import Data, Latent, syn_labels, xent
from distill.matching.dc import layer_distance, match_distance
from distill.matching.dm import mmd
from distill.matching.images import latent_images, save_synthetic
from distill.matching.kip import KIPParams, kip_targets
from distill.matching.mtt import MTTParams, expert_trajectories, student

__all__ = [
    "augment",
    "common",
    "dc",
    "dm",
    "kip",
    "meta",
    "mtt",
    "Data",
    "Latent",
    "syn_labels",
    "xent",
    "layer_distance",
    "match_distance",
    "mmd",
    "latent_images",
    "save_synthetic",
    "KIPParams",
    "kip_targets",
    "MTTParams",
    "expert_trajectories",
    "student",
]
