"""ConvNet forward+backward throughput (images/s) vs this machine's matmul throughput.

    python -m benchmarks.convnet_perf [--quick]
    python -m benchmarks.convnet_perf --record   # what wrote convnet_perf_cpu.json

1. Matmul: GFLOP/s of ``x @ x.T`` (``--matmul-n`` square, float32), jitted, timed after a
   warm-up with ``block_until_ready``, best of ``--repeats``.
2. ConvNet: one jitted ``grad`` of the mean cross-entropy in the parameters, on a batch
   of random images — 28×28×1 with the papers' ConvNet-3 (width 128, depth 3) and 8×8×1
   with depth 2 — for :func:`models.convnet.convnet` with either convolution
   (``lax.conv_general_dilated`` or im2col + matmul; fused instance norm) and for the flax
   module :class:`models.convnet.ConvNet` it replaces, on the same parameters; the repeats of all variants are interleaved so a busy machine
   slows them alike. GFLOP/s counts 3× the forward FLOPs of the convolutions and the
   head (forward, input gradient, weight gradient); the fraction is that over the
   matmul GFLOP/s of the same run.

3. ``--contexts``: both convolutions' gradients called plain, ``vmap``-ped over one model and inside a
   ``lax.scan`` loop body, the time per gradient over the plain one. On CPU a ``lax`` convolution inside a loop
   body is many times slower than the same convolution outside (XLA CPU; jax-ml/jax#12868); the im2col one is not.
   ``python -m benchmarks.convnet_perf --contexts --record`` wrote ``convnet_perf_cpu_contexts.json``.

Writes ``convnet_perf_<platform>[_quick][_contexts].json`` to ``--out`` (default ``runs/``;
``--record``: ``benchmarks/results/``).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from benchmarks._common import format_table, output_dir, parser, timed, write_result
from models.convnet import ConvNet, convnet

#: The convolutions of :func:`models.convnet.convnet` measured beside the flax module.
IMPLS = ("lax", "im2col")
#: (name, image side, channels, depth) of the measured problems; width is ``--width``.
PROBLEMS = (("28x28 ConvNet-3", 28, 1, 3), ("8x8 ConvNet-2", 8, 1, 2))


def conv_flops(side: int, channels: int, width: int, depth: int, n_classes: int = 10) -> int:
    """Forward multiply-add FLOPs (×2) of one image: the 3×3 SAME convolutions and the head.

    Block i sees a ``s_i × s_i`` map (``s_0`` = side, halved by every pooling while
    ``s_i ≥ 2``): ``2 · s_i² · 9 · C_in · width``; the head ``2 · s_depth² · width · n_classes``.
    """
    flops, s, c_in = 0, side, channels
    for _ in range(depth):
        flops += 2 * s * s * 9 * c_in * width
        c_in = width
        if s >= 2:
            s //= 2
    return flops + 2 * s * s * width * n_classes


def matmul_gflops(n: int, repeats: int) -> dict:
    """GFLOP/s (``2 n³`` per call) of a jitted ``x @ x.T``, best of ``repeats`` after a warm-up."""
    x = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    fn = jax.jit(lambda a: a @ a.T)
    jax.block_until_ready(fn(x))
    _, secs = timed(lambda: fn(x), repeats)
    return {"n": n, "seconds": secs, "gflops": 2 * n**3 / secs / 1e9}


def _grads(side, channels, width, depth, batch):
    """The parameter gradients (not jitted) of :func:`models.convnet.convnet` with each convolution and of the
    flax module, on the same parameters; the parameters and a random batch."""
    x = jax.random.normal(jax.random.PRNGKey(1), (batch, side, side, channels))
    y = jnp.arange(batch) % 10
    params = convnet(10, width=width, depth=depth).init(jax.random.PRNGKey(0), x[:1])
    module = ConvNet(10, width, depth)
    applies = {f"convnet ({c})": convnet(10, width=width, depth=depth, conv=c).apply for c in IMPLS}
    applies["flax module"] = lambda p, xb: module.apply({"params": p}, xb)

    def make(apply):
        def loss(p, xb, yb):
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(apply(p, xb)), yb[:, None], 1))

        return jax.grad(loss)

    return {k: make(a) for k, a in applies.items()}, params, x, y


def _best_seconds(fns: dict, operands: tuple, repeats: int) -> dict:
    """Best wall time of every jitted ``fn(*operands)`` after a warm-up, the repeats of all interleaved so a busy
    machine slows every variant alike."""
    for fn in fns.values():
        jax.block_until_ready(fn(*operands))
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for impl, fn in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn(*operands))
            best[impl] = min(best[impl], time.perf_counter() - t)
    return best


def _row(args, name, side, channels, depth, impl, secs, images, mm_gflops, **extra):
    flops = 3 * conv_flops(side, channels, args.width, depth)
    gf = flops * images / secs / 1e9
    return {"problem": name, "impl": impl, "batch": args.batch, "width": args.width, "depth": depth, **extra,
            "seconds": secs, "images_per_s": images / secs, "gflops": gf, "fraction_of_matmul": gf / mm_gflops,
            "mflop_per_image_fwd_bwd": flops / 1e6}


def convnet_rows(args, mm_gflops: float) -> list[dict]:
    """Images/s, GFLOP/s and fraction of matmul of every problem and implementation."""
    rows = []
    for name, side, channels, depth in PROBLEMS:
        grads, params, x, y = _grads(side, channels, args.width, depth, args.batch)
        best = _best_seconds({k: jax.jit(g) for k, g in grads.items()}, (params, x, y), args.repeats)
        rows += [_row(args, name, side, channels, depth, impl, secs, args.batch, mm_gflops,
                      speedup_vs_flax=best["flax module"] / secs) for impl, secs in best.items()]
        print(format_table(rows[-len(best):], ["problem", "impl", "images_per_s", "gflops", "fraction_of_matmul",
                                               "speedup_vs_flax"]), flush=True)
    return rows


def _in_loop(grad, steps: int):
    """``steps`` gradient steps (SGD, lr 1e-3, so the carry changes) inside one ``lax.scan``, as training loops and
    DC/MTT/meta-matching inner loops run them."""
    def run(params, x, y):
        def body(p, _):
            return jax.tree_util.tree_map(lambda a, g: a - 1e-3 * g, p, grad(p, x, y)), None

        return jax.lax.scan(body, params, None, length=steps)[0]

    return jax.jit(run)


def context_rows(args, mm_gflops: float) -> list[dict]:
    """Both convolutions' gradients called plain, ``vmap``-ped over one model (how per-model evaluation training
    calls them) and inside a ``lax.scan`` loop body (``--loop-steps`` steps, time per step):
    ``slowdown_per_image`` is the time per gradient over the plain one."""
    rows = []
    repeats = min(args.repeats, 3)
    for name, side, channels, depth in PROBLEMS:
        grads, params, x, y = _grads(side, channels, args.width, depth, args.batch)
        stacked = jax.tree_util.tree_map(lambda a: a[None], params)
        for impl in IMPLS:
            g = grads[f"convnet ({impl})"]
            plain = _best_seconds({"": jax.jit(g)}, (params, x, y), args.repeats)[""]
            vm = _best_seconds({"": jax.jit(jax.vmap(g, in_axes=(0, None, None)))}, (stacked, x, y), repeats)[""]
            loop = _best_seconds({"": _in_loop(g, args.loop_steps)}, (params, x, y), repeats)[""] / args.loop_steps
            for context, secs in (("plain", plain), ("vmap", vm), ("scan body", loop)):
                rows.append(_row(args, name, side, channels, depth, impl, secs, args.batch, mm_gflops,
                                 context=context, slowdown_per_image=secs / plain))
        print(format_table(rows[-3 * len(IMPLS):], ["problem", "impl", "context", "images_per_s",
                                                    "fraction_of_matmul", "slowdown_per_image"]), flush=True)
    return rows


def parse_args(argv):
    p = parser("convnet_perf", __doc__)
    p.add_argument("--quick", action="store_true", help="batch 32, width 32, 3 repeats, 1024² matmul (name gets _quick)")
    p.add_argument("--batch", type=int, default=256, help="images per gradient")
    p.add_argument("--width", type=int, default=128, help="ConvNet channels")
    p.add_argument("--repeats", type=int, default=10, help="timed repeats (the best is reported)")
    p.add_argument("--matmul-n", type=int, default=2048, help="side of the square matmul")
    p.add_argument("--contexts", action="store_true",
                   help="instead of the table above, time both convolutions' gradients plain, vmapped and inside a "
                        "lax.scan loop (writes convnet_perf_<platform>_contexts.json)")
    p.add_argument("--loop-steps", type=int, default=2, help="gradient steps inside the lax.scan of --contexts")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.width, args.repeats, args.matmul_n = 32, 32, 3, 1024
    return args


def main(argv=None):
    args = parse_args(argv)
    out = output_dir(args)
    t0 = time.perf_counter()
    mm = matmul_gflops(args.matmul_n, args.repeats)
    print(f"matmul {args.matmul_n}²: {mm['gflops']:.1f} GFLOP/s", flush=True)
    rows = (context_rows if args.contexts else convnet_rows)(args, mm["gflops"])
    mm_after = matmul_gflops(args.matmul_n, args.repeats)  # the machine's load may change during the run
    print(f"matmul again: {mm_after['gflops']:.1f} GFLOP/s", flush=True)
    name = f"convnet_perf_{jax.devices()[0].platform}" + ("_quick" if args.quick else "") + (
        "_contexts" if args.contexts else "")
    config = {"contexts": args.contexts, "loop_steps": args.loop_steps, "batch": args.batch, "width": args.width,
              "repeats": args.repeats, "matmul_n": args.matmul_n,
              "problems": [dict(zip(("name", "side", "channels", "depth"), p, strict=True)) for p in PROBLEMS],
              "flops": "3 × forward conv + head FLOPs per image"}
    path = write_result(name, config, {"matmul": mm, "matmul_after": mm_after, "convnet": rows},
                        time.perf_counter() - t0, out_dir=out)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
