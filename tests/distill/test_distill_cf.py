"""Distill-CF: objective gradient, resume, 8 devices, export, end-to-end on planted data."""

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import distill_cf as dcf
from models import infinite_ae
from models.kernels import KernelSpec


def planted(n_users=96, n_clusters=6, per_cluster=8, p_in=0.6, p_out=0.02, seed=0):
    """Users in clusters that like their cluster's item block; train/val split 80/20."""
    rng = np.random.default_rng(seed)
    n_items = n_clusters * per_cluster
    cluster = rng.integers(0, n_clusters, n_users)
    items_cluster = np.repeat(np.arange(n_clusters), per_cluster)
    p = np.where(cluster[:, None] == items_cluster[None, :], p_in, p_out)
    x = (rng.random((n_users, n_items)) < p).astype(np.float32)
    x[np.arange(n_users), cluster * per_cluster] = 1.0  # at least two positives per user
    x[np.arange(n_users), cluster * per_cluster + 1] = 1.0
    to_val = (rng.random(x.shape) < 0.25) & (x > 0)
    to_val[np.arange(n_users), cluster * per_cluster] = False
    train, val = x * ~to_val, x * to_val
    return train.astype(np.float32), val.astype(np.float32)


def test_objective_gradient_matches_finite_differences(x64):
    rng = np.random.default_rng(0)
    settings = dcf.Settings(n_syn_users=3, n_samples=2, tau=0.7, lam2=0.05)
    logits = jnp.asarray(rng.normal(size=(3, 7)))
    rows = jnp.asarray((rng.random((5, 7)) < 0.4).astype(np.float64))
    batch = dcf.Batch(rows, jnp.asarray(0.3))
    key = jax.random.key(1)
    f = jax.jit(lambda g: dcf.objective(g, batch, key, settings))
    grad = jax.grad(f)(logits)
    for _ in range(3):
        v = jnp.asarray(rng.normal(size=(3, 7)))
        eps = 1e-5
        fd = (f(logits + eps * v) - f(logits - eps * v)) / (2 * eps)
        np.testing.assert_allclose(float(jnp.vdot(grad, v)), float(fd), rtol=1e-5, atol=1e-8)


def _settings(steps, **kw):
    args = dict(
        n_syn_users=6, n_samples=20, tau=0.5, init_scale=4.0, learning_rate=0.1, eval_every=2,
        checkpoint_every=2, batch_size=48, lam2=1e-3,
    )
    args.update(kw)
    return dcf.Settings(steps=steps, **args)


def _run(train, val, steps, ckpt=None, mesh=None, **kw):
    return dcf.distill(jax.random.key(0), dcf.Data(train, val), _settings(steps, **kw), mesh=mesh,
                       checkpoint_dir=ckpt)


@pytest.mark.slow  # the user-state resume is also tested on a tiny objective in test_loop.py
def test_exact_resume_after_kill(tmp_path):
    train, val = planted()
    full = _run(train, val, 6)
    ckpt = str(tmp_path / "ck")
    _run(train, val, 4, ckpt)  # "killed" after 4 of 6 steps
    resumed = _run(train, val, 6, ckpt)
    np.testing.assert_array_equal(np.asarray(resumed.params), np.asarray(full.params))
    np.testing.assert_array_equal(np.asarray(resumed.data), np.asarray(full.data))
    assert resumed.history.losses == full.history.losses
    assert resumed.history.eval_values == full.history.eval_values
    assert resumed.lams == full.lams and resumed.lam == full.lam
    # The λ schedule lives in the checkpoint: no side file beside it.
    assert sorted(p.name for p in (tmp_path / "ck").iterdir() if not p.name.isdigit()) == []


@pytest.mark.slow  # checkpoint refusal is tested on a tiny objective in test_loop.py
def test_resume_refuses_other_settings_or_data(tmp_path):
    train, val = planted()
    ckpt = str(tmp_path / "ck")
    _run(train, val, 2, ckpt, tau=0.5)
    with pytest.raises(ValueError, match=r"checkpoint_dir: .*run\.tau: checkpoint has 0\.5, this run has 2\.0"):
        _run(train, val, 4, ckpt, tau=2.0)
    with pytest.raises(ValueError, match=r"run\.key_data"):
        dcf.distill(jax.random.key(1), dcf.Data(train, val), _settings(4, tau=0.5), checkpoint_dir=ckpt)
    other = train.copy()
    other[0, :] = 1 - other[0, :]
    with pytest.raises(ValueError, match=r"run\.train\.sha256"):
        _run(other, val, 4, ckpt, tau=0.5)
    assert _run(train, val, 4, ckpt, tau=0.5).history.steps == [0, 1, 2, 3]


def _sharded_resume():
    import tempfile

    from distill import parallel

    mesh = parallel.make_mesh()
    train, val = planted()
    full = _run(train, val, 4, mesh=mesh)
    with tempfile.TemporaryDirectory() as d:
        _run(train, val, 2, d, mesh=mesh)
        resumed = _run(train, val, 4, d, mesh=mesh)
    np.testing.assert_allclose(np.asarray(resumed.params), np.asarray(full.params), rtol=1e-6)
    assert resumed.lams == full.lams


@pytest.mark.slow
def test_sharded_run_resumes_on_8_devices(multidevice):
    multidevice(_sharded_resume)


def _eight_devices_equal_one():
    jax.config.update("jax_enable_x64", True)
    from distill import parallel

    mesh = parallel.make_mesh()
    assert mesh.size == 8
    train, _ = planted(n_users=21)  # ragged: 21 rows over 8 devices
    settings = dcf.Settings(n_syn_users=5, n_samples=6, tau=0.5, lam2=0.01)
    logits = jnp.asarray(train[:5], jnp.float64) * 3.0
    batch = dcf.Batch(jnp.asarray(train, jnp.float64), jnp.asarray(0.5))
    key = jax.random.key(2)
    obj1 = functools.partial(dcf.objective, settings=settings)
    obj8 = functools.partial(dcf.objective, settings=settings, mesh=mesh)  # 5 synthetic rows, 8 devices
    v1, g1 = jax.jit(jax.value_and_grad(obj1))(logits, batch, key)
    v8, g8 = jax.jit(jax.value_and_grad(obj8))(logits, batch, key)
    # Sharded sampling reorders float sums (~1e-16); the ill-conditioned K's Cholesky
    # amplifies that to ~1e-10 in the loss.
    np.testing.assert_allclose(v8, v1, rtol=1e-9)
    np.testing.assert_allclose(g8, g1, rtol=1e-6, atol=1e-12)


@pytest.mark.slow
def test_objective_on_8_devices(multidevice):
    multidevice(_eight_devices_equal_one)


def test_export_roundtrip_numpy_only(tmp_path):
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(4, 9)), jnp.float32)
    item_ids = np.arange(100, 109)
    path = dcf.export_summary(
        tmp_path / "summary", logits, key=jax.random.key(0), n_samples=5, tau=0.5,
        item_ids=item_ids, settings={"lam": 1.0, "lam2": 1e-3},
    )
    # numpy + json only
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    settings = json.loads(pathlib.Path(str(path)[:-4] + ".json").read_text())["settings"]
    assert settings["method"] == "distill_cf" and settings["n_samples"] == 5 and settings["lam"] == 1.0
    np.testing.assert_array_equal(arrays["logits"], np.asarray(logits))
    np.testing.assert_allclose(arrays["probs"].sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(arrays["item_ids"], item_ids)
    b = arrays["binary"]
    assert set(np.unique(b)) <= {0.0, 1.0} and np.all((b.sum(1) >= 1) & (b.sum(1) <= 5))
    s = arrays["summary"]
    assert s.min() >= 0 and s.max() <= 1
    loaded = dcf.load_summary(tmp_path / "summary")
    np.testing.assert_array_equal(loaded.summary, s)
    np.testing.assert_array_equal(loaded.binary, b)
    assert loaded.settings["tau"] == 0.5


@pytest.fixture(scope="module")
def small_result():
    """A 4-step run on planted data (validations at 2 and 4) and its data."""
    train, val = planted()
    return _run(train, val, 4, eval_every=2, patience=3), train, val


def test_result_settings_are_the_settings_and_json(small_result):
    res, train, val = small_result
    assert res.settings == _settings(4, eval_every=2, patience=3)
    record = dcf.settings_json(res.settings)
    json.dumps(record)  # plain JSON
    expected = dict(
        n_syn_users=6, n_samples=20, tau=0.5, lam2=1e-3, learning_rate=0.1, init_scale=4.0, steps=4,
        batch_size=48, lams=list(infinite_ae.DEFAULT_LAMS), metric="nDCG@10", eval_every=2, patience=3,
        checkpoint_every=2, kernel=dict(depth=1, w_std=2**0.5, b_std=0.1), custom_vjp=True, noise="hash",
        init_users="random", lr_schedule="constant",
    )
    assert record == expected
    # defaults are the documented tuned values, every field documented
    assert dcf.Settings() == dcf.Settings(
        n_syn_users=34, n_samples=200, tau=10.0, lam2=0.0, learning_rate=0.1, init_scale=10.0, steps=200,
        batch_size=None, lams=infinite_ae.DEFAULT_LAMS, metric="nDCG@10", eval_every=50, patience=4,
        checkpoint_every=100, kernel=KernelSpec(), custom_vjp=True, noise="hash", init_users="random",
        lr_schedule="constant",
    )
    assert all(f"{name}:" in dcf.Settings.__doc__ for name in dcf.Settings._fields)
    hash(dcf.Settings())  # a static jit argument


def test_init_and_sample_batch_are_the_first_step_of_distill():
    train, val = planted()
    data, key = dcf.Data(train, val), jax.random.key(3)
    settings = dcf.Settings(n_syn_users=5, n_samples=10, tau=0.5, steps=0, batch_size=40)
    res = dcf.distill(key, data, settings)
    assert res.settings == settings and res.history.losses == [] and res.history.best_step == -1
    g0 = dcf.init(key, data, settings)
    np.testing.assert_array_equal(np.asarray(res.params), np.asarray(g0))  # no step: Γ₀ comes back
    batch = dcf.sample_batch(key, data, settings)
    assert batch.rows.shape == (40, train.shape[1]) and float(batch.lam) == res.lams[0] == res.lam
    # step 0's users: drawn with fold_in(k_batch, 0), k_batch the second of split(key, 4)
    idx = jax.random.choice(jax.random.fold_in(jax.random.split(key, 4)[1], 0), 96, (40,), replace=False)
    np.testing.assert_array_equal(np.asarray(batch.rows), train[np.asarray(idx)])
    full = dcf.sample_batch(key, data, settings._replace(batch_size=None))
    np.testing.assert_array_equal(np.asarray(full.rows), train)


def test_active_init_takes_the_most_active_users():
    train, val = planted()
    settings = dcf.Settings(n_syn_users=5, init_scale=3.0, init_users="active")
    counts = train.sum(1)
    top = np.argsort(-counts, kind="stable")[:5]
    assert counts[top].min() >= np.sort(counts)[-5]  # brute force: the 5 largest row sums
    for seed in (0, 7):  # the key does not matter
        g0 = dcf.init(jax.random.key(seed), dcf.Data(train, val), settings)
        np.testing.assert_array_equal(np.asarray(g0), 3.0 * train[top])
    rand = dcf.init(jax.random.key(0), dcf.Data(train, val), settings._replace(init_users="random"))
    assert not np.array_equal(np.asarray(rand), np.asarray(g0))


def test_cosine_schedule_steps_and_fingerprint():
    # Adam's update for a constant gradient 1 is −η_t·1/(1+ε) ≈ −η_t at every step t.
    s = dcf.Settings(learning_rate=0.1, steps=4, lr_schedule="cosine")
    opt = dcf._optimizer(s)
    p, state, got = jnp.zeros(()), opt.init(jnp.zeros(())), []
    for _ in range(5):
        u, state = opt.update(jnp.ones(()), state, p)
        got.append(-float(u))
    expected = [0.1 * 0.5 * (1 + np.cos(np.pi * min(t, 4) / 4)) for t in range(5)]  # 0.1, .0854, .05, .0146, 0
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)
    const = dcf._optimizer(s._replace(lr_schedule="constant"))
    u, _ = const.update(jnp.ones(()), const.init(jnp.zeros(())), jnp.zeros(()))
    np.testing.assert_allclose(-float(u), 0.1, rtol=1e-5)
    # steps is resumable under a constant η, part of the fingerprint under cosine; the new
    # settings at their defaults leave the fingerprint as it was before they existed
    train, val = planted(n_users=20)
    key, data = jax.random.key(0), dcf.Data(train, val)
    plain = dcf._fingerprint(key, data, dcf.Settings())
    assert "steps" not in plain and "init_users" not in plain and "lr_schedule" not in plain
    cos = dcf._fingerprint(key, data, s)
    assert cos["steps"] == 4 and cos["lr_schedule"] == "cosine"
    assert dcf._fingerprint(key, data, dcf.Settings(init_users="active"))["init_users"] == "active"


def test_export_from_result_takes_everything_from_it(small_result, tmp_path):
    res, train, _ = small_result
    item_ids = np.arange(1000, 1000 + train.shape[1])
    path = dcf.export_summary(tmp_path / "s", res, item_ids=item_ids, settings={"dataset": "planted"})
    loaded = dcf.load_summary(path)
    st = loaded.settings
    assert (st["n_samples"], st["tau"], st["noise"], st["lam2"]) == (20, 0.5, "hash", 1e-3)
    assert st["lam"] == res.lam and st["val_value"] == res.val_value and st["best_step"] == res.history.best_step
    assert st["dataset"] == "planted" and st["method"] == "distill_cf" and st["learning_rate"] == 0.1
    assert {k: st[k] for k in dcf.Settings._fields} == dcf.settings_json(res.settings)  # every setting
    np.testing.assert_array_equal(loaded.item_ids, item_ids)
    np.testing.assert_array_equal(loaded.logits, np.asarray(res.params))
    np.testing.assert_array_equal(loaded.summary, np.asarray(res.data))  # the validated summary
    # the sampled binary summary is reproducible: default key = key(EXPORT_KEY_SEED)
    again = dcf.export_summary(tmp_path / "t", res, key=jax.random.key(dcf.EXPORT_KEY_SEED))
    np.testing.assert_array_equal(dcf.load_summary(again).binary, loaded.binary)
    np.testing.assert_array_equal(dcf.load_summary(again).item_ids, np.arange(train.shape[1]))
    # the same binary as the bare-Γ form with the same γ and key
    old = dcf.export_summary(tmp_path / "u", res.params, key=jax.random.key(0), n_samples=20, tau=0.5)
    np.testing.assert_array_equal(dcf.load_summary(old).binary, loaded.binary)
    with pytest.raises(ValueError, match="tau"):
        dcf.export_summary(tmp_path / "v", res, tau=2.0)
    with pytest.raises(TypeError, match="n_samples"):
        dcf.export_summary(tmp_path / "w", res.params, tau=2.0)


def test_end_to_end_beats_random_sample_on_planted_data():
    train, val = planted(seed=1)
    # The settings of small_result but the step count: the same compiled outer step.
    res = _run(train, val, 40, eval_every=10)
    losses = res.history.losses
    assert np.mean(losses[-5:]) < losses[0]
    random_vals = []
    for seed in range(10):
        idx = np.random.default_rng(seed).choice(train.shape[0], 6, replace=False)
        random_vals.append(dcf.select_lambda(train[idx], train, val).best_value)
    assert res.val_value > np.mean(random_vals), (res.val_value, random_vals)
    assert res.val_value > np.percentile(random_vals, 80), (res.val_value, random_vals)


@pytest.fixture(scope="module")
def ml_120():
    """120 random users of MovieLens latest-small (their 4,806 items), split 80/10/10."""
    from distill import data as D

    inter = D.to_implicit(D.load_movielens_small())
    keep = np.isin(inter.users, np.random.default_rng(0).choice(inter.n_users, 120, replace=False))
    sub = D.from_arrays(inter.user_ids[inter.users[keep]], inter.item_ids[inter.items[keep]])
    return D.random_split(sub, seed=0)


def test_defaults_beat_random_users_in_30_steps(ml_120):
    # 6 synthetic users (5 %), every setting but `steps` at its default. With the
    # former defaults (γ 50, τ 1, η 0.04, Γ = real rows) the same run scores
    # validation nDCG@10 ≈ 1.3, far below random users (≈ 6.3).
    split = ml_120
    assert split.train.shape == (120, 4806)
    res = dcf.distill(jax.random.key(0), dcf.Data(split.train, split.val), dcf.Settings(n_syn_users=6, steps=30))
    random_vals = []
    for seed in range(10):
        idx = np.random.default_rng(seed).choice(split.n_users, 6, replace=False)
        random_vals.append(dcf.select_lambda(split.train[idx], split.train, split.val).best_value)
    assert res.val_value > 1.25 * np.mean(random_vals), (res.val_value, random_vals)
    assert res.val_value > np.max(random_vals), (res.val_value, random_vals)
    assert res.history.steps == list(range(30)) and res.history.eval_steps == [30]


def test_bad_inputs():
    train, val = planted(n_users=20)
    key, data = jax.random.key(0), dcf.Data(train, val)
    three = dcf.Settings(n_syn_users=3)
    with pytest.raises(ValueError, match="^settings.n_syn_users"):
        dcf.distill(key, data, dcf.Settings(n_syn_users=21))
    with pytest.raises(ValueError, match="^settings.n_syn_users"):
        dcf.init(key, data, dcf.Settings(n_syn_users=21))
    with pytest.raises(ValueError, match="^settings.batch_size"):
        dcf.sample_batch(key, data, dcf.Settings(n_syn_users=3, batch_size=21))
    with pytest.raises(ValueError, match="^data.val"):
        dcf.distill(key, dcf.Data(train, val[:, :5]), three)
    with pytest.raises(ValueError, match="^data.train"):
        dcf.distill(key, dcf.Data(train * 2, val), three)
    with pytest.raises(TypeError, match="^data"):
        dcf.distill(key, (train, val), three)
    with pytest.raises(TypeError, match="^settings"):
        dcf.distill(key, data, {"n_syn_users": 3})
    with pytest.raises(ValueError, match="^settings.lam2"):
        dcf.distill(key, data, three._replace(lam2=-1.0))
    with pytest.raises(ValueError, match="^settings.lams"):
        dcf.distill(key, data, three._replace(lams=()))
    with pytest.raises(TypeError, match="^settings.lams"):
        dcf.distill(key, data, three._replace(lams=[1.0]))
    with pytest.raises(ValueError, match="^settings.metric"):
        dcf.init(key, data, three._replace(metric="MAP@10"))
    with pytest.raises(ValueError, match="^settings.noise"):
        dcf.init(key, data, three._replace(noise="philox"))
    with pytest.raises(ValueError, match="^settings.init_users"):
        dcf.init(key, data, three._replace(init_users="head"))
    with pytest.raises(ValueError, match="^settings.lr_schedule"):
        dcf.distill(key, data, three._replace(lr_schedule="step"))
    with pytest.raises(TypeError, match="^settings.kernel"):
        dcf.init(key, data, three._replace(kernel=(1, 2.0, 0.1)))
    small = dcf.Settings(n_syn_users=3, n_samples=2, tau=1.0)
    g = jnp.asarray(train[:3])
    with pytest.raises(TypeError, match="batch"):
        dcf.objective(g, jnp.asarray(train), key, small)
    with pytest.raises(ValueError, match="batch.rows"):
        dcf.objective(g, dcf.Batch(jnp.asarray(train[:, :4]), jnp.asarray(1.0)), key, small)
    with pytest.raises(ValueError, match="^syn_params"):
        dcf.objective(g[:2], dcf.Batch(jnp.asarray(train), jnp.asarray(1.0)), key, small)
    with pytest.raises(ValueError, match="val"):
        dcf.select_lambda(train[:3], train, val[:4])
    with pytest.raises(ValueError, match="item_ids"):
        dcf.export_summary("/tmp/x", g, key=key, n_samples=2, tau=1.0, item_ids=np.arange(3))


def test_all_zero_validation_is_blamed_on_val():
    train, _ = planted(n_users=20)
    settings = dcf.Settings(n_syn_users=3, steps=1)
    with pytest.raises(ValueError, match="^data.val: expected at least one user with a validation item"):
        dcf.distill(jax.random.key(0), dcf.Data(train, np.zeros_like(train)), settings)
    with pytest.raises(TypeError, match="key"):
        dcf.distill(0, dcf.Data(train, 1 - train), settings)
