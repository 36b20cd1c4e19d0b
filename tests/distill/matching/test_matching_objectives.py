"""distill.matching: DC/DM/MTT/MM/KIP against hand computations, numpy, finite differences,
mode equivalence, loss decrease with loop.run, validation and 8-device equality."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distill import inner, loop
from distill import matching as M
from distill.parametrize import identity
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


def test_dc_loss_one_step_equals_manual(x64):
    x, y = tiny_data(jnp.float64)
    model = tanh_model()
    xs, xr = syn_init(x, y), per_class(x, y)

    @jax.jit  # loss and hand-written reference in one compilation
    def loss_and_ref(xs, xr, key):
        loss = M.dc_loss(xs, xr, key, parametrization=identity(), model=model, n_classes=C, inner_steps=1)
        theta = model.init(jax.random.split(key, 3)[1], xs[:1])
        grad = lambda xx, c: jax.grad(lambda th: M.xent(model.apply(th, xx), jnp.full(xx.shape[0], c)))(theta)
        ref = sum(M.match_distance(grad(xr[c], c), grad(xs[c * IPC:(c + 1) * IPC], c)) for c in range(C))
        return loss, ref

    loss, ref = loss_and_ref(xs, xr, jax.random.key(3))
    assert float(ref) > 1e-3  # the comparison is not 0 == 0
    np.testing.assert_allclose(loss, ref, rtol=1e-10)


def test_dc_validation():
    x, y = tiny_data()
    kw = dict(parametrization=identity(), model=mlp(C, hidden=(4,)), n_classes=C)
    with pytest.raises(ValueError, match="batch"):
        M.dc_loss(syn_init(x, y), x[:8], jax.random.key(0), **kw)
    with pytest.raises(ValueError, match="syn_params"):
        M.dc_loss(x[:5], per_class(x, y), jax.random.key(0), **kw)
    with pytest.raises(ValueError, match="inner_steps"):
        M.dc_loss(syn_init(x, y), per_class(x, y), jax.random.key(0), inner_steps=0, **kw)
    with pytest.raises(TypeError, match="parametrization"):
        M.dc_loss(syn_init(x, y), per_class(x, y), jax.random.key(0), **{**kw, "parametrization": None})
    with pytest.raises(ValueError, match="strategy"):
        M.dc_loss(syn_init(x, y), per_class(x, y), jax.random.key(0), dsa="blur", **kw)


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


def test_dm_loss_equals_manual(x64):
    x, y = tiny_data(jnp.float64)
    embed = tanh_model(n_classes=5)  # a random 5-d embedding
    xs, xr = syn_init(x, y), per_class(x, y)
    key = jax.random.key(4)

    @jax.jit  # loss and the embeddings of the reference in one compilation
    def loss_and_features(xs, xr, key):
        loss = M.dm_loss(xs, xr, key, parametrization=identity(), embed=embed, n_classes=C)
        theta = embed.init(jax.random.split(key, 3)[1], xs[:1])
        return loss, embed.apply(theta, xr.reshape((-1,) + xr.shape[2:])), embed.apply(theta, xs)

    loss, fr, fs = map(np.asarray, loss_and_features(xs, xr, key))
    fr = fr.reshape(C, -1, fr.shape[-1])
    ref = sum(np.sum((fr[c].mean(0) - fs[c * IPC:(c + 1) * IPC].mean(0)) ** 2) for c in range(C))
    assert ref > 1e-3
    np.testing.assert_allclose(loss, ref, rtol=1e-10)
    with pytest.raises(TypeError, match="embed"):
        M.dm_loss(xs, xr, key, parametrization=identity(), embed=None, n_classes=C)


# ----------------------------------------------------------------------------- MTT


def _mtt_setup(dtype=jnp.float64):
    x, y = tiny_data(dtype)
    model = tanh_model()
    xs, ys = syn_init(x, y), M.syn_labels(C, IPC)
    start = jax.jit(model.init)(jax.random.key(1), xs[:1])
    return model, xs, ys, start


def test_mtt_loss_zero_when_student_reproduces_expert(x64):
    model, xs, ys, start = _mtt_setup()
    lr, n = 0.05, 4
    # the learnable-lr student is Adam(α, ε/α) on θ (module docstring): make that the expert
    target = jax.jit(lambda th: inner.train(model.apply, M.xent, th, (xs, ys), steps=n,
                                            optimizer=inner.Adam(lr, eps=1e-8 / lr), mode="unrolled"))(start)
    traj = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b])[None], start, target)  # (1, 2, ...)
    loss = jax.jit(functools.partial(M.mtt_loss, parametrization=identity(), model=model, trajectories=traj, labels=ys,
                                     syn_steps=n, expert_epochs=1, max_start_epoch=0, mode="reverse_adam"))
    assert float(loss(M.mtt_init(xs, lr), None, jax.random.key(0))) < 1e-20
    # another learning rate does not reproduce it (same compiled function: α is traced)
    assert float(loss(M.mtt_init(xs, 2 * lr), None, jax.random.key(0))) > 1e-3


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
    p = M.mtt_init(xs, 0.02)
    grads = {}
    for mode in modes:
        f = functools.partial(M.mtt_loss, parametrization=identity(), model=model, trajectories=traj, labels=ys,
                              syn_steps=6, expert_epochs=1, max_start_epoch=0, mode=mode)
        grads[mode] = jax.jit(jax.grad(f))(p, None, jax.random.key(0))
    for mode in modes[1:]:
        chex.assert_trees_all_close(grads[mode], grads["unrolled"], rtol=1e-7, atol=1e-12)
    assert abs(float(grads["unrolled"].log_lr)) > 0


def test_expert_trajectories_and_orbax_roundtrip(tmp_path):
    x, y = tiny_data()
    model = mlp(C, hidden=(8,))
    traj = M.expert_trajectories(jax.random.key(0), model, x, y, n_experts=2, n_epochs=3, batch_size=12, lr=1e-2)
    chex.assert_shape(traj["head"]["kernel"], (2, 4, 8, C))
    init = jax.jit(model.init)(jax.random.split(jax.random.split(jax.random.key(0), 2)[0])[0], x[:1])
    np.testing.assert_array_equal(traj["head"]["kernel"][0, 0], init["head"]["kernel"])
    # training moves the expert and lowers its training loss
    xent_on_x = jax.jit(lambda th: M.xent(model.apply(th, x), y))
    loss = lambda t: float(xent_on_x(leaf_at(traj, 0, t)))
    assert loss(3) < loss(0)
    back = M.load_trajectories(M.save_trajectories(tmp_path / "experts", traj), like=traj)
    chex.assert_trees_all_equal(back, traj)
    with pytest.raises(FileNotFoundError, match="path"):
        M.load_trajectories(tmp_path / "missing")
    with pytest.raises(ValueError, match="y"):
        M.expert_trajectories(jax.random.key(0), model, x, y[:-1], n_experts=1, n_epochs=1)
    with pytest.raises(ValueError, match="n_epochs"):
        M.expert_trajectories(jax.random.key(0), model, x, y, n_experts=1, n_epochs=0)


def test_mtt_validation():
    model, xs, ys, start = _mtt_setup(jnp.float32)
    traj = jax.tree_util.tree_map(lambda a: jnp.asarray(np.stack([a, a])[None]), start)
    kw = dict(parametrization=identity(), model=model, trajectories=traj, labels=ys, syn_steps=2, expert_epochs=1)
    with pytest.raises(TypeError, match="MTTParams"):
        M.mtt_loss(xs, None, jax.random.key(0), max_start_epoch=0, **kw)
    with pytest.raises(ValueError, match="max_start_epoch"):
        M.mtt_loss(M.mtt_init(xs, 0.1), None, jax.random.key(0), max_start_epoch=1, **kw)
    with pytest.raises(ValueError, match="labels"):
        M.mtt_loss(M.mtt_init(xs, 0.1), None, jax.random.key(0), max_start_epoch=0, **{**kw, "labels": ys[:-1]})
    with pytest.raises(ValueError, match="lr"):
        M.mtt_init(xs, -1.0)
    with pytest.raises(ValueError, match="mode"):
        M.mtt_loss(M.mtt_init(xs, 0.1), None, jax.random.key(0), max_start_epoch=0, mode="bptt", **kw)


# ----------------------------------------------------------------------------- KIP


def test_krr_interpolates_support_without_ridge(x64):
    rng = np.random.default_rng(2)
    a = rng.normal(size=(5, 5))
    k = jnp.asarray(a @ a.T + 0.1 * np.eye(5))
    ys = jnp.asarray(rng.normal(size=(5, 2)))
    np.testing.assert_allclose(M.krr_predict(k, k, ys, 0.0), ys, atol=1e-10)
    with pytest.raises(ValueError, match="k_ts"):
        M.krr_predict(k[:, :3], k, ys, 0.0)
    with pytest.raises(ValueError, match="reg"):
        M.krr_predict(k, k, ys, -1.0)


def test_kip_gradient_matches_finite_differences(x64):
    x, y = tiny_data(jnp.float64)
    p = M.kip_init(syn_init(x, y), M.syn_labels(C, IPC), C)
    batch = (x, M.kip_targets(y, C))
    # one compilation for the loss (finite differences) and its gradient
    vg = jax.jit(jax.value_and_grad(lambda q: M.kip_loss(q, batch, jax.random.key(0), parametrization=identity(),
                                                         depth=2, reg=1e-3)))
    f = lambda q: vg(q)[0]
    g = vg(p)[1]
    rng = np.random.default_rng(3)
    h = 1e-4
    # Labels enter through the solve only: exact. The images also pass through the kernel
    # diagonal, where models.kernels caps the arc-cosine derivative at c = 1 (a round-off
    # level cotangent): agreement to ~1e-5 relative.
    for which, rtol, atol in (("labels", 1e-8, 0.0), ("data", 1e-4, 1e-6), ("data", 1e-4, 1e-6)):
        d = M.KIPParams(rng.normal(size=p.data.shape) * (which == "data"),
                        rng.normal(size=p.labels.shape) * (which == "labels"))
        step = lambda s, d=d: jax.tree_util.tree_map(lambda u, v: jnp.asarray(np.asarray(u) + s * h * v), p, d)
        fd = (f(step(1)) - f(step(-1))) / (2 * h)
        an = sum(np.vdot(np.asarray(a), b) for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(d), strict=False))
        np.testing.assert_allclose(an, fd, rtol=rtol, atol=atol)
    # fixed labels: no gradient reaches them
    g_fixed = jax.jit(jax.grad(lambda q: M.kip_loss(q, batch, jax.random.key(0), parametrization=identity(),
                                                    depth=2, reg=1e-3, learn_labels=False)))(p)
    assert float(jnp.abs(g_fixed.labels).max()) == 0.0
    np.testing.assert_allclose(g_fixed.data, g.data, rtol=1e-9, atol=1e-12)  # the data gradient is unchanged


def test_kip_validation():
    x, y = tiny_data()
    p = M.kip_init(syn_init(x, y), M.syn_labels(C, IPC), C)
    batch = (x, M.kip_targets(y, C))
    with pytest.raises(TypeError, match="KIPParams"):
        M.kip_loss(p.data, batch, jax.random.key(0), parametrization=identity())
    with pytest.raises(ValueError, match="kernel"):
        M.kip_loss(p, batch, jax.random.key(0), parametrization=identity(), kernel="rbf")
    with pytest.raises(ValueError, match="batch"):
        M.kip_loss(p, (x, batch[1][:-1]), jax.random.key(0), parametrization=identity())
    with pytest.raises(ValueError, match="n_classes"):
        M.kip_targets(y, 1)
    with pytest.raises(ValueError, match="ipc"):
        M.syn_labels(3, 0)


# ----------------------------------------------------------------------------- meta-matching


@pytest.mark.slow
@pytest.mark.parametrize("modes", MODE_SETS, ids=["fast", "all"])
def test_meta_matching_gradient_same_in_every_mode(x64, modes):
    x, y = tiny_data(jnp.float64)
    xs, ys = syn_init(x, y), M.syn_labels(C, IPC)
    grads = [jax.jit(jax.grad(functools.partial(M.meta_matching_loss, parametrization=identity(), model=tanh_model(),
                                                labels=ys, steps=5, optimizer=inner.Adam(0.05), mode=m)))(xs, (x, y), jax.random.key(0))
             for m in modes]
    assert modes[0] == "unrolled" and len(grads) >= 2
    for g in grads[1:]:
        np.testing.assert_allclose(g, grads[0], rtol=1e-7, atol=1e-12)
    assert float(jnp.abs(grads[0]).max()) > 0
    with pytest.raises(ValueError, match="batch"):
        M.meta_matching_loss(xs, (x, y[:-1]), jax.random.key(0), parametrization=identity(), model=tanh_model(),
                             labels=ys, steps=2)
    with pytest.raises(ValueError, match="steps"):
        M.meta_matching_loss(xs, (x, y), jax.random.key(0), parametrization=identity(), model=tanh_model(),
                             labels=ys, steps=0)


# ----------------------------------------------------------------------------- each objective lowers its loss


def _objectives(x, y):
    model, embed = mlp(C, hidden=(16,)), mlp(C, hidden=(16,), features_only=True)
    xr = per_class(x, y)
    ys = M.syn_labels(C, IPC)
    xs = syn_init(x, y) + 0.5  # start away from the real data
    # lazily: only the objective under test is built (the MTT experts take a compilation)
    traj = lambda: M.expert_trajectories(jax.random.key(9), model, x, y, n_experts=2, n_epochs=4, batch_size=12, lr=1e-2)
    return {
        "dc": lambda: (functools.partial(M.dc_loss, parametrization=identity(), model=model, n_classes=C, inner_steps=2), xs, xr),
        "dsa": lambda: (functools.partial(M.dc_loss, parametrization=identity(), model=model, n_classes=C, inner_steps=2,
                                  dsa="color_crop"), xs, xr),
        "dm": lambda: (functools.partial(M.dm_loss, parametrization=identity(), embed=embed, n_classes=C), xs, xr),
        "kip": lambda: (functools.partial(M.kip_loss, parametrization=identity()), M.kip_init(xs, ys, C), (x, M.kip_targets(y, C))),
        "mm": lambda: (functools.partial(M.meta_matching_loss, parametrization=identity(), model=model, labels=ys, steps=4,
                                 optimizer=inner.Adam(0.05), reverse_every=1), xs, (x, y)),
        "mtt": lambda: (functools.partial(M.mtt_loss, parametrization=identity(), model=model, trajectories=traj(), labels=ys,
                                  syn_steps=4, expert_epochs=2, max_start_epoch=2, reverse_every=1), M.mtt_init(xs, 1e-2), None),
    }


# dc/dsa/mm/mtt compile an inner loop: ~1 min each on 2 busy cores, so they are slow tests
@pytest.mark.parametrize("name", ["dm", "kip"] + [pytest.param(n, marks=pytest.mark.slow) for n in ("dc", "dsa", "mm", "mtt")])
def test_objective_lowers_its_loss(name):
    x, y = tiny_data()
    obj, p0, batch = _objectives(x, y)[name]()
    keys = jax.random.split(jax.random.key(100), 3)
    # lax.map: the objective is compiled once for the three evaluation keys
    mean_loss = jax.jit(lambda p: jnp.mean(jax.lax.map(lambda k: obj(p, batch, k), keys)))
    p, hist = loop.run(obj, p0, optax.adam(0.05), batch, steps=15, key=jax.random.key(1), progress=False)
    before, after = float(mean_loss(p0)), float(mean_loss(p))
    assert np.isfinite(hist.losses).all()
    assert after < 0.9 * before, (before, after)


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
    g = jax.jit(jax.grad(lambda q: M.dm_loss(q, per_class(x, y), jax.random.key(0), parametrization=par,
                                             embed=mlp(C, hidden=(8,), features_only=True), n_classes=C)))(p)
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
        "dc": (functools.partial(M.dc_loss, parametrization=identity(), model=model, n_classes=C, inner_steps=1), xs, xr),
        "dm": (functools.partial(M.dm_loss, parametrization=identity(), embed=model, n_classes=C), xs, xr),
        "kip": (functools.partial(M.kip_loss, parametrization=identity()), M.kip_init(xs, ys, C), (x, M.kip_targets(y, C))),
        "mm": (functools.partial(M.meta_matching_loss, parametrization=identity(), model=model, labels=ys, steps=2),
               xs, (x, y)),
    }
    cases = [cases[n] for n in names]
    # every case, single-device and sharded, in one compiled function (one XLA compilation)
    both = jax.jit(lambda key: [(jax.value_and_grad(obj)(p, batch, key),
                                 jax.value_and_grad(functools.partial(obj, mesh=mesh))(p, batch, key))
                                for obj, p, batch in cases])
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
