"""Dataset distillation by matching: gradients (DC/DSA), distributions (DM), trajectories
(MTT), meta-matching (BPTT) and KIP.

Every objective is a pure ``loss(syn_params, batch, key) -> scalar`` (bind the settings
with ``functools.partial``) for :func:`distill.loop.run`, generic over the data
:class:`~distill.parametrize.Parametrization` and the model ``ModelFns``.
"""

from distill.matching import augment
from distill.matching._common import syn_labels, xent
from distill.matching.dc import dc_loss, layer_distance, match_distance
from distill.matching.dm import dm_loss, mmd
from distill.matching.images import latent_images, save_synthetic
from distill.matching.kip import KIPParams, kip_init, kip_loss, kip_targets, krr_predict
from distill.matching.meta import meta_matching_loss
from distill.matching.mtt import (
    MTTParams,
    expert_trajectories,
    load_trajectories,
    mtt_init,
    mtt_loss,
    save_trajectories,
    student,
)

__all__ = [
    "augment",
    "syn_labels",
    "xent",
    "dc_loss",
    "layer_distance",
    "match_distance",
    "dm_loss",
    "mmd",
    "latent_images",
    "save_synthetic",
    "KIPParams",
    "kip_init",
    "kip_loss",
    "kip_targets",
    "krr_predict",
    "meta_matching_loss",
    "MTTParams",
    "expert_trajectories",
    "load_trajectories",
    "mtt_init",
    "mtt_loss",
    "save_trajectories",
    "student",
]
