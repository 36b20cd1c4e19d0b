"""Inner-loop benchmark for Farzi's reverse-mode Adam (dissertation Ch. 4, Algorithm 6, Fig. 4.5).

Two measurements:

1. **Memory**: compiled temporary bytes (XLA ``memory_analysis``, compiled, never run) of the
   meta-gradient ``d/d(data) L_real(train(θ₀, data; T))`` for the small Transformer LM on
   soft synthetic sequences, for T ∈ {10, 100, 1000} and the three modes of
   :func:`distill.inner.train` (``reverse_adam`` with the default segment length — K = 1 in float32 —, with K = 10
   and with pure reversal, ``reverse_every=None``).
2. **Accuracy**: (a) pure reversal of the Adam trajectory of a 222-parameter MLP in float32
   and float64 — relative error of the recovered θ₀ vs T; (b) relative error of the float32
   meta-gradient (reverse_adam, default K, K = 10 and pure) against a float64 ``jax.grad`` through
   the unrolled loop.

``python -m benchmarks.farzi_inner [--quick]`` writes ``results/farzi_inner.json`` and ``.png``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

from benchmarks._common import format_table, output_dir, parser, write_result  # noqa: E402
from distill import inner  # noqa: E402
from models.transformer import transformer  # noqa: E402


def soft_xent(logits, targets):
    return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits), -1))


def int_xent(logits, targets):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1))


def memory(ts, modes, *, vocab=256, n_seqs=10, seq_len=32, d=32):
    model = transformer(vocab, max_len=seq_len, d_model=d, n_heads=2, n_layers=2)
    key = jax.random.key(0)
    x_real = jax.random.randint(key, (32, seq_len + 1), 0, vocab)
    theta0 = model.init(key, x_real[:, :-1])
    n_params = sum(a.size for a in jax.tree_util.tree_leaves(theta0))
    logits = jax.random.normal(key, (n_seqs, seq_len + 1, vocab), jnp.float32)
    rows = []
    for name, mode, every in modes:
        for t in ts:
            def meta(lg, th):
                d = jax.nn.softmax(lg)
                th_t = inner.train(model.apply, soft_xent, th, (d[:, :-1], d[:, 1:]), steps=t,  # noqa: B023 (called within this iteration)
                                   optimizer=inner.Adam(1e-3), mode=mode, reverse_every=every)  # noqa: B023 (called within this iteration)
                return int_xent(model.apply(th_t, x_real[:, :-1]), x_real[:, 1:])

            t0 = time.perf_counter()
            comp = jax.jit(jax.grad(meta)).lower(logits, theta0).compile()
            ma = comp.memory_analysis()
            rows.append({"method": name, "T": t, "temp_MiB": ma.temp_size_in_bytes / 2**20,
                         "compile_s": time.perf_counter() - t0})
            print(rows[-1], flush=True)
    return rows, n_params


def _mlp(dtype, key):
    """The same numbers in either dtype (drawn in float64, then cast)."""
    k1, k2, k3, k4, k5, k6 = jax.random.split(key, 6)
    f = jnp.float64
    theta = {"w1": 0.5 * jax.random.normal(k1, (8, 20), f), "b1": jnp.zeros(20, f),
             "w2": 0.5 * jax.random.normal(k2, (20, 2), f), "b2": jnp.zeros(2, f)}
    arrays = (jax.random.normal(k3, (32, 8), f), jax.random.normal(k4, (32, 2), f),
              jax.random.normal(k5, (64, 8), f), jax.random.normal(k6, (64, 2), f))
    cast = lambda a: a.astype(dtype)
    return (jax.tree_util.tree_map(cast, theta), *map(cast, arrays))


def mlp_apply(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def mse(o, y):
    return jnp.mean((o - y) ** 2)


def rel(a, b):
    a = jnp.concatenate([jnp.ravel(x).astype(jnp.float64) for x in jax.tree_util.tree_leaves(a)])
    b = jnp.concatenate([jnp.ravel(x).astype(jnp.float64) for x in jax.tree_util.tree_leaves(b)])
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def drift(ts, lr=0.01):
    opt = inner.Adam(lr)
    rows = []
    for t in ts:
        row = {"T": t}
        for dtype in (jnp.float32, jnp.float64):
            theta, x, y, _, _ = _mlp(dtype, jax.random.key(0))
            final = jax.jit(lambda th: inner.train_state(mlp_apply, mse, th, (x, y), steps=t,  # noqa: B023 (called within this iteration)
                                                         optimizer=opt, mode="unrolled"))(theta)
            back = jax.jit(lambda f: inner.reverse(mlp_apply, mse, f, (x, y), steps=t, optimizer=opt))(final)  # noqa: B023 (called within this iteration)
            row[f"theta0_err_{jnp.dtype(dtype).name}"] = rel(back, theta)
        # meta-gradient in float32 vs float64 unrolled reference
        grads = {}
        for name, dtype, mode, every in (("ref_f64", jnp.float64, "unrolled", None),
                                         ("unrolled_f32", jnp.float32, "unrolled", None),
                                         ("reverse_f32_K10", jnp.float32, "reverse_adam", 10),
                                         ("reverse_f32_autoK", jnp.float32, "reverse_adam", "auto"),
                                         ("reverse_f32_pure", jnp.float32, "reverse_adam", None),
                                         ("reverse_f64_autoK", jnp.float64, "reverse_adam", "auto")):
            theta, x, y, xr, yr = _mlp(dtype, jax.random.key(0))

            def meta(x, th):
                th_t = inner.train(mlp_apply, mse, th, (x, y), steps=t, optimizer=opt, mode=mode, reverse_every=every)  # noqa: B023 (called within this iteration)
                return mse(mlp_apply(th_t, xr), yr)  # noqa: B023 (called within this iteration)

            grads[name] = jax.jit(jax.grad(meta, argnums=(0, 1)))(x, theta)
        for name in grads:
            if name != "ref_f64":
                row[f"metagrad_err_{name}"] = rel(grads[name], grads["ref_f64"])
        rows.append(row)
        print(row, flush=True)
    return rows


def plot(mem_rows, drift_rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for name in dict.fromkeys(r["method"] for r in mem_rows):
        rs = [r for r in mem_rows if r["method"] == name]
        ax[0].plot([r["T"] for r in rs], [r["temp_MiB"] for r in rs], "o-", label=name)
    ax[0].set(xscale="log", yscale="log", xlabel="inner steps T", ylabel="compiled temp memory (MiB)",
              title="meta-gradient memory (Transformer LM)")
    ax[0].legend(fontsize=8)
    ts = [r["T"] for r in drift_rows]
    for k in drift_rows[0]:
        if k != "T":
            ax[1].plot(ts, [max(r[k], 1e-17) for r in drift_rows], "o-", label=k)
    ax[1].set(xscale="log", yscale="log", xlabel="inner steps T", ylabel="relative error",
              title="reversal drift (222-param MLP)")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = parser("farzi_inner", __doc__)
    p.add_argument("--quick", action="store_true", help="T up to 100 only")
    args = p.parse_args(argv)
    start = time.perf_counter()
    ts = (10, 100) if args.quick else (10, 100, 1000)
    modes = [("unrolled", "unrolled", "auto"), ("checkpointed", "checkpointed", "auto"),
             ("reverse_adam K=1 (f32 default)", "reverse_adam", "auto"),
             ("reverse_adam K=10", "reverse_adam", 10),
             ("reverse_adam pure (K=None)", "reverse_adam", None)]
    mem_rows, n_params = memory(ts, modes)
    dts = (10, 25, 50, 100, 200) if args.quick else (10, 25, 50, 100, 200, 400, 1000)
    drift_rows = drift(dts)
    print(format_table(mem_rows, ["method", "T", "temp_MiB", "compile_s"]))
    print(format_table(drift_rows, list(drift_rows[0])))
    name = "farzi_inner_quick" if args.quick else "farzi_inner"
    config = {"memory_model": {"model": "transformer", "vocab": 256, "n_seqs": 10, "seq_len": 32,
                               "d_model": 32, "n_layers": 2, "n_params": n_params, "dtype": "float32"},
              "drift_model": {"model": "MLP 8-20-2 tanh", "n_params": 222, "adam_lr": 0.01,
                              "data": "32 random regression examples, full batch"},
              "quick": args.quick}
    path = write_result(name, config, {"memory": mem_rows, "drift": drift_rows}, time.perf_counter() - start,
                        out_dir=output_dir(args))
    plot(mem_rows, drift_rows, path.with_suffix(".png"))


if __name__ == "__main__":
    main()
