"""Meta-learned data distillation in JAX: data, metrics, and the shared mechanisms.

Submodules:
  data      — loaders and splits (MovieLens, PTB, digits), numpy arrays.
  metrics   — CF ranking metrics (HR, nDCG, PSP, AUC), jitted and vmapped over users.
  parallel  — device meshes and the row-sharded map/sum wrappers every method uses.
"""

from distill import data, metrics, parallel

__all__ = ["data", "metrics", "parallel"]
