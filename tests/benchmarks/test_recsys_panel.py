"""The recommender panel end to end on a small u.data file with planted taste groups."""

import json

import numpy as np
import pytest

from benchmarks import _common
from benchmarks import recsys_panel as bench
from test_cli import snapshot  # same folder: on sys.path under pytest


def _write_u_data(path, n_users=60, n_items=40, seed=0):
    """Two user groups, each liking its own half of the items (plus a little noise)."""
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(n_users):
        liked = np.arange(n_items // 2) + (u % 2) * (n_items // 2)
        own = rng.choice(liked, size=8, replace=False)
        for t, i in enumerate(np.unique(np.concatenate([own, rng.choice(n_items, size=1)]))):
            lines.append(f"{u + 1}\t{i + 1}\t{rng.integers(1, 6)}\t{880000000 + t}")
    path.write_text("\n".join(lines) + "\n")


def test_summary_is_mean_and_sample_std():
    row = lambda v: {"model": "m", "chosen": "-", "time_s": 1.0, **{c: v for c in bench.METRIC_COLS}}
    per_seed = {s: {"test": [row(v)]} for s, v in ((0, 10.0), (1, 20.0), (2, 30.0))}
    (out,) = bench.summarise(per_seed, [0, 1, 2])
    assert out["HR@10"] == 20.0 and out["AUC_std"] == 10.0 and out["time_s_std"] == 0.0


@pytest.mark.slow
def test_panel_on_ml100k_format(tmp_path):
    data = tmp_path / "u.data"
    _write_u_data(data)
    results, runs = snapshot(_common.RESULTS), snapshot(_common.RUNS)
    bench.main(["--ml100k", str(data), "--seeds", "0", "1", "--out", str(tmp_path), "--lams", "1",
                "--ease-lams", "10", "--dim", "8", "--mvae-epochs", "20", "40", "--mf-epochs", "30",
                "--neumf-epochs", "20", "--neumf-batch", "256", "--lgcn-epochs", "40", "--lgcn-batch", "256"])
    assert snapshot(_common.RESULTS) == results and snapshot(_common.RUNS) == runs
    out = json.loads((tmp_path / "recsys_panel_ml-100k.json").read_text())
    assert set(out) == {"benchmark", "config", "results", "hardware", "versions", "wall_time_s"}
    mean = {r["model"]: r for r in out["results"]["mean"]}
    assert set(mean) == {"PopRec", "EASE", "inf-AE", "Mult-VAE", "MF", "NeuMF", "LightGCN"}
    for r in mean.values():
        assert 0 <= r["HR@10"] <= 100 and 0 <= r["AUC"] <= 100 and r["HR@10_std"] >= 0
    # Group structure is invisible to popularity but recovered by the personalised models.
    for model in ("EASE", "inf-AE", "LightGCN"):
        assert mean[model]["HR@10"] > mean["PopRec"]["HR@10"] + 10, mean
    # Mult-VAE's epochs were chosen on validation from the two-value grid, on every split.
    for seed in ("0", "1"):
        assert set(out["results"]["per_seed"][seed]["validation"]["Mult-VAE"]) == {"20", "40"}
    if out["results"]["plot"]:
        assert (tmp_path / out["results"]["plot"]).stat().st_size > 0


@pytest.mark.slow
def test_sequential_panel_runs(tmp_path):
    bench.main(["--sequential", "--seeds", "0", "--seq-steps", "2", "--max-len", "10", "--out", str(tmp_path)])
    out = json.loads((tmp_path / "recsys_panel_sequential_ml-latest-small.json").read_text())
    methods = [r["method"] for r in out["results"]["rows"]]
    assert methods == ["popularity", "Markov (1st order)", "SASRec d64 L2", "GRU4Rec h100"]
    for r in out["results"]["rows"]:
        assert 0 <= r["HR@10"] <= 100 and r["nDCG@10"] <= r["HR@10"] + 1e-9
