"""Ψ: Kendall τ vs scipy, τ/Ψ aggregation, numpy AUC vs distill.metrics, EASE dual scores, panel."""

import jax
import numpy as np
import pytest
import scipy.stats

from distill import metrics
from selection import psi


@pytest.mark.parametrize("seed", range(6))
def test_kendall_tau_equals_scipy(x64, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 12))
    x = rng.integers(0, 4, n).astype(float)  # with ties
    y = rng.normal(size=n) if seed % 2 else rng.integers(0, 3, n).astype(float)
    want = scipy.stats.kendalltau(x, y)[0]
    got = psi.kendall_tau(x, y)
    if np.isnan(want):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(want, abs=1e-12)


def test_kendall_tau_extremes():
    x = np.arange(5.0)
    assert psi.kendall_tau(x, 2 * x) == pytest.approx(1.0)
    assert psi.kendall_tau(x, -x) == pytest.approx(-1.0)
    assert np.isnan(psi.kendall_tau(x, np.ones(5)))


def test_taus_and_psi():
    full = {"a": {"AUC": 3.0, "HR@100": 1.0, "nDCG@10": 1.0},
            "b": {"AUC": 2.0, "HR@100": 2.0, "nDCG@10": 2.0},
            "c": {"AUC": 1.0, "HR@100": 3.0, "nDCG@10": 3.0}}
    sampled = {"a": {"AUC": 30.0, "HR@100": 3.0, "nDCG@10": 1.0},
               "b": {"AUC": 20.0, "HR@100": 2.0, "nDCG@10": 1.0},
               "c": {"AUC": 10.0, "HR@100": 1.0, "nDCG@10": 1.0}}
    t = psi.taus(full, sampled)
    assert t["AUC"] == pytest.approx(1.0) and t["HR@100"] == pytest.approx(-1.0)
    assert np.isnan(t["nDCG@10"])
    assert psi.psi(np.array([t[m] for m in psi.METRICS])) == pytest.approx(0.0)
    assert np.isnan(psi.psi(np.array([np.nan])))


def test_mean_auc_equals_metrics_evaluate():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, (20, 30)).astype(np.float32)  # many ties
    test = rng.random((20, 30)) < 0.15
    excl = (rng.random((20, 30)) < 0.2) & ~test
    want = metrics.evaluate(s, test.astype(np.float32), excl.astype(np.float32), metrics=("auc",))["AUC"]
    assert psi.mean_auc(s, test, excl) == pytest.approx(want, abs=1e-4)


@pytest.mark.slow
def test_panel_on_block_data_ranks_personalised_models_first():
    # Two user groups with disjoint item halves: the personalised models (MF, EASE, ∞-AE)
    # must beat the ones with one global ranking (PopRec, bias-only) on nDCG@10.
    train, val, test = _block_data()
    res = psi.evaluate_panel(jax.random.key(0), train, val, test, train + val, mf_epochs=30)
    assert set(res) == set(psi.PANEL)
    worst_personal = min(res[m]["nDCG@10"] for m in ("MF", "EASE", "inf-AE"))
    best_global = max(res[m]["nDCG@10"] for m in ("PopRec", "bias-only"))
    assert worst_personal > best_global


def _block_data(u_n=40, i_n=30):
    """Two user groups with disjoint item halves; every user 7 train, 1 val, 1 test item."""
    rng = np.random.default_rng(0)
    x = np.zeros((u_n, i_n), np.float32)
    for u in range(u_n):
        x[u, rng.choice(np.arange(i_n // 2) + i_n // 2 * (u % 2), 9, replace=False)] = 1
    train, val, test = x.copy(), np.zeros_like(x), np.zeros_like(x)
    for u in range(u_n):
        items = np.flatnonzero(x[u])
        val[u, items[0]], test[u, items[1]] = 1, 1
        train[u, items[:2]] = 0
    return train, val, test


@pytest.mark.slow  # ~12 s, mostly compiling two more models' training scans
def test_neumf_and_mvae_members_learn_the_groups_even_for_users_left_out():
    # The two members of the 7-model panel beyond PANEL, on the block data: both must rank
    # the user's own half first (nDCG@10 far above PopRec's one global ranking). The sample
    # drops users 0–9 entirely (user sampling): Mult-VAE fits on the kept rows only and folds
    # the dropped users in through their context rows, so it still serves them.
    train, val, test = _block_data()
    sample = train.copy()
    sample[:10] = 0
    res = psi.evaluate_panel(jax.random.key(0), sample, val, test, train + val,
                             models=("PopRec", "NeuMF", "MVAE"), neumf_epochs=150, mvae_epochs=30)
    assert set(res) == {"PopRec", "NeuMF", "MVAE"}
    assert min(res["NeuMF"]["nDCG@10"], res["MVAE"]["nDCG@10"]) > res["PopRec"]["nDCG@10"] + 10, res


def test_validation():
    with pytest.raises(ValueError, match="y"):
        psi.kendall_tau(np.arange(3.0), np.arange(4.0))
    with pytest.raises(ValueError, match="x"):
        psi.kendall_tau(np.arange(1.0), np.arange(1.0))
    with pytest.raises(ValueError, match="x"):
        psi.kendall_tau(np.array([1.0, np.nan]), np.arange(2.0))
    with pytest.raises(ValueError, match="sampled"):
        psi.taus({"a": {}, "b": {}}, {"a": {}})
    with pytest.raises(ValueError, match="models"):
        psi.evaluate_panel(jax.random.key(0), np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)),
                           np.zeros((2, 3)), models=("SASRec",))
    with pytest.raises(ValueError, match="mvae_epochs"):
        psi.evaluate_panel(jax.random.key(0), np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)),
                           np.zeros((2, 3)), models=("MVAE",), mvae_epochs=0)
    with pytest.raises(ValueError, match="val"):
        psi.evaluate_panel(jax.random.key(0), np.zeros((2, 3)), np.zeros((3, 3)), np.zeros((2, 3)),
                           np.zeros((2, 3)))
    with pytest.raises(ValueError, match="test"):
        psi.mean_auc(np.zeros((2, 3)), np.zeros((2, 3), bool), np.ones((2, 3), bool))


def _sharded_panel_equals_single():
    from distill.parallel import make_mesh

    rng = np.random.default_rng(0)
    x = (rng.random((21, 25)) < 0.3).astype(np.float32)
    val = ((rng.random((21, 25)) < 0.1) & (x == 0)).astype(np.float32)
    test = ((rng.random((21, 25)) < 0.1) & (x == 0) & (val == 0)).astype(np.float32)
    test[:, 0] = 1 - x[:, 0] - val[:, 0] * (1 - x[:, 0])  # most users get a test item
    models = ("PopRec", "inf-AE")
    a = psi.evaluate_panel(jax.random.key(0), x, val, test, x + val, models=models)
    b = psi.evaluate_panel(jax.random.key(0), x, val, test, x + val, models=models, mesh=make_mesh())
    for m in models:
        for k in psi.METRICS:
            assert abs(a[m][k] - b[m][k]) < 1e-3, (m, k, a[m][k], b[m][k])


@pytest.mark.slow
def test_panel_on_8_devices(multidevice):
    multidevice(_sharded_panel_equals_single)
