"""Why Farzi's outer loss rose on SASRec, and what makes it fall.

    python -m benchmarks.farzi_diagnose --cache /work/tmp/farzi_cache       # both parts
    python -m benchmarks.farzi_diagnose --part grad                         # part 1 only
    python -m benchmarks.farzi_diagnose --part theta0 --cache DIR            # part 3

Setting of :mod:`benchmarks.farzi` (MovieLens latest-small, 1,303 items, SASRec d64 ×2
blocks, D_syn [10×150], Ω = SASRec checkpoints at steps 0..400 of two runs), float32.

1. **Meta-gradient accuracy** (``grad``): ∂/∂(Z, M) of the Farzi objective (Eq. 4.2) with
   ``mode='reverse_adam'`` for segment lengths K (``reverse_every``; K = T is the pure
   reversal) against ``mode='checkpointed'`` (exact autodiff with rematerialisation), on
   one fixed (θ₀ ∈ Ω, real batch): cosine similarity, relative error ‖g − g_ref‖/‖g_ref‖,
   and the seconds per meta-gradient.
2. **Outer loss curves** (``outer``): a few outer Adam steps on (Z, M) per configuration;
   the outer loss is measured on a *fixed* evaluation (every Ω checkpoint, one held 128-row
   real batch, forward only), so the curve is not the noise of the sampled θ₀ and batch.
   The loss of θ₀ itself (no inner training) is printed for reference.
3. **How much a meta-gradient is about its θ₀** (``theta0``, written to
   ``farzi_diagnose_theta0.json``): from :func:`distill.farzi.distill`'s default start
   and settings, the meta-gradients of ``--n-keys`` draws of θ₀ on one real batch; their
   pairwise cosines, and the change of the objective after one Adam-like step
   ``−η·sign(g)`` along one draw's gradient (on that draw and on held-out draws and
   batches) and along the mean of all draws' gradients (on held-out draws and batches).

Writes ``benchmarks/results/farzi_diagnose.json`` (parts 1–2).
"""

from __future__ import annotations

import time

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks._common import format_table, output_dir, parser, write_result
from benchmarks.farzi import load_or_pretrain_omega, prepare
from distill import farzi, inner, loop
from distill.parametrize import latent_factorization
from models.sasrec import sasrec


def _flat(tree):
    return jnp.concatenate([jnp.ravel(a) for a in jax.tree_util.tree_leaves(tree)])


def _agreement(g, ref):
    a, b = _flat(g), _flat(ref)
    return float(a @ b / (jnp.linalg.norm(a) * jnp.linalg.norm(b))), float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def grad_part(model, d, omega, *, mu, xi, latent_dim, lr, settings):
    param = latent_factorization(mu, xi, latent_dim, d["n_items"])
    syn = param.init(jax.random.key(1))
    batch = d["train"][np.random.default_rng(0).choice(d["n_users"], 64, replace=False)]
    rows = []
    for T, ks in settings:
        ref = None
        for mode, k in [("checkpointed", None)] + [("reverse_adam", k) for k in ks]:
            fs = farzi.Settings(model=model, n_seqs=mu, seq_len=xi, latent_dim=latent_dim, inner_steps=T,
                                inner_optimizer=inner.Adam(lr), mode=mode, reverse_every=k, random_init_prob=0.0,
                                hard_inputs=False)  # as recorded
            f = jax.jit(jax.value_and_grad(farzi.objective), static_argnums=3)
            b = farzi.Batch(batch, omega, d["pad"])
            jax.block_until_ready(f(syn, b, jax.random.key(3), fs))
            t = time.perf_counter()
            v, g = jax.block_until_ready(f(syn, b, jax.random.key(3), fs))
            sec = time.perf_counter() - t
            ref = g if ref is None else ref
            cos, rel = _agreement(g, ref)
            rows.append({"T": T, "inner_lr": lr, "mode": mode, "K": "-" if k is None else k, "loss": float(v),
                         "cosine": cos, "rel_err": rel, "s_per_grad": sec})
            print(format_table(rows[-1:], list(rows[-1])), flush=True)
    return rows


def outer_part(model, d, omega, *, mu, xi, configs, steps, chunks=3):
    evb = d["train"][np.random.default_rng(123).choice(d["n_users"], 128, replace=False)]
    tokens_np = np.asarray(d["train"])

    def batches(step):
        rng = np.random.default_rng([5, int(step)])
        return jnp.asarray(tokens_np[rng.choice(d["n_users"], 64, replace=False)])

    out = []
    for cfg in configs:
        param = latent_factorization(mu, xi, cfg["latent_dim"], d["n_items"])
        if cfg["init"] == "real":
            syn = farzi.init_from_tokens(jax.random.key(1), tokens_np, n_seqs=mu, seq_len=xi,
                                         latent_dim=cfg["latent_dim"], vocab_size=d["n_items"],
                                         logit=cfg["init_logit"], pad_id=d["pad"])
        else:
            syn = param.init(jax.random.key(1))
        opt = inner.Adam(cfg["inner_lr"])
        fs = farzi.Settings(model=model, n_seqs=mu, seq_len=xi, latent_dim=cfg["latent_dim"], inner_steps=cfg["T"],
                            inner_optimizer=opt, random_init_prob=0.0, hard_inputs=False)  # as recorded

        def obj(syn, tokens, key, fs=fs):
            return farzi.objective(syn, farzi.Batch(tokens, omega, d["pad"]), key, fs)

        n_om = jax.tree_util.tree_leaves(omega)[0].shape[0]

        @jax.jit
        def fixed(syn):
            data = param.materialize(syn, jax.random.key(0))  # noqa: B023 (called within this iteration)

            def one(i):
                th0 = jax.tree_util.tree_map(lambda a: a[i], omega)
                th = inner.train(model.apply, farzi.soft_cross_entropy, th0, (data[:, :-1], data[:, 1:]),
                                 steps=cfg["T"], optimizer=opt, mode="unrolled")  # noqa: B023 (called within this iteration)
                return farzi.token_loss(model, th, evb, pad_id=d["pad"]), farzi.token_loss(model, th0, evb, pad_id=d["pad"])

            return jax.lax.map(one, jnp.arange(n_om))  # noqa: B023 (called within this iteration)

        e, base = fixed(syn)
        curve = [[0, float(e.mean())]]
        per = [np.asarray(e).tolist()]
        chunk = steps // chunks
        for c in range(chunks):
            syn, _ = loop.run(obj, syn, optax.adam(cfg["outer_lr"]), lambda s, c=c: batches(s + c * chunk),  # noqa: B023 (called within this iteration)
                              steps=chunk, key=jax.random.key(10 + c), progress=False)
            e, _ = fixed(syn)
            curve.append([(c + 1) * chunk, float(e.mean())])
            per.append(np.asarray(e).tolist())
        row = {**cfg, "theta0_loss": float(base.mean()), "curve": curve, "per_checkpoint": per}
        print(cfg, "θ₀ loss", round(float(base.mean()), 3), "outer loss", [(s, round(v, 3)) for s, v in curve],
              flush=True)
        out.append(row)
    return out


# The Markov start and reading the θ₀ diagnosis was recorded with (distill's defaults then).
THETA0_SETTINGS = {"teacher_mix": 0.2, "hard_inputs": False}


def theta0_part(model, d, omega, *, mu, xi, n_keys, etas=(1e-3, 3e-3)):
    """Pairwise cosines of per-θ₀ meta-gradients and the held-out effect of a step along them."""
    s = farzi.Settings(model=model, n_seqs=mu, seq_len=xi, **THETA0_SETTINGS)
    syn = farzi.init(jax.random.key(0), farzi.Data(d["train"], omega, d["pad"]), s)
    perm = np.random.default_rng(0).permutation(d["n_users"])
    batch = farzi.Batch(d["train"][perm[:64]], omega, d["pad"])
    other = farzi.Batch(d["train"][perm[-150:]], omega, d["pad"])
    vg = jax.jit(jax.value_and_grad(lambda f, b, k: farzi.objective(f, b, k, s)))
    obj = jax.jit(lambda f, b, k: farzi.objective(f, b, k, s))
    keys = [jax.random.key(100 + i) for i in range(n_keys)]
    held = [jax.random.key(900 + i) for i in range(3)]
    grads = [_flat(vg(syn, batch, k)[1]) for k in keys]
    cos = [float(grads[i] @ grads[j] / (jnp.linalg.norm(grads[i]) * jnp.linalg.norm(grads[j])))
           for i in range(n_keys) for j in range(i + 1, n_keys)]
    unflat = jax.flatten_util.ravel_pytree(syn)[1]
    start = {}  # the objective at syn, once per (batch, draw)

    def change(g, eta, b, ks):
        moved = unflat(_flat(syn) - eta * jnp.sign(g))
        diffs = []
        for k in ks:
            if (id(b), id(k)) not in start:
                start[id(b), id(k)] = float(obj(syn, b, k))
            diffs.append(float(obj(moved, b, k)) - start[id(b), id(k)])
        return float(np.mean(diffs))

    mean_g = sum(grads) / n_keys
    steps = [{"eta": eta, "one_draw_same": change(grads[0], eta, batch, keys[:1]),
              "one_draw_heldout_draws": change(grads[0], eta, batch, held),
              "one_draw_heldout_batch": change(grads[0], eta, other, keys[:1]),
              "mean_heldout_draws_and_batch": change(mean_g, eta, other, held)} for eta in etas]
    print(f"cosine between θ₀ draws: mean {np.mean(cos):.3f}, max {np.max(cos):.3f}", flush=True)
    print(format_table(steps, list(steps[0])), flush=True)
    return {"n_keys": n_keys, "cosine_mean": float(np.mean(cos)), "cosine_max": float(np.max(cos)),
            "cosines": cos, "steps": steps}


def main(argv=None):
    ap = parser("farzi_diagnose", __doc__)
    ap.add_argument("--part", choices=("grad", "outer", "both", "theta0"), default="both",
                    help="meta-gradient accuracy of reverse-mode Adam, outer-loop behaviour, both, or the "
                         "per-θ₀ meta-gradients at distill's defaults")
    ap.add_argument("--n-keys", type=int, default=8, help="θ₀ draws of the 'theta0' part")
    ap.add_argument("--cache", default=None, help="Ω directory root of benchmarks.farzi (reused when present)")
    ap.add_argument("--outer-steps", type=int, default=24, help="outer steps of the 'outer' part")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    mu, xi, min_item = 10, 150, 20
    d = prepare(xi, min_item)
    model = sasrec(d["n_items"], max_len=xi, d_model=64, n_heads=1, n_layers=2)
    omega = load_or_pretrain_omega(model, d, args.cache, min_item, xi)
    results, config = {}, {"dataset": "ml-latest-small", "min_item": min_item, "n_items": d["n_items"],
                           "model": "SASRec d64, 2 blocks, 1 head", "shape": [mu, xi], "dtype": "float32",
                           "omega": "steps 0,100,..,400 of 2 runs"}
    if args.part == "theta0":
        config["theta0"] = {**{k: v for k, v in farzi.Settings(**THETA0_SETTINGS)._asdict().items() if k != "model"},
                            "inner_optimizer": list(farzi.Settings().inner_optimizer), "real_batch": 64,
                            "heldout_batch": 150, "omega_weights": "uniform (distill's default)"}
        results["theta0"] = theta0_part(model, d, omega, mu=mu, xi=xi, n_keys=args.n_keys)
    if args.part in ("grad", "both"):
        config["grad"] = {"latent_dim": 8, "init": "random", "real_batch": 64}
        results["grad"] = grad_part(model, d, omega, mu=mu, xi=xi, latent_dim=8, lr=3e-3,
                                    settings=((10, (10, 5, 2, 1)), (20, (10, 1))))
    if args.part in ("outer", "both"):
        base = {"T": 10, "inner_lr": 3e-3, "latent_dim": 64, "init": "real", "init_logit": 8.0}
        configs = [{**base, "outer_lr": 3e-3}, {**base, "init": "random", "latent_dim": 8, "outer_lr": 1e-2}]
        config["outer"] = {"outer_steps": args.outer_steps, "real_batch": 64, "eval_batch": 128}
        results["outer"] = outer_part(model, d, omega, mu=mu, xi=xi, configs=configs, steps=args.outer_steps)
    wall = time.perf_counter() - t0
    name = "farzi_diagnose_theta0" if args.part == "theta0" else "farzi_diagnose"
    path = write_result(name, config, results, wall, out_dir=output_dir(args))
    print(f"wrote {path} ({wall:.0f} s)")


if __name__ == "__main__":
    main()
