"""Recording per-example dynamics in an optax loop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models.mlp import mlp
from selection import scores, training_dynamics as td


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    return jnp.asarray(x), jnp.asarray(y)


_MODEL = mlp(2, hidden=(16,))


def _init(x):
    """Initial parameters: init's tree (traced, not compiled) with N(0, 1/shape[0]) numpy values.

    An init run eagerly or jitted would compile its random ops; kernels get N(0, 1/fan_in).
    """
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(_MODEL.init, jax.random.PRNGKey(0), x)
    return jax.tree_util.tree_map(lambda s: jnp.asarray((rng.normal(size=s.shape) / np.sqrt(s.shape[0])).astype(s.dtype)), shapes)


def test_train_with_dynamics_records_every_epoch():
    x, y = _data()
    model = _MODEL
    params, dyn = td.train_with_dynamics(jax.random.PRNGKey(1), model.apply, _init(x), optax.adam(0.05), x, y, epochs=6, batch_size=16)
    assert dyn.loss.shape == dyn.prob_true.shape == dyn.correct.shape == (6, 40)
    loss = np.asarray(dyn.loss, np.float64)  # checked in numpy: each eager jax op compiles
    assert loss[-1].mean() < loss[0].mean()
    np.testing.assert_allclose(dyn.prob_true, np.exp(-loss), rtol=1e-5)
    # the last record is the final model (record_examples compiled once, not op by op)
    last = jax.jit(td.record_examples, static_argnums=0)(model.apply, params, x, y)
    np.testing.assert_allclose(dyn.loss[-1], last.loss, rtol=1e-5, atol=1e-6)
    # feeds the dynamics scorers
    assert jax.jit(scores.forgetting_events)(dyn.correct).shape == (40,)
    assert jax.jit(scores.data_map)(dyn.prob_true, dyn.correct).variability.shape == (40,)


def test_recorder_in_a_user_loop():
    x, y = _data()
    model = _MODEL
    params = _init(x)
    opt = optax.sgd(0.5)
    state = opt.init(params)
    rec = td.DynamicsRecorder(model.apply, x, y)
    loss = lambda p: -jnp.mean(jax.nn.log_softmax(model.apply(p, x))[jnp.arange(40), y])

    @jax.jit  # the user's step, compiled once (eagerly, each of its ops compiles on its own)
    def step(params, state):
        upd, state = opt.update(jax.grad(loss)(params), state)
        return optax.apply_updates(params, upd), state

    for _ in range(3):
        params, state = step(params, state)
        rec.record(params)
    dyn = rec.dynamics()
    assert dyn.correct.shape == (3, 40) and dyn.correct.dtype == bool


def test_bad_inputs_name_the_argument():
    x, y = _data()
    model = mlp(2)
    with pytest.raises(ValueError, match="epochs"):
        td.train_with_dynamics(jax.random.PRNGKey(0), model.apply, None, optax.sgd(0.1), x, y, epochs=0)
    with pytest.raises(ValueError, match="record"):
        td.DynamicsRecorder(model.apply, x, y).dynamics()
    with pytest.raises(ValueError, match="expected equal sizes"):
        td.record_examples(model.apply, None, x, y[:3])
