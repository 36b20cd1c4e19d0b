"""The published DM code (PyTorch) on the library's digits split, beside the library's DM.

    python -m benchmarks.matching_reference --reference PATH [--ipc 1] [--iters 2000]
    python -m benchmarks.matching_reference --reference PATH --iters 0 --sets runs/NAME_sets/DM_ipc1.npz

Runs Zhao & Bilen's DM (github.com/VICO-UoE/DatasetCondensation, a local checkout at
``--reference``; needs ``torch`` and ``torchvision``, which the library does not) on the
split, standardisation and class-balanced starting images of ``benchmarks.matching`` on
sklearn digits, so its accuracies sit beside the library's on the same 359 test digits:

- the network, augmentation and evaluation are the reference's own code, imported from
  the checkout: ``networks.ConvNet`` (ConvNet-2, width 128, instance norm, average
  pooling; the first convolution pads single-channel images by 3, and the head is sized
  for that, ``im_size=(12, 12)``, which the code needs on 8×8 inputs),
  ``utils.DiffAugment`` (DSA, one family per call) and ``utils.evaluate_synset`` (1,000
  epochs of SGD, momentum 0.9, lr 0.01 ×0.1 at half, weight decay 5e-4, DSA on every
  batch);
- the DM loop is ``main_DM.py``'s: a freshly initialised network per iteration, for each
  class the squared distance of the mean embeddings of ``--batch-real`` real and the
  synthetic images under one Siamese DSA draw, summed over classes, and SGD (lr 1,
  momentum 0.5) on the images. Seeds come from ``--seed`` instead of the clock.

Two lines of the checkout fail on PyTorch ≥ 2 and are mended in the copy this script
imports (the checkout is not changed): ``x[:] = x[0]`` becomes ``x[:] = x[0].clone()``
(the same values, without the overlapping in-place write PyTorch now refuses), and the
``view`` that flattens features becomes ``reshape``.

``--sets`` evaluates synthetic sets written by ``benchmarks.matching`` (``NAME_sets/*.npz``)
with the reference's evaluation instead of distilling. Writes ``NAME.json`` to ``--out``
(``--record``: ``benchmarks/results/``), with the images of every evaluated iteration
under ``NAME_sets/``.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import re
import sys
import tempfile
import time
import warnings

import numpy as np

from benchmarks._common import output_dir, parser, write_result
from distill.data import ImageData, class_balanced_subset, load_digits, standardize

#: DM's augmentation (main_DM.py's default, kept on every dataset).
DM_STRATEGY = "color_crop_cutout_flip_scale_rotate"


def load_reference(path: pathlib.Path):
    """``(networks, utils)`` modules of the checkout at ``path``, with the two PyTorch ≥ 2 mends."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="dm_reference_"))
    for name, fixes in (("networks", [(r"out\.view\(out\.size\(0\), -1\)", "out.reshape(out.size(0), -1)")]),
                        ("utils", [(r"^(\s+)(\w+)\[:\] = (\w+)\[0\]\s*$", r"\1\2[:] = \3[0].clone()")])):
        text = (path / f"{name}.py").read_text()
        for pattern, repl in fixes:
            text, n = re.subn(pattern, repl, text, flags=re.M)
            if n == 0:
                raise ValueError(f"--reference: {path / name}.py does not hold {pattern!r}; another version?")
        (tmp / f"{name}.py").write_text(text)
    # utils.py imports networks by name: both are importable while they load, then unlisted again
    saved = {name: sys.modules.pop(name, None) for name in ("networks", "utils")}
    sys.path.insert(0, str(tmp))
    try:
        mods = []
        for name in ("networks", "utils"):
            spec = importlib.util.spec_from_file_location(name, tmp / f"{name}.py")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
            mods.append(mod)
    finally:
        sys.path.remove(str(tmp))
        for name, mod in saved.items():
            sys.modules.pop(name, None)
            if mod is not None:
                sys.modules[name] = mod
    return tuple(mods)


def data(torch):
    """The library's digits split, standardised: ``(train ImageData, NCHW train tensor, labels,
    test loader, NHWC-to-NCHW)``."""
    train, test = load_digits(seed=0)
    xtr, mean, std = standardize(train.x)
    xte, _, _ = standardize(test.x, mean, std)
    nchw = lambda x: torch.tensor(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))  # noqa: E731
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(nchw(xte), torch.tensor(np.asarray(test.y))),
                                         batch_size=256, shuffle=False)
    train = ImageData(xtr, np.asarray(train.y), train.n_classes)
    return train, nchw(xtr), np.asarray(train.y), loader, nchw


def evaluate(ref, torch, x, y, loader, args, seed):
    """Test accuracies (%) of ``--num-eval`` reference ConvNets trained on ``(x, y)``."""
    networks, utils = ref
    a = argparse.Namespace(lr_net=0.01, epoch_eval_train=args.eval_epochs, batch_train=256, device="cpu",
                           dsa=args.eval_strategy != "none", dsa_strategy=args.eval_strategy,
                           dsa_param=utils.ParamDiffAug(), dc_aug_param=None)
    accs = []
    for i in range(args.num_eval):
        torch.manual_seed(10_000 + 100 * seed + i)
        _, _, acc = utils.evaluate_synset(i, convnet(networks), x.clone(), torch.tensor(y), loader, a)
        accs.append(100 * float(acc))
    return {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "accs": accs}


def convnet(networks):
    """The reference ConvNet-2 on 8×8 digits (its padding-3 stem, the head sized for it)."""
    return networks.ConvNet(channel=1, num_classes=10, net_width=128, net_depth=2, net_act="relu",
                            net_norm="instancenorm", net_pooling="avgpooling", im_size=(12, 12))


def dm_step(ref, torch, syn, opt, xtr, by_class, rng, args):
    """One iteration of main_DM.py's loop; returns the loss summed over classes."""
    networks, utils = ref
    net = convnet(networks)
    net.train()
    for p in net.parameters():
        p.requires_grad = False
    loss = torch.tensor(0.0)
    for c, ix in enumerate(by_class):
        real = xtr[rng.permutation(ix)[:args.batch_real]]
        s = syn[c * args.ipc:(c + 1) * args.ipc]
        if args.strategy != "none":
            seed = int(rng.integers(100_000))
            real = utils.DiffAugment(real, args.strategy, seed=seed, param=args.dsa_param)
            s = utils.DiffAugment(s, args.strategy, seed=seed, param=args.dsa_param)
        loss = loss + torch.sum((net.embed(real).detach().mean(0) - net.embed(s).mean(0)) ** 2)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def distill(ref, torch, args, out):
    """DM from ``--init-draw``'s random real images for ``--iters`` iterations, evaluated at ``--eval-at``."""
    train, xtr, ytr, loader, nchw = data(torch)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    start = class_balanced_subset(train, args.ipc, seed=args.init_draw)
    syn = nchw(np.asarray(start.x)).clone().requires_grad_(True)
    ysyn = np.asarray(start.y, np.int64)
    opt = torch.optim.SGD([syn], lr=args.lr_img, momentum=0.5)
    args.dsa_param = ref[1].ParamDiffAug()
    by_class = [np.flatnonzero(ytr == c) for c in range(10)]
    rows, losses, t0 = [], [], time.perf_counter()
    for it in range(args.iters + 1):
        if it in args.eval_at or it == args.iters:
            t_eval = time.perf_counter()
            r = evaluate(ref, torch, syn.detach(), ysyn, loader, args, it)
            rows.append({"iteration": it, **r, "distill_s": t_eval - t0, "eval_s": time.perf_counter() - t_eval})
            print(f"iteration {it}: {r['mean']:.1f} ± {r['std']:.1f}", flush=True)
            np.savez(out / f"DM_ipc{args.ipc}_it{it}.npz", images=np.transpose(syn.detach().numpy(), (0, 2, 3, 1)),
                     labels=ysyn.astype(np.int32))
            t0 += time.perf_counter() - t_eval  # distill_s counts distillation only
        if it < args.iters:
            losses.append(dm_step(ref, torch, syn, opt, xtr, by_class, rng, args) / 10)
    return {"evaluations": rows, "loss_per_class": losses[::50], "s_per_iteration": (
        rows[-1]["distill_s"] / max(args.iters, 1))}


def parse_args(argv):
    ap = parser("matching_reference", __doc__)
    ap.add_argument("--reference", required=True, type=pathlib.Path,
                    help="a checkout of github.com/VICO-UoE/DatasetCondensation (networks.py, utils.py)")
    ap.add_argument("--name", default=None, help="result name (default matching_reference_dm_digits_ipc<IPC>)")
    ap.add_argument("--ipc", type=int, default=1, help="images per class")
    ap.add_argument("--iters", type=int, default=2000, help="DM iterations (the reference's default: 20,000)")
    ap.add_argument("--eval-at", type=int, nargs="*", default=[0, 500, 1000],
                    help="iterations at which the set is also evaluated (the last always is)")
    ap.add_argument("--num-eval", type=int, default=10, help="evaluation ConvNets per point (the reference: 20)")
    ap.add_argument("--eval-epochs", type=int, default=1000, help="epochs of every evaluation ConvNet")
    ap.add_argument("--strategy", default=DM_STRATEGY, help="DSA strategy of the matching ('none': off)")
    ap.add_argument("--eval-strategy", default=DM_STRATEGY, help="DSA strategy of the evaluation ('none': off)")
    ap.add_argument("--batch-real", type=int, default=256, help="real images per class per iteration")
    ap.add_argument("--lr-img", type=float, default=1.0, help="SGD learning rate on the images (momentum 0.5)")
    ap.add_argument("--seed", type=int, default=0, help="networks, batches and augmentation draws")
    ap.add_argument("--init-draw", type=int, default=0, help="class-balanced draw of the starting real images")
    ap.add_argument("--sets", nargs="+", default=None, metavar="NPZ",
                    help="evaluate these synthetic sets (benchmarks.matching's NAME_sets/*.npz) instead")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args(argv)
    for flag, value, low in (("--ipc", args.ipc, 1), ("--iters", args.iters, 0), ("--num-eval", args.num_eval, 1),
                             ("--eval-epochs", args.eval_epochs, 1), ("--batch-real", args.batch_real, 1),
                             ("--threads", args.threads, 1)):
        if value < low:
            raise ValueError(f"{flag}: expected at least {low}, got {value}")
    args.name = args.name or f"matching_reference_dm_digits_ipc{args.ipc}"
    return args


def main(argv=None):
    args = parse_args(argv)
    import torch  # optional: only this benchmark needs it

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Default grid_sample and affine_grid")  # the reference's, as written
    t0 = time.perf_counter()
    ref = load_reference(args.reference)
    out = output_dir(args)
    if args.sets:
        _, _, _, loader, nchw = data(torch)
        results = {}
        for i, path in enumerate(args.sets):
            s = np.load(path)
            results[str(path)] = r = evaluate(ref, torch, nchw(s["images"]), np.asarray(s["labels"], np.int64),
                                              loader, args, 1000 + i)
            print(f"{path}: {r['mean']:.1f} ± {r['std']:.1f}", flush=True)
    else:
        sets = out / f"{args.name}_sets"
        sets.mkdir(exist_ok=True)
        results = distill(ref, torch, args, sets)
    config = {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()
              if k not in ("out", "record", "dsa_param")}
    config["torch"] = torch.__version__
    print("wrote", write_result(args.name, config, results, time.perf_counter() - t0, out))


if __name__ == "__main__":
    main()
