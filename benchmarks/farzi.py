"""Farzi on sequential recommendation: SASRec on Farzi data vs trivial, classical and full-data baselines.

    python -m benchmarks.farzi            # MovieLens latest-small, Farzi [10×150] and [50×150]
    python -m benchmarks.farzi --quick    # [10×150] only, fewer outer steps, 2 seeds

Rows (same split, same seeds; mean ± std over ``--seeds``): **popularity** (rank items by
training frequency), **Markov** (first-order item-to-item transition counts of the training
sequences, popularity back-off), **full data** (SASRec tuned over dropout ∈ ``--full-dropouts``
× lr ∈ ``--full-lrs`` on validation HR@10, validated every 50 steps), **random [μ×ξ]**,
**popularity D_syn [μ×ξ]** (every token = the item popularity), **Farzi init <init>** (each
``--init-rows`` start, 0 outer steps) and **Farzi**. The history excluded from the ranking is
the user's *whole* history (not only the last ξ items). ``timing`` holds the seconds per
outer step (value and meta-gradient) at [10×150] for T = 30, d = 8 and the earlier T = 10,
d = 64.

The dissertation's Table 4.5 setting (there on ML-100k): item sequences per user in time
order, temporal leave-last-out (last item → test, last-but-one → validation), SASRec
scores **all** items at the last position and the user's history is removed from the
ranking; HR@10 / nDCG@10 (×100) of the test item.

* **full data**: SASRec trained on every training sequence;
* **random [μ×ξ]**: μ random real training sequences, their last ξ items;
* **Farzi [μ×ξ]**: :func:`distill.farzi.distill` — D_syn = softmax(Z·M/τ) (μ×ξ×items),
  meta-learned through T inner Adam steps (reverse-mode Adam, Algorithm 6) from
  checkpoints Ω of SASRec pretrained on the real data (weighted towards early checkpoints,
  plus fresh random inits); the outer loop keeps the D_syn with the best validation HR@10
  of a SASRec trained on it (the start included). D_syn starts from ``--init`` (default
  distill's ``markov``: the real data's first-order Markov chain as soft tokens along a
  walk over the items, KL-fitted at rank d = 32; :func:`distill.farzi.initial_factors`).
  The other starts are control rows: ``popularity`` (every token = the item popularity),
  ``mix`` (the rank-d fit of α·one-hot real windows + (1 − α)·popularity), ``real``.
  ``--init popularity --latent-dim 8 --outer-lr 1e-2`` reproduces the earlier recorded runs.

Every SASRec (all methods) is trained with Adam by :func:`distill.farzi.train_student` and early
stopping on validation HR@10; test metrics of the best validated parameters, mean ± std
over ``--seeds`` freshly initialised models. Items with fewer than ``--min-item``
interactions are dropped (default 20: 1,303 items; the soft vocabulary of D_syn and the
full-softmax SASRec loss cost O(items) per position). Writes ``<--out>/<--name>.json``,
``.png`` and the D_syn export ``<name>_D_syn_<μ>x<ξ>.npz/.json``.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import format_table, mean_std, output_dir, parser, seed_row, timed, write_result
from distill import data as D
from distill import export, farzi, inner, metrics
from distill.parametrize import latent_factorization
from models.sasrec import sasrec

COLUMNS = ["method", "data", "HR@10", "nDCG@10", "HR@10_%full", "steps", "time_s"]
OMEGA_STEPS, OMEGA_EVERY = 400, 100  # Ω: checkpoints at steps 0, 100, …, 400 of every pretraining run
CHECKPOINTS_PER_RUN = OMEGA_STEPS // OMEGA_EVERY + 1
# SASRec training (Adam, early stopping on validation HR@10) on the full data / on μ×ξ data.
# Full data: validated every 50 steps, stopped after 8 validations without improvement.
TRAIN_FULL = dict(lr=1e-3, batch=32, max_steps=3000, eval_every=50, patience=8)
# μ×ξ data: students peak after 30-110 steps, so they are validated every 10 steps. With the earlier
# grid (every 50, patience 4; TRAIN_SYN_COARSE, used by the runs recorded before
# farzi_ml-latest-small_argmax_draws4_fine.json) the Markov start tested 11.28 ± 0.90 instead of
# 12.20 ± 1.18 (6 seeds), and Farzi data that peak later gained +0.75 HR@10 that the finer grid
# reduces to +0.10 (docs/results.md).
TRAIN_SYN = dict(lr=1e-3, batch=64, max_steps=1000, eval_every=10, patience=20)
TRAIN_SYN_COARSE = {**TRAIN_SYN, "eval_every": 50, "patience": 4}


def prepare(max_len: int, min_item: int):
    """Sequences, leave-last-out targets and the dense history/target matrices."""
    inter = D.filter_min_interactions(D.to_implicit(D.load_movielens_small()), min_user=5, min_item=min_item)
    seqs = D.user_sequences(inter, max_len=max_len + 1, min_len=3)
    train, val_t, test_t = D.leave_last_out(seqs)
    n, n_items, pad = seqs.tokens.shape[0], seqs.n_items, seqs.pad_id
    # Whole histories (same rows: user_sequences orders rows by user id for any max_len);
    # a user with more than max_len + 1 events keeps them all in the excluded history.
    whole = D.user_sequences(inter, max_len=int(np.bincount(inter.users).max()), min_len=3).tokens

    def history(drop_last):
        h = np.zeros((n, n_items + 1), np.float32)
        np.put_along_axis(h, whole[:, : whole.shape[1] - drop_last], 1.0, axis=1)
        return h[:, :n_items]

    def onehot(t):
        m = np.zeros((n, n_items), np.float32)
        m[np.arange(n), t] = 1
        return m

    return {
        "train": jnp.asarray(train.tokens), "pad": pad, "n_items": n_items, "n_users": n,
        # validation: the training sequence predicts the last-but-one item
        "val_in": jnp.asarray(train.tokens[:, 1:]), "val_hist": history(2), "val_t": onehot(val_t),
        # test: the sequence without its last item predicts the last item
        "test_in": jnp.asarray(seqs.tokens[:, 1:-1]), "test_hist": history(1),
        "test_t": onehot(test_t), "n_interactions": int(inter.users.shape[0]),
        "whole": whole, "n_longer": int((whole[:, : whole.shape[1] - max_len - 1] != pad).any(1).sum()),
    }


def make_eval(model, d, split, batch=256):
    inputs, hist, target = d[f"{split}_in"], d[f"{split}_hist"], d[f"{split}_t"]
    last = jax.jit(lambda p, x: model.apply(p, x)[:, -1, :])

    def scores(p):
        return jnp.concatenate([last(p, inputs[i : i + batch]) for i in range(0, inputs.shape[0], batch)])

    def evaluate(p):
        return metrics.evaluate(scores(p), target, hist, ks=(10,), metrics=("hr", "ndcg"))

    return evaluate


def fit(model, data, d, key, *, lr, batch, max_steps, eval_every, patience, hard_inputs=False):
    """SASRec on int ``(n, L+1)`` sequences or soft ``(μ, ξ, V)`` Farzi data, early-stopped on val HR@10.

    :func:`distill.farzi.train_student`: training mode (dropout, when the model has it) with
    a fresh dropout key every step, ``batch`` distinct rows per step; soft data read by
    :func:`distill.farzi.student_pairs` (``hard_inputs``: argmax inputs).
    """
    val = make_eval(model, d, "val")
    out = farzi.train_student(key, model, data, steps=max_steps, learning_rate=lr, batch_size=batch,
                              pad_id=d["pad"], init_inputs=d["train"][:1, :-1],
                              evaluate=lambda p: val(p)["HR@10"], eval_every=eval_every, patience=patience,
                              hard_inputs=hard_inputs)
    hist = out.history
    return out.params, hist.best_step, max(hist.eval_values) if hist.eval_values else float("nan")


def trials(model, data, d, seeds, **kw):
    """Test metrics of :func:`fit` over ``seeds``: ``({metric: (mean, std)}, best steps, per-seed metrics)``.

    Seed ``s`` initialises the SASRec with ``key(1000 + s)`` in every row, so rows are paired by seed.
    """
    test = make_eval(model, d, "test")
    res, steps = [], []
    for s in seeds:
        p, best, _ = fit(model, data, d, jax.random.key(1000 + s), **kw)
        res.append({k: float(v) for k, v in test(p).items()})
        steps.append(best)
    return mean_std(res, ("HR@10", "nDCG@10")), steps, res


def classical_rows(d, seeds):
    """Popularity and first-order Markov chain (deterministic: the same value for every seed).

    Markov: ``score(j | last item i) = C[i, j] + 10⁻³ · pop_j`` with C the transition counts
    of consecutive training items (popularity breaks ties and covers unseen i).
    """
    tr = np.asarray(d["train"])
    pad, v = d["pad"], d["n_items"]
    pop = np.bincount(tr[tr != pad], minlength=v + 1)[:v].astype(np.float64)
    prev, nxt = tr[:, :-1].ravel(), tr[:, 1:].ravel()
    ok = (prev != pad) & (nxt != pad)
    counts = np.zeros((v, v))
    np.add.at(counts, (prev[ok], nxt[ok]), 1.0)
    rows = []
    for name, last_of in (("popularity", None), ("Markov (1st order)", True)):
        res = {}
        for split in ("val", "test"):
            if last_of is None:
                scores = np.broadcast_to(pop, (d["n_users"], v))
            else:
                scores = counts[np.asarray(d[f"{split}_in"])[:, -1]] + 1e-3 * pop / pop.max()
            res[split] = metrics.evaluate(jnp.asarray(scores, jnp.float32), d[f"{split}_t"], d[f"{split}_hist"],
                                          ks=(10,), metrics=("hr", "ndcg"))
        r = mean_std([res["test"]] * len(seeds), ("HR@10", "nDCG@10"))
        rows.append(seed_row(name, "train seqs", r, [0] * len(seeds), 0.0, val_HR10=res["val"]["HR@10"]))
    return rows


def tuned_full_row(make_model, d, seeds, *, dropouts, lrs, train_kw):
    """SASRec on all training sequences, (dropout, lr) chosen on validation HR@10 (seed 0)."""
    t = time.perf_counter()
    grid = {}
    for dr in dropouts:
        for lr in lrs:
            _, best, val_hr = fit(make_model(dr), d["train"], d, jax.random.key(1000 + seeds[0]), **{**train_kw, "lr": lr})
            grid[f"dropout={dr},lr={lr}"] = {"val_HR@10": val_hr, "best_step": best}
            print(f"full data {dr=} {lr=}: val HR@10 {val_hr:.2f} (best step {best})", flush=True)
    key = max(grid, key=lambda k: grid[k]["val_HR@10"])
    dr, lr = (float(x.split("=")[1]) for x in key.split(","))
    res, st, per_seed = trials(make_model(dr), d["train"], d, seeds, **{**train_kw, "lr": lr})
    return seed_row("full data (tuned)", f"{d['n_users']} seqs", res, st, time.perf_counter() - t,
                    chosen={"dropout": dr, "lr": lr}, grid=grid, per_seed=per_seed)


def omega_settings(model, n_runs=2):
    """Ω's pretraining schedule: SASRec checkpoints at steps 0, 100, …, 400, batches of 32."""
    return farzi.Settings(model=model, omega_runs=n_runs, omega_steps=OMEGA_STEPS, omega_every=OMEGA_EVERY,
                          omega_batch_size=32)


def load_or_pretrain_omega(model, d, cache, min_item, max_len, n_runs=2):
    """Ω — SASRec checkpoints at steps 0, 100, …, 400 of ``n_runs`` runs on the real sequences.

    :func:`distill.farzi.pretrain` with its trajectory store at
    ``cache/omega_min_item{min_item}_len{max_len}``: runs already there are read back, so a
    larger ``n_runs`` trains only the new runs. Run-major order: run r's checkpoint at step s
    is entry ``CHECKPOINTS_PER_RUN · r + s / OMEGA_EVERY``.
    """
    omega_dir = None if cache is None else os.path.join(cache, f"omega_min_item{min_item}_len{max_len}")
    data = farzi.pretrain(jax.random.key(7), farzi.Data(d["train"], pad_id=d["pad"]), omega_settings(model, n_runs),
                          checkpoint_dir=omega_dir)
    return data.omega


def run_farzi(model, d, omega, mu, xi, *, seeds, syn_kw, outer_steps, latent_dim, tau, real_batch,
              inner_steps, inner_lr, outer_lr, init, init_logit, eval_fit_steps=300, init_mix=0.5, teacher_mix=0.1,
              theta0_draws=1, omega_weights=None, random_init_prob=0.0, inner_model=None, n_evals=5,
              hard_inputs=True, teacher_walk="greedy"):
    """Distil [μ×ξ] Farzi data and test SASRecs trained on it.

    The outer loop keeps the D_syn with the best validation HR@10 of a SASRec trained on
    it for ``eval_fit_steps`` steps (``n_evals`` validations). ``inner_model`` (default
    ``model``) is the SASRec of the inner loop; one with dropout > 0 trains with replayable
    dropout masks (``inner_dropout``). D_syn is read with ``hard_inputs`` everywhere (inner
    loop, validation, test). Returns ``(row, history, result)``.
    """
    t = time.perf_counter()
    val = make_eval(model, d, "val")
    param = latent_factorization(mu, xi, latent_dim, d["n_items"], tau=tau)  # as farzi.distill builds it
    syn_kw = {**syn_kw, "hard_inputs": hard_inputs}

    def evaluate(syn):
        p, _, _ = fit(model, param.materialize(syn, jax.random.key(0)), d, jax.random.key(99),
                      **{**syn_kw, "max_steps": eval_fit_steps})
        return val(p)["HR@10"]

    inner_model = model if inner_model is None else inner_model
    settings = farzi.Settings(
        model=inner_model, n_seqs=mu, seq_len=xi, latent_dim=latent_dim, tau=tau, steps=outer_steps,
        batch_size=real_batch, inner_steps=inner_steps, inner_optimizer=inner.Adam(inner_lr), learning_rate=outer_lr,
        init=init, init_logit=init_logit, init_mix=init_mix, teacher_mix=teacher_mix, theta0_draws=theta0_draws,
        omega_weights=None if omega_weights is None else tuple(float(w) for w in omega_weights),
        random_init_prob=random_init_prob, inner_dropout=inner_model is not model, hard_inputs=hard_inputs,
        teacher_walk=teacher_walk,
        eval_every=max(1, outer_steps // n_evals))
    res = farzi.distill(jax.random.key(0), farzi.Data(d["train"], omega, d["pad"]), settings, evaluate=evaluate,
                        progress=True)
    distill_time = time.perf_counter() - t
    hist = res.history
    history = {"losses": hist.losses, "eval_steps": hist.eval_steps, "eval_values": hist.eval_values,
               "best_step": hist.best_step}
    t = time.perf_counter()
    r, st, per_seed = trials(model, res.data, d, seeds, **syn_kw)
    row = seed_row("Farzi", f"[{mu}×{xi}]", r, st, time.perf_counter() - t, distill_time_s=distill_time, init=init,
                   per_seed=per_seed)
    return row, history, res


def init_method(init: str) -> str:
    """The ``method`` of the control row of Farzi's start ``init`` (:func:`init_row`)."""
    return f"Farzi init {init} (0 outer steps)"


def init_row(model, d, mu, xi, *, seeds, syn_kw, latent_dim, tau, init_logit, init="real", init_mix=0.5,
             teacher_mix=0.1, hard_inputs=True, teacher_walk="greedy"):
    """Control: SASRecs trained on the initial D_syn of ``init`` (read with ``hard_inputs``), no outer step."""
    t = time.perf_counter()
    param = latent_factorization(mu, xi, latent_dim, d["n_items"], tau=tau)
    syn0 = farzi.initial_factors(jax.random.key(0), np.asarray(d["train"]), n_seqs=mu, seq_len=xi,
                                 latent_dim=latent_dim, vocab_size=d["n_items"], tau=tau, init=init,
                                 init_logit=init_logit, pad_id=d["pad"], init_mix=init_mix,
                                 teacher_mix=teacher_mix, teacher_walk=teacher_walk)  # as run_farzi starts
    r, st, per_seed = trials(model, param.materialize(syn0, jax.random.key(0)), d, seeds, **syn_kw,
                             hard_inputs=hard_inputs)
    return seed_row(init_method(init), f"[{mu}×{xi}]", r, st, time.perf_counter() - t,
                    per_seed=per_seed)


def popularity_row(model, d, mu, xi, *, seeds, syn_kw):
    """Trivial data: μ×ξ tokens that are all the item-popularity distribution."""
    t = time.perf_counter()
    data = farzi.popularity_data(np.asarray(d["train"]), n_seqs=mu, seq_len=xi, vocab_size=d["n_items"],
                                 pad_id=d["pad"])
    r, st, per_seed = trials(model, data, d, seeds, **syn_kw)
    return seed_row("popularity D_syn", f"[{mu}×{xi}]", r, st, time.perf_counter() - t, per_seed=per_seed)


def outer_step_time(model, d, omega, *, latent_dim, inner_steps, inner_lr=1e-2, mu=10, xi=150, real_batch=64,
                    repeats=3):
    """Seconds per outer step (value + meta-gradient, compiled, best of ``repeats``) at [μ×ξ]."""
    param = latent_factorization(mu, xi, latent_dim, d["n_items"])
    settings = farzi.Settings(model=model, n_seqs=mu, seq_len=xi, latent_dim=latent_dim, inner_steps=inner_steps,
                              inner_optimizer=inner.Adam(inner_lr), random_init_prob=0.0)
    step = jax.jit(jax.value_and_grad(farzi.objective), static_argnums=3)
    syn = param.init(jax.random.key(0))
    batch = farzi.Batch(d["train"][:real_batch], omega, d["pad"])
    jax.block_until_ready(step(syn, batch, jax.random.key(1), settings))
    _, best = timed(lambda: step(syn, batch, jax.random.key(2), settings), repeats)
    return best


def random_row(model, d, mu, xi, rng, *, seeds, syn_kw):
    """μ random real training sequences, their last ξ items."""
    t = time.perf_counter()
    pick = rng.choice(d["n_users"], mu, replace=False)
    r, st, per_seed = trials(model, d["train"][pick][:, -xi:], d, seeds, **syn_kw)
    return seed_row("random", f"[{mu}×{xi}]", r, st, time.perf_counter() - t, per_seed=per_seed)


def _args(argv):
    ap = parser("farzi", __doc__)
    ap.add_argument("--quick", action="store_true", help="[10×150] only, 30 outer steps, first 2 seeds")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of every SASRec row")
    ap.add_argument("--shapes", type=str, nargs="+", default=None, help="μxξ, e.g. 10x150 50x150")
    ap.add_argument("--min-item", type=int, default=20, help="drop items with fewer interactions")
    ap.add_argument("--outer-steps", type=int, default=None, help="Farzi outer steps (default 100, 30 with --quick)")
    ap.add_argument("--inner-steps", type=int, default=30, help="T, inner Adam steps (dissertation: 100-300)")
    ap.add_argument("--inner-lr", type=float, default=1e-2, help="inner Adam learning rate")
    ap.add_argument("--inner-dropout", type=float, default=0.0, help="dropout of the inner-loop SASRec")
    ap.add_argument("--outer-lr", type=float, default=farzi.Settings().learning_rate,
                    help="outer Adam learning rate on (Z, M) (default: distill's)")
    ap.add_argument("--latent-dim", type=int, default=farzi.Settings().latent_dim,
                    help="d of D_syn = softmax(Z·M/τ) (default: distill's)")
    ap.add_argument("--init", choices=farzi.INITS, default=farzi.Settings().init,
                    help="D_syn start of Farzi (default: distill's)")
    ap.add_argument("--teacher-mix", type=float, default=farzi.Settings().teacher_mix,
                    help="α of init 'markov': α·onehot(walk item) + (1-α)·P(·|previous item)")
    ap.add_argument("--teacher-walk", choices=farzi.WALKS, default=farzi.Settings().teacher_walk,
                    help="walk of init 'markov': greedy over the items or sampled from the chain (default: distill's)")
    ap.add_argument("--inputs", choices=["argmax", "soft"], default="argmax" if farzi.Settings().hard_inputs else "soft",
                    help="how students read Farzi data's inputs (farzi.student_pairs; default: distill's)")
    ap.add_argument("--init-mix", type=float, default=0.5, help="α of init 'mix': α·onehot(real) + (1-α)·pop")
    ap.add_argument("--init-rows", nargs="*", default=["popularity", "markov"], choices=farzi.INITS,
                    help="starts evaluated with 0 outer steps")
    ap.add_argument("--init-logit", type=float, default=8.0, help="real-item logit of init 'real'")
    ap.add_argument("--omega-half-life", type=float, default=100.0,
                    help="Ω checkpoint weights halve every this many pretraining steps (0: uniform)")
    ap.add_argument("--random-init-prob", type=float, default=0.25, help="share of inner loops from a fresh init")
    ap.add_argument("--theta0-draws", type=int, default=farzi.Settings().theta0_draws,
                    help="θ_0 draws averaged per outer step (default: distill's)")
    ap.add_argument("--omega-steps", type=int, nargs="+", default=None,
                    help="use only the Ω checkpoints of these pretraining steps (default: all of 0..400)")
    ap.add_argument("--eval-fit-steps", type=int, default=300, help="SASRec steps of each outer-loop validation")
    ap.add_argument("--n-evals", type=int, default=5, help="outer-loop validations (best D_syn is kept)")
    ap.add_argument("--full-dropouts", type=float, nargs="+", default=[0.0, 0.2], help="full-data dropout grid")
    ap.add_argument("--full-lrs", type=float, nargs="+", default=[1e-3, 2e-3], help="full-data lr grid")
    ap.add_argument("--full-steps", type=int, default=TRAIN_FULL["max_steps"], help="full-data max steps")
    ap.add_argument("--syn-steps", type=int, default=TRAIN_SYN["max_steps"], help="max steps of SASRec on μ×ξ data")
    ap.add_argument("--syn-eval-every", type=int, default=TRAIN_SYN["eval_every"],
                    help="validate SASRecs on μ×ξ data every this many steps (also inside the outer loop)")
    ap.add_argument("--syn-patience", type=int, default=TRAIN_SYN["patience"],
                    help="stop SASRecs on μ×ξ data after this many validations without improvement")
    ap.add_argument("--skip-full", action="store_true", help="no full-data row (e.g. when only tuning Farzi)")
    ap.add_argument("--skip-timing", action="store_true", help="no outer-step timing")
    ap.add_argument("--baselines-only", action="store_true",
                    help="only the popularity, Markov and (unless --skip-full) tuned full-data rows")
    ap.add_argument("--tau", type=float, default=1.0, help="temperature τ of D_syn")
    ap.add_argument("--real-batch", type=int, default=64, help="real sequences per outer step")
    ap.add_argument("--cache", default=None, help="directory for Ω (orbax): reused when present")
    ap.add_argument("--name", default=None, help="result file name (default farzi_ml-latest-small[_quick])")
    return ap.parse_args(argv)


def main(argv=None):
    args = _args(argv)
    t_start = time.perf_counter()
    shapes = [tuple(int(v) for v in s.split("x")) for s in (args.shapes or (["10x150"] if args.quick else ["10x150", "50x150"]))]
    outer_steps = args.outer_steps or (30 if args.quick else 100)
    seeds = args.seeds[:2] if args.quick else args.seeds
    max_len = max(xi for _, xi in shapes)
    name = args.name or "farzi_ml-latest-small" + ("_quick" if args.quick else "")
    out = output_dir(args)
    d = prepare(max_len, args.min_item)
    make = lambda dr: sasrec(d["n_items"], max_len=max_len, d_model=64, n_heads=1, n_layers=2, dropout=dr)
    model = make(0.0)
    print(f"ML latest-small: {d['n_users']} users, {d['n_items']} items, {d['n_interactions']} interactions, "
          f"sequences of ≤ {max_len + 1} ({d['n_longer']} users have more; whole histories excluded)", flush=True)
    syn_kw = {**TRAIN_SYN, "max_steps": args.syn_steps, "eval_every": args.syn_eval_every,
              "patience": args.syn_patience}
    rows = classical_rows(d, seeds)
    if not args.skip_full:
        rows.append(tuned_full_row(make, d, seeds, dropouts=args.full_dropouts, lrs=args.full_lrs,
                                   train_kw={**TRAIN_FULL, "max_steps": args.full_steps}))
    print(format_table(rows, COLUMNS[:4] + ["steps"]), flush=True)
    if args.baselines_only:
        _finish(args, rows, {}, {}, d, [], seeds, syn_kw, 0, 0.0, np.zeros(0, int), name, out, t_start)
        return
    t = time.perf_counter()
    omega = load_or_pretrain_omega(model, d, args.cache, args.min_item, max_len)
    steps_of = np.tile(np.arange(0, OMEGA_STEPS + 1, OMEGA_EVERY), 2)
    if args.omega_steps is not None:
        keep = np.flatnonzero(np.isin(steps_of, args.omega_steps))  # Ω is run-major (load_or_pretrain_omega)
        omega, steps_of = jax.tree_util.tree_map(lambda a: a[jnp.asarray(keep)], omega), steps_of[keep]
    weights = farzi.early_weights(steps_of, args.omega_half_life) if args.omega_half_life > 0 else None
    omega_time = time.perf_counter() - t
    timing = {}
    if not args.skip_timing:
        timing = {"s_per_outer_step_T30_d8": outer_step_time(model, d, omega, latent_dim=8, inner_steps=30),
                  "s_per_outer_step_T10_d64": outer_step_time(model, d, omega, latent_dim=64, inner_steps=10)}
        print(f"outer step [10×150]: {timing}", flush=True)
    rng = np.random.default_rng(0)
    histories = {}
    hard = args.inputs == "argmax"
    for mu, xi in shapes:
        label = f"[{mu}×{xi}]"
        rows.append(random_row(model, d, mu, xi, rng, seeds=seeds, syn_kw=syn_kw))
        rows.append(popularity_row(model, d, mu, xi, seeds=seeds, syn_kw=syn_kw))
        for init in args.init_rows:
            rows.append(init_row(model, d, mu, xi, seeds=seeds, syn_kw=syn_kw, latent_dim=args.latent_dim,
                                 tau=args.tau, init_logit=args.init_logit, init=init, init_mix=args.init_mix,
                                 teacher_mix=args.teacher_mix, hard_inputs=hard, teacher_walk=args.teacher_walk))
        print(format_table(rows, COLUMNS[:4] + ["steps"]), flush=True)
        row, histories[label], res = run_farzi(
            model, d, omega, mu, xi, seeds=seeds, syn_kw=syn_kw, outer_steps=outer_steps,
            latent_dim=args.latent_dim, tau=args.tau, real_batch=args.real_batch, inner_steps=args.inner_steps,
            inner_lr=args.inner_lr, outer_lr=args.outer_lr, init=args.init, init_logit=args.init_logit,
            init_mix=args.init_mix, teacher_mix=args.teacher_mix, theta0_draws=args.theta0_draws,
            omega_weights=weights, random_init_prob=args.random_init_prob,
            inner_model=make(args.inner_dropout) if args.inner_dropout > 0 else None,
            eval_fit_steps=args.eval_fit_steps, n_evals=args.n_evals, hard_inputs=hard,
            teacher_walk=args.teacher_walk)
        rows.append(row)
        # D_syn is μ·ξ·V floats (7.8 MB for [10×150]): written next to the result JSON
        export.save(out / f"{name}_D_syn_{mu}x{xi}",
                    {"data": np.asarray(res.data), "z": np.asarray(res.params.z), "m": np.asarray(res.params.m)},
                    {"method": "farzi", "equation": "D_syn = softmax(Z @ M / tau) (dissertation Eq. 4.1/4.2)",
                     "n_seqs": mu, "seq_len": xi, "vocab_size": d["n_items"], "latent_dim": args.latent_dim,
                     "dataset": "ml-latest-small", "min_item": args.min_item, "model": "sasrec d64 L2 H1",
                     "inputs": "argmax tokens of data[:, :-1]" if hard else "soft tokens"})
        print(format_table(rows, COLUMNS[:4] + ["steps"]), flush=True)
    _finish(args, rows, histories, timing, d, shapes, seeds, syn_kw, outer_steps, omega_time, steps_of, name, out,
            t_start)


def paired_gains(rows: list[dict]) -> None:
    """Adds ``gain_over_init`` to each Farzi row: its per-seed metrics minus its start's, same student seeds.

    Both rows train the SASRec of seed ``s`` from the same initial weights, so the per-seed
    difference isolates what the outer loop changed; its mean ± std (population, over seeds)
    and the number of seeds where Farzi is higher are recorded.
    """
    for r in rows:
        if r["method"] != "Farzi":
            continue
        base = next((b for b in rows if b["method"] == init_method(r["init"]) and b["data"] == r["data"]), None)
        if base is None:
            continue
        gain = {}
        for m in ("HR@10", "nDCG@10"):
            diff = np.array([a[m] for a in r["per_seed"]]) - np.array([b[m] for b in base["per_seed"]])
            gain[m] = {"mean": float(diff.mean()), "std": float(diff.std()), "seeds_higher": int((diff > 0).sum()),
                       "per_seed": diff.tolist()}
        r["gain_over_init"] = gain
        g = gain["HR@10"]
        print(f"Farzi {r['data']} − init {r['init']} (paired by seed): HR@10 {g['mean']:+.2f} ± {g['std']:.2f}, "
              f"higher on {g['seeds_higher']}/{len(g['per_seed'])} seeds", flush=True)


def _finish(args, rows, histories, timing, d, shapes, seeds, syn_kw, outer_steps, omega_time, steps_of, name, out,
            t_start):
    paired_gains(rows)
    full = next((r for r in rows if r["method"].startswith("full data")), None)
    for r in rows:
        if full is not None:
            r["HR@10_%full"] = 100.0 * r["HR@10"] / full["HR@10"]
        r["HR@10"], r["nDCG@10"] = round(r["HR@10"], 2), round(r["nDCG@10"], 2)
    table = [{**r, "HR@10": f"{r['HR@10']:.2f}±{r['std']['HR@10']:.2f}",
              "nDCG@10": f"{r['nDCG@10']:.2f}±{r['std']['nDCG@10']:.2f}"} for r in rows]
    print(format_table(table, COLUMNS))
    wall = time.perf_counter() - t_start
    config = {
        "dataset": "ml-latest-small", "min_user": 5, "min_item": args.min_item, "n_users": d["n_users"],
        "n_items": d["n_items"], "users_longer_than_window": d["n_longer"],
        "protocol": "temporal leave-last-out; all items ranked, the whole history excluded",
        "model": "SASRec d64, 2 blocks, 1 head", "shapes": shapes, "seeds": list(seeds),
        "train_full": {**TRAIN_FULL, "max_steps": args.full_steps, "dropouts": args.full_dropouts,
                       "lrs": args.full_lrs}, "train_synthetic": syn_kw,
        "omega": {"n_runs": 2, "steps": OMEGA_STEPS, "save_every": OMEGA_EVERY, "batch": 32, "time_s": omega_time,
                  "checkpoint_steps": steps_of.tolist(), "half_life": args.omega_half_life,
                  "random_init_prob": args.random_init_prob},
        "farzi": {"outer_steps": outer_steps, "inner_steps": args.inner_steps, "inner_lr": args.inner_lr,
                  "inner_dropout": args.inner_dropout, "outer_lr": args.outer_lr, "latent_dim": args.latent_dim,
                  "tau": args.tau, "real_batch": args.real_batch, "mode": "reverse_adam",
                  "reverse_every": inner.default_reverse_every(jnp.float32), "init": args.init,
                  "init_mix": args.init_mix, "teacher_mix": args.teacher_mix, "theta0_draws": args.theta0_draws,
                  "inputs": args.inputs, "teacher_walk": args.teacher_walk, "init_logit": args.init_logit,
                  "eval_fit_steps": args.eval_fit_steps},
    }
    path = write_result(name, config, {"rows": rows, "histories": histories, "timing": timing}, wall, out_dir=out)
    _plot(rows, histories, path.with_suffix(".png"))
    print(f"wrote {path} ({wall:.0f} s)")


def _plot(rows, histories, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    labels = [f"{r['method']} {r['data']}" if "[" in r["data"] else r["method"] for r in rows]
    axes[0].barh(labels, [r["HR@10"] for r in rows], xerr=[r["std"]["HR@10"] for r in rows])
    axes[0].set_xlabel("test HR@10 (all items ranked)")
    axes[0].set_title("SASRec on ML latest-small")
    for label, h in histories.items():
        axes[1].plot(h["eval_steps"], h["eval_values"], marker="o", label=f"Farzi {label}")
    full = [r for r in rows if r["method"].startswith("full data")]
    if full:
        axes[1].axhline(full[0]["HR@10"], color="k", ls="--", label="full data (test)")
    axes[1].set_xlabel("outer step")
    axes[1].set_ylabel("validation HR@10 of SASRec trained on D_syn")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
