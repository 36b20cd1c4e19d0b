"""Hostile inputs for the public functions of ``selection``, ``models`` and ``distill``.

Every case feeds one bad argument (NaN/inf, wrong rank/shape/dtype, empty, an
out-of-range k/λ/τ/budget, a non-binary mask, an out-of-range id/label, a python list
where an array is required, a python-int key, a corrupt file) and asserts the
documented reaction below. A case either raises with a message naming the argument,
or returns a documented value (NaN, or the exact answer of a degenerate input).

Error policy
------------
* Eager calls with bad input raise ``ValueError`` (bad value, shape, rank, range,
  emptiness) or ``TypeError`` (not an array, wrong dtype family, wrong object type),
  and the message starts with or names the offending argument
  (``"<argument>: expected <what>, got <actual>"``, built by :mod:`distill.checks`).
* Under ``jax.jit`` values are unknown at trace time: an invalid *value* (a label or
  id out of range, λ ≤ 0, τ ≤ 0) makes the affected outputs NaN — never a plausible
  number. Shape, dtype and rank errors are static and still raise under ``jit``.
* Integer inputs (labels, ids, indices, tokens) are range-checked whenever they are
  concrete.
* Keys: every public function that takes a PRNG key validates it with
  :func:`distill.checks.check_key`; a Python int raises ``TypeError`` naming ``key``
  (pass ``jax.random.key(seed)``).
* File loaders reject a missing, truncated, corrupt or foreign file with
  ``ValueError``/``FileNotFoundError`` naming ``path``.

Arrays are tiny and each jitted function is compiled once per shape, so the whole
module runs in a few seconds.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distill import export, parallel, parametrize, trajectories
from distill.data import images as dimages
from distill.data import interactions as di
from distill.data import movielens
from distill.matching import common as mcommon
from distill.matching import augment, dc, dm, kip, mtt
from distill.matching import images as mimages
from models import convnet, ease, infinite_ae, kernels, krr, mf, mlp, popularity, tuning
from selection import cf_sampling, clipcov, coresets, density, psi, s2l, scores, select, semdedup, shapley, svp_cf, valuation

NAN = float("nan")
KEY = jax.random.key(0)
RNG = np.random.default_rng(0)

X = RNG.normal(size=(6, 3)).astype(np.float32)
X_NAN = X.copy()
X_NAN[1, 2] = np.nan
X_INF = X.copy()
X_INF[0, 0] = np.inf
X_INT = np.arange(18).reshape(6, 3)
X_EMPTY = np.zeros((0, 3), np.float32)
Y = np.array([0, 1, 0, 1, 2, 2])
SCORES = np.array([0.3, 0.1, 0.9, 0.5, 0.7, 0.2], np.float32)
SIM = np.abs(X @ X.T).astype(np.float32)
# A 5 users × 4 items binary matrix, every row and column non-empty.
R = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 1]], np.float32)
R_NONBIN = R.copy()
R_NONBIN[0, 1] = 3.0
INTER = di.from_arrays(np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4]), np.array([0, 2, 1, 3, 0, 1, 2, 3, 0, 3]))
BAD_INTER = INTER._replace(items=np.array([0, 2, 1, 3, 0, 1, 2, 3, 0, 9], np.int32))
MFP = mf.init(KEY, 5, 4, dim=2)
IMG = RNG.normal(size=(2, 8, 8, 1)).astype(np.float32)

# ----------------------------------------------------------------------------- raising cases

RAISES: list = []


def bad(case_id: str, exc: type, match: str, fn) -> None:
    """Register ``fn()`` as a call that must raise ``exc`` with a message matching ``match``."""
    RAISES.append(pytest.param(fn, exc, match, id=case_id))


# selection.select
bad("select.budget-n0", ValueError, "^n:", lambda: select.budget(0, 0.5))
bad("select.budget-frac0", ValueError, "^fraction:", lambda: select.budget(10, 0.0))
bad("select.budget-frac>1", ValueError, "^fraction:", lambda: select.budget(10, 1.5))
bad("select.budget-fracnan", ValueError, "^fraction:", lambda: select.budget(10, NAN))
bad("select.budget-nfloat", TypeError, "^n:", lambda: select.budget(10.0, 0.5))
bad("select.top_k-list", TypeError, "^scores:", lambda: select.top_k([0.1, 0.2], 1))
bad("select.top_k-nan", ValueError, "^scores:", lambda: select.top_k(np.array([0.1, NAN]), 1))
bad("select.top_k-inf", ValueError, "^scores:", lambda: select.top_k(np.array([0.1, np.inf]), 1))
bad("select.top_k-2d", ValueError, "^scores:", lambda: select.top_k(X, 1))
bad("select.top_k-k0", ValueError, "^k:", lambda: select.top_k(SCORES, 0))
bad("select.top_k-k>n", ValueError, "^k:", lambda: select.top_k(SCORES, 7))
bad("select.top_k-kfloat", TypeError, "^k:", lambda: select.top_k(SCORES, 2.0))
bad("select.top_k-empty", ValueError, "^scores:", lambda: select.top_k(np.zeros(0), 1))
bad("select.bottom_k-k-neg", ValueError, "^k:", lambda: select.bottom_k(SCORES, -1))
bad("select.bottom_k-str", TypeError, "^scores:", lambda: select.bottom_k(np.array(["a", "b"]), 1))
bad("select.to_mask-oob", ValueError, "^indices:", lambda: select.to_mask(np.array([0, 6]), 6))
bad("select.to_mask-neg", ValueError, "^indices:", lambda: select.to_mask(np.array([-1]), 6))
bad("select.to_mask-float", TypeError, "^indices:", lambda: select.to_mask(np.array([0.0]), 6))
bad("select.to_mask-list", TypeError, "^indices:", lambda: select.to_mask([0, 1], 6))
bad("select.random_subset-intkey", TypeError, "^key:", lambda: select.random_subset(0, 6, 2))
bad("select.random_subset-k>n", ValueError, "^k:", lambda: select.random_subset(KEY, 6, 7))
bad("select.ips_sample-neg", ValueError, "^scores:", lambda: select.ips_sample(KEY, -SCORES, 2))
bad("select.ips_sample-nan", ValueError, "^scores:", lambda: select.ips_sample(KEY, np.array([1.0, NAN]), 1))
bad("select.ips_sample-power-inf", ValueError, "^power:", lambda: select.ips_sample(KEY, SCORES, 2, power=np.inf))
bad("select.ips_sample-intkey", TypeError, "^key:", lambda: select.ips_sample(3, SCORES, 2))
bad("select.even_allocation-neg", ValueError, "^sizes:", lambda: select.even_allocation(np.array([3, -1]), 1))
bad("select.even_allocation-float", TypeError, "^sizes:", lambda: select.even_allocation(np.array([3.0]), 1))
bad("select.stratified-float", TypeError, "^groups:", lambda: select.stratified_sample(KEY, np.array([0.5]), 1))
bad("select.stratified-k>n", ValueError, "^k:", lambda: select.stratified_sample(KEY, Y, 7))
bad("select.stratified-intkey", TypeError, "^key:", lambda: select.stratified_sample(1, Y, 2))
bad("select.coverage-cutoff1", ValueError, "^hard_cutoff:", lambda: select.coverage_centric(KEY, SCORES, 2, hard_cutoff=1.0))
bad("select.coverage-strata0", ValueError, "^n_strata:", lambda: select.coverage_centric(KEY, SCORES, 2, n_strata=0))
bad("select.coverage-nan", ValueError, "^scores:", lambda: select.coverage_centric(KEY, np.array([NAN, 1.0]), 1))

# selection.coresets
bad("coresets.pairwise-1d", ValueError, "^x:", lambda: coresets.pairwise_distances(SCORES))
bad("coresets.pairwise-int", TypeError, "^x:", lambda: coresets.pairwise_distances(X_INT))
bad("coresets.pairwise-ydim", ValueError, "^y:", lambda: coresets.pairwise_distances(X, X[:, :2]))
bad("coresets.pairwise-list", TypeError, "^x:", lambda: coresets.pairwise_distances(X.tolist()))
bad("coresets.kmeans-nan", ValueError, "^x:", lambda: coresets.kmeans(KEY, X_NAN, 2))
bad("coresets.kmeans-k>n", ValueError, "^k:", lambda: coresets.kmeans(KEY, X, 7))
bad("coresets.kmeans-k0", ValueError, "^k:", lambda: coresets.kmeans(KEY, X, 0))
bad("coresets.kmeans-empty", ValueError, "^x:", lambda: coresets.kmeans(KEY, X_EMPTY, 1))
bad("coresets.kmeans-intkey", TypeError, "^key:", lambda: coresets.kmeans(0, X, 2))
bad("coresets.fl-neg", ValueError, "^sim:", lambda: coresets.facility_location(-SIM - 1, 2))
bad("coresets.fl-nan", ValueError, "^sim:", lambda: coresets.facility_location(np.full((3, 3), NAN, np.float32), 1))
bad("coresets.fl-k>m", ValueError, "^k:", lambda: coresets.facility_location(SIM, 7))
bad("coresets.fl-method", ValueError, "^method:", lambda: coresets.facility_location(SIM, 2, method="fast"))
bad("coresets.fl-weights-neg", ValueError, "^weights:", lambda: coresets.facility_location(SIM, 2, weights=-np.ones(6)))
bad("coresets.fl-weights-shape", ValueError, "^weights:", lambda: coresets.facility_location(SIM, 2, weights=np.ones(5)))
bad("coresets.fl-stoch-nokey", ValueError, "^key:", lambda: coresets.facility_location(SIM, 2, method="stochastic"))
bad("coresets.fl-stoch-intkey", TypeError, "^key:", lambda: coresets.facility_location(SIM, 2, method="stochastic", key=0))
bad("coresets.fl-eps1", ValueError, "^epsilon:", lambda: coresets.facility_location(SIM, 2, method="stochastic", key=KEY, epsilon=1.0))
bad("coresets.flv-oob", ValueError, "^indices:", lambda: coresets.facility_location_value(SIM, np.array([6])))
bad("coresets.prop-neg", ValueError, "^sizes:", lambda: coresets.proportional_budget(np.array([2, -1]), 1))
bad("coresets.prop-k>sum", ValueError, "^k:", lambda: coresets.proportional_budget(np.array([2, 1]), 4))
bad("coresets.craig-labels-shape", ValueError, "^labels:", lambda: coresets.craig(X, Y[:5], 2))
bad("coresets.craig-labels-float", TypeError, "^labels:", lambda: coresets.craig(X, Y.astype(float), 2))
bad("coresets.craig-inf", ValueError, "^features:", lambda: coresets.craig(X_INF, Y, 2))
bad("coresets.kcenter-k>n", ValueError, "^k:", lambda: coresets.k_center_greedy(X, 7))
bad("coresets.kcenter-sel-oob", ValueError, "^selected:", lambda: coresets.k_center_greedy(X, 1, selected=np.array([6])))
bad("coresets.kcenter-nan", ValueError, "^x:", lambda: coresets.k_center_greedy(X_NAN, 1))
bad("coresets.kcenter-intkey", TypeError, "^key:", lambda: coresets.k_center_greedy(X, 1, key=5))
bad("coresets.radius-oob", ValueError, "^centers:", lambda: coresets.covering_radius(X, np.array([9])))
bad("coresets.radius-nan", ValueError, "^x:", lambda: coresets.covering_radius(X_NAN, np.array([0])))

# selection.scores / semdedup / s2l / density / clipcov / psi / shapley / valuation
def _apply(params, x):
    return x @ params


W3 = jnp.ones((3, 3), jnp.float32)
bad("scores.loss-y-oob", ValueError, "y", lambda: scores.loss(_apply, W3, (X, np.array([0, 1, 2, 3, 0, 1]))))
bad("scores.loss-y-float", TypeError, "y", lambda: scores.loss(_apply, W3, (X, Y.astype(np.float32))))
bad("scores.loss-y-2d", ValueError, "y", lambda: scores.loss(_apply, W3, (X, Y[:, None])))
bad("scores.loss-notpair", TypeError, "^batch:", lambda: scores.loss(_apply, W3, X))
bad("scores.loss-apply", TypeError, "^apply:", lambda: scores.loss(None, W3, (X, Y)))
bad("scores.el2n-y-neg", ValueError, "y", lambda: scores.el2n(_apply, W3, (X, -np.ones(6, np.int32))))
bad("scores.margin-list", TypeError, "x", lambda: scores.margin(_apply, W3, X.tolist()))
bad("scores.block0", ValueError, "^block_size:", lambda: scores.loss(_apply, W3, (X, Y), block_size=0))
bad("scores.perplexity-1pos", ValueError, "^tokens:", lambda: scores.perplexity(_apply, W3, np.zeros((2, 1), np.int32)))
bad("scores.perplexity-float", TypeError, "^tokens:", lambda: scores.perplexity(_apply, W3, np.zeros((2, 3))))
bad("scores.perplexity-tok-oob", ValueError, "^tokens:", lambda: scores.perplexity(lambda p, t: jax.nn.one_hot(t, 3) @ p, W3, np.array([[0, 1, 7]])))
bad("scores.forgetting-1d", ValueError, "^correct:", lambda: scores.forgetting_events(np.ones(3)))
bad("scores.forgetting-nonbinary", ValueError, "^correct:", lambda: scores.forgetting_events(np.array([[0, 2], [1, 0]])))
bad("scores.forgetting-never", ValueError, "^never_learned:", lambda: scores.forgetting_events(np.ones((2, 2)), never_learned="min"))
bad("scores.data_map-nan", ValueError, "^prob_true:", lambda: scores.data_map(np.array([[NAN, 0.5]])))
bad("scores.data_map->1", ValueError, "^prob_true:", lambda: scores.data_map(np.array([[1.5, 0.5]])))
bad("scores.data_map-correct-shape", ValueError, "^correct:", lambda: scores.data_map(np.full((2, 2), 0.5), np.ones((2, 3))))
bad("scores.data_map-correct-nonbinary", ValueError, "^correct:", lambda: scores.data_map(np.full((2, 2), 0.5), np.full((2, 2), 0.5)))
bad("scores.prototype-metric", ValueError, "^metric:", lambda: scores.prototype_distance(KEY, X, 2, metric="l1"))
bad("scores.prototype-intkey", TypeError, "^key:", lambda: scores.prototype_distance(0, X, 2))
bad("scores.prototype-k>n", ValueError, "n_clusters", lambda: scores.prototype_distance(KEY, X, 7))
bad("semdedup-thresh", ValueError, "^threshold:", lambda: semdedup.semdedup(KEY, X, n_clusters=2, threshold=1.5))
bad("semdedup-nan", ValueError, "^embeddings:", lambda: semdedup.semdedup(KEY, X_NAN, n_clusters=2))
bad("semdedup-intkey", TypeError, "^key:", lambda: semdedup.semdedup(0, X, n_clusters=2))
bad("semdedup-clusters", ValueError, "n_clusters", lambda: semdedup.semdedup(KEY, X, n_clusters=0))
bad("s2l-k>n", ValueError, "^k:", lambda: s2l.s2l(KEY, X, 7, n_clusters=2))
bad("s2l-nan", ValueError, "^trajectories:", lambda: s2l.s2l(KEY, X_NAN, 2, n_clusters=2))
bad("s2l-intkey", TypeError, "^key:", lambda: s2l.s2l(0, X, 2, n_clusters=2))
bad("density.make_lsh-dim0", ValueError, "^dim:", lambda: density.make_lsh(KEY, 0))
bad("density.make_lsh-width0", ValueError, "^width:", lambda: density.make_lsh(KEY, 3, width=0.0))
bad("density.make_lsh-intkey", TypeError, "^key:", lambda: density.make_lsh(0, 3))
bad("density.width-intkey", TypeError, "^key:", lambda: density.default_width(0, X))
bad("density.scores-nan", ValueError, "^embeddings:", lambda: density.density_scores(KEY, X_NAN, n_rows=4, n_buckets=8))
bad("density.scores-1d", ValueError, "^embeddings:", lambda: density.density_scores(KEY, SCORES, n_rows=4, n_buckets=8))
bad("density.sample-k>n", ValueError, "^k:", lambda: density.density_sample(KEY, X, 7, n_rows=4, n_buckets=8))
bad("density.collision-width-neg", ValueError, "^width:", lambda: density.collision_probability(np.ones(2, np.float32), -1.0))
bad("density.collision-dist-neg", ValueError, "^dist:", lambda: density.collision_probability(-np.ones(2, np.float32), 1.0))
bad("density.exact-nan", ValueError, "^embeddings:", lambda: density.exact_kernel_sum(X_NAN, 1.0))
bad("clipcov.cross-dim", ValueError, "^v:", lambda: clipcov.cross_similarity(X, X[:, :2]))
bad("clipcov.cross-nan", ValueError, "^u:", lambda: clipcov.cross_similarity(X_NAN, X))
bad("clipcov.maximize-k>n", ValueError, "^k:", lambda: clipcov.maximize(SIM, 7, key=KEY))
bad("clipcov.maximize-method", ValueError, "^method:", lambda: clipcov.maximize(SIM, 2, method="x", key=KEY))
bad("clipcov.maximize-intkey", TypeError, "^key:", lambda: clipcov.maximize(SIM, 2, key=1))
bad("clipcov.objective-oob", ValueError, "^subset:", lambda: clipcov.clipcov_objective(SIM, np.array([9])))
bad("psi.kendall-len", ValueError, "y", lambda: psi.kendall_tau(SCORES, SCORES[:3]))
bad("psi.kendall-nan", ValueError, "^x:", lambda: psi.kendall_tau(np.array([NAN, 1.0]), np.array([1.0, 2.0])))
bad("psi.psi-empty", ValueError, "^values:", lambda: psi.psi(np.zeros(0)))
bad("psi.mean_auc-nonbinary", ValueError, "^test:", lambda: psi.mean_auc(R, R_NONBIN, np.zeros_like(R)))
bad("psi.mean_auc-shape", ValueError, "test", lambda: psi.mean_auc(R, R[:3], np.zeros_like(R)))
bad("shapley.exact-n17", ValueError, "^n:", lambda: shapley.exact_shapley(lambda m: jnp.sum(m), 17))
bad("shapley.exact-notcallable", TypeError, "^utility:", lambda: shapley.exact_shapley(3, 2))
bad("shapley.tmc-intkey", TypeError, "^key:", lambda: shapley.tmc_shapley(0, lambda m: jnp.sum(m), 3))
bad("shapley.tmc-engine", ValueError, "^engine:", lambda: shapley.tmc_shapley(KEY, lambda m: jnp.sum(m), 3, engine="gpu"))
bad("shapley.tmc-tol0", ValueError, "^convergence_tol:", lambda: shapley.tmc_shapley(KEY, lambda m: jnp.sum(m), 3, convergence_tol=0.0))
bad("shapley.knn-y-len", ValueError, "y_train", lambda: shapley.knn_shapley(X, Y[:5], X, Y, 2))
bad("shapley.knn-k0", ValueError, "^k:", lambda: shapley.knn_shapley(X, Y, X, Y, 0))
bad("shapley.knn-nan", ValueError, "^x_train:", lambda: shapley.knn_shapley(X_NAN, Y, X, Y, 2))
bad("shapley.knn-y-float", TypeError, "y_train", lambda: shapley.knn_shapley(X, Y.astype(float), X, Y, 2))
bad("valuation.loo_ridge-lam0", ValueError, "^lam:", lambda: valuation.loo_ridge(X, SCORES, X, SCORES, lam=0.0))
bad("valuation.loo_ridge-nan", ValueError, "^y:", lambda: valuation.loo_ridge(X, np.array([NAN] * 6, np.float32), X, SCORES))
bad("valuation.loo_ridge-metric", ValueError, "^metric:", lambda: valuation.loo_ridge(X, SCORES, X, SCORES, metric="mae"))
bad("valuation.loo_ridge-xt-dim", ValueError, "^x_test:", lambda: valuation.loo_ridge(X, SCORES, X[:, :2], SCORES))
bad("valuation.loo_krr-nonsquare", ValueError, "^k_train:", lambda: valuation.loo_krr(SIM[:, :5], SCORES, SIM, SCORES))
bad("valuation.loo_krr-inf", ValueError, "^k_train:", lambda: valuation.loo_krr(np.full((6, 6), np.inf, np.float32), SCORES, SIM, SCORES))
bad("valuation.loo_newton-l2neg", ValueError, "^l2:", lambda: valuation.loo_newton(lambda p, b: jnp.sum(p), jnp.zeros(1), (X,), (X,), l2=-1.0))
bad("valuation.loo_newton-steps0", ValueError, "^steps:", lambda: valuation.loo_newton(lambda p, b: jnp.sum(p), jnp.zeros(1), (X,), (X,), steps=0))
bad("valuation.heldout-shape", ValueError, "^y_test:", lambda: valuation.heldout_loss(jnp.zeros((2, 1)), jnp.zeros((3, 1)), "mse"))

# selection.cf_sampling / svp_cf (Interactions inputs)
bad("cf.random_interaction-p0", ValueError, "^p:", lambda: cf_sampling.random_interaction(KEY, INTER, 0.0))
bad("cf.random_interaction-p>1", ValueError, "^p:", lambda: cf_sampling.random_interaction(KEY, INTER, 1.5))
bad("cf.random_interaction-pnan", ValueError, "^p:", lambda: cf_sampling.random_interaction(KEY, INTER, NAN))
bad("cf.random_interaction-intkey", TypeError, "^key:", lambda: cf_sampling.random_interaction(0, INTER, 0.5))
bad("cf.random_interaction-notinter", TypeError, "^inter:", lambda: cf_sampling.random_interaction(KEY, R, 0.5))
bad("cf.random_interaction-badids", ValueError, "items", lambda: cf_sampling.random_interaction(KEY, BAD_INTER, 0.5))
bad("cf.user_stratified-intkey", TypeError, "^key:", lambda: cf_sampling.user_stratified(7, INTER, 0.5))
bad("cf.user_temporal-p>1", ValueError, "^p:", lambda: cf_sampling.user_temporal(KEY, INTER, 2.0))
bad("cf.random_user-intkey", TypeError, "^key:", lambda: cf_sampling.random_user(1, INTER, 0.5))
bad("cf.head_user-p0", ValueError, "^p:", lambda: cf_sampling.head_user(KEY, INTER, 0.0))
bad("cf.centrality-intkey", TypeError, "^key:", lambda: cf_sampling.centrality(1, INTER, 0.5))
bad("cf.random_walk-restart", ValueError, "^restart:", lambda: cf_sampling.random_walk(KEY, INTER, 0.5, restart=1.5))
bad("cf.random_walk-len0", ValueError, "^walk_length:", lambda: cf_sampling.random_walk(KEY, INTER, 0.5, walk_length=0))
bad("cf.forest_fire-pf", ValueError, "^p_forward:", lambda: cf_sampling.forest_fire(KEY, INTER, 0.5, p_forward=1.0))
bad("cf.pagerank-damping", ValueError, "^damping:", lambda: cf_sampling.pagerank(INTER, damping=1.5))
bad("cf.pagerank-iters", ValueError, "^iters:", lambda: cf_sampling.pagerank(INTER, iters=0))
bad("cf.first_k-intkey", TypeError, "^key:", lambda: cf_sampling.first_k(0, SCORES, 2))
bad("cf.first_k-k>n", ValueError, "^k:", lambda: cf_sampling.first_k(KEY, SCORES, 7))
bad("svp.interaction-proxy", ValueError, "^proxy:", lambda: svp_cf.svp_cf_interaction(KEY, INTER, 0.5, proxy="xgb"))
bad("svp.interaction-intkey", TypeError, "^key:", lambda: svp_cf.svp_cf_interaction(0, INTER, 0.5))
bad("svp.user-p0", ValueError, "^p:", lambda: svp_cf.svp_cf_user(KEY, INTER, 0.0))
bad("svp.user-importance-shape", ValueError, "importance", lambda: svp_cf.svp_cf_user(KEY, INTER, 0.5, importance=np.ones(3)))
bad("svp.user-importance-nan", ValueError, "^importance:", lambda: svp_cf.svp_cf_user(KEY, INTER, 0.5, importance=np.full(10, NAN)))

# models
bad("kernels.fc_relu-nan", ValueError, "^x1:", lambda: kernels.fc_relu(X_NAN))
bad("kernels.fc_relu-1d", ValueError, "^x1:", lambda: kernels.fc_relu(SCORES))
bad("kernels.fc_relu-x2dim", ValueError, "x2", lambda: kernels.fc_relu(X, X[:, :2]))
bad("kernels.fc_relu-depth-neg", ValueError, "^depth:", lambda: kernels.fc_relu(X, depth=-1))
bad("kernels.fc_relu-wstd0", ValueError, "^w_std:", lambda: kernels.fc_relu(X, w_std=0.0))
bad("kernels.fc_relu-bstd-neg", ValueError, "^b_std:", lambda: kernels.fc_relu(X, b_std=-0.1))
bad("kernels.fc_relu-list", TypeError, "^x1:", lambda: kernels.fc_relu(X.tolist()))
bad("kernels.fc_relu-str", TypeError, "^x1:", lambda: kernels.fc_relu(np.array([["a"]])))
bad("kernels.blocked-block0", ValueError, "^block_size:", lambda: kernels.fc_relu_blocked(X, block_size=0))
bad("kernels.apply-which", ValueError, "^which:", lambda: kernels.fc_relu_apply(X, X, X, which="cntk"))
bad("kernels.apply-rhs-rows", ValueError, "^rhs:", lambda: kernels.fc_relu_apply(X, X, X[:5]))
bad("ease.fit-lam0", ValueError, "^lam:", lambda: ease.fit(R, lam=0.0))
bad("ease.fit-lamnan", ValueError, "^lam:", lambda: ease.fit(R, lam=NAN))
bad("ease.fit-nan", ValueError, "^x_train:", lambda: ease.fit(np.where(R > 0, NAN, 0).astype(np.float32)))
bad("ease.fit-1d", ValueError, "^x_train:", lambda: ease.fit(R[0]))
bad("ease.fit-empty", ValueError, "^x_train:", lambda: ease.fit(np.zeros((0, 4), np.float32)))
bad("ease.predict-params", TypeError, "^params:", lambda: ease.predict(R, R))
bad("ease.predict-items", ValueError, "^x_query:", lambda: ease.predict(ease.fit(R), R[:, :3]))
bad("ease.fit_predict-items", ValueError, "^x_query:", lambda: ease.fit_predict(R, R[:, :3]))
bad("ease.select-lams-neg", ValueError, "^lams:", lambda: ease.select_lambda(R, R, lams=(-1.0,)))
bad("ease.select-metric", ValueError, "metric", lambda: ease.select_lambda(R, R, lams=(1.0,), metric="MAP"))
bad("iae.fit-lam-neg", ValueError, "^lam:", lambda: infinite_ae.fit(R, lam=-1.0))
bad("iae.fit-inf", ValueError, "^x_train:", lambda: infinite_ae.fit(np.where(R > 0, np.inf, 0).astype(np.float32), lam=1.0))
bad("iae.fit-spec-type", TypeError, "^spec:", lambda: infinite_ae.fit(R, lam=1.0, spec=2))
bad("iae.predict-params", TypeError, "^params:", lambda: infinite_ae.predict(R, R))
bad("iae.predict-items", ValueError, "^x_query:", lambda: infinite_ae.predict(infinite_ae.fit(R, lam=1.0), R[:, :2]))
bad("iae.spectral-items", ValueError, "^queries:", lambda: infinite_ae.spectral_path(R, R[:, :2]))
bad("iae.spectral_scores-lam0", ValueError, "^lam:", lambda: infinite_ae.spectral_scores(infinite_ae.spectral_path(R, R), 0.0))
bad("iae.select-lams", ValueError, "^lams:", lambda: infinite_ae.select_lambda(R, R, lams=(0.0,)))
bad("iae.kernelspec-wstd", ValueError, "^w_std:", lambda: infinite_ae.KernelSpec(w_std=-1.0))
bad("pop.fit-nan", ValueError, "^x_train:", lambda: popularity.fit(np.full((2, 2), NAN, np.float32)))
bad("pop.fit-3d", ValueError, "^x_train:", lambda: popularity.fit(np.zeros((2, 2, 2))))
bad("pop.predict-items", ValueError, "^x_query:", lambda: popularity.predict(popularity.fit(R), R[:, :2]))
bad("pop.predict-params", TypeError, "^params:", lambda: popularity.predict(None, R))
bad("mf.init-intkey", TypeError, "^key:", lambda: mf.init(0, 5, 4))
bad("mf.init-nusers0", ValueError, "^n_users:", lambda: mf.init(KEY, 0, 4))
bad("mf.init-dim-neg", ValueError, "^dim:", lambda: mf.init(KEY, 5, 4, dim=-1))
bad("mf.init-scale-neg", ValueError, "^scale:", lambda: mf.init(KEY, 5, 4, scale=-1.0))
bad("mf.score_pairs-user-oob", ValueError, "^users:", lambda: mf.score_pairs(MFP, np.array([5]), np.array([0])))
bad("mf.score_pairs-item-neg", ValueError, "^items:", lambda: mf.score_pairs(MFP, np.array([0]), np.array([-1])))
bad("mf.score_pairs-float", TypeError, "^users:", lambda: mf.score_pairs(MFP, np.array([0.0]), np.array([0])))
bad("mf.score_pairs-shape", ValueError, "items", lambda: mf.score_pairs(MFP, np.array([0, 1]), np.array([0])))
bad("mf.predict-user-oob", ValueError, "^users:", lambda: mf.predict(MFP, np.array([0, 7])))
bad("mf.predict-params", TypeError, "^params:", lambda: mf.predict({}, np.array([0])))
bad("mf.fit-intkey", TypeError, "^key:", lambda: mf.fit(0, INTER.users, INTER.items, 5, 4, epochs=1))
bad("mf.fit-item-oob", ValueError, "^items:", lambda: mf.fit(KEY, INTER.users, INTER.items, 5, 3, epochs=1))
bad("mf.fit-lr0", ValueError, "^lr:", lambda: mf.fit(KEY, INTER.users, INTER.items, 5, 4, epochs=1, lr=0.0))
bad("mf.fit-weights-neg", ValueError, "^weights:", lambda: mf.fit(KEY, INTER.users, INTER.items, 5, 4, epochs=1, weights=-np.ones(10, np.float32)))
bad("mf.fit-epochs0", ValueError, "^epochs:", lambda: mf.fit(KEY, INTER.users, INTER.items, 5, 4, epochs=0))
bad("mf.inverse_auc-intkey", TypeError, "^key:", lambda: mf.inverse_auc(0, MFP, INTER.users, INTER.items))
bad("mf.inverse_auc-item-oob", ValueError, "^items:", lambda: mf.inverse_auc(KEY, MFP, np.array([0]), np.array([4])))
bad("mf.inverse_auc-len", ValueError, "items", lambda: mf.inverse_auc(KEY, MFP, np.array([0, 1]), np.array([0])))
bad("mlp.n_classes0", ValueError, "^n_classes:", lambda: mlp.mlp(0))
bad("mlp.hidden-neg", ValueError, "^hidden:", lambda: mlp.mlp(3, hidden=(4, -1)))
bad("convnet.norm", ValueError, "^norm:", lambda: convnet.convnet(3, norm="group"))
bad("convnet.width0", ValueError, "^width:", lambda: convnet.convnet(3, width=0))
bad("convnet.n_classes-float", TypeError, "^n_classes:", lambda: convnet.convnet(3.0))
bad("tuning.metric", ValueError, "^metric:", lambda: tuning.parse_metric("HR@0"))
bad("tuning.metric-unknown", ValueError, "^metric:", lambda: tuning.parse_metric("MRR@10"))
bad("tuning.select-lams-empty", ValueError, "^lams:", lambda: tuning.select_lambda(R, R, scores_for=lambda lam: jnp.asarray(R), lams=()))

# distill.parametrize / parallel
bad("param.latent-tau0", ValueError, "^tau:", lambda: parametrize.latent_factorization(2, 3, 2, 5, tau=0.0))
bad("param.latent-vocab1", ValueError, "^vocab_size:", lambda: parametrize.latent_factorization(2, 3, 2, 1))
bad("param.latent-init-intkey", TypeError, "^key:", lambda: parametrize.latent_factorization(2, 3, 2, 5).init(0))
bad("param.gumbel-tau-neg", ValueError, "^tau:", lambda: parametrize.gumbel_multisample(5, 4, n_samples=2, tau=-1.0))
bad("param.gumbel-noise", ValueError, "^noise:", lambda: parametrize.gumbel_multisample(5, 4, n_samples=2, tau=1.0, noise="uniform"))
bad("param.gumbel-init-shape", ValueError, "^real_rows:", lambda: parametrize.gumbel_multisample(5, 4, n_samples=2, tau=1.0).init(KEY, R[:4]))
bad("param.gumbel-init-nan", ValueError, "^real_rows:", lambda: parametrize.gumbel_multisample(5, 4, n_samples=2, tau=1.0).init(KEY, np.full((5, 4), NAN, np.float32)))
bad("param.gumbel-init-intkey", TypeError, "^key:", lambda: parametrize.gumbel_multisample(5, 4, n_samples=2, tau=1.0).init(0, R))
bad("param.multisample-intkey", TypeError, "^key:", lambda: parametrize.multisample_gumbel_sum(jnp.zeros((2, 3)), 0, n_samples=2, tau=1.0))
bad("param.multisample-int", TypeError, "^logits:", lambda: parametrize.multisample_gumbel_sum(jnp.zeros((2, 3), jnp.int32), KEY, n_samples=2, tau=1.0))
bad("param.multisample-nsamples0", ValueError, "^n_samples:", lambda: parametrize.multisample_gumbel_sum(jnp.zeros((2, 3)), KEY, n_samples=0, tau=1.0))
bad("param.identity-nan", ValueError, "^data:", lambda: parametrize.identity().init(KEY, X_NAN))
bad("parallel.make_mesh-0", ValueError, "^n_devices:", lambda: parallel.make_mesh(0))
bad("parallel.make_mesh-many", ValueError, "^n_devices:", lambda: parallel.make_mesh(10_000))
bad("parallel.pad_rows-0", ValueError, "^multiple:", lambda: parallel.pad_rows(X, 0))
bad("parallel.row_blocks-0", ValueError, "^block_size:", lambda: parallel.map_row_blocks(lambda a: a, X, block_size=0))
bad("parallel.map_rows-mesh", TypeError, "^mesh:", lambda: parallel.map_rows(lambda a: a, X, mesh="cpu"))

# distill.matching
bad("kip.targets-oob", ValueError, "^y:", lambda: kip.kip_targets(np.array([0, 3]), 3))
bad("kip.targets-neg", ValueError, "^y:", lambda: kip.kip_targets(np.array([-1, 0]), 3))
bad("kip.targets-float", TypeError, "^y:", lambda: kip.kip_targets(np.array([0.0]), 3))
bad("krr.predict-lam-neg", ValueError, "^lam:", lambda: krr.predict(SIM, SIM, SIM, -1.0))
bad("krr.predict-shape", ValueError, "^k_ts:", lambda: krr.predict(SIM[:, :5], SIM, SIM, 0.1))
bad("krr.predict-nan", ValueError, "^k_ss:", lambda: krr.predict(SIM, np.full((6, 6), NAN, np.float32), SIM, 0.1))
bad("common.xent-oob", ValueError, "^labels:", lambda: mcommon.xent(jnp.zeros((2, 3)), jnp.array([0, 3])))
bad("common.xent-shape", ValueError, "^labels:", lambda: mcommon.xent(jnp.zeros((2, 3)), jnp.zeros((2, 4))))
bad("common.syn_labels-ipc0", ValueError, "^ipc:", lambda: mcommon.syn_labels(3, 0))
bad("dm.mmd-dim", ValueError, "^f_syn:", lambda: dm.mmd(X, X[:, :2]))
bad("dm.mmd-int", TypeError, "^f_real:", lambda: dm.mmd(X_INT, X))
bad("dc.layer-shape", ValueError, "^g_syn:", lambda: dc.layer_distance(jnp.zeros((2, 3)), jnp.zeros((2, 4))))
bad("dc.match-structure", ValueError, "^g_syn:", lambda: dc.match_distance({"a": jnp.zeros((2, 3))}, {"b": jnp.zeros((2, 3))}))
bad("augment.strategy", ValueError, "^strategy:", lambda: augment.parse_strategy("color_blur"))
bad("augment.sample-intkey", TypeError, "^key:", lambda: augment.sample(0))
bad("augment.augment-3d", ValueError, "^x:", lambda: augment.augment(KEY, IMG[0]))
bad("mtt.init-lr0", ValueError, "^settings.student_lr:", lambda: mtt.init(KEY, None, mtt.Settings(student_lr=0.0)))
MTT_TINY = mtt.Settings(model=mlp.mlp(3, hidden=(4,)), n_experts=1, expert_train_epochs=1, expert_batch_size=2)
bad("mtt.experts-intkey", TypeError, "^key:", lambda: mtt.expert_trajectories(0, mtt.Data(X, Y, 3), MTT_TINY))
bad("mtt.experts-y-oob", ValueError, "^data.y:", lambda: mtt.expert_trajectories(KEY, mtt.Data(X, Y + 5, 3), MTT_TINY))
bad("mimages.latent-levels1", ValueError, "^levels:", lambda: mimages.latent_images(2, (4, 4, 1), levels=1))
bad("mimages.latent-shape", ValueError, "^image_shape:", lambda: mimages.latent_images(2, (4, 4)))
bad("mimages.latent-std0", ValueError, "^std:", lambda: mimages.latent_images(2, (4, 4, 1), std=0.0))
bad("mimages.save-labels-len", ValueError, "labels", lambda: mimages.save_synthetic("/nonexistent/x", IMG, np.array([0, 1, 2])))

# distill.data
bad("inter.from_arrays-len", ValueError, "users|items", lambda: di.from_arrays(np.array([0, 1]), np.array([0])))
bad("inter.from_arrays-float", TypeError, "^users:", lambda: di.from_arrays(np.array([0.5]), np.array([0])))
bad("inter.from_arrays-nan-rating", ValueError, "^ratings:", lambda: di.from_arrays(np.array([0]), np.array([0]), np.array([NAN])))
bad("inter.from_arrays-list", TypeError, "^users:", lambda: di.from_arrays([0, 1], np.array([0, 1])))
bad("inter.from_arrays-empty", ValueError, "^users:", lambda: di.from_arrays(np.zeros(0, int), np.zeros(0, int)))
bad("inter.from_arrays-ts-float", TypeError, "^timestamps:", lambda: di.from_arrays(np.array([0]), np.array([0]), None, np.array([0.5])))
bad("inter.to_dense-bad-ids", ValueError, "items", lambda: di.to_dense(BAD_INTER))
bad("inter.to_dense-small", ValueError, "^n_items:", lambda: di.to_dense(INTER, n_items=2))
bad("inter.to_dense-dtype", TypeError, "^dtype:", lambda: di.to_dense(INTER, dtype=str))
bad("inter.to_implicit-none", ValueError, "^min_rating:", lambda: di.to_implicit(INTER, min_rating=10.0))
bad("inter.to_implicit-nan", ValueError, "^min_rating:", lambda: di.to_implicit(INTER, min_rating=NAN))
bad("inter.filter-neg", ValueError, "^min_user:", lambda: di.filter_min_interactions(INTER, min_user=-1))
bad("inter.filter-all", ValueError, "min_", lambda: di.filter_min_interactions(INTER, min_user=100))
bad("inter.latest-notinter", TypeError, "^inter:", lambda: di.latest_per_pair((1, 2)))
bad("images.standardize-1d", ValueError, "^x:", lambda: dimages.standardize(np.ones(4, np.float32)))
bad("images.standardize-nan", ValueError, "^x:", lambda: dimages.standardize(X_NAN))
bad("images.standardize-std0", ValueError, "^std:", lambda: dimages.standardize(X, np.zeros(3), np.zeros(3)))
bad("images.standardize-only-mean", ValueError, "std", lambda: dimages.standardize(X, np.zeros(3)))
bad("images.digits-frac1", ValueError, "^test_frac:", lambda: dimages.load_digits(test_frac=1.0))
bad("images.digits-seed-neg", ValueError, "^seed:", lambda: dimages.load_digits(seed=-1))
bad("images.subset-notdata", TypeError, "^data:", lambda: dimages.class_balanced_subset((X, Y), 1))
bad("images.subset-too-many", ValueError, "per_class", lambda: dimages.class_balanced_subset(dimages.ImageData(X, Y, 3), 5))
bad("images.tfds-name", ValueError, "^name:", lambda: dimages.load_tfds_images("imagenet-21k"))
bad("movielens.tfds-name", ValueError, "^name:", lambda: movielens.load_tfds_movielens("1b-ratings"))
bad("movielens.load-int", TypeError, "name_or_path", lambda: movielens.load(100))
bad("movielens.ml100k-missing", (ValueError, FileNotFoundError), "path", lambda: movielens.load_ml100k("/nonexistent/u.data"))
bad("export.save-empty", ValueError, "^arrays:", lambda: export.save("/nonexistent/x", {}))
bad("export.save-object", TypeError, "arrays", lambda: export.save("/nonexistent/x", {"a": np.array([object()])}))
bad("export.save-path-int", TypeError, "^path:", lambda: export.save(3, {"a": X}))
bad("export.save-settings", TypeError, "^settings:", lambda: export.save("/nonexistent/x", {"a": X}, settings={"f": object()}))
bad("export.load-missing", FileNotFoundError, "^path:", lambda: export.load("/nonexistent/x"))


@pytest.mark.parametrize("fn,exc,match", RAISES)
def test_raises(fn, exc, match):
    with pytest.raises(exc, match=match):
        fn()


# ----------------------------------------------------------------------------- static errors under jit
# Shapes, dtypes, ranks and key types are known while tracing: these raise under jit too.

JIT_RAISES: list = []


def bad_jit(case_id: str, exc: type, match: str, fn) -> None:
    """Register ``fn()`` (which traces a ``jax.jit``-ed call) as one that must raise."""
    JIT_RAISES.append(pytest.param(fn, exc, match, id=case_id))


P_POP = popularity.fit(R)
bad_jit("kernels.fc_relu-x2dim", ValueError, "x2", lambda: jax.jit(kernels.fc_relu)(X, X[:, :2]))
bad_jit("kernels.fc_relu-1d", ValueError, "^x1:", lambda: jax.jit(kernels.fc_relu)(SCORES))
bad_jit("mf.score_pairs-float", TypeError, "^users:", lambda: jax.jit(lambda u, i: mf.score_pairs(MFP, u, i))(np.zeros(2), np.zeros(2, np.int32)))
bad_jit("mf.score_pairs-shape", ValueError, "^items:", lambda: jax.jit(lambda u, i: mf.score_pairs(MFP, u, i))(np.zeros(2, np.int32), np.zeros(3, np.int32)))
bad_jit("mf.predict-2d", ValueError, "^users:", lambda: jax.jit(lambda u: mf.predict(MFP, u))(np.zeros((2, 2), np.int32)))
bad_jit("mf.init-intkey", TypeError, "^key:", lambda: jax.jit(lambda k: mf.init(k, 5, 4))(jnp.int32(0)))
bad_jit("augment.sample-intkey", TypeError, "^key:", lambda: jax.jit(augment.sample)(jnp.zeros(3, jnp.int32)))
bad_jit("common.xent-shape", ValueError, "^labels:", lambda: jax.jit(mcommon.xent)(jnp.zeros((2, 3)), jnp.zeros((2, 4))))
bad_jit("common.xent-len", ValueError, "^labels:", lambda: jax.jit(mcommon.xent)(jnp.zeros((2, 3)), jnp.zeros(3, jnp.int32)))
bad_jit("kip.targets-float", TypeError, "^y:", lambda: jax.jit(lambda y: kip.kip_targets(y, 3))(jnp.zeros(2)))
bad_jit("krr.predict-shape", ValueError, "^y_s:", lambda: jax.jit(krr.predict)(SIM, SIM, SIM[:5], 0.1))
bad_jit("dm.mmd-dim", ValueError, "^f_syn:", lambda: jax.jit(dm.mmd)(X, X[:, :2]))
bad_jit("dc.layer-shape", ValueError, "^g_syn:", lambda: jax.jit(dc.layer_distance)(jnp.zeros((2, 3)), jnp.zeros((2, 4))))
bad_jit("dc.layer-1d", ValueError, "^g_real:", lambda: jax.jit(dc.layer_distance)(jnp.zeros(3), jnp.zeros(3)))
bad_jit("pop.predict-items", ValueError, "^x_query:", lambda: jax.jit(lambda q: popularity.predict(P_POP, q))(R[:, :2]))
bad_jit("ease.fit_predict-items", ValueError, "^x_query:", lambda: jax.jit(ease.fit_predict)(R, R[:, :3]))
bad_jit("iae.fit-1d", ValueError, "^x_train:", lambda: jax.jit(lambda x: infinite_ae.fit(x, lam=1.0))(R[0]))
bad_jit("coresets.pairwise-ydim", ValueError, "^y:", lambda: jax.jit(coresets.pairwise_distances)(X, X[:, :2]))
bad_jit("scores.forgetting-1d", ValueError, "^correct:", lambda: jax.jit(scores.forgetting_events)(np.ones(3)))
bad_jit("density.collision-int", TypeError, "^dist:", lambda: jax.jit(density.collision_probability)(np.ones(2, np.int32), 1.0))
bad_jit("param.multisample-traced-tau", TypeError, "^tau:", lambda: jax.jit(lambda t: parametrize.multisample_gumbel_sum(jnp.zeros((2, 3)), KEY, n_samples=2, tau=t))(1.0))
bad_jit("param.multisample-intkey", TypeError, "^key:", lambda: jax.jit(lambda k: parametrize.multisample_gumbel_sum(jnp.zeros((2, 3)), k, n_samples=2, tau=1.0))(jnp.int32(0)))
bad_jit("scores.loss-y-float", TypeError, "y", lambda: jax.jit(lambda y: scores.loss(_apply, W3, (X, y)))(np.zeros(6, np.float32)))
bad_jit("kernels.blocked-traced-wstd", TypeError, "^w_std:", lambda: jax.jit(lambda w: kernels.fc_relu_blocked(X, w_std=w, block_size=4).ntk)(0.0))
bad_jit("kernels.apply-traced-bstd", TypeError, "^b_std:", lambda: jax.jit(lambda b: kernels.fc_relu_apply(X, X, X, b_std=b, block_size=4))(0.1))


@pytest.mark.parametrize("fn,exc,match", JIT_RAISES)
def test_raises_under_jit(fn, exc, match):
    with pytest.raises(exc, match=match):
        fn()


# ----------------------------------------------------------------------------- NaN under jit
# Invalid values cannot raise while tracing: the affected outputs are NaN, the others exact.

JIT_NAN: list = []


def nan_jit(case_id: str, fn, nan_at=None) -> None:
    """Register ``fn()`` whose output must be NaN at ``nan_at`` (an index; ``None``: everywhere)."""
    JIT_NAN.append(pytest.param(fn, nan_at, id=case_id))


def _lm(params, tokens):
    return jax.nn.one_hot(tokens, 3) @ params


Y_OOB = np.array([0, 1, 0, 3, 2, 2])  # label 3 of a 3-class model at index 3
nan_jit("scores.loss-y-oob", lambda: jax.jit(lambda y: scores.loss(_apply, W3, (X, y)))(Y_OOB), 3)
nan_jit("scores.el2n-y-neg", lambda: jax.jit(lambda y: scores.el2n(_apply, W3, (X, y)))(np.array([0, 1, 0, -1, 2, 2])), 3)
nan_jit("scores.perplexity-tok-oob", lambda: jax.jit(lambda t: scores.perplexity(_lm, W3, t))(np.array([[0, 1, 2], [0, 1, 7]])), 1)
nan_jit("mf.score_pairs-user-oob", lambda: jax.jit(lambda u, i: mf.score_pairs(MFP, u, i))(np.array([0, 5]), np.array([1, 1])), 1)
nan_jit("mf.score_pairs-item-neg", lambda: jax.jit(lambda u, i: mf.score_pairs(MFP, u, i))(np.array([0, 1]), np.array([1, -1])), 1)
nan_jit("mf.predict-user-oob", lambda: jax.jit(lambda u: mf.predict(MFP, u))(np.array([0, 9])), 1)
nan_jit("mf.inverse_auc-item-oob", lambda: jax.jit(lambda u, i: mf.inverse_auc(KEY, MFP, u, i))(np.array([0, 1]), np.array([1, 4])), 1)
nan_jit("kip.targets-oob", lambda: jax.jit(lambda y: kip.kip_targets(y, 3))(np.array([0, 3])), 1)
nan_jit("krr.predict-lam-neg", lambda: jax.jit(krr.predict)(SIM, SIM + 6 * np.eye(6, dtype=np.float32), SIM, -1e-3))
nan_jit("common.xent-oob", lambda: jax.jit(mcommon.xent)(jnp.zeros((2, 3)), jnp.array([0, 3])))
nan_jit("density.collision-width-neg", lambda: jax.jit(density.collision_probability)(np.ones(2, np.float32), -1.0))
nan_jit("density.collision-dist-neg", lambda: jax.jit(density.collision_probability)(np.array([1.0, -1.0], np.float32), 1.0), 1)
nan_jit("ease.fit-lam0", lambda: jax.jit(lambda lam: ease.fit(R, lam=lam).weights)(0.0))
nan_jit("ease.fit_predict-lam-neg", lambda: jax.jit(lambda lam: ease.fit_predict(R, R, lam=lam))(-1.0))
nan_jit("iae.fit-lam-neg", lambda: jax.jit(lambda lam: infinite_ae.fit(R, lam=lam).alpha)(-1e-3))
nan_jit("iae.spectral-lam0", lambda: jax.jit(lambda lam: infinite_ae.spectral_scores(infinite_ae.spectral_path(R, R), lam))(0.0))
nan_jit("kernels.fc_relu-wstd-neg", lambda: jax.jit(lambda w: kernels.fc_relu(X, w_std=w).ntk)(-1.0))
nan_jit("kernels.fc_relu-bstd-neg", lambda: jax.jit(lambda b: kernels.fc_relu(X, b_std=b).nngp)(-0.5))
nan_jit("valuation.loo_ridge-lam0", lambda: jax.jit(lambda lam: valuation.loo_ridge(X, SCORES, X, SCORES, lam=lam))(0.0))
nan_jit("valuation.loo_krr-lam-neg", lambda: jax.jit(lambda lam: valuation.loo_krr(SIM, SCORES, SIM, SCORES, lam=lam))(-1.0))


@pytest.mark.parametrize("fn,nan_at", JIT_NAN)
def test_nan_under_jit(fn, nan_at):
    out = np.asarray(jax.tree_util.tree_leaves(fn())[0])
    if nan_at is None:
        assert np.isnan(out).all(), out
    else:
        assert np.isnan(out[nan_at]).all(), out
        rest = np.delete(out, nan_at, axis=0)
        assert np.isfinite(rest).all(), out


# ----------------------------------------------------------------------------- degenerate but valid
# Edge inputs with a documented exact answer (not an error).

VALUES: list = []


def value(case_id: str, fn, want) -> None:
    """Register ``fn()`` that must equal ``want`` (to float32 rounding)."""
    VALUES.append(pytest.param(fn, want, id=case_id))


value("select.even_allocation-k>sum-capped", lambda: select.even_allocation(np.array([1, 2]), 4), [1, 2])
value("select.even_allocation-k0", lambda: select.even_allocation(np.array([3, 2]), 0), [0, 0])
value("select.to_mask-empty", lambda: select.to_mask(np.zeros(0, np.int64), 3), [False, False, False])
value("select.top_k-all", lambda: np.sort(select.top_k(SCORES, 6)), np.arange(6))
value("select.top_k-ties-stable", lambda: select.top_k(np.array([1.0, 1.0, 1.0]), 2), [0, 1])
value("select.budget-full", lambda: select.budget(7, 1.0), 7)
value("coresets.flv-empty", lambda: coresets.facility_location_value(SIM, np.zeros(0, np.int64)), 0.0)
value("coresets.prop-k0", lambda: coresets.proportional_budget(np.array([2, 3]), 0), [0, 0])
value("coresets.pairwise-self-zero-diag", lambda: np.diag(np.asarray(coresets.pairwise_distances(X))), np.zeros(6))
value("scores.forgetting-never-max", lambda: scores.forgetting_events(np.zeros((3, 2))), [3, 3])
value("scores.forgetting-never-zero", lambda: scores.forgetting_events(np.zeros((3, 2)), never_learned="zero"), [0, 0])
value("scores.data_map-constant", lambda: scores.data_map(np.full((4, 2), 0.25)).variability, [0.0, 0.0])
value("kernels.fc_relu-bool-equals-float", lambda: kernels.fc_relu(R > 0).ntk, kernels.fc_relu(R).ntk)
value("kernels.fc_relu-depth0-linear", lambda: kernels.fc_relu(X, depth=0, w_std=1.0, b_std=0.0).nngp, X @ X.T / 3)
value("pop.fit-zero-matrix", lambda: popularity.predict(popularity.fit(np.zeros((2, 3), np.float32)), np.zeros((1, 3), np.float32)), [[0, 0, 0]])
value("mf.score_pairs-empty", lambda: mf.score_pairs(MFP, np.zeros(0, np.int32), np.zeros(0, np.int32)).shape, (0,))
value("mf.init-bias-only", lambda: mf.init(KEY, 2, 3).user_emb.shape, (2, 0))
value("parallel.pad_rows-1", lambda: parallel.pad_rows(X, 1)[1], 0)
value("parallel.pad_rows-4", lambda: parallel.pad_rows(X, 4)[0][6:], np.zeros((2, 3)))
value("parallel.row_blocks-big", lambda: parallel.map_row_blocks(lambda a: 2 * a, X, block_size=100), 2 * X)
value("parallel.row_blocks-uneven", lambda: parallel.map_row_blocks(lambda a: 2 * a, X, block_size=4), 2 * X)
value("inter.filter-noop", lambda: di.filter_min_interactions(INTER, min_user=0).users, INTER.users)
value("inter.to_dense-larger", lambda: di.to_dense(INTER, n_items=5)[:, 4], np.zeros(5))
value("kip.targets-rows-sum-zero", lambda: np.asarray(kip.kip_targets(np.array([0, 2]), 3)).sum(axis=1), [0.0, 0.0])
value("common.xent-uniform", lambda: mcommon.xent(jnp.zeros((2, 3)), jnp.array([0, 2])), np.log(3.0))
value("dc.layer-identical", lambda: dc.layer_distance(jnp.ones((2, 3)), jnp.ones((2, 3))), 0.0)
value("dm.mmd-identical", lambda: dm.mmd(X, X), 0.0)
value("tuning.parse-auc", lambda: tuning.parse_metric("AUC"), ("auc", None))
value("density.collision-zero-dist", lambda: jax.jit(density.collision_probability)(np.zeros(2, np.float32), 1.0), [1.0, 1.0])


@pytest.mark.parametrize("fn,want", VALUES)
def test_documented_value(fn, want):
    got = fn()
    if isinstance(want, tuple):
        assert tuple(got) == want
    else:
        np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), atol=1e-5)


# ----------------------------------------------------------------------------- corrupt files


def _ml100k(tmp_path, text):
    p = tmp_path / "u.data"
    p.write_text(text)
    return p


def _export_then(tmp_path, corrupt):
    base = tmp_path / "syn"
    export.save(base, {"x": X}, settings={"ipc": 1})
    corrupt(tmp_path)
    return base


def _truncate_npz(d):
    f = next(d.glob("*.npz"))
    f.write_bytes(f.read_bytes()[:40])


def _garble_json(d):
    next(d.glob("*.json")).write_text("{not json")


def _bump_version(d):
    f = next(d.glob("*.json"))
    meta = json.loads(f.read_text())
    meta["format_version"] = 999
    f.write_text(json.dumps(meta))


def _foreign_npz(d):
    f = next(d.glob("*.npz"))
    np.savez(f, x=X + 1)


FILES = [
    pytest.param(lambda t: movielens.load_ml100k(_ml100k(t, "1\t2\t3\n")), ValueError, r"path: .*line 1", id="ml100k-3-fields"),
    pytest.param(lambda t: movielens.load_ml100k(_ml100k(t, "1\t2\t5\t10\n1\t3\tfive\t11\n")), ValueError, r"path: .*line 2", id="ml100k-word-rating"),
    pytest.param(lambda t: movielens.load_ml100k(_ml100k(t, "1\t2\tnan\t10\n")), ValueError, r"path: .*line 1", id="ml100k-nan-rating"),
    pytest.param(lambda t: movielens.load_ml100k(_ml100k(t, "")), ValueError, "path: .*no ratings", id="ml100k-empty"),
    pytest.param(lambda t: movielens.load_ml100k(_ml100k(t, "\n\n")), ValueError, "path: .*no ratings", id="ml100k-blank"),
    pytest.param(lambda t: movielens.load_ml100k(_ml100k(t, "1\t2.5\t5\t10\n")), ValueError, r"path: .*line 1", id="ml100k-float-id"),
    pytest.param(lambda t: movielens.load_ml100k(t / "missing"), FileNotFoundError, "^path:", id="ml100k-missing"),
    pytest.param(lambda t: movielens.load_ml100k(t), FileNotFoundError, "^path:", id="ml100k-directory"),
    pytest.param(lambda t: movielens.load_ml1m(_ml100k(t, "1\t2\t5\t10\n")), ValueError, r"path: .*line 1", id="ml1m-tabs"),
    pytest.param(lambda t: movielens.load(t), ValueError, "^name_or_path:", id="movielens-empty-dir"),
    pytest.param(lambda t: export.load(_export_then(t, _truncate_npz)), ValueError, "^path:", id="export-truncated-npz"),
    pytest.param(lambda t: export.load(_export_then(t, _garble_json)), ValueError, "^path:", id="export-garbled-json"),
    pytest.param(lambda t: export.load(_export_then(t, _bump_version)), ValueError, "^path:.*format_version", id="export-future-version"),
    pytest.param(lambda t: export.load(_export_then(t, _foreign_npz)), ValueError, "^path:", id="export-foreign-npz"),
    pytest.param(lambda t: export.load(t / "nothing"), FileNotFoundError, "^path:", id="export-missing"),
    pytest.param(lambda t: trajectories.load(t / "nothing"), FileNotFoundError, "^root:", id="trajectories-missing-dir"),
    pytest.param(lambda t: trajectories.load(3), TypeError, "^root:", id="trajectories-int-path"),
]


@pytest.mark.parametrize("fn,exc,match", FILES)
def test_corrupt_files(tmp_path, fn, exc, match):
    with pytest.raises(exc, match=match):
        fn(tmp_path)
