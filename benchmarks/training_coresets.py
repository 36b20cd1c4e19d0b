"""Training-time coresets on sklearn digits: CREST and SSM vs random mini-batches; SAS for SimCLR.

``python -m benchmarks.training_coresets [--quick] [--seeds 0 1]``

``python -m benchmarks.training_coresets [--quick] --record`` wrote
``training_coresets[_quick].json/.png``.

1. **CREST / SSM** (MLP 128-128, SGD momentum 0.9, lr 0.05, mini-batch ``m = 32``):
   test accuracy against gradient steps and against wall time (selection included,
   evaluation excluded) for

   * ``random (m=32)`` — uniform mini-batches of 32 (the budget CREST and SSM match);
   * ``full-data SGD (r=256)`` — uniform mini-batches of 256 (the random-subset size);
   * ``CREST`` — :func:`selection.crest.crest_train` (8 coresets of 32 from random
     subsets of 256, re-selected when the quadratic model's error exceeds τ = 0.05);
   * ``SSM`` — :func:`selection.ssm.ssm_train` (a mini-batch of 32 from a random subset
     of 128 every step, 16 zeroth-order directions on the head, top-64 coordinates).

   Reported: accuracy after all steps, steps and seconds to first reach the target test
   accuracy, and the speed-up in steps over ``random (m=32)``.
2. **SAS** (contrastive learning): a SimCLR proxy (MLP 64→128→32, NT-Xent, τ = 0.5) is
   trained on augmented digits (±1 px shifts, pixel dropout, Gaussian noise); SAS picks
   20 % / 40 % of the training set by per-latent-class facility location on the expected
   augmentation distance under the proxy (latent classes: k-means, 10 clusters, on the
   proxy's mean embeddings); a fresh encoder is trained on each subset with SimCLR
   and evaluated by a linear probe (logistic regression on the 128-d hidden layer,
   fitted on all labelled training digits) on the test digits, vs random subsets.

Writes ``NAME.json`` and ``NAME.png`` (``NAME`` = ``--name``, default
``training_coresets[_quick]``) to ``--out`` (default ``runs/``; ``--record``:
``benchmarks/results/``).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks._common import format_table, output_dir, parser, write_result
from distill import train
from distill.data import load_digits, standardize
from models.mlp import mlp
from selection import crest, sas, ssm

M, R = 32, 256


# ----------------------------------------------------------------------------- CREST / SSM


def uniform_train(key, apply, params, optimizer, x, y, *, steps, batch_size, eval_fn, eval_every):
    """Uniform mini-batch SGD with the same step function, timing and logging as the coreset loop."""
    step_fn = crest.make_weighted_step(apply, optimizer)
    state = train.init(params, optimizer)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    w = jnp.full((batch_size,), 1.0 / batch_size)
    losses, evals, eval_times, train_time = [], [], [], 0.0
    for t in range(steps):
        t0 = time.perf_counter()
        idx = rng.choice(x.shape[0], batch_size, replace=False)
        state, loss = step_fn(state, (xj[idx], yj[idx], w), key)
        losses.append(float(loss))
        train_time += time.perf_counter() - t0
        if (t + 1) % eval_every == 0 or t + 1 == steps:
            evals.append((t + 1, float(eval_fn(state.params))))
            eval_times.append(train_time)
    return crest.CoresetTraining(state.params, train.history_of(losses, evals), eval_times, [], 0.0)


def coreset_experiment(x, y, xt, yt, seeds, *, steps, eval_every, target):
    model = mlp(10, hidden=(128, 128))
    acc = jax.jit(lambda p: 100 * jnp.mean(jnp.argmax(model.apply(p, xt), -1) == yt))
    opt = optax.sgd(0.05, momentum=0.9)
    common = dict(steps=steps, eval_fn=acc, eval_every=eval_every)
    methods = {
        f"random (m={M})": lambda k, p: uniform_train(k, model.apply, p, opt, x, y, batch_size=M, **common),
        f"full-data SGD (r={R})": lambda k, p: uniform_train(k, model.apply, p, opt, x, y, batch_size=R, **common),
        "CREST": lambda k, p: crest.crest_train(k, model.apply, p, opt, x, y, batch_size=M, subset_size=R, n_subsets=8, tau=0.05, check_every=5, **common),
        "SSM": lambda k, p: ssm.ssm_train(k, model.apply, p, opt, x, y, batch_size=M, subset_size=128, n_directions=16, sparsity=64, **common),
    }
    # warm-up compilations outside the timings
    p0 = model.init(jax.random.PRNGKey(0), x[:1])
    for fn in methods.values():
        fn(jax.random.PRNGKey(0), p0)
    out = {}
    for name, fn in methods.items():
        runs = []
        for s in seeds:
            p = model.init(jax.random.PRNGKey(10 + s), x[:1])
            run = fn(jax.random.PRNGKey(20 + s), p)
            h = run.history
            runs.append({"steps": h.eval_steps, "acc": h.eval_values, "time": run.eval_times,
                         "selections": len(run.selection_steps), "selection_time": run.selection_time})
            print(f"  {name} seed {s}: final {h.eval_values[-1]:.1f}% in {run.eval_times[-1]:.1f}s, {len(run.selection_steps)} selections", flush=True)
        out[name] = runs
    rows = []
    base_steps = None
    for name, runs in out.items():
        reach_steps, reach_time = [], []
        for r in runs:
            hit = [i for i, a in enumerate(r["acc"]) if a >= target]
            reach_steps.append(r["steps"][hit[0]] if hit else np.nan)
            reach_time.append(r["time"][hit[0]] if hit else np.nan)
        final = np.array([r["acc"][-1] for r in runs])
        st = float(np.nanmean(reach_steps)) if not np.all(np.isnan(reach_steps)) else float("nan")
        tm = float(np.nanmean(reach_time)) if not np.all(np.isnan(reach_time)) else float("nan")
        if base_steps is None:
            base_steps = st
        rows.append({"method": name, "final acc": f"{final.mean():.1f}±{final.std():.1f}",
                     f"steps to {target:.0f}%": st, f"s to {target:.0f}%": tm,
                     "step speed-up": base_steps / st if st == st and st > 0 else float("nan"),
                     "train s": float(np.mean([r["time"][-1] for r in runs])),
                     "selections": float(np.mean([r["selections"] for r in runs]))})
    return out, rows


# ----------------------------------------------------------------------------- SAS / SimCLR


def augment(key, xb):
    """Digits augmentations on standardised ``(b, 8, 8, 1)`` images: ±1 px shift, dropout, noise."""
    k1, k2, k3 = jax.random.split(key, 3)
    b = xb.shape[0]
    sh = jax.random.randint(k1, (b, 2), -1, 2)
    pad = jnp.pad(xb, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=jnp.min(xb))
    shifted = jax.vmap(lambda im, s: jax.lax.dynamic_slice(im, (1 + s[0], 1 + s[1], 0), (8, 8, 1)))(pad, sh)
    keep = jax.random.bernoulli(k2, 0.85, shifted.shape)
    out = jnp.where(keep, shifted, jnp.min(xb))
    return out + 0.2 * jax.random.normal(k3, out.shape)


def nt_xent(z1, z2, temperature=0.5):
    """SimCLR's normalised-temperature cross-entropy over the 2b views (Chen et al., 2020)."""
    z = jnp.concatenate([z1, z2])
    z = z / jnp.linalg.norm(z, axis=1, keepdims=True)
    sim = z @ z.T / temperature
    b2 = z.shape[0]
    sim = jnp.where(jnp.eye(b2, dtype=bool), -jnp.inf, sim)
    pos = jnp.concatenate([jnp.arange(b2 // 2, b2), jnp.arange(0, b2 // 2)])
    return -jnp.mean(jax.nn.log_softmax(sim, axis=1)[jnp.arange(b2), pos])


@functools.partial(jax.jit, static_argnames=("apply", "steps", "batch"))
def simclr(key, params, x, apply, steps, batch):
    """Adam(1e-3) SimCLR on ``x`` (batches drawn uniformly from the given rows): one
    :func:`distill.train.scan` whose per-step batch is a key the loss draws rows and views from."""
    opt = optax.adam(1e-3)
    n = x.shape[0]

    def loss(p, k, _key):
        k1, k2, k3 = jax.random.split(k, 3)
        xb = x[jax.random.randint(k1, (batch,), 0, n)]
        return nt_xent(apply(p, augment(k2, xb)), apply(p, augment(k3, xb)))

    state, losses = train.scan(train.init(params, opt), jax.random.split(key, steps), key, loss=loss, optimizer=opt)
    return state.params, losses


def linear_probe(features, y, features_test, y_test):
    from sklearn.linear_model import LogisticRegression

    mu, sd = features.mean(0), features.std(0) + 1e-6
    clf = LogisticRegression(max_iter=2000, C=1.0).fit((features - mu) / sd, y)
    return 100 * clf.score((features_test - mu) / sd, y_test)


def sas_experiment(x, y, xt, yt, seeds, *, fractions, proxy_steps, steps):
    enc = mlp(32, hidden=(128,))
    feat = mlp(32, hidden=(128,), features_only=True)
    n = x.shape[0]
    t0 = time.perf_counter()
    proxy, losses = simclr(jax.random.PRNGKey(1), enc.init(jax.random.PRNGKey(0), x[:1]), x, enc.apply, proxy_steps, 256)
    proxy_probe = linear_probe(np.asarray(feat.apply(proxy, x)), y, np.asarray(feat.apply(proxy, xt)), yt)
    proxy_time = time.perf_counter() - t0
    print(f"  SimCLR proxy: {proxy_steps} steps, loss {float(losses[-1]):.3f}, probe {proxy_probe:.1f}% ({proxy_time:.0f}s)", flush=True)
    t0 = time.perf_counter()
    emb = sas.augmentation_embeddings(jax.random.PRNGKey(2), lambda xb: enc.apply(proxy, xb), x, augment, n_augment=4)
    d = np.asarray(sas.expected_augmentation_distance(emb))
    ead_time = time.perf_counter() - t0
    subsets = {}
    t0 = time.perf_counter()
    for f in fractions:
        subsets[("SAS", f)] = sas.sas(d, int(round(f * n)), embeddings=np.asarray(emb.mean(0)), n_classes=10, key=jax.random.PRNGKey(3)).indices
    sas_time = time.perf_counter() - t0
    rows, raw = [], {}

    def evaluate(idx, s):
        p0 = enc.init(jax.random.PRNGKey(30 + s), x[:1])
        p, _ = simclr(jax.random.PRNGKey(40 + s), p0, x[np.asarray(idx)], enc.apply, steps, 256)
        return linear_probe(np.asarray(feat.apply(p, x)), y, np.asarray(feat.apply(p, xt)), yt)

    full = [evaluate(np.arange(n), s) for s in seeds]
    raw["full"] = full
    rows.append({"subset": "full data", **{f"{int(100 * f)}%": f"{np.mean(full):.1f}±{np.std(full):.1f}" for f in fractions}})
    for name in ("SAS", "random"):
        row = {"subset": name}
        for f in fractions:
            accs = []
            for s in seeds:
                idx = subsets[("SAS", f)] if name == "SAS" else np.random.default_rng(50 + s).choice(n, int(round(f * n)), replace=False)
                accs.append(evaluate(idx, s))
            raw[f"{name} {f}"] = accs
            row[f"{int(100 * f)}%"] = f"{np.mean(accs):.1f}±{np.std(accs):.1f}"
            print(f"  {name} {int(100 * f)}%: probe {np.mean(accs):.1f}%", flush=True)
        rows.append(row)
    p_init = enc.init(jax.random.PRNGKey(30), x[:1])
    init_probe = linear_probe(np.asarray(feat.apply(p_init, x)), y, np.asarray(feat.apply(p_init, xt)), yt)
    info = {"untrained_encoder_probe_acc": init_probe, "proxy_probe_acc": proxy_probe, "proxy_seconds": proxy_time, "ead_seconds": ead_time, "sas_select_seconds": sas_time}
    return rows, raw, info


# ----------------------------------------------------------------------------- main


def plot(path, curves, target):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for name, runs in curves.items():
        steps = runs[0]["steps"]
        acc = np.mean([r["acc"] for r in runs], axis=0)
        tm = np.mean([r["time"] for r in runs], axis=0)
        axes[0].plot(steps, acc, label=name)
        axes[1].plot(tm, acc, label=name)
    for ax, xl in zip(axes, ("gradient steps", "training wall time (s, selection included)"), strict=True):
        ax.axhline(target, color="k", ls=":", lw=0.8)
        ax.set_xlabel(xl)
        ax.grid(alpha=0.3)
        ax.set_ylim(80, 100)
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = parser("training_coresets", __doc__)
    ap.add_argument("--name", default=None,
                    help="result name: NAME.json and NAME.png (default training_coresets[_quick])")
    ap.add_argument("--quick", action="store_true", help="fewer steps, seeds and fractions")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (--quick: the first)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    out_dir = output_dir(args)
    name = args.name or ("training_coresets_quick" if args.quick else "training_coresets")
    seeds = args.seeds[:1] if args.quick else args.seeds
    steps, eval_every, target = (200, 20, 95.0) if args.quick else (400, 20, 96.0)
    fractions = [0.3] if args.quick else [0.2, 0.4]
    proxy_steps, sas_steps = (200, 300) if args.quick else (400, 600)

    train, test = load_digits(seed=0)
    xtr, mean, std = standardize(train.x)
    xte, _, _ = standardize(test.x, mean, std)
    flat = lambda a: a.reshape(a.shape[0], -1)
    x, y, xt, yt = flat(xtr), train.y, jnp.asarray(flat(xte)), jnp.asarray(test.y)

    print("CREST / SSM vs random mini-batches", flush=True)
    curves, rows = coreset_experiment(x, y, xt, yt, seeds, steps=steps, eval_every=eval_every, target=target)
    cols = ["method", "final acc", f"steps to {target:.0f}%", f"s to {target:.0f}%", "step speed-up", "train s", "selections"]
    print(format_table(rows, cols))

    print("SAS subsets for SimCLR (linear-probe test accuracy, %)", flush=True)
    sas_rows, sas_raw, sas_info = sas_experiment(xtr, train.y, xte, test.y, seeds, fractions=fractions, proxy_steps=proxy_steps, steps=sas_steps)
    print(format_table(sas_rows, ["subset"] + [f"{int(100 * f)}%" for f in fractions]))
    print({k: round(v, 2) for k, v in sas_info.items()})

    config = {"model": "MLP 128-128", "optimizer": "SGD momentum 0.9, lr 0.05", "m": M, "r": R, "steps": steps,
              "eval_every": eval_every, "target_acc": target, "seeds": list(seeds),
              "crest": {"n_subsets": 8, "tau": 0.05, "check_every": 5},
              "ssm": {"subset_size": 128, "n_directions": 16, "sparsity": 64, "reselect_every": 1},
              "sas": {"encoder": "MLP 64-128-32", "loss": "NT-Xent τ=0.5", "proxy_steps": proxy_steps, "target_steps": sas_steps,
                      "batch": 256, "n_augment": 4, "latent_classes": 10, "fractions": fractions}}
    results = {"coresets": {"rows": rows, "curves": curves}, "sas": {"rows": sas_rows, "raw": sas_raw, **sas_info}}
    path = write_result(name, config, results, time.perf_counter() - t_start, out_dir=out_dir)
    plot(out_dir / f"{name}.png", curves, target)
    print(f"wrote {path} and {name}.png ({time.perf_counter() - t_start:.0f}s)")


if __name__ == "__main__":
    main()
