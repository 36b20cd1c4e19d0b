"""Choosing a model's regularisation on validation data (shared by ∞-AE and EASE)."""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np

from distill import metrics as cf_metrics
from distill.checks import check_array, check_float

__all__ = ["GridSearch", "select_lambda", "parse_metric"]


class GridSearch(NamedTuple):
    """Outcome of a validation grid search over λ — what every ``select_lambda`` returns
    (∞-AE, EASE, Distill-CF's summaries, and :func:`select_lambda` here).

    Attributes:
      lams: the grid, in the order searched.
      values: the validation metric at each λ.
      best_lam: the λ with the largest value (ties: the first in the grid).
      metric: the metric's name (e.g. ``'HR@100'``).
      best_value: the metric at ``best_lam``.
      model: the model fitted at ``best_lam`` when the search fits one as a by-product
        (∞-AE and EASE reuse their kernel / Gram matrix), else ``None``.
    """

    lams: tuple[float, ...]
    values: tuple[float, ...]
    best_lam: float
    metric: str
    best_value: float
    model: Any = None

_METRIC = re.compile(r"^(HR|nDCG|PSP)@(\d+)$|^AUC$")


def parse_metric(metric: str) -> tuple[str, int | None]:
    """``'HR@100'`` → ``('hr', 100)``; ``'AUC'`` → ``('auc', None)``."""
    m = _METRIC.match(metric) if isinstance(metric, str) else None
    if m is None:
        raise ValueError(f"metric: expected 'HR@k', 'nDCG@k', 'PSP@k' or 'AUC', got {metric!r}")
    if metric == "AUC":
        return "auc", None
    k = int(m.group(2))
    if k < 1:  # HR@0 would rank nothing and score every λ 0
        raise ValueError(f"metric: expected a cutoff k >= 1, got {metric!r}")
    return m.group(1).lower(), k


def select_lambda(
    train: jax.Array,
    val: jax.Array,
    *,
    scores_for: Callable[[float], jax.Array],
    lams: Sequence[float],
    metric: str = "HR@100",
    batch_size: int = 4096,
    propensity: jax.Array | None = None,
) -> GridSearch:
    """Grid search: evaluate ``scores_for(λ)`` on the validation items for every λ.

    Args:
      train: ``(n_users, n_items)`` binary training items (excluded from rankings).
      val: ``(n_users, n_items)`` binary held-out validation items.
      scores_for: λ → ``(n_users, n_items)`` scores of the validation users, or
        ``(scores, model)`` when the scores come with the model fitted at λ as a
        by-product (∞-AE's Cholesky sweep): the best λ's model is then kept and
        returned, so the caller need not refit it. Only the best-so-far model is held,
        so memory stays at two models whatever the grid size.
      lams: the grid (each ≥ 0, at least one).
      metric: which metric to maximise (``'HR@100'``, ``'nDCG@10'``, ``'AUC'``, ...).
      batch_size: users per metric batch.
      propensity: item propensities, required for ``PSP@k``.

    Returns:
      :class:`GridSearch` with the metric per λ and ``model`` = the best λ's model when
      ``scores_for`` returns one (else ``None``); ties go to the first λ in the grid.
    """
    name, k = parse_metric(metric)
    lams = tuple(check_float(l, "lams", min_value=0.0) for l in lams)
    if not lams:
        raise ValueError("lams: expected at least one value, got an empty grid")
    check_array(val, "val", ndim=2)
    check_array(train, "train", shape=val.shape)
    values, best_model = [], None
    for lam in lams:
        out = scores_for(lam)
        scores, model = out if isinstance(out, tuple) else (out, None)
        res = cf_metrics.evaluate(
            scores,
            val,
            train,
            ks=(k,) if k is not None else (10,),
            metrics=(name,),
            propensity=propensity,
            batch_size=batch_size,
        )
        values.append(float(res[metric]))
        if values[-1] > max(values[:-1], default=-np.inf):  # strictly better: ties keep the first
            best_model = model
        del scores, out, model  # free this λ's arrays before the next one is computed
    best = int(np.argmax(values))
    return GridSearch(lams, tuple(values), lams[best], metric, values[best], best_model)
