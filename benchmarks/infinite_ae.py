"""∞-AE vs EASE vs popularity on MovieLens (dissertation Table 3.3) — the main job.

    python -m benchmarks.infinite_ae                      # MovieLens latest-small (offline)
    python -m benchmarks.infinite_ae --ml1m PATH/ratings.dat
    python -m benchmarks.infinite_ae --ml100k PATH/u.data
    python -m benchmarks.infinite_ae --record             # what wrote infinite_ae_ml-latest-small.json
    python -m benchmarks.infinite_ae --seeds 0 1 2 3 4 --record   # ..._5seeds.json

``time_s`` is the wall time of λ selection + final fit + test scoring per model.

Protocol (the ∞-AE reference recipe): implicit feedback (every rating is a positive),
users with < 3 interactions dropped, per-user random 80/10/10 split. λ is chosen on
the validation items by HR@100 with the training rows as queries; the test ranking
then uses train + validation items as the query rows and excludes them from the
ranking. Writes ``infinite_ae_<dataset>[_<n>seeds].json`` to ``--out`` (default
``runs/``; ``--record``: ``benchmarks/results/``).
"""

from __future__ import annotations

import time

import jax.numpy as jnp
import numpy as np

from benchmarks._common import format_table, output_dir, parser, write_result
from distill import data as D
from distill import metrics
from models import ease, infinite_ae, popularity
from models.kernels import KernelSpec

COLUMNS = ["model", "lam", "HR@10", "HR@100", "nDCG@10", "nDCG@100", "AUC", "PSP@10", "time_s"]


def _load(args):
    if args.ml1m:
        return "ml-1m", D.load_ml1m(args.ml1m)
    if args.ml100k:
        return "ml-100k", D.load_ml100k(args.ml100k)
    return "ml-latest-small", D.load_movielens_small()


def run_seed(inter, name: str, seed: int, args) -> tuple[list[dict], dict]:
    """One split (by ``seed``): λ selection on validation, then test metrics per model."""
    split = D.random_split(D.to_implicit(inter), seed=seed, min_interactions=3)
    train = jnp.asarray(split.train)
    val = jnp.asarray(split.val)
    test = jnp.asarray(split.test)
    context = train + val  # query rows at test time; also excluded from the test ranking
    prop = metrics.item_propensity(split.train)
    print(
        f"{name}: {split.n_users} users, {split.n_items} items, "
        f"{int(split.train.sum())}/{int(split.val.sum())}/{int(split.test.sum())} train/val/test"
    )

    def test_metrics(scores):
        return metrics.evaluate(scores, test, context, ks=(10, 100), propensity=prop)

    rows, sweeps = [], {}

    t = time.perf_counter()
    pop = popularity.fit(train)
    rows.append({"model": "PopRec", "lam": "-", **test_metrics(popularity.predict(pop, context))})
    rows[-1]["time_s"] = time.perf_counter() - t

    t = time.perf_counter()
    search = ease.select_lambda(train, val, lams=args.ease_lams)
    scores = ease.predict(search.model, context)
    rows.append({"model": "EASE", "lam": search.best_lam, **test_metrics(scores)})
    rows[-1]["time_s"] = time.perf_counter() - t
    sweeps["EASE"] = dict(zip(map(str, search.lams), search.values, strict=True))

    t = time.perf_counter()
    search = infinite_ae.select_lambda(train, val, lams=args.lams, spec=KernelSpec(depth=args.depth))
    scores = infinite_ae.predict(search.model, context)
    rows.append({"model": "inf-AE", "lam": search.best_lam, **test_metrics(scores)})
    rows[-1]["time_s"] = time.perf_counter() - t
    sweeps["inf-AE"] = dict(zip(map(str, search.lams), search.values, strict=True))

    print(format_table(rows, COLUMNS))
    return rows, sweeps


def run(args) -> dict:
    t_start = time.perf_counter()
    name, inter = _load(args)
    per_seed = {}
    for seed in args.seeds:
        print(f"-- seed {seed}")
        rows, sweeps = run_seed(inter, name, seed, args)
        per_seed[seed] = {"test": rows, "validation_by_lam": sweeps}
    summary = []
    for m, model in enumerate(r["model"] for r in per_seed[args.seeds[0]]["test"]):
        row = {"model": model}
        for col in COLUMNS[2:]:
            vals = np.array([per_seed[s]["test"][m][col] for s in args.seeds], dtype=float)
            row[col] = float(vals.mean())
            row[col + "_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        row["lam"] = [per_seed[s]["test"][m]["lam"] for s in args.seeds]
        summary.append(row)
    if len(args.seeds) > 1:
        print(f"-- mean over seeds {list(args.seeds)} (std in the JSON)")
        print(format_table(summary, [c for c in COLUMNS if c != "lam"]))
    wall = time.perf_counter() - t_start
    config = {
        "dataset": name,
        "seeds": list(args.seeds),
        "split": "per-user random 80/10/10, users with < 3 interactions dropped",
        "n_users": int(inter.n_users),
        "n_items": int(inter.n_items),
        "lams_inf_ae": list(args.lams),
        "lams_ease": list(args.ease_lams),
        "depth": args.depth,
        "selection_metric": "validation HR@100",
    }
    results = {"mean": summary, "per_seed": per_seed}
    suffix = "" if len(args.seeds) == 1 else f"_{len(args.seeds)}seeds"
    path = write_result(f"infinite_ae_{name}{suffix}", config, results, wall, output_dir(args))
    print(f"wrote {path} ({wall:.1f} s)")
    return results


def main(argv=None):
    p = parser("infinite_ae", __doc__)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ml1m", metavar="PATH", help="path to MovieLens-1M ratings.dat (neither flag: the bundled latest-small)")
    src.add_argument("--ml100k", metavar="PATH", help="path to MovieLens-100k u.data")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="one split per seed; several add _<n>seeds to the name and report mean ± std")
    p.add_argument("--depth", type=int, default=1, help="hidden layers of the ∞-AE's NTK")
    p.add_argument("--lams", type=float, nargs="+", default=list(infinite_ae.DEFAULT_LAMS),
                   help="∞-AE λ grid (relative to tr(K)/n), chosen on validation HR@100")
    p.add_argument("--ease-lams", type=float, nargs="+", default=list(ease.DEFAULT_LAMS),
                   help="EASE λ grid, chosen on validation HR@100")
    args = p.parse_args(argv)
    run(args)


if __name__ == "__main__":
    main()
