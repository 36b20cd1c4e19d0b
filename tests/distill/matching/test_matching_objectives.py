"""distill.matching: DC/DM/MTT/MM/KIP objectives against hand computations, numpy, finite
differences, mode equivalence, loss decrease with loop.run, validation and 8-device equality;
the experts against the hand-written training loop they replaced."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distill import inner, loop, trajectories
from distill import matching as M
from distill.matching import augment, dc, dm, kip, meta, mtt
from models import krr
from models.kernels import KernelSpec
from models.mlp import mlp
from models.model_fns import ModelFns

C, IPC, HW = 3, 2, 4


def tanh_model(n_classes=C, hidden=6):
    """A smooth classifier (no exactly-zero gradients) for exact comparisons."""

    def init(key, x):
        d = int(np.prod(x.shape[1:]))
        k1, k2 = jax.random.split(key)
        f = x.dtype
        return {"w1": 0.5 * jax.random.normal(k1, (d, hidden), f), "b1": jnp.zeros(hidden, f),
                "w2": 0.5 * jax.random.normal(k2, (hidden, n_classes), f), "b2": jnp.zeros(n_classes, f)}

    def apply(p, x, *, train=False):
        h = jnp.tanh(x.reshape((x.shape[0], -1)) @ p["w1"] + p["b1"])
        return h @ p["w2"] + p["b2"]

    return ModelFns(init, apply)


@functools.lru_cache(maxsize=None)
def _tiny_numpy(n_per, seed):
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(C, HW, HW, 1))
    x = np.concatenate([protos[c] + 0.5 * rng.normal(size=(n_per, HW, HW, 1)) for c in range(C)])
    return x, np.repeat(np.arange(C), n_per).astype(np.int32)


def tiny_data(dtype=jnp.float32, n_per=12, seed=0):
    """C classes of 4×4×1 images: a class-specific pattern + noise."""
    x, y = _tiny_numpy(n_per, seed)
    return jnp.asarray(x, dtype), jnp.asarray(y)


# Indexing in numpy: eager jax gathers would each compile a small XLA program.
def per_class(x, y, b=8):
    xn, yn = np.asarray(x), np.asarray(y)
    return jnp.asarray(np.stack([xn[np.flatnonzero(yn == c)[:b]] for c in range(C)]))


def syn_init(x, y):
    yn = np.asarray(y)
    idx = np.concatenate([np.flatnonzero(yn == c)[-IPC:] for c in range(C)])
    return jnp.asarray(np.asarray(x)[idx])


def leaf_at(tree, *index):
    """``a[index]`` of every leaf, indexed in numpy (no eager jax gathers)."""
    return jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a)[index]), tree)


# ----------------------------------------------------------------------------- DC


def test_layer_distance_hand_computed():
    md = jax.jit(M.match_distance, static_argnames="include_bias")
    g_real = jnp.asarray([[1.0, 1.0], [0.0, 1.0]])  # columns (output channels): (1,0), (1,1)
    g_syn = jnp.asarray([[0.0, 2.0], [1.0, 2.0]])  # (0,1) ⟂ (1,0) → 1;  (2,2) ∥ (1,1) → 0
    np.testing.assert_allclose(M.layer_distance(g_real, g_syn), 1.0, atol=1e-6)
    # biases are ignored unless include_bias; a bias pointing the opposite way adds 1 − (−1) = 2
    gr = {"kernel": g_real, "bias": jnp.asarray([1.0, 0.0])}
    gs = {"kernel": g_syn, "bias": jnp.asarray([-1.0, 0.0])}
    np.testing.assert_allclose(md(gr, gs), 1.0, atol=1e-6)
    np.testing.assert_allclose(md(gr, gs, include_bias=True), 3.0, atol=1e-5)


def test_match_distance_conv_kernel_matches_numpy(x64):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 3, 2, 5)), rng.normal(size=(3, 3, 2, 5))
    ref = sum(1 - a[..., i].ravel() @ b[..., i].ravel() / (np.linalg.norm(a[..., i]) * np.linalg.norm(b[..., i]) + 1e-6)
              for i in range(5))
    # one compilation: the distance, and its gradient at a dead unit (all-zero gradient
    # column: distance 1, and the gradient must stay finite)
    value_and_grad = jax.jit(jax.value_and_grad(lambda s, a_: M.match_distance({"k": a_}, {"k": s})))
    np.testing.assert_allclose(value_and_grad(jnp.asarray(b), jnp.asarray(a))[0], ref, rtol=1e-10)
    b[..., 0] = 0
    g = value_and_grad(jnp.asarray(b), jnp.asarray(a))[1]
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).max()) > 0


def test_match_distance_validation():
    with pytest.raises(ValueError, match="g_syn"):
        M.match_distance({"a": jnp.ones((2, 2))}, {"b": jnp.ones((2, 2))})
    with pytest.raises(ValueError, match="g_syn"):
        M.match_distance({"a": jnp.ones((2, 2))}, {"a": jnp.ones((2, 3))})


def test_dc_objective_one_step_equals_manual(x64):
    x, y = tiny_data(jnp.float64)
    model = tanh_model()
    xs, xr = syn_init(x, y), per_class(x, y)
    settings = dc.Settings(ipc=IPC, model=model, inner_steps=1)

    @jax.jit  # loss and hand-written reference in one compilation
    def loss_and_ref(xs, xr, key):
        loss = dc.objective(xs, xr, key, settings)
        theta = model.init(jax.random.split(key, 3)[1], xs[:1])
        grad = lambda xx, c: jax.grad(lambda th: M.xent(model.apply(th, xx), jnp.full(xx.shape[0], c)))(theta)
        ref = sum(M.match_distance(grad(xr[c], c), grad(xs[c * IPC:(c + 1) * IPC], c)) for c in range(C))
        return loss, ref

    loss, ref = loss_and_ref(xs, xr, jax.random.key(3))
    assert float(ref) > 1e-3  # the comparison is not 0 == 0
    np.testing.assert_allclose(loss, ref, rtol=1e-10)


def test_dc_net_steps_match_after_k_sgd_steps_on_s(x64):
    """net_steps = K: point t+1 is the network after K more full-batch SGD steps on S
    (DC's inner_loop); the last point's update is skipped, not matched. With point_batches,
    point t matches the t-th block of the real batch (DC's fresh batch per outer_loop)."""
    x, y = tiny_data(jnp.float64)
    model = tanh_model()
    xs, xr = syn_init(x, y), per_class(x, y)
    settings = dc.Settings(ipc=IPC, model=model, inner_steps=2, net_steps=3, inner_lr=0.5, point_batches=True)
    y_syn = jnp.repeat(jnp.arange(C), IPC)

    key = jax.random.key(3)
    loss = jax.jit(lambda xs, xr: dc.objective(xs, xr, key, settings))(xs, xr)
    grad = lambda th, xx, c: jax.grad(lambda t: M.xent(model.apply(t, xx), jnp.full(xx.shape[0], c)))(th)
    dist = jax.jit(lambda th, xb: sum(M.match_distance(grad(th, xb[c], c), grad(th, xs[c * IPC:(c + 1) * IPC], c))
                                      for c in range(C)))
    sgd = jax.jit(lambda th: jax.tree_util.tree_map(
        lambda p, gg: p - 0.5 * gg, th, jax.grad(lambda t: M.xent(model.apply(t, xs), y_syn))(th)))
    thetas = [model.init(jax.random.split(key, 3)[1], xs[:1])]
    for _ in range(3):
        thetas.append(sgd(thetas[-1]))
    blocks = xr[:, :4], xr[:, 4:]  # 8 real images per class: 4 per point
    ref = (dist(thetas[0], blocks[0]) + dist(thetas[3], blocks[1])) / 2
    np.testing.assert_allclose(loss, ref, rtol=1e-10)
    one_step = (dist(thetas[0], blocks[0]) + dist(thetas[1], blocks[1])) / 2
    assert abs(float(ref) - float(one_step)) > 1e-3  # K = 3 is not the single step: the match is not blind to K
    swapped = (dist(thetas[0], blocks[1]) + dist(thetas[3], blocks[0])) / 2
    assert abs(float(ref) - float(swapped)) > 1e-3  # nor to which block each point matches
    with pytest.raises(ValueError, match="settings.net_steps"):
        dc.objective(xs, xr, key, settings._replace(net_steps=0))
    with pytest.raises(ValueError, match="^batch: point_batches"):
        dc.objective(xs, xr[:, :7], key, settings)
    with pytest.raises(ValueError, match="settings.point_batches"):
        dc.objective(xs, xr, key, settings._replace(point_batches="yes"))
    data = M.Data(x, y, C)  # sample_batch draws a block per point
    assert dc.sample_batch(key, data, settings._replace(real_batch=3)).shape == (C, 6, HW, HW, 1)
    assert dc.sample_batch(key, data, dc.Settings(ipc=IPC, inner_steps=2, real_batch=3)).shape == (C, 3, HW, HW, 1)
    assert dc.batch_size(settings._replace(real_batch=3)) == 6 and dc.batch_size(settings._replace(
        point_batches=False, real_batch=3)) == 3


def test_interleaved_step_with_network_momentum_and_augmentation(x64):
    """interleave (DC's Algorithm 1): at each point S takes one optimizer step on that
    point's distance (DSA: one ω shared by both sides), and the network then trains K
    steps on the updated S, with SGD momentum whose buffer carries over from one point to
    the next (DC's optimizer_net) and, with net_augment, every image augmented by its own
    draw (DSA's code); with point_batches, point t matches its own block of real images."""
    x, y = tiny_data(jnp.float64)
    model, strategy = tanh_model(), "cutout"
    xs, xr = syn_init(x, y), per_class(x, y, b=9)  # 3 real images per class for each of the 3 points
    settings = dc.Settings(ipc=IPC, model=model, inner_steps=3, net_steps=2, inner_lr=0.5, net_momentum=0.7,
                           dsa=strategy, net_augment=True, interleave=True, point_batches=True)
    y_syn, eta, key = jnp.repeat(jnp.arange(C), IPC), 0.3, jax.random.key(5)
    momentum = optax.sgd(eta, momentum=0.5)

    def apply(p, o, g):
        u, o = momentum.update(g, o, p)
        return optax.apply_updates(p, u), o

    p, _, loss = jax.jit(lambda xs, xr: dc.interleaved_step(xs, momentum.init(xs), xr, key, apply, settings))(xs, xr)
    # The reference: a Python loop over two compiled pieces (one match, one network step),
    # not one unrolled program, which would take three times as long to compile.
    _, k_init, k_aug = jax.random.split(key, 3)
    theta = model.init(k_init, xs[:1])
    grad = lambda th, xx, c: jax.grad(lambda t: M.xent(model.apply(t, xx), jnp.full(xx.shape[0], c)))(th)

    @jax.jit
    def match(th, s, xb, t):  # Σ_c D at point t on real images xb, and its gradient in S (a vmap over the classes)
        def dist(s):
            om = augment.sample(jax.random.fold_in(k_aug, t), strategy)
            one = lambda xr_c, xs_c, c: M.match_distance(grad(th, augment.apply(om, xr_c, strategy), c),
                                                         grad(th, augment.apply(om, xs_c, strategy), c))
            return jnp.sum(jax.vmap(one)(xb, s.reshape(C, IPC, *s.shape[1:]), jnp.arange(C)))

        return jax.value_and_grad(dist)(s)

    @jax.jit
    def net_step(th, buf, s, k):  # PyTorch's SGD on S augmented per image: buf ← μ·buf + g, θ ← θ − η·buf
        sa = augment.augment_each(k, s, strategy)
        gt = jax.grad(lambda th_: M.xent(model.apply(th_, sa), y_syn))(th)
        buf = jax.tree_util.tree_map(lambda b, gg: 0.7 * b + gg, buf, gt)
        return jax.tree_util.tree_map(lambda a, b: a - 0.5 * b, th, buf), buf, jnp.max(jnp.abs(sa - s))

    s, v, ds, moved = xs, jnp.zeros_like(xs), [], []
    buf = jax.tree_util.tree_map(jnp.zeros_like, theta)
    for t in range(3):
        d, g = match(theta, s, xr[:, 3 * t:3 * t + 3], t)
        v = 0.5 * v + g  # optax's trace: v ← μ·v + g, S ← S − η·v
        s, ds = s - eta * v, ds + [d]
        for i in range(2 if t < 2 else 0):  # keys T + t, step i
            theta, buf, m = net_step(theta, buf, s, jax.random.fold_in(jax.random.fold_in(k_aug, 3 + t), i))
            moved.append(float(m))

    s_ref, loss_ref = s, sum(ds) / 3
    assert min(moved) > 0.1  # every network step saw augmented images
    np.testing.assert_allclose(p, s_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-10)
    with pytest.raises(ValueError, match="settings.interleave"):
        dc.interleaved_step(xs, momentum.init(xs), xr, key, apply, settings._replace(interleave="yes"))
    with pytest.raises(ValueError, match="settings.net_momentum"):
        dc.interleaved_step(xs, momentum.init(xs), xr, key, apply, settings._replace(net_momentum=-0.1))
    with pytest.raises(ValueError, match="settings.net_augment"):
        dc.objective(xs, xr, key, settings._replace(dsa=None))


@pytest.mark.parametrize("method", ["dc", "dm"])
def test_outer_optimizer_is_pytorch_sgd_and_distill_uses_it(monkeypatch, method):
    """outer_momentum: S is updated with DC's / DM's image optimizer, PyTorch's SGD
    ``v ← μv + g, S ← S − lr·v`` (the default: Adam), and distill's run hands that optimizer
    to the loop. (The interleaved test above checks the loop's use of it in float64.)"""
    module = {"dc": dc, "dm": dm}[method]
    settings = module.Settings(ipc=IPC, steps=2, lr=0.1, outer_momentum=0.5, real_batch=4,
                               **({"model": tanh_model()} if method == "dc" else {}))
    grads = np.random.default_rng(0).normal(size=(3, 5))

    def updates(opt):
        s, state, out = np.ones(5), opt.init(np.ones(5)), []
        for g in grads:
            u, state = opt.update(g, state, s)
            s = s + np.asarray(u)
            out.append(s)
        return np.stack(out)

    s, v, ref = np.ones(5), np.zeros(5), []
    for g in grads:
        v = 0.5 * v + g
        s = s - 0.1 * v
        ref.append(s)
    np.testing.assert_allclose(updates(module.outer_optimizer(settings)), np.stack(ref), rtol=1e-6)
    adam = updates(module.outer_optimizer(settings._replace(outer_momentum=None)))
    np.testing.assert_allclose(adam[0], 1 - 0.1 * np.sign(grads[0]), rtol=1e-5)  # Adam's first step: lr·sign(g)
    seen = []

    def fake_loop_run(objective, params, optimizer, batches, **kw):  # the optimizer that reaches the loop
        seen.append(optimizer)
        return params, M.common.loop.History([], [], [], [], -1, float("nan"), False)

    monkeypatch.setattr(M.common.loop, "run", fake_loop_run)
    x, y = tiny_data()
    module.distill(jax.random.key(0), M.Data(x, y, C), settings)
    np.testing.assert_allclose(updates(seen[0]), np.stack(ref), rtol=1e-6)
    with pytest.raises(ValueError, match="settings.outer_momentum"):
        module.outer_optimizer(settings._replace(outer_momentum=1.5))
    with pytest.raises(ValueError, match="settings.outer_momentum"):
        module.init(jax.random.key(0), M.Data(x, y, C), settings._replace(outer_momentum=-0.1))


def test_dc_validation():
    x, y = tiny_data()
    settings = dc.Settings(ipc=IPC, model=mlp(C, hidden=(4,)))
    with pytest.raises(ValueError, match="batch"):
        dc.objective(syn_init(x, y), x[:8], jax.random.key(0), settings)
    with pytest.raises(ValueError, match="syn_params"):
        dc.objective(x[:5], per_class(x, y), jax.random.key(0), settings)
    with pytest.raises(ValueError, match="settings.inner_steps"):
        dc.objective(syn_init(x, y), per_class(x, y), jax.random.key(0), settings._replace(inner_steps=0))
    with pytest.raises(ValueError, match="settings.images"):
        dc.objective(syn_init(x, y), per_class(x, y), jax.random.key(0), settings._replace(images="latent"))
    with pytest.raises(TypeError, match="settings.model"):
        dc.objective(syn_init(x, y), per_class(x, y), jax.random.key(0), settings._replace(model=3))
    with pytest.raises(ValueError, match="strategy"):
        dc.objective(syn_init(x, y), per_class(x, y), jax.random.key(0), settings._replace(dsa="blur"))
    with pytest.raises(ValueError, match="settings.ipc"):
        dc.init(jax.random.key(0), M.Data(x, y, C), settings._replace(ipc=13))
    with pytest.raises(TypeError, match="data"):
        dc.init(jax.random.key(0), (x, y), settings)
    with pytest.raises(TypeError, match="settings"):
        dc.init(jax.random.key(0), M.Data(x, y, C), dm.Settings())


def test_init_and_sample_batch_draws():
    x, y = tiny_data()
    data, settings = M.Data(x, y, C), dc.Settings(ipc=IPC, real_batch=5)
    s0 = np.asarray(dc.init(jax.random.key(0), data, settings))
    # ipc real images of every class, class-grouped; a pure function of the key
    for c in range(C):
        for img in s0[c * IPC:(c + 1) * IPC]:
            assert any(np.array_equal(img, r) for r in np.asarray(x)[np.asarray(y) == c])
    np.testing.assert_array_equal(s0, dc.init(jax.random.key(0), data, settings))
    assert not np.array_equal(s0, dc.init(jax.random.key(1), data, settings))
    start = np.asarray(syn_init(x, y))
    np.testing.assert_array_equal(dc.init(jax.random.key(0), data, settings, start=start), start)
    b = np.asarray(dc.sample_batch(jax.random.key(2), data, settings))
    chex.assert_shape(b, (C, 5, HW, HW, 1))
    for c in range(C):
        assert all(any(np.array_equal(img, r) for r in np.asarray(x)[np.asarray(y) == c]) for img in b[c])
    xb, tb = kip.sample_batch(jax.random.key(2), data, kip.Settings(ipc=IPC, real_batch=7))
    chex.assert_shape((xb, tb), ((7, HW, HW, 1), (7, C)))
    xm, ym = meta.sample_batch(jax.random.key(2), data, meta.Settings(ipc=IPC, real_batch=100))
    assert xm.shape[0] == x.shape[0] and len(set(np.asarray(ym).tolist())) == C  # capped at n, distinct rows


# ----------------------------------------------------------------------------- DM


def test_mmd_matches_numpy_kernel_form(x64):
    rng = np.random.default_rng(1)
    fr, fs = rng.normal(size=(7, 4)), rng.normal(size=(3, 4)) + 0.3
    ref = (fr @ fr.T).mean() + (fs @ fs.T).mean() - 2 * (fr @ fs.T).mean()
    np.testing.assert_allclose(M.mmd(jnp.asarray(fr), jnp.asarray(fs)), ref, rtol=1e-10)
    with pytest.raises(ValueError, match="f_syn"):
        M.mmd(jnp.asarray(fr), jnp.ones((3, 5)))
    with pytest.raises(ValueError, match="f_real"):
        M.mmd(jnp.ones(4), jnp.ones((3, 4)))


def test_dm_objective_equals_manual(x64):
    x, y = tiny_data(jnp.float64)
    embed = tanh_model(n_classes=5)  # a random 5-d embedding
    xs, xr = syn_init(x, y), per_class(x, y)
    key = jax.random.key(4)
    settings = dm.Settings(ipc=IPC, embed=embed)

    @jax.jit  # loss and the embeddings of the reference in one compilation
    def loss_and_features(xs, xr, key):
        loss = dm.objective(xs, xr, key, settings)
        theta = embed.init(jax.random.split(key, 3)[1], xs[:1])
        return loss, embed.apply(theta, xr.reshape((-1,) + xr.shape[2:])), embed.apply(theta, xs)

    loss, fr, fs = map(np.asarray, loss_and_features(xs, xr, key))
    fr = fr.reshape(C, -1, fr.shape[-1])
    ref = sum(np.sum((fr[c].mean(0) - fs[c * IPC:(c + 1) * IPC].mean(0)) ** 2) for c in range(C))
    assert ref > 1e-3
    np.testing.assert_allclose(loss, ref, rtol=1e-10)
    with pytest.raises(TypeError, match="settings.embed"):
        dm.objective(xs, xr, key, settings._replace(embed="mlp"))


# ----------------------------------------------------------------------------- MTT


def _mtt_setup(dtype=jnp.float64):
    x, y = tiny_data(dtype)
    model = tanh_model()
    xs, ys = syn_init(x, y), M.syn_labels(C, IPC)
    start = jax.jit(model.init)(jax.random.key(1), xs[:1])
    return model, xs, ys, start


def _mtt_params(xs, lr):
    return mtt.MTTParams(xs, jnp.log(jnp.asarray(lr, xs.dtype)))


def test_mtt_objective_zero_when_student_reproduces_expert(x64):
    model, xs, ys, start = _mtt_setup()
    lr, n = 0.05, 4
    # the learnable-lr student is Adam(α, ε/α) on θ (module docstring): make that the expert
    target = jax.jit(lambda th: inner.train(model.apply, M.xent, th, (xs, ys), steps=n,
                                            optimizer=inner.Adam(lr, eps=1e-8 / lr), mode="unrolled"))(start)
    traj = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b])[None], start, target)  # (1, 2, ...)
    batch = mtt.Batch(traj, jnp.zeros((0,) + xs.shape[1:]))
    settings = mtt.Settings(ipc=IPC, model=model, syn_steps=n, expert_epochs=1, max_start_epoch=0, mode="reverse_adam")
    loss = jax.jit(mtt.objective, static_argnums=3)
    assert float(loss(_mtt_params(xs, lr), batch, jax.random.key(0), settings)) < 1e-20
    # another learning rate does not reproduce it (same compiled function: α is traced)
    assert float(loss(_mtt_params(xs, 2 * lr), batch, jax.random.key(0), settings)) > 1e-3


# Each mode compiles a gradient through inner.train (~20 s on 2 busy cores): the default run
# compares the two most different ones (autodiff of the scan vs the reverse-mode-Adam custom
# VJP); the slow variant adds the checkpointed mode (checkpointed == unrolled for
# inner.train itself is in tests/distill/test_inner.py).
FAST_MODES = ("unrolled", "reverse_adam")
MODE_SETS = [FAST_MODES, pytest.param(inner.MODES, marks=pytest.mark.slow, id="all")]


@pytest.mark.slow
@pytest.mark.parametrize("modes", MODE_SETS, ids=["fast", "all"])
def test_mtt_gradient_same_in_every_mode(x64, modes):
    model, xs, ys, start = _mtt_setup()
    traj = jax.tree_util.tree_map(lambda a: jnp.asarray(np.stack([a, a + 0.1])[None]), start)
    batch = mtt.Batch(traj, jnp.zeros((0,) + xs.shape[1:]))
    p = _mtt_params(xs, 0.02)
    grads = {}
    for mode in modes:
        settings = mtt.Settings(ipc=IPC, model=model, syn_steps=6, expert_epochs=1, max_start_epoch=0, mode=mode)
        grads[mode] = jax.jit(jax.grad(mtt.objective), static_argnums=3)(p, batch, jax.random.key(0), settings)
    for mode in modes[1:]:
        chex.assert_trees_all_close(grads[mode], grads["unrolled"], rtol=1e-7, atol=1e-12)
    assert abs(float(grads["unrolled"].log_lr)) > 0


def _reference_experts(key, model, x, y, *, n_experts, n_epochs, batch_size, lr):
    """The hand-written expert loop that distill.train.scan replaced (same draws)."""
    opt = optax.adam(lr)
    n_batches = x.shape[0] // batch_size

    def one_expert(k):
        k_init, k_shuf = jax.random.split(k)
        theta0 = model.init(k_init, x[:1])

        def epoch(carry, ke):
            theta, st = carry
            perm = jax.random.permutation(ke, x.shape[0])[: n_batches * batch_size].reshape(n_batches, batch_size)

            def step(c, idx):
                th, s = c
                g = jax.grad(lambda p: M.xent(model.apply(p, x[idx]), y[idx]))(th)
                u, s = opt.update(g, s, th)
                return (jax.tree_util.tree_map(lambda a, b: a + b, th, u), s), None

            (theta, st), _ = jax.lax.scan(step, (theta, st), perm)
            return (theta, st), theta

        _, thetas = jax.lax.scan(epoch, (theta0, opt.init(theta0)), jax.random.split(k_shuf, n_epochs))
        return jax.tree_util.tree_map(lambda a0, a: jnp.concatenate([a0[None], a]), theta0, thetas)

    return jax.jit(jax.vmap(one_expert))(jax.random.split(key, n_experts))


@pytest.mark.slow  # the MTT shape case exercises the expert path by default
def test_expert_trajectories_identical_to_hand_loop_and_stored(tmp_path):
    x, y = tiny_data()
    model = mlp(C, hidden=(8,))
    settings = mtt.Settings(model=model, n_experts=2, expert_train_epochs=3, expert_batch_size=12, expert_lr=1e-2)
    traj = mtt.expert_trajectories(jax.random.key(0), mtt.Data(x, y, C), settings)
    chex.assert_shape(traj["head"]["kernel"], (2, 4, 8, C))
    ref = _reference_experts(jax.random.key(0), model, x, y, n_experts=2, n_epochs=3, batch_size=12, lr=1e-2)
    chex.assert_trees_all_equal(traj, ref)  # same draws, same updates
    init = jax.jit(model.init)(jax.random.split(jax.random.split(jax.random.key(0), 2)[0])[0], x[:1])
    np.testing.assert_array_equal(traj["head"]["kernel"][0, 0], init["head"]["kernel"])
    # training moves the expert and lowers its training loss
    xent_on_x = jax.jit(lambda th: M.xent(model.apply(th, x), y))
    loss = lambda t: float(xent_on_x(leaf_at(traj, 0, t)))
    assert loss(3) < loss(0)
    trajectories.save(tmp_path / "experts", traj)
    back = trajectories.load(tmp_path / "experts", like=jax.tree_util.tree_map(lambda a: a[0], traj))
    chex.assert_trees_all_equal(back, traj)
    with pytest.raises(ValueError, match="data.y"):
        mtt.expert_trajectories(jax.random.key(0), mtt.Data(x, y[:-1], C), settings)
    with pytest.raises(ValueError, match="settings.expert_train_epochs"):
        mtt.expert_trajectories(jax.random.key(0), mtt.Data(x, y, C), settings._replace(expert_train_epochs=0))


def test_mtt_validation():
    model, xs, ys, start = _mtt_setup(jnp.float32)
    traj = jax.tree_util.tree_map(lambda a: jnp.asarray(np.stack([a, a])[None]), start)
    batch = mtt.Batch(traj, jnp.zeros((0,) + xs.shape[1:]))
    settings = mtt.Settings(ipc=IPC, model=model, syn_steps=2, expert_epochs=1)
    p = _mtt_params(xs, 0.1)
    with pytest.raises(TypeError, match="MTTParams"):
        mtt.objective(xs, batch, jax.random.key(0), settings)
    with pytest.raises(TypeError, match="batch"):
        mtt.objective(p, traj, jax.random.key(0), settings)
    with pytest.raises(ValueError, match="max_start_epoch"):
        mtt.objective(p, batch, jax.random.key(0), settings._replace(max_start_epoch=1))
    with pytest.raises(ValueError, match="syn_params"):
        mtt.objective(_mtt_params(xs[:-1], 0.1), batch, jax.random.key(0), settings)
    with pytest.raises(ValueError, match="settings.student_lr"):
        mtt.init(jax.random.key(0), mtt.Data(xs, ys, C), settings._replace(student_lr=-1.0))
    with pytest.raises(ValueError, match="settings.mode"):
        mtt.objective(p, batch, jax.random.key(0), settings._replace(mode="bptt"))


# ----------------------------------------------------------------------------- KIP


def test_krr_predict_cholesky_agrees_with_pos_solve(x64):
    """KIP's solve is models.krr's Cholesky; it agrees with the symmetric-positive solve it replaced."""
    rng = np.random.default_rng(2)
    x, y = tiny_data(jnp.float64)
    xs = jnp.asarray(np.asarray(x)[::3].reshape(12, -1))
    xt = jnp.asarray(np.asarray(x).reshape(36, -1))
    from models.kernels import fc_relu
    k_ss, k_ts = jax.jit(lambda xs, xt: (fc_relu(xs, None, depth=3).ntk, fc_relu(xt, xs, depth=3).ntk))(xs, xt)
    ys = jnp.asarray(rng.normal(size=(12, C)))

    @jax.jit  # one compile for the three ridges
    def both(lam):
        a = k_ss + lam * jnp.trace(k_ss) / 12 * jnp.eye(12)
        return krr.predict(k_ts, k_ss, ys, lam), k_ts @ jax.scipy.linalg.solve(a, ys, assume_a="pos")

    for lam in (1e-6, 1e-3, 0.1):
        new, old = both(lam)
        np.testing.assert_allclose(new, old, rtol=1e-8, atol=1e-8)
    a = rng.normal(size=(5, 5))
    k = jnp.asarray(a @ a.T + 0.1 * np.eye(5))
    np.testing.assert_allclose(krr.predict(k, k, ys[:5], 0.0), ys[:5], atol=1e-10)  # interpolates without ridge


def test_kip_gradient_matches_finite_differences(x64):
    x, y = tiny_data(jnp.float64)
    p = kip.KIPParams(syn_init(x, y), M.kip_targets(M.syn_labels(C, IPC), C))
    batch = (x, M.kip_targets(y, C))
    settings = kip.Settings(ipc=IPC, kernel=KernelSpec(depth=2), lam=1e-3)
    # one compilation for the loss (finite differences) and its gradient
    vg = jax.jit(jax.value_and_grad(lambda q: kip.objective(q, batch, jax.random.key(0), settings)))
    f = lambda q: vg(q)[0]
    g = vg(p)[1]
    rng = np.random.default_rng(3)
    h = 1e-4
    # Labels enter through the solve only: exact. The images also pass through the kernel
    # diagonal, where models.kernels caps the arc-cosine derivative at c = 1 (a round-off
    # level cotangent): agreement to ~1e-5 relative.
    for which, rtol, atol in (("labels", 1e-8, 0.0), ("data", 1e-4, 1e-6), ("data", 1e-4, 1e-6)):
        d = kip.KIPParams(rng.normal(size=p.data.shape) * (which == "data"),
                          rng.normal(size=p.labels.shape) * (which == "labels"))
        step = lambda s, d=d: jax.tree_util.tree_map(lambda u, v: jnp.asarray(np.asarray(u) + s * h * v), p, d)
        fd = (f(step(1)) - f(step(-1))) / (2 * h)
        an = sum(np.vdot(np.asarray(a), b) for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(d), strict=False))
        np.testing.assert_allclose(an, fd, rtol=rtol, atol=atol)
    # fixed labels: no gradient reaches them
    g_fixed = jax.jit(jax.grad(lambda q: kip.objective(q, batch, jax.random.key(0),
                                                       settings._replace(learn_labels=False))))(p)
    assert float(jnp.abs(g_fixed.labels).max()) == 0.0
    np.testing.assert_allclose(g_fixed.data, g.data, rtol=1e-9, atol=1e-12)  # the data gradient is unchanged


def test_kip_validation():
    x, y = tiny_data()
    settings = kip.Settings(ipc=IPC)
    p = kip.init(jax.random.key(0), M.Data(x, y, C), settings)
    chex.assert_trees_all_equal(p.labels, M.kip_targets(M.syn_labels(C, IPC), C))
    batch = (x, M.kip_targets(y, C))
    with pytest.raises(TypeError, match="KIPParams"):
        kip.objective(p.data, batch, jax.random.key(0), settings)
    with pytest.raises(ValueError, match="settings.kind"):
        kip.objective(p, batch, jax.random.key(0), settings._replace(kind="rbf"))
    with pytest.raises(TypeError, match="settings.kernel"):
        kip.objective(p, batch, jax.random.key(0), settings._replace(kernel=3))
    with pytest.raises(ValueError, match="batch"):
        kip.objective(p, (x, batch[1][:-1]), jax.random.key(0), settings)
    with pytest.raises(ValueError, match="n_classes"):
        M.kip_targets(y, 1)
    with pytest.raises(ValueError, match="ipc"):
        M.syn_labels(3, 0)


# ----------------------------------------------------------------------------- meta-matching


@pytest.mark.slow
@pytest.mark.parametrize("modes", MODE_SETS, ids=["fast", "all"])
def test_meta_matching_gradient_same_in_every_mode(x64, modes):
    x, y = tiny_data(jnp.float64)
    xs = syn_init(x, y)
    base = meta.Settings(ipc=IPC, model=tanh_model(), inner_steps=5, inner_optimizer=inner.Adam(0.05))
    grads = [jax.jit(jax.grad(meta.objective), static_argnums=3)(xs, (x, y), jax.random.key(0), base._replace(mode=m))
             for m in modes]
    assert modes[0] == "unrolled" and len(grads) >= 2
    for g in grads[1:]:
        np.testing.assert_allclose(g, grads[0], rtol=1e-7, atol=1e-12)
    assert float(jnp.abs(grads[0]).max()) > 0
    with pytest.raises(ValueError, match="batch"):
        meta.objective(xs, (x, y[:-1]), jax.random.key(0), base)
    with pytest.raises(ValueError, match="settings.inner_steps"):
        meta.objective(xs, (x, y), jax.random.key(0), base._replace(inner_steps=0))


# ----------------------------------------------------------------------------- each objective lowers its loss


def _objectives(x, y):
    model, embed = mlp(C, hidden=(16,)), mlp(C, hidden=(16,), features_only=True)
    xr = per_class(x, y)
    ys = M.syn_labels(C, IPC)
    xs = syn_init(x, y) + 0.5  # start away from the real data

    def experts():  # lazily: only the objective under test is built (the experts take a compilation)
        s = mtt.Settings(model=model, n_experts=2, expert_train_epochs=4, expert_batch_size=12, expert_lr=1e-2)
        return mtt.Batch(mtt.expert_trajectories(jax.random.key(9), mtt.Data(x, y, C), s), jnp.zeros((0,) + x.shape[1:]))

    return {
        "dc": lambda: (dc, dc.Settings(ipc=IPC, model=model, inner_steps=2), xs, xr),
        "dsa": lambda: (dc, dc.Settings(ipc=IPC, model=model, inner_steps=2, dsa="color_crop"), xs, xr),
        "dm": lambda: (dm, dm.Settings(ipc=IPC, embed=embed), xs, xr),
        "kip": lambda: (kip, kip.Settings(ipc=IPC), kip.KIPParams(xs, M.kip_targets(ys, C)), (x, M.kip_targets(y, C))),
        "mm": lambda: (meta, meta.Settings(ipc=IPC, model=model, inner_steps=4, inner_optimizer=inner.Adam(0.05),
                                           reverse_every=1), xs, (x, y)),
        "mtt": lambda: (mtt, mtt.Settings(ipc=IPC, model=model, syn_steps=4, expert_epochs=2, max_start_epoch=2,
                                          reverse_every=1), _mtt_params(xs, 1e-2), experts()),
    }


# dc/dsa/mm/mtt compile an inner loop: ~1 min each on 2 busy cores, so they are slow tests
@pytest.mark.parametrize("name", ["dm", "kip"] + [pytest.param(n, marks=pytest.mark.slow) for n in ("dc", "dsa", "mm", "mtt")])
def test_objective_lowers_its_loss(name):
    x, y = tiny_data()
    method, settings, p0, batch = _objectives(x, y)[name]()
    obj = functools.partial(method.objective, settings=settings)
    keys = jax.random.split(jax.random.key(100), 3)
    # lax.map: the objective is compiled once for the three evaluation keys
    mean_loss = jax.jit(lambda p: jnp.mean(jax.lax.map(lambda k: obj(p, batch, k), keys)))
    p, hist = loop.run(obj, p0, optax.adam(0.05), batch, steps=15, key=jax.random.key(1), progress=False)
    before, after = float(mean_loss(p0)), float(mean_loss(p))
    assert np.isfinite(hist.losses).all()
    assert after < 0.9 * before, (before, after)


def test_distill_resumes_and_keeps_the_best(tmp_path):
    """dm.distill: a checkpointed run resumed from its directory equals one uninterrupted
    run; with evaluate the best evaluated parameters come back; the set is materialized."""
    x, y = tiny_data()
    data = M.Data(x, y, C)
    settings = dm.Settings(ipc=IPC, steps=4, embed=mlp(C, hidden=(8,), features_only=True), real_batch=4,
                           eval_every=2)
    full = dm.distill(jax.random.key(0), data, settings)
    dm.distill(jax.random.key(0), data, settings._replace(steps=2), checkpoint_dir=tmp_path / "ck")
    resumed = dm.distill(jax.random.key(0), data, settings, checkpoint_dir=tmp_path / "ck")
    np.testing.assert_array_equal(resumed.params, full.params)
    np.testing.assert_array_equal(resumed.history.losses, full.history.losses)
    chex.assert_shape(full.data[0], (C * IPC, HW, HW, 1))
    np.testing.assert_array_equal(full.data[1], M.syn_labels(C, IPC))
    best = dm.distill(jax.random.key(0), data, settings, evaluate=lambda p, step: -abs(step - 2))
    assert best.history.best_step == 2
    with pytest.raises(ValueError, match="fingerprint|settings"):
        dm.distill(jax.random.key(0), data, settings._replace(real_batch=5), checkpoint_dir=tmp_path / "ck")


def test_fingerprint_leaves_a_later_field_out_at_its_default():
    """dc.Settings.net_momentum came after checkpoints were written: at its default 0 the
    fingerprint is the one those checkpoints hold, so they resume; any other μ is compared."""
    x, y = tiny_data()
    data = M.Data(x, y, C)
    plain = M.common.fingerprint(dc.Settings(ipc=IPC), data)["settings"]
    assert "net_momentum" not in plain and "net_augment" not in plain and plain["net_steps"] == 1
    moved = M.common.fingerprint(dc.Settings(ipc=IPC, net_momentum=0.5), data)["settings"]
    assert moved == {**plain, "net_momentum": 0.5}
    assert "outer_momentum" not in plain
    sgd = M.common.fingerprint(dc.Settings(ipc=IPC, outer_momentum=0.5), data)["settings"]
    assert sgd == {**plain, "outer_momentum": 0.5}


# ----------------------------------------------------------------------------- Farzi images, export


def test_latent_images_decode_and_gradients():
    par = M.latent_images(C * IPC, (HW, HW, 1), levels=5, latent_dim=3, mean=np.asarray([0.5]), std=np.asarray([0.25]))
    p = jax.jit(par.init)(jax.random.key(0))
    materialize = jax.jit(par.materialize)
    img = materialize(p, jax.random.key(1))
    chex.assert_shape(img, (C * IPC, HW, HW, 1))
    assert float(img.min()) >= -2.0 - 1e-6 and float(img.max()) <= 2.0 + 1e-6  # (0 − .5)/.25, (1 − .5)/.25
    # sharp one-hot tokens decode to exact grey levels: level 3 of 5 → 0.75 → (0.75 − .5)/.25 = 1
    z, m = np.zeros(p.z.shape, np.float32), np.zeros(p.m.shape, np.float32)
    z[..., 0], m[0, 3] = 100.0, 1.0
    sharp = p._replace(z=z, m=m)
    np.testing.assert_allclose(materialize(sharp, jax.random.key(1)), 1.0, atol=1e-5)
    x, y = tiny_data()
    latent = M.Latent(levels=5, latent_dim=3, mean=(0.5,), std=(0.25,))
    settings = dm.Settings(ipc=IPC, images=latent, embed=mlp(C, hidden=(8,), features_only=True))
    q0 = dm.init(jax.random.key(0), M.Data(x, y, C), settings)
    chex.assert_trees_all_close(q0, p, rtol=1e-6)  # the setting builds the same parametrization (eager vs jit)
    g = jax.jit(jax.grad(dm.objective), static_argnums=3)(p, per_class(x, y), jax.random.key(0), settings)
    assert float(jnp.abs(g.z).max()) > 0 and float(jnp.abs(g.m).max()) > 0
    with pytest.raises(ValueError, match="image_shape"):
        M.latent_images(2, (4, 4))
    with pytest.raises(ValueError, match="std"):
        M.latent_images(2, (4, 4, 1), std=0.0)


def test_save_synthetic_loads_with_numpy(tmp_path):
    imgs, labs = np.random.default_rng(0).normal(size=(6, 4, 4, 1)).astype(np.float32), np.arange(6) % 3
    path = M.save_synthetic(tmp_path / "dc_ipc2", imgs, labs, {"method": "DC", "ipc": 2})
    with np.load(path) as z:
        np.testing.assert_array_equal(z["images"], imgs)
        np.testing.assert_array_equal(z["labels"], labs)
    with pytest.raises(ValueError, match="labels"):
        M.save_synthetic(tmp_path / "bad", imgs, labs[:-1])


# ----------------------------------------------------------------------------- 8 devices


def _sharded_equals_single(names=("dc", "dm", "kip")):
    from distill import parallel

    jax.config.update("jax_enable_x64", True)
    mesh = parallel.make_mesh()
    x, y = tiny_data(jnp.float64)
    xs, xr, ys = syn_init(x, y), per_class(x, y), M.syn_labels(C, IPC)
    model = tanh_model()
    cases = {
        "dc": (dc, dc.Settings(ipc=IPC, model=model, inner_steps=1), xs, xr),
        "dm": (dm, dm.Settings(ipc=IPC, embed=model), xs, xr),
        "kip": (kip, kip.Settings(ipc=IPC), kip.KIPParams(xs, M.kip_targets(ys, C)), (x, M.kip_targets(y, C))),
        "mm": (meta, meta.Settings(ipc=IPC, model=model, inner_steps=2), xs, (x, y)),
    }
    cases = [cases[n] for n in names]
    # every case, single-device and sharded, in one compiled function (one XLA compilation)
    both = jax.jit(lambda key: [(jax.value_and_grad(m.objective)(p, batch, key, s),
                                 jax.value_and_grad(functools.partial(m.objective, mesh=mesh))(p, batch, key, s))
                                for m, s, p, batch in cases])
    for (v1, g1), (v8, g8) in both(jax.random.key(0)):
        # x64; only the order of the per-device partial sums differs
        np.testing.assert_allclose(v8, v1, rtol=1e-8)
        chex.assert_trees_all_close(g8, g1, rtol=1e-7, atol=1e-10)


def _sharded_equals_single_mm():
    _sharded_equals_single(("mm",))


@pytest.mark.slow
def test_objectives_sharded_over_8_devices_equal_single(multidevice):
    multidevice(_sharded_equals_single)


# meta-matching shards its real batch with the same parallel.sum_rows as DC/DM/KIP above, but
# its gradient through inner.train is another ~30 s compilation in the child
@pytest.mark.slow
def test_meta_matching_sharded_over_8_devices_equals_single(multidevice):
    multidevice(_sharded_equals_single_mm)
