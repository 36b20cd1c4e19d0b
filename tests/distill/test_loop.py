"""The outer loop: equals a hand-written optax loop, early stopping, exact resume."""

import io
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distill import loop

pytestmark = pytest.mark.x64  # compares to 1e-6 and tighter

TARGET = np.random.default_rng(0).normal(size=(6, 3))  # float64; each test runs under x64


def _objective(params, batch, key):
    noise = 0.1 * jax.random.normal(key, params["w"].shape)
    return jnp.mean((params["w"] + noise - batch) ** 2) + 0.01 * jnp.sum(params["b"] ** 2)


def _batches(step):
    return TARGET * (1.0 + 0.01 * (step % 3))


def _init():
    return {"w": jnp.zeros((6, 3)), "b": jnp.ones(3)}


def test_equals_manual_optax_loop():
    key = jax.random.PRNGKey(3)
    opt = optax.adam(0.05)
    params, hist = loop.run(_objective, _init(), opt, _batches, steps=25, key=key, progress=False)
    p, s = _init(), opt.init(_init())
    losses = []
    for t in range(25):
        loss, g = jax.value_and_grad(_objective)(p, _batches(t), jax.random.fold_in(key, t))
        u, s = opt.update(g, s, p)
        p = optax.apply_updates(p, u)
        losses.append(float(loss))
    np.testing.assert_allclose(params["w"], p["w"], rtol=1e-12)
    np.testing.assert_allclose(hist.losses, losses, rtol=1e-12)
    assert hist.steps == list(range(25)) and hist.best_step == -1
    assert hist.losses[-1] < 0.5 * hist.losses[0]


def test_projection_and_fixed_batch():
    clip = lambda p: jax.tree_util.tree_map(lambda a: jnp.clip(a, -0.2, 0.2), p)
    params, _ = loop.run(_objective, _init(), optax.sgd(0.5), TARGET, steps=20,
                         key=jax.random.PRNGKey(0), project=clip, progress=False)
    assert float(jnp.max(jnp.abs(params["w"]))) <= 0.2 + 1e-12


def test_custom_update_takes_several_projected_updates_per_step():
    """``update`` replaces the step: here two half-batch updates per step, each through the
    loop's ``apply`` (optimizer + projection), equal to the hand-written loop."""
    key, opt = jax.random.PRNGKey(4), optax.adam(0.05)
    clip = lambda p: jax.tree_util.tree_map(lambda a: jnp.clip(a, -0.6, 0.6), p)
    half_loss = lambda p, half: jnp.mean((p["w"][:3] - half) ** 2) + jnp.sum(p["b"] ** 2)

    def update(params, opt_state, batch, step_key, apply):
        losses = []
        for half in (batch[:3], batch[3:]):
            loss, g = jax.value_and_grad(half_loss)(params, half)
            params, opt_state = apply(params, opt_state, g)
            losses.append(loss)
        return params, opt_state, (losses[0] + losses[1]) / 2

    params, hist = loop.run(None, _init(), opt, _batches, steps=6, key=key, project=clip, update=update,
                            progress=False)
    p, s, losses = _init(), opt.init(_init()), []
    for t in range(6):
        ls = []
        for half in (_batches(t)[:3], _batches(t)[3:]):
            loss, g = jax.value_and_grad(half_loss)(p, half)
            u, s = opt.update(g, s, p)
            p = clip(optax.apply_updates(p, u))
            ls.append(float(loss))
        losses.append(sum(ls) / 2)
    np.testing.assert_allclose(params["w"], p["w"], rtol=1e-12)
    np.testing.assert_allclose(hist.losses, losses, rtol=1e-12)
    assert float(jnp.max(jnp.abs(params["w"]))) <= 0.6 and float(jnp.max(jnp.abs(params["w"]))) > 0.2
    with pytest.raises(TypeError, match="update"):
        loop.run(None, _init(), opt, _batches, steps=1, key=key, update=3)
    with pytest.raises(TypeError, match="objective"):
        loop.run(None, _init(), opt, _batches, steps=1, key=key)


def test_early_stopping_returns_best_params():
    values = iter([1.0, 3.0, 2.0, 2.5, 2.9, 5.0])
    seen = []

    def evaluate(p):
        seen.append(p["w"])
        return next(values)

    params, hist = loop.run(_objective, _init(), optax.adam(0.05), _batches, steps=100,
                            key=jax.random.PRNGKey(0), evaluate=evaluate, eval_every=5,
                            patience=3, progress=False)
    assert hist.eval_values == [1.0, 3.0, 2.0, 2.5, 2.9]
    assert hist.stopped_early and hist.best_step == 10 and hist.best_value == 3.0
    np.testing.assert_array_equal(params["w"], seen[1])
    assert len(hist.losses) == 25


def test_resume_after_kill_is_exact(tmp_path):
    key = jax.random.PRNGKey(7)
    opt = optax.adam(0.05)
    evaluate = lambda p: -float(jnp.mean((p["w"] - TARGET) ** 2))
    kw = dict(key=key, evaluate=evaluate, eval_every=4, progress=False, checkpoint_every=5)
    full, full_hist = loop.run(_objective, _init(), opt, _batches, steps=30, **kw)

    # A run killed at step 17: the last checkpoint is at 15, steps 15-16 are lost.
    ckpt = str(tmp_path / "killed")

    def dying_batches(step):
        if step == 17:
            raise KeyboardInterrupt("killed")
        return _batches(step)

    with pytest.raises(KeyboardInterrupt):
        loop.run(_objective, _init(), opt, dying_batches, steps=30, checkpoint_dir=ckpt, **kw)
    assert loop.latest_step(ckpt) == 15
    resumed, hist = loop.run(_objective, _init(), opt, _batches, steps=30, checkpoint_dir=ckpt, **kw)
    np.testing.assert_array_equal(resumed["w"], full["w"])
    assert hist.losses == full_hist.losses and hist.eval_values == full_hist.eval_values
    assert loop.latest_step(ckpt) == 30

    # A finished shorter run extended to 30 steps equals the uninterrupted one too.
    ckpt2 = str(tmp_path / "extended")
    loop.run(_objective, _init(), opt, _batches, steps=17, checkpoint_dir=ckpt2, **kw)
    extended, hist2 = loop.run(_objective, _init(), opt, _batches, steps=30, checkpoint_dir=ckpt2, **kw)
    np.testing.assert_array_equal(extended["w"], full["w"])
    assert hist2.eval_values == full_hist.eval_values


def test_nan_objective_raises():
    bad = lambda p, b, k: jnp.sum(p["w"]) * jnp.nan
    with pytest.raises(FloatingPointError, match="step 0"):
        loop.run(bad, _init(), optax.sgd(0.1), TARGET, steps=3, key=jax.random.PRNGKey(0), progress=False)


def test_bad_input():
    k = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="steps"):
        loop.run(_objective, _init(), optax.sgd(0.1), TARGET, steps=-1, key=k)
    with pytest.raises(ValueError, match="patience"):
        loop.run(_objective, _init(), optax.sgd(0.1), TARGET, steps=1, key=k, patience=0)
    with pytest.raises(TypeError, match="optimizer"):
        loop.run(_objective, _init(), "adam", TARGET, steps=1, key=k)
    with pytest.raises(ValueError, match="syn_params"):
        loop.run(_objective, {}, optax.sgd(0.1), TARGET, steps=1, key=k)


def test_progress_in_a_log_prints_each_count_once(capsys):
    """stderr captured by pytest is not a TTY: plain lines, every ceil(40/20) = 2 steps."""
    loop.run(_objective, _init(), optax.sgd(0.1), _batches, steps=40, key=jax.random.PRNGKey(0))
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    counts = [int(re.match(r"distill: (\d+)/40 ", line).group(1)) for line in lines]
    assert counts == list(range(2, 41, 2)), err
    assert "loss=" in lines[-1]


def test_progress_lines_resume_early_stop_and_iterables():
    out = io.StringIO()
    bar = loop.LineProgress(total=10, desc="d", initial=3, every=4, file=out)
    for _ in range(5):  # 4, 5, 6, 7, 8: crosses the multiple 4 once, and 8
        bar.update(1)
    bar.close()  # stopped early at 8: already printed, nothing more
    bar.close()
    assert [line.split(" ")[1] for line in out.getvalue().splitlines()] == ["4/10", "8/10"]

    out = io.StringIO()
    seen = list(loop.LineProgress(range(7), desc="jobs", every=3, file=out))
    assert seen == list(range(7))
    assert [line.split(" ")[1] for line in out.getvalue().splitlines()] == ["3/7", "6/7", "7/7"]


def test_progress_bar_is_tqdm_on_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    bar = loop.progress_bar(total=5, desc="distill")
    assert not isinstance(bar, loop.LineProgress) and hasattr(bar, "format_dict")
    bar.close()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(loop.progress_bar(total=5), loop.LineProgress)
    assert not isinstance(loop.progress_bar(total=5, disable=True), loop.LineProgress)


def _kw(**extra):
    return dict(key=jax.random.PRNGKey(7), progress=False, checkpoint_every=5, **extra)


def test_resume_refuses_a_run_with_other_settings_or_data(tmp_path):
    ckpt = str(tmp_path / "c")
    fp = {"tau": 0.5, "data": loop.array_signature(TARGET)}
    loop.run(_objective, _init(), optax.adam(0.05), _batches, steps=10, checkpoint_dir=ckpt, fingerprint=fp, **_kw())
    with pytest.raises(ValueError, match=r"checkpoint_dir: .*run\.tau: checkpoint has 0\.5, this run has 2\.0"):
        loop.run(_objective, _init(), optax.adam(0.05), _batches, steps=20, checkpoint_dir=ckpt,
                 fingerprint={**fp, "tau": 2.0}, **_kw())
    other = {**fp, "data": loop.array_signature(TARGET + 1)}
    with pytest.raises(ValueError, match=r"run\.data\.sha256"):
        loop.run(_objective, _init(), optax.adam(0.05), _batches, steps=20, checkpoint_dir=ckpt, fingerprint=other, **_kw())
    with pytest.raises(ValueError, match=r"loop\.params\.leaves"):  # other parameter shapes
        loop.run(_objective, {"w": jnp.zeros((6, 4)), "b": jnp.ones(3)}, optax.adam(0.05), _batches, steps=20,
                 checkpoint_dir=ckpt, fingerprint=fp, **_kw())
    with pytest.raises(ValueError, match=r"loop\.eval_every"):
        loop.run(_objective, _init(), optax.adam(0.05), _batches, steps=20, checkpoint_dir=ckpt, fingerprint=fp,
                 **_kw(eval_every=3))
    # The same settings resume (and extend) it.
    _, hist = loop.run(_objective, _init(), optax.adam(0.05), _batches, steps=20, checkpoint_dir=ckpt,
                       fingerprint=fp, **_kw())
    assert hist.steps == list(range(20))


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    ckpt = tmp_path / "c"
    opt = optax.adam(0.05)
    full, _ = loop.run(_objective, _init(), opt, _batches, steps=15, **_kw())
    loop.run(_objective, _init(), opt, _batches, steps=10, checkpoint_dir=str(ckpt), **_kw())
    assert loop.latest_step(str(ckpt)) == 10
    for f in (ckpt / "10").rglob("*"):  # truncate every file of the newest step
        if f.is_file():
            f.write_bytes(b"")
    with pytest.warns(RuntimeWarning, match=r"step 10 .* is damaged .*resuming from step 5"):
        resumed, hist = loop.run(_objective, _init(), opt, _batches, steps=15, checkpoint_dir=str(ckpt), **_kw())
    np.testing.assert_array_equal(resumed["w"], full["w"])  # steps 5..14 recomputed exactly
    assert hist.steps == list(range(15))


def test_user_state_is_checkpointed_with_the_parameters_and_evaluate_gets_the_step(tmp_path):
    def run(steps, state, ckpt, die_at=None):
        seen = []

        def batches(t):
            if t == die_at:
                raise KeyboardInterrupt
            return TARGET * state.get("scale", 1.0)

        def evaluate(p, step):
            seen.append(step)
            state["scale"] = 1.0 + 0.1 * step  # a schedule chosen on validation
            return -float(jnp.mean((p["w"] - TARGET) ** 2))

        out = loop.run(_objective, _init(), optax.adam(0.05), batches, steps=steps, checkpoint_dir=ckpt,
                       evaluate=evaluate, eval_every=5, state=state, **_kw())
        return out, seen

    (full, _), seen = run(20, {}, None)
    assert seen == [5, 10, 15, 20]
    ckpt = str(tmp_path / "c")
    with pytest.raises(KeyboardInterrupt):
        run(20, {}, ckpt, die_at=13)
    state = {"scale": 123.0}  # overwritten in place from the checkpoint of step 10
    (resumed, _), seen = run(20, state, ckpt)
    assert seen == [15, 20] and state == {"scale": 3.0}
    np.testing.assert_array_equal(resumed["w"], full["w"])


def test_nan_evaluation_is_never_the_best():
    values = iter([float("nan"), -3.0, float("nan"), -5.0])
    with pytest.warns(RuntimeWarning, match="evaluate: returned nan"):
        _, hist = loop.run(_objective, _init(), optax.adam(0.05), _batches, steps=20, evaluate=lambda p: next(values),
                           eval_every=5, **_kw())
    assert hist.best_step == 10 and hist.best_value == -3.0


def test_vector_objective_is_named():
    vec = lambda p, b, k: (p["w"] - b) ** 2
    with pytest.raises(TypeError, match=r"objective: expected a scalar loss, got shape \(6, 3\)"):
        loop.run(vec, _init(), optax.sgd(0.1), TARGET, steps=2, **_kw())


def _sharded_resume():
    # A run whose objective shards over a mesh resumes from its checkpoint (orbax restores
    # host arrays, placed like fresh parameters; committed ones keep their sharding).
    import tempfile

    from distill import parallel

    jax.config.update("jax_enable_x64", True)  # the module's x64 marker does not reach the child
    mesh = parallel.make_mesh()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(16, 3)))

    def objective(p, batch, key):
        return parallel.sum_rows(lambda rows, wts, c: jnp.sum(wts * jnp.sum((rows - c) ** 2, axis=1)),
                                 batch, p["w"], mesh=mesh)

    kw = dict(key=jax.random.PRNGKey(0), progress=False, checkpoint_every=2)
    init = {"w": jnp.zeros(3)}
    full, _ = loop.run(objective, init, optax.adam(0.1), x, steps=8, **kw)
    with tempfile.TemporaryDirectory() as d:
        loop.run(objective, init, optax.adam(0.1), x, steps=4, checkpoint_dir=d, **kw)
        resumed, _ = loop.run(objective, init, optax.adam(0.1), x, steps=8, checkpoint_dir=d, **kw)
        np.testing.assert_allclose(resumed["w"], full["w"], rtol=1e-6)
        replicated = jax.device_put(init, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
        d2 = d + "/replicated"
        loop.run(objective, replicated, optax.adam(0.1), x, steps=4, checkpoint_dir=d2, **kw)
        again, _ = loop.run(objective, replicated, optax.adam(0.1), x, steps=8, checkpoint_dir=d2, **kw)
        np.testing.assert_allclose(again["w"], full["w"], rtol=1e-6)


def test_sharded_run_resumes_on_8_devices(multidevice):
    multidevice(_sharded_resume)


def test_evaluate_start_keeps_a_start_that_nothing_beats(tmp_path):
    values = iter([9.0, 3.0, 4.0, 5.0])  # the start scores best
    seen = []

    def evaluate(p):
        seen.append(p["w"])
        return next(values)

    kw = dict(key=jax.random.PRNGKey(0), evaluate=evaluate, eval_every=5, progress=False)
    params, hist = loop.run(_objective, _init(), optax.adam(0.05), _batches, steps=15, evaluate_start=True, **kw)
    assert hist.eval_steps == [0, 5, 10, 15] and hist.best_step == 0 and hist.best_value == 9.0
    np.testing.assert_array_equal(params["w"], _init()["w"])
    np.testing.assert_array_equal(seen[0], _init()["w"])
    # A checkpoint written with the start evaluated is not resumed by a run without it.
    loop.run(_objective, _init(), optax.adam(0.05), _batches, steps=5, checkpoint_dir=tmp_path, evaluate_start=True,
             **{**kw, "evaluate": lambda p: 1.0})
    with pytest.raises(ValueError, match="evaluate_start"):
        loop.run(_objective, _init(), optax.adam(0.05), _batches, steps=10, checkpoint_dir=tmp_path,
                 **{**kw, "evaluate": lambda p: 1.0})
