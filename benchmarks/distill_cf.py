"""Sample complexity of ∞-AE: Distill-CF summaries vs samplers (dissertation Fig. 3.1/3.4 setting).

    python -m benchmarks.distill_cf                  # MovieLens latest-small, budgets 1..50 %
    python -m benchmarks.distill_cf --quick          # budgets 2 and 10 %, 30 steps, 1 seed
    python -m benchmarks.distill_cf --all-defaults   # 5 %: Distill-CF (all defaults) vs random users

For every user budget ``p`` (% of users), ∞-AE is trained on

* **Distill-CF**: ``μ = round(p·n)`` synthetic users (``distill_cf.distill`` with the
  library's defaults, ``distill_cf.Settings``; a flag overrides one of them); evaluated
  on the validated Gumbel summary. The row is named "Distill-CF (all defaults)" when
  no setting is overridden;
* **user RNS**: the training rows of ``μ`` random users;
* **head users**: the ``μ`` users with the most training interactions;
* **interaction RNS**: ``p`` % of all training interactions, uniformly;

and on the full training matrix. Random samplers and Distill-CF are repeated over
``--seeds`` draws / keys (mean ± std). Protocol as ``benchmarks.infinite_ae``: per-user
random 80/10/10 split (``--seed``); ∞-AE's λ chosen on the validation items with the
training rows as queries (by nDCG@10 for every method); test metrics with train +
validation rows as queries, both excluded from the ranking. Writes
``distill_cf_<dataset>[_quick|_defaults].json`` and ``.png`` (and, with ``--export``,
the summaries) into the output folder.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import format_table, output_dir, parser, write_result
from distill import data as D
from distill import distill_cf as dcf
from distill import loop, metrics
from models import infinite_ae

COLUMNS = ["budget_%", "method", "n_support", "lam", "HR@10", "nDCG@10", "nDCG@10_std", "nDCG@10_%full",
           "time_s"]
#: flag name -> the ``distill_cf.Settings`` field it overrides.
OVERRIDES = {"steps": "steps", "gamma": "n_samples", "tau": "tau", "lam2": "lam2", "lr": "learning_rate",
             "init_scale": "init_scale", "eval_every": "eval_every", "patience": "patience",
             "init_users": "init_users", "lr_schedule": "lr_schedule"}
#: The library defaults of the overridable settings (recorded in the JSON's config).
DEFAULTS = {f: v for f, v in dcf.Settings._field_defaults.items() if f in OVERRIDES.values()}


def _test_metrics(support, train, val, test, lams):
    lam = dcf.select_lambda(support, train, val, lams=lams, metric="nDCG@10").best_lam
    context = train + val
    path = infinite_ae.spectral_path(jnp.asarray(support, jnp.float32), context)
    scores = infinite_ae.spectral_scores(path, lam)
    m = metrics.evaluate(scores, test, context, ks=(10,), metrics=("hr", "ndcg"))
    return lam, {k: float(m[k]) for k in ("HR@10", "nDCG@10")}


def _row(pct, method, n_support, per_seed, time_s, **extra):
    """Mean over seeds of HR@10 / nDCG@10, their stds, and the per-seed values."""
    row = {"budget_%": pct, "method": method, "n_support": n_support,
           "lam": [p["lam"] for p in per_seed] if len(per_seed) > 1 else per_seed[0]["lam"]}
    for m in ("HR@10", "nDCG@10"):
        vals = [p[m] for p in per_seed]
        row[m], row[f"{m}_std"] = float(np.mean(vals)), float(np.std(vals))
    row.update(n_seeds=len(per_seed), per_seed=per_seed, time_s=time_s, **extra)
    return row


def _samplers(split, pct, mu, draws, seed):
    """``{method: [support per draw]}`` for the three sampling baselines."""
    n = split.n_users
    counts = np.asarray(split.train.sum(1))
    nz = np.flatnonzero(split.train)
    out = {"user RNS": [], "head users": [split.train[np.argsort(-counts, kind="stable")[:mu]]],
           "interaction RNS": []}
    for d in range(draws):
        rng = np.random.default_rng(seed + d)
        out["user RNS"].append(split.train[rng.choice(n, mu, replace=False)])
        keep = rng.choice(nz, max(1, int(round(pct / 100 * nz.size))), replace=False)
        inter = np.zeros(split.train.size, np.float32)
        inter[keep] = 1.0
        inter = inter.reshape(split.train.shape)
        out["interaction RNS"].append(inter[inter.sum(1) > 0])
    return out


def _distill_rows(args, split, data, pct, mu, overrides, out):
    name = "Distill-CF (all defaults)" if not overrides else "Distill-CF"
    per_seed, results, t = [], [], time.perf_counter()
    for d in range(args.seeds):
        ckpt = None if args.checkpoint_dir is None else f"{args.checkpoint_dir}/budget_{pct:g}_seed{args.seed + d}"
        key = jax.random.key(args.seed + d)
        res = dcf.distill(key, dcf.Data(split.train, split.val), dcf.Settings(n_syn_users=mu, **overrides),
                          checkpoint_dir=ckpt, progress=True)
        lam, m = _test_metrics(res.data, *data, res.settings.lams)
        # lam: re-selected on validation for the returned (best-validated) summary, as for every
        # support; distill_lam: the λ distillation selected for it (the same grid and metric).
        per_seed.append({"lam": lam, **m, "val_nDCG@10": res.val_value, "best_step": res.history.best_step,
                         "stopped_early": res.history.stopped_early, "distill_lam": res.lam,
                         "val_curve": dict(zip(map(str, res.history.eval_steps), res.history.eval_values,
                                               strict=True))})
        results.append({**dcf.settings_json(res.settings), "key_data": loop.key_signature(key)})
        if args.export:
            dcf.export_summary(out / f"distill_cf_summary_{pct:g}pct_seed{args.seed + d}", res,
                               item_ids=split.item_ids, settings={"dataset": "ml-latest-small"})
    return _row(pct, name, mu, per_seed, (time.perf_counter() - t) / args.seeds, settings=results[0])


def _parse(argv):
    p = parser("distill_cf", __doc__)
    p.add_argument("--quick", action="store_true", help="budgets 2 and 10 %%, 30 steps, 1 seed")
    p.add_argument("--all-defaults", action="store_true",
                   help="the 5 %% budget only, Distill-CF with every library default (no overrides allowed)")
    p.add_argument("--budgets", type=float, nargs="+", default=None,
                   help="user budgets in %% of users (unset: 1 2 5 10 25 50; 2 10 with --quick)")
    p.add_argument("--seeds", type=int, default=None,
                   help="Distill-CF keys and sampler draws per budget (unset: 3, or 1 with --quick)")
    p.add_argument("--seed", type=int, default=0, help="split seed; also the first Distill-CF key / draw")
    p.add_argument("--export", action="store_true", help="export every Distill-CF summary into the output folder")
    p.add_argument("--checkpoint-dir", default=None, help="orbax checkpoints per budget and seed; a rerun resumes")
    # Overrides default to SUPPRESS (absent from args): the help shows the library's value.
    for flag, kind, what in (
        ("steps", int, "outer steps ξ"), ("gamma", int, "Gumbel samples γ per synthetic user"),
        ("tau", float, "Gumbel-softmax temperature τ"), ("lam2", float, "L1 weight λ₂"),
        ("lr", float, "Adam step size η"), ("init_scale", float, "Γ = init_scale · real rows"),
        ("eval_every", int, "steps between validations"),
        ("patience", int, "validations without improvement before stopping; 0: never"),
    ):
        p.add_argument(f"--{flag.replace('_', '-')}", type=kind, default=argparse.SUPPRESS,
                       help=f"{what} (library default: {DEFAULTS[OVERRIDES[flag]]})")
    for flag, choices, what in (("init_users", dcf.INIT_USERS, "real users Γ₀ is built from"),
                                ("lr_schedule", dcf.LR_SCHEDULES, "Adam step-size schedule over the steps")):
        p.add_argument(f"--{flag.replace('_', '-')}", choices=choices, default=argparse.SUPPRESS,
                       help=f"{what} (library default: {DEFAULTS[flag]})")
    args = p.parse_args(argv)
    if args.quick and not hasattr(args, "steps"):
        args.steps = 30
    overrides = {arg: getattr(args, flag) for flag, arg in OVERRIDES.items() if hasattr(args, flag)}
    if overrides.get("patience") == 0:
        overrides["patience"] = None
    if args.all_defaults and (overrides or args.budgets):
        p.error("--all-defaults takes no --budgets and no Distill-CF setting")
    args.seeds = args.seeds or (1 if args.quick else 3)
    args.budgets = [5.0] if args.all_defaults else (
        args.budgets or ([2.0, 10.0] if args.quick else [1.0, 2.0, 5.0, 10.0, 25.0, 50.0]))
    return args, overrides


def main(argv=None):
    args, overrides = _parse(argv)
    out = output_dir(args)
    t_start = time.perf_counter()
    split = D.random_split(D.to_implicit(D.load_movielens_small()), seed=args.seed, min_interactions=3)
    data = tuple(jnp.asarray(a) for a in (split.train, split.val, split.test))
    lams = dcf.Settings().lams

    t = time.perf_counter()
    lam, full = _test_metrics(data[0], *data, lams)
    rows = [_row(100.0, "full data", split.n_users, [{"lam": lam, **full}], time.perf_counter() - t)]
    for pct in args.budgets:
        mu = max(1, int(round(pct / 100 * split.n_users)))
        for name, supports in _samplers(split, pct, mu, args.seeds, args.seed).items():
            t = time.perf_counter()
            per_seed = [{"lam": lam, **m} for lam, m in
                        (_test_metrics(jnp.asarray(s), *data, lams) for s in supports)]
            rows.append(_row(pct, name, int(supports[0].shape[0]), per_seed,
                             (time.perf_counter() - t) / len(supports)))
        rows.append(_distill_rows(args, split, data, pct, mu, overrides, out))
        print(format_table([r for r in rows if r["budget_%"] == pct], COLUMNS[:-2] + ["time_s"]))
    for r in rows:
        r["nDCG@10_%full"] = 100.0 * r["nDCG@10"] / full["nDCG@10"]
    print(format_table(rows, COLUMNS))

    wall = time.perf_counter() - t_start
    config = {
        "dataset": "ml-latest-small", "split_seed": args.seed, "budgets_pct_users": args.budgets,
        "seeds": args.seeds, "distill_cf": {**DEFAULTS, **overrides, "batch": "all users", "noise": "hash"},
        "overrides": overrides, "lams": list(lams),
        "lambda_selection": "validation nDCG@10, train rows as queries",
        "test": "queries = train + val rows, both excluded from ranking", "quick": args.quick,
    }
    name = "distill_cf_ml-latest-small" + ("_quick" if args.quick else "_defaults" if args.all_defaults else "")
    path = write_result(name, config, {"rows": rows}, wall, out_dir=out)
    _plot(rows, full, path.with_suffix(".png"))
    print(f"wrote {path} ({wall:.1f} s)")


def _plot(rows, full, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    methods = dict.fromkeys(r["method"] for r in rows if r["method"] != "full data")
    for ax, metric in zip(axes, ("HR@10", "nDCG@10"), strict=True):
        for method in methods:
            pts = [(r["budget_%"], r[metric], r[f"{metric}_std"]) for r in rows if r["method"] == method]
            x, y, e = zip(*pts, strict=True)
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=method)
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
