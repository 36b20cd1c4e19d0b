"""SVP-CF / SVP-CF-PROP: importance definitions, propensity correction, hardest data kept."""

import jax
import numpy as np
import pytest

from distill import data as D
from distill.metrics import item_propensity
from selection import svp_cf
from selection.cf_sampling import check_sampler_args


def _toy(seed=0, n_users=30, n_items=40):
    rng = np.random.default_rng(seed)
    rows = [(u, i) for u in range(n_users) for i in rng.choice(n_items, 3 + u % 9, replace=False)]
    rows = np.array(rows)
    return D.from_arrays(rows[:, 0], rows[:, 1], timestamps=np.arange(len(rows), dtype=np.int64))


INTER = _toy()
N = INTER.users.shape[0]
DIFF = np.random.default_rng(1).random(N)  # a stand-in Δ(u, i | P)


def test_importance_prop_divides_by_user_and_item_propensity():
    imp = svp_cf.importance(INTER, DIFF, prop=True)
    n_u = np.bincount(INTER.users).astype(float)
    n_i = np.bincount(INTER.items).astype(float)

    def jain(counts, a=0.55, b=1.5):  # p = 1 / (1 + C (N + B)^-A), C = (ln Σ N − 1)(B + 1)^A
        c = (np.log(counts.sum()) - 1) * (b + 1) ** a
        return 1 / (1 + c * (counts + b) ** (-a))

    want = DIFF / (jain(n_u)[INTER.users] * jain(n_i)[INTER.items])
    np.testing.assert_allclose(imp, want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(item_propensity(n_i)), jain(n_i), rtol=1e-5)
    np.testing.assert_array_equal(svp_cf.importance(INTER, DIFF, prop=False), DIFF)


def test_user_importance_is_mean_over_history():
    ui = svp_cf.user_importance(INTER, DIFF)
    for u in range(INTER.n_users):
        assert ui[u] == pytest.approx(DIFF[INTER.users == u].mean())


@pytest.mark.parametrize("prop", [False, True])
def test_interaction_variant_keeps_most_important(prop):
    imp = svp_cf.importance(INTER, DIFF, prop=prop)
    mask = svp_cf.svp_cf_interaction(jax.random.key(0), INTER, 0.3, importance=imp)
    assert mask.sum() == check_sampler_args(None, INTER, 0.3)[2]
    assert imp[mask].min() >= imp[~mask].max()


def test_user_variant_keeps_most_important_users():
    imp = svp_cf.importance(INTER, DIFF, prop=True)
    mask = svp_cf.svp_cf_user(jax.random.key(0), INTER, 0.4, importance=imp)
    assert mask.sum() == round(0.4 * N)
    ui = svp_cf.user_importance(INTER, imp)
    n_u = np.bincount(INTER.users)
    kept = np.bincount(INTER.users[mask], minlength=INTER.n_users)
    assert np.sum((kept > 0) & (kept < n_u)) <= 1
    assert ui[kept == n_u].min() >= ui[kept == 0].max()


@pytest.mark.slow
def test_proxy_difficulty_end_to_end_and_registry():
    d = svp_cf.proxy_difficulty(jax.random.key(0), INTER, proxy="mf", epochs=3, batch_size=64)
    assert d.shape == (N,) and np.all((d >= 0) & (d <= 1))
    assert len(svp_cf.SAMPLERS) == 8
    m1 = svp_cf.SAMPLERS["svp_cf_prop_user_mf"](jax.random.key(2), INTER, 0.5, importance=d)
    m2 = svp_cf.SAMPLERS["svp_cf_prop_user_mf"](jax.random.key(2), INTER, 0.5, importance=d)
    np.testing.assert_array_equal(m1, m2)
    assert m1.sum() == round(0.5 * N)


def test_validation():
    with pytest.raises(ValueError, match="proxy"):
        svp_cf.proxy_difficulty(jax.random.key(0), INTER, proxy="ncf")
    with pytest.raises(ValueError, match="difficulty"):
        svp_cf.importance(INTER, DIFF[:-1])
    with pytest.raises(ValueError, match="difficulty"):
        svp_cf.importance(INTER, np.full(N, np.nan))
    with pytest.raises(ValueError, match="importance"):
        svp_cf.svp_cf_interaction(jax.random.key(0), INTER, 0.5, importance=DIFF[:3])
    with pytest.raises(ValueError, match="p"):
        svp_cf.svp_cf_user(jax.random.key(0), INTER, 0.0, importance=DIFF)
    with pytest.raises(ValueError, match="imp"):
        svp_cf.user_importance(INTER, DIFF[:5])
