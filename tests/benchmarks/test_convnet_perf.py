"""benchmarks.convnet_perf: the FLOP count by hand, and a tiny run end to end."""

import json

import pytest

from benchmarks import convnet_perf as bench


def test_conv_flops_known_answers():
    # 8×8×1, width 128, depth 2: conv 8²·9·1·128 + conv 4²·9·128·128, head 2²·128·10 multiply-adds
    assert bench.conv_flops(8, 1, 128, 2) == 2 * (64 * 9 * 128 + 16 * 9 * 128 * 128 + 4 * 128 * 10)
    # 28 → 14 → 7 → 3 (floor): the papers' ConvNet-3 on MNIST, 3·3·128 head inputs
    assert bench.conv_flops(28, 1, 128, 3) == 2 * (784 * 9 * 128 + 196 * 9 * 128**2 + 49 * 9 * 128**2 + 9 * 128 * 10)
    # a 1×1 map is not pooled further
    assert bench.conv_flops(2, 1, 4, 3) == 2 * (4 * 9 * 4 + 9 * 16 + 9 * 16 + 4 * 10)


def test_quick_flags():
    args = bench.parse_args(["--quick"])
    assert (args.batch, args.width, args.repeats, args.matmul_n) == (32, 32, 3, 1024)
    assert bench.parse_args([]).width == 128


@pytest.mark.slow
def test_tiny_run_writes_json(tmp_path):
    path = bench.main(["--batch", "4", "--width", "4", "--repeats", "1", "--matmul-n", "64",
                       "--out", str(tmp_path)])
    res = json.loads(path.read_text())
    rows = res["results"]["convnet"]
    assert [(r["problem"], r["impl"]) for r in rows] == [
        (p[0], impl) for p in bench.PROBLEMS for impl in ("convnet (lax)", "convnet (im2col)", "flax module")]
    for r in rows:
        assert r["images_per_s"] == pytest.approx(4 / r["seconds"])
        assert r["fraction_of_matmul"] == pytest.approx(r["gflops"] / res["results"]["matmul"]["gflops"])
    assert {"config", "hardware", "versions", "wall_time_s"} <= set(res)


@pytest.mark.slow
def test_contexts_time_the_same_gradients(tmp_path):
    import jax
    import jax.numpy as jnp
    import numpy as np

    grads, params, x, y = bench._grads(8, 1, 4, 2, 4)
    stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a, 2 * a]), params)
    leaves = jax.tree_util.tree_leaves
    for impl in bench.IMPLS:
        g = grads[f"convnet ({impl})"]
        # model i of the vmapped gradient is the plain gradient at parameters i
        vm = jax.vmap(g, in_axes=(0, None, None))(stacked, x, y)
        for i, p in enumerate((params, jax.tree_util.tree_map(lambda a: 2 * a, params))):
            for a, b in zip(leaves(jax.tree_util.tree_map(lambda a, i=i: a[i], vm)), leaves(g(p, x, y)), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        # the loop runs the same SGD steps as a python loop
        p = params
        for _ in range(2):
            p = jax.tree_util.tree_map(lambda a, d: a - 1e-3 * d, p, g(p, x, y))
        for a, b in zip(leaves(bench._in_loop(g, 2)(params, x, y)), leaves(p), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    path = bench.main(["--batch", "4", "--width", "4", "--repeats", "1", "--matmul-n", "64", "--contexts",
                       "--out", str(tmp_path)])
    assert path.name == "convnet_perf_cpu_contexts.json"
    rows = json.loads(path.read_text())["results"]["convnet"]
    assert [(r["problem"], r["impl"], r["context"]) for r in rows] == [
        (p[0], impl, c) for p in bench.PROBLEMS for impl in bench.IMPLS for c in ("plain", "vmap", "scan body")]
    for plain, *others in zip(rows[::3], rows[1::3], rows[2::3], strict=True):
        assert plain["slowdown_per_image"] == 1.0
        for r in others:
            assert r["slowdown_per_image"] == pytest.approx(r["seconds"] / plain["seconds"])
