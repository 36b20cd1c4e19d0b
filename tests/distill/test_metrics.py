"""Ranking metrics vs. a plain-numpy brute force (loops over users, stable argsort)."""

import math

import jax

import jax.numpy as jnp
import numpy as np
import pytest

from distill import metrics as M
from distill import parallel

pytestmark = pytest.mark.x64  # compares to 1e-6 and tighter

RTOL = 1e-12


# ------------------------------------------------------------------ brute force


def _brute(scores, test, train, k, w):
    """Per-user (hr, ndcg, psp, psp_unit, auc, valid, valid_auc), all by explicit loops."""
    scores = np.asarray(scores, np.float64)
    test, train = np.asarray(test) != 0, np.asarray(train) != 0
    n_users, n_items = scores.shape
    k = min(k, n_items)
    out = {name: np.zeros(n_users) for name in ("hr", "ndcg", "psp", "psp_unit", "auc")}
    out["valid"] = np.zeros(n_users, bool)
    out["valid_auc"] = np.zeros(n_users, bool)
    for u in range(n_users):
        pos = test[u] & ~train[u]
        neg = ~test[u] & ~train[u]
        order = np.argsort(-np.where(train[u], -np.inf, scores[u]), kind="stable")
        top = order[:k]
        n_pos = int(pos.sum())
        if n_pos == 0:
            continue
        out["valid"][u] = True
        m = min(n_pos, k)
        hits = [bool(pos[i]) for i in top]
        out["hr"][u] = sum(hits) / m
        dcg = sum(1.0 / math.log2(r + 2) for r, h in enumerate(hits) if h)
        idcg = sum(1.0 / math.log2(r + 2) for r in range(m))
        out["ndcg"][u] = dcg / idcg
        gain = sum(w[i] for i, h in zip(top, hits, strict=True) if h)
        best = sum(sorted((w[i] for i in np.flatnonzero(pos)), reverse=True)[:m])
        out["psp"][u] = gain / m / best
        out["psp_unit"][u] = gain / best
        negs = np.flatnonzero(neg)
        if len(negs):
            out["valid_auc"][u] = True
            tot = 0.0
            for i in np.flatnonzero(pos):
                for j in negs:
                    si, sj = scores[u, i], scores[u, j]
                    tot += 1.0 if si > sj else 0.5 if si == sj else 0.0
            out["auc"][u] = tot / (n_pos * len(negs))
    return out


def _data(seed, n_users=37, n_items=23, kind="normal"):
    rng = np.random.default_rng(seed)
    if kind == "normal":
        scores = rng.normal(size=(n_users, n_items))
    elif kind == "ties":
        scores = rng.integers(0, 3, size=(n_users, n_items)).astype(np.float64)
    else:  # all zero, with signed zeros mixed in
        scores = np.where(rng.random((n_users, n_items)) < 0.5, -0.0, 0.0)
    train = (rng.random((n_users, n_items)) < 0.25).astype(np.int32)
    test = ((rng.random((n_users, n_items)) < 0.2) & (train == 0)).astype(np.float32)
    test[0] = 0  # no test item
    test[1] = train[1]  # test items only inside train: no positive left
    test[2, 0] = 1
    train[2, 0] = 1  # test/train overlap: the item is removed from the ranking
    test[3], train[3] = 1, 0  # every item is a test item: no negative for AUC
    test[4, :] = 0
    test[4, -1] = 1
    train[4, :-3] = 1  # only 3 candidates: top-k with k > 3 is filled with train items
    prop = rng.uniform(0.05, 1.0, size=n_items)
    return scores, test, train, prop


def _metric(name, scores, test, train, k, prop):
    if name == "hr":
        return M.hr_at_k(scores, test, train, k=k)
    if name == "ndcg":
        return M.ndcg_at_k(scores, test, train, k=k)
    if name == "psp":
        return M.psp_at_k(scores, test, train, k=k, propensity=prop)
    if name == "psp_unit":
        return M.psp_at_k(scores, test, train, k=k, propensity=prop, unit=True)
    return M.auc(scores, test, train)


# ------------------------------------------------------------------ agreement


@pytest.mark.parametrize("kind", ["normal", "ties", "zeros"])
@pytest.mark.parametrize("k", [1, 5, 23, 40])
def test_per_user_metrics_equal_brute_force(kind, k):
    scores, test, train, prop = _data(0, kind=kind)
    ref = _brute(scores, test, train, k, 1.0 / prop)
    for name in ("hr", "ndcg", "psp", "psp_unit"):
        got = _metric(name, scores, test, train, k, prop)
        assert got.shape == (scores.shape[0],)
        np.testing.assert_allclose(got, ref[name], rtol=RTOL, atol=0, err_msg=name)
    np.testing.assert_array_equal(M.valid_users(test, train), ref["valid"])


@pytest.mark.parametrize("kind", ["normal", "ties", "zeros"])
def test_auc_equals_brute_force(kind):
    scores, test, train, prop = _data(1, kind=kind)
    ref = _brute(scores, test, train, 1, 1.0 / prop)
    np.testing.assert_allclose(M.auc(scores, test, train), ref["auc"], rtol=RTOL, atol=0)
    if kind == "zeros":  # every pair is a tie
        np.testing.assert_allclose(M.auc(scores, test, train)[ref["valid_auc"]], 0.5, rtol=RTOL)


def test_no_train_mask_equals_zero_train_mask():
    scores, test, train, prop = _data(2)
    zeros = np.zeros_like(train)
    for name in ("hr", "ndcg", "psp", "auc"):
        np.testing.assert_array_equal(
            _metric(name, scores, test, None, 5, prop), _metric(name, scores, test, zeros, 5, prop)
        )


def test_top_k_items_tie_rule_and_train_excluded():
    scores, test, train, _ = _data(3, kind="ties")
    masked = np.where(train != 0, -np.inf, scores)
    ref = np.stack([np.argsort(-row, kind="stable") for row in masked])  # one user at a time
    for k in (1, 6, 23, 50):
        got = np.asarray(M.top_k_items(scores, train, k=k))
        np.testing.assert_array_equal(got, ref[:, : min(k, 23)])
    # lax.top_k itself breaks ties towards the lower index (the rule we rely on).
    _, idx = jax.lax.top_k(jnp.asarray(scores), scores.shape[1])
    np.testing.assert_array_equal(idx, np.argsort(-scores, axis=1, kind="stable"))
    # Train items never appear while there are enough candidates, even when they
    # carry the highest scores.
    boosted = scores + 100.0 * train
    top = np.asarray(M.top_k_items(boosted, train, k=5))
    for u in range(len(scores)):
        if (train[u] == 0).sum() >= 5:
            assert not train[u, top[u]].any()


def test_train_items_are_masked_out():
    # Train items scored highest would fill the list without the mask.
    scores = np.array([[10.0, 9.0, 5.0, 1.0, 0.0, -1.0]])
    train = np.array([[1, 1, 0, 0, 0, 0]])
    test = np.array([[0, 0, 1, 0, 0, 0]])
    assert M.hr_at_k(scores, test, train, k=1)[0] == 1.0
    assert M.ndcg_at_k(scores, test, train, k=1)[0] == 1.0
    assert M.hr_at_k(scores, test, None, k=1)[0] == 0.0


# ------------------------------------------------------------------ hand-computed


def test_hand_computed_example():
    # One user, 5 items; item 0 is a train item. Masked ranking: 2, 4, 3, 1, (0).
    scores = np.array([[0.9, 0.1, 0.8, 0.3, 0.5]])
    train = np.array([[1, 0, 0, 0, 0]])
    test = np.array([[0, 0, 1, 1, 0]], dtype=bool)  # T = {2, 3}
    prop = np.array([0.5, 0.5, 0.25, 0.5, 1.0])  # weights 1/p = 2, 2, 4, 2, 1
    expect = {
        # k: (HR, nDCG, PSP (reference), PSP (unit))
        1: (1.0, 1.0, 4 / 1 / 4, 4 / 4),
        2: (1 / 2, 1 / (1 + 1 / math.log2(3)), 4 / 2 / 6, 4 / 6),
        # k = 10 is clipped to 5 (the whole catalogue); both test items are hit by rank 3.
        10: (1.0, (1 + 1 / 2) / (1 + 1 / math.log2(3)), 6 / 2 / 6, 6 / 6),
    }
    for k, (hr, ndcg, psp, psp_unit) in expect.items():
        np.testing.assert_allclose(M.hr_at_k(scores, test, train, k=k), [hr], rtol=RTOL)
        np.testing.assert_allclose(M.ndcg_at_k(scores, test, train, k=k), [ndcg], rtol=RTOL)
        np.testing.assert_allclose(
            M.psp_at_k(scores, test, train, k=k, propensity=prop), [psp], rtol=RTOL
        )
        np.testing.assert_allclose(
            M.psp_at_k(scores, test, train, k=k, propensity=prop, unit=True), [psp_unit], rtol=RTOL
        )
    # Pairs (pos, neg): (2,1) ok, (2,4) ok, (3,1) ok, (3,4) wrong.
    np.testing.assert_allclose(M.auc(scores, test, train), [3 / 4], rtol=RTOL)
    # Ties count one half: positive 0 vs negatives 1 (tie), 2 (below), 3 (tie).
    np.testing.assert_allclose(
        M.auc(np.array([[1.0, 1.0, 0.0, 1.0]]), np.array([[1, 0, 0, 0]])), [2 / 3], rtol=RTOL
    )
    res = M.evaluate(scores, test, train, ks=(2, 10), propensity=prop)
    assert res == pytest.approx(
        {
            "HR@2": 50.0, "HR@10": 100.0,
            "nDCG@2": 100 * expect[2][1], "nDCG@10": 100 * expect[10][1],
            "PSP@2": 100 / 3, "PSP@10": 50.0,
            "AUC": 75.0, "n_users": 1,
        },
        rel=RTOL,
    )


def test_item_propensity_hand_computed():
    counts = np.array([0.0, 1.0, 3.0])
    n, a, b = 4.0, 0.55, 1.5
    c = (math.log(n) - 1) * (b + 1) ** a
    expect = [1 / (1 + c * (ni + b) ** -a) for ni in counts]
    np.testing.assert_allclose(M.item_propensity(counts), expect, rtol=RTOL)
    # The train matrix gives the same counts (column sums) and N (total).
    train = np.array([[0, 1, 1], [0, 0, 1], [0, 0, 1]], dtype=np.int8)
    np.testing.assert_allclose(M.item_propensity(train), expect, rtol=RTOL)
    p = np.asarray(M.item_propensity(np.array([0.0, 2.0, 50.0, 500.0]), A=0.6, B=2.0))
    assert np.all(np.diff(p) > 0) and np.all((p > 0) & (p <= 1))  # popular -> closer to 1


# ------------------------------------------------------------------ evaluate


def _brute_means(scores, test, train, ks, prop):
    res = {}
    for name, disp in (("hr", "HR"), ("ndcg", "nDCG"), ("psp", "PSP")):
        for k in ks:
            r = _brute(scores, test, train, k, 1.0 / prop)
            res[f"{disp}@{k}"] = 100 * r[name][r["valid"]].mean()
    r = _brute(scores, test, train, 1, 1.0 / prop)
    res["AUC"] = 100 * r["auc"][r["valid_auc"]].mean()
    res["n_users"] = int(r["valid"].sum())
    return res


def test_evaluate_means_over_users_with_test_items():
    scores, test, train, prop = _data(4)
    ks = (1, 5, 40)
    got = M.evaluate(scores, test, train, ks=ks, propensity=prop)
    ref = _brute_means(scores, test, train, ks, prop)
    assert list(got) == list(ref)
    has_test = ((test != 0) & (train == 0)).any(axis=1)
    assert not has_test[0] and not has_test[1]  # users without test items: excluded
    assert got["n_users"] == ref["n_users"] == has_test.sum() < len(scores)
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=RTOL, err_msg=key)


def test_evaluate_batched_equals_unbatched():
    scores, test, train, prop = _data(5)
    x = train.astype(np.float64)
    weights = np.random.default_rng(5).normal(size=(23, 23))
    full = M.evaluate(scores, test, train, ks=(3, 10), propensity=prop)
    before = M._batch_totals._cache_size()
    batched = M.evaluate(scores, test, train, ks=(3, 10), propensity=prop, batch_size=8)
    assert M._batch_totals._cache_size() - before == 1  # ragged last batch: one compile
    assert batched.keys() == full.keys()
    for key in full:
        np.testing.assert_allclose(batched[key], full[key], rtol=RTOL, err_msg=key)
    # A score function of the train rows == the precomputed score matrix.
    calls = []

    def score_fn(rows):
        calls.append(rows.shape)
        return jnp.asarray(rows, jnp.float64) @ weights

    by_fn = M.evaluate(score_fn, test, train, ks=(3, 10), propensity=prop, batch_size=8)
    direct = M.evaluate(x @ weights, test, train, ks=(3, 10), propensity=prop)
    assert calls == [(8, 23)] * 5  # 37 users: 5 fixed-size batches
    for key in direct:
        np.testing.assert_allclose(by_fn[key], direct[key], rtol=RTOL, err_msg=key)


def test_evaluate_ignores_nan_scores_of_padding_rows():
    scores, test, train, prop = _data(5)
    train = train.copy()
    train[:, 0] = 1  # every real user has a train item; the all-zero padding rows don't
    weights = np.random.default_rng(5).normal(size=(23, 23))

    def score_fn(rows):  # 0/0 = NaN on the padding rows only
        rows = jnp.asarray(rows, jnp.float64)
        return rows @ weights / rows.sum(axis=1, keepdims=True)

    x = train.astype(np.float64)
    precomputed = x @ weights / x.sum(1, keepdims=True)
    direct = M.evaluate(precomputed, test, train, ks=(3, 10), propensity=prop)
    by_fn = M.evaluate(score_fn, test, train, ks=(3, 10), propensity=prop, batch_size=8)
    for key in direct:
        np.testing.assert_allclose(by_fn[key], direct[key], rtol=RTOL, err_msg=key)


def test_evaluate_default_propensity_and_subset_of_metrics():
    scores, test, train, _ = _data(6)
    got = M.evaluate(scores, test, train, ks=(5,), metrics=("psp",))
    explicit = M.evaluate(
        scores, test, train, ks=(5,), metrics=("psp",), propensity=M.item_propensity(train)
    )
    assert got == explicit and list(got) == ["PSP@5", "n_users"]
    assert list(M.evaluate(scores, test, train, metrics=("auc",))) == ["AUC", "n_users"]


def test_evaluate_float32_close_to_float64():
    scores, test, train, prop = _data(7)
    s32 = scores.astype(np.float32)
    a = M.evaluate(s32, test, train, ks=(3, 10), propensity=prop.astype(np.float32))
    b = M.evaluate(s32.astype(np.float64), test, train, ks=(3, 10), propensity=prop)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)


def test_metrics_are_jittable():
    scores, test, train, prop = _data(8)
    f = jax.jit(
        lambda s, t, tr, p: (M.hr_at_k(s, t, tr, k=5), M.psp_at_k(s, t, tr, k=5, propensity=p))
    )
    hr, psp = f(scores, test, train, prop)
    np.testing.assert_allclose(hr, M.hr_at_k(scores, test, train, k=5), rtol=RTOL)
    eager = M.psp_at_k(scores, test, train, k=5, propensity=prop)
    np.testing.assert_allclose(psp, eager, rtol=RTOL)


# ------------------------------------------------------------------ multi-device


def _sharded_evaluate_equals_single():
    jax.config.update("jax_enable_x64", True)
    mesh = parallel.make_mesh()
    assert mesh.size == 8
    scores, test, train, prop = _data(9, n_users=29)
    # 12 rows per batch (3 batches, the last one padded): not a multiple of 8 devices.
    single = M.evaluate(scores, test, train, ks=(3, 10), propensity=prop, batch_size=12)
    sharded = M.evaluate(
        scores, test, train, ks=(3, 10), propensity=prop, batch_size=12, mesh=mesh
    )
    assert sharded.keys() == single.keys()
    for key in single:
        np.testing.assert_allclose(sharded[key], single[key], rtol=RTOL, err_msg=key)
    ref = _brute_means(scores, test, train, (3, 10), prop)
    for key in ref:
        np.testing.assert_allclose(sharded[key], ref[key], rtol=RTOL, err_msg=key)


@pytest.mark.slow
def test_evaluate_on_8_devices(multidevice):
    multidevice(_sharded_evaluate_equals_single)


# ------------------------------------------------------------------ bad inputs


def test_bad_inputs_name_the_argument():
    scores, test, train, prop = _data(10, n_users=6, n_items=5)
    nan = scores.copy()
    nan[1, 2] = np.nan
    with pytest.raises(ValueError, match="scores"):
        M.hr_at_k(nan, test, train, k=2)
    with pytest.raises(ValueError, match="scores"):
        M.auc(nan, test, train)
    with pytest.raises(TypeError, match="scores"):
        M.ndcg_at_k(scores.tolist(), test, train, k=2)
    bad = test.copy()
    bad[0, 0] = 2
    with pytest.raises(ValueError, match="test_mask"):
        M.ndcg_at_k(scores, bad, train, k=2)
    with pytest.raises(ValueError, match="train_mask"):
        M.auc(scores, test, train * 0.5)
    with pytest.raises(ValueError, match="test_mask"):
        M.hr_at_k(scores, test[:, :4], train, k=2)
    with pytest.raises(ValueError, match="train_mask"):
        M.hr_at_k(scores, test, train[:5], k=2)
    for k in (0, -3):
        with pytest.raises(ValueError, match="k"):
            M.hr_at_k(scores, test, train, k=k)
    with pytest.raises(TypeError, match="k"):
        M.ndcg_at_k(scores, test, train, k=2.0)
    with pytest.raises(ValueError, match="propensity"):
        M.psp_at_k(scores, test, train, k=2, propensity=prop[:4])
    with pytest.raises(ValueError, match="propensity"):
        M.psp_at_k(scores, test, train, k=2, propensity=np.where(np.arange(5) == 1, 0.0, prop))
    with pytest.raises(ValueError, match="train"):
        M.item_propensity(np.array([[0, 2], [1, 0]]))
    with pytest.raises(ValueError, match="train"):
        M.item_propensity(np.array([1.0, 1.0]))  # N = 2: ln N < 1
    with pytest.raises(ValueError, match="train"):
        M.item_propensity(np.array([5.0, -1.0]))
    with pytest.raises(ValueError, match="B"):
        M.item_propensity(train, B=0.0)


def test_evaluate_bad_inputs_name_the_argument():
    scores, test, train, prop = _data(11, n_users=6, n_items=5)
    nan = scores.copy()
    nan[3, 1] = np.nan
    with pytest.raises(ValueError, match="scores"):
        M.evaluate(nan, test, train, propensity=prop)
    with pytest.raises(ValueError, match="scores"):
        M.evaluate(lambda x: jnp.full(x.shape, jnp.nan), test, train, propensity=prop)
    with pytest.raises(ValueError, match="score_fn"):
        M.evaluate(lambda x: x[:, :3], test, train, propensity=prop)
    with pytest.raises(ValueError, match="scores"):
        M.evaluate(scores[:, :4], test, train, propensity=prop)
    with pytest.raises(ValueError, match="test"):
        M.evaluate(scores, test * 3, train, propensity=prop)
    with pytest.raises(ValueError, match="train"):
        M.evaluate(scores, test, train[:, :4], propensity=prop)
    with pytest.raises(ValueError, match="test"):
        M.evaluate(scores, np.zeros_like(test), train, propensity=prop)  # nobody to average
    with pytest.raises(ValueError, match="metrics"):
        M.evaluate(scores, test, train, metrics=("hr", "map"), propensity=prop)
    with pytest.raises(ValueError, match="ks"):
        M.evaluate(scores, test, train, ks=(5, 0), propensity=prop)
    with pytest.raises(ValueError, match="batch_size"):
        M.evaluate(scores, test, train, batch_size=0, propensity=prop)
    with pytest.raises(ValueError, match="propensity"):
        M.evaluate(scores, test, None)
    with pytest.raises(ValueError, match="train"):
        M.evaluate(lambda x: x, test, None, metrics=("hr",))
    with pytest.raises(TypeError, match="mesh"):
        M.evaluate(scores, test, train, propensity=prop, mesh="data")


def test_evaluate_under_jit_names_the_jittable_functions():
    rng = np.random.default_rng(5)
    scores = jnp.asarray(rng.normal(size=(6, 9)))
    test = jnp.asarray((rng.random((6, 9)) < 0.3).astype(np.float32))
    train = jnp.asarray((rng.random((6, 9)) < 0.2).astype(np.float32))
    msg = r"host-side.*hr_at_k, ndcg_at_k, psp_at_k and auc"
    # Traced scores, traced test mask, and a score_fn closing over traced parameters.
    with pytest.raises(TypeError, match=msg) as err:
        jax.jit(lambda s: M.evaluate(s, test, train)["HR@10"])(scores)
    assert "'scores'" in str(err.value)
    with pytest.raises(TypeError, match="'test'"):
        jax.jit(lambda t: M.evaluate(scores, t, train)["HR@10"])(test)
    with pytest.raises(TypeError, match="'score_fn_scores'"):
        jax.grad(lambda p: M.evaluate(lambda x: x @ p, test, train)["HR@10"])(jnp.eye(9))
    with pytest.raises(TypeError, match=msg):
        jax.vmap(lambda s: M.evaluate(s, test, train)["AUC"])(scores[None])
    # What the message points to works under jit and agrees with evaluate on the host.
    hr = jax.jit(lambda s: M.hr_at_k(s, test, train, k=3))(scores)
    valid = np.asarray(M.valid_users(test, train))
    host = M.evaluate(scores, test, train, ks=(3,), metrics=("hr",))
    np.testing.assert_allclose(100 * np.asarray(hr)[valid].mean(), host["HR@3"], rtol=RTOL)


@pytest.mark.parametrize("fn", [M.hr_at_k, M.ndcg_at_k, M.psp_at_k, M.auc])
def test_nan_scores_give_nan_under_jit_and_raise_eagerly(fn):
    # top_k ranks NaN first: without the policy HR@1 of the first user would be 1.0.
    scores = jnp.asarray([[jnp.nan, 1.0, 0.0, 2.0], [0.5, 1.0, 0.0, 2.0]])
    target = jnp.asarray([[1.0, 0, 0, 0], [0, 0, 0, 1.0]])
    kw = {} if fn is M.auc else {"k": 1}
    if fn is M.psp_at_k:
        kw["propensity"] = jnp.ones(4)
    with pytest.raises(ValueError, match="scores"):
        fn(scores, target, **kw)
    got = np.asarray(jax.jit(lambda s, t: fn(s, t, **kw))(scores, target))
    assert np.isnan(got[0]) and np.isfinite(got[1])
    np.testing.assert_allclose(got[1], np.asarray(fn(scores[1:], target[1:], **kw))[0])


@pytest.mark.parametrize("ties", [False, True])
def test_evaluate_auc_without_sort_equals_brute_force(ties):
    """Few test items per user take the sort-free AUC (top_k + binary searches); it must
    equal the pairwise count, ties counted ½, whatever the batch's bound."""
    rng = np.random.default_rng(11)
    n, items = 37, 256
    scores = rng.integers(0, 5, (n, items)).astype(float) if ties else rng.normal(size=(n, items))
    train = rng.random((n, items)) < 0.3
    test = (rng.random((n, items)) < 0.04) & ~train
    test[1] = False  # a user without test items
    test[2, :20] = ~train[2, :20]  # one heavier user sets the batch's bound
    bound = M._auc_bound(jnp.asarray(test), jnp.asarray(train), items)
    assert bound is not None and bound >= 16
    r = _brute(scores, test, train, 1, np.ones(items))
    got = M.evaluate(scores, test, train, metrics=("auc",), batch_size=16)["AUC"]
    np.testing.assert_allclose(got, 100 * r["auc"][r["valid_auc"]].mean(), rtol=RTOL)
    sort_path = M.auc(scores, test, train)  # the per-user function sorts
    np.testing.assert_allclose(sort_path[r["valid_auc"]], r["auc"][r["valid_auc"]], rtol=RTOL)
