"""SAS: expected augmentation distance == brute force; subsets preserve latent class centres."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from selection.sas import augmentation_embeddings, expected_augmentation_distance, sas
from selection.coresets import facility_location_value


def test_expected_augmentation_distance_brute_force(x64):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3, 6, 4))
    got = np.asarray(expected_augmentation_distance(emb))
    ref = np.zeros((6, 6))
    for i, j in itertools.product(range(6), range(6)):
        ref[i, j] = np.mean([np.linalg.norm(emb[a, i] - emb[b, j]) for a in range(3) for b in range(3)])
    np.testing.assert_allclose(got, ref, atol=1e-10)
    assert np.all(np.diag(got) > 0)  # two augmentations of one example differ


def test_self_distance_is_exact_in_float32():
    """The a = b, i = j terms are exactly 0, not √(rounding noise) ≈ √ε·‖e‖ (~1e-2 here)."""
    emb = (30.0 + np.random.default_rng(2).normal(size=(2, 5, 8))).astype(np.float32)
    got = np.asarray(expected_augmentation_distance(emb), np.float64)
    e = emb.astype(np.float64)
    ref = np.mean([np.linalg.norm(e[a][:, None] - e[b][None], axis=-1) for a in range(2) for b in range(2)], 0)
    np.testing.assert_allclose(np.diag(got), np.diag(ref), rtol=2e-3)
    np.testing.assert_array_equal(np.asarray(expected_augmentation_distance(emb[:1]))[np.eye(5, dtype=bool)], 0.0)


def test_augmentation_embeddings_and_identity_augmentation(x64):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 3))
    w = rng.normal(size=(3, 2))
    enc = lambda xb: jnp.tanh(xb @ w)
    emb = augmentation_embeddings(jax.random.PRNGKey(0), enc, x, lambda k, xb: xb, n_augment=2)
    assert emb.shape == (2, 7, 2)
    d = np.asarray(expected_augmentation_distance(emb))
    e = np.tanh(x @ w)
    np.testing.assert_allclose(d, np.linalg.norm(e[:, None] - e[None], axis=-1), atol=1e-7)
    noisy = augmentation_embeddings(jax.random.PRNGKey(0), enc, x, lambda k, xb: xb + 0.1 * jax.random.normal(k, xb.shape), n_augment=3)
    assert not np.allclose(noisy[0], noisy[1])


def _latent_blobs(seed, per=40, c=3, d=2):
    rng = np.random.default_rng(seed)
    centers = 6 * rng.normal(size=(c, d))
    lab = np.repeat(np.arange(c), per).astype(np.int32)
    x = centers[lab] + rng.normal(size=(c * per, d))
    return x, lab


def test_sas_budgets_and_greedy_quality():
    x, lab = _latent_blobs(0, per=8, c=2)
    emb = np.stack([x + 0.1 * np.random.default_rng(a).normal(size=x.shape) for a in range(3)])
    d = np.asarray(expected_augmentation_distance(emb))
    res = sas(d, 4, latent=lab)
    assert len(res.indices) == 4
    assert np.bincount(lab[res.indices], minlength=2).tolist() == [2, 2]
    for c in range(2):  # greedy ≥ (1 − 1/e) OPT, by brute force over the class
        members = np.flatnonzero(lab == c)
        dc = d[np.ix_(members, members)]
        sim = dc.max() - dc
        picked = [int(np.flatnonzero(members == i)[0]) for i in res.indices if lab[i] == c]
        opt = max(facility_location_value(sim, s) for s in itertools.combinations(range(len(members)), 2))
        assert facility_location_value(sim, picked) >= (1 - 1 / np.e) * opt


def test_sas_preserves_latent_class_centres_better_than_random():
    """The tutorial's claim: ‖μ_k − μ_k^S‖ is small for SAS subsets (central + covering examples)."""
    x, lab = _latent_blobs(1)
    emb = np.stack([x + 0.2 * np.random.default_rng(a).normal(size=x.shape) for a in range(4)]).astype(np.float32)
    d = np.asarray(expected_augmentation_distance(emb))
    res = sas(d, 12, embeddings=emb.mean(0), n_classes=3, key=jax.random.PRNGKey(0))
    assert len(np.unique(res.latent)) == 3

    def centre_err(idx):
        return np.mean([np.linalg.norm(x[res.latent == c].mean(0) - x[idx][res.latent[idx] == c].mean(0)) for c in range(3)])

    rng = np.random.default_rng(0)
    rand = []
    for _ in range(50):  # random subsets with the same per-class sizes
        idx = np.concatenate([rng.choice(np.flatnonzero(res.latent == c), np.sum(res.latent[res.indices] == c), replace=False) for c in range(3)])
        rand.append(centre_err(idx))
    assert centre_err(res.indices) < 0.5 * np.mean(rand)


def test_validation():
    d = np.ones((5, 5))
    with pytest.raises(ValueError, match="distances"):
        sas(np.ones((5, 4)), 2, latent=np.zeros(5, np.int32))
    with pytest.raises(ValueError, match="k"):
        sas(d, 6, latent=np.zeros(5, np.int32))
    with pytest.raises(ValueError, match="latent"):
        sas(d, 2)
    with pytest.raises(ValueError, match="latent"):
        sas(d, 2, latent=np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="emb"):
        expected_augmentation_distance(np.ones((5, 4)))
    with pytest.raises(TypeError, match="encode"):
        augmentation_embeddings(jax.random.PRNGKey(0), None, np.ones((3, 2)), lambda k, x: x)
    with pytest.raises(ValueError, match="n_augment"):
        augmentation_embeddings(jax.random.PRNGKey(0), lambda x: x, np.ones((3, 2)), lambda k, x: x, n_augment=0)


def _sharded_equals_single():
    from distill.parallel import make_mesh

    emb = np.random.default_rng(0).normal(size=(2, 13, 3)).astype(np.float32)
    a = np.asarray(expected_augmentation_distance(emb))
    b = np.asarray(expected_augmentation_distance(emb, mesh=make_mesh()))
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_sharded_equals_single_device(multidevice):
    multidevice(_sharded_equals_single)
