"""Models that distillation methods train on or differentiate through.

Submodules:
  kernels      — closed-form NNGP/NTK of fully-connected ReLU networks.
  infinite_ae  — ∞-AE: kernel ridge regression with the NTK (dissertation Ch. 3).
  ease         — EASE linear autoencoder baseline (Steck 2019).
  popularity   — popularity baseline.
  tuning       — λ grid search on validation data.
"""

from models import ease, infinite_ae, kernels, popularity, tuning
from models.infinite_ae import InfiniteAE, KernelSpec
from models.kernels import Kernel, fc_relu, fc_relu_apply, fc_relu_blocked

__all__ = [
    "kernels",
    "infinite_ae",
    "ease",
    "popularity",
    "tuning",
    "Kernel",
    "fc_relu",
    "fc_relu_blocked",
    "fc_relu_apply",
    "InfiniteAE",
    "KernelSpec",
]
