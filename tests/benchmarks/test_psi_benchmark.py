"""The Ψ benchmark's summary: pooled Ψ, per-seed Ψ with its spread, and per-seed ranks."""

import numpy as np
import pytest

from benchmarks import psi as bench
from selection import psi


def _per_seed(taus):
    """``taus[seed][sampler]`` → a constant τ for every rate and metric, except one NaN."""
    out = []
    for by_sampler in taus:
        samples = {}
        for name, t in by_sampler.items():
            samples[name] = {r: {"tau": {m: t for m in psi.METRICS}} for r in ("80", "20")}
        out.append({"samples": samples})
    return out


def test_multi_seed_rows_hold_mean_std_and_ranks():
    per_seed = _per_seed([{"a": 0.6, "b": 0.2, "c": 0.4}, {"a": 0.4, "b": 0.5, "c": 0.3},
                          {"a": 0.8, "b": 0.2, "c": 0.0}])
    per_seed[2]["samples"]["c"]["20"]["tau"]["AUC"] = float("nan")  # skipped, as in psi.psi
    rows = {r["sampler"]: r for r in bench.summarize(per_seed, ("a", "b", "c"), (0.8, 0.2))}
    assert rows["a"]["psi_seeds"] == pytest.approx([0.6, 0.4, 0.8])
    assert rows["a"]["psi"] == pytest.approx(0.6) and rows["a"]["psi_std"] == pytest.approx(0.2)
    # NaN τ are left out of the pool, not counted as 0: c pools 6 + 6 + 5 values.
    assert rows["c"]["psi"] == pytest.approx((6 * 0.4 + 6 * 0.3) / 17)
    assert rows["b"]["rank_seeds"] == [3, 1, 2] and rows["a"]["rank_seeds"] == [1, 2, 1]
    assert rows["b"]["rank_mean"] == pytest.approx(2.0) and rows["b"]["rank_std"] == pytest.approx(1.0)
    assert rows["c"]["rank_std"] == pytest.approx(np.std([2, 3, 3], ddof=1))


def test_one_seed_rows_have_no_spread():
    (row,) = bench.summarize(_per_seed([{"a": 0.3}]), ("a",), (0.8, 0.2))
    assert row["psi"] == pytest.approx(0.3) and "psi_std" not in row and "rank_mean" not in row


def test_result_name_never_reuses_the_seed0_name_for_other_seeds():
    assert bench.result_name(False, [0], 7) == "psi_panel7"
    assert bench.result_name(True, [0], 5) == "psi_quick"
    assert bench.result_name(False, [0, 1, 2], 5) == "psi_3seeds"
    assert bench.result_name(False, [2], 7) == "psi_seed2_panel7"
    assert bench.result_name(False, [1, 2], 5) == "psi_seed1-2"
