"""Popularity baseline (PopRec): every user gets the items ranked by training count."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from distill.checks import check_array

__all__ = ["Popularity", "fit", "predict"]


class Popularity(NamedTuple):
    """Item interaction counts ``(n_items,)`` of the training matrix."""

    counts: jax.Array


def fit(x_train: jax.Array) -> Popularity:
    """Count each item's training interactions: ``counts_i = Σ_u X_ui``."""
    check_array(x_train, "x_train", ndim=2, kind="numeric", finite=True)
    return Popularity(jnp.sum(jnp.asarray(x_train, jnp.result_type(float)), axis=0))


def predict(params: Popularity, x_query: jax.Array) -> jax.Array:
    """The same scores (the counts) for every query row: ``(m, n_items)``."""
    if not isinstance(params, Popularity):
        raise TypeError(f"params: expected a Popularity from fit(), got {type(params).__name__}")
    check_array(x_query, "x_query", ndim=2, shape=(None, params.counts.shape[0]))
    return jnp.broadcast_to(params.counts, (x_query.shape[0], params.counts.shape[0]))
