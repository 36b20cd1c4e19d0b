"""Distill-CF memory and speed of one meta-gradient step (dissertation §3.4.4).

    python -m benchmarks.distill_cf_perf [--quick]
    python -m benchmarks.distill_cf_perf --devices 2 --record   # what wrote distill_cf_perf_cpu.json

1. Memory: compiled temporary bytes (``memory_analysis().temp_size_in_bytes``) of one
   jitted meta-gradient step (∞-AE fitted on the Gumbel summary, scored on a real
   batch, ``value_and_grad`` in Γ) for γ ∈ {50, 200, 800}, with the custom VJP and
   with naive autodiff through the γ samples.
2. Speed: seconds per meta-gradient step on a synthetic ML-1M-shaped matrix (6,040 ×
   3,706; μ = 500, γ = 200; all users as the batch, as in the reference defaults),
   after a warm-up, with ``block_until_ready``; for the default hash noise and for
   ``jax.random`` threefry noise; with ``--devices N`` also sharded over N devices
   (real users and the synthetic users' Gumbel sampling; on CPU, N host devices —
   the benchmark restarts itself with the XLA flag that creates them).
3. The γ-sample Gumbel loop alone, forward and custom-VJP backward, in cache-sized row
   blocks (default) vs over the whole matrix.
4. The kernel / solve / loss part alone (value and gradient on a fixed summary) against
   its floor of five matmuls of the same size, as a fraction of matmul throughput.
Writes ``distill_cf_perf_<platform>[_quick].json`` to ``--out`` (default ``runs/``;
``--record``: ``benchmarks/results/``).
"""

from __future__ import annotations

import functools
import os
import sys
import time

import jax
import jax.numpy as jnp

from benchmarks._common import format_table, output_dir, parser, peak_rss_mb, timed, write_result
from benchmarks.infinite_ae_perf import synthetic_ml1m
from distill import data as D
from distill import distill_cf as dcf
from distill import parallel
from distill import parametrize as P
from models import infinite_ae


def _step_fn(mu, gamma, tau, custom_vjp, noise, mesh=None):
    settings = dcf.Settings(n_syn_users=mu, n_samples=gamma, tau=tau, lam2=1e-3, custom_vjp=custom_vjp, noise=noise)
    return jax.jit(jax.value_and_grad(functools.partial(dcf.objective, settings=settings, mesh=mesh)))


def _parse(argv):
    p = parser("distill_cf_perf", __doc__)
    p.add_argument("--quick", action="store_true",
                   help="smaller speed problem (1,500 × 1,000, μ = 100, γ = 50; name gets _quick)")
    p.add_argument("--users", type=int, default=6040, help="users of the synthetic speed matrix")
    p.add_argument("--items", type=int, default=3706, help="items of the synthetic speed matrix")
    p.add_argument("--mu", type=int, default=500, help="synthetic users μ of the summary (speed part)")
    p.add_argument("--gamma", type=int, default=200, help="Gumbel samples γ per synthetic user (speed part)")
    p.add_argument("--tau", type=float, default=1.0, help="Gumbel-softmax temperature τ")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (the best is reported)")
    p.add_argument(
        "--devices", type=int, default=1,
        help="also time the step sharded over this many devices (on CPU: host devices, one per core)",
    )
    args = p.parse_args(argv)
    if args.devices > len(jax.devices()) and jax.devices()[0].platform == "cpu" and argv is None:
        # The host-device count is fixed when the backend starts: restart with it set.
        env = dict(os.environ)
        env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}"
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks.distill_cf_perf", *sys.argv[1:]], env)
    return args


#: The memory part's problem: μ, items, real users per batch (compiled, never run).
MEM_MU, MEM_ITEMS, MEM_BATCH = 100, 2000, 256


def _memory(tau):
    """1. Compiled temporary bytes of one step vs γ, custom VJP and naive autodiff."""
    mem_rows = []
    for gamma in (50, 200, 800):
        row = {"gamma": gamma}
        for name, custom in (("custom_vjp", True), ("naive", False)):
            fn = _step_fn(MEM_MU, gamma, tau, custom, "hash")
            args_ = (
                jnp.zeros((MEM_MU, MEM_ITEMS)),
                dcf.Batch(jnp.zeros((MEM_BATCH, MEM_ITEMS)), jnp.asarray(1.0)),
                jax.random.key(0),
            )
            temp = fn.lower(*args_).compile().memory_analysis().temp_size_in_bytes
            row[f"{name}_MiB"] = temp / 2**20
        mem_rows.append(row)
    base = mem_rows[0]["custom_vjp_MiB"]
    for r in mem_rows:
        r["custom_vs_gamma50"] = r["custom_vjp_MiB"] / base
        r["naive_vs_custom"] = r["naive_MiB"] / r["custom_vjp_MiB"]
    print(f"memory of one meta-gradient step (μ={MEM_MU}, I={MEM_ITEMS}, batch={MEM_BATCH}, float32)")
    print(format_table(mem_rows, ["gamma", "custom_vjp_MiB", "naive_MiB", "custom_vs_gamma50", "naive_vs_custom"]))
    return mem_rows


def _speed(args, train, mu, gamma):
    """2. Seconds per meta-gradient step with all users as the batch, per noise / device count."""
    batch = dcf.Batch(train, jnp.asarray(1.0))
    speed_rows = []
    settings = [("hash", 1), ("threefry", 1)] + ([("hash", args.devices)] if args.devices > 1 else [])
    for noise, n_dev in settings:
        mesh = parallel.make_mesh(n_dev) if n_dev > 1 else None
        fn = _step_fn(mu, gamma, args.tau, True, noise, mesh)
        logits = train[:mu] * 5.0
        key = jax.random.key(0)
        t = time.perf_counter()
        jax.block_until_ready(fn(logits, batch, key))
        compile_s = time.perf_counter() - t
        _, sec = timed(lambda fn=fn, logits=logits, key=key: fn(logits, batch, jax.random.fold_in(key, 1)),
                       repeats=args.repeats)
        speed_rows.append({"noise": noise, "devices": n_dev, "s_per_step": sec, "first_call_s": compile_s})
    print(
        f"seconds per meta-gradient step ({train.shape[0]} x {train.shape[1]}, μ={mu}, γ={gamma}, "
        f"batch = all users)"
    )
    print(format_table(speed_rows, ["noise", "devices", "s_per_step", "first_call_s"]))
    return speed_rows


def _gumbel_loop(args, mu, n_items, gamma):
    """3. The γ-sample loop alone (forward + custom-VJP backward), in cache-sized row
    blocks (the default) vs over the whole (μ, I) matrix at once."""
    gumbel_rows = []
    logits = jax.random.normal(jax.random.key(1), (mu, n_items))
    ct = jax.random.normal(jax.random.key(2), logits.shape)
    default_block = P._BLOCK_BYTES
    for name, block_bytes in (("row blocks (default)", default_block), ("whole matrix", logits.size * 4)):
        P._BLOCK_BYTES = block_bytes
        fwd_bwd = jax.jit(lambda g, k: jax.vjp(
            lambda g: P.multisample_gumbel_sum(g, k, n_samples=gamma, tau=args.tau), g)[1](ct)[0])
        fwd = jax.jit(lambda g, k: P.multisample_gumbel_sum(g, k, n_samples=gamma, tau=args.tau))
        row = {"gumbel_loop": name, "block_rows": min(mu, max(1, block_bytes // (n_items * 4)))}
        for label, fn in (("fwd_s", fwd), ("bwd_s", fwd_bwd)):  # the VJP alone: its forward output is unused
            jax.block_until_ready(fn(logits, jax.random.key(0)))
            _, row[label] = timed(lambda fn=fn: fn(logits, jax.random.key(0)), repeats=args.repeats)
        gumbel_rows.append(row)
    P._BLOCK_BYTES = default_block
    print(f"γ-sample Gumbel loop alone (μ={mu}, I={n_items}, γ={gamma}), seconds")
    print(format_table(gumbel_rows, ["gumbel_loop", "block_rows", "fwd_s", "bwd_s"]))
    return gumbel_rows


def _kernel_part(train, mu):
    """4. The kernel / solve / loss part of a step alone — ∞-AE fitted on a fixed summary,
    scored on every real user, value and gradient in the summary — against its matmul floor:
    five ``(b × I) · (I × μ)``-sized products (``X Sᵀ`` and ``K·α`` forward; ``Kᵀ G``,
    ``G αᵀ`` and ``(dK)ᵀ X`` backward), timed as one product × 5."""
    summary = jax.nn.sigmoid(jax.random.normal(jax.random.key(3), (mu, train.shape[1])))
    weights = jnp.ones((train.shape[0],), train.dtype)

    def loss(s):
        return dcf._nll_sum(train, weights, infinite_ae.fit(s, lam=jnp.asarray(1.0, s.dtype))) / train.shape[0]

    vg = jax.jit(jax.value_and_grad(loss))
    mm = jax.jit(lambda a, b: a @ b.T)
    jax.block_until_ready((vg(summary), mm(train, summary)))
    _, t_vg = timed(lambda: vg(summary), repeats=3)
    _, t_mm = timed(lambda: mm(train, summary), repeats=3)
    flops = 2.0 * train.shape[0] * train.shape[1] * mu
    row = {"value_and_grad_s": t_vg, "matmul_s": t_mm, "matmul_gflops": flops / t_mm / 1e9,
           "floor_s": 5 * t_mm, "fraction_of_matmul_throughput": 5 * t_mm / t_vg}
    print(f"kernel/solve/loss part: {t_vg:.3f} s vs 5 matmuls {5 * t_mm:.3f} s "
          f"({100 * row['fraction_of_matmul_throughput']:.0f} % of matmul throughput)")
    return row


def main(argv=None):
    args = _parse(argv)
    t0 = time.perf_counter()
    mem_rows = _memory(args.tau)
    n_users, n_items = (1500, 1000) if args.quick else (args.users, args.items)
    mu, gamma = (100, 50) if args.quick else (args.mu, args.gamma)
    train = jnp.asarray(D.random_split(synthetic_ml1m(n_users, n_items, 0.045), seed=0).train)
    speed_rows = _speed(args, train, mu, gamma)
    gumbel_rows = _gumbel_loop(args, mu, train.shape[1], gamma)
    kernel_row = _kernel_part(train, mu)
    wall = time.perf_counter() - t0
    config = {
        "memory": {"mu": MEM_MU, "n_items": MEM_ITEMS, "batch": MEM_BATCH, "gammas": [50, 200, 800]},
        "speed": {
            "n_users": int(train.shape[0]), "n_items": int(train.shape[1]), "mu": mu, "gamma": gamma,
            "tau": args.tau, "batch": "all users", "repeats": args.repeats, "quick": args.quick,
            "devices": args.devices,
        },
        "reference_s_per_step_note": "noveens/distill_cf: ≈ 6 s/step on this 2-core machine",
    }
    results = {"memory": mem_rows, "speed": speed_rows, "gumbel_loop": gumbel_rows, "kernel_part": kernel_row,
               "peak_rss_mb": peak_rss_mb()}
    name = f"distill_cf_perf_{jax.devices()[0].platform}" + ("_quick" if args.quick else "")
    path = write_result(name, config, results, wall, output_dir(args))
    print(f"wrote {path} ({wall:.1f} s)")


if __name__ == "__main__":
    main()
