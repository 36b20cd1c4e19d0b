"""Ψ of the 16 CF samplers on MovieLens latest-small (dissertation §1.3.5, Table 1.3, Fig. 1.3).

    python -m benchmarks.psi                 # 16 samplers × {80,60,40,20,10} % × 5-model panel
    python -m benchmarks.psi --quick         # 4 samplers × {60, 20} %
    python -m benchmarks.psi --seeds 0 1 2   # one split per seed
    python -m benchmarks.psi --record        # what wrote benchmarks/results/psi.json
    python -m benchmarks.psi --panel 7       # Table 1.3's panel: + NeuMF and Mult-VAE

Protocol: implicit feedback, users with < 3 interactions dropped, per-user random
80/10/10 split (as :mod:`benchmarks.infinite_ae`). Only the *training* interactions
are sampled (validation and test are never touched, as in the dissertation). For each
(sampler, rate) the panel {PopRec, bias-only, MF, EASE, ∞-AE} (``--panel 7``: with NeuMF and
Mult-VAE, Table 1.3's implicit-feedback panel; :func:`selection.psi.evaluate_panel`) is trained on the sample and evaluated on the
full-data test set (ranking excludes the full train + validation items); Kendall's τ
between its model ranking and the full-data ranking per metric (AUC, HR@100, nDCG@10),
Ψ = mean τ over metrics and rates. SASRec is not in the panel (sequential feedback
would need a second split protocol and a GPU-sized budget; skipped).

Cheap but sound settings, so the grid fits ~20 min on 2 idle cores: bias-only/MF
10 BPR epochs padded to one compiled size; EASE/∞-AE λ chosen on validation once on
the full data (grids 10/100/500 and 1/5/50, relative for ∞-AE) and kept for the
samples. Every (dataset, seed, sampler, rate) result is cached as JSON, so a rerun
only trains what is missing: entries are looked up in ``<out>/psi_cache/`` and then
in the recorded ``benchmarks/results/psi_cache/`` (read only), and new ones are
written to ``<out>/psi_cache/`` (with ``--record``: the recorded cache itself; with
``--cache DIR``: ``DIR`` alone is read and written). A cached entry holding only some of
the panel's models gets the missing ones trained and added, so ``--panel 7`` reuses the
five-model entries. Writes ``psi[_quick][_<seeds>][_panel7].json`` (:func:`result_name`)
and its heatmap to ``--out`` (default ``runs/``; ``--record``: ``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
import zlib
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from benchmarks._common import RESULTS, format_table, output_dir, parser, write_result
from distill import data as D
from distill.loop import progress_bar
from distill.data.interactions import Interactions
from selection import cf_sampling, data_genie, psi, svp_cf

RATES = (0.8, 0.6, 0.4, 0.2, 0.1)
SAMPLERS: dict[str, Callable] = {**cf_sampling.SAMPLERS, **svp_cf.SAMPLERS}
QUICK_SAMPLERS = ("random_interaction", "head_user", "centrality", "svp_cf_prop_user_bias")
MF_EPOCHS = 10


def prepare(inter: Interactions, seed: int) -> dict[str, Any]:
    """Split ``inter`` and return the training interactions (sampled later) and matrices."""
    imp = D.filter_min_interactions(D.to_implicit(inter), min_user=3)
    split = D.random_split(imp, seed=seed, min_interactions=3)
    rows = split.train[imp.users, imp.items] > 0
    # Same id space as the split's matrices: the sampled rows scatter back into them.
    train = imp._replace(
        users=imp.users[rows], items=imp.items[rows],
        ratings=imp.ratings[rows], timestamps=imp.timestamps[rows],
    )
    return {"split": split, "train": train, "exclude": np.clip(split.train + split.val, 0, 1)}


def _matrix(train: Interactions, mask: np.ndarray, shape) -> np.ndarray:
    x = np.zeros(shape, np.float32)
    x[train.users[mask], train.items[mask]] = 1.0
    return x


def _cache_path(dataset: str, seed: int, sampler: str, rate: float) -> pathlib.Path:
    return pathlib.Path(dataset) / f"seed{seed}" / f"{sampler}_{int(round(rate * 100))}.json"


def _load(path: pathlib.Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _save(path: pathlib.Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)  # atomic: a killed run never leaves a half-written cache entry


#: The recorded Ψ cache (tracked): read by default, written only with ``--record``.
RECORDED_CACHE = RESULTS / "psi_cache"


class Cache(NamedTuple):
    """Where Ψ results are looked up and where new ones go.

    Attributes:
      write: folder that new or completed entries are written to (and read first).
      read: further folders read, in order, when ``write`` lacks an entry (never written).
    """

    write: pathlib.Path
    read: tuple[pathlib.Path, ...] = ()

    def load(self, rel: pathlib.Path) -> dict | None:
        """The entry at ``rel`` (relative to a cache folder) from the first folder holding it."""
        for folder in (self.write, *self.read):
            entry = _load(folder / rel)
            if entry is not None:
                return entry
        return None

    def save(self, rel: pathlib.Path, obj: dict) -> None:
        """Write the entry at ``rel`` under ``write`` (atomically)."""
        _save(self.write / rel, obj)


def cache_from_args(args: argparse.Namespace, out: pathlib.Path) -> Cache:
    """``--cache DIR``: DIR alone; else ``<out>/psi_cache`` over the read-only recorded cache.

    With ``--record`` ``out`` is ``benchmarks/results``, so the recorded cache is the one
    written, as when it was produced.
    """
    if args.cache:
        return Cache(pathlib.Path(args.cache))
    write = out / "psi_cache"
    return Cache(write, () if write.resolve() == RECORDED_CACHE.resolve() else (RECORDED_CACHE,))


def add_cache_flag(p: argparse.ArgumentParser) -> None:
    """``--cache``, shared with :mod:`benchmarks.data_genie` (same cache, same rules)."""
    p.add_argument(
        "--cache", default=None,
        help="Ψ cache folder, the only one read and written (default: look entries up in "
             "OUT/psi_cache, then in the recorded benchmarks/results/psi_cache, read only; "
             "write new entries to OUT/psi_cache, which with --record is the recorded cache)",
    )


def make_sampler(train: Interactions, key: jax.Array) -> Callable[[str, float], np.ndarray]:
    """``sample(name, rate) -> mask`` for the 16 samplers, deterministic given ``key``.

    The SVP proxies are trained once per proxy (lazily) and shared by the eight SVP
    samplers and every rate; each (sampler, rate) draws from its own folded key.
    """
    importance: dict[str, np.ndarray] = {}

    def sample(name: str, rate: float) -> np.ndarray:
        k = jax.random.fold_in(jax.random.fold_in(key, zlib.crc32(name.encode()) % (2**31)), int(rate * 100))
        if not name.startswith("svp_cf"):
            return SAMPLERS[name](k, train, rate)
        proxy = name.rsplit("_", 1)[1]
        if proxy not in importance:
            importance[proxy] = svp_cf.proxy_difficulty(
                jax.random.fold_in(key, 7), train, proxy=proxy, epochs=MF_EPOCHS
            )
        imp = svp_cf.importance(train, importance[proxy], prop="_prop_" in name)
        return SAMPLERS[name](k, train, rate, importance=imp)

    return sample


def _sub(panel: dict, models) -> dict:
    return {m: panel[m] for m in models}


def _add_missing(entry: dict, models, fit_panel: Callable[[tuple[str, ...]], dict]) -> bool:
    """Train the ``models`` that ``entry["panel"]`` lacks (``fit_panel(missing)``) and add them."""
    missing = tuple(m for m in models if m not in entry["panel"])
    if missing:
        t0 = time.perf_counter()
        entry["panel"].update(fit_panel(missing))
        entry.setdefault("time_s_added", {})[",".join(missing)] = time.perf_counter() - t0
    return bool(missing)


def _panel_fn(key, x, prep: dict, n_pad: int, full: dict) -> Callable[[tuple[str, ...]], dict]:
    """``models -> panel``: those models trained on ``x`` with the full data's λs, tested on the fixed split."""
    split = prep["split"]
    return lambda ms: psi.evaluate_panel(
        key, x, split.val, split.test, prep["exclude"], models=ms, n_pad=n_pad, mf_epochs=MF_EPOCHS,
        ease_lams=(full["lam_ease"],), inf_ae_lams=(full["lam_inf_ae"],))


def _full_entry(cache: Cache, path: pathlib.Path, prep: dict, key, n_pad: int, models) -> dict:
    """The full-data panel (λs chosen on validation once, kept for every sample), cached."""
    split = prep["split"]
    full = cache.load(path)
    if full is None:
        from models import ease, infinite_ae  # λ search on the full data only

        full = {"panel": {},
                "lam_ease": ease.select_lambda(split.train, split.val, lams=(10.0, 100.0, 500.0)).best_lam,
                "lam_inf_ae": infinite_ae.select_lambda(split.train, split.val, lams=(1.0, 5.0, 50.0)).best_lam,
                "n_users": split.n_users, "n_items": split.n_items, "n_train": n_pad}
    if _add_missing(full, models, _panel_fn(key, split.train, prep, n_pad, full)):
        cache.save(path, full)
    return full


def run_dataset(
    inter: Interactions,
    dataset: str,
    seed: int,
    samplers: tuple[str, ...],
    rates: tuple[float, ...],
    cache: Cache | pathlib.Path,
    *,
    progress: bool = True,
    embed: bool = False,
    models: tuple[str, ...] = psi.PANEL,
) -> dict[str, Any]:
    """Ψ-harness for one dataset and split: full panel, samples, τ per (sampler, rate, metric).

    Returns ``{"full": panel, "lams": ..., "samples": {sampler: {rate%: {"panel", "tau",
    "n_kept"}}}}`` with ``"tau"`` over ``models`` (the cached ``"tau"`` stays that of
    :data:`selection.psi.PANEL`, which DATA-GENIE reads). Cached per (sampler, rate) under
    ``cache/dataset/seed`` (a :class:`Cache`, or a folder read and written alone). With
    ``embed`` the DATA-GENIE embeddings of the training data and of every sample are
    added (``"embedding"``; samples are regenerated from their keys when cached without).
    """
    if not isinstance(cache, Cache):
        cache = Cache(pathlib.Path(cache))
    prep = prepare(inter, seed)
    split, train = prep["split"], prep["train"]
    shape = (split.n_users, split.n_items)
    n_pad = int(train.users.shape[0])
    key = jax.random.key(seed)
    full_path = pathlib.Path(dataset) / f"seed{seed}" / "full.json"
    full = _full_entry(cache, full_path, prep, key, n_pad, models)
    if embed and "embedding" not in full:
        full["embedding"] = data_genie.embed(train).tolist()
        cache.save(full_path, full)
    sample_mask = make_sampler(train, key)

    out: dict[str, Any] = {"full": {**full, "panel": _sub(full["panel"], models)}, "samples": {}}
    jobs = [(s, r) for s in samplers for r in rates]
    bar = progress_bar(jobs, desc=f"psi {dataset} seed {seed}", disable=not progress, leave=True)
    for name, rate in bar:
        path = _cache_path(dataset, seed, name, rate)
        res = cache.load(path)
        need_emb = embed and (res is None or "embedding" not in res)
        if res is None or need_emb or any(m not in res["panel"] for m in models):
            t0 = time.perf_counter()
            mask = sample_mask(name, rate)
            if res is None:
                res = {"panel": {}, "n_kept": int(mask.sum()), "users_kept": int(np.unique(train.users[mask]).size),
                       "items_kept": int(np.unique(train.items[mask]).size)}
            elif int(mask.sum()) != res["n_kept"]:
                raise RuntimeError(f"{path}: regenerated sample differs from the cached one")
            xs = _matrix(train, mask, shape)
            _add_missing(res, models, _panel_fn(key, xs, prep, n_pad, full))
            if "tau" not in res and all(m in res["panel"] for m in psi.PANEL):
                res["tau"] = psi.taus(_sub(full["panel"], psi.PANEL), _sub(res["panel"], psi.PANEL))
                res["time_s"] = time.perf_counter() - t0
            if need_emb:
                res["embedding"] = data_genie.embed(train, mask).tolist()
            cache.save(path, res)
        # The default panel's τ is the cached one, so recorded tables reproduce to the bit.
        tau = res["tau"] if tuple(models) == psi.PANEL else psi.taus(_sub(full["panel"], models),
                                                                      _sub(res["panel"], models))
        view = {**res, "panel": _sub(res["panel"], models), "tau": tau}
        out["samples"].setdefault(name, {})[str(int(round(rate * 100)))] = view
    return out


def summarize(per_seed: list[dict], samplers, rates) -> list[dict]:
    """Table 1.3 rows: mean τ per rate (over metrics, seeds) and Ψ per sampler.

    ``psi`` pools every (seed, rate, metric) τ; with several seeds each row also holds
    ``psi_seeds`` (Ψ of each seed alone), ``psi_std`` (their sample standard deviation),
    and ``rank_seeds`` / ``rank_mean`` / ``rank_std``: the sampler's rank by Ψ within each
    seed (1 = highest), i.e. how stable the ranking of the samplers is across splits.
    """
    rows = []
    for name in samplers:
        row = {"sampler": name}
        all_t = []
        for r in rates:
            key = str(int(round(r * 100)))
            t = [[res["samples"][name][key]["tau"][m] for m in psi.METRICS] for res in per_seed]
            row[f"tau@{key}"] = psi.psi(np.array(t))
            all_t.append(t)
        all_t = np.array(all_t)  # (rates, seeds, metrics)
        for m_i, m in enumerate(psi.METRICS):
            row[f"psi_{m}"] = psi.psi(all_t[..., m_i])
        row["psi"] = psi.psi(all_t)
        if len(per_seed) > 1:
            row["psi_seeds"] = [psi.psi(all_t[:, s]) for s in range(len(per_seed))]
            row["psi_std"] = float(np.std(row["psi_seeds"], ddof=1))
        rows.append(row)
    if len(per_seed) > 1:
        for s in range(len(per_seed)):
            order = sorted(range(len(rows)), key=lambda i: -rows[i]["psi_seeds"][s])
            for rank, i in enumerate(order, start=1):
                rows[i].setdefault("rank_seeds", []).append(rank)
        for row in rows:
            row["rank_mean"] = float(np.mean(row["rank_seeds"]))
            row["rank_std"] = float(np.std(row["rank_seeds"], ddof=1))
    return rows


def heatmap(rows: list[dict], rates, path: pathlib.Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [f"tau@{int(round(r * 100))}" for r in rates] + ["psi"]
    vals = np.array([[row[c] for c in cols] for row in rows])
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 3, 0.38 * len(rows) + 1.5))
    im = ax.imshow(vals, cmap="RdYlGn", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), [c.replace("tau@", "τ @ ") + ("%" if "@" in c else "") for c in cols])
    ax.set_yticks(range(len(rows)), [r["sampler"] for r in rows])
    for (i, j), v in np.ndenumerate(vals):
        ax.text(j, i, "nan" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label="Kendall's τ (mean over AUC, HR@100, nDCG@10)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def result_name(quick: bool, seeds, panel: int) -> str:
    """``psi[_quick][_<seeds>][_panel7]``: seed 0 alone adds nothing, seeds 0..n-1 add ``_<n>seeds``, any other
    choice names its seeds, so a run of other seeds never overwrites the seed-0 result."""
    name = "psi_quick" if quick else "psi"
    seeds = list(seeds)
    if seeds == list(range(len(seeds))) and len(seeds) > 1:
        name += f"_{len(seeds)}seeds"
    elif seeds != [0]:
        name += "_seed" + "-".join(str(s) for s in seeds)
    return name + ("_panel7" if panel == 7 else "")


def run(args) -> dict:
    t_start = time.perf_counter()
    samplers = tuple(args.samplers or (QUICK_SAMPLERS if args.quick else SAMPLERS))
    rates = (0.6, 0.2) if args.quick else RATES
    out = output_dir(args)
    cache = cache_from_args(args, out)
    inter = D.load_movielens_small()
    models = psi.PANEL_7 if args.panel == 7 else psi.PANEL
    per_seed = [run_dataset(inter, "ml-latest-small", s, samplers, rates, cache, models=models) for s in args.seeds]
    rows = summarize(per_seed, samplers, rates)
    rows.sort(key=lambda r: -r["psi"])
    cols = ["sampler"] + [f"tau@{int(round(r * 100))}" for r in rates] + [f"psi_{m}" for m in psi.METRICS] + ["psi"]
    if len(args.seeds) > 1:
        cols += ["psi_std", "rank_mean", "rank_std"]
    print(format_table(rows, cols))
    print("full-data panel (seed %d):" % args.seeds[0])
    full = per_seed[0]["full"]["panel"]
    print(format_table([{"model": m, **v} for m, v in full.items()], ["model", *psi.METRICS]))
    name = result_name(args.quick, args.seeds, args.panel)
    heatmap(rows, rates, out / f"{name}_heatmap.png",
            f"Ψ of CF samplers, {len(models)}-model panel, MovieLens latest-small (cf. Table 1.3 / Fig. 1.3)")
    wall = time.perf_counter() - t_start
    config = {
        "dataset": "ml-latest-small", "seeds": list(args.seeds), "samplers": list(samplers),
        "rates": list(rates), "panel": list(models), "metrics": list(psi.METRICS),
        "mf_epochs": MF_EPOCHS, "mf_dim": 32, "ease_lams_full": [10.0, 100.0, 500.0],
        "inf_ae_lams_full": [1.0, 5.0, 50.0], "sasrec": "skipped",
        **({"neumf": {"epochs": 10, "lr": 3e-3, "batch": 2048, "negatives": 4},
            "mvae": {"epochs": 100, "lr": 1e-3, "batch": 500, "beta_cap": 0.2, "anneal": "0.8 x updates"}}
           if args.panel == 7 else {}),
        "split": "per-user random 80/10/10 (train sampled only)",
        "cache": {"write": str(cache.write), "read": [str(c) for c in cache.read]},
    }
    results = {"table": rows, "full_panel": {str(s): r["full"] for s, r in zip(args.seeds, per_seed, strict=True)},
               "per_seed": {str(s): r["samples"] for s, r in zip(args.seeds, per_seed, strict=True)}}
    path = write_result(name, config, results, wall, out)
    print(f"wrote {path} ({wall:.1f} s; cached entries are reused, so rerun wall time is smaller)")
    return results


def main(argv=None):
    p = parser("psi", __doc__)
    p.add_argument("--quick", action="store_true",
                   help="4 samplers × rates {60, 20} %% (writes psi_quick.json)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one train/val/test split per seed")
    p.add_argument("--samplers", nargs="+", choices=sorted(SAMPLERS), default=None, metavar="NAME",
                   help="only these samplers (default: all 16, or 4 with --quick); one of "
                        + ", ".join(sorted(SAMPLERS)))
    p.add_argument("--panel", type=int, choices=(5, 7), default=5,
                   help="5: PopRec, bias-only, MF, EASE, ∞-AE (the recorded runs); 7: with NeuMF and Mult-VAE "
                        "(Table 1.3's panel; Mult-VAE's 100 epochs make a sample ~1–2 min on 2 CPU cores)")
    add_cache_flag(p)
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
