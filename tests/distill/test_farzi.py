"""Farzi: finite meta-gradient that lowers the real loss, modes agree, 8-device equality,
Ω pretraining (draws, store, resume), Result and export, resume, student training, input errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from distill import export, farzi, inner, loop, parametrize, trajectories
from models.transformer import transformer

pytestmark = pytest.mark.x64  # compares to 1e-6 and tighter

V, L = 8, 5


def _setup(trained_omega=True, **kw):
    """Settings, real tokens, Ω of two checkpoints and the factorisation. With
    ``trained_omega=False`` Ω holds zeros of the parameters' shapes (no model compiled),
    for tests that never evaluate the objective."""
    model = transformer(V, max_len=L, d_model=8, n_heads=2, n_layers=1, dtype=jnp.float64)
    key = jax.random.key(0)
    # Real data with structure: token t+1 = (t + 1) mod V.
    start = jax.random.randint(key, (24, 1), 0, V)
    tokens = (start + jnp.arange(L + 1)[None]) % V
    if trained_omega:
        theta = jax.jit(model.init)(key, tokens[:, :-1])  # jit: compiles faster than eager
        omega = jax.tree_util.tree_map(lambda a: jnp.stack([a, 1.01 * a]), theta)
    else:
        shapes = jax.eval_shape(model.init, key, tokens[:, :-1])
        omega = jax.tree_util.tree_map(lambda a: np.zeros((2, *a.shape), a.dtype), shapes)
    settings = farzi.Settings(model=model, n_seqs=3, seq_len=L + 1, latent_dim=4, random_init_prob=0.0, **kw)
    param = parametrize.latent_factorization(3, L + 1, 4, V)
    return settings, tokens, omega, param


def _check_grads(g):
    for a in jax.tree_util.tree_leaves(g):
        assert np.all(np.isfinite(a)) and float(jnp.abs(a).max()) > 0


@pytest.mark.slow  # ~130 s: compiles a gradient through 5 inner Adam steps of a Transformer
def test_objective_gradient_finite_and_outer_steps_lower_loss():
    settings, tokens, omega, param = _setup(inner_steps=5, inner_optimizer=inner.Adam(0.05))
    batch = farzi.Batch(tokens, omega)
    syn0 = param.init(jax.random.key(1))
    key = jax.random.key(2)
    v0, g = jax.jit(jax.value_and_grad(farzi.objective), static_argnums=3)(syn0, batch, key, settings)
    _check_grads(g)
    # Fixed Ω element and batch: the loop must lower the objective.
    obj_fixed = jax.jit(lambda s, b, k: farzi.objective(s, b, key, settings))
    # evaluate = -objective: loop.run returns the best parameters it saw.
    syn, hist = loop.run(obj_fixed, syn0, optax.adam(0.1), batch, steps=12, key=key, progress=False,
                         evaluate=lambda s: -float(obj_fixed(s, batch, key)), eval_every=1)
    v1 = obj_fixed(syn, batch, key)
    assert float(v1) < float(v0) - 0.05, (float(v0), float(v1))


@pytest.mark.slow
def test_reverse_adam_equals_unrolled_objective_gradient():
    settings, tokens, omega, param = _setup(inner_steps=8)
    syn = param.init(jax.random.key(1))
    key = jax.random.key(5)
    out = {}
    for mode in ("unrolled", "reverse_adam"):
        obj = jax.jit(jax.value_and_grad(farzi.objective), static_argnums=3)
        out[mode] = obj(syn, farzi.Batch(tokens[:8], omega), key, settings._replace(mode=mode))
    np.testing.assert_allclose(out["reverse_adam"][0], out["unrolled"][0], rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(out["reverse_adam"][1]), jax.tree_util.tree_leaves(out["unrolled"][1]), strict=True):
        assert float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b)) < 1e-5


def _sharded_equals_single():
    jax.config.update("jax_enable_x64", True)
    from distill import parallel

    mesh = parallel.make_mesh()
    assert mesh.size == 8
    settings, tokens, omega, param = _setup(inner_steps=4)
    syn = param.init(jax.random.key(1))
    key = jax.random.key(3)
    for n in (13,):  # ragged: 3 padding rows (the divisible case is covered by tests/distill/test_parallel.py)
        vals = {}
        for name, m in (("single", None), ("sharded", mesh)):
            obj = jax.jit(jax.value_and_grad(lambda s, b, k, m=m: farzi.objective(s, b, k, settings, mesh=m)))
            vals[name] = obj(syn, farzi.Batch(tokens[:n], omega), key)
        np.testing.assert_allclose(vals["sharded"][0], vals["single"][0], rtol=1e-12)
        for a, b in zip(jax.tree_util.tree_leaves(vals["sharded"][1]), jax.tree_util.tree_leaves(vals["single"][1]), strict=True):
            # Reduction order differs across devices (1e-16); reversed Adam amplifies it
            # through 1/sqrt(v) for small second moments (measured: 2.5e-7 max elementwise relative on
            # large entries, 1.7e-5 on a 3e-6 entry; norm-relative < 1e-6).
            assert float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b)) < 1e-6


@pytest.mark.slow
def test_meta_gradient_on_8_devices(multidevice):
    multidevice(_sharded_equals_single)


@pytest.mark.slow
def test_pretrain_resume_reads_finished_runs(tmp_path):
    model = transformer(V, max_len=L, d_model=8, n_heads=2, n_layers=1, dtype=jnp.float64)
    tok_a = jax.random.randint(jax.random.key(0), (16, L + 1), 0, V)
    tok_b = jax.random.randint(jax.random.key(5), (16, L + 1), 0, V)
    s1 = farzi.Settings(model=model, omega_runs=1, omega_steps=10, omega_every=5, omega_batch_size=8)
    s2 = s1._replace(omega_runs=2)
    key = jax.random.key(1)
    one = farzi.pretrain(key, farzi.Data(tok_a), s1, checkpoint_dir=tmp_path / "om").omega
    # Run 0 is on disk: a 2-run call reads it back (trained on tok_a) and trains run 1 only (on tok_b).
    two = farzi.pretrain(key, farzi.Data(tok_b), s2, checkpoint_dir=tmp_path / "om").omega
    fresh_b = farzi.pretrain(key, farzi.Data(tok_b), s2).omega
    for o, t, f in zip(*map(jax.tree_util.tree_leaves, (one, two, fresh_b)), strict=True):
        np.testing.assert_array_equal(t[:3], o)
        np.testing.assert_array_equal(t[3:], f[3:])
        assert not np.array_equal(t[2], f[2])  # run 0 was really not retrained
    # The store holds (runs, checkpoints, ...) in Ω's run-major order.
    back = trajectories.load(tmp_path / "om")
    for a, b in zip(jax.tree_util.tree_leaves(two), jax.tree_util.tree_leaves(back), strict=True):
        np.testing.assert_array_equal(a, b.reshape(a.shape))


@pytest.mark.slow
def test_pretrain_keeps_the_original_draws():
    """Ω as the hand-written loop computed it: run r from init(fold_in(key, r)), step s on
    randint rows of fold_in(key_r, s + 1), Adam, a checkpoint every ``omega_every`` steps."""
    settings, tokens, _, _ = _setup(omega_runs=2, omega_steps=4, omega_every=2, omega_batch_size=8)
    model, key = settings.model, jax.random.key(1)
    omega = farzi.pretrain(key, farzi.Data(tokens), settings).omega
    tx = optax.adam(settings.omega_learning_rate)
    for r in range(2):
        kr = jax.random.fold_in(key, r)
        params = model.init(kr, tokens[:1, :-1])
        state = tx.init(params)
        for s in range(5):
            if s % 2 == 0:
                for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(omega), strict=True):
                    np.testing.assert_allclose(b[3 * r + s // 2], a, rtol=1e-12, atol=1e-14)
            if s < 4:
                idx = jax.random.randint(jax.random.fold_in(kr, s + 1), (8,), 0, tokens.shape[0])
                g = jax.grad(lambda p, idx=idx: farzi.token_loss(model, p, tokens[idx]))(params)
                upd, state = tx.update(g, state, params)
                params = optax.apply_updates(params, upd)


@pytest.mark.slow
def test_distill_result_and_export(tmp_path):
    settings, tokens, omega, _ = _setup(steps=2, batch_size=8, inner_steps=2, tau=0.5)
    res = farzi.distill(jax.random.key(0), farzi.Data(tokens, omega), settings)
    assert res.data.shape == (3, L + 1, V) and res.settings == settings and len(res.history.losses) == 2
    np.testing.assert_allclose(res.data, res.parametrization.materialize(res.params, jax.random.key(0)))
    export.save(tmp_path / "farzi_data", {"data": np.asarray(res.data), "z": np.asarray(res.params.z)},
                {"method": "farzi", "tau": settings.tau})
    arrays, meta = export.load(tmp_path / "farzi_data")
    np.testing.assert_allclose(arrays["data"].sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(arrays["data"], res.data)
    assert meta["method"] == "farzi" and meta["tau"] == 0.5


@pytest.mark.slow
def test_distill_resumes_exactly(tmp_path):
    settings, tokens, omega, _ = _setup(batch_size=8, inner_steps=3, checkpoint_every=2)
    settings = settings._replace(n_seqs=2, random_init_prob=0.25)
    data, key = farzi.Data(tokens, omega), jax.random.key(0)
    full = farzi.distill(key, data, settings._replace(steps=4), checkpoint_dir=str(tmp_path / "a")).params
    farzi.distill(key, data, settings._replace(steps=2), checkpoint_dir=str(tmp_path / "b"))
    res = farzi.distill(key, data, settings._replace(steps=4), checkpoint_dir=str(tmp_path / "b"))
    np.testing.assert_allclose(res.params.z, full.z, rtol=1e-12)
    assert len(res.history.losses) == 4
    with pytest.raises(ValueError, match=r"checkpoint_dir: .*run\.inner_steps: checkpoint has 3, this run has 5"):
        farzi.distill(key, data, settings._replace(steps=6, inner_steps=5), checkpoint_dir=str(tmp_path / "b"))


def _tiny():
    model = transformer(V, max_len=L, d_model=8, n_heads=1, n_layers=1)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, V, (3, L + 1)), jnp.int32)
    return model, jax.jit(model.init)(jax.random.key(0), tokens[:1, :-1]), tokens  # jit: compiles faster than eager


def test_out_of_vocabulary_tokens_are_refused_or_nan():
    model, params, tok = _tiny()
    for bad in (V + 15, -3):  # a clamped target would score as token V-1; -3 would wrap
        with pytest.raises(ValueError, match=rf"tokens: token {bad} at \[1, 2\] is outside"):
            farzi.token_loss(model, params, tok.at[1, 2].set(bad))
    jitted = jax.jit(lambda t: farzi.token_loss(model, params, t))
    assert np.isnan(float(jitted(tok.at[1, 2].set(V + 15))))
    assert np.isfinite(float(jitted(tok)))


def test_inner_adam_settings_are_validated_where_used():
    model, theta0, tokens = _tiny()
    data = jax.nn.one_hot(tokens[:2], V)
    for bad, name in ((inner.Adam(float("nan")), "learning_rate"), (inner.Adam(1e-2, b1=1.0), "b1")):
        with pytest.raises(ValueError, match=f"optimizer: {name}"):
            inner.train(model.apply, farzi.soft_cross_entropy, theta0, (data[:, :-1], data[:, 1:]), steps=2,
                        optimizer=bad)


@pytest.mark.parametrize("init", [pytest.param("random", marks=pytest.mark.slow), "real"])
def test_initial_factors_are_where_distill_starts(init):
    settings, tokens, omega, _ = _setup(False, steps=0, init=init)  # 0 steps: Ω is never read
    settings = settings._replace(n_seqs=2)
    kw = dict(n_seqs=2, seq_len=L + 1, vocab_size=V, latent_dim=4, init=init)
    data = farzi.Data(tokens, omega)
    start = farzi.distill(jax.random.key(3), data, settings).params
    got = farzi.initial_factors(jax.random.key(3), tokens, **kw)
    np.testing.assert_array_equal(farzi.init(jax.random.key(3), data, settings).z, start.z)
    np.testing.assert_array_equal(got.z, start.z)
    np.testing.assert_array_equal(got.m, start.m)
    other = farzi.initial_factors(jax.random.key(4), tokens, **kw)
    assert not np.array_equal(other.m, start.m)
    with pytest.raises(ValueError, match="init"):
        farzi.initial_factors(jax.random.key(3), tokens, **{**kw, "init": "zeros"})


def test_bad_inputs():
    settings, tokens, omega, param = _setup(False)  # every call fails its checks before reading Ω
    syn, data = param.init(jax.random.key(0)), farzi.Data(tokens, omega)
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="settings.model"):
        farzi.init(key, data, farzi.Settings())
    with pytest.raises(ValueError, match="settings.inner_steps"):
        farzi.objective(syn, farzi.Batch(tokens, omega), key, settings._replace(inner_steps=0))
    with pytest.raises(ValueError, match="settings.mode"):
        farzi.sample_batch(key, data, settings._replace(mode="exact"))
    with pytest.raises(TypeError, match="settings.omega_weights"):
        farzi.distill(key, data, settings._replace(omega_weights=[0.5, 0.5]))
    with pytest.raises(ValueError, match="batch.omega"):
        farzi.objective(syn, farzi.Batch(tokens, {"w": jnp.float64(1.0)}), key, settings)
    with pytest.raises(ValueError, match="data.omega"):
        farzi.sample_batch(key, farzi.Data(tokens), settings)
    with pytest.raises(ValueError, match="data.train"):
        farzi.init(key, farzi.Data(tokens[0]), settings)
    with pytest.raises(ValueError, match="tokens"):
        farzi.token_loss(settings.model, omega, jnp.zeros((3,), jnp.int32))


def test_sample_batch_is_distills_first_batch():
    settings, tokens, omega, _ = _setup(False, batch_size=5)  # the batch carries Ω, never reads it
    batch = farzi.sample_batch(jax.random.key(2), farzi.Data(tokens, omega, pad_id=None), settings)
    assert batch.tokens.shape == (5, L + 1) and batch.pad_id is None
    assert len({tuple(r) for r in np.asarray(batch.tokens).tolist()}) <= 5
    again = farzi.sample_batch(jax.random.key(2), farzi.Data(tokens, omega), settings)
    np.testing.assert_array_equal(batch.tokens, again.tokens)


@pytest.mark.slow
def test_train_student_learns_from_tokens_and_soft_data():
    model = transformer(V, max_len=L, d_model=8, n_heads=1, n_layers=1)
    start = jax.random.randint(jax.random.key(0), (32, 1), 0, V)
    tokens = (start + jnp.arange(L + 1)[None]) % V
    for data in (tokens, jax.nn.one_hot(tokens, V)):
        out = farzi.train_student(jax.random.key(1), model, data, steps=60, learning_rate=3e-2, batch_size=16,
                                  dropout=False, evaluate=lambda p: -float(farzi.token_loss(model, p, tokens)),
                                  eval_every=30)
        assert len(out.history.losses) == 60 and out.history.eval_steps == [30, 60]
        assert float(farzi.token_loss(model, out.params, tokens)) < 0.5 * out.history.losses[0]
    chunked = farzi.train_student(jax.random.key(1), model, tokens, steps=5, batch_size=8, replace=True, chunk=2)
    assert len(chunked.history.losses) == 5
    with pytest.raises(TypeError, match="model"):
        farzi.train_student(jax.random.key(1), None, tokens, steps=1)


def test_padding_id_passes_the_vocabulary_check_and_is_masked():
    model, params, tok = _tiny()
    padded = tok.at[0, 3:].set(V)  # pad_id = V sits just past the vocabulary, as SASRec's does
    loss = float(jax.jit(lambda t: farzi.token_loss(model, params, t, pad_id=V))(padded))
    # Masked positions drop out: the loss equals the mean over the unpadded targets, by hand.
    logp = jax.nn.log_softmax(jax.jit(model.apply)(params, padded[:, :-1]), axis=-1)
    nll = -np.take_along_axis(np.asarray(logp), np.asarray(jnp.minimum(padded[:, 1:], V - 1))[..., None], -1)[..., 0]
    keep = np.asarray((padded[:, 1:] != V) & (padded[:, :-1] != V))
    np.testing.assert_allclose(loss, nll[keep].mean(), rtol=1e-5)
    with pytest.raises(ValueError, match=rf"tokens: token {V + 1} at \[0, 4\] is outside \[0, {V}\) .* and is not {V}"):
        farzi.token_loss(model, params, padded.at[0, 4].set(V + 1), pad_id=V)
