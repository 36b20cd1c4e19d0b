"""Farzi ablations on sequential recommendation: pretrained trajectories |Ω|, temperature τ, inner steps T.

    python -m benchmarks.farzi_ablation --cache /tmp/farzi_cache            # all three ablations
    python -m benchmarks.farzi_ablation --ablations omega --outer-steps 30   # one, shorter

Dissertation Fig. 4.6b varies the number of pretrained trajectories in Ω for Farzi
[10×150] on ML-100k and reports "a massive improvement … with as little as just 5
trajectories, compared to randomly initializing networks in FARZI's inner-loop", saturating
after; Table 4.2 grid-searches τ ∈ {0.5, 1, 2}; §4.4 notes that 100s of inner steps are
needed. Here, on MovieLens latest-small with the protocol and code of
:mod:`benchmarks.farzi` (SASRec, temporal leave-last-out, all items ranked; Farzi
[10×150] from real windows, best D_syn by validation HR@10), one factor is varied at a
time around the base setting (τ = 1, T = 10, Ω = 2 trajectories):

* ``omega``: Ω = the checkpoints (steps 0, 100, …, 400) of k ∈ {1, 2, 5} SASRec pretraining
  runs, and k = 0: the step-0 checkpoints of the 5 runs only, i.e. 5 random
  initialisations (the "no trajectories" baseline).
* ``tau``: τ ∈ {0.5, 1, 2}. With the real-window init (``farzi.init_from_tokens``) Z is
  scaled by τ so the initial D_syn is the same for every τ; τ then only sets how far an
  outer Adam step on Z moves the logits Z·M/τ (a step δ on Z moves them by δ·M/τ, while a
  step on M moves them by Z·δ/τ = O(1), independent of τ) — τ acts as a learning-rate
  multiplier 1/τ on the Z factor.
* ``inner``: T ∈ {10, 30} inner Adam steps (reverse-mode Adam; CPU time grows linearly in T).

Every configuration is distilled with the same outer budget, then tested with SASRecs
trained from scratch on its D_syn (mean ± std over ``--seeds``); the random-sequence and
"Farzi init" rows of the same budget are the reference. The base configuration is run
once and shared by the three ablations. Writes ``benchmarks/results/farzi_ablation.json``
and ``.png``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import format_table, output_dir, parser, write_result
from benchmarks.farzi import (CHECKPOINTS_PER_RUN, TRAIN_SYN_COARSE, init_row, load_or_pretrain_omega, prepare,
                              random_row, run_farzi)
from distill import inner
from models.sasrec import sasrec

ABLATIONS = {
    "omega": ("trajectories", (0, 1, 2, 5)),
    "tau": ("tau", (0.5, 1.0, 2.0)),
    "inner": ("inner_steps", (10, 30)),
}
BASE = {"trajectories": 2, "tau": 1.0, "inner_steps": 10}


def select_omega(omega5, trajectories: int):
    """Ω of ``trajectories`` runs from the 5-run Ω (run-major); 0 → the 5 step-0 checkpoints."""
    if trajectories == 0:
        keep = [r * CHECKPOINTS_PER_RUN for r in range(5)]
    else:
        keep = list(range(trajectories * CHECKPOINTS_PER_RUN))
    return jax.tree_util.tree_map(lambda a: a[jnp.asarray(keep)], omega5)


def _arguments(argv):
    ap = parser("farzi_ablation", __doc__)
    ap.add_argument("--ablations", nargs="+", choices=sorted(ABLATIONS), default=["omega", "tau", "inner"],
                    help="which factors to vary, one at a time around the base setting")
    ap.add_argument("--values", type=float, nargs="+", default=None,
                    help="override the values of a single ablation, e.g. --ablations inner --values 100")
    ap.add_argument("--shape", default="10x150", help="μxξ of D_syn")
    ap.add_argument("--outer-steps", type=int, default=60, help="outer (distillation) steps per run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="SASRec seeds trained on each D_syn")
    ap.add_argument("--min-item", type=int, default=20, help="drop items with fewer interactions")
    ap.add_argument("--inner-lr", type=float, default=3e-3, help="inner Adam learning rate")
    ap.add_argument("--outer-lr", type=float, default=3e-3, help="outer Adam learning rate on (Z, M)")
    ap.add_argument("--latent-dim", type=int, default=64, help="d of the latent factorisation")
    ap.add_argument("--init-logit", type=float, default=8.0, help="real-token logit of the 'real' init")
    ap.add_argument("--real-batch", type=int, default=64, help="real sequences per outer step")
    ap.add_argument("--cache", default=None, help="directory for Ω (trajectory store): reused when present")
    ap.add_argument("--name", default="farzi_ablation", help="result file name")
    return ap.parse_args(argv)


def _ablations(args):
    """The ablation grid, with ``--values`` overriding a single ablation's values."""
    ablations = dict(ABLATIONS)
    if args.values is not None:
        if len(args.ablations) != 1:
            raise ValueError("--values: expected exactly one --ablations entry")
        factor, _ = ABLATIONS[args.ablations[0]]
        cast = float if factor == "tau" else int
        ablations[args.ablations[0]] = (factor, tuple(cast(v) for v in args.values))
    return ablations


def _configs(args, ablations):
    """Every distinct setting to run: the base with one factor changed."""
    configs = []
    for ab in args.ablations:
        factor, values = ablations[ab]
        for v in values:
            cfg = {**BASE, factor: v}
            if cfg not in configs:
                configs.append(cfg)
    return configs


def _show(rows, columns):
    return format_table([{**r, "HR@10": f"{r['HR@10']:.2f}±{r['std']['HR@10'] if 'std' in r else r['HR@10_std']:.2f}",
                          "nDCG@10": f"{r['nDCG@10']:.2f}±"
                                     f"{r['std']['nDCG@10'] if 'std' in r else r['nDCG@10_std']:.2f}"}
                         for r in rows], columns)


def _tables(args, ablations, runs):
    """One table per ablation: test metrics, best validation and distillation time per value."""
    tables = {}
    for ab in args.ablations:
        factor, values = ablations[ab]
        table = []
        for v in values:
            r = next(r for r in runs if {k: r[k] for k in BASE} == {**BASE, factor: v})
            table.append({factor: v, "HR@10": r["HR@10"], "HR@10_std": r["std"]["HR@10"], "nDCG@10": r["nDCG@10"],
                          "nDCG@10_std": r["std"]["nDCG@10"], "best_val_HR@10": max(r["history"]["eval_values"]),
                          "best_outer_step": r["history"]["best_step"], "distill_time_s": r["distill_time_s"]})
        tables[ab] = table
        print(f"\nablation: {factor}")
        print(_show(table, [factor, "HR@10", "nDCG@10", "best_val_HR@10", "best_outer_step", "distill_time_s"]))
    return tables


def _config(args, d, mu, xi, ablations, omega_time):
    return {
        "dataset": "ml-latest-small", "min_item": args.min_item, "n_users": d["n_users"], "n_items": d["n_items"],
        "protocol": "as benchmarks.farzi: temporal leave-last-out; all items ranked, history excluded",
        "model": "SASRec d64, 2 blocks, 1 head, no dropout", "shape": [mu, xi], "seeds": args.seeds,
        "train_synthetic": TRAIN_SYN_COARSE, "base": BASE, "ablations": {a: ablations[a] for a in args.ablations},
        "omega": {"runs_pretrained": 5, "checkpoints": "steps 0,100,200,300,400 per run",
                  "trajectories_0": "step-0 checkpoints of the 5 runs (random inits)", "time_s": omega_time},
        "farzi": {"outer_steps": args.outer_steps, "inner_lr": args.inner_lr, "outer_lr": args.outer_lr,
                  "latent_dim": args.latent_dim, "real_batch": args.real_batch, "init": "real",
                  "init_logit": args.init_logit, "mode": "reverse_adam",
                  "reverse_every": inner.default_reverse_every(jnp.float32)},
    }


def main(argv=None):
    args = _arguments(argv)
    t_start = time.perf_counter()
    mu, xi = (int(v) for v in args.shape.split("x"))
    ablations = _ablations(args)
    d = prepare(xi, args.min_item)
    model = sasrec(d["n_items"], max_len=xi, d_model=64, n_heads=1, n_layers=2)
    t = time.perf_counter()
    omega5 = load_or_pretrain_omega(model, d, args.cache, args.min_item, xi, n_runs=5)
    omega_time = time.perf_counter() - t
    seeds = args.seeds
    common = dict(seeds=seeds, syn_kw=TRAIN_SYN_COARSE, outer_steps=args.outer_steps, latent_dim=args.latent_dim,
                  real_batch=args.real_batch, inner_lr=args.inner_lr, outer_lr=args.outer_lr, init="real",
                  init_logit=args.init_logit, hard_inputs=False)  # the recorded (soft) reading
    references = [random_row(model, d, mu, xi, np.random.default_rng(0), seeds=seeds, syn_kw=TRAIN_SYN_COARSE),
                  init_row(model, d, mu, xi, seeds=seeds, syn_kw=TRAIN_SYN_COARSE, latent_dim=args.latent_dim,
                           tau=BASE["tau"], init_logit=args.init_logit, hard_inputs=False)]
    print(format_table(references, ["method", "data", "HR@10", "nDCG@10", "steps", "time_s"]), flush=True)
    runs = []
    for cfg in _configs(args, ablations):
        print(f"Farzi {args.shape} {cfg}", flush=True)
        row, hist, _ = run_farzi(model, d, select_omega(omega5, cfg["trajectories"]), mu, xi, tau=cfg["tau"],
                                 inner_steps=cfg["inner_steps"], **common)
        runs.append({**cfg, **row, "history": hist})
        print(format_table([runs[-1]], ["trajectories", "tau", "inner_steps", "HR@10", "nDCG@10", "steps",
                                        "distill_time_s"]), flush=True)
    tables = _tables(args, ablations, runs)
    print("\nreferences (same budget):")
    print(_show(references, ["method", "data", "HR@10", "nDCG@10"]))
    wall = time.perf_counter() - t_start
    path = write_result(args.name, _config(args, d, mu, xi, ablations, omega_time),
                        {"references": references, "runs": runs, "tables": tables}, wall, out_dir=output_dir(args))
    _plot(tables, references, runs, ablations, path.with_suffix(".png"))
    print(f"wrote {path} ({wall:.0f} s)")


def _plot(tables, references, runs, ablations, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables) + 1, figsize=(4 * (len(tables) + 1), 3.6))
    axes = np.atleast_1d(axes)
    for ax, (ab, table) in zip(axes, tables.items(), strict=False):
        factor = ablations[ab][0]
        xs = [str(t[factor]) for t in table]
        ax.errorbar(xs, [t["HR@10"] for t in table], yerr=[t["HR@10_std"] for t in table], marker="o",
                    capsize=3, label="Farzi (test)")
        for r, ls in zip(references, (":", "--"), strict=False):
            ax.axhline(r["HR@10"], ls=ls, color="gray", label=r["method"])
        ax.set_xlabel(factor)
        ax.set_ylabel("test HR@10")
        ax.legend(fontsize=7)
    for r in runs:
        h = r["history"]
        axes[-1].plot(h["eval_steps"], h["eval_values"], marker=".",
                      label=f"Ω{r['trajectories']} τ{r['tau']} T{r['inner_steps']}")
    axes[-1].set_xlabel("outer step")
    axes[-1].set_ylabel("validation HR@10")
    axes[-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
