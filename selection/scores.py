"""Per-example scorers: how hard, uncertain, forgettable or typical each example is.

Every model-based scorer is written for **one example** and ``vmap``-ped over a batch,
following the scorer interface of DESIGN.md, ``score(params, batch) -> (n,)``::

    from functools import partial
    score = partial(scores.el2n, model.apply)        # score(params, (x, y)) -> (n,)

Large datasets are split over devices with :func:`distill.parallel.map_rows` (pass a
``mesh``) and, inside each device, processed ``block_size`` rows at a time with
:func:`distill.parallel.map_row_blocks` so that e.g. GraNd's per-example gradients never
exist for more than one block at once. The sharded result equals the single-device one.

Scorers computed from *logged training dynamics* (forgetting events, data maps) take
the ``(T, n)`` histories recorded by :func:`selection.training_dynamics.train_with_dynamics`.

Conventions: a larger score means "harder / more informative" for ``loss``, ``el2n``,
``grand``, ``entropy``, ``forgetting_events``, ``prototype_distance`` and
``perplexity``; ``margin`` and data-map ``confidence`` are larger for *easier* examples.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from distill import parallel
from distill.checks import check_array, check_binary, check_choice, check_index_range, check_int, check_key, is_concrete
from models.model_fns import n_outputs

__all__ = [
    "score_examples",
    "loss",
    "el2n",
    "grand",
    "margin",
    "entropy",
    "output_gradients",
    "perplexity",
    "forgetting_events",
    "DataMap",
    "data_map",
    "prototype_distance",
]


# ----------------------------------------------------------------------------- plumbing


def _leading(batch: Any, name: str = "batch") -> int:
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves:
        raise ValueError(f"{name}: expected an array or a tuple of arrays, got an empty pytree")
    for leaf in leaves:
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            raise TypeError(f"{name}: expected arrays, got {type(leaf).__name__}")
        if leaf.ndim == 0:
            raise ValueError(f"{name}: expected arrays with a leading example axis, got a scalar")
    sizes = {leaf.shape[0] for leaf in leaves}
    if len(sizes) > 1:
        raise ValueError(
            f"{name}: expected every array to have the same number of examples, got {sorted(sizes)}"
        )
    n = sizes.pop()
    if n == 0:
        raise ValueError(f"{name}: expected at least one example, got 0")
    return n


@functools.partial(jax.jit, static_argnames=("example_fn", "mesh", "block_size"))
def _run(example_fn, params, batch, mesh, block_size):
    def rows_fn(rows, p):
        return jax.vmap(example_fn, in_axes=(None, 0))(p, rows)

    if block_size is None:
        inner = rows_fn
    else:
        inner = lambda rows, p: parallel.map_row_blocks(rows_fn, rows, p, block_size=block_size)
    return parallel.map_rows(inner, batch, params, mesh=mesh)


def score_examples(
    example_fn: Callable[[Any, Any], Any],
    params: Any,
    batch: Any,
    *,
    mesh: Any = None,
    block_size: int | None = None,
) -> Any:
    """Run a one-example scorer over a batch: ``vmap``, blocks, devices (jitted).

    Args:
      example_fn: ``example_fn(params, example) -> value`` for a single example
        (``example`` is ``batch`` with the leading axis removed); ``value`` is any
        pytree (typically a scalar). It is a static argument of the jitted runner:
        pass the same function object to reuse the compilation.
      params: pytree broadcast to every example (and replicated on every device).
      batch: an ``(n, ...)`` array or a pytree of arrays sharing the leading ``n``.
      mesh: a :func:`distill.parallel.make_mesh` mesh; rows are sharded over it.
      block_size: rows evaluated at once on each device (``None``: all of them).

    Returns:
      ``value`` stacked over the ``n`` examples (leading axis ``n``).
    """
    if not callable(example_fn):
        raise TypeError(f"example_fn: expected a callable, got {type(example_fn).__name__}")
    _leading(batch)
    if block_size is not None:
        block_size = check_int(block_size, "block_size", min_value=1)
    return _run(example_fn, params, batch, mesh, block_size)


def _check_apply(apply: Any) -> None:
    if not callable(apply):
        raise TypeError(f"apply: expected a callable apply(params, x), got {type(apply).__name__}")


def _supervised(batch: Any) -> tuple[Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"batch: expected a pair (x, y), got {type(batch).__name__}")
    x, y = batch
    check_array(x, "batch[0] (x)", kind="numeric")
    check_array(y, "batch[1] (y)", ndim=1, kind="int")
    _leading((x, y))
    return x, y


def _check_labels(apply: Any, params: Any, ens: bool, x: Any, y: Any) -> None:
    """Labels must index the model's classes; checked eagerly when ``y`` is concrete.

    Under ``jit`` an out-of-range label cannot raise; the one-example scorers return NaN
    for it instead (a gather would clamp it to a real class and give a plausible score).
    """
    if not is_concrete(y) or np.size(y) == 0:
        return
    one = jax.tree_util.tree_map(lambda a: a[0], params) if ens else params
    n_classes = n_outputs(apply, one, x)
    check_index_range(y, "batch[1] (y)", n_classes, "label", of="the model's classes")


def _valid_label(y, n_classes, value):
    return jnp.where((y >= 0) & (y < n_classes), value, jnp.nan)


def _inputs(batch: Any) -> Any:
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    check_array(x, "batch (x)", kind="numeric")
    return x


def _stack_params(params: Any) -> tuple[Any, bool]:
    """A list/tuple of parameter pytrees is an ensemble: stack it on a new leading axis."""
    if isinstance(params, (list, tuple)):
        if len(params) == 0:
            raise ValueError("params: expected at least one parameter pytree, got an empty list")
        return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *params), True
    return params, False


def _logits_one(apply, params, x):
    return apply(params, x[None])[0]


def _ce_one(apply, params, x, y):
    logits = _logits_one(apply, params, x)
    return _valid_label(y, logits.shape[-1], -jax.nn.log_softmax(logits)[y])


# One-example scorers ``one(apply, params, example)``; module-level so that
# :func:`_example_fn` returns the same closure for the same model (no recompilation).


def _one_loss(apply, q, ex):
    return _ce_one(apply, q, ex[0], ex[1])


def _one_el2n(apply, q, ex):
    prob = jax.nn.softmax(_logits_one(apply, q, ex[0]))
    dist = jnp.linalg.norm(prob - jax.nn.one_hot(ex[1], prob.shape[-1], dtype=prob.dtype))
    return _valid_label(ex[1], prob.shape[-1], dist)


def _one_grand(apply, q, ex):
    g = jax.grad(_ce_one, argnums=1)(apply, q, ex[0], ex[1])
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(a)) for a in jax.tree_util.tree_leaves(g)))
    n_classes = n_outputs(apply, q, ex[0][None])
    return _valid_label(ex[1], n_classes, norm)  # the gradient of the NaN branch is 0, not NaN


def _one_margin(apply, q, x1):
    top2 = jax.lax.top_k(jax.nn.softmax(_logits_one(apply, q, x1)), 2)[0]
    return top2[0] - top2[1]


def _one_entropy(apply, q, x1):
    logp = jax.nn.log_softmax(_logits_one(apply, q, x1))
    return -jnp.sum(jnp.exp(logp) * logp)


def _one_output_grad(apply, q, ex):
    prob = jax.nn.softmax(_logits_one(apply, q, ex[0]))
    return _valid_label(ex[1], prob.shape[-1], prob - jax.nn.one_hot(ex[1], prob.shape[-1], dtype=prob.dtype))


def _one_perplexity(apply, q, ex):
    t, m = ex
    logp = jax.nn.log_softmax(apply(q, t[None, :-1])[0], axis=-1)
    # A target outside the vocabulary would be clamped by the gather: NaN instead.
    nll = _valid_label(t[1:], logp.shape[-1], -jnp.take_along_axis(logp, t[1:, None], axis=-1)[:, 0])
    m = m.astype(nll.dtype)
    return jnp.exp(jnp.sum(m * nll) / jnp.maximum(jnp.sum(m), 1e-12))


def _make_example_fn(one, apply, ens):
    if ens:  # params stacked on a leading model axis: average the score over models
        return lambda p, ex: jnp.mean(jax.vmap(lambda q: one(apply, q, ex))(p), axis=0)
    return lambda p, ex: one(apply, p, ex)


_cached_example_fn = functools.lru_cache(maxsize=256)(_make_example_fn)


def _example_fn(one, apply, ens):
    try:
        return _cached_example_fn(one, apply, ens)
    except TypeError:  # unhashable apply: works, recompiles on every call
        return _make_example_fn(one, apply, ens)


# ----------------------------------------------------------------------------- model-based


def loss(apply: Callable, params: Any, batch: Any, *, mesh: Any = None, block_size: int | None = None) -> jax.Array:
    """Per-example cross-entropy ``ℓ_i = −log softmax(f_θ(x_i))_{y_i}``.

    Args:
      apply: ``apply(params, x) -> (m, C)`` logits.
      params: model parameters, or a list of them (the losses are averaged).
      batch: ``(x (n, ...), y (n,) int)``.
      mesh, block_size: see :func:`score_examples`.

    Returns:
      ``(n,)`` losses (higher = harder).
    """
    _check_apply(apply)
    x, y = _supervised(batch)
    p, ens = _stack_params(params)
    _check_labels(apply, p, ens, x, y)
    return score_examples(_example_fn(_one_loss, apply, ens), p, (x, y), mesh=mesh, block_size=block_size)


def el2n(apply: Callable, params: Any, batch: Any, *, mesh: Any = None, block_size: int | None = None) -> jax.Array:
    """EL2N: ``E_θ ‖softmax(f_θ(x_i)) − onehot(y_i)‖₂``, averaged over an ensemble.

    Source: Paul et al. (2021), "Deep Learning on a Data Diet" (scores from a few
    models trained for a few epochs). Pass a list of parameter pytrees to average.

    Args:
      apply: ``apply(params, x) -> (m, C)`` logits.
      params: one parameter pytree or a list of them (the ensemble).
      batch: ``(x (n, ...), y (n,) int)``.

    Returns:
      ``(n,)`` EL2N scores in ``[0, √2]`` (higher = harder).
    """
    _check_apply(apply)
    x, y = _supervised(batch)
    p, ens = _stack_params(params)
    _check_labels(apply, p, ens, x, y)
    return score_examples(_example_fn(_one_el2n, apply, ens), p, (x, y), mesh=mesh, block_size=block_size)


def grand(apply: Callable, params: Any, batch: Any, *, mesh: Any = None, block_size: int | None = 256) -> jax.Array:
    """GraNd: ``E_θ ‖∇_θ ℓ(θ; x_i, y_i)‖₂``, per-example gradients by ``vmap(grad)``.

    Source: Paul et al. (2021). The gradient covers every parameter leaf.

    Args:
      apply: ``apply(params, x) -> (m, C)`` logits.
      params: one parameter pytree or a list of them (averaged).
      batch: ``(x (n, ...), y (n,) int)``.
      block_size: examples whose gradients are alive at once per device (default 256).

    Returns:
      ``(n,)`` gradient norms (higher = harder / more influential).
    """
    _check_apply(apply)
    x, y = _supervised(batch)
    p, ens = _stack_params(params)
    _check_labels(apply, p, ens, x, y)
    return score_examples(_example_fn(_one_grand, apply, ens), p, (x, y), mesh=mesh, block_size=block_size)


def margin(apply: Callable, params: Any, batch: Any, *, mesh: Any = None, block_size: int | None = None) -> jax.Array:
    """Margin uncertainty ``p_(1) − p_(2)``: gap between the two largest class probabilities.

    Label-free (``batch`` may be ``x`` or ``(x, y)``; ``y`` is ignored). Small margin =
    uncertain example; select the most uncertain with ``select.bottom_k``.
    Source: Coleman et al. (2020), "Selection via Proxy".

    Returns:
      ``(n,)`` margins in ``[0, 1]``.
    """
    _check_apply(apply)
    x = _inputs(batch)
    p, ens = _stack_params(params)
    return score_examples(_example_fn(_one_margin, apply, ens), p, x, mesh=mesh, block_size=block_size)


def entropy(apply: Callable, params: Any, batch: Any, *, mesh: Any = None, block_size: int | None = None) -> jax.Array:
    """Predictive entropy ``H(p) = −Σ_c p_c log p_c`` (label-free; higher = more uncertain).

    Source: Coleman et al. (2020), "Selection via Proxy".

    Returns:
      ``(n,)`` entropies in nats, in ``[0, log C]``.
    """
    _check_apply(apply)
    x = _inputs(batch)
    p, ens = _stack_params(params)
    return score_examples(_example_fn(_one_entropy, apply, ens), p, x, mesh=mesh, block_size=block_size)


def output_gradients(apply: Callable, params: Any, batch: Any, *, mesh: Any = None, block_size: int | None = None) -> jax.Array:
    """``∂ℓ_i/∂logits = softmax(f_θ(x_i)) − onehot(y_i)``: the cheap gradient proxy of CRAIG.

    Source: Mirzasoleiman et al. (2020), CRAIG §5 (last-layer gradient bound of
    Katharopoulos & Fleuret, 2018).

    Returns:
      ``(n, C)`` per-example gradients of the loss with respect to the logits.
    """
    _check_apply(apply)
    x, y = _supervised(batch)
    _check_labels(apply, params, False, x, y)
    return score_examples(_example_fn(_one_output_grad, apply, False), params, (x, y), mesh=mesh, block_size=block_size)


def perplexity(
    apply: Callable,
    params: Any,
    tokens: Any,
    *,
    mask: Any = None,
    mesh: Any = None,
    block_size: int | None = None,
) -> jax.Array:
    """Per-sequence perplexity ``exp(Σ_t m_t·(−log p(w_{t+1} | w_{≤t})) / Σ_t m_t)``.

    Args:
      apply: a causal LM, ``apply(params, tokens (m, L)) -> (m, L, V)`` next-token logits
        (e.g. :func:`models.transformer.transformer`).
      params: LM parameters.
      tokens: int ``(n, L + 1)``; inputs ``tokens[:, :-1]``, targets ``tokens[:, 1:]``.
      mask: optional ``(n, L)`` weights of the targets (0 for padding); default all 1.

    Returns:
      ``(n,)`` perplexities (higher = more surprising to the LM).
    """
    _check_apply(apply)
    check_array(tokens, "tokens", ndim=2, kind="int")
    if tokens.shape[1] < 2:
        raise ValueError(f"tokens: expected at least 2 positions (input + target), got shape {tuple(tokens.shape)}")
    if mask is None:
        mask = jnp.ones((tokens.shape[0], tokens.shape[1] - 1), jnp.result_type(float))
    check_array(mask, "mask", shape=(tokens.shape[0], tokens.shape[1] - 1), kind="numeric")
    if is_concrete(tokens):
        vocab = n_outputs(apply, params, jnp.asarray(tokens)[:, :-1])
        check_index_range(tokens, "tokens", vocab, "token", of="the model's vocabulary")

    fn = _example_fn(_one_perplexity, apply, False)
    return score_examples(fn, params, (tokens, mask), mesh=mesh, block_size=block_size)


# ----------------------------------------------------------------------------- dynamics


def forgetting_events(correct: Any, *, never_learned: str = "max") -> jax.Array:
    """Forgetting events: how often an example goes from correct to incorrect.

    ``F_i = #{t ≥ 1 : acc_{t−1,i} = 1 and acc_{t,i} = 0}`` over the recorded history.
    Source: Toneva et al. (2019), "An Empirical Study of Example Forgetting".

    Args:
      correct: bool/0-1 ``(T, n)`` history; ``correct[t, i]`` = example ``i`` classified
        correctly at record ``t`` (e.g. :attr:`Dynamics.correct`).
      never_learned: what examples never classified correctly get: ``'max'`` (``T``,
        more than any achievable count — Toneva et al. rank them most forgettable) or
        ``'zero'`` (their raw count, 0).

    Returns:
      int32 ``(n,)`` forgetting counts.
    """
    check_array(correct, "correct", ndim=2, kind="numeric")
    check_binary(correct, "correct")
    check_choice(never_learned, "never_learned", ("max", "zero"))
    c = jnp.asarray(correct).astype(bool)
    events = jnp.sum(c[:-1] & ~c[1:], axis=0).astype(jnp.int32)
    if never_learned == "max":
        events = jnp.where(jnp.any(c, axis=0), events, jnp.int32(c.shape[0]))
    return events


class DataMap(NamedTuple):
    """Dataset-cartography coordinates (Swayamdipta et al., 2020), each ``(n,)``.

    Attributes:
      confidence: mean over records of ``p_θt(y_i | x_i)``.
      variability: standard deviation over records of the same probability.
      correctness: fraction of records where the example was classified correctly.
    """

    confidence: jax.Array
    variability: jax.Array
    correctness: jax.Array


def data_map(prob_true: Any, correct: Any = None) -> DataMap:
    """Confidence/variability/correctness from a ``(T, n)`` history of ``p(y_i | x_i)``.

    ``confidence_i = (1/T) Σ_t p_t,i``; ``variability_i = sqrt((1/T) Σ_t (p_t,i − confidence_i)²)``.
    Source: Swayamdipta et al. (2020), "Dataset Cartography". Ambiguous examples (high
    variability) are the ones they keep.

    Args:
      prob_true: ``(T, n)`` true-class probabilities (e.g. :attr:`Dynamics.prob_true`).
      correct: optional ``(T, n)`` correctness history; default ``prob_true > 0.5``.

    Returns:
      :class:`DataMap`.
    """
    check_array(prob_true, "prob_true", ndim=2, kind="float", finite=True)
    if is_concrete(prob_true) and not bool(np.all((np.asarray(prob_true) >= 0) & (np.asarray(prob_true) <= 1))):
        raise ValueError("prob_true: expected probabilities in [0, 1]")
    p = jnp.asarray(prob_true)
    if correct is None:
        c = p > 0.5
    else:
        check_array(correct, "correct", shape=p.shape, kind="numeric")
        check_binary(correct, "correct")
        c = jnp.asarray(correct).astype(bool)
    return DataMap(jnp.mean(p, axis=0), jnp.std(p, axis=0), jnp.mean(c.astype(p.dtype), axis=0))


# ----------------------------------------------------------------------------- embeddings


def prototype_distance(
    key: jax.Array,
    embeddings: Any,
    n_clusters: int,
    *,
    metric: str = "cosine",
    iters: int = 50,
) -> jax.Array:
    """Self-supervised prototype score: distance to the nearest k-means centroid.

    Sorscher et al. (2022), "Beyond neural scaling laws" §5: cluster self-supervised
    embeddings with k-means; an example's difficulty is its distance to the nearest
    centroid (prototype). Keep hard (far) examples when data is plentiful, easy (near)
    ones when it is scarce.

    Args:
      key: PRNG key for the k-means++ initialisation.
      embeddings: float ``(n, d)``.
      n_clusters: k (``1 <= k <= n``).
      metric: ``'cosine'`` (``1 − cos`` to L2-normalised centroids, as in the paper)
        or ``'euclidean'``.
      iters: Lloyd iterations.

    Returns:
      ``(n,)`` distances (higher = less prototypical / harder).
    """
    check_key(key)
    from selection.coresets import kmeans  # clustering lives with the coresets

    check_array(embeddings, "embeddings", ndim=2, kind="float", finite=True)
    check_choice(metric, "metric", ("cosine", "euclidean"))
    check_int(n_clusters, "n_clusters", min_value=1, max_value=embeddings.shape[0])
    e = jnp.asarray(embeddings)
    if metric == "cosine":
        e = e / jnp.maximum(jnp.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    km = kmeans(key, e, n_clusters, iters=iters, spherical=metric == "cosine")
    c = km.centroids
    if metric == "cosine":
        return 1.0 - jnp.max(e @ c.T, axis=1)
    d2 = jnp.sum(e**2, 1)[:, None] - 2 * e @ c.T + jnp.sum(c**2, 1)[None, :]
    return jnp.sqrt(jnp.maximum(jnp.min(d2, axis=1), 0.0))
