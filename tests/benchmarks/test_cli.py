"""Benchmark command lines: ``--help`` of every benchmark, and runs that leave the repo clean.

A run without ``--record`` may write only under ``--out``; the recorded results in
``benchmarks/results/`` (tracked) change only with ``--record``.
"""

import argparse
import importlib
import json
import pathlib
import re
import subprocess
import sys

import jax
import pytest

from benchmarks import _common
from benchmarks import psi as psi_bench
from selection import psi

ROOT = pathlib.Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
# Every benchmark module with a command line (found without importing them all at collection).
MODULES = sorted(
    p.stem for p in BENCH.glob("*.py")
    if not p.stem.startswith("_") and re.search(r"^def main\(", p.read_text(), re.M)
)


def snapshot(folder: pathlib.Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (mtime_ns, size)}`` of every file under ``folder`` (empty if absent)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in folder.rglob("*") if p.is_file()}


def test_every_benchmark_is_found():
    # The list the parametrised test runs over is not silently empty or partial.
    assert {"infinite_ae", "psi", "data_genie", "matching", "pruning", "valuation"} <= set(MODULES)
    assert "_common" not in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_help(name, monkeypatch, capsys):
    x64 = jax.config.jax_enable_x64
    try:
        mod = importlib.import_module(f"benchmarks.{name}")
    finally:  # some benchmarks switch float64 on at import: keep it out of other tests
        jax.config.update("jax_enable_x64", x64)
    parsers = []
    parse_args = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        parsers.append(self)
        return parse_args(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit) as exc:
        mod.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: python -m benchmarks.{name} "), text[:200]
    p = parsers[0]
    flags = {o for a in p._actions for o in a.option_strings}
    if "write_result(" in (BENCH / f"{name}.py").read_text():
        assert {"--out", "--record"} <= flags, sorted(flags)
        assert "--out" in text and "--record" in text
        assert p.get_default("out") == str(_common.RUNS) and p.get_default("record") is False
    undocumented = [a.option_strings for a in p._actions
                    if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not undocumented, f"flags without help text: {undocumented}"


def test_output_dir():
    ns = argparse.Namespace
    assert _common.output_dir(ns(out="/tmp/x", record=True)) == _common.RESULTS
    assert _common.RUNS.name == "runs" and _common.RUNS.parent == ROOT
    assert "/runs/" in (ROOT / ".gitignore").read_text().split()


def test_psi_cache_layers(tmp_path):
    rel = pathlib.Path("d") / "seed0" / "x_20.json"
    recorded, own = tmp_path / "recorded", tmp_path / "own"
    psi_bench._save(recorded / rel, {"v": 1})
    cache = psi_bench.Cache(own, (recorded,))
    assert cache.load(rel) == {"v": 1}  # falls back to the read-only layer
    cache.save(rel, {"v": 2})
    assert json.loads((own / rel).read_text()) == {"v": 2}
    assert json.loads((recorded / rel).read_text()) == {"v": 1}  # never written
    assert cache.load(rel) == {"v": 2}  # the written layer wins
    assert cache.load(pathlib.Path("d/seed0/missing.json")) is None

    out = tmp_path / "run"
    ns = argparse.Namespace
    default = psi_bench.cache_from_args(ns(cache=None), out)
    assert default == psi_bench.Cache(out / "psi_cache", (psi_bench.RECORDED_CACHE,))
    named = psi_bench.cache_from_args(ns(cache=str(tmp_path / "c")), out)
    assert named == psi_bench.Cache(tmp_path / "c", ())
    record = psi_bench.cache_from_args(ns(cache=None), _common.RESULTS)  # what --record gives
    assert record == psi_bench.Cache(_common.RESULTS / "psi_cache", ())


def test_psi_reads_the_recorded_cache_and_writes_nothing(tmp_path, capsys):
    """A default Ψ run over recorded entries: recorded numbers, no file written, one log line per count."""
    from distill import data as D

    before = snapshot(_common.RESULTS)
    samplers, rates = ("head_user", "centrality"), (0.6, 0.2)
    cache = psi_bench.Cache(tmp_path / "psi_cache", (psi_bench.RECORDED_CACHE,))
    res = psi_bench.run_dataset(D.load_movielens_small(), "ml-latest-small", 0, samplers, rates, cache,
                                embed=True)
    recorded = psi_bench.RECORDED_CACHE / "ml-latest-small" / "seed0"
    def default_panel(entry):  # entries may also hold the 7-model panel's NeuMF and Mult-VAE
        return {**entry, "panel": {m: entry["panel"][m] for m in psi.PANEL}}

    for s in samplers:
        for r in ("60", "20"):
            assert res["samples"][s][r] == default_panel(json.loads((recorded / f"{s}_{r}.json").read_text()))
    assert res["full"] == default_panel(json.loads((recorded / "full.json").read_text()))
    assert snapshot(tmp_path) == {} and snapshot(_common.RESULTS) == before
    err = capsys.readouterr().err
    assert "\r" not in err
    assert re.findall(r"psi ml-latest-small seed 0: (\d+)/4 ", err) == ["1", "2", "3", "4"]


def test_psi_trains_only_the_models_an_entry_lacks(tmp_path):
    """A cached entry missing a model (as five-model entries are for ``--panel 7``) gets just that one added."""
    from distill import data as D

    recorded = psi_bench.RECORDED_CACHE / "ml-latest-small" / "seed0"
    folder = tmp_path / "c" / "ml-latest-small" / "seed0"
    folder.mkdir(parents=True)
    want = {}
    for name in ("full", "head_user_60"):
        entry = json.loads((recorded / f"{name}.json").read_text())
        want[name] = json.loads(json.dumps(entry))
        del entry["panel"]["PopRec"]
        entry.pop("tau", None)
        entry["panel"]["EASE"]["AUC"] = -1.0  # present models are never retrained
        (folder / f"{name}.json").write_text(json.dumps(entry))
    res = psi_bench.run_dataset(D.load_movielens_small(), "ml-latest-small", 0, ("head_user",), (0.6,),
                                psi_bench.Cache(tmp_path / "c", ()), progress=False)
    for name, got in (("full", res["full"]), ("head_user_60", res["samples"]["head_user"]["60"])):
        assert got["panel"]["PopRec"] == pytest.approx(want[name]["panel"]["PopRec"], rel=1e-6)
        assert got["panel"]["EASE"]["AUC"] == -1.0
        saved = json.loads((folder / f"{name}.json").read_text())
        assert set(saved["panel"]) == set(want[name]["panel"]) and "PopRec" in saved["time_s_added"]
    sample = res["samples"]["head_user"]["60"]
    assert sample["tau"] == psi.taus(res["full"]["panel"], sample["panel"])
    assert json.loads((folder / "head_user_60.json").read_text())["tau"] == sample["tau"]


@pytest.mark.slow
def test_readme_main_job_writes_only_under_out(tmp_path):
    """The README's job, ``python -m benchmarks.infinite_ae --out TMP``, reproduces the recorded numbers.

    (The fast version, on a small MovieLens-100k-format file, is in test_infinite_ae_benchmark.)
    """
    runs_before, results_before = snapshot(_common.RUNS), snapshot(_common.RESULTS)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.infinite_ae", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert snapshot(_common.RESULTS) == results_before, "a run without --record changed benchmarks/results"
    assert snapshot(_common.RUNS) == runs_before, "a run with --out wrote to the default runs/"
    assert sorted(snapshot(tmp_path)) == ["infinite_ae_ml-latest-small.json"]
    got = json.loads((tmp_path / "infinite_ae_ml-latest-small.json").read_text())["results"]["mean"]
    want = json.loads((_common.RESULTS / "infinite_ae_ml-latest-small.json").read_text())["results"]["mean"]
    for g, w in zip(got, want, strict=True):
        assert g["model"] == w["model"] and g["lam"] == w["lam"]
        for col in ("HR@10", "HR@100", "nDCG@10", "nDCG@100", "AUC", "PSP@10"):
            assert g[col] == pytest.approx(w[col], abs=1e-3), (g["model"], col)  # float32 sums
