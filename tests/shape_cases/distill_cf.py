"""Distill-CF on 30 users × 12 items in two taste groups: 3 synthetic users, 3 steps."""

import numpy as np

from distill import distill_cf


def case():
    rng = np.random.default_rng(0)
    group = np.arange(30) % 2
    p = np.where(group[:, None] == (np.arange(12) // 6)[None, :], 0.6, 0.05)
    x = (rng.random((30, 12)) < p).astype(np.float32)
    x[np.arange(30), 6 * group] = 1.0  # every user keeps a training item
    to_val = (rng.random(x.shape) < 0.25) & (x > 0)
    to_val[np.arange(30), 6 * group] = False
    data = distill_cf.Data(train=x * ~to_val, val=(x * to_val).astype(np.float32))
    settings = distill_cf.Settings(
        n_syn_users=3, n_samples=5, tau=1.0, init_scale=3.0, steps=3, eval_every=3, patience=None,
        batch_size=16, lams=(1.0, 10.0),
    )
    return distill_cf, data, settings
