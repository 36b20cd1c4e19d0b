"""DATA-GENIE: predicting the best CF sampler from dataset embeddings (dissertation §1.4, Table 1.4).

    python -m benchmarks.data_genie            # ML latest-small + 7 offline variants
    python -m benchmarks.data_genie --quick    # 2 variants, 8 samplers
    python -m benchmarks.data_genie --record   # what wrote benchmarks/results/data_genie.json

Training data. Only MovieLens latest-small is available offline, so the datasets are
it and sub-datasets derived from it (each a different graph, size and density):

* ``ml-latest-small``: the Ψ run of :mod:`benchmarks.psi` (16 samplers × 5 rates,
  reused from its cache);
* ``u30-a`` / ``u30-b``: 30 % of the users drawn at random (seeds 1, 2; the second also
  drops items with < 5 ratings);
* ``i40``: 40 % of the items drawn at random (all their ratings);
* ``ff30`` / ``rw30`` / ``rw15``: a forest-fire / random-walk 30 % / 15 % sample of the ratings (the
  graph samplers of :mod:`selection.cf_sampling`, so the variant's degree structure
  differs from a uniform subsample);
* ``u50i50``: 50 % of the users and 50 % of the items at random.

For each variant the Ψ harness runs the 16 samplers at rates {60, 20} % (cached like
:mod:`benchmarks.psi`). A *group* is (dataset, rate, metric); every group holds one τ
per sampler. Rows: ``[E(D), E(D^{s,p}), onehot(m)] → τ``.

Evaluation: leave-one-dataset-out — Φ is trained on the groups of the other
datasets and ranks the 16 samplers of every group of the held-out dataset; P@1 = the
top-ranked sampler has the group's best true τ. Baselines: a uniformly random sampler
(expected P@1) and the best static sampler (the sampler with the highest mean τ on
the training datasets, always chosen). Also the dissertation's protocol: (m, p) pairs
split 70/15/15 at random (10 draws, test part reported). Writes
``data_genie[_quick].json`` to ``--out`` (default ``runs/``; ``--record``:
``benchmarks/results/``). The Ψ results come from the cache of :mod:`benchmarks.psi`
with its rules: the recorded ``benchmarks/results/psi_cache/`` is read, never
written without ``--record``; new entries (and embeddings added to recorded ones) go
to ``<out>/psi_cache/`` or to ``--cache DIR``.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from benchmarks import psi as psi_bench
from benchmarks._common import format_table, output_dir, parser, write_result
from distill import data as D
from distill.data.interactions import select_rows
from selection import cf_sampling, data_genie
from selection import psi as psi_mod

VARIANT_RATES = (0.6, 0.2)


def variants(quick: bool) -> dict:
    """Name → Interactions of the offline sub-datasets of ML latest-small."""
    raw = D.load_movielens_small()
    rng = np.random.default_rng(0)
    out = {}

    def users_frac(frac, seed):
        r = np.random.default_rng(seed)
        keep = r.random(raw.n_users) < frac
        return select_rows(raw, keep[raw.users])

    out["u30-a"] = users_frac(0.3, 1)
    if quick:
        out["ff30"] = None
    else:
        out["ff30"] = None
        out["rw30"] = None
        keep_u = rng.random(raw.n_users) < 0.5
        keep_i = rng.random(raw.n_items) < 0.5
        out["u50i50"] = select_rows(raw, keep_u[raw.users] & keep_i[raw.items])
        out["u30-b"] = D.filter_min_interactions(users_frac(0.3, 2), min_user=3, min_item=5)
        keep_i = np.random.default_rng(3).random(raw.n_items) < 0.4
        out["i40"] = select_rows(raw, keep_i[raw.items])
        out["rw15"] = None
    imp = D.to_implicit(raw)
    for name, fn, p in (("ff30", cf_sampling.forest_fire, 0.3), ("rw30", cf_sampling.random_walk, 0.3),
                        ("rw15", cf_sampling.random_walk, 0.15)):
        if name in out:
            mask = fn(jax.random.key(11), imp, p)
            out[name] = select_rows(imp, mask)
    return out


def rows_of(name: str, res: dict, rates) -> list[dict]:
    full = np.array(res["full"]["embedding"])
    rows = []
    for sampler, by_rate in res["samples"].items():
        for r in rates:
            key = str(int(round(r * 100)))
            entry = by_rate[key]
            for m_i, m in enumerate(psi_mod.METRICS):
                rows.append({
                    "dataset": name, "sampler": sampler, "rate": key, "metric": m_i,
                    "tau": entry["tau"][m], "full": full, "sample": np.array(entry["embedding"]),
                })
    return rows


def evaluate_split(rows, train_idx, test_idx, args, key) -> dict:
    """Train both Φ variants on ``train_idx`` rows, P@1 and baselines on ``test_idx``."""
    n_m = len(psi_mod.METRICS)
    x = data_genie.features(np.stack([r["full"] for r in rows]), np.stack([r["sample"] for r in rows]),
                            np.array([r["metric"] for r in rows]), n_m)
    tau = np.array([r["tau"] for r in rows], np.float64)
    gid = {}
    groups = np.array([gid.setdefault((r["dataset"], r["rate"], r["metric"]), len(gid)) for r in rows])
    samplers = np.array([r["sampler"] for r in rows])
    tr = train_idx[~np.isnan(tau[train_idx])]
    out = {}
    for mode in ("regression", "ranking"):
        genie, _ = data_genie.fit(key, x[tr], tau[tr].astype(np.float32), groups[tr], mode=mode,
                                  hidden=args.hidden, steps=args.steps)
        pred = data_genie.predict(genie, x[test_idx])
        out[f"DATA-GENIE-{mode}"] = data_genie.precision_at_1(pred, tau[test_idx], groups[test_idx])
        if mode == "regression":
            ok = ~np.isnan(tau[test_idx])
            out["regression_test_mse"] = float(np.mean((pred[ok] - tau[test_idx][ok]) ** 2))
    out["random"] = data_genie.random_p_at_1(tau[test_idx], groups[test_idx])
    names = np.unique(samplers[tr])
    mean_tau = [np.nanmean(tau[tr][samplers[tr] == s]) for s in names]
    best_static = str(names[int(np.argmax(mean_tau))])
    out["best_static"] = data_genie.static_p_at_1(samplers[test_idx], tau[test_idx], groups[test_idx], best_static)
    out["best_static_sampler"] = best_static
    out["n_test_groups"] = int(np.unique(groups[test_idx]).size)
    return out


def run(args) -> dict:
    t_start = time.perf_counter()
    out = output_dir(args)
    cache = psi_bench.cache_from_args(args, out)
    samplers = tuple(psi_bench.QUICK_SAMPLERS) + ("user_stratified", "random_user", "forest_fire", "svp_cf_interaction_mf") \
        if args.quick else tuple(psi_bench.SAMPLERS)
    all_rows, datasets = [], {}
    main_rates = (0.6, 0.2) if args.quick else psi_bench.RATES
    res = psi_bench.run_dataset(D.load_movielens_small(), "ml-latest-small", 0, samplers, main_rates,
                                cache, embed=True)
    all_rows += rows_of("ml-latest-small", res, main_rates)
    datasets["ml-latest-small"] = {k: res["full"][k] for k in ("n_users", "n_items", "n_train")}
    for name, inter in variants(args.quick).items():
        if args.variants is not None and name not in args.variants:
            continue
        res = psi_bench.run_dataset(inter, name, 0, samplers, VARIANT_RATES, cache, embed=True)
        all_rows += rows_of(name, res, VARIANT_RATES)
        datasets[name] = {k: res["full"][k] for k in ("n_users", "n_items", "n_train")}
    print(format_table([{"dataset": k, **v} for k, v in datasets.items()], ["dataset", "n_users", "n_items", "n_train"]))

    names = np.array([r["dataset"] for r in all_rows])
    key = jax.random.key(args.seed)
    lodo = []
    for d in datasets:
        test_idx, train_idx = np.flatnonzero(names == d), np.flatnonzero(names != d)
        lodo.append({"held_out": d, **evaluate_split(all_rows, train_idx, test_idx, args, key)})
    cols = ["held_out", "DATA-GENIE-regression", "DATA-GENIE-ranking", "random", "best_static",
            "best_static_sampler", "n_test_groups"]
    summary = {c: float(np.mean([r[c] for r in lodo])) for c in cols[1:5]}
    print("leave-one-dataset-out P@1 (fraction of (rate, metric) groups whose top sampler is the best):")
    print(format_table(lodo + [{"held_out": "mean", **summary}], cols))

    # Dissertation protocol: random 70/15/15 split of (metric, rate) pairs.
    pairs = sorted({(r["rate"], r["metric"]) for r in all_rows})
    rng = np.random.default_rng(args.seed)
    mp = []
    for rep in range(args.mp_splits):
        perm = rng.permutation(len(pairs))
        n_test = max(1, int(round(0.15 * len(pairs))))
        test_pairs = {pairs[i] for i in perm[:n_test]}
        val_pairs = {pairs[i] for i in perm[n_test:2 * n_test]}  # unused: fixed Φ settings
        is_test = np.array([(r["rate"], r["metric"]) in test_pairs for r in all_rows])
        is_val = np.array([(r["rate"], r["metric"]) in val_pairs for r in all_rows])
        mp.append(evaluate_split(all_rows, np.flatnonzero(~is_test & ~is_val), np.flatnonzero(is_test),
                                 args, jax.random.fold_in(key, rep)))
    mp_summary = {c: float(np.mean([r[c] for r in mp])) for c in cols[1:5]}
    mp_summary["n_test_groups_mean"] = float(np.mean([r["n_test_groups"] for r in mp]))
    print(f"(metric, rate) 70/15/15 split, mean over {args.mp_splits} draws:")
    print(format_table([{"protocol": "mp-split", **mp_summary}], ["protocol", *cols[1:5]]))

    wall = time.perf_counter() - t_start
    config = {
        "datasets": datasets, "samplers": list(samplers), "main_rates": list(main_rates),
        "variant_rates": list(VARIANT_RATES), "metrics": list(psi_mod.METRICS),
        "phi": {"hidden": args.hidden, "layers": 2, "steps": args.steps, "optimizer": "adamw 3e-3, wd 1e-3"},
        "embedding": "53-dim handcrafted (selection.data_genie.embed)", "seed": args.seed,
        "mp_splits": args.mp_splits,
    }
    results = {"leave_one_dataset_out": lodo, "lodo_mean": summary, "mp_split": mp, "mp_split_mean": mp_summary}
    name = "data_genie_quick" if args.quick else "data_genie"
    path = write_result(name, config, results, wall, out)
    print(f"wrote {path} ({wall:.1f} s)")
    return results


def main(argv=None):
    p = parser("data_genie", __doc__)
    p.add_argument("--quick", action="store_true",
                   help="8 samplers, rates {60, 20} %%, variants u30-a and ff30 (writes data_genie_quick.json)")
    p.add_argument("--hidden", type=int, default=64, help="hidden width of Φ (2-layer MLP)")
    p.add_argument("--steps", type=int, default=1000, help="training steps of Φ")
    p.add_argument("--seed", type=int, default=0, help="seed of Φ's initialisation and of the (m, p) splits")
    p.add_argument("--mp-splits", type=int, default=10, help="random 70/15/15 (metric, rate) splits to average")
    p.add_argument("--variants", nargs="*", default=None,
                   help="only these sub-datasets (default: all of u30-a ff30 rw30 u50i50 u30-b i40 rw15)")
    psi_bench.add_cache_flag(p)
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
