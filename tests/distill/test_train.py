"""The one model-training loop and the one trajectory store, against hand-written optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distill import trajectories, train
from models import krr


@pytest.fixture(autouse=True)
def _float64(x64):
    yield


def _problem():
    x = jax.random.normal(jax.random.key(0), (32, 3), jnp.float64)
    y = x @ jnp.array([1.0, -2.0, 0.5], jnp.float64) + 0.1
    params = {"w": jnp.zeros(3, jnp.float64), "b": jnp.zeros((), jnp.float64)}

    def loss(p, batch, key):
        xb, yb = batch
        noise = 0.01 * jax.random.normal(key, ())  # the key reaches the loss
        return jnp.mean((xb @ p["w"] + p["b"] - yb) ** 2) + noise

    return x, y, params, loss


def test_train_model_equals_hand_written_optax_loop():
    x, y, params, loss = _problem()
    key, opt = jax.random.key(1), optax.adam(0.05)
    idx = train.epoch_batches(jax.random.key(2), 32, 8)
    out = train.train_model(key, params, loss, lambda t: (x[idx(t)], y[idx(t)]), optimizer=opt, steps=20)
    p, s, losses = params, opt.init(params), []
    for t in range(20):
        b = (x[idx(t)], y[idx(t)])
        v, g = jax.value_and_grad(loss)(p, b, jax.random.fold_in(key, t))
        u, s = opt.update(g, s, p)
        p = optax.apply_updates(p, u)
        losses.append(float(v))
    np.testing.assert_allclose(out.params["w"], p["w"], rtol=1e-12)
    np.testing.assert_allclose(out.history.losses, losses, rtol=1e-12)
    assert out.history.best_step == -1 and out.snapshots is None


def test_scan_equals_driver_and_vmaps():
    x, y, params, loss = _problem()
    key, opt = jax.random.key(3), optax.sgd(0.1)
    batches = (jnp.stack([x] * 5), jnp.stack([y] * 5))
    st, losses = train.scan(train.init(params, opt), batches, key, loss=loss, optimizer=opt)
    out = train.train_model(key, params, loss, (x, y), optimizer=opt, steps=5)
    np.testing.assert_allclose(st.params["w"], out.params["w"], rtol=1e-12)
    np.testing.assert_allclose(losses, out.history.losses, rtol=1e-12)
    keys = jax.random.split(key, 2)
    many = jax.vmap(lambda k: train.scan(train.init(params, opt), batches, k, loss=loss, optimizer=opt)[1])(keys)
    assert many.shape == (2, 5) and not np.allclose(many[0], many[1])


def test_evaluation_patience_best_and_snapshots():
    x, y, params, loss = _problem()
    evals = iter([3.0, 1.0, 2.0, 0.5, 0.4, 0.3])
    seen = []
    out = train.train_model(jax.random.key(0), params, loss, (x, y), optimizer=optax.adam(0.1), steps=12,
                            evaluate=lambda p: next(evals), eval_every=2, patience=3, snapshot_every=4,
                            callback=lambda p, t: seen.append(t))
    assert out.history.eval_steps == [2, 4, 6, 8] and out.history.stopped_early
    assert out.history.best_step == 2 and out.history.best_value == 3.0
    assert seen == list(range(1, 9)) and len(out.history.losses) == 8
    assert out.snapshots["w"].shape == (2, 3)  # steps 0 and 4; the run stopped at 8
    assert not np.allclose(out.params["w"], out.last_params["w"])


def test_nan_evaluation_is_never_best():
    x, y, params, loss = _problem()
    vals = iter([float("nan"), 1.0])
    out = train.train_model(jax.random.key(0), params, loss, (x, y), optimizer=optax.adam(0.1), steps=4,
                            evaluate=lambda p: next(vals), eval_every=2, maximize=False)
    assert out.history.best_step == 4


def test_epoch_batches_cover_each_epoch_once():
    idx = train.epoch_batches(jax.random.key(0), 10, 3)
    first = np.concatenate([np.asarray(idx(t)) for t in range(3)])
    assert len(set(first.tolist())) == 9
    assert not np.array_equal(np.asarray(idx(0)), np.asarray(idx(3)))
    with pytest.raises(ValueError, match="batch_size"):
        train.epoch_batches(jax.random.key(0), 10, 0)


def test_trajectory_store_round_trip(tmp_path):
    traj = {"w": jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)}
    trajectories.save(tmp_path / "s", traj)
    assert trajectories.completed_runs(tmp_path / "s") == [0, 1]
    back = trajectories.load(tmp_path / "s", like={"w": traj["w"][0]})
    np.testing.assert_array_equal(back["w"], traj["w"])
    assert trajectories.completed_runs(tmp_path / "none") == []
    with pytest.raises(FileNotFoundError, match="root"):
        trajectories.load(tmp_path / "none")
    trajectories.save_run(tmp_path / "gap", 1, {"w": traj["w"][0]})
    with pytest.raises(ValueError, match="missing"):
        trajectories.load(tmp_path / "gap")


def test_krr_equals_explicit_inverse_and_nan_for_traced_negative_ridge():
    a = jax.random.normal(jax.random.key(0), (6, 4), jnp.float64)
    k, y = a @ a.T, jax.random.normal(jax.random.key(1), (6, 2), jnp.float64)
    lam = 0.3
    explicit = k[:2] @ jnp.linalg.inv(k + lam * jnp.trace(k) / 6 * jnp.eye(6)) @ y
    np.testing.assert_allclose(krr.predict(k[:2], k, y, lam), explicit, rtol=1e-9)
    assert np.isnan(jax.jit(lambda l: krr.solve(k, y, l))(-1.0)).all()
    with pytest.raises(ValueError, match="lam"):
        krr.solve(k, y, -1.0)


def test_scan_epochs_equals_one_scan_per_epoch_and_history_of():
    x, y, params, loss = _problem()
    opt, key = optax.adam(0.05), jax.random.key(5)

    def batches_of(k):  # a fresh shuffle per epoch: 4 batches of 8 rows
        idx = jax.random.permutation(k, 32).reshape(4, 8)
        return x[idx], y[idx]

    st, losses = jax.jit(lambda s, k: train.scan_epochs(s, k, batches_of, epochs=3, loss=loss, optimizer=opt))(
        train.init(params, opt), key)
    ref, ref_losses = train.init(params, opt), []
    for k in jax.random.split(key, 3):
        k_b, k_s = jax.random.split(k)
        ref, l = train.scan(ref, batches_of(k_b), k_s, loss=loss, optimizer=opt)
        ref_losses.extend(np.asarray(l))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-12)
    np.testing.assert_allclose(st.params["w"], ref.params["w"], rtol=1e-12)
    h = train.history_of(losses, [(4, 0.5), (8, 0.9), (12, 0.7)])
    assert h.steps == list(range(12)) and h.best_step == 8 and h.best_value == 0.9 and not h.stopped_early
    empty = train.history_of(losses[:2])
    assert empty.best_step == -1 and np.isnan(empty.best_value) and empty.eval_steps == []
