"""SVP-CF and SVP-CF-PROP: selection via proxy for CF data (dissertation §1.3.3).

A cheap proxy P (bias-only or MF, :mod:`models.mf`, trained with BPR) is trained on the
full data for E epochs; the importance of an interaction is how hard it stays for the
proxy over training, and the *hardest* data is kept::

    Δ(u, i | P)   = 1/E · Σ_e  mean_{j ~ I_u^-} 1[P_e(u, j) ≥ P_e(u, i)]     (inverse AUC)
    I(u, i | P)   = Δ(u, i | P)                              (SVP-CF)
    I_p(u, i | P) = Δ(u, i | P) / (p_u · p_i)                (SVP-CF-PROP)
    I(u | P)      = 1/|I_u^+| · Σ_{i ∈ I_u^+} I(u, i | P)    (user variants)

with the propensities of Jain et al. (2016), ``p = 1 / (1 + C (N + B)^(−A))`` of the
user's / item's interaction count N (computed by :func:`distill.metrics.item_propensity`,
which takes ``C = (ln N_total − 1)(B + 1)^A`` with the total number of interactions as
the reference code does; the dissertation writes ``ln |U|`` / ``ln |I|`` there — a
constant per dataset that changes the curve's midpoint, not its monotonicity). The
dissertation averages over epochs with a Σ and uses an indicator in a denominator
(infinite when a negative wins); the mean of the indicator over sampled negatives is
the bounded Monte-Carlo form used here (see :mod:`models.mf`).

Interaction variants keep the ``k`` most important interactions; user variants keep
whole users by decreasing ``I(u)`` until ``k`` interactions (last user trimmed), the
same budget rule as :mod:`selection.cf_sampling`. With the two proxies, two variants
and with/without propensities this gives the eight SVP samplers of Table 1.3.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from distill.checks import check_array, check_choice, check_int, check_key, check_same_leading
from distill.data.interactions import Interactions, check_interactions
from distill.metrics import item_propensity
from models import mf
from selection.cf_sampling import Sampler, check_sampler_args, first_k, user_order_mask

__all__ = [
    "PROXIES",
    "proxy_difficulty",
    "importance",
    "user_importance",
    "svp_cf_interaction",
    "svp_cf_user",
    "SAMPLERS",
]

PROXIES = {"bias": 0, "mf": 32}
"""Proxy name → latent size of :func:`models.mf.fit` (0 = bias-only)."""


def proxy_difficulty(
    key: jax.Array, inter: Interactions, *, proxy: str = "bias", epochs: int = 10, **fit_kwargs: Any
) -> np.ndarray:
    """Δ(u, i | P): the proxy's inverse AUC of every interaction averaged over epochs.

    Args:
      key: PRNG key for the proxy's training.
      inter: the interactions (each row a positive).
      proxy: ``'bias'`` (bias-only) or ``'mf'`` (MF, d = 32).
      epochs: proxy epochs E (>= 1).
      **fit_kwargs: further settings of :func:`models.mf.fit` (lr, l2, ...).

    Returns:
      float ``(n,)`` in ``[0, 1]``; larger = harder for the proxy.
    """
    check_key(key)
    inter = check_interactions(inter)
    check_choice(proxy, "proxy", tuple(PROXIES))
    epochs = check_int(epochs, "epochs", min_value=1)
    fitted = mf.fit(
        key, inter.users, inter.items, inter.n_users, inter.n_items,
        dim=PROXIES[proxy], epochs=epochs, **fit_kwargs,
    )
    return np.asarray(fitted.inverse_auc).mean(axis=0)


def importance(
    inter: Interactions, difficulty: Any, *, prop: bool = False, A: float = 0.55, B: float = 1.5
) -> np.ndarray:
    """Interaction importance: ``Δ`` (SVP-CF) or ``Δ / (p_u p_i)`` (SVP-CF-PROP).

    Args:
      inter: the interactions.
      difficulty: ``(n,)`` Δ(u, i | P) from :func:`proxy_difficulty`.
      prop: divide by the user and item propensities.
      A, B: the propensity curve's parameters.

    Returns:
      float64 ``(n,)``.
    """
    inter = check_interactions(inter)
    check_array(difficulty, "difficulty", ndim=1, kind="numeric", finite=True)
    check_same_leading([("inter.users", inter.users), ("difficulty", difficulty)])
    imp = np.asarray(difficulty, np.float64)
    if not prop:
        return imp
    p_u = np.asarray(item_propensity(np.bincount(inter.users, minlength=inter.n_users), A=A, B=B))
    p_i = np.asarray(item_propensity(np.bincount(inter.items, minlength=inter.n_items), A=A, B=B))
    return imp / (p_u[inter.users].astype(np.float64) * p_i[inter.items])


def user_importance(inter: Interactions, imp: Any) -> np.ndarray:
    """``I(u) = mean_{i ∈ I_u^+} I(u, i)``; users without interactions get −inf."""
    inter = check_interactions(inter)
    check_array(imp, "imp", ndim=1, kind="numeric", finite=True)
    check_same_leading([("inter.users", inter.users), ("imp", imp)])
    tot = np.bincount(inter.users, weights=np.asarray(imp, np.float64), minlength=inter.n_users)
    cnt = np.bincount(inter.users, minlength=inter.n_users)
    return np.where(cnt > 0, tot / np.maximum(cnt, 1), -np.inf)


def _importance_for(key, inter, proxy, prop, imp, epochs):
    if imp is None:
        imp = importance(inter, proxy_difficulty(key, inter, proxy=proxy, epochs=epochs), prop=prop)
    else:
        check_array(imp, "importance", ndim=1, kind="numeric", finite=True)
        check_same_leading([("inter.users", inter.users), ("importance", imp)])
    return np.asarray(imp)


def svp_cf_interaction(
    key: jax.Array,
    inter: Interactions,
    p: float,
    *,
    proxy: str = "bias",
    prop: bool = False,
    importance: Any = None,
    epochs: int = 10,
) -> np.ndarray:
    """SVP-CF(-PROP) interaction sampling: keep the ``k`` most important interactions.

    Args:
      key, inter, p: as every sampler (:mod:`selection.cf_sampling`).
      proxy: ``'bias'`` or ``'mf'``.
      prop: SVP-CF-PROP (propensity-corrected importance).
      importance: optional precomputed ``(n,)`` importance (from :func:`importance`),
        so several rates reuse one proxy training; then ``proxy``/``prop`` are unused.
      epochs: proxy epochs when ``importance`` is None.

    Returns:
      bool ``(n,)`` mask with ``round(p·n)`` True.
    """
    check_key(key)
    inter, p, k = check_sampler_args(key, inter, p)
    k_proxy, k_tie = jax.random.split(key)
    imp = _importance_for(k_proxy, inter, proxy, prop, importance, epochs)
    return first_k(k_tie, -imp, k)


def svp_cf_user(
    key: jax.Array,
    inter: Interactions,
    p: float,
    *,
    proxy: str = "bias",
    prop: bool = False,
    importance: Any = None,
    epochs: int = 10,
) -> np.ndarray:
    """SVP-CF(-PROP) user sampling: whole users by decreasing ``I(u)`` until ``k`` interactions.

    Arguments as :func:`svp_cf_interaction` (``importance`` is per interaction).
    """
    check_key(key)
    inter, p, k = check_sampler_args(key, inter, p)
    k_proxy, k_tie = jax.random.split(key)
    imp = _importance_for(k_proxy, inter, proxy, prop, importance, epochs)
    ui = user_importance(inter, imp)
    order = np.lexsort((np.arange(inter.n_users), -ui))
    rank = np.empty(inter.n_users, np.int64)
    rank[order] = np.arange(inter.n_users)
    return user_order_mask(k_tie, inter, rank, k)


def _name(variant: str, proxy: str, prop: bool) -> str:
    return f"svp_cf{'_prop' if prop else ''}_{variant}_{proxy}"


SAMPLERS: dict[str, Sampler] = {
    _name(v, proxy, prop): functools.partial(fn, proxy=proxy, prop=prop)
    for prop in (False, True)
    for v, fn in (("interaction", svp_cf_interaction), ("user", svp_cf_user))
    for proxy in PROXIES
}
"""The eight SVP samplers of Table 1.3: ``svp_cf[_prop]_{interaction,user}_{bias,mf}``."""
