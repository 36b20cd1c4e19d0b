"""benchmarks.matching: the evaluation-architecture flags, the method × architecture table, a tiny run."""

import json

import numpy as np
import pytest

from benchmarks import matching as bench


def test_flag_defaults_and_eval_archs():
    args = bench.parse_args([])
    assert (args.n_eval, args.n_experts, args.expert_epochs, args.expert_subsample, args.dc_inner) == (5, 5, 10, 0, 10)
    assert (args.init_draw, args.random_draws) == (0, 1)  # the recorded runs: draw 0, no extra draws
    assert list(bench.eval_models(args, 10)) == ["mlp"]
    assert list(bench.eval_models(bench.parse_args(["--convnet"]), 10)) == ["convnet"]
    args = bench.parse_args(["--eval-archs", "convnet", "mlp", "--n-eval", "3"])
    assert list(bench.eval_models(args, 10)) == ["convnet", "mlp"] and args.n_eval == 3


def test_dm_reference_flags_reach_the_settings():
    """--dm-outer-momentum / --dm-dsa / --eval-strategy: DM's code's optimizer and augmentation."""
    flags = ["--dm-outer-momentum", "0.5", "--outer-lr", "1", "--dm-dsa", "color_crop_cutout_flip_scale_rotate",
             "--real-batch", "256", "--eval-protocol", "papers", "--eval-strategy", "color_crop_scale"]
    args = bench.parse_args(flags)
    args.data = (np.zeros((4, 2, 2, 1), np.float32), np.arange(4) % 2, 2, 0.0, 1.0)
    _, settings, batches = bench.method_settings("DM", 1, args, (None, None), "pixels")
    assert (settings.outer_momentum, settings.lr, settings.dsa, settings.real_batch) == (
        0.5, 1.0, "color_crop_cutout_flip_scale_rotate", 256)
    assert batches(0).shape == (2, 256, 2, 2, 1) and args.eval_augment == "color_crop_scale"
    assert bench.parse_args(["--eval-protocol", "papers"]).eval_augment == "color_crop_cutout_scale_rotate"
    default = bench.parse_args([])
    default.data = args.data
    _, settings, _ = bench.method_settings("DM", 1, default, (None, None), "pixels")
    assert (settings.outer_momentum, settings.dsa, settings.real_batch) == (None, None, 64)  # the recorded runs
    with pytest.raises(ValueError, match="--dm-dsa"):
        bench.parse_args(["--dm-dsa", "color_blur"])
    with pytest.raises(ValueError, match="--eval-strategy"):
        bench.parse_args(["--eval-strategy", "crop"])  # the Adam protocol does not augment


def test_arch_table_rows():
    res = {"ipc1": {"random real": {"by_arch": {"convnet": {"mean": 50.04, "std": 1.26}, "mlp": {"mean": 40.0,
                                                                                                  "std": 0.0}}},
                    "DM": {"by_arch": {"convnet": {"mean": 60.0, "std": 2.0}, "mlp": {"mean": 55.55, "std": 0.45}}}}}
    assert bench.arch_table(res, [1]) == [
        {"ipc": 1, "method": "random real", "convnet": "50.0±1.3", "mlp": "40.0±0.0"},
        {"ipc": 1, "method": "DM", "convnet": "60.0±2.0", "mlp": "55.5±0.5"}]


def test_fashion_anchors():
    a = bench.ANCHORS["fashion_mnist"]
    assert (a["ipc1"]["DC"], a["DC"], a["DSA"], a["full"]) == (70.5, 82.3, 84.6, 93.5)


@pytest.mark.slow
def test_tiny_run_every_row_under_every_arch(tmp_path):
    path = bench.main(["--methods", "DM", "--ipcs", "1", "--steps", "2", "--farzi-ipc", "0", "--skip-memory",
                       "--skip-full", "--n-eval", "3", "--eval-archs", "mlp", "convnet", "--out", str(tmp_path)])
    res = json.loads(path.read_text())
    row = res["results"]["ipc1"]["DM"]
    assert set(row["by_arch"]) == {"mlp", "convnet"} and len(row["by_arch"]["convnet"]["accs"]) == 3
    assert row["mean"] == pytest.approx(np.mean(row["by_arch"]["mlp"]["accs"]))
    assert "full_data" not in res["results"] and res["config"]["eval_archs"] == ["mlp", "convnet"]
    assert (tmp_path / "matching_sets" / "DM_ipc1.npz").exists()


def test_random_draws_row_is_mean_and_std_over_draws(monkeypatch):
    from distill.data import class_balanced_subset
    from distill.data.images import ImageData

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 2, 2, 1)).astype(np.float32), np.arange(40) % 4
    args = bench.parse_args(["--random-draws", "3", "--methods"])
    assert args.methods == []
    args.data = (x, y, 4, 0.0, 1.0)
    # a stand-in evaluation whose "accuracy" identifies the images it was given
    fake = lambda args, xs, ys, test: (None, {"mlp": {"mean": float(np.sum(xs)), "std": 0.0, "accs": []}})
    monkeypatch.setattr(bench, "_eval", fake)
    res = {}
    cell = bench.random_draws(args, 2, None, res)
    sums = [float(np.sum(class_balanced_subset(ImageData(x, y, 4), 2, seed=d).x)) for d in range(3)]
    row = res["random real (3 draws)"]
    assert row["draw_means"] == sums and len(set(sums)) == 3
    assert row["mean"] == pytest.approx(np.mean(sums)) and row["std"] == pytest.approx(np.std(sums))
    assert cell == f"{np.mean(sums):.1f}±{np.std(sums):.1f}"
    # a draw already evaluated (the methods' start) is taken as given, not trained again
    calls = []
    monkeypatch.setattr(bench, "_eval", lambda args, xs, ys, test: calls.append(1) or fake(args, xs, ys, test))
    res = {}
    bench.random_draws(args, 2, None, res, {1: {"mlp": {"mean": 7.0}}})
    assert len(calls) == 2 and res["random real (3 draws)"]["draw_means"] == [sums[0], 7.0, sums[2]]


def test_checkpoint_dir_is_one_folder_per_method_and_ipc(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 2, 2, 1)).astype(np.float32), np.arange(40) % 4
    seen = []

    class Fake:  # a method module: init, distill
        @staticmethod
        def init(key, data, settings, start=None):
            return start

        @staticmethod
        def distill(key, data, settings, *, init_params, progress, **kw):
            seen.append(kw.get("checkpoint_dir"))
            return type("R", (), {"data": (init_params,), "history": None})()

    monkeypatch.setattr(bench, "method_settings", lambda method, ipc, args, models, images: (Fake, None, None))
    for flags, want in (([], [None, None]), (["--checkpoint-dir", str(tmp_path)],
                                             [str(tmp_path / "DC_ipc1"), str(tmp_path / "DM_ipc2")])):
        args = bench.parse_args(flags)
        args.data = (x, y, 4, 0.0, 1.0)
        seen.clear()
        for method, ipc in (("DC", 1), ("DM", 2)):
            images, labels, _, _, extra = bench.distill_one(method, ipc, args, None, None)
            assert images.shape == (4 * ipc, 2, 2, 1) and list(labels) == list(np.repeat(np.arange(4), ipc))
            assert extra == ({} if not flags else {"resumed_from_step": None})  # nothing to resume yet
        assert seen == want
    # seconds per step count only the steps this invocation ran
    assert bench._per_step(10.0, 200, {}) == 0.05 and bench._per_step(10.0, 200, {"resumed_from_step": None}) == 0.05
    assert bench._per_step(10.0, 200, {"resumed_from_step": 100}) == 0.1
    assert bench._per_step(1.3, 200, {"resumed_from_step": 200}) is None
