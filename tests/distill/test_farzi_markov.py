"""Farzi's Markov-teacher start: the walk, its soft tokens and the KL fit of the factors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import farzi, parametrize
from models.model_fns import ModelFns

V, PAD = 40, 40


def _tokens():
    rng = np.random.default_rng(0)
    tok = (rng.zipf(1.3, (50, 16)) - 1) % V
    tok[:5, :6] = PAD
    return tok


def _chain(tok, backoff=1.0):
    """Popularity and the back-off transition matrix from a dense count matrix."""
    pop = farzi.popularity(tok, V, pad_id=PAD)
    counts = np.zeros((V, V))
    for row in tok:
        for a, b in zip(row[:-1], row[1:], strict=True):
            if a != PAD and b != PAD:
                counts[a, b] += 1
    return pop, (counts + backoff * pop) / (counts.sum(1, keepdims=True) + backoff)


def _brute_force(tok, mu, xi, alpha, backoff, rho):
    """The walk and tokens of ``markov_teacher`` from a dense count matrix, one step at a time."""
    pop, trans = _chain(tok, backoff)
    visits, walk, q = np.zeros(V), [], []
    cur, prev_p = int(np.argmax(pop)), pop
    for _ in range(mu * xi):
        visits[cur] += 1
        walk.append(cur)
        q.append((1 - alpha) * prev_p + alpha * np.eye(V)[cur])
        prev_p = trans[cur]
        cur = int(np.argmax(prev_p / (1 + rho * visits)))
    return np.array(walk).reshape(mu, xi), np.array(q).reshape(mu, xi, V)


@pytest.mark.parametrize("alpha,backoff,rho", [(0.2, 1.0, 5.0), (0.7, 0.1, 0.0)])
def test_markov_teacher_equals_brute_force(alpha, backoff, rho):
    tok = _tokens()
    walk, q = farzi.markov_teacher(tok, V, n_seqs=3, seq_len=7, alpha=alpha, pad_id=PAD, backoff=backoff,
                                   revisit_penalty=rho)
    want_walk, want_q = _brute_force(tok, 3, 7, alpha, backoff, rho)
    np.testing.assert_array_equal(walk, want_walk)
    np.testing.assert_allclose(q, want_q, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-5)
    assert PAD not in walk


def test_markov_teacher_follows_a_deterministic_chain():
    # 0 → 1 → 2 → 3 → 0 …: with no back-off and no revisit penalty the walk is the cycle
    # and every token is α on its item and 1 − α on that item itself (the teacher's next item).
    tok = np.tile(np.arange(4), (6, 5))
    walk, q = farzi.markov_teacher(tok, 4, n_seqs=2, seq_len=6, alpha=0.3, backoff=0.0, revisit_penalty=0.0)
    np.testing.assert_array_equal(walk.ravel(), np.arange(12) % 4)
    want = np.eye(4)[np.arange(12) % 4]
    want[0] = 0.3 * np.eye(4)[0] + 0.7 * farzi.popularity(tok, 4)
    np.testing.assert_allclose(q.reshape(12, 4), want, atol=1e-7)


def test_sampled_walk_is_the_inverse_cdf_walk_and_visits_the_stationary_distribution():
    tok = _tokens()
    pop, trans = _chain(tok)
    key = jax.random.key(3)
    walk, q = farzi.markov_teacher(tok, V, n_seqs=40, seq_len=50, alpha=0.2, pad_id=PAD, key=key)
    u = np.asarray(jax.random.uniform(key, (2001,)), np.float64)
    want, p = [], pop
    for t in range(2000):  # x_t = the first item whose cumulative probability exceeds u_t
        want.append(int(np.searchsorted(np.cumsum(p), u[t] * p.sum(), side="right")))
        p = trans[want[-1]]
    np.testing.assert_array_equal(walk.ravel(), want)
    flat = q.reshape(2000, V)
    np.testing.assert_allclose(flat[1:], 0.2 * np.eye(V)[want[1:]] + 0.8 * trans[want[:-1]], atol=1e-6)
    # 2,000 steps visit items about as often as the chain's stationary distribution π = π·P
    w, vecs = np.linalg.eig(trans.T)
    pi = np.real(vecs[:, np.argmax(np.real(w))])
    pi /= pi.sum()
    freq = np.bincount(want, minlength=V) / len(want)
    assert 0.5 * np.abs(freq - pi).sum() < 0.1  # total variation; measured 0.035-0.064 over keys 0-4
    greedy, _ = farzi.markov_teacher(tok, V, n_seqs=40, seq_len=50, alpha=0.2, pad_id=PAD)
    assert 0.5 * np.abs(np.bincount(greedy.ravel(), minlength=V) / 2000 - pi).sum() > 0.15  # measured 0.23
    other, _ = farzi.markov_teacher(tok, V, n_seqs=40, seq_len=50, pad_id=PAD, key=jax.random.key(4))
    assert (other != walk).any()
    with pytest.raises(TypeError, match="key"):
        farzi.markov_teacher(tok, V, n_seqs=2, seq_len=3, pad_id=PAD, key=3)


def test_sampled_walk_through_initial_factors_and_settings():
    tok = _tokens()
    kw = dict(n_seqs=3, seq_len=10, latent_dim=6, vocab_size=V, pad_id=PAD)
    got = farzi.initial_factors(jax.random.key(0), tok, init="markov", teacher_walk="sampled", **kw)
    k = jax.random.fold_in(jax.random.key(0), 1)
    _, q = farzi.markov_teacher(tok, V, n_seqs=3, seq_len=10, pad_id=PAD, key=jax.random.fold_in(k, 1))
    want = farzi.fit_factors_kl(k, q, latent_dim=6)
    np.testing.assert_array_equal(got.z, want.z)
    with pytest.raises(ValueError, match="teacher_walk"):
        farzi.initial_factors(jax.random.key(0), tok, init="markov", teacher_walk="random", **kw)
    with pytest.raises(ValueError, match="settings.teacher_walk"):
        farzi._check_settings(farzi.Settings(model=ModelFns(lambda k, x: {}, lambda p, x: x), teacher_walk="x"))


def test_markov_teacher_bad_inputs():
    tok = _tokens()
    with pytest.raises(ValueError, match="alpha"):
        farzi.markov_teacher(tok, V, n_seqs=2, seq_len=3, alpha=1.5, pad_id=PAD)
    with pytest.raises(ValueError, match="backoff"):
        farzi.markov_teacher(tok, V, n_seqs=2, seq_len=3, backoff=-1.0, pad_id=PAD)
    with pytest.raises(TypeError, match="tokens"):
        farzi.markov_teacher(tok.astype(float), V, n_seqs=2, seq_len=3, pad_id=PAD)
    with pytest.raises(ValueError, match="n_seqs"):
        farzi.markov_teacher(tok, V, n_seqs=0, seq_len=3, pad_id=PAD)


def _kl(q, data):
    q, data = np.asarray(q, np.float64), np.asarray(data, np.float64)
    return float(np.mean(np.sum(q * (np.log(np.maximum(q, 1e-30)) - np.log(data)), -1)))


def test_kl_fit_beats_least_squares_and_is_exact_at_full_rank():
    _, q = farzi.markov_teacher(_tokens(), V, n_seqs=3, seq_len=10, alpha=0.2, pad_id=PAD)
    param = parametrize.latent_factorization(3, 10, 4, V, tau=0.5)
    ls = farzi.fit_factors_kl(jax.random.key(0), q, latent_dim=4, tau=0.5, steps=0)
    kl = farzi.fit_factors_kl(jax.random.key(0), q, latent_dim=4, tau=0.5, steps=300)
    kl_ls, kl_fit = _kl(q, param.materialize(ls, None)), _kl(q, param.materialize(kl, None))
    assert kl_fit < 0.5 * kl_ls
    with pytest.raises(ValueError, match="probs"):
        farzi.fit_factors_kl(jax.random.key(0), q - 0.5, latent_dim=4)
    full = farzi.fit_factors_kl(jax.random.key(0), q, latent_dim=V, steps=300)
    data = parametrize.latent_factorization(3, 10, V, V).materialize(full, None)
    assert _kl(q, data) < 2e-3


def test_markov_init_through_distill_keys():
    tok = _tokens()
    kw = dict(n_seqs=3, seq_len=10, latent_dim=6, vocab_size=V, pad_id=PAD)
    got = farzi.initial_factors(jax.random.key(0), tok, init="markov", teacher_mix=0.4, **kw)
    _, q = farzi.markov_teacher(tok, V, n_seqs=3, seq_len=10, alpha=0.4, pad_id=PAD)
    want = farzi.fit_factors_kl(jax.random.fold_in(jax.random.key(0), 1), q, latent_dim=6)
    np.testing.assert_array_equal(got.z, want.z)
    np.testing.assert_array_equal(got.m, want.m)
    with pytest.raises(ValueError, match="teacher_mix"):
        farzi._check_settings(farzi.Settings(model=ModelFns(lambda k, x: {}, lambda p, x: x), teacher_mix=2.0))


def test_theta0_draws_average_single_draw_objectives():
    v, length = 12, 5

    def apply(p, x):  # a bigram model: soft (μ, ξ, V) or int (b, ξ) inputs
        x = jax.nn.one_hot(x, v) if jnp.issubdtype(x.dtype, jnp.integer) else x
        return x @ p["w"] + p["b"]

    model = ModelFns(lambda k, x: {"w": 0.3 * jax.random.normal(k, (v, v)), "b": jnp.zeros(v)}, apply)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, v, (6, length + 1)), jnp.int32)
    theta = jax.jit(model.init)(jax.random.key(0), tokens[:1, :-1])
    omega = jax.tree_util.tree_map(lambda a: jnp.stack([a, 0.5 * a, 2.0 * a]), theta)
    kw = dict(model=model, n_seqs=2, seq_len=length + 1, latent_dim=3, inner_steps=2, random_init_prob=0.5)
    syn = parametrize.latent_factorization(2, length + 1, 3, v).init(jax.random.key(1))
    batch = farzi.Batch(tokens, omega)
    key = jax.random.key(7)
    one = farzi.Settings(**kw)
    single = jax.jit(lambda k: farzi.objective(syn, batch, k, one))
    draws = [float(single(k)) for k in jax.random.split(jax.random.fold_in(key, 6), 3)]
    got = float(jax.jit(lambda s: farzi.objective(s, batch, key, farzi.Settings(**kw, theta0_draws=3)))(syn))
    np.testing.assert_allclose(got, np.mean(draws), rtol=1e-5)
    assert np.ptp(draws) > 1e-4  # the draws differ, so the mean is not one of them by accident
    with pytest.raises(ValueError, match="settings.theta0_draws"):
        farzi.objective(syn, batch, key, farzi.Settings(**kw, theta0_draws=0))
