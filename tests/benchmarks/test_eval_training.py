"""benchmarks._common's evaluation training: the papers' SGD schedule, per-image augmentation, weighted draws."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from benchmarks import _common as C
from benchmarks import matching as bench
from distill.matching import augment
from models.mlp import mlp


def test_sgd_is_momentum_weight_decay_and_a_tenfold_drop_at_half():
    opt = C.eval_optimizer("sgd", 0.1, steps=4)
    p = {"w": jnp.asarray([2.0, -1.0])}
    g = {"w": jnp.asarray([0.5, 0.25])}
    st = opt.init(p)
    v, ups = np.zeros(2), []
    for t in range(4):
        u, st = opt.update(g, st, p)
        ups.append(np.asarray(u["w"]))
        # by hand: v ← 0.9 v + (g + 5e-4 p); update −lr_t v with lr_t = 0.1, 0.1, 0.01, 0.01
        v = 0.9 * v + (np.asarray(g["w"]) + 5e-4 * np.asarray(p["w"]))
        np.testing.assert_allclose(ups[-1], -(0.1 if t < 2 else 0.01) * v, rtol=1e-6)
    with pytest.raises(ValueError, match="^optimizer:"):
        C.eval_optimizer("rmsprop", 0.1, 4)


def test_adam_path_is_plain_adam():
    opt, ref = C.eval_optimizer("adam", 1e-3, 10), optax.adam(1e-3)
    p, g = jnp.ones(3), jnp.asarray([0.1, -0.2, 0.3])
    u, _ = opt.update(g, opt.init(p), p)
    np.testing.assert_array_equal(u, ref.update(g, ref.init(p), p)[0])


@pytest.mark.slow  # ~10 s, mostly compiling the six DSA branches under vmap inside the training scan
def test_augmentation_reaches_the_training_images():
    # Class 0 is bright on the left, class 1 bright along the top. The test images are mirrored: class 0 is then
    # bright on the right, a pattern only flip-augmented training shows the model; the top stays the top.
    rng = np.random.default_rng(0)
    n = 64
    y = np.arange(n) % 2
    x = rng.normal(0, 0.1, (n, 4, 4, 1)).astype(np.float32)
    x[y == 0, :, :2] += 1.0
    x[y == 1, :2, :] += 1.0
    xt = np.ascontiguousarray(x[:, :, ::-1])
    model = mlp(2, hidden=(16,))
    keys = jnp.stack([jax.random.PRNGKey(i) for i in range(3)])
    w = np.ones((3, n), np.float32)
    kw = dict(steps=60, batch=32, lr=1e-2)
    plain = C.train_many(model, keys, w, x, y, xt, y, **kw)
    flipped = C.train_many(model, keys, w, x, y, xt, y, augment="flip", **kw)
    assert flipped.min() > 0.9  # mirrored class-0 images recognised
    assert plain.max() < 0.75  # without flips they are not: about half the test set is wrong


def test_papers_eval_protocol_flags():
    a = bench.parse_args([])
    assert (a.eval_optimizer, a.eval_lr, a.eval_steps, a.eval_augment) == ("adam", 1e-3, 300, None)
    a = bench.parse_args(["--eval-protocol", "papers"])
    assert (a.eval_optimizer, a.eval_lr, a.eval_steps, a.eval_augment) == ("sgd", 0.01, 1000, augment.DIGITS_STRATEGY)
    a = bench.parse_args(["--eval-protocol", "papers", "--dataset", "cifar10", "--eval-steps", "50"])
    assert (a.eval_steps, a.eval_augment) == (50, augment.CIFAR_STRATEGY)
