"""∞-AE speed and memory on a synthetic ML-1M-shaped matrix.

    python -m benchmarks.infinite_ae_perf [--users 6040 --items 3706 --density 0.045]
    python -m benchmarks.infinite_ae_perf --record     # what wrote infinite_ae_perf_cpu.json

Measures, in one run:
* plain ``x @ x.T`` throughput vs the NTK kernel build (same 2·n²·I matmul FLOPs plus
  the elementwise arc-cosine recursion), as GFLOP/s and their ratio;
* compiled temporary memory of the dense kernel build, and of scoring all users
  ``NTK(X, X) · α`` naively (kernel materialised) vs in row blocks (``fc_relu_apply``);
* the whole job — λ sweep on validation (kernel once; ``select_lambda``'s ``auto``,
  ``cholesky`` and ``spectral`` paths), final fit, test scoring and metrics — against the
  reference recipe ported to the library's kernel (both kernels rebuilt, a solve and
  ``K·α`` per λ), with the speed ratio; and the job's pieces timed one by one;
* peak resident memory of the process.
Writes ``infinite_ae_perf_<platform>.json`` to ``--out`` (default ``runs/``;
``--record``: ``benchmarks/results/``).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import format_table, output_dir, parser, peak_rss_mb, timed, write_result
from distill import data as D
from distill import metrics
from models import infinite_ae, kernels, krr


# noveens/infinite_ae_cf (neural-tangents, jax 0.5.3) on this 2-core CPU, same matrix and
# grid: the reference can no longer run next to the library (neural-tangents does not
# import on current jax), so the same run measures the recipe ported to the library's kernel.
RECORDED_REFERENCE_S = 136.8


def synthetic_ml1m(n_users: int, n_items: int, density: float, seed: int = 0):
    """Power-law item popularity and log-normal user activity, like ML-1M.

    Each user draws ``n_u`` distinct items with probability ∝ popularity (Gumbel
    top-k); item weights follow a Zipf law with exponent 1 and user activity a
    log-normal with σ = 1, rescaled so the mean density is ``density``.
    """
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1) ** 1.0
    rng.shuffle(pop)
    act = rng.lognormal(0.0, 1.0, n_users)
    n_u = np.clip(np.round(act / act.mean() * density * n_items), 20, n_items // 2).astype(int)
    keys = np.log(pop)[None, :] + rng.gumbel(size=(n_users, n_items))
    order = np.argsort(-keys, axis=1)
    users = np.repeat(np.arange(n_users), n_u)
    items = np.concatenate([order[u, : n_u[u]] for u in range(n_users)])
    ts = np.arange(len(users))
    return D.from_arrays(users, items, np.ones(len(users), np.float32), ts)


def _temp_bytes(fn, *args) -> int:
    return int(jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes)


def _arguments(argv):
    p = parser("infinite_ae_perf", __doc__)
    p.add_argument("--users", type=int, default=6040, help="users of the synthetic matrix (ML-1M: 6,040)")
    p.add_argument("--items", type=int, default=3706, help="items of the synthetic matrix (ML-1M: 3,706)")
    p.add_argument("--density", type=float, default=0.045, help="mean fraction of items per user")
    p.add_argument("--block-size", type=int, default=512, help="rows per block of the blocked NTK(X, X)·α")
    p.add_argument("--skip-naive", action="store_true", help="skip the naive sweep")
    return p.parse_args(argv)


def _throughput(train, block_size):
    """Plain matmul vs NTK kernel build vs NTK·α (naive and blocked): times and compiled memory."""
    n, i = train.shape
    flops = 2.0 * n * n * i
    mm = jax.jit(lambda x: x @ x.T)
    dense = jax.jit(lambda x: kernels.fc_relu(x).ntk)
    jax.block_until_ready((mm(train), dense(train)))
    _, t_mm = timed(lambda: mm(train), repeats=3)
    _, t_kd = timed(lambda: dense(train), repeats=3)
    alpha = jnp.zeros_like(train)
    naive_apply = jax.jit(lambda x, a: kernels.fc_relu(x).ntk @ a)
    blocked_apply = lambda x, a: kernels.fc_relu_apply(x, x, a, block_size=block_size)  # noqa: E731
    jax.block_until_ready((naive_apply(train, alpha), blocked_apply(train, alpha)))
    _, t_an = timed(lambda: naive_apply(train, alpha), repeats=2)
    _, t_ab = timed(lambda: blocked_apply(train, alpha), repeats=2)
    return {
        "flops": flops, "matmul_s": t_mm, "kernel_s": t_kd, "apply_naive_s": t_an, "apply_blocked_s": t_ab,
        "kernel_temp_bytes": _temp_bytes(lambda x: kernels.fc_relu(x).ntk, train),
        "apply_temp_bytes_naive": _temp_bytes(lambda x, a: kernels.fc_relu(x).ntk @ a, train, alpha),
        "apply_temp_bytes_blocked": _temp_bytes(blocked_apply, train, alpha),
    }


def _job(train, val, test, lams, block_size, path):
    """The job (λ sweep + final fit + test evaluation), timed after a compiling pass."""
    def job():
        search = infinite_ae.select_lambda(train, val, lams=lams, path=path)
        ctx = train + val
        scores = infinite_ae.predict(search.model, ctx, block_size=block_size)
        return search.best_lam, metrics.evaluate(scores, test, ctx, ks=(10, 100))

    job()  # compile
    return timed(job)


def _naive_job(train, val, test, lams):
    """The reference recipe ported to the library's kernel: for every λ build K(X, X) and the
    prediction kernel K(X_pred, X), solve (Cholesky) and multiply ``K_pred·α`` — as
    noveens/infinite_ae_cf's ``kernelized_rr_forward``; timed after a compiling pass."""
    def naive():
        vals = []
        for lam in lams:
            s = infinite_ae.predict(infinite_ae.fit(train, lam=lam), train)
            vals.append(metrics.evaluate(s, val, train, ks=(100,), metrics=("hr",))["HR@100"])
        best = lams[int(np.argmax(vals))]
        ctx = train + val
        return best, metrics.evaluate(infinite_ae.predict(infinite_ae.fit(train, lam=best), ctx), test, ctx,
                                      ks=(10, 100))

    naive()
    return timed(naive)


def _breakdown(train, val, test, block_size):
    """Seconds of each piece of the job (each compiled first, best of 2): kernel, the two
    factorisations, the per-λ products, a validation metric, prediction, test metrics."""
    k = infinite_ae._gram(train, infinite_ae.KernelSpec(), None)
    lam = jnp.asarray(1.0, train.dtype)
    scores, alpha = infinite_ae._train_fit(k, train, lam)
    eig = infinite_ae._eigen(k, train)
    model = infinite_ae.InfiniteAE(train, alpha, infinite_ae.KernelSpec())
    ctx = train + val
    pred = infinite_ae.predict(model, ctx, block_size=block_size)
    pieces = {
        "kernel": lambda: infinite_ae._gram(train, infinite_ae.KernelSpec(), None),
        "cholesky_factor": lambda: jax.scipy.linalg.cho_factor(krr.regularize(k, lam), lower=True)[0],
        "cholesky_lambda": lambda: infinite_ae._train_fit(k, train, lam),
        "eigh_and_QtX": lambda: infinite_ae._eigen(k, train),
        "spectral_lambda": lambda: infinite_ae._train_scores_eig(eig, train, lam),
        "K_times_X": lambda: k @ train,
        "val_metric": lambda: metrics.evaluate(scores, val, train, ks=(100,), metrics=("hr",)),
        "predict": lambda: infinite_ae.predict(model, ctx, block_size=block_size),
        "test_metrics": lambda: metrics.evaluate(pred, test, ctx, ks=(10, 100)),
    }
    out = {}
    for name, fn in pieces.items():
        jax.block_until_ready(fn())
        out[name] = timed(fn, repeats=2)[1]
    return out


def _report(perf, jobs, block_size, n_lams, parts):
    f, t_mm, t_kd, t_an, t_ab = (perf[k] for k in ("flops", "matmul_s", "kernel_s", "apply_naive_s",
                                                   "apply_blocked_s"))
    rows = [
        {"what": "x @ x.T", "seconds": t_mm, "GFLOP/s": f / t_mm / 1e9},
        {"what": "NTK kernel", "seconds": t_kd, "GFLOP/s": f / t_kd / 1e9},
        {"what": "NTK(X,X)@alpha naive", "seconds": t_an, "GFLOP/s": 2 * f / t_an / 1e9},
        {"what": f"NTK(X,X)@alpha blocks of {block_size}", "seconds": t_ab, "GFLOP/s": 2 * f / t_ab / 1e9},
    ]
    rows += [{"what": f"job: {name} ({n_lams} lams + fit + test eval)", "seconds": t, "GFLOP/s": "-"}
             for name, t in jobs.items() if t is not None]
    rows += [{"what": f"piece: {name}", "seconds": t, "GFLOP/s": "-"} for name, t in parts.items()]
    print(format_table(rows, ["what", "seconds", "GFLOP/s"]))
    print(
        f"kernel/matmul throughput {100 * t_mm / t_kd:.0f} %, kernel temp "
        f"{perf['kernel_temp_bytes'] / 2**20:.0f} MiB; NTK@alpha temp naive "
        f"{perf['apply_temp_bytes_naive'] / 2**20:.0f} MiB vs blocked {perf['apply_temp_bytes_blocked'] / 2**20:.0f} MiB"
    )


def main(argv=None):
    args = _arguments(argv)
    t0 = time.perf_counter()
    lams = infinite_ae.DEFAULT_LAMS
    inter = synthetic_ml1m(args.users, args.items, args.density)
    split = D.random_split(inter, seed=0)
    train, val, test = (jnp.asarray(a) for a in (split.train, split.val, split.test))
    n, i = train.shape
    density = float(np.asarray(inter.users).size) / (n * i)
    print(f"synthetic: {n} users x {i} items, density {100 * density:.2f} %")
    perf = _throughput(train, args.block_size)
    jobs, best = {}, {}
    for path in ("auto", "cholesky", "spectral"):
        (best[path], test_m), jobs[path] = _job(train, val, test, lams, args.block_size, path)
    jobs["reference recipe"] = None
    if not args.skip_naive:
        (best["reference recipe"], _), jobs["reference recipe"] = _naive_job(train, val, test, lams)
    assert len(set(best.values())) == 1, best
    parts = _breakdown(train, val, test, args.block_size)
    _report(perf, jobs, args.block_size, len(lams), parts)
    flops = perf.pop("flops")
    t_naive = jobs["reference recipe"]
    results = {
        "shape": [n, i], "density": density, "matmul_s": perf["matmul_s"],
        "matmul_gflops": flops / perf["matmul_s"] / 1e9, "kernel_s": perf["kernel_s"],
        "kernel_gflops": flops / perf["kernel_s"] / 1e9,
        "kernel_over_matmul_throughput": perf["matmul_s"] / perf["kernel_s"],
        **{k: perf[k] for k in ("kernel_temp_bytes", "apply_naive_s", "apply_blocked_s", "apply_temp_bytes_naive",
                                "apply_temp_bytes_blocked")},
        "job_s": jobs["auto"], "job_s_by_path": jobs, "naive_job_s": t_naive,
        "speedup_vs_naive": (t_naive / jobs["auto"]) if t_naive else None,
        "speedup_vs_recorded_reference": RECORDED_REFERENCE_S / jobs["auto"],
        "breakdown_s": parts, "best_lam": best["auto"], "test": test_m, "peak_rss_mb": peak_rss_mb(),
    }
    print(f"peak RSS {results['peak_rss_mb']:.0f} MiB")
    config = {k: v for k, v in vars(args).items() if k not in ("out", "record")} | {
        "lams": list(lams), "recorded_reference_s": RECORDED_REFERENCE_S}
    hw = jax.devices()[0].platform
    path = write_result(f"infinite_ae_perf_{hw}", config, results, time.perf_counter() - t0, output_dir(args))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
