"""SemDeDup removes planted duplicates and nothing else; S2L samples clusters evenly."""

import jax
import numpy as np
import pytest

from selection.s2l import s2l
from selection.semdedup import semdedup
from selection.semdedup import semdedup_fraction


def test_semdedup_removes_planted_duplicates_only():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(60, 32))
    dup_of = rng.choice(60, 15, replace=False)
    dups = base[dup_of] * rng.uniform(0.5, 2.0, (15, 1)) + 1e-3 * rng.normal(size=(15, 32))
    x = np.concatenate([base, dups]).astype(np.float32)
    res = semdedup(jax.random.PRNGKey(0), x, n_clusters=5, threshold=0.95)
    removed = np.flatnonzero(~res.keep)
    assert len(removed) == 15
    # exactly one member of each (original, duplicate) pair is removed
    for k, j in enumerate(dup_of):
        assert res.keep[j] != res.keep[60 + k]
    kept = semdedup_fraction(res, 0.8)
    assert kept.shape == (60,) and set(np.flatnonzero(res.keep)) == set(kept.tolist())


def test_s2l_samples_trajectory_clusters_evenly():
    rng = np.random.default_rng(0)
    shapes = [np.linspace(2, 0, 6), np.linspace(2, 2, 6), np.linspace(0.5, 0, 6)]
    sizes = [100, 20, 10]
    traj = np.concatenate([s + 0.01 * rng.normal(size=(m, 6)) for s, m in zip(shapes, sizes, strict=False)]).astype(np.float32)
    idx = s2l(jax.random.PRNGKey(0), traj, 30, n_clusters=3)
    assert idx.shape == (30,) and len(set(idx.tolist())) == 30
    counts = [np.sum(idx < 100), np.sum((idx >= 100) & (idx < 120)), np.sum(idx >= 120)]
    assert counts == [10, 10, 10]


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="threshold"):
        semdedup(jax.random.PRNGKey(0), np.ones((4, 2), np.float32), n_clusters=2, threshold=2.0)
    with pytest.raises(ValueError, match="n_clusters"):
        semdedup(jax.random.PRNGKey(0), np.ones((4, 2), np.float32), n_clusters=5)
    with pytest.raises(ValueError, match="trajectories"):
        s2l(jax.random.PRNGKey(0), np.ones(4, np.float32), 2)
