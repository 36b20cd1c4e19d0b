"""benchmarks.distill_cf: flags only override the library defaults; a tiny run end to end."""

import json

import numpy as np
import pytest

from benchmarks import _common
from benchmarks import distill_cf as bench
from distill import data as D
from distill import distill_cf as dcf


def test_flags_only_override_library_defaults():
    args, overrides = bench._parse([])
    assert overrides == {} and args.seeds == 3 and args.budgets == [1.0, 2.0, 5.0, 10.0, 25.0, 50.0]
    _, overrides = bench._parse(["--tau", "5", "--gamma", "100", "--lr", "0.2", "--init-scale", "3",
                                 "--lam2", "0.01", "--eval-every", "10", "--steps", "7", "--patience", "2"])
    assert overrides == dict(tau=5.0, n_samples=100, learning_rate=0.2, init_scale=3.0, lam2=0.01,
                             eval_every=10, steps=7, patience=2)
    assert set(overrides) <= set(dcf.Settings._fields)  # every override names a documented setting
    assert bench.DEFAULTS == {f: getattr(dcf.Settings(), f) for f in bench.OVERRIDES.values()}
    assert bench._parse(["--patience", "0"])[1] == {"patience": None}  # 0: never stop early
    assert bench._parse(["--init-users", "active", "--lr-schedule", "cosine"])[1] == dict(
        init_users="active", lr_schedule="cosine")
    for bad in (["--init-users", "head"], ["--lr-schedule", "step"]):
        with pytest.raises(SystemExit):
            bench._parse(bad)
    args, overrides = bench._parse(["--quick"])
    assert overrides == {"steps": 30} and args.seeds == 1 and args.budgets == [2.0, 10.0]
    args, overrides = bench._parse(["--all-defaults"])
    assert overrides == {} and args.budgets == [5.0] and args.seeds == 3
    for bad in (["--all-defaults", "--tau", "5"], ["--all-defaults", "--budgets", "2"]):
        with pytest.raises(SystemExit):
            bench._parse(bad)


def test_row_mean_and_std():
    per_seed = [{"lam": 0.1, "HR@10": 10.0, "nDCG@10": 4.0}, {"lam": 1.0, "HR@10": 20.0, "nDCG@10": 8.0}]
    row = bench._row(5.0, "user RNS", 3, per_seed, 1.5)
    assert (row["HR@10"], row["HR@10_std"], row["nDCG@10"], row["nDCG@10_std"]) == (15.0, 5.0, 6.0, 2.0)
    assert row["lam"] == [0.1, 1.0] and row["n_seeds"] == 2 and row["per_seed"] == per_seed


def _tiny_movielens():
    """60 users over 300 items with two taste groups; ids offset so raw ids differ from columns."""
    rng = np.random.default_rng(0)
    group = np.arange(60) % 2
    users, items = [], []
    for u in range(60):
        liked = rng.choice(150, 12, replace=False) + 150 * group[u]
        users += [1000 + u] * 12
        items += (5000 + liked).tolist()
    return D.from_arrays(np.array(users), np.array(items))


@pytest.mark.slow
def test_tiny_run_writes_rows_settings_and_exports_under_out(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "load_movielens_small", _tiny_movielens)
    recorded = {p: p.stat().st_mtime_ns for p in _common.RESULTS.rglob("*") if p.is_file()}
    bench.main(["--budgets", "10", "--steps", "2", "--eval-every", "1", "--seeds", "2", "--export",
                "--out", str(tmp_path)])
    got = json.loads((tmp_path / "distill_cf_ml-latest-small.json").read_text())
    rows = {r["method"]: r for r in got["results"]["rows"]}
    assert set(rows) == {"full data", "user RNS", "head users", "interaction RNS", "Distill-CF"}
    assert got["config"]["overrides"] == {"steps": 2, "eval_every": 1}
    assert got["config"]["distill_cf"]["tau"] == dcf.Settings().tau
    d = rows["Distill-CF"]
    assert d["n_support"] == 6 and d["n_seeds"] == 2 and len(d["per_seed"]) == 2
    assert d["settings"]["steps"] == 2 and d["settings"]["n_samples"] == dcf.Settings().n_samples
    assert d["settings"]["n_syn_users"] == 6 and d["settings"]["key_data"] == [0, 0]
    # the test λ is re-selected on validation for the returned summary: the λ distillation chose for it
    assert all(p["lam"] == p["distill_lam"] for p in d["per_seed"])
    assert all(p["val_curve"][str(p["best_step"])] == p["val_nDCG@10"] for p in d["per_seed"])
    assert all(list(p["val_curve"]) == ["1", "2"] for p in d["per_seed"])  # every validation (eval_every 1)
    vals = [p["nDCG@10"] for p in d["per_seed"]]
    assert d["nDCG@10"] == pytest.approx(np.mean(vals)) and d["nDCG@10_std"] == pytest.approx(np.std(vals))
    for seed in (0, 1):
        loaded = dcf.load_summary(tmp_path / f"distill_cf_summary_10pct_seed{seed}")
        assert loaded.item_ids.min() >= 5000  # raw item ids from the split, not column numbers
        assert loaded.settings["dataset"] == "ml-latest-small" and loaded.settings["steps"] == 2
    assert (tmp_path / "distill_cf_ml-latest-small.png").is_file()
    assert {p: p.stat().st_mtime_ns for p in _common.RESULTS.rglob("*") if p.is_file()} == recorded
