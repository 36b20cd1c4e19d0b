"""benchmarks.farzi: the classical baselines on a hand-made split, and the run's defaults."""

import jax.numpy as jnp
import numpy as np

from benchmarks.farzi import _args, classical_rows, paired_gains
from distill import farzi

N_ITEMS, PAD = 20, 20


def _split():
    # 12 users; item i is always followed by (i + 1) mod 20; every sequence starts at i0 = user.
    n, width = 12, 6
    seq = (np.arange(n)[:, None] + np.arange(width + 2)[None]) % N_ITEMS  # whole history, oldest first
    train = seq[:, :-2]
    onehot = lambda t: np.eye(N_ITEMS, dtype=np.float32)[t]

    def hist(cols):
        h = np.zeros((n, N_ITEMS), np.float32)
        np.put_along_axis(h, cols, 1.0, axis=1)
        return h

    return {"train": jnp.asarray(train), "pad": PAD, "n_items": N_ITEMS, "n_users": n,
            "val_in": jnp.asarray(train[:, 1:]), "val_hist": hist(seq[:, :-2]), "val_t": onehot(seq[:, -2]),
            "test_in": jnp.asarray(seq[:, 1:-1]), "test_hist": hist(seq[:, :-1]), "test_t": onehot(seq[:, -1])}


def test_markov_finds_the_deterministic_successor_and_popularity_does_not():
    rows = {r["method"]: r for r in classical_rows(_split(), seeds=[0, 1, 2])}
    mk, pop = rows["Markov (1st order)"], rows["popularity"]
    # Test pair (i0+6 → i0+7): training holds the pairs j → j+1 for j = 0..15, so users
    # i0 = 0..9 are ranked first (HR = nDCG = 1) and users 10, 11 (pairs 16→17, 17→18) fall
    # back to popularity, where their item (seen once or never) is not in the top 10.
    np.testing.assert_allclose([mk["HR@10"], mk["nDCG@10"]], [1000 / 12, 1000 / 12])
    assert mk["std"]["HR@10"] == 0.0 and len(mk["steps"]) == 3
    assert pop["HR@10"] < 100.0


def test_defaults_are_distills():
    a = _args([])
    s = farzi.Settings()
    assert (a.inner_steps, a.inner_lr, a.latent_dim, a.outer_lr) == (30, 1e-2, 32, 1e-3)
    assert (a.latent_dim, a.outer_lr, a.init, a.teacher_mix) == (s.latent_dim, s.learning_rate, s.init, s.teacher_mix)
    assert a.inner_steps * a.inner_lr >= 0.3
    assert a.init == "markov" and set(a.init_rows) == {"popularity", "markov"}
    assert a.full_dropouts == [0.0, 0.2] and a.full_lrs == [1e-3, 2e-3] and not a.record
    assert (a.syn_eval_every, a.syn_patience) == (10, 20)  # students peak after 30-110 steps


def test_paired_gains_subtract_the_start_seed_by_seed():
    row = lambda method, hr, **kw: {"method": method, "data": "[10×150]", "per_seed": [
        {"HR@10": h, "nDCG@10": h / 2} for h in hr], **kw}
    rows = [row("Farzi init markov (0 outer steps)", [9.0, 10.0, 11.0]),
            row("Farzi init popularity (0 outer steps)", [5.0, 5.0, 5.0]),
            row("Farzi", [10.0, 12.0, 11.0], init="markov"),
            row("random", [1.0, 2.0, 3.0])]
    paired_gains(rows)
    g = rows[2]["gain_over_init"]
    # differences 1, 2, 0: mean 1, population std sqrt(2/3), higher on 2 of 3 seeds
    np.testing.assert_allclose([g["HR@10"]["mean"], g["HR@10"]["std"]], [1.0, np.sqrt(2 / 3)])
    np.testing.assert_allclose(g["nDCG@10"]["per_seed"], [0.5, 1.0, 0.0])
    assert g["HR@10"]["seeds_higher"] == 2
    assert all("gain_over_init" not in r for i, r in enumerate(rows) if i != 2)
