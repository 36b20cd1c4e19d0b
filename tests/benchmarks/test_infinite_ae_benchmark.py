"""The main job end to end on a small u.data file with planted taste groups."""

import json

import numpy as np

from benchmarks import _common
from benchmarks import infinite_ae as bench
from test_cli import snapshot  # same folder: on sys.path under pytest


def _write_u_data(path, n_users=60, n_items=40, seed=0):
    """Two user groups, each liking its own half of the items (plus a little noise)."""
    rng = np.random.default_rng(seed)
    lines = []
    for u in range(n_users):
        group = u % 2
        liked = np.arange(n_items // 2) + group * (n_items // 2)
        own = rng.choice(liked, size=8, replace=False)
        noise = rng.choice(n_items, size=1)
        for t, i in enumerate(np.unique(np.concatenate([own, noise]))):
            lines.append(f"{u + 1}\t{i + 1}\t{rng.integers(1, 6)}\t{880000000 + t}")
    path.write_text("\n".join(lines) + "\n")


def test_main_job_on_ml100k_format(tmp_path):
    data = tmp_path / "u.data"
    _write_u_data(data)
    results, runs = snapshot(_common.RESULTS), snapshot(_common.RUNS)
    bench.main(["--ml100k", str(data), "--seeds", "0", "1", "--out", str(tmp_path),
                "--lams", "0.1", "1", "--ease-lams", "1", "10"])
    # Only --out is written: the recorded results and the default runs/ are untouched.
    assert sorted(snapshot(tmp_path)) == ["infinite_ae_ml-100k_2seeds.json", "u.data"]
    assert snapshot(_common.RESULTS) == results and snapshot(_common.RUNS) == runs
    out = json.loads((tmp_path / "infinite_ae_ml-100k_2seeds.json").read_text())
    assert set(out) == {"benchmark", "config", "results", "hardware", "versions", "wall_time_s"}
    mean = {r["model"]: r for r in out["results"]["mean"]}
    assert set(mean) == {"PopRec", "EASE", "inf-AE"}
    # Group structure is invisible to popularity but recovered by both item models.
    for model in ("EASE", "inf-AE"):
        assert mean[model]["HR@10"] > mean["PopRec"]["HR@10"] + 10, mean
        assert 0 <= mean[model]["AUC"] <= 100
    assert out["config"]["n_users"] == 60
    for seed in ("0", "1"):
        assert set(out["results"]["per_seed"][seed]["validation_by_lam"]["inf-AE"]) == {"0.1", "1.0"}
