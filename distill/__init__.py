"""Meta-learned data distillation in JAX: data, metrics, and the shared mechanisms.

Submodules:
  data      — loaders and splits (MovieLens, PTB, digits), numpy arrays.
  metrics   — CF ranking metrics (HR, nDCG, PSP, AUC), jitted and vmapped over users.
  parallel  — device meshes and the row-sharded map/sum wrappers every method uses.
  parametrize — how synthetic data is represented (identity, latent factorization, ...).
  loop      — the one outer loop (optax, jit, tqdm, early stopping, orbax resume).
  export    — the one export format (.npz + .json, numpy-only loading).
"""

from distill import data, export, loop, matching, metrics, parallel, parametrize

__all__ = ["data", "export", "loop", "matching", "metrics", "parallel", "parametrize"]
