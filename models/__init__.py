"""Models that distillation methods train on or differentiate through.

Submodules:
  kernels      — closed-form NNGP/NTK of fully-connected ReLU networks.
  infinite_ae  — ∞-AE: kernel ridge regression with the NTK (dissertation Ch. 3).
  ease         — EASE linear autoencoder baseline (Steck 2019).
  popularity   — popularity baseline.
  mf           — bias-only and matrix-factorisation (BPR) proxies for SVP-CF (dissertation Ch. 1).
  tuning       — λ grid search on validation data.
"""

from models import ease, infinite_ae, kernels, mf, popularity, tuning
from models.infinite_ae import InfiniteAE, KernelSpec
from models.kernels import Kernel, fc_relu, fc_relu_apply, fc_relu_blocked
from models.mf import MF

__all__ = [
    "kernels",
    "infinite_ae",
    "ease",
    "popularity",
    "mf",
    "MF",
    "tuning",
    "Kernel",
    "fc_relu",
    "fc_relu_blocked",
    "fc_relu_apply",
    "InfiniteAE",
    "KernelSpec",
]
