"""Recording per-example training dynamics during an optax training loop.

Forgetting events (Toneva et al., 2019), data maps (Swayamdipta et al., 2020) and S2L
loss trajectories (Yang et al., 2024) all need, for every example and every record
``t`` (epoch end), its loss, true-class probability and correctness. Two ways to get them:

* :func:`train_with_dynamics` — a complete jitted minibatch run (``lax.scan`` over
  epochs of :func:`distill.train.scan` over batches) that records after every epoch;
* :class:`DynamicsRecorder` — for your own loop: call ``recorder.record(params)``
  whenever you want a record, then ``recorder.dynamics()``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from distill import train
from distill.checks import check_array, check_int, check_key, check_same_leading

__all__ = ["Dynamics", "record_examples", "DynamicsRecorder", "train_with_dynamics"]


class Dynamics(NamedTuple):
    """Per-example training dynamics, each ``(T, n)`` (record ``t``, example ``i``).

    Attributes:
      loss: cross-entropy ``−log p_t(y_i | x_i)``.
      prob_true: ``p_t(y_i | x_i)``.
      correct: bool, ``argmax_c p_t(c | x_i) = y_i``.
    """

    loss: Any
    prob_true: Any
    correct: Any


def _record(apply, params, x, y):
    logits = apply(params, x)
    logp = jax.nn.log_softmax(logits, axis=-1)
    lp = jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0]
    return Dynamics(-lp, jnp.exp(lp), jnp.argmax(logits, axis=-1) == y)


def record_examples(apply: Callable, params: Any, x: Any, y: Any) -> Dynamics:
    """One record for every example: ``Dynamics`` of ``(n,)`` arrays (loss, p(y|x), correct)."""
    if not callable(apply):
        raise TypeError(f"apply: expected a callable, got {type(apply).__name__}")
    check_array(x, "x", kind="numeric")
    check_array(y, "y", ndim=1, kind="int")
    check_same_leading([("x", x), ("y", y)])
    return _record(apply, params, jnp.asarray(x), jnp.asarray(y))


class DynamicsRecorder:
    """Accumulates :func:`record_examples` calls inside a user's training loop.

    Example::

        rec = DynamicsRecorder(model.apply, x_train, y_train)
        for epoch in range(E):
            params, opt_state = train_one_epoch(params, opt_state)
            rec.record(params)
        dyn = rec.dynamics()          # Dynamics of (E, n) arrays
    """

    def __init__(self, apply: Callable, x: Any, y: Any):
        if not callable(apply):
            raise TypeError(f"apply: expected a callable, got {type(apply).__name__}")
        check_array(x, "x", kind="numeric")
        check_array(y, "y", ndim=1, kind="int")
        check_same_leading([("x", x), ("y", y)])
        self._x, self._y = jnp.asarray(x), jnp.asarray(y)
        self._fn = jax.jit(functools.partial(_record, apply))
        self._records: list[Dynamics] = []

    def record(self, params: Any) -> None:
        """Evaluate every example under ``params`` and store the record."""
        self._records.append(jax.device_get(self._fn(params, self._x, self._y)))

    def dynamics(self) -> Dynamics:
        """Stack the records: :class:`Dynamics` of ``(T, n)`` numpy arrays."""
        if not self._records:
            raise ValueError("record: no records yet; call record(params) at least once")
        return Dynamics(*(np.stack(a) for a in zip(*self._records, strict=False)))


def train_with_dynamics(
    key: jax.Array,
    apply: Callable,
    params: Any,
    optimizer: optax.GradientTransformation,
    x: Any,
    y: Any,
    *,
    epochs: int,
    batch_size: int = 128,
) -> tuple[Any, Dynamics]:
    """Minibatch training with optax that records every example's dynamics after each epoch.

    Each epoch visits a fresh random permutation in ``⌈n / batch_size⌉`` batches (the
    last one topped up with random examples so shapes stay static), minimising the mean
    cross-entropy. The whole run is one ``jit``.

    Args:
      key: PRNG key of the batch order.
      apply: ``apply(params, x) -> (m, C)`` logits.
      params: initial parameters.
      optimizer: an optax transformation (e.g. ``optax.adam(1e-3)``).
      x: ``(n, ...)`` inputs.  y: int ``(n,)`` labels.
      epochs: number of epochs = number of records ``T``.
      batch_size: examples per step (capped at ``n``).

    Returns:
      ``(final params, Dynamics of (epochs, n) arrays)``.
    """
    check_key(key)
    if not callable(apply):
        raise TypeError(f"apply: expected a callable, got {type(apply).__name__}")
    check_array(x, "x", kind="numeric")
    check_array(y, "y", ndim=1, kind="int")
    check_same_leading([("x", x), ("y", y)])
    epochs = check_int(epochs, "epochs", min_value=1)
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    n = x.shape[0]
    bs = min(batch_size, n)
    nb = -(-n // bs)
    return _train(key, apply, optimizer, params, jnp.asarray(x), jnp.asarray(y), epochs, bs, nb)


@functools.partial(jax.jit, static_argnames=("apply", "optimizer", "epochs", "bs", "nb"))
def _train(key, apply, optimizer, params, x, y, epochs, bs, nb):
    n = x.shape[0]

    def loss(p, idx, _key):
        logp = jax.nn.log_softmax(apply(p, x[idx]), axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, y[idx][:, None], axis=1))

    def epoch(carry, k):
        k1, k2 = jax.random.split(k)
        perm = jax.random.permutation(k1, n)
        extra = jax.random.randint(k2, (nb * bs - n,), 0, n)
        order = jnp.concatenate([perm, extra]).reshape(nb, bs)
        carry, _ = train.scan(carry, order, k, loss=loss, optimizer=optimizer)
        return carry, _record(apply, carry.params, x, y)

    state, dyn = jax.lax.scan(epoch, train.init(params, optimizer), jax.random.split(key, epochs))
    return state.params, dyn
