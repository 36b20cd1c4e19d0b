"""Data valuation on sklearn digits: data-removal curves and valuation throughput.

``python -m benchmarks.valuation [--quick] [--seeds 0 1 2]``

``python -m benchmarks.valuation [--quick] --record`` wrote ``valuation[_quick].json/.png``.

The 1,438 training digits are split into 1,138 points to value and a 300-point
validation set that defines every utility; accuracy is measured on the 359 test digits.

Valuations (larger = more helpful):

* **LOO (KRR)** — exact leave-one-out of NTK kernel ridge regression on one-hot targets
  (:func:`selection.valuation.loo_krr`, rank-one downdate, validation MSE).
* **influence** — ``−I_loss / n`` of L2-regularised softmax regression
  (:func:`selection.influence.influence_loss`, CG over HVPs, validation cross-entropy).
* **TMC-Shapley** — truncated Monte-Carlo Shapley of the 5-NN utility on validation
  (:func:`selection.shapley.tmc_shapley`, truncation 1 %, convergence 5 %), with the
  vectorised ``'vmap'`` engine (all permutations of the run in one call); the same
  permutations are also run with the one-at-a-time ``'map'`` engine and the speed-up
  (both after a compile warm-up) is reported.
* **KNN-Shapley** — the exact closed form for the same 5-NN utility
  (:func:`selection.shapley.knn_shapley`).
* **random** — random values.

Removal curve (Ghorbani & Zou 2019, Fig. 2): remove the 10–50 % *highest* (or *lowest*)
valued points and train a fresh MLP 128-128 on the rest (Adam, 300 steps, the pruning
benchmark's :func:`benchmarks._common.train_many`); test accuracy, mean ± std over seeds.
Removing valuable points should hurt faster than random; removing the least valuable
should hurt less (or help). Throughput: points valued per second (after warm-up).

Writes ``NAME.json`` and ``NAME.png`` (``NAME`` = ``--name``, default
``valuation[_quick]``) to ``--out`` (default ``runs/``; ``--record``:
``benchmarks/results/``).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks._common import format_table, output_dir, parser, timed, train_many, write_result
from benchmarks.pruning import HIDDEN
from distill import train
from distill.data import load_digits, standardize
from distill.parallel import make_mesh
from models.kernels import fc_relu
from models.mlp import mlp
from selection import influence, shapley, valuation

K_NN = 5
TMC_BATCH = 10
L2 = 1e-3


def softmax_loss(params, batch):
    x, y = batch
    logits = x @ params["w"] + params["b"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))


def with_value_fn(opt, value_fn):
    """``opt`` (an optax ``GradientTransformationExtraArgs`` such as L-BFGS, whose line
    search needs the objective) as a plain ``GradientTransformation`` for
    :func:`distill.train.update`: the objective's value and gradient at the update's
    parameters come from ``optax.value_and_grad_from_state`` (the line search's stored
    ones when it has them)."""
    vg = optax.value_and_grad_from_state(value_fn)

    def update(grads, state, params):
        del grads  # the line search's stored gradient at params, as in optax's L-BFGS recipe
        v, g = vg(params, state=state)
        return opt.update(g, state, params, value=v, grad=g, value_fn=value_fn)

    return optax.GradientTransformation(opt.init, update)


def fit_softmax(x, y, steps=1500):
    """L2-regularised softmax regression to (near) optimality: full-batch L-BFGS
    (:func:`distill.train.scan` over ``steps`` updates)."""
    p = {"w": jnp.zeros((x.shape[1], 10)), "b": jnp.zeros(10)}
    obj = lambda q: softmax_loss(q, (x, y)) + 0.5 * L2 * sum(jnp.sum(a**2) for a in jax.tree_util.tree_leaves(q))
    opt = with_value_fn(optax.lbfgs(), obj)
    run = jax.jit(lambda st: train.scan(st, jnp.zeros(steps), jax.random.PRNGKey(0), loss=lambda q, _b, _k: obj(q), optimizer=opt))
    state, vals = run(train.init(p, opt))
    return state.params, float(vals[-1])


def value_all(x, y, xv, yv, *, tmc_perms, key):
    """Every valuation: name -> ((n,) values, seconds)."""
    n = x.shape[0]
    out, extra = {}, {}
    onehot, onehot_v = jax.nn.one_hot(y, 10), jax.nn.one_hot(yv, 10)

    def krr():
        k = fc_relu(x, depth=1).ntk
        kv = fc_relu(xv, x, depth=1).ntk
        return valuation.loo_krr(k, onehot, kv, onehot_v, lam=1.0 * jnp.trace(k) / n)

    krr()  # warm-up (compiles)
    out["LOO (KRR)"] = timed(krr)

    p, final_obj = fit_softmax(x, y)
    extra["softmax_objective"] = final_obj

    def infl():
        obj = influence.objective(softmax_loss, p, l2=L2)
        return influence.influence_loo(influence.influence_loss(obj, (x, y), (xv, yv), damping=1e-4, maxiter=200), n)

    infl()
    out["influence"] = timed(infl)

    def knn():
        return shapley.knn_shapley(x, y, xv, yv, K_NN)

    knn()
    out["KNN-Shapley"] = timed(knn)

    u = shapley.knn_utility(x, y, xv, yv, K_NN)
    per_call = max(1, tmc_perms // TMC_BATCH)  # every permutation in one vectorised call
    kw = dict(truncation=0.01, max_permutations=tmc_perms, batch=TMC_BATCH, window=10, min_permutations=20)
    runs = {}
    mesh = make_mesh() if jax.device_count() > 1 else None  # permutations sharded over devices
    for engine, bpc in (("map", 1), ("vmap", per_call)):
        # warm-up compiles the call's shapes; truncation 2 > |U(D) - U(∅)|/|U(D)| truncates at once
        shapley.tmc_shapley(key, u, n, **{**kw, "truncation": 2.0, "max_permutations": TMC_BATCH * bpc}, engine=engine,
                            batches_per_call=bpc, mesh=mesh if engine == "vmap" else None)
        t = time.perf_counter()
        res = shapley.tmc_shapley(key, u, n, **kw, engine=engine, batches_per_call=bpc, mesh=mesh if engine == "vmap" else None)
        runs[engine] = (res, time.perf_counter() - t)
    res, secs = runs["vmap"]
    out["TMC-Shapley"] = (jnp.asarray(res.values), secs)
    extra["tmc"] = {"permutations": res.n_permutations, "utility_calls": res.utility_calls, "converged": res.converged,
                    "last_error": float(res.errors[-1]) if len(res.errors) else None,
                    "seconds_map_engine": runs["map"][1], "seconds_vmap_engine": secs,
                    "speedup_vmap_over_map": runs["map"][1] / secs, "vmap_permutations_per_call": TMC_BATCH * per_call,
                    "max_abs_diff_vmap_vs_map": float(np.max(np.abs(res.values - runs["map"][0].values))),
                    "utility_calls_map": runs["map"][0].utility_calls}
    out["random"] = (jax.random.uniform(jax.random.fold_in(key, 1), (n,)), 0.0)
    return {k: (np.asarray(v), s) for k, (v, s) in out.items()}, extra


def removal_curves(values, x, y, xt, yt, fractions, seeds, *, steps, batch, lr):
    model = mlp(10, hidden=HIDDEN)
    n = x.shape[0]
    keys = jnp.stack([jax.random.PRNGKey(100 + s) for s in seeds])
    full = 100 * train_many(model, keys, np.ones((len(seeds), n)), x, y, xt, yt, steps=steps, batch=batch, lr=lr)
    curves = {}
    for name, (v, _) in values.items():
        order = np.argsort(-v, kind="stable")  # most valuable first
        for which in ("highest", "lowest"):
            ws, ks = [], []
            for f in fractions:
                r = int(round(f * n))
                drop = order[:r] if which == "highest" else order[n - r:]
                w = np.ones(n)
                w[drop] = 0.0
                for s in seeds:
                    ws.append(w)
                    ks.append(jax.random.PRNGKey(100 + s))
            acc = 100 * train_many(model, jnp.stack(ks), np.stack(ws), x, y, xt, yt, steps=steps, batch=batch, lr=lr)
            acc = acc.reshape(len(fractions), len(seeds))
            curves[f"{name} / remove {which}"] = {"mean": acc.mean(1).tolist(), "std": acc.std(1).tolist()}
    return {"full": {"mean": float(full.mean()), "std": float(full.std())}, "curves": curves}


def plot(path, fractions, res):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, which in zip(axes, ("highest", "lowest"), strict=True):
        for name, c in res["curves"].items():
            if name.endswith(which):
                ax.errorbar([100 * f for f in fractions], c["mean"], yerr=c["std"], marker="o", capsize=2, label=name.split(" / ")[0])
        ax.axhline(res["full"]["mean"], color="k", ls=":", label="no removal")
        ax.set_title(f"remove the {which}-valued points")
        ax.set_xlabel("% of training points removed")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = parser("valuation", __doc__)
    ap.add_argument("--name", default=None, help="result name: NAME.json and NAME.png (default valuation[_quick])")
    ap.add_argument("--quick", action="store_true", help="fewer permutations, fractions and seeds")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="seeds of the removal-curve models (--quick: the first)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    out_dir = output_dir(args)
    name = args.name or ("valuation_quick" if args.quick else "valuation")
    seeds = args.seeds[:1] if args.quick else args.seeds
    fractions = [0.1, 0.3, 0.5] if args.quick else [0.1, 0.2, 0.3, 0.4, 0.5]
    tmc_perms = 20 if args.quick else 100
    steps, batch, lr = 300, 64, 1e-3

    train, test = load_digits(seed=0)
    xtr, mean, std = standardize(train.x)
    xte, _, _ = standardize(test.x, mean, std)
    flat = lambda a: a.reshape(a.shape[0], -1)
    perm = np.random.default_rng(0).permutation(len(train.y))
    val_idx, tr_idx = perm[:300], perm[300:]
    x, y = jnp.asarray(flat(xtr)[tr_idx]), jnp.asarray(train.y[tr_idx])
    xv, yv = jnp.asarray(flat(xtr)[val_idx]), jnp.asarray(train.y[val_idx])
    xt, yt = jnp.asarray(flat(xte)), jnp.asarray(test.y)

    values, extra = value_all(x, y, xv, yv, tmc_perms=tmc_perms, key=jax.random.PRNGKey(0))
    n = x.shape[0]
    thr = [{"method": k, "seconds": round(s, 3), "points/s": (round(n / s, 1) if s > 0 else "-")} for k, (v, s) in values.items() if k != "random"]
    print(f"valued {n} points (validation {xv.shape[0]}), device {jax.devices()[0].platform}")
    print(format_table(thr, ["method", "seconds", "points/s"]))
    names = [k for k in values if k != "random"]
    corr = np.corrcoef(np.stack([values[k][0] for k in names]))
    spearman = np.corrcoef(np.stack([np.argsort(np.argsort(values[k][0])) for k in names]))
    corr_rows = [{"": a, **{b: float(spearman[i, j]) for j, b in enumerate(names)}} for i, a in enumerate(names)]
    print("Spearman rank correlation between valuations")
    print(format_table(corr_rows, [""] + names))
    print("TMC:", extra["tmc"])
    tm = extra["tmc"]
    tmc_rows = [{"engine": "map (one permutation at a time)", "seconds": round(tm["seconds_map_engine"], 2), "utility calls": tm["utility_calls_map"]},
                {"engine": f"vmap ({tm['vmap_permutations_per_call']} permutations per call)", "seconds": round(tm["seconds_vmap_engine"], 2),
                 "utility calls": tm["utility_calls"]}]
    print(f"TMC-Shapley engines, same permutations: speed-up {tm['speedup_vmap_over_map']:.2f}x, max |Δφ| {tm['max_abs_diff_vmap_vs_map']:.2e}")
    print(format_table(tmc_rows, ["engine", "seconds", "utility calls"]))

    res = removal_curves(values, x, y, xt, yt, fractions, seeds, steps=steps, batch=batch, lr=lr)
    cols = ["valuation / removed"] + [f"{int(round(100 * f))}%" for f in fractions]
    rows = [{"valuation / removed": k, **{c: f"{m:.1f}±{s:.1f}" for c, m, s in zip(cols[1:], v["mean"], v["std"], strict=True)}} for k, v in res["curves"].items()]
    print(f"test accuracy (%) after removal; no removal: {res['full']['mean']:.1f}±{res['full']['std']:.1f}")
    print(format_table(rows, cols))

    config = {"n_valued": n, "n_validation": int(xv.shape[0]), "n_test": int(xt.shape[0]), "fractions": fractions,
              "seeds": list(seeds), "target": "MLP 128-128, Adam 1e-3, 300 steps, batch 64", "knn_k": K_NN,
              "tmc": {"max_permutations": tmc_perms, "truncation": 0.01, "utility": "5-NN on validation", "batch": TMC_BATCH, "window": 10,
                      "engines": "vmap (all permutations per call) vs map (lax.map, one at a time)"},
              "influence": {"model": "softmax regression", "l2": L2, "damping": 1e-4, "solver": "cg"},
              "loo": {"model": "NTK KRR depth 1, one-hot targets, λ = tr(K)/n", "metric": "validation MSE"}}
    results = {"throughput": thr, "spearman": {a: {b: float(spearman[i, j]) for j, b in enumerate(names)} for i, a in enumerate(names)},
               "pearson": {a: {b: float(corr[i, j]) for j, b in enumerate(names)} for i, a in enumerate(names)},
               "tmc": extra["tmc"], "removal": res, "table": rows}
    path = write_result(name, config, results, time.perf_counter() - t_start, out_dir=out_dir)
    plot(out_dir / f"{name}.png", fractions, res)
    print(f"wrote {path} and {name}.png ({time.perf_counter() - t_start:.0f}s)")


if __name__ == "__main__":
    main()
