"""A panel of recommenders on MovieLens latest-small under the ∞-AE split protocol.

    python -m benchmarks.recsys_panel                     # 3 splits (seeds 0 1 2)
    python -m benchmarks.recsys_panel --record            # what wrote recsys_panel_ml-latest-small.json
    python -m benchmarks.recsys_panel --ml100k PATH/u.data --seeds 0

Models: PopRec, MF (BPR), EASE, ∞-AE, Mult-VAE, NeuMF and LightGCN.

Protocol (benchmarks/infinite_ae.py): implicit feedback, users with < 3 interactions
dropped, per-user random 80/10/10 split, one split per seed. EASE's and ∞-AE's λ are
chosen on every split by validation HR@100 (train items excluded). The trained models'
settings are the papers' (see each module) except the training length, learning rate
and batch size, fixed from a validation sweep on split 0 (``DEV_SWEEP``, HR@100, recorded
in the JSON); passing several values to an ``--*-epochs`` flag selects the epochs on
validation on every split instead (one extra fit per value). Test: the row-input models
(PopRec, EASE, ∞-AE, Mult-VAE; fitted on train) take train + validation rows as
queries; the user-id models (MF, NeuMF, LightGCN) are fitted on train + validation (the
id-model analogue of folding the validation items in). Train and validation items are
excluded from every test ranking.
Writes ``recsys_panel_<dataset>.json`` and a PNG bar chart of test HR@10 / nDCG@100.
``--sequential`` runs :func:`run_sequential` instead (GRU4Rec vs SASRec vs Markov and
popularity, the Farzi benchmark's leave-last-out protocol), writing
``recsys_panel_sequential_ml-latest-small.json``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import format_table, output_dir, parser, seed_row, write_result
from distill import data as D
from distill import metrics
from models import ease, infinite_ae, lightgcn, mf, mvae, neumf, popularity

COLUMNS = ["model", "chosen", "HR@10", "HR@100", "nDCG@10", "nDCG@100", "AUC", "time_s"]
METRIC_COLS = COLUMNS[2:-1]
#: Validation HR@100 on split 0 (fits on train) behind the default training lengths.
DEV_SWEEP = {
    "Mult-VAE (batch 500, lr 1e-3), epochs": {"50": 40.77, "100": 46.36, "200": 45.65},
    "MF dim 64 (lr 0.05, l2 1e-3, batch 4096), epochs": {"20": 32.81, "50": 33.79},
    "NeuMF (lr 3e-3, batch 2048), epochs": {"5": 37.30, "10": 38.88},
    "LightGCN (lr 5e-3, batch 2048), epochs": {"50": 43.23, "100": 45.47},
    "LightGCN (lr 1e-2, batch 8192), epochs": {"30": 40.13, "60": 43.33},
}


def _load(args):
    if args.ml100k:
        return "ml-100k", D.load_ml100k(args.ml100k)
    return "ml-latest-small", D.load_movielens_small()


def _pairs(x):
    u, i = np.nonzero(np.asarray(x))
    return u.astype(np.int32), i.astype(np.int32)


def _id_model(name, fit_fn, score_fn, epochs_grid, split_mats, evals):
    """Epochs chosen on validation (fits on train) when the grid has several values; then a
    fit on train + validation with those epochs, tested."""
    train, val, n_users, n_items = split_mats
    val_metric, test_metrics = evals
    t = time.perf_counter()
    sweep = {}
    if len(epochs_grid) > 1:
        u, i = _pairs(train)
        sweep = {str(ep): val_metric(score_fn(fit_fn(u, i, n_users, n_items, ep))) for ep in epochs_grid}
    best = int(max(sweep, key=sweep.get)) if sweep else epochs_grid[0]
    u2, i2 = _pairs(np.asarray(train) + np.asarray(val))
    row = {"model": name, "chosen": f"epochs={best}", **test_metrics(score_fn(fit_fn(u2, i2, n_users, n_items, best)))}
    row["time_s"] = time.perf_counter() - t
    return row, sweep


def _fits(args, key):
    """The user-id models' ``fit(users, items, n_users, n_items, epochs)`` and ``scores(fit)`` pairs."""
    all_users = lambda f: jnp.arange(f.params.user_emb.shape[0] if hasattr(f.params, "user_emb")
                                     else f.params.gmf_user.shape[0])
    return {
        "MF": (lambda u, i, nu, ni, ep: mf.fit(key, u, i, nu, ni, dim=args.dim, epochs=ep, lr=args.mf_lr,
                                                 l2=args.mf_l2, batch_size=args.mf_batch),
               lambda f: mf.predict(f.params, all_users(f)), args.mf_epochs),
        "NeuMF": (lambda u, i, nu, ni, ep: neumf.fit(key, u, i, nu, ni, epochs=ep, lr=args.neumf_lr,
                                                       batch_size=args.neumf_batch),
                  lambda f: neumf.scores(f.params, all_users(f)), args.neumf_epochs),
        "LightGCN": (lambda u, i, nu, ni, ep: lightgcn.fit(key, u, i, nu, ni, dim=args.dim, epochs=ep,
                                                             lr=args.lgcn_lr, batch_size=args.lgcn_batch),
                     lambda f: lightgcn.scores(f.params, f.graph, all_users(f)), args.lgcn_epochs),
    }


def _closed_form_rows(train, val, context, test_metrics, args):
    rows, sweeps = [], {}
    t = time.perf_counter()
    rows.append({"model": "PopRec", "chosen": "-", **test_metrics(popularity.predict(popularity.fit(train), context))})
    rows[-1]["time_s"] = time.perf_counter() - t
    for name, mod, lams in (("EASE", ease, args.ease_lams), ("inf-AE", infinite_ae, args.lams)):
        t = time.perf_counter()
        search = mod.select_lambda(train, val, lams=lams)
        rows.append({"model": name, "chosen": f"lam={search.best_lam:g}",
                     **test_metrics(mod.predict(search.model, context))})
        rows[-1]["time_s"] = time.perf_counter() - t
        sweeps[name] = dict(zip(map(str, search.lams), search.values, strict=True))
    return rows, sweeps


def _mvae_row(key, train, context, val_metric, test_metrics, args):
    """Mult-VAE fitted on the training rows; epochs chosen on validation when the grid has several values."""
    t = time.perf_counter()
    def fit(ep):  # β reaches its cap 0.2 at 16 % of the updates (mvae.anneal_steps)
        return mvae.fit(key, train, epochs=ep, total_anneal_steps=mvae.anneal_steps(train.shape[0], ep))

    fits = {ep: fit(ep) for ep in args.mvae_epochs}
    sweep = {str(ep): val_metric(mvae.scores(f.params, train)) for ep, f in fits.items()} if len(fits) > 1 else {}
    best = int(max(sweep, key=sweep.get)) if sweep else args.mvae_epochs[0]
    row = {"model": "Mult-VAE", "chosen": f"epochs={best}", **test_metrics(mvae.scores(fits[best].params, context))}
    row["time_s"] = time.perf_counter() - t
    return row, sweep


def run_seed(inter, name: str, seed: int, args) -> tuple[list[dict], dict]:
    """One split: validation choices, then test metrics of every model."""
    split = D.random_split(D.to_implicit(inter), seed=seed, min_interactions=3)
    train, val, test = (jnp.asarray(a) for a in (split.train, split.val, split.test))
    context = train + val
    print(f"{name} seed {seed}: {split.n_users} users, {split.n_items} items, "
          f"{int(split.train.sum())}/{int(split.val.sum())}/{int(split.test.sum())} train/val/test", flush=True)

    def val_metric(scores):
        return metrics.evaluate(scores, val, train, ks=(100,), metrics=("hr",))["HR@100"]

    def test_metrics(scores):
        return metrics.evaluate(scores, test, context, ks=(10, 100), metrics=("hr", "ndcg", "auc"))

    rows, sweeps = _closed_form_rows(train, val, context, test_metrics, args)
    key = jax.random.key(seed)
    row, sweeps["Mult-VAE"] = _mvae_row(key, train, context, val_metric, test_metrics, args)
    rows.append(row)
    mats = (split.train, split.val, split.n_users, split.n_items)
    for model, (fit_fn, score_fn, grid) in _fits(args, key).items():
        if model in args.skip:
            continue
        row, sweeps[model] = _id_model(model, fit_fn, score_fn, grid, mats, (val_metric, test_metrics))
        rows.append(row)
        print(f"  {model}: {row['chosen']} HR@10 {row['HR@10']:.2f} ({row['time_s']:.0f} s)", flush=True)
    print(format_table(rows, COLUMNS), flush=True)
    return rows, sweeps


def summarise(per_seed: dict, seeds) -> list[dict]:
    """Mean and sample std over seeds of every metric, per model."""
    out = []
    for m, model in enumerate(r["model"] for r in per_seed[seeds[0]]["test"]):
        row = {"model": model, "chosen": [per_seed[s]["test"][m]["chosen"] for s in seeds]}
        for col in [*METRIC_COLS, "time_s"]:
            vals = np.array([per_seed[s]["test"][m][col] for s in seeds], dtype=float)
            row[col] = float(vals.mean())
            row[col + "_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        out.append(row)
    return out


def _plot(summary, path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    names = [r["model"] for r in summary]
    for ax, col in zip(axes, ("HR@10", "nDCG@100"), strict=True):
        ax.bar(names, [r[col] for r in summary], yerr=[r[col + "_std"] for r in summary], capsize=3, color="C0")
        ax.set_title(f"test {col} (mean ± std over splits)")
        ax.tick_params(axis="x", rotation=35)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _config(args, name, inter) -> dict:
    return {
        "dataset": name, "seeds": list(args.seeds), "n_users": int(inter.n_users), "n_items": int(inter.n_items),
        "split": "per-user random 80/10/10, users with < 3 interactions dropped",
        "selection_metric": "validation HR@100 (train items excluded)",
        "lams_inf_ae": list(args.lams), "lams_ease": list(args.ease_lams),
        "mvae": {"arch": "I-600-200-600-I tanh", "dropout": 0.5, "beta_cap": 0.2, "batch": 500, "lr": 1e-3,
                 "epochs_grid": list(args.mvae_epochs), "anneal": "total_anneal_steps = 0.8 x updates (cap at 16% of updates)"},
        "mf": {"dim": args.dim, "lr": args.mf_lr, "l2": args.mf_l2, "batch": args.mf_batch,
               "epochs_grid": list(args.mf_epochs)},
        "neumf": {"factors": 8, "mlp_layers": [32, 16, 8], "negatives": 4, "lr": args.neumf_lr,
                  "batch": args.neumf_batch, "epochs_grid": list(args.neumf_epochs)},
        "lightgcn": {"dim": args.dim, "layers": 3, "l2": 1e-4, "lr": args.lgcn_lr, "batch": args.lgcn_batch,
                     "epochs_grid": list(args.lgcn_epochs)},
        "id_models_test_fit": "fitted on train + validation",
        "dev_sweep_split0_val_HR@100": DEV_SWEEP,
    }


def run(args) -> dict:
    t_start = time.perf_counter()
    name, inter = _load(args)
    per_seed = {}
    for seed in args.seeds:
        rows, sweeps = run_seed(inter, name, seed, args)
        per_seed[seed] = {"test": rows, "validation": sweeps}
    summary = summarise(per_seed, list(args.seeds))
    print(f"-- mean over seeds {list(args.seeds)}")
    print(format_table([{**r, "chosen": "", **{c: f"{r[c]:.2f}±{r[c + '_std']:.2f}" for c in METRIC_COLS}}
                        for r in summary], COLUMNS))
    out = output_dir(args)
    stem = f"recsys_panel_{name}"
    plotted = _plot(summary, out / f"{stem}.png")
    wall = time.perf_counter() - t_start
    results = {"mean": summary, "per_seed": per_seed, "plot": f"{stem}.png" if plotted else None}
    path = write_result(stem, _config(args, name, inter), results, wall, out)
    print(f"wrote {path} ({wall:.1f} s)")
    return results


def run_sequential(args) -> dict:
    """GRU4Rec vs SASRec vs popularity / first-order Markov under the Farzi benchmark's
    sequential protocol (:func:`benchmarks.farzi.prepare`: leave-last-out, items with
    < ``--min-item`` interactions dropped; HR@10 / nDCG@10 of the last item with each
    user's history excluded). Both networks train with :func:`distill.farzi.train_student`
    (Adam, batch 32, early-stopped on validation HR@10); seeds vary the initialisation."""
    from benchmarks import farzi as fz
    from models.gru4rec import gru4rec
    from models.sasrec import sasrec

    t_start = time.perf_counter()
    d = fz.prepare(args.max_len, args.min_item)
    kw = dict(lr=1e-3, batch=32, max_steps=args.seq_steps, eval_every=50, patience=8)
    rows = fz.classical_rows(d, args.seeds)
    for name, model in (("SASRec d64 L2", sasrec(d["n_items"], max_len=args.max_len, d_model=64)),
                        ("GRU4Rec h100", gru4rec(d["n_items"], hidden=100))):
        t = time.perf_counter()
        res, steps, _ = fz.trials(model, d["train"], d, args.seeds, **kw)
        rows.append(seed_row(name, "train seqs", res, steps, time.perf_counter() - t))
        print(f"{name}: HR@10 {res['HR@10'][0]:.2f} ± {res['HR@10'][1]:.2f}", flush=True)
    print(format_table(rows, ["method", "HR@10", "nDCG@10", "steps", "time_s"]))
    wall = time.perf_counter() - t_start
    config = {"dataset": "ml-latest-small", "protocol": "leave-last-out (benchmarks.farzi.prepare)",
              "max_len": args.max_len, "min_item": args.min_item, "seeds": list(args.seeds), "train": kw,
              "n_users": d["n_users"], "n_items": d["n_items"], "std": "population std over seeds (ddof=0)"}
    path = write_result("recsys_panel_sequential_ml-latest-small", config, {"rows": rows}, wall, output_dir(args))
    print(f"wrote {path} ({wall:.1f} s)")
    return {"rows": rows}


def main(argv=None):
    p = parser("recsys_panel", __doc__)
    p.add_argument("--ml100k", metavar="PATH", help="MovieLens-100k u.data instead of the bundled latest-small")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one split per seed")
    p.add_argument("--lams", type=float, nargs="+", default=list(infinite_ae.DEFAULT_LAMS), help="∞-AE λ grid")
    p.add_argument("--ease-lams", type=float, nargs="+", default=list(ease.DEFAULT_LAMS), help="EASE λ grid")
    p.add_argument("--dim", type=int, default=64, help="embedding size of MF and LightGCN")
    p.add_argument("--mvae-epochs", type=int, nargs="+", default=[100], help="Mult-VAE epochs grid")
    p.add_argument("--mf-epochs", type=int, nargs="+", default=[50], help="MF epochs grid")
    p.add_argument("--mf-lr", type=float, default=0.05, help="MF Adam learning rate")
    p.add_argument("--mf-l2", type=float, default=1e-3, help="MF L2 penalty")
    p.add_argument("--mf-batch", type=int, default=4096, help="MF batch size")
    p.add_argument("--neumf-epochs", type=int, nargs="+", default=[10], help="NeuMF epochs grid")
    p.add_argument("--neumf-lr", type=float, default=3e-3, help="NeuMF Adam learning rate")
    p.add_argument("--neumf-batch", type=int, default=2048, help="NeuMF batch size (pairs)")
    p.add_argument("--lgcn-epochs", type=int, nargs="+", default=[60], help="LightGCN epochs grid")
    p.add_argument("--lgcn-lr", type=float, default=1e-2, help="LightGCN Adam learning rate")
    p.add_argument("--lgcn-batch", type=int, default=8192, help="LightGCN batch size")
    p.add_argument("--skip", nargs="*", default=[], choices=["MF", "NeuMF", "LightGCN"], help="user-id models to leave out")
    p.add_argument("--sequential", action="store_true",
                   help="run the sequential panel (GRU4Rec, SASRec, Markov, popularity) instead")
    p.add_argument("--max-len", type=int, default=50, help="sequential: longest training sequence")
    p.add_argument("--min-item", type=int, default=20, help="sequential: drop items with fewer interactions")
    p.add_argument("--seq-steps", type=int, default=1500, help="sequential: most Adam steps per network")
    args = p.parse_args(argv)
    return run_sequential(args) if args.sequential else run(args)


if __name__ == "__main__":
    main()
