"""inner.train: the three modes agree; reverse-mode Adam equals jax.grad through unrolled Adam."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distill import inner
from models.transformer import transformer

pytestmark = pytest.mark.x64  # compares to 1e-6 and tighter


def mlp_apply(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def mse(o, y):
    return jnp.mean((o - y) ** 2)


def _problem(dtype=jnp.float64, n=16, d_in=4, hidden=20):
    # numpy draws: eager jax.random calls would each compile a program per shape.
    rng = np.random.default_rng(0)
    theta = {"w1": 0.5 * rng.normal(size=(d_in, hidden)), "b1": np.zeros(hidden),
             "w2": 0.5 * rng.normal(size=(hidden, 2)), "b2": np.zeros(2)}
    x, y = rng.normal(size=(n, d_in)), rng.normal(size=(n, 2))
    xr, yr = rng.normal(size=(32, d_in)), rng.normal(size=(32, 2))
    c = lambda a: jnp.asarray(a, dtype)
    return jax.tree_util.tree_map(c, theta), c(x), c(y), c(xr), c(yr)


def _flat(tree):
    return jnp.concatenate([jnp.ravel(a) for a in jax.tree_util.tree_leaves(tree)])


def _rel(a, b):
    a, b = _flat(a), _flat(b)
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def _meta_grad(mode, steps, reverse_every="auto", opt=inner.Adam(0.01)):
    theta, x, y, xr, yr = _problem()

    def outer(x, y, th):
        th_t = inner.train(mlp_apply, mse, th, (x, y), steps=steps, optimizer=opt, mode=mode,
                           reverse_every=reverse_every)
        return mse(mlp_apply(th_t, xr), yr)

    return jax.jit(jax.value_and_grad(outer, argnums=(0, 1, 2)))(x, y, theta)


def _optax_and(loss_at, lr, steps, theta, *fns):
    """``steps`` optax Adam steps on ``loss_at(params, t)``, t = 1, …, steps (the reference
    trajectory), and ``fn(theta)`` for each of ``fns``, in one compiled program: compilation
    is most of the cost, and XLA computes the forward passes that the modes share once."""
    tx = optax.adam(lr)

    def step(t, carry):
        p, st = carry
        u, st = tx.update(jax.grad(loss_at)(p, t), st)
        return optax.apply_updates(p, u), st

    @jax.jit
    def run(theta):
        return jax.lax.fori_loop(1, steps + 1, step, (theta, tx.init(theta)))[0], [fn(theta) for fn in fns]

    return run(theta)


def test_unrolled_adam_equals_optax():
    theta, x, y, _, _ = _problem()
    modes = [lambda th, m=m: inner.train(mlp_apply, mse, th, (x, y), steps=7, optimizer=inner.Adam(0.01), mode=m)
             for m in inner.MODES]
    p, outs = _optax_and(lambda q, t: mse(mlp_apply(q, x), y), 0.01, 7, theta, *modes)
    for out in outs:
        np.testing.assert_allclose(_flat(out), _flat(p), rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_meta_gradient_finite_with_a_dead_unit():
    # A hidden unit whose pre-activation is negative for every example gets gradient 0
    # at every step, so v = 0: autodiff of √v must not turn that into NaN.
    theta, x, y, xr, yr = _problem()
    relu_apply = lambda p, x: jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    theta["b1"] = theta["b1"].at[0].set(-1e3)

    def outer(x, th, mode):
        th_t = inner.train(relu_apply, mse, th, (x, y), steps=5, optimizer=inner.Adam(0.01), mode=mode)
        return mse(relu_apply(th_t, xr), yr)

    ref = jax.grad(outer, argnums=(0, 1))(x, theta, "unrolled")
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree_util.tree_leaves(ref))
    for mode in ("checkpointed", "reverse_adam"):
        g = jax.grad(outer, argnums=(0, 1))(x, theta, mode)
        assert _rel(g, ref) < 1e-8, (mode, _rel(g, ref))


# Several steps in every mode are also checked, with dropout, in test_three_modes_same_meta_gradient_with_dropout.
@pytest.mark.parametrize("steps", [1, pytest.param(13, marks=pytest.mark.slow), pytest.param(50, marks=pytest.mark.slow)])
def test_three_modes_same_value_and_meta_gradient(steps):
    v_ref, g_ref = _meta_grad("unrolled", steps)
    for mode in ("checkpointed", "reverse_adam"):
        v, g = _meta_grad(mode, steps)
        np.testing.assert_allclose(v, v_ref, rtol=1e-12)
        assert _rel(g, g_ref) < 1e-5, (mode, _rel(g, g_ref))


@pytest.mark.slow
def test_reverse_adam_pure_and_segmented_t50():
    _, g_ref = _meta_grad("unrolled", 50)
    for every in (None, 7, 50):
        _, g = _meta_grad("reverse_adam", 50, reverse_every=every)
        assert _rel(g, g_ref) < 1e-5, (every, _rel(g, g_ref))


@pytest.mark.slow
def test_reverse_adam_transformer_matches_unrolled():
    v, ln = 9, 5
    model = transformer(v, max_len=ln, d_model=8, n_heads=2, n_layers=1, dtype=jnp.float64)
    key = jax.random.key(3)
    real = jax.random.randint(key, (6, ln + 1), 0, v)
    theta0 = model.init(key, real[:, :-1])
    logits = jax.random.normal(jax.random.key(4), (3, ln + 1, v), jnp.float64)

    def soft_xent(lg, t):
        return -jnp.mean(jnp.sum(t * jax.nn.log_softmax(lg), -1))

    def outer(lg, th, mode):
        d = jax.nn.softmax(lg)
        th_t = inner.train(model.apply, soft_xent, th, (d[:, :-1], d[:, 1:]), steps=20,
                           optimizer=inner.Adam(0.01), mode=mode)
        lp = jax.nn.log_softmax(model.apply(th_t, real[:, :-1]))
        return -jnp.mean(jnp.take_along_axis(lp, real[:, 1:, None], -1))

    g_ref = jax.jit(jax.grad(outer, argnums=(0, 1)), static_argnums=2)(logits, theta0, "unrolled")
    g_rev = jax.jit(jax.grad(outer, argnums=(0, 1)), static_argnums=2)(logits, theta0, "reverse_adam")
    assert _rel(g_rev[0], g_ref[0]) < 1e-5
    assert _rel(g_rev[1], g_ref[1]) < 1e-5


def test_reverse_recovers_theta0_float64():
    theta, x, y, _, _ = _problem()
    opt = inner.Adam(0.01)
    final = inner.train_state(mlp_apply, mse, theta, (x, y), steps=50, optimizer=opt, mode="unrolled")
    back = inner.reverse(mlp_apply, mse, final, (x, y), steps=50, optimizer=opt)
    assert _rel(back, theta) < 1e-9


def test_closed_over_arrays_get_gradients():
    # The loss of the inner model closes over the traced weights w (see _dropout_meta_grads);
    # the reversal must hand them their gradient like the unrolled loop does.
    (_, g_ref), (_, g_rev), _ = _dropout_meta_grads()(jax.random.key(11))
    assert float(jnp.abs(g_ref[3]).min()) > 1e-6  # w really gets a gradient
    np.testing.assert_allclose(g_rev[3], g_ref[3], rtol=1e-6)


def _temp_bytes(mode, steps, every="auto"):
    f = jnp.float32
    ks = jax.random.split(jax.random.key(0), 4)
    theta = {"w1": jax.random.normal(ks[0], (8, 16), f), "w2": jax.random.normal(ks[1], (16, 2), f)}
    apply = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
    x, y = jax.random.normal(ks[2], (512, 8), f), jax.random.normal(ks[3], (512, 2), f)

    def outer(x, th):
        th_t = inner.train(apply, mse, th, (x, y), steps=steps, optimizer=inner.Adam(1e-3), mode=mode,
                           reverse_every=every)
        return mse(apply(th_t, x[:32]), y[:32])

    comp = jax.jit(jax.grad(outer)).lower(x, theta).compile()
    return comp.memory_analysis().temp_size_in_bytes, sum(a.size for a in jax.tree_util.tree_leaves(theta))


@pytest.mark.slow
def test_memory_flat_in_steps():
    pure10, _ = _temp_bytes("reverse_adam", 10, None)
    pure1000, _ = _temp_bytes("reverse_adam", 1000, None)
    assert pure1000 <= 1.5 * pure10, (pure10, pure1000)
    seg10, n_params = _temp_bytes("reverse_adam", 10)
    seg1000, _ = _temp_bytes("reverse_adam", 1000)
    # Segmented reversal only adds the stored (θ, m, v) states: 3 |θ| floats every K steps.
    k = inner.default_reverse_every(jnp.float32)
    assert seg1000 - seg10 <= 1.2 * 3 * n_params * 4 * (1000 // k) + 4096, (seg10, seg1000)
    unr10, _ = _temp_bytes("unrolled", 10)
    unr1000, _ = _temp_bytes("unrolled", 1000)
    assert unr1000 > 20 * unr10, (unr10, unr1000)


def test_bad_inputs():
    theta, x, y, _, _ = _problem()
    ok = dict(steps=3, optimizer=inner.Adam(), mode="unrolled")
    with pytest.raises(ValueError, match="mode"):
        inner.train(mlp_apply, mse, theta, (x, y), **{**ok, "mode": "backprop"})
    with pytest.raises(ValueError, match="steps"):
        inner.train(mlp_apply, mse, theta, (x, y), **{**ok, "steps": 0})
    with pytest.raises(TypeError, match="optimizer"):
        inner.train(mlp_apply, mse, theta, (x, y), **{**ok, "optimizer": optax.adam(1e-3)})
    with pytest.raises(TypeError, match="apply"):
        inner.train(None, mse, theta, (x, y), **ok)
    with pytest.raises(TypeError, match="loss"):
        inner.train(mlp_apply, 3, theta, (x, y), **ok)
    with pytest.raises(TypeError, match="data"):
        inner.train(mlp_apply, mse, theta, x, **ok)
    with pytest.raises(TypeError, match="theta0"):
        inner.train(mlp_apply, mse, {"w": jnp.arange(3)}, (x, y), **ok)
    with pytest.raises(ValueError, match="reverse_every"):
        inner.train(mlp_apply, mse, theta, (x, y), steps=3, mode="reverse_adam", reverse_every=0)
    with pytest.raises(ValueError, match="b1"):
        inner.adam(1e-3, b1=1.0)


@pytest.mark.slow
def test_float32_default_reverse_matches_checkpointed_from_pretrained_theta():
    # θ₀ pretrained on (xr, yr), then trained on other data: the gradients grow along the
    # trajectory, where reconstructing v by subtraction loses float32 precision. The
    # default (stored state every step in float32) must be as exact as checkpointing;
    # a reversed segment (K = 10) measurably is not (2e-4 here, sign flips on SASRec).
    theta, x, y, xr, yr = _problem(jnp.float32, hidden=64)
    tx = optax.adam(1e-2)

    def pre(carry, _):
        p, st = carry
        u, st = tx.update(jax.grad(lambda q: mse(mlp_apply(q, xr), yr))(p), st)
        return (optax.apply_updates(p, u), st), None

    theta = jax.jit(lambda p: jax.lax.scan(pre, (p, tx.init(p)), None, length=500)[0][0])(theta)

    def meta_grad(mode, every):
        def outer(x):
            th = inner.train(mlp_apply, mse, theta, (x, y), steps=10, optimizer=inner.Adam(3e-3), mode=mode,
                             reverse_every=every)
            return mse(mlp_apply(th, xr), yr)

        return jax.jit(jax.grad(outer))(x)

    ref = meta_grad("checkpointed", None)
    assert inner.default_reverse_every(jnp.float32) == 1
    assert _rel(meta_grad("reverse_adam", "auto"), ref) < 2e-6
    assert _rel(meta_grad("reverse_adam", 10), ref) > 2e-5



def mlp_dropout_apply(p, x, key, rate=0.4):
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    keep = jax.random.bernoulli(key, 1 - rate, h.shape)
    return jnp.where(keep, h / (1 - rate), 0.0) @ p["w2"] + p["b2"]


def test_dropout_trajectory_is_fold_in_key_t():
    # With a key, step t uses the masks of fold_in(key, t): equal to a hand-written optax loop.
    theta, x, y, _, _ = _problem()
    key = jax.random.key(9)
    fns = [lambda th, m=m: inner.train(mlp_dropout_apply, mse, th, (x, y), steps=5, optimizer=inner.Adam(0.02),
                                       mode=m, key=key) for m in inner.MODES]
    det = lambda th: inner.train(mlp_apply, mse, th, (x, y), steps=5, optimizer=inner.Adam(0.02))
    p, (*outs, det) = _optax_and(lambda q, t: mse(mlp_dropout_apply(q, x, jax.random.fold_in(key, t)), y), 0.02, 5,
                                 theta, *fns, det)
    for out in outs:
        np.testing.assert_allclose(_flat(out), _flat(p), rtol=1e-10, atol=1e-12)
    assert _rel(det, p) > 1e-3  # the masks really change the trajectory


@functools.cache
def _dropout_meta_grads():
    """``key ↦`` value and gradient in (x, y, θ₀, w) of the real loss after 15 inner Adam
    steps with dropout, for ('unrolled', 'auto'), ('reverse_adam', 'auto') and
    ('reverse_adam', None). The inner loss weighs the two outputs by w, an array it closes
    over. Compiled once for the tests that read it."""
    theta, x, y, xr, yr = _problem()
    w = jnp.asarray(np.linspace(0.5, 1.5, 2))

    @jax.jit
    def grads(x, y, th, w, key):
        def outer(x, y, th, w, mode, every):
            loss = lambda o, t: jnp.mean(w * (o - t) ** 2)  # closes over a traced array
            th_t = inner.train(mlp_dropout_apply, loss, th, (x, y), steps=15, optimizer=inner.Adam(0.01),
                               mode=mode, key=key, reverse_every=every)
            return mse(mlp_apply(th_t, xr), yr)

        # The reversal is what must regenerate each step's masks on the way back; checkpointed
        # mode with dropout is checked by the slow SASRec test below (one compilation fewer here).
        modes = (("unrolled", "auto"), ("reverse_adam", "auto"), ("reverse_adam", None))
        return [jax.value_and_grad(outer, argnums=(0, 1, 2, 3))(x, y, th, w, m, e) for m, e in modes]

    return lambda key: grads(x, y, theta, w, key)


def test_three_modes_same_meta_gradient_with_dropout():
    (v_ref, g_ref), *others = _dropout_meta_grads()(jax.random.key(11))
    for (v, g), name in zip(others, ("reverse_adam auto", "reverse_adam pure"), strict=True):
        np.testing.assert_allclose(v, v_ref, rtol=1e-12)
        assert _rel(g, g_ref) < 1e-6, (name, _rel(g, g_ref))
    (_, g_other), *_ = _dropout_meta_grads()(jax.random.key(12))
    assert _rel(g_other, g_ref) > 1e-2  # another key, other masks, another meta-gradient


@pytest.mark.slow  # ~3 min on 2 cores: four compilations of a SASRec meta-gradient
def test_three_modes_same_meta_gradient_sasrec_dropout():
    from models.sasrec import sasrec

    n_items, ln = 7, 5
    model = sasrec(n_items, max_len=ln, d_model=8, n_heads=1, n_layers=1, dtype=jnp.float64, dropout=0.3)
    real = jax.random.randint(jax.random.key(1), (6, ln + 1), 0, n_items)
    theta0 = model.init(jax.random.key(2), real[:, :-1])
    logits = jax.random.normal(jax.random.key(4), (3, ln + 1, n_items), jnp.float64)
    apply = lambda p, x, k: model.apply(p, x, train=True, key=k)

    def soft_xent(lg, t):
        return -jnp.mean(jnp.sum(t * jax.nn.log_softmax(lg), -1))

    def outer(lg, th, mode, key):
        d = jax.nn.softmax(lg)
        th_t = inner.train(apply, soft_xent, th, (d[:, :-1], d[:, 1:]), steps=12, optimizer=inner.Adam(0.02),
                           mode=mode, key=key)
        lp = jax.nn.log_softmax(model.apply(th_t, real[:, :-1]))
        return -jnp.mean(jnp.take_along_axis(lp, real[:, 1:, None], -1))

    grad = jax.jit(jax.value_and_grad(outer, argnums=(0, 1)), static_argnums=2)
    key = jax.random.key(11)
    v_ref, g_ref = grad(logits, theta0, "unrolled", key)
    for mode in ("checkpointed", "reverse_adam"):
        v, g = grad(logits, theta0, mode, key)
        np.testing.assert_allclose(v, v_ref, rtol=1e-12)
        assert _rel(g, g_ref) < 1e-6, (mode, _rel(g, g_ref))
    _, g_other = grad(logits, theta0, "unrolled", jax.random.key(12))
    assert _rel(g_other, g_ref) > 1e-3  # another key, other masks, another meta-gradient
