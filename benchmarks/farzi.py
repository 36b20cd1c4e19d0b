"""Farzi on sequential recommendation: SASRec on Farzi data vs random sequences vs full data.

    python -m benchmarks.farzi            # MovieLens latest-small, Farzi [10×150] and [50×150]
    python -m benchmarks.farzi --quick    # [10×150] only, fewer outer steps

The dissertation's Table 4.5 setting (there on ML-100k): item sequences per user in time
order, temporal leave-last-out (last item → test, last-but-one → validation), SASRec
scores **all** items at the last position and the user's history is removed from the
ranking; HR@10 / nDCG@10 (×100) of the test item.

* **full data**: SASRec trained on every training sequence;
* **random [μ×ξ]**: μ random real training sequences, their last ξ items;
* **Farzi [μ×ξ]**: :func:`distill.farzi.distill` — D_syn = softmax(Z·M/τ) (μ×ξ×items),
  meta-learned through T inner Adam steps (reverse-mode Adam, Algorithm 6) from
  checkpoints Ω of SASRec pretrained on the real data; the outer loop keeps the D_syn
  with the best validation HR@10 of a SASRec trained on it. D_syn starts from μ real
  windows (:func:`distill.farzi.init_from_tokens`, ``--init real``, default) — the
  Gaussian init makes every token near-uniform over 1,303 items — and the row
  "Farzi init (0 outer steps)" trains on that starting point, to separate what the outer
  optimisation adds from what the soft real windows give.

Every SASRec (all methods) is trained with Adam by :func:`distill.loop.run` and early
stopping on validation HR@10; test metrics of the best validated parameters, mean ± std
over ``--seeds`` freshly initialised models. Items with fewer than ``--min-item``
interactions are dropped (default 20: 1,303 items; the soft vocabulary of D_syn and the
full-softmax SASRec loss cost O(items) per position, which sets the CPU budget). Writes ``benchmarks/results/farzi_ml-latest-small.json``
and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks._common import RESULTS, format_table, mean_std, seed_row, write_result
from distill import data as D
from distill import farzi, inner, loop, metrics
from distill.parametrize import latent_factorization
from models.sasrec import sasrec

COLUMNS = ["method", "data", "HR@10", "nDCG@10", "HR@10_%full", "steps", "time_s"]
OMEGA_STEPS, OMEGA_EVERY = 400, 100  # Ω: checkpoints at steps 0, 100, …, 400 of every pretraining run
CHECKPOINTS_PER_RUN = OMEGA_STEPS // OMEGA_EVERY + 1
# SASRec training (Adam, early stopping on validation HR@10) on the full data / on μ×ξ data.
TRAIN_FULL = dict(lr=1e-3, batch=32, max_steps=2000, eval_every=100, patience=4)
TRAIN_SYN = dict(lr=1e-3, batch=64, max_steps=1000, eval_every=50, patience=4)


def prepare(max_len: int, min_item: int):
    """Sequences, leave-last-out targets and the dense history/target matrices."""
    inter = D.filter_min_interactions(D.to_implicit(D.load_movielens_small()), min_user=5, min_item=min_item)
    seqs = D.user_sequences(inter, max_len=max_len + 1, min_len=3)
    train, val_t, test_t = D.leave_last_out(seqs)
    n, n_items, pad = seqs.tokens.shape[0], seqs.n_items, seqs.pad_id

    def history(tokens):
        h = np.zeros((n, n_items + 1), np.float32)
        np.put_along_axis(h, tokens, 1.0, axis=1)
        return h[:, :n_items]

    def onehot(t):
        m = np.zeros((n, n_items), np.float32)
        m[np.arange(n), t] = 1
        return m

    return {
        "train": jnp.asarray(train.tokens), "pad": pad, "n_items": n_items, "n_users": n,
        # validation: the training sequence predicts the last-but-one item
        "val_in": jnp.asarray(train.tokens[:, 1:]), "val_hist": history(train.tokens), "val_t": onehot(val_t),
        # test: the sequence without its last item predicts the last item
        "test_in": jnp.asarray(seqs.tokens[:, 1:-1]), "test_hist": history(seqs.tokens[:, :-1]),
        "test_t": onehot(test_t), "n_interactions": int(inter.users.shape[0]),
    }


def make_eval(model, d, split, batch=256):
    inputs, hist, target = d[f"{split}_in"], d[f"{split}_hist"], d[f"{split}_t"]
    last = jax.jit(lambda p, x: model.apply(p, x)[:, -1, :])

    def scores(p):
        return jnp.concatenate([last(p, inputs[i : i + batch]) for i in range(0, inputs.shape[0], batch)])

    def evaluate(p):
        return metrics.evaluate(scores(p), target, hist, ks=(10,), metrics=("hr", "ndcg"))

    return evaluate


def fit(model, data, d, key, *, lr, batch, max_steps, eval_every, patience):
    """SASRec on int ``(n, L+1)`` sequences or soft ``(μ, ξ, V)`` Farzi data, early-stopped on val HR@10."""
    soft = jnp.issubdtype(data.dtype, jnp.floating)
    n = data.shape[0]
    b = min(batch, n)

    def objective(p, rows, k):
        rows = rows[jax.random.choice(k, n, (b,), replace=False)]
        if soft:
            return farzi.soft_cross_entropy(model.apply(p, rows[:, :-1]), rows[:, 1:])
        return farzi.token_loss(model, p, rows, pad_id=d["pad"])

    val = make_eval(model, d, "val")
    k_init, k_run = jax.random.split(key)
    p0 = model.init(k_init, d["train"][:1, :-1])
    params, hist = loop.run(objective, p0, optax.adam(lr), data, steps=max_steps, key=k_run,
                            evaluate=lambda p: val(p)["HR@10"], eval_every=eval_every, patience=patience,
                            progress=False)
    return params, hist.best_step


def trials(model, data, d, seeds, **kw):
    test = make_eval(model, d, "test")
    res, steps = [], []
    for s in seeds:
        p, best = fit(model, data, d, jax.random.key(1000 + s), **kw)
        res.append(test(p))
        steps.append(best)
    return mean_std(res, ("HR@10", "nDCG@10")), steps


def load_or_pretrain_omega(model, d, cache, min_item, max_len, n_runs=2):
    """Ω — SASRec checkpoints at steps 0, 100, …, 400 of ``n_runs`` runs on the real sequences.

    :func:`distill.farzi.pretrain_trajectories` with its orbax cache at
    ``cache/omega_min_item{min_item}_len{max_len}``: runs already there are read back, so a
    larger ``n_runs`` trains only the new runs. Run-major order: run r's checkpoint at step s
    is entry ``CHECKPOINTS_PER_RUN · r + s / OMEGA_EVERY``.
    """
    omega_dir = None if cache is None else os.path.join(cache, f"omega_min_item{min_item}_len{max_len}")
    return farzi.pretrain_trajectories(model, d["train"], key=jax.random.key(7), n_runs=n_runs, steps=OMEGA_STEPS,
                                       save_every=OMEGA_EVERY, batch_size=32, pad_id=d["pad"], checkpoint_dir=omega_dir)


def run_farzi(model, d, omega, mu, xi, *, seeds, syn_kw, outer_steps, latent_dim, tau, real_batch,
              inner_steps, inner_lr, outer_lr, init, init_logit, eval_fit_steps=300):
    """Distil [μ×ξ] Farzi data and test SASRecs trained on it.

    The outer loop keeps the D_syn with the best validation HR@10 of a SASRec trained on
    it for ``eval_fit_steps`` steps (5 validations). Returns ``(row, history, syn, param)``.
    """
    t = time.perf_counter()
    val = make_eval(model, d, "val")
    param = latent_factorization(mu, xi, latent_dim, d["n_items"], tau=tau)  # as farzi.distill builds it

    def evaluate(syn):
        p, _ = fit(model, param.materialize(syn, jax.random.key(0)), d, jax.random.key(99),
                   **{**syn_kw, "max_steps": eval_fit_steps})
        return val(p)["HR@10"]

    syn, hist, param = farzi.distill(
        model, omega, d["train"], key=jax.random.key(0), n_seqs=mu, seq_len=xi, vocab_size=d["n_items"],
        latent_dim=latent_dim, tau=tau, steps=outer_steps, batch_size=real_batch,
        inner_steps=inner_steps, inner_optimizer=inner.Adam(inner_lr),
        outer_learning_rate=outer_lr, init=init, init_logit=init_logit, pad_id=d["pad"],
        evaluate=evaluate, eval_every=max(1, outer_steps // 5), progress=True,
    )
    distill_time = time.perf_counter() - t
    history = {"losses": hist.losses, "eval_steps": hist.eval_steps, "eval_values": hist.eval_values,
               "best_step": hist.best_step}
    t = time.perf_counter()
    r, st = trials(model, param.materialize(syn, jax.random.key(0)), d, seeds, **syn_kw)
    row = seed_row("Farzi", f"[{mu}×{xi}]", r, st, time.perf_counter() - t, distill_time_s=distill_time)
    return row, history, syn, param


def init_row(model, d, mu, xi, *, seeds, syn_kw, latent_dim, tau, init_logit):
    """Control: SASRecs trained on the initial D_syn (soft real windows), no outer step."""
    t = time.perf_counter()
    param = latent_factorization(mu, xi, latent_dim, d["n_items"], tau=tau)
    syn0 = farzi.initial_factors(jax.random.key(0), np.asarray(d["train"]), n_seqs=mu, seq_len=xi,
                                 latent_dim=latent_dim, vocab_size=d["n_items"], tau=tau, init="real",
                                 init_logit=init_logit, pad_id=d["pad"])  # as run_farzi's distill starts
    r, st = trials(model, param.materialize(syn0, jax.random.key(0)), d, seeds, **syn_kw)
    return seed_row("Farzi init (0 outer steps)", f"[{mu}×{xi}]", r, st, time.perf_counter() - t)


def random_row(model, d, mu, xi, rng, *, seeds, syn_kw):
    """μ random real training sequences, their last ξ items."""
    t = time.perf_counter()
    pick = rng.choice(d["n_users"], mu, replace=False)
    r, st = trials(model, d["train"][pick][:, -xi:], d, seeds, **syn_kw)
    return seed_row("random", f"[{mu}×{xi}]", r, st, time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--shapes", type=str, nargs="+", default=None, help="μxξ, e.g. 10x150 50x150")
    ap.add_argument("--min-item", type=int, default=20)
    ap.add_argument("--outer-steps", type=int, default=None)
    ap.add_argument("--inner-steps", type=int, default=10)
    ap.add_argument("--inner-lr", type=float, default=1e-2)
    ap.add_argument("--outer-lr", type=float, default=3e-2)
    ap.add_argument("--latent-dim", type=int, default=64)
    ap.add_argument("--init", choices=("random", "real"), default="real",
                    help="D_syn init: Gaussian latents (near-uniform tokens) or real windows (farzi.init_from_tokens)")
    ap.add_argument("--init-logit", type=float, default=8.0)
    ap.add_argument("--omega-steps", type=int, nargs="+", default=None,
                    help="use only the Ω checkpoints of these pretraining steps (default: all of 0..400)")
    ap.add_argument("--full-from", default=None,
                    help="copy the full-data row from this earlier result JSON instead of retraining it")
    ap.add_argument("--tau", type=float, default=1.0)
    ap.add_argument("--real-batch", type=int, default=64)
    ap.add_argument("--skip-full", action="store_true", help="no full-data row (e.g. when only tuning Farzi)")
    ap.add_argument("--cache", default=None, help="directory for Ω (orbax): reused when present")
    ap.add_argument("--out", default=None)
    ap.add_argument("--name", default=None, help="result file name (default farzi_ml-latest-small[_quick])")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    shapes = [tuple(int(v) for v in s.split("x")) for s in (args.shapes or (["10x150"] if args.quick else ["10x150", "50x150"]))]
    outer_steps = args.outer_steps or (30 if args.quick else 100)
    seeds = args.seeds[:2] if args.quick else args.seeds
    max_len = max(xi for _, xi in shapes)
    name = args.name or "farzi_ml-latest-small" + ("_quick" if args.quick else "")
    if any(name == f"farzi_ml-latest-small_{mu}x{xi}" for mu, xi in shapes):
        raise ValueError(f"--name: {name} is the D_syn export's file name")

    d = prepare(max_len, args.min_item)
    model = sasrec(d["n_items"], max_len=max_len, d_model=64, n_heads=1, n_layers=2)
    print(f"ML latest-small: {d['n_users']} users, {d['n_items']} items, {d['n_interactions']} interactions, "
          f"sequences of ≤ {max_len + 1}", flush=True)
    train_kw, syn_kw = TRAIN_FULL, TRAIN_SYN

    rows = []
    if args.full_from:
        # Same protocol and code path (prepare/fit/trials are unchanged); recorded in the config.
        prev = json.loads(pathlib.Path(args.full_from).read_text())
        rows.append(next(r for r in prev["results"]["rows"] if r["method"] == "full data"))
        rows[0]["copied_from"] = str(args.full_from)
        print(format_table(rows, COLUMNS[:4] + ["steps"]), flush=True)
    elif not args.skip_full:
        t = time.perf_counter()
        full, st = trials(model, d["train"], d, seeds, **train_kw)
        rows.append(seed_row("full data", f"{d['n_users']} seqs", full, st, time.perf_counter() - t))
        print(format_table(rows, COLUMNS[:4] + ["steps"]), flush=True)

    # Ω: checkpoints of SASRec trained on the real sequences (pretrained trajectories)
    t = time.perf_counter()
    omega = load_or_pretrain_omega(model, d, args.cache, args.min_item, max_len)
    if args.omega_steps is not None:
        # Ω is run-major (load_or_pretrain_omega).
        keep = [r * CHECKPOINTS_PER_RUN + s // OMEGA_EVERY for r in range(2) for s in args.omega_steps]
        omega = jax.tree_util.tree_map(lambda a: a[jnp.asarray(keep)], omega)
    omega_time = time.perf_counter() - t
    rng = np.random.default_rng(0)
    histories = {}
    for mu, xi in shapes:
        label = f"[{mu}×{xi}]"
        rows.append(random_row(model, d, mu, xi, rng, seeds=seeds, syn_kw=syn_kw))
        row, histories[label], syn, param = run_farzi(
            model, d, omega, mu, xi, seeds=seeds, syn_kw=syn_kw, outer_steps=outer_steps,
            latent_dim=args.latent_dim, tau=args.tau, real_batch=args.real_batch, inner_steps=args.inner_steps,
            inner_lr=args.inner_lr, outer_lr=args.outer_lr, init=args.init, init_logit=args.init_logit)
        if args.init == "real":
            rows.append(init_row(model, d, mu, xi, seeds=seeds, syn_kw=syn_kw, latent_dim=args.latent_dim,
                                 tau=args.tau, init_logit=args.init_logit))
        rows.append(row)
        # D_syn is μ·ξ·V floats (7.8 MB for [10×150]): written next to the result JSON, not committed
        farzi.export((pathlib.Path(args.out) if args.out else RESULTS) / f"farzi_ml-latest-small_{mu}x{xi}", syn, param,
                     {"dataset": "ml-latest-small", "min_item": args.min_item, "model": "sasrec d64 L2 H1"})
        print(format_table(rows, COLUMNS[:4] + ["steps"]), flush=True)

    for r in rows:
        if rows[0]["method"] == "full data":
            r["HR@10_%full"] = 100.0 * r["HR@10"] / rows[0]["HR@10"]
        r["HR@10"], r["nDCG@10"] = round(r["HR@10"], 2), round(r["nDCG@10"], 2)
    table = [{**r, "HR@10": f"{r['HR@10']:.2f}±{r['std']['HR@10']:.2f}",
              "nDCG@10": f"{r['nDCG@10']:.2f}±{r['std']['nDCG@10']:.2f}"} for r in rows]
    print(format_table(table, COLUMNS))
    wall = time.perf_counter() - t_start
    config = {
        "dataset": "ml-latest-small", "min_user": 5, "min_item": args.min_item, "n_users": d["n_users"],
        "n_items": d["n_items"], "protocol": "temporal leave-last-out; all items ranked, history excluded",
        "model": "SASRec d64, 2 blocks, 1 head, no dropout", "shapes": shapes, "seeds": list(seeds),
        "train_full": train_kw, "train_synthetic": syn_kw,
        "omega": {"n_runs": 2, "steps": 400, "save_every": 100, "batch": 32, "time_s": omega_time},
        "farzi": {"outer_steps": outer_steps, "inner_steps": args.inner_steps, "inner_lr": args.inner_lr,
                  "outer_lr": args.outer_lr, "latent_dim": args.latent_dim, "tau": args.tau,
                  "real_batch": args.real_batch, "mode": "reverse_adam",
                  "reverse_every": inner.default_reverse_every(jnp.float32), "init": args.init,
                  "init_logit": args.init_logit, "omega_steps": args.omega_steps or [0, 100, 200, 300, 400]},
        "full_data_row_from": args.full_from,
    }
    path = write_result(name, config, {"rows": rows, "histories": histories}, wall, args.out)
    _plot(rows, histories, path.with_suffix(".png"))
    print(f"wrote {path} ({wall:.0f} s)")


def _plot(rows, histories, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    labels = [f"{r['method']} {r['data']}" if r["method"] != "full data" else "full data" for r in rows]
    axes[0].barh(labels, [r["HR@10"] for r in rows], xerr=[r["std"]["HR@10"] for r in rows])
    axes[0].set_xlabel("test HR@10 (all items ranked)")
    axes[0].set_title("SASRec on ML latest-small")
    for label, h in histories.items():
        axes[1].plot(h["eval_steps"], h["eval_values"], marker="o", label=f"Farzi {label}")
    if rows and rows[0]["method"] == "full data":
        axes[1].axhline(rows[0]["HR@10"], color="k", ls="--", label="full data (test)")
    axes[1].set_xlabel("outer step")
    axes[1].set_ylabel("validation HR@10 of SASRec trained on D_syn")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
