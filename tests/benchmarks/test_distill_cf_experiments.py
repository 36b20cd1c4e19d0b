"""benchmarks.distill_cf_experiments: bins, fold-in, tables, and a tiny end-to-end run."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import _common
from benchmarks import distill_cf_experiments as bench
from distill import data as D


def _matrix(seed=0, n=23, items=40, density=0.2):
    return (np.random.default_rng(seed).random((n, items)) < density).astype(np.float32)


def test_user_and_item_bins_partition_and_are_sorted_by_count():
    x = _matrix()
    for bins, counts in ((bench.user_bins(x, 5), x.sum(1)), (bench.item_bins(x, 3), x.sum(0))):
        flat = np.concatenate(bins)
        np.testing.assert_array_equal(np.sort(flat), np.arange(counts.size))       # a partition
        assert max(map(len, bins)) - min(map(len, bins)) <= 1                      # equal-sized
        for lo, hi in zip(bins[:-1], bins[1:], strict=True):
            assert counts[lo].max() <= counts[hi].min()                            # colder bins first


def test_mass_bins_partition_items_and_hold_equal_interaction_shares():
    pop = np.array([0, 0, 1, 1, 2, 2, 4, 5, 9, 16], np.float32)            # 40 interactions
    x = (np.arange(40)[:, None] < pop[None, :]).astype(np.float32)        # item i liked by pop[i] users
    bins = bench.item_bins(x, 2, by="mass")
    np.testing.assert_array_equal(np.sort(np.concatenate(bins)), np.arange(10))
    # cumulative shares 0 0 .025 .05 .1 .15 .25 .375 .6 1: an item goes where its inclusive share lies
    assert [sorted(b.tolist()) for b in bins] == [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9]]
    bins = bench.item_bins(x, 4, by="mass")                                # cuts at 10, 20, 30 interactions
    assert [b.tolist() for b in bins] == [[0, 1, 2, 3, 4, 5, 6], [7], [8], [9]]   # an item is never split
    assert [len(b) for b in bench.item_bins(x, 4)] == [3, 3, 2, 2]


def test_binned_metrics_average_back_to_the_overall_hit_count():
    rng = np.random.default_rng(1)
    test = np.zeros((23, 40), np.float32)
    test[np.arange(23), rng.integers(0, 40, 23)] = 1                              # one test item per user
    p = bench.problem(np.zeros_like(test), np.zeros_like(test), test)
    scores = jnp.asarray(rng.normal(size=test.shape), jnp.float32)
    ub, ib = bench.user_bins(_matrix(), 4), bench.item_bins(_matrix(), 4)
    rows = bench.binned_metrics(scores, p, ub, {"item": ib})
    overall = bench.eval_test(scores, p)["HR@10"]
    user = [r for r in rows if r["bin_kind"] == "user"]
    assert [r["bin"] for r in user] == [0, 1, 2, 3]
    # one test item per user: HR@10 is a 0/1 hit, so the bin means weighted by size give the overall mean
    np.testing.assert_allclose(sum(r["HR@10"] * len(ub[r["bin"]]) for r in user) / 23, overall, atol=1e-4)
    item = [r for r in rows if r["bin_kind"] == "item"]
    sizes = [test[:, ib[r["bin"]]].sum() for r in item]
    np.testing.assert_allclose(sum(r["HR@10"] * s for r, s in zip(item, sizes, strict=True)) / 23, overall,
                               atol=1e-4)


def test_fold_in_is_the_ridge_solution():
    rng = np.random.default_rng(2)
    v, b, q = (jnp.asarray(a, jnp.float32) for a in (rng.normal(size=(30, 4)), rng.normal(size=30),
                                                     rng.random((5, 30))))
    got = bench.fold_in(v, b, q, 0.5)
    g = np.asarray(v).T @ np.asarray(v)
    u = np.linalg.lstsq(np.vstack([np.asarray(v), np.sqrt(0.5 * np.trace(g) / 4) * np.eye(4)]),
                        np.vstack([np.asarray(q).T, np.zeros((4, 5))]), rcond=None)[0].T
    np.testing.assert_allclose(got, u @ np.asarray(v).T + np.asarray(b), rtol=1e-4, atol=1e-4)


def test_summarise_means_stds_and_keeps_order():
    recs = [{"data": d, "model": m, "seed": s, "HR@10": h, "HR@100": 2 * h, "nDCG@10": h / 2, "chosen": "x"}
            for s, h in ((0, 10.0), (1, 20.0)) for d in ("full data", "Distill-CF") for m in ("EASE", "inf-AE")]
    rows = bench.summarise(recs, ("data", "model"))
    assert [(r["data"], r["model"]) for r in rows] == [("full data", "EASE"), ("full data", "inf-AE"),
                                                        ("Distill-CF", "EASE"), ("Distill-CF", "inf-AE")]
    assert (rows[0]["HR@10"], rows[0]["HR@10_std"], rows[0]["nDCG@10"], rows[0]["n_seeds"]) == (15.0, 5.0, 7.5, 2)


def test_random_users_and_budget():
    x = _matrix()
    assert bench.budget_users(671, 5) == 34 and bench.budget_users(10, 1) == 1
    s = bench.random_users(x, 7, seed=0)
    assert s.shape == (7, 40)
    assert {r.tobytes() for r in s} <= {r.tobytes() for r in x}
    np.testing.assert_array_equal(s, bench.random_users(x, 7, seed=0))


def test_defaults_of_each_experiment():
    a = bench._parse(["--experiment", "transfer"])
    assert a.seeds == [0, 1, 2] and a.budgets == [5.0, 10.0] and a.models == list(bench.FITTERS) and a.steps == 50
    a = bench._parse(["--experiment", "noise"])
    assert a.budgets == [5.0] and a.noise == [0.0, 1.0, 5.0] and a.models == ["inf-AE", "EASE"]
    a = bench._parse(["--experiment", "cold", "--quick"])
    assert a.seeds == [0] and a.steps == 10 and a.bins == 5
    with pytest.raises(SystemExit):
        bench._parse(["--experiment", "other"])


DATAS = ("full data", "random users", "Distill-CF", "Distill-CF binary")


def _tiny_movielens():
    """60 users over 200 items in two taste groups."""
    rng = np.random.default_rng(0)
    users, items = [], []
    for u in range(60):
        users += [u] * 12
        items += (rng.choice(100, 12, replace=False) + 100 * (u % 2)).tolist()
    return D.from_arrays(np.array(users), np.array(items))


@pytest.mark.slow
@pytest.mark.parametrize("experiment", bench.EXPERIMENTS)
def test_tiny_run_has_every_row(experiment, tmp_path, monkeypatch):
    monkeypatch.setattr(D, "load_movielens_small", _tiny_movielens)
    recorded = {p: p.stat().st_mtime_ns for p in _common.RESULTS.rglob("*") if p.is_file()}
    bench.main(["--experiment", experiment, "--quick", "--steps", "2", "--budgets", "10", "--seeds", "0", "1",
                "--out", str(tmp_path), "--bins", "3", "--cache", str(tmp_path / "cache")])
    got = json.loads((tmp_path / f"distill_cf_{experiment}_ml-latest-small_quick.json").read_text())
    keys = {tuple(r[k] for k in bench.KEYS[experiment]) for r in got["results"]["table"]}
    models = bench.DEFAULT_MODELS[experiment]
    if experiment == "transfer":
        want = {(b, d, m) for m in models for b, d in ((100.0, "full data"), (10.0, "random users"),
                                                       (10.0, "Distill-CF"), (10.0, "Distill-CF binary"))}
        want -= {(10.0, "Distill-CF", "MF (BPR)")}                                  # bench.SKIP
    elif experiment == "noise":
        want = {(lv, d, m) for lv in (0.0, 1.0) for d in DATAS for m in models}
    else:
        bins = [("all", -1)] + [(k, b) for k in ("user", "item", "item-mass") for b in range(3)]
        want = {(*kb, d, m) for kb in bins for d in DATAS for m in models}
    assert keys == want
    assert all(r["n_seeds"] == 2 and np.isfinite(r["HR@10"]) for r in got["results"]["table"])
    assert (tmp_path / f"distill_cf_{experiment}_ml-latest-small_quick.png").exists()
    n_summaries = 4 if experiment == "noise" else 2                                # per seed (and noise level)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == n_summaries
    assert {p: p.stat().st_mtime_ns for p in _common.RESULTS.rglob("*") if p.is_file()} == recorded
