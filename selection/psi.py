"""Ψ: how well a sampler preserves the ranking of recommendation algorithms (dissertation §1.3.4).

    Ψ(D, s) = λ · Σ_f Σ_m Σ_p τ(R_{f,m}, R^{s,p}_{f,m})

``R_{f,m}`` ranks the panel of algorithms trained on the full data D by metric m on the
full-data test set, ``R^{s,p}_{f,m}`` the same panel trained on the p-sample of D drawn by
sampler s, τ is Kendall's τ (τ-b, as ``scipy.stats.kendalltau``) and λ makes Ψ the
mean (NaN τ — a panel that ties everywhere — are skipped). This module has the
measure (:func:`kendall_tau`, :func:`taus`, :func:`psi`) and the panel
(:func:`evaluate_panel`: popularity, bias-only, MF, NeuMF, Mult-VAE, EASE, ∞-AE on one
training matrix, evaluated on fixed validation/test items); :mod:`benchmarks.psi` runs the grid of
samplers × rates with caching.

The dissertation uses the implicit-feedback metrics AUC, Recall@100 and nDCG@10
(Table 1.1); here Recall@100 is :func:`distill.metrics.hr_at_k` at 100 (recall with the
denominator capped at k, as the project's reference).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from distill import metrics as cf_metrics
from distill.checks import check_array, check_binary, check_choice, check_int, check_key, check_same_leading
from models import ease, infinite_ae, mf, mvae, neumf, popularity

__all__ = [
    "METRICS",
    "mean_auc",
    "PANEL",
    "PANEL_7",
    "kendall_tau",
    "taus",
    "psi",
    "evaluate_panel",
]

METRICS = ("AUC", "HR@100", "nDCG@10")
"""Implicit-feedback metrics of Table 1.1 (HR@100 stands for Recall@100)."""

PANEL = ("PopRec", "bias-only", "MF", "EASE", "inf-AE")
"""The default panel ranked by Ψ: five models whose fits take seconds on a CPU."""

PANEL_7 = ("PopRec", "bias-only", "MF", "NeuMF", "MVAE", "EASE", "inf-AE")
"""Table 1.3's implicit-feedback panel: :data:`PANEL` with NeuMF and Mult-VAE (SASRec, the
sequential member, needs a sequential split; see :mod:`benchmarks.psi`)."""


@jax.jit
def _tau_b(x, y):
    sx = jnp.sign(x[:, None] - x[None, :])
    sy = jnp.sign(y[:, None] - y[None, :])
    n = x.shape[0]
    n0 = n * (n - 1) / 2.0
    # Each unordered pair appears twice in the full n × n sign matrices.
    s = jnp.sum(sx * sy) / 2.0
    tx = (jnp.sum(sx == 0) - n) / 2.0
    ty = (jnp.sum(sy == 0) - n) / 2.0
    return s / jnp.sqrt((n0 - tx) * (n0 - ty))


def kendall_tau(x: Any, y: Any) -> float:
    """Kendall's τ-b between two score vectors (equal to ``scipy.stats.kendalltau(x, y)[0]``).

    ``τ_b = (C − D) / sqrt((n₀ − n₁)(n₀ − n₂))`` with C/D the concordant/discordant
    pairs, ``n₀ = n(n−1)/2`` and n₁/n₂ the pairs tied in x/y. Jitted over all pairs
    (panels are small). NaN when either vector is constant, like scipy.

    Args:
      x, y: ``(n,)`` finite numbers, ``n >= 2``.

    Returns:
      τ-b as a python float in ``[−1, 1]`` (or NaN).
    """
    check_array(x, "x", ndim=1, kind="numeric", finite=True)
    check_array(y, "y", ndim=1, kind="numeric", finite=True)
    check_same_leading([("x", x), ("y", y)])
    if x.shape[0] < 2:
        raise ValueError(f"x: expected at least 2 values, got {x.shape[0]}")
    x64 = jnp.asarray(np.asarray(x, np.float64))
    y64 = jnp.asarray(np.asarray(y, np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(_tau_b(x64, y64))


def taus(
    full: Mapping[str, Mapping[str, float]],
    sampled: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = METRICS,
) -> dict[str, float]:
    """τ between the full-data and the sampled-data ranking of the panel, per metric.

    Args:
      full: ``{model: {metric: value}}`` of the panel trained on the full data.
      sampled: the same for the panel trained on a sample (same models).
      metrics: which metrics (higher = better for every one).

    Returns:
      ``{metric: τ(R_m, R^{s,p}_m)}``.
    """
    if not isinstance(full, Mapping) or not isinstance(sampled, Mapping):
        raise TypeError("full: expected dicts {model: {metric: value}} for full and sampled")
    models = sorted(full)
    if sorted(sampled) != models:
        raise ValueError(f"sampled: expected the models {models}, got {sorted(sampled)}")
    out = {}
    for m in metrics:
        a = np.array([full[k][m] for k in models], np.float64)
        b = np.array([sampled[k][m] for k in models], np.float64)
        out[m] = kendall_tau(a, b)
    return out


def psi(values: Any) -> float:
    """Ψ: the mean of the τ values over metrics and rates (NaN τ skipped; NaN if all are).

    Args:
      values: τ values, any shape (e.g. ``(n_rates, n_metrics)``).
    """
    check_array(values, "values", kind="numeric")
    v = np.asarray(values, np.float64).ravel()
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def mean_auc(scores: Any, test: Any, exclude: Any) -> float:
    """Mean per-user AUC ×100 over users with test and negative items, in numpy.

    The same quantity as ``distill.metrics.evaluate(...)["AUC"]`` (Mann–Whitney U with
    ties counted ½, excluded items removed; the tests check equality), computed with one
    numpy sort of the negatives' scores and binary searches for the positives: XLA's
    CPU sort is ~30× slower than numpy's, and the Ψ grid evaluates ~400 score matrices.

    Args:
      scores: ``(U, I)`` finite scores.
      test: ``(U, I)`` bool test items.
      exclude: ``(U, I)`` bool items removed from the ranking.
    """
    check_array(scores, "scores", ndim=2, kind="numeric", finite=True)
    check_array(test, "test", shape=scores.shape)
    check_array(exclude, "exclude", shape=scores.shape)
    check_binary(test, "test")  # a count matrix cast to bool would silently binarise
    check_binary(exclude, "exclude")
    s = np.asarray(scores)
    test, exclude = np.asarray(test, bool), np.asarray(exclude, bool)
    pos, neg = test & ~exclude, ~test & ~exclude
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    # Negatives' scores sorted per row (others pushed to +inf, beyond every finite
    # score); then each positive needs two binary searches, not a full ranking.
    sorted_neg = np.sort(np.where(neg, s, np.inf), axis=1)
    u_stat = np.zeros(s.shape[0])
    for u in np.flatnonzero((n_pos > 0) & (n_neg > 0)):
        sp = s[u, pos[u]]
        below = np.searchsorted(sorted_neg[u], sp, side="left")
        at_or_below = np.searchsorted(sorted_neg[u], sp, side="right")
        u_stat[u] = 0.5 * np.sum(below + at_or_below)
    ok = (n_pos > 0) & (n_neg > 0)
    if not ok.any():
        raise ValueError("test: expected at least one user with test and negative items")
    return float(100.0 * np.mean(u_stat[ok] / (n_pos[ok] * n_neg[ok])))


def _mf_scores(key, train, name, n_pad, mf_epochs, mf_dim):
    """Bias-only / MF scores of every user, trained by BPR on ``train``'s nonzeros padded
    with weight-0 rows to ``n_pad`` (one compilation for every sample size)."""
    shape = tuple(train.shape)
    u, i = np.nonzero(np.asarray(train))
    n = u.shape[0]
    w = np.ones(n, np.float32)
    if n_pad is not None and n_pad > n:
        u, i = np.pad(u, (0, n_pad - n)), np.pad(i, (0, n_pad - n))
        w = np.pad(w, (0, n_pad - n))
    fitted = mf.fit(
        key, u.astype(np.int32), i.astype(np.int32), shape[0], shape[1],
        dim=0 if name == "bias-only" else mf_dim, epochs=mf_epochs, weights=w,
    )
    return mf.predict(fitted.params, jnp.arange(shape[0]))


def _neumf_scores(key, train, epochs):
    """NeuMF with the recommender panel's validated settings (lr 3e-3, batch 2,048)."""
    u, i = np.nonzero(np.asarray(train))
    fitted = neumf.fit(key, u.astype(np.int32), i.astype(np.int32), train.shape[0], train.shape[1],
                       epochs=epochs, lr=3e-3, batch_size=2048)
    return neumf.scores(fitted.params, jnp.arange(train.shape[0]))


def _mvae_scores(key, train, context, epochs):
    """Mult-VAE fitted on the sample's non-empty rows, scoring every user's ``context`` row.

    β reaches its cap 0.2 at 16 % of the updates (annealing over 0.8·T for T updates), the
    recommender panel's setting; users absent from a sample are folded in through their rows.
    """
    rows = np.asarray(train).sum(axis=1) > 0
    x = train[np.flatnonzero(rows)]
    fitted = mvae.fit(key, x, epochs=epochs, total_anneal_steps=mvae.anneal_steps(x.shape[0], epochs))
    return mvae.scores(fitted.params, context)


def _panel_scores(key, name, x, val, context, *, n_pad, mf_epochs, mf_dim, ease_lams, inf_ae_lams, mesh,
                  neumf_epochs, mvae_epochs):
    """``(U, I)`` test scores of one panel model trained on ``x`` (λ chosen on ``val``)."""
    if name == "PopRec":
        return popularity.predict(popularity.fit(x), context)
    if name in ("bias-only", "MF"):
        return _mf_scores(key, x, name, n_pad, mf_epochs, mf_dim)
    if name == "NeuMF":
        return _neumf_scores(key, x, neumf_epochs)
    if name == "MVAE":
        return _mvae_scores(key, x, context, mvae_epochs)
    if name == "EASE":
        search = ease.select_lambda(x, val, lams=ease_lams)
        return ease.fit_predict(x, context, lam=float(search.best_lam))
    search = infinite_ae.select_lambda(x, val, lams=inf_ae_lams, mesh=mesh)
    return infinite_ae.predict(search.model, context, mesh=mesh)


def _check_panel_args(key, train, val, test, exclude, models):
    check_key(key)
    check_array(train, "train", ndim=2, kind="numeric")
    shape = tuple(train.shape)
    for name, a in (("val", val), ("test", test), ("exclude", exclude)):
        check_array(a, name, shape=shape)
    for m in models:
        check_choice(m, "models", PANEL_7)


def evaluate_panel(
    key: jax.Array,
    train: Any,
    val: Any,
    test: Any,
    exclude: Any,
    *,
    models: Sequence[str] = PANEL,
    n_pad: int | None = None,
    mf_epochs: int = 20,
    mf_dim: int = 32,
    ease_lams: Sequence[float] = (10.0, 100.0, 500.0),
    inf_ae_lams: Sequence[float] = (1.0, 5.0, 50.0),
    mesh: Mesh | None = None,
    neumf_epochs: int = 10,
    mvae_epochs: int = 100,
) -> dict[str, dict[str, float]]:
    """Train the panel on ``train`` and return its test metrics (×100) per model.

    * PopRec: item counts of ``train``.
    * bias-only / MF: :func:`models.mf.fit` (BPR, ``mf_epochs``, d = ``mf_dim``); the
      interactions are padded to ``n_pad`` with weight 0 so every sample size reuses
      one compilation.
    * NeuMF: BCE with 4 sampled negatives, ``neumf_epochs`` of Adam (lr 3e-3, batch
      2,048); Mult-VAE: ``mvae_epochs`` on the non-empty rows (batch 500, lr 1e-3). Both
      are the settings :mod:`benchmarks.recsys_panel` chose on validation HR@100 on
      MovieLens latest-small (NeuMF 10 epochs, Mult-VAE 100).
    * EASE / ∞-AE: λ chosen on ``val`` by HR@100 (EASE solves in user space when
      users < items; ∞-AE builds its kernel once per grid).

    Test queries are ``train + val`` rows (EASE/∞-AE) or user ids (bias-only/MF); the
    ranking excludes ``exclude`` — the *full* train + validation items, the same for
    every sample, so metrics stay comparable across samples.

    Args:
      key: PRNG key (bias-only / MF training).
      train: ``(U, I)`` binary training matrix (full data or a sample).
      val, test: ``(U, I)`` binary validation / test items (never sampled).
      exclude: ``(U, I)`` binary items removed from every test ranking.
      models: subset of :data:`PANEL_7` (default :data:`PANEL`).
      n_pad: pad bias-only/MF interactions to this length (default: no padding).
      mf_epochs, mf_dim: MF / bias-only settings.
      ease_lams, inf_ae_lams: λ grids.
      mesh: optional device mesh: the ∞-AE kernel and the test metrics shard their
        user rows over it (:mod:`distill.parallel`).
      neumf_epochs, mvae_epochs: NeuMF / Mult-VAE epochs (>= 1).

    Returns:
      ``{model: {"AUC", "HR@100", "nDCG@10": float}}``.
    """
    _check_panel_args(key, train, val, test, exclude, models)
    x = jnp.asarray(train, jnp.float32)
    context = jnp.clip(x + jnp.asarray(val, jnp.float32), 0.0, 1.0)
    test = jnp.asarray(test, jnp.float32)
    exclude = jnp.asarray(exclude, jnp.float32)
    test_np, exclude_np = np.asarray(test, bool), np.asarray(exclude, bool)
    settings = dict(n_pad=n_pad, mf_epochs=mf_epochs, mf_dim=mf_dim, ease_lams=ease_lams,
                    inf_ae_lams=inf_ae_lams, mesh=mesh,
                    neumf_epochs=check_int(neumf_epochs, "neumf_epochs", min_value=1),
                    mvae_epochs=check_int(mvae_epochs, "mvae_epochs", min_value=1))
    out = {}
    for name in models:
        scores = _panel_scores(key, name, x, val, context, **settings)
        res = cf_metrics.evaluate(scores, test, exclude, ks=(10, 100), metrics=("hr", "ndcg"), mesh=mesh)
        res = {**res, "AUC": mean_auc(np.asarray(scores), test_np, exclude_np)}
        out[name] = {m: float(res[m]) for m in METRICS}
    return out
