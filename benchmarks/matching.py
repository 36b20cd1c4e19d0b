"""Dataset distillation by matching on sklearn digits: DC, DSA, DM, MTT, MM, KIP vs random real / full data.

``python -m benchmarks.matching [--quick] [--convnet] [--dataset mnist|cifar10]``

``python -m benchmarks.matching --record`` wrote ``matching.json``; ``python -m
benchmarks.matching --ipcs 50 --methods DC DM MTT KIP --farzi-ipc 0 --name
matching_ipc50 --record`` wrote ``matching_ipc50.json``.

1. **Accuracy table** (the Table 4.8-style comparison of objectives; dissertation §4.6.5):
   for images per class (IPC) ∈ {1, 10} (``--ipcs 1 10 50`` adds 50), a synthetic set is distilled with each
   objective (:mod:`distill.matching`, optimised by :func:`distill.loop.run` with Adam
   on the pixels, initialised from random real images) and 5 freshly initialised
   evaluation models are trained on it (minibatch Adam, ``benchmarks._common.train_many``)
   and tested on the 359 held-out digits: mean ± std accuracy. Rows: random real
   images (the initialisation), full training data, and — at one IPC — DC, DM and KIP
   with Farzi's latent parametrization (:func:`distill.matching.latent_images`,
   random init).
2. **MTT memory vs N**: compiled temporary memory (XLA ``memory_analysis``, compiled,
   never run) of one MTT meta-gradient with the student unrolled, √N-checkpointed or
   reverse-mode Adam (:func:`distill.inner.train` modes).
3. A PNG grid of synthetic images (first image of every class, IPC 10) and the
   synthetic sets as ``.npz`` (:func:`distill.matching.save_synthetic`).

The default model (distillation and evaluation) is an MLP 128-128: on the 2 shared CPU
cores of the development machine a ConvNet step costs 20-50× an MLP step. ``--convnet``
uses the papers' ConvNet (width 32, depth 2: depth 3 pools 8×8 digits to 1×1; ``--width
128`` is the papers' width); it distils with the im2col convolution and its evaluation
models train one after another with ``lax`` convolutions (:mod:`models.convnet`).
``python -m benchmarks.matching --convnet --ipcs 1 --farzi-ipc 0 --steps 100 --skip-memory
--name matching_convnet_digits_ipc1 --record`` (and ``--ipcs 10 ... _ipc10``) wrote
``matching_convnet_digits_ipc{1,10}.json``. KIP
uses the FC-ReLU NTK on flattened images and is evaluated by training the same MLP on
its images (labels kept fixed). ``--dataset fashion_mnist`` reads the IDX files of Debian's
``dataset-fashion-mnist`` (offline); ``--dataset mnist|cifar10`` loads TFDS (not installed
here; never run on this machine) and prints the published IPC-10 anchors beside ours.

Fashion-MNIST (ConvNet-3, width 32; evaluation ConvNets with the im2col convolution, ~3× faster than ``lax``
at 28×28 on CPU; 3 evaluation models): ``python -m benchmarks.matching --dataset fashion_mnist --convnet --depth 3
--farzi-ipc 0 --skip-memory --n-eval 3 --eval-conv im2col --steps 20 --ipcs 10 --methods DC DSA --skip-full
--eval-archs convnet mlp --name matching_convnet_fashion_ipc10 --record`` (``--ipcs 1 --methods DM KIP --steps 150
... _ipc1``). ``--eval-archs convnet mlp`` evaluates every row (random real, each method, full data) under both
architectures (``by_arch`` in the JSON, and a method × architecture table); ``--method-steps DM=150`` overrides
``--steps`` per method; ``--expert-subsample`` trains MTT's experts on a class-balanced subset.

``--eval-protocol papers`` trains the evaluation models as the DC/DSA/DM papers do (SGD with momentum 0.9, lr
0.01 dropped 10× at half of 1,000 steps, weight decay 5e-4, every training image augmented with its own DSA draw,
:func:`distill.matching.augment.augment_each`); the default ``adam`` protocol (Adam, lr 1e-3, 300 steps, no
augmentation) is that of every recorded run without ``_papers_eval`` in its name. ``--random-draws N`` adds the
random-real baseline over N draws of real images (mean ± std over draws; ``--methods`` with no names runs the
baselines alone), and ``--init-draw K`` starts every method from draw K instead of draw 0.
``--dc-net-steps K`` trains the network K full-batch SGD steps on the synthetic set between two of DC/DSA's
trajectory points (``distill.matching.dc.Settings.net_steps``; DC's code: 50 at IPC 10, 1 at IPC 1); the default 1
is that of every recorded run without ``_net`` in its name. ``--dc-interleave`` updates the images at every
trajectory point, the network then training on the updated set (``Settings.interleave``; DC's Algorithm 1: T image
updates per outer step); without it (every recorded run without ``_interleave`` in its name) one outer step is one
update on the distances summed over the T points. ``--dc-net-momentum 0.5`` gives the network's SGD on the set
the momentum of the DC paper's code (``Settings.net_momentum``), ``--dc-net-augment`` trains DSA's network on
augmented images as DSA's code does (``Settings.net_augment``), ``--real-batch 256`` is DC's real batch, and
``--dc-outer-momentum 0.5 --outer-lr 0.1`` updates the images with DC's SGD (``Settings.outer_momentum``);
``--dm-outer-momentum 0.5 --outer-lr 1 --dm-dsa color_crop_cutout_flip_scale_rotate --real-batch 256`` is DM's
code (``distill.matching.dm.Settings``), and ``--eval-strategy`` sets the papers' evaluation augmentation; the
recorded runs use none of these unless their config says otherwise.

Writes ``NAME.json``, ``NAME_grid.png``, ``NAME_memory.png`` and ``NAME_sets/*.npz``
(``NAME`` = ``--name``, default ``matching[_quick][_convnet][_<dataset>]``) to ``--out``
(default ``runs/``; ``--record``: ``benchmarks/results/``).
"""

from __future__ import annotations

import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import format_table, output_dir, parser, train_many, write_result
from distill import inner, loop, trajectories
from distill.data import class_balanced_subset, load_digits, load_fashion_mnist, standardize
from distill.data.images import ImageData, load_tfds_images
from distill import matching as M
from distill.matching import dc, dm, kip, meta, mtt
from models.convnet import convnet
from models.mlp import mlp

#: Published IPC = 10 accuracies (ConvNet-3; DC/DSA/DM/MTT papers); Fashion-MNIST also at IPC 1.
ANCHORS = {
    "mnist": {"DC": 97.4, "DSA": 97.8},
    # DC paper (Zhao et al. 2021) Table 1 / DSA paper (Zhao & Bilen 2021) Table 1, ConvNet-3, IPC 10; whole
    # dataset 93.5. IPC 1: random 51.4, DC 70.5, DSA 70.6. The DM paper (Zhao & Bilen 2023) has no Fashion-MNIST.
    "fashion_mnist": {"random": 73.8, "DC": 82.3, "DSA": 84.6, "full": 93.5,
                      "ipc1": {"random": 51.4, "DC": 70.5, "DSA": 70.6}},
    "cifar10": {"DC": 44.9, "DSA": 52.1, "DM": 48.9, "MTT": 65.3},
}


def _models(args, n_classes):
    """``(distillation model, feature embedding, evaluation model)``: the ConvNet distils with
    the im2col convolution (vmapped, second-order) and is evaluated with ``lax`` convolutions
    (one model at a time) — the same function."""
    if args.convnet:
        kw = dict(width=args.width, depth=args.depth, stem_padding=args.stem_padding, init=args.init)
        return (convnet(n_classes, **kw), convnet(n_classes, features_only=True, **kw),
                convnet(n_classes, conv="lax", **kw))
    model = mlp(n_classes, hidden=(128, 128))
    return model, mlp(n_classes, hidden=(128, 128), features_only=True), model


def evaluate(model, xs, ys, xt, yt, *, n_models, steps, lr, seed=1000, sequential=False, optimizer="adam",
             augment=None):
    """Test accuracy (%) of ``n_models`` fresh models trained on (xs, ys): (mean, std, all).

    ``optimizer`` and ``augment`` are those of :func:`benchmarks._common.train_eval`.

    ``sequential`` trains the models one after another instead of vmapped over all of them
    (the recorded ConvNet runs; a vmapped ``lax`` convolution with several models' kernels
    becomes a grouped convolution).
    """
    keys = jnp.stack([jax.random.PRNGKey(seed + i) for i in range(n_models)])
    n = xs.shape[0]
    kw = dict(steps=steps, batch=min(n, 256), lr=lr, optimizer=optimizer, augment=augment)
    data = (jnp.asarray(xs), jnp.asarray(ys), xt, yt)
    if sequential:
        acc = 100 * np.concatenate([train_many(model, keys[i:i + 1], np.ones((1, n), np.float32), *data, **kw)
                                    for i in range(n_models)])
    else:
        acc = 100 * train_many(model, keys, np.ones((n_models, n), np.float32), *data, **kw)
    return float(acc.mean()), float(acc.std()), acc.tolist()


def per_class_batches(x, y, n_classes, batch, seed):
    """``batches(t)``: ``batch`` real images of every class, ``(C, B, ...)``, a pure function of t."""
    by_class = [np.flatnonzero(y == c) for c in range(n_classes)]

    def batches(t):
        rng = np.random.default_rng((seed, t))
        return jnp.asarray(np.stack([x[rng.choice(ix, batch, replace=len(ix) < batch)] for ix in by_class]))

    return batches


def row_batches(x, y, batch, seed, targets=None):
    def batches(t):
        idx = np.random.default_rng((seed, t)).choice(x.shape[0], batch, replace=False)
        return jnp.asarray(x[idx]), jnp.asarray(targets[idx] if targets is not None else y[idx])

    return batches


def method_settings(method, ipc, args, models, images):
    """``(module, Settings, batches)`` of one method: the recorded settings, and the real
    batches of the recorded runs (numpy seeds 1-4 per method, step ``t``: seed ``(s, t)``)."""
    x, y, n_classes = args.data[:3]
    model, embed = models[:2]
    base = dict(ipc=ipc, steps=args.method_steps.get(method, args.steps), lr=args.lr_farzi if images != "pixels" else args.lr, images=images)
    if method in ("DC", "DSA"):
        dsa = M.augment.DIGITS_STRATEGY if method == "DSA" else None
        settings = dc.Settings(**base, model=model, inner_steps=args.dc_inner, inner_lr=0.01, dsa=dsa,
                               net_steps=args.dc_net_steps, net_momentum=args.dc_net_momentum,
                               net_augment=args.dc_net_augment and dsa is not None, interleave=args.dc_interleave,
                               real_batch=args.real_batch, point_batches=args.dc_point_batches,
                               outer_momentum=args.dc_outer_momentum)
        return dc, settings, per_class_batches(x, y, n_classes, dc.batch_size(settings), 1)
    if method == "DM":
        return dm, dm.Settings(**base, embed=embed, real_batch=args.real_batch, dsa=args.dm_dsa,
                               outer_momentum=args.dm_outer_momentum), per_class_batches(
            x, y, n_classes, args.real_batch, 2)
    if method == "KIP":
        targets = np.asarray(M.kip_targets(jnp.asarray(y), n_classes))
        return kip, kip.Settings(**base, learn_labels=False, lam=1e-6), row_batches(x, y, 256, 3, targets=targets)
    if method == "MM":
        return meta, meta.Settings(**base, model=model, inner_steps=args.mm_steps,
                                   inner_optimizer=inner.Adam(args.mm_inner_lr, eps=args.mm_inner_eps),
                                   mode="reverse_adam", reverse_every=2), row_batches(x, y, 256, 4)
    if method == "MTT":
        return mtt, mtt.Settings(**base, model=model, student_lr=args.mtt_student_lr, syn_steps=args.mtt_syn_steps,
                                 expert_epochs=2, max_start_epoch=args.expert_epochs - 2, n_experts=args.n_experts,
                                 expert_train_epochs=args.expert_epochs, mode="reverse_adam", reverse_every=2), None
    raise ValueError(method)


def distill_one(method, ipc, args, models, experts, *, farzi=False):
    """Distil ``ipc`` images per class with ``method``; returns (images, labels, seconds, history, extra)."""
    x, y, n_classes, mean, std = args.data
    images = M.Latent(levels=args.levels, latent_dim=8, mean=tuple(np.ravel(mean).tolist()),
                      std=tuple(np.ravel(std).tolist())) if farzi else "pixels"
    module, settings, batches = method_settings(method, ipc, args, models, images)
    if module is mtt:
        data = mtt.Data(x, y, n_classes, experts)
    else:
        data = M.Data(x, y, n_classes)
    if farzi:  # random latent factors
        params = module.init(jax.random.PRNGKey(7), data, settings)
    else:  # random real images (draw --init-draw; the recorded runs': 0)
        params = module.init(jax.random.PRNGKey(0), data, settings,
                             start=class_balanced_subset(ImageData(x, y, n_classes), ipc, seed=args.init_draw).x)
    kw = {} if batches is None else {"batches": batches}
    extra = {}
    if args.checkpoint_dir is not None:
        kw["checkpoint_dir"] = os.path.join(args.checkpoint_dir, f"{method}_ipc{ipc}" + ("_farzi" if farzi else ""))
        # a resumed run times only the steps after this checkpoint (none if the run had finished)
        extra["resumed_from_step"] = loop.latest_step(kw["checkpoint_dir"])
    t0 = time.perf_counter()
    res = module.distill(jax.random.PRNGKey(11), data, settings, init_params=params, progress=True, **kw)
    if module is mtt:
        extra["student_lr"] = res.student_lr
    labels = np.asarray(M.syn_labels(n_classes, ipc))  # KIP: its fixed labels' classes
    return res.data[0], labels, time.perf_counter() - t0, res.history, extra


def _per_step(secs, steps, extra):
    """Seconds per outer step run by this invocation (``None`` if it only restored a finished run)."""
    run = steps - (extra.get("resumed_from_step") or 0)
    return secs / run if run > 0 else None


def mtt_memory(ns, *, ipc=50, n_classes=10, shape=(8, 8, 1)):
    """Compiled temp memory of one MTT meta-gradient vs student steps N, per inner mode."""
    model = mlp(n_classes, hidden=(128, 128))
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (n_classes * ipc,) + shape)
    theta = model.init(key, x[:1])
    batch = mtt.Batch(jax.tree_util.tree_map(lambda a: jnp.stack([a] * 4)[None], theta),  # (1, 4, ...)
                      jnp.zeros((0,) + shape))
    params = mtt.MTTParams(x, jnp.log(jnp.asarray(1e-3, jnp.result_type(float))))
    rows = []
    for mode in inner.MODES:
        for n in ns:
            settings = mtt.Settings(ipc=ipc, model=model, syn_steps=n, expert_epochs=2, max_start_epoch=1, mode=mode)
            t0 = time.perf_counter()
            comp = jax.jit(jax.grad(mtt.objective), static_argnums=3).lower(params, batch, key, settings).compile()
            ma = comp.memory_analysis()
            rows.append({"mode": mode, "N": n, "temp_MiB": ma.temp_size_in_bytes / 2**20,
                         "compile_s": time.perf_counter() - t0})
            print(f"  {rows[-1]}", flush=True)
    return rows


def plot_grid(path, sets, n_classes, shape):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(sets)
    fig, axes = plt.subplots(len(names), n_classes, figsize=(n_classes * 0.9, len(names) * 0.95), squeeze=False)
    for r, name in enumerate(names):
        imgs, ipc = sets[name]
        for c in range(n_classes):
            ax = axes[r][c]
            img = imgs[c * ipc]
            ax.imshow(img[..., 0] if shape[-1] == 1 else np.clip((img - img.min()) / (np.ptp(img) + 1e-9), 0, 1), cmap="gray_r")
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_memory(path, rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for mode in inner.MODES:
        rs = [r for r in rows if r["mode"] == mode]
        ax.plot([r["N"] for r in rs], [r["temp_MiB"] for r in rs], "o-", label=mode)
    ax.set(xscale="log", yscale="log", xlabel="student steps N", ylabel="compiled temp memory (MiB)",
           title="MTT meta-gradient memory (MLP, IPC 50)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_data(args):
    if args.dataset == "digits":
        train, test = load_digits(seed=0)
    elif args.dataset == "fashion_mnist":  # IDX files of Debian's dataset-fashion-mnist (offline)
        train, test = load_fashion_mnist()
    else:  # TFDS (slow; needs tensorflow_datasets)
        train = load_tfds_images(args.dataset, split="train")
        test = load_tfds_images(args.dataset, split="test")
    xtr, mean, std = standardize(train.x)
    xte, _, _ = standardize(test.x, mean, std)
    return (xtr, np.asarray(train.y), train.n_classes, mean, std), (jnp.asarray(xte), jnp.asarray(test.y))


def parse_args(argv):
    ap = parser("matching", __doc__)
    ap.add_argument("--name", default=None,
                    help="result name: NAME.json, NAME_grid.png, ... (default matching[_quick][_convnet][_<dataset>])")
    ap.add_argument("--quick", action="store_true", help="fewer distillation steps, shorter memory table")
    ap.add_argument("--convnet", action="store_true", help="ConvNet (--width, --depth) instead of the MLP")
    ap.add_argument("--width", type=int, default=32, help="ConvNet channels (the papers' ConvNet-3: 128)")
    ap.add_argument("--depth", type=int, default=2, help="ConvNet blocks (the papers' ConvNet-3: 3)")
    ap.add_argument("--stem-padding", type=int, default=1,
                    help="zero padding of the ConvNet's first convolution (the papers' PyTorch ConvNet: 3 for "
                         "single-channel images, 28×28 → 32×32 maps; 1 keeps the recorded runs)")
    ap.add_argument("--init", default="flax", choices=["flax", "torch"],
                    help="ConvNet initialisation: flax's lecun-normal kernels and zero biases (the recorded runs), "
                         "or PyTorch's U(±1/√fan_in) kernels and biases (the papers' code; "
                         "models.convnet.torch_init)")
    ap.add_argument("--dataset", default="digits", choices=["digits", "fashion_mnist", "mnist", "cifar10"],
                    help="sklearn digits or Fashion-MNIST (offline: apt-get install dataset-fashion-mnist), "
                         "or MNIST / CIFAR-10 through TFDS")
    ap.add_argument("--ipcs", type=int, nargs="+", default=None, help="images per class (default 1 10)")
    ap.add_argument("--methods", nargs="*", default=["DC", "DSA", "DM", "MTT", "MM", "KIP"],
                    help="distillation objectives, on pixels (none: only the baselines)")
    ap.add_argument("--farzi-methods", nargs="+", default=["DC", "DM", "KIP"],
                    help="objectives also run with Farzi's latent parametrization (at --farzi-ipc)")
    ap.add_argument("--farzi-ipc", type=int, default=10, help="the IPC at which --farzi-methods run")
    ap.add_argument("--steps", type=int, default=None,
                    help="outer (distillation) steps per run (default 150, 60 with --quick)")
    ap.add_argument("--outer-lr", type=float, default=0.01, help="Adam learning rate on the pixels")
    ap.add_argument("--skip-memory", action="store_true", help="skip the MTT memory-vs-N table")
    ap.add_argument("--skip-full", action="store_true", help="skip the full-training-data row")
    ap.add_argument("--eval-archs", nargs="+", choices=["convnet", "mlp"], default=None,
                    help="evaluation architectures, each giving every row an accuracy (default: the distillation "
                         "model's; the first one fills the main table)")
    ap.add_argument("--n-eval", type=int, default=5, help="evaluation models per row (mean ± std)")
    ap.add_argument("--n-experts", type=int, default=5, help="MTT expert trajectories")
    ap.add_argument("--expert-epochs", type=int, default=10, help="epochs of every MTT expert")
    ap.add_argument("--expert-subsample", type=int, default=0,
                    help="train the MTT experts on this many class-balanced real images (0: all)")
    ap.add_argument("--eval-conv", choices=["lax", "im2col"], default="lax",
                    help="convolution of the evaluation ConvNets (im2col: ~3× faster at 28×28, width 32, and ~40× "
                         "at 8×8, width 128, on CPU; lax: the recorded digits runs)")
    ap.add_argument("--method-steps", nargs="+", default=[], metavar="METHOD=STEPS",
                    help="outer steps of single methods, overriding --steps (e.g. DM=200 KIP=200)")
    ap.add_argument("--dc-inner", type=int, default=10, help="DC/DSA trajectory points per outer step")
    ap.add_argument("--dc-net-steps", type=int, default=1,
                    help="DC/DSA network SGD steps on S between trajectory points (DC's code at IPC 10: 50)")
    ap.add_argument("--dc-interleave", action="store_true",
                    help="DC/DSA update the images at every trajectory point (DC's Algorithm 1) instead of once "
                         "per outer step on the summed distances (the recorded runs)")
    ap.add_argument("--dc-net-momentum", type=float, default=0.0,
                    help="DC/DSA momentum of the network's SGD on S (the DC paper's code: 0.5; DSA's code and the recorded runs: 0)")
    ap.add_argument("--dc-net-augment", action="store_true",
                    help="DSA trains its network between matches on augmented images, as DSA's code does (the "
                         "recorded runs: un-augmented)")
    ap.add_argument("--dc-point-batches", action="store_true",
                    help="DC/DSA match every trajectory point to its own real batch, as DC's code does (the recorded "
                         "runs: one batch per outer step)")
    ap.add_argument("--dc-outer-momentum", type=float, default=None,
                    help="DC/DSA update the images with SGD(--outer-lr) and this momentum instead of Adam (DC's code: "
                         "SGD 0.1, momentum 0.5; the recorded runs: Adam)")
    ap.add_argument("--dm-outer-momentum", type=float, default=None,
                    help="DM updates the images with SGD(--outer-lr) and this momentum instead of Adam (DM's code: "
                         "SGD 1, momentum 0.5; the recorded runs: Adam)")
    ap.add_argument("--dm-dsa", default=None, metavar="STRATEGY",
                    help="DM augments real and synthetic images with one DSA draw per step (DM's code: "
                         "color_crop_cutout_flip_scale_rotate; the recorded runs: none)")
    ap.add_argument("--eval-strategy", default=None, metavar="STRATEGY",
                    help="DSA strategy of the papers' evaluation (default: color_crop_cutout_scale_rotate on "
                         "grayscale images, the DSA paper's; DM's code keeps _flip_ on every dataset)")
    ap.add_argument("--real-batch", type=int, default=64,
                    help="DC/DSA/DM real images per class per step (DC's code: 256; the recorded runs: 64)")
    ap.add_argument("--mtt-student-lr", type=float, default=1e-3, help="MTT's initial (learned) student learning rate")
    ap.add_argument("--mtt-syn-steps", type=int, default=20, help="MTT's student steps N on the synthetic set")
    ap.add_argument("--mm-inner-lr", type=float, default=1e-2,
                    help="meta-matching's inner Adam learning rate (the recorded runs: 1e-2; library default 0.3)")
    ap.add_argument("--mm-inner-eps", type=float, default=1e-8,
                    help="meta-matching's inner Adam ε (the recorded runs: 1e-8; library default 1.0, which makes "
                         "the inner Adam a smooth momentum SGD)")
    ap.add_argument("--eval-protocol", choices=["adam", "papers"], default="adam",
                    help="how evaluation models train: adam = Adam lr 1e-3, no augmentation (the recorded runs); "
                         "papers = the DC/DSA/DM papers' SGD (momentum 0.9, lr 0.01, ×0.1 at half, weight decay "
                         "5e-4) with every image DSA-augmented")
    ap.add_argument("--init-draw", type=int, default=0,
                    help="which draw of random real images the methods start from (the 'random real' row)")
    ap.add_argument("--random-draws", type=int, default=1,
                    help="also evaluate this many draws of random real images (seeds 0, 1, ...; mean ± std over "
                         "draws); 1: only the methods' start, --init-draw")
    ap.add_argument("--eval-steps", type=int, default=None,
                    help="training steps of every evaluation model (default 300 with adam, 1000 with papers)")
    ap.add_argument("--checkpoint-dir", default=None,
                    help="orbax checkpoints of every distillation under DIR/<method>_ipc<ipc>: a killed run resumes, "
                         "and a rerun with more --steps extends a finished one (the recorded seconds are then the "
                         "resumed part only)")
    args = ap.parse_args(argv)
    args.ipcs = args.ipcs or [1, 10]
    args.steps = args.steps or (60 if args.quick else 150)
    args.lr, args.lr_farzi = args.outer_lr, 0.05
    args.method_steps = {m: int(n) for m, n in (kv.split("=") for kv in args.method_steps)}
    args.mm_steps = 20
    args.levels = 17
    if args.eval_protocol == "papers":  # Zhao et al. 2021 / Zhao & Bilen 2021, 2023: 1,000 epochs, SGD, DSA
        args.eval_optimizer, args.eval_lr, args.eval_steps = "sgd", 0.01, args.eval_steps or 1000
        grayscale = args.dataset in ("digits", "fashion_mnist", "mnist")
        args.eval_augment = args.eval_strategy or (M.augment.DIGITS_STRATEGY if grayscale else M.augment.CIFAR_STRATEGY)
    else:  # the recorded runs
        if args.eval_strategy is not None:
            raise ValueError("--eval-strategy: only the papers' protocol augments (--eval-protocol papers)")
        args.eval_optimizer, args.eval_lr, args.eval_steps, args.eval_augment = "adam", 1e-3, args.eval_steps or 300, None
    for flag, strategy in (("--dm-dsa", args.dm_dsa), ("--eval-strategy", args.eval_strategy)):
        if strategy is not None:
            try:
                M.augment.parse_strategy(strategy)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{flag}: {e}") from None
    args.name = args.name or ("matching_quick" if args.quick else "matching") + ("_convnet" if args.convnet else "") + (
        "" if args.dataset == "digits" else f"_{args.dataset}")
    return args


def train_experts(args, model):
    """MTT's expert trajectories, written to and read back from the trajectory store."""
    print("expert trajectories for MTT ...", flush=True)
    x, y, n_classes = args.data[:3]
    if args.expert_subsample:
        sub = class_balanced_subset(ImageData(x, y, n_classes), args.expert_subsample // n_classes, seed=5)
        x, y = np.asarray(sub.x), np.asarray(sub.y)
    t0 = time.perf_counter()
    settings = mtt.Settings(model=model, n_experts=args.n_experts, expert_train_epochs=args.expert_epochs,
                            expert_batch_size=128, expert_lr=1e-3)
    traj = mtt.expert_trajectories(jax.random.PRNGKey(5), mtt.Data(x, y, n_classes), settings)
    with tempfile.TemporaryDirectory() as d:  # the stored (orbax) trajectories are what MTT reads
        trajectories.save(f"{d}/experts", traj)
        traj = trajectories.load(f"{d}/experts", like=jax.tree_util.tree_map(lambda a: a[0], traj))
    expert_s = time.perf_counter() - t0
    print(f"  {args.n_experts} experts × {args.expert_epochs} epochs: {expert_s:.1f}s", flush=True)
    return traj, expert_s


def eval_models(args, n_classes):
    """``{arch: evaluation model}`` for ``--eval-archs`` (default: the distillation architecture);
    the ConvNet evaluates with ``--eval-conv`` convolutions, one model at a time."""
    archs = args.eval_archs or ["convnet" if args.convnet else "mlp"]
    make = {"convnet": lambda: convnet(n_classes, conv=args.eval_conv, width=args.width, depth=args.depth,
                                       stem_padding=args.stem_padding, init=args.init),
            "mlp": lambda: mlp(n_classes, hidden=(128, 128))}
    return {arch: make[arch]() for arch in archs}


def _eval(args, xs, ys, test):
    """``(mean, std, accs)`` under the first evaluation architecture, and ``{arch: {mean, std, accs}}``."""
    by_arch = {}
    for arch, model in args.eval_models.items():
        m, s, a = evaluate(model, xs, ys, *test, n_models=args.n_eval, steps=args.eval_steps, lr=args.eval_lr,
                           sequential=arch == "convnet", optimizer=args.eval_optimizer, augment=args.eval_augment)
        by_arch[arch] = {"mean": m, "std": s, "accs": a}
    first = by_arch[next(iter(by_arch))]
    return (first["mean"], first["std"], first["accs"]), by_arch


def _draws_label(args):
    return f"random real ({args.random_draws} draws)"


def random_draws(args, ipc, test, results, known=None):
    """The random-real baseline over draws ``0 … random_draws − 1`` of ``ipc`` real images per class: per draw
    the mean over the evaluation models, then mean ± std over draws. ``known`` maps draws already evaluated (the
    methods' start, ``--init-draw``) to their ``by_arch`` result, which is reused rather than trained again.
    Adds the row to ``results`` and returns its table cell."""
    x, y, n_classes = args.data[:3]
    known = known or {}
    per_draw = [known[d] if d in known else
                _eval(args, *class_balanced_subset(ImageData(x, y, n_classes), ipc, seed=d)[:2], test)[1]
                for d in range(args.random_draws)]
    by_arch = {a: {"mean": float(np.mean([p[a]["mean"] for p in per_draw])),
                   "std": float(np.std([p[a]["mean"] for p in per_draw])),
                   "draw_means": [p[a]["mean"] for p in per_draw]} for a in per_draw[0]}
    first = by_arch[next(iter(by_arch))]
    results[_draws_label(args)] = {**first, "by_arch": by_arch}
    print(f"  ipc {ipc} {_draws_label(args)}: " + "  ".join(
        f"{a} {r['mean']:.1f}±{r['std']:.1f}" for a, r in by_arch.items()), flush=True)
    return f"{first['mean']:.1f}±{first['std']:.1f}"


def run_ipc(args, ipc, models, experts, test, out, results, grid):
    """One row of the table: random real images and every configured method at ``ipc``."""
    x, y, n_classes, mean, std = args.data
    init = class_balanced_subset(ImageData(x, y, n_classes), ipc, seed=args.init_draw)
    rnd, rnd_arch = _eval(args, init.x, init.y, test)
    row = {"ipc": ipc, "random real": f"{rnd[0]:.1f}±{rnd[1]:.1f}"}
    results[f"ipc{ipc}"] = {"random real": {"mean": rnd[0], "std": rnd[1], "accs": rnd[2], "by_arch": rnd_arch}}
    print(f"  ipc {ipc} random real: " + "  ".join(f"{a} {r['mean']:.1f}±{r['std']:.1f}" for a, r in rnd_arch.items()),
          flush=True)
    if ipc == 10:
        grid["random real"] = (init.x, ipc)
    if args.random_draws > 1:
        row[_draws_label(args)] = random_draws(args, ipc, test, results[f"ipc{ipc}"], {args.init_draw: rnd_arch})
    farzi = [(m, True) for m in args.farzi_methods] if ipc == args.farzi_ipc else []
    for method, is_farzi in [(m, False) for m in args.methods] + farzi:
        label = method + (" (Farzi)" if is_farzi else "")
        imgs, labs, secs, hist, extra = distill_one(method, ipc, args, models, experts, farzi=is_farzi)
        acc, by_arch = _eval(args, imgs, labs, test)
        row[label] = f"{acc[0]:.1f}±{acc[1]:.1f}"
        per_step = _per_step(secs, len(hist.losses), extra)
        results[f"ipc{ipc}"][label] = {"mean": acc[0], "std": acc[1], "accs": acc[2], "by_arch": by_arch,
                                        "distill_s": secs, "steps": len(hist.losses), "s_per_step": per_step,
                                        "loss_first": hist.losses[0], "loss_last": hist.losses[-1], **extra}
        M.save_synthetic(out / f"{args.name}_sets" / f"{label.replace(' ', '_').replace('(', '').replace(')', '')}_ipc{ipc}",
                         imgs, labs, {"method": method, "farzi": is_farzi, "ipc": ipc, "mean": mean, "std": std,
                                      "steps": len(hist.losses)})
        if ipc == 10:
            grid[label] = (imgs, ipc)
        archs = "  ".join(f"{a} {r['mean']:.1f}±{r['std']:.1f}" for a, r in by_arch.items())
        print(f"  ipc {ipc} {label}: {archs}  loss {hist.losses[0]:.4g} → {hist.losses[-1]:.4g}  "
              f"({secs:.1f}s, {len(hist.losses)} steps, "
              f"{'restored' if per_step is None else f'{per_step:.2f}s/step incl. compile'}) {extra}", flush=True)
    return row


def arch_table(results, ipcs):
    """Rows ``{ipc, method, arch: "mean±std", ...}``: every row under every evaluation architecture."""
    rows = []
    for ipc in ipcs:
        for label, r in results[f"ipc{ipc}"].items():
            rows.append({"ipc": ipc, "method": label,
                         **{a: f"{v['mean']:.1f}±{v['std']:.1f}" for a, v in r["by_arch"].items()}})
    return rows


def run_config(args, expert_s):
    return {"dataset": args.dataset, "model": f"convnet w{args.width} d{args.depth}" if args.convnet else "mlp 128-128",
            "stem_padding": args.stem_padding, "init": args.init, "ipcs": args.ipcs, "methods": args.methods,
            "method_steps": args.method_steps, "eval_conv": args.eval_conv, "farzi_methods": args.farzi_methods,
            "farzi_ipc": args.farzi_ipc, "outer_steps": args.steps, "outer_lr": args.lr,
            "outer_lr_farzi": args.lr_farzi, "real_batch": args.real_batch, "dc_inner_steps": args.dc_inner,
            "dc_net_steps": args.dc_net_steps, "dc_net_momentum": args.dc_net_momentum,
            "dc_net_augment": args.dc_net_augment, "dc_point_batches": args.dc_point_batches,
            "dc_outer_momentum": args.dc_outer_momentum,
            "dm_outer_momentum": args.dm_outer_momentum, "dm_dsa": args.dm_dsa,
            "dc_interleave": args.dc_interleave,
            "mm_inner_steps": args.mm_steps,
            "mtt": {"syn_steps": args.mtt_syn_steps, "expert_epochs_M": 2, "expert_total_epochs": args.expert_epochs,
                    "n_experts": args.n_experts, "expert_s": expert_s,
                    "expert_subsample": args.expert_subsample or "all"},
            "eval_archs": list(args.eval_models),
            "checkpoint_dir": args.checkpoint_dir is not None,
            "init_draw": args.init_draw, "random_draws": args.random_draws,
            "eval": {"n_models": args.n_eval, "steps": args.eval_steps, "lr": args.eval_lr,
                     "protocol": args.eval_protocol, "optimizer": args.eval_optimizer, "augment": args.eval_augment},
            "anchors": ANCHORS}


def main(argv=None):
    args = parse_args(argv)
    out = output_dir(args)
    t_start = time.perf_counter()
    args.data, test = load_data(args)
    models = _models(args, args.data[2])
    args.eval_models = eval_models(args, args.data[2])
    experts, expert_s = train_experts(args, models[0]) if "MTT" in args.methods else (None, 0.0)

    rows, results, grid = [], {}, {}
    if not args.skip_full:
        full, results["full_data_by_arch"] = _eval(args, args.data[0], args.data[1], test)
        results["full_data"] = full[:2]
        print(f"full data: {full[0]:.1f}±{full[1]:.1f}", flush=True)
    for ipc in args.ipcs:
        rows.append(run_ipc(args, ipc, models, experts, test, out, results, grid))
        if not args.skip_full:
            rows[-1]["full data"] = f"{full[0]:.1f}±{full[1]:.1f}"
    farzi = [m + " (Farzi)" for m in args.farzi_methods] if args.farzi_ipc in args.ipcs else []
    draws = [_draws_label(args)] if args.random_draws > 1 else []
    columns = ["ipc", "random real"] + draws + args.methods + farzi + ([] if args.skip_full else ["full data"])
    print(format_table(rows, columns))
    if len(args.eval_models) > 1:
        results["by_arch_table"] = arch_table(results, args.ipcs)
        print(format_table(results["by_arch_table"], ["ipc", "method"] + list(args.eval_models)))
    if args.dataset != "digits":
        print("published IPC 10 (ConvNet-3):", ANCHORS[args.dataset])

    mem_rows = []
    if not args.skip_memory:
        print("MTT memory vs N ...", flush=True)
        mem_rows = mtt_memory([10, 50] if args.quick else [10, 50, 200])
        print(format_table(mem_rows, ["mode", "N", "temp_MiB", "compile_s"]))
        plot_memory(out / f"{args.name}_memory.png", mem_rows)
    if grid:
        plot_grid(out / f"{args.name}_grid.png", grid, args.data[2], args.data[0].shape[1:])
    results["table"] = rows
    results["mtt_memory"] = mem_rows
    path = write_result(args.name, run_config(args, expert_s), results, time.perf_counter() - t_start, out_dir=out)
    print(f"wrote {path} ({time.perf_counter() - t_start:.0f}s)")
    return path


if __name__ == "__main__":
    main()
