"""Sample complexity of ∞-AE: Distill-CF summaries vs samplers (dissertation Fig. 3.1/3.4 setting).

    python -m benchmarks.distill_cf            # MovieLens latest-small, budgets 1..50 %
    python -m benchmarks.distill_cf --quick    # budgets 2 and 10 %, fewer steps

For every user budget ``p`` (% of users), ∞-AE is trained on

* **Distill-CF**: ``μ = round(p·n)`` synthetic users (``distill_cf.distill``: Adam on
  Eq. 3.4, λ re-selected on validation at every validation cycle, best by validation
  nDCG@10); evaluated on the validated Gumbel summary;
* **user RNS**: the training rows of ``μ`` random users;
* **head users**: the ``μ`` users with the most training interactions;
* **interaction RNS**: ``p`` % of all training interactions, uniformly;

and on the full training matrix. Protocol as ``benchmarks.infinite_ae``: per-user
random 80/10/10 split (seed 0); ∞-AE's λ chosen on the validation items with the
training rows as queries (here by nDCG@10 for every method); test metrics with
train + validation rows as queries, both excluded from the ranking. Writes
``benchmarks/results/distill_cf_<dataset>.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import RESULTS, format_table, write_result
from distill import data as D
from distill import distill_cf as dcf
from distill import metrics
from models import infinite_ae

COLUMNS = ["budget_%", "method", "n_support", "lam", "HR@10", "nDCG@10", "nDCG@10_%full", "time_s"]


def _test_metrics(support, train, val, test, lams):
    lam, _, _ = dcf.select_lambda(support, train, val, lams=lams, metric="nDCG@10")
    context = train + val
    path = infinite_ae.spectral_path(jnp.asarray(support, jnp.float32), context)
    scores = infinite_ae.spectral_scores(path, lam)
    m = metrics.evaluate(scores, test, context, ks=(10,), metrics=("hr", "ndcg"))
    return lam, m


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--budgets", type=float, nargs="+", default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--gamma", type=int, default=100)
    p.add_argument("--tau", type=float, default=1.0)
    p.add_argument("--lam2", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--init-scale", type=float, default=10.0)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--patience", type=int, default=None, help="validations without improvement before stopping")
    p.add_argument("--checkpoint-dir", default=None, help="orbax checkpoints per budget; a rerun resumes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    budgets = args.budgets or ([2.0, 10.0] if args.quick else [1.0, 2.0, 5.0, 10.0, 25.0, 50.0])
    steps = args.steps or (20 if args.quick else 40)
    t_start = time.perf_counter()

    split = D.random_split(D.to_implicit(D.load_movielens_small()), seed=args.seed, min_interactions=3)
    train, val, test = (jnp.asarray(a) for a in (split.train, split.val, split.test))
    n = split.n_users
    lams = dcf.DEFAULT_LAMS
    rng = np.random.default_rng(args.seed)
    counts = np.asarray(split.train.sum(1))

    t = time.perf_counter()
    lam, full = _test_metrics(train, train, val, test, lams)
    rows = [{"budget_%": 100.0, "method": "full data", "n_support": n, "lam": lam, **full,
             "time_s": time.perf_counter() - t}]
    full_ndcg = full["nDCG@10"]

    for pct in budgets:
        mu = max(1, int(round(pct / 100 * n)))
        supports = {
            "user RNS": split.train[rng.choice(n, mu, replace=False)],
            "head users": split.train[np.argsort(-counts, kind="stable")[:mu]],
        }
        nz = np.flatnonzero(split.train)
        keep = rng.choice(nz, max(1, int(round(pct / 100 * nz.size))), replace=False)
        inter = np.zeros(split.train.size, np.float32)
        inter[keep] = 1.0
        inter = inter.reshape(split.train.shape)
        supports["interaction RNS"] = inter[inter.sum(1) > 0]
        for name, sup in supports.items():
            t = time.perf_counter()
            lam, m = _test_metrics(jnp.asarray(sup), train, val, test, lams)
            rows.append({"budget_%": pct, "method": name, "n_support": int(sup.shape[0]), "lam": lam, **m,
                         "time_s": time.perf_counter() - t})
        t = time.perf_counter()
        res = dcf.distill(
            split.train, split.val, n_users=mu, key=jax.random.key(args.seed), n_samples=args.gamma,
            tau=args.tau, lam2=args.lam2, learning_rate=args.lr, steps=steps, init_scale=args.init_scale,
            eval_every=args.eval_every, metric="nDCG@10", patience=args.patience,
            checkpoint_dir=None if args.checkpoint_dir is None else f"{args.checkpoint_dir}/budget_{pct:g}",
            checkpoint_every=args.eval_every * max(1, 100 // args.eval_every), progress=True,
        )
        lam, m = _test_metrics(res.summary, train, val, test, lams)
        rows.append({"budget_%": pct, "method": "Distill-CF", "n_support": mu, "lam": lam, **m,
                     "time_s": time.perf_counter() - t, "val_nDCG@10": res.val_value,
                     "best_step": res.history.best_step})
        print(format_table([r for r in rows if r["budget_%"] == pct], COLUMNS[:-2] + ["time_s"]))
    for r in rows:
        r["nDCG@10_%full"] = 100.0 * r["nDCG@10"] / full_ndcg
    print(format_table(rows, COLUMNS))

    wall = time.perf_counter() - t_start
    config = {
        "dataset": "ml-latest-small", "split_seed": args.seed, "budgets_pct_users": budgets,
        "distill_cf": {"steps": steps, "gamma": args.gamma, "tau": args.tau, "lam2": args.lam2,
                       "lr": args.lr, "init_scale": args.init_scale, "eval_every": args.eval_every,
                       "patience": args.patience,
                       "batch": "all users", "noise": "hash"},
        "lams": list(lams), "lambda_selection": "validation nDCG@10, train rows as queries",
        "test": "queries = train + val rows, both excluded from ranking", "quick": args.quick,
    }
    name = "distill_cf_ml-latest-small" + ("_quick" if args.quick else "")
    path = write_result(name, config, {"rows": rows}, wall, args.out)
    _plot(rows, budgets, full, path.with_suffix(".png"))
    print(f"wrote {path} ({wall:.1f} s)")


def _plot(rows, budgets, full, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("HR@10", "nDCG@10")):
        for method in ("Distill-CF", "user RNS", "head users", "interaction RNS"):
            pts = [(r["budget_%"], r[metric]) for r in rows if r["method"] == method]
            ax.plot(*zip(*pts), marker="o", label=method)
        ax.axhline(full[metric], color="k", ls="--", label="full data")
        ax.set_xscale("log")
        ax.set_xlabel("budget (% of users / interactions)")
        ax.set_ylabel(f"test {metric}")
        ax.set_title(f"∞-AE on ML latest-small: {metric}")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
