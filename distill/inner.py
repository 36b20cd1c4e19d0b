"""Training a model on (synthetic) data inside an objective — the one place that
differentiates through training.

``train(apply, loss, theta0, data, *, steps, optimizer, mode)`` runs ``steps`` full-batch
Adam steps on the inner objective

    L(θ; data) = loss(apply(θ, inputs), targets),      data = (inputs, targets),

from ``theta0`` and returns θ_T. It is differentiable in ``theta0`` and in every float
leaf of ``data`` (and in arrays that ``apply``/``loss`` close over), and the three
modes give the same values and the same gradients — they differ only in memory:

* ``'unrolled'``: ``lax.scan`` over the steps, reverse-mode autodiff stores every
  step's activations — memory O(T · (activations + |θ|)).
* ``'checkpointed'``: √T-segment rematerialisation: only the Adam state at segment
  boundaries is stored, each segment is recomputed during the backward pass with every
  step itself rematerialised — memory O((T/K + K) · 3|θ| + one step's activations),
  K = ⌈√T⌉.
* ``'reverse_adam'``: a ``jax.custom_vjp`` that keeps only (θ_T, m_T, v_T) (plus, by
  default, a few exact Adam states every K steps, see *Stability* below) and walks the
  Adam trajectory backwards, recovering (θ_{t-1}, m_{t-1}, v_{t-1}) from (θ_t, m_t, v_t)
  step by step while accumulating the adjoints — memory O(one step + T/K · 3|θ|);
  with ``reverse_every=None`` it is O(one step), independent of T.

Adam (Kingma & Ba 2015, bias-corrected, identical to ``optax.adam`` with
``eps_root=0``), for t = 1..T with g_t = ∇_θ L(θ_{t-1}; x):

    m_t = β₁ m_{t-1} + (1-β₁) g_t          v_t = β₂ v_{t-1} + (1-β₂) g_t²
    m̂_t = m_t / (1-β₁ᵗ)    v̂_t = v_t / (1-β₂ᵗ)    θ_t = θ_{t-1} - α m̂_t / (√v̂_t + ε)

Reverse-mode Adam (dissertation Ch. 4, Algorithm 6; the body of the algorithm is
missing from our source text, so it is derived here). Write f(θ_T) for the outer loss and
carry adjoints dθ = ∂f/∂θ_t, dm = ∂f/∂m_t, dv = ∂f/∂v_t, dx = ∂f/∂x (x = data), with
dθ = ∇f(θ_T), dm = dv = 0, dx = 0 at t = T. For t = T..1:

1. *Undo the parameter update* (exact in exact arithmetic — the update is a function of
   (m_t, v_t) only):  θ_{t-1} = θ_t + α m̂_t / (√v̂_t + ε).
2. *Recompute the gradient* g_t = ∇_θ L(θ_{t-1}; x) together with its VJP.
3. *Pull dθ back through the update* θ_t = θ_{t-1} - u(m_t, v_t): θ_{t-1} receives dθ
   unchanged, and the moments receive
       dm ← dm - dθ · α / ((1-β₁ᵗ)(√v̂_t + ε))
       dv ← dv + dθ · α m̂_t / ((√v̂_t + ε)² · 2√v̂_t · (1-β₂ᵗ))      (0 where v̂_t = 0).
   With α' = α√(1-β₂ᵗ)/(1-β₁ᵗ) and ε' = ε√(1-β₂ᵗ) the dm line is the
   "-α'/(√v_t + ε')" term of Proposition 4.4.7; the proposition folds the dv path into dm
   through ∂v_t/∂m_t = 2β'g_t (β' = (1-β₂)/(1-β₁)), which treats v_t as a function of
   m_t. We keep dv as its own adjoint instead, which is exact (it is what autodiff of the
   unrolled loop computes) and reduces to the proposition's form when both are
   routed through g_t in step 4.
4. *Pull the moment adjoints back to the gradient*:
       dg = (1-β₁) dm + 2 (1-β₂) g_t ⊙ dv,
   then with one VJP of (θ, x) ↦ ∇_θ L(θ; x) applied to dg (a Hessian-vector product
   H_θθ·dg and a mixed product H_xθ·dg, computed without forming either matrix):
       dθ ← dθ + H_θθ dg,     dx ← dx + H_xθ dg.
5. *Pull the moment adjoints back in time*: dm ← β₁ dm, dv ← β₂ dv.
6. *Undo the moment updates*: m_{t-1} = (m_t - (1-β₁) g_t)/β₁,
   v_{t-1} = max((v_t - (1-β₂) g_t²)/β₂, 0).

At t = 0 the adjoints are ∂f/∂θ₀ = dθ and ∂f/∂x = dx (the meta-gradient).

Dropout. A stochastic inner model (``train(..., key=k)``) is trained with the masks of
k_t = fold_in(k, t) at step t: a pure function of (k, t), so step 2 of the reversal and the
rematerialised steps of ``'checkpointed'`` recompute g_t with the *same* masks and all three
modes differentiate the same trajectory. The key travels as raw uint32 key data, a
non-differentiated leaf of the data pytree.

Stability. Step 6 divides m by β₁ every step, so a rounding error δ in m_t grows like
β₁^{-t} (0.9⁻⁵⁰ ≈ 194, 0.9⁻²⁰⁰ ≈ 1.4·10⁹), and errors in θ feed back through g. The
exact reversal therefore drifts in float32 after a few dozen steps and in float64 after
~200 (measured in ``benchmarks/farzi_inner.py``). We *segment* the reversal: the forward
pass stores the exact Adam state (θ, m, v) at t = 0, K, 2K, …, and the backward pass
replaces its reconstruction by the stored state at every such t, so error can only grow
over K steps. K defaults to :func:`default_reverse_every`: 1 for every dtype (exact);
``reverse_every=K > 1`` trades exactness for memory and ``reverse_every=None`` stores nothing
but θ₀ (pure reversal, O(1) memory in T, only accurate for short T and small models).
float64 does not rescue pure reversal on realistic models: on a 1-block Transformer LM
(d = 8, T = 20, lr 1e-2, float64) the meta-gradient's relative error is 2e-7 after two
reversed steps and 6e-3 after 20 with K = 100, 5e-7 with K = 2, and 8e-13 with K = 1
(``tests/distill/test_inner.py::test_reverse_adam_transformer_matches_unrolled``).

Why K = 1 in float32. Step 6 also *subtracts*: v_{t-1} = (v_t − (1−β₂) g_t²)/β₂ cancels
catastrophically wherever the gradient grows along the trajectory (g_t² dominates v_t —
the usual case when a pretrained θ starts training on new, synthetic data), and the dv
adjoint of step 3 scales like m̂/v̂^{3/2}, so a small absolute error in a small v̂ becomes
an unbounded error in the meta-gradient; the exact gradient relies on the dm and dv paths
cancelling, which only exact states preserve. Measured on Farzi's SASRec benchmark
(d=64, 2 blocks, 1,303 items, D_syn 10×150, T=10, inner lr 3e-3, float32), cosine /
relative error of the reverse-mode meta-gradient against ``'checkpointed'``: K=10
(pure reversal) −0.10 / 35; K=5 0.23 / 20; K=2 0.40 / 20 (*one* reversed step per
segment already ruins it); K=1 1.0000 / 4.5e-7 (at lr 1e-2, K=10: −0.46 / 8·10⁴ — the
reason the outer loss rose in the first benchmark runs). With K=1 the backward pass uses
the stored state of every step and only recomputes each step's gradient VJP: memory
3|θ| per step (no activations, unlike ``'unrolled'``); speed is comparable to
``'checkpointed'`` (T=10: 1.7 s vs 2.6 s per meta-gradient; T=20 mixed under a shared
2-core CPU; ``benchmarks/results/farzi_diagnose.json``). The exact reversal remains available (``reverse_every`` = K > 1 or
``None``) for float64 or small models, where the tests show it matches to 1e-5.

Source: dissertation Ch. 4 (Farzi), Algorithm 6 and Proposition 4.4.7; reversal of
optimiser dynamics after Maclaurin, Duvenaud & Adams (2015), "Gradient-based
Hyperparameter Optimization through Reversible Learning".
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from distill.checks import check_choice, check_float, check_int, is_concrete

__all__ = [
    "Adam",
    "AdamState",
    "adam",
    "adam_init",
    "adam_step",
    "train",
    "train_state",
    "reverse",
    "default_reverse_every",
    "MODES",
]

MODES = ("unrolled", "checkpointed", "reverse_adam")

tree_map = jax.tree_util.tree_map


class Adam(NamedTuple):
    """Adam hyper-parameters (learning rate α, β₁, β₂, ε); same defaults as ``optax.adam``."""

    learning_rate: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8


class AdamState(NamedTuple):
    """Parameters and Adam moments after ``count`` steps."""

    params: Any
    m: Any
    v: Any


def adam(learning_rate: float = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Adam:
    """Validated :class:`Adam` settings (0 < β < 1, α > 0, ε > 0)."""
    learning_rate = check_float(learning_rate, "learning_rate", min_value=0.0, strict_min=True)
    b1 = check_float(b1, "b1", min_value=0.0, max_value=1.0, strict_min=True)
    b2 = check_float(b2, "b2", min_value=0.0, max_value=1.0, strict_min=True)
    eps = check_float(eps, "eps", min_value=0.0, strict_min=True)
    if b1 >= 1.0 or b2 >= 1.0:
        raise ValueError(f"b1/b2: expected values < 1, got b1={b1}, b2={b2}")
    return Adam(learning_rate, b1, b2, eps)


def adam_init(params: Any) -> AdamState:
    """θ with zero moments."""
    zeros = tree_map(jnp.zeros_like, params)
    return AdamState(params, zeros, tree_map(jnp.zeros_like, params))


def _bias(b: float, t: jax.Array, dtype) -> jax.Array:
    return 1.0 - jnp.asarray(b, dtype) ** jnp.asarray(t, dtype)


def adam_step(opt: Adam, state: AdamState, grad: Any, t: Any) -> AdamState:
    """One Adam step; ``t`` is the 1-based step number (bias correction)."""

    def leaf(p, m, v, g):
        m = (1 - opt.b1) * g + opt.b1 * m
        v = (1 - opt.b2) * g * g + opt.b2 * v
        mh = m / _bias(opt.b1, t, p.dtype)
        vh = v / _bias(opt.b2, t, p.dtype)
        # d√v/dv is infinite at v = 0 (a parameter whose gradient has always been 0, e.g.
        # a dead ReLU unit); the double where keeps autodiff of the update finite there.
        sq = jnp.where(vh > 0, jnp.sqrt(jnp.where(vh > 0, vh, 1.0)), 0.0)
        return p - opt.learning_rate * (mh / (sq + opt.eps)), m, v

    out = tree_map(leaf, state.params, state.m, state.v, grad)
    treedef = jax.tree_util.tree_structure(state.params)
    p, m, v = (jax.tree_util.tree_unflatten(treedef, x) for x in zip(*treedef.flatten_up_to(out), strict=True))
    return AdamState(p, m, v)


def default_reverse_every(dtype: Any) -> int:
    """Segment length K of the reversal for a parameter dtype (see *Stability*): 1 for
    every dtype, i.e. the exact Adam state of every step is stored (3|θ| per step, no
    activations). Reversal inside a segment cancels catastrophically in float32 on
    realistic models and drifts measurably in float64 too (*Stability*)."""
    del dtype  # kept in the signature: the choice was dtype-dependent and may be again
    return 1


# ---------------------------------------------------------------------------------------
# input checks


def _check_common(apply, loss, theta0, data, steps, optimizer, mode):
    if not callable(apply):
        raise TypeError(f"apply: expected a callable apply(params, x), got {type(apply).__name__}")
    if not callable(loss):
        raise TypeError(f"loss: expected a callable loss(outputs, targets), got {type(loss).__name__}")
    leaves = jax.tree_util.tree_leaves(theta0)
    if not leaves:
        raise ValueError("theta0: expected a non-empty pytree of float arrays, got no leaves")
    for leaf in leaves:
        if not hasattr(leaf, "dtype") or not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(
                f"theta0: expected float arrays, got a leaf of type "
                f"{getattr(leaf, 'dtype', type(leaf).__name__)}"
            )
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"data: expected an (inputs, targets) pair, got {type(data).__name__}")
    steps = check_int(steps, "steps", min_value=1)
    if not isinstance(optimizer, Adam):
        raise TypeError(f"optimizer: expected inner.Adam, got {type(optimizer).__name__}")
    if all(is_concrete(v) for v in optimizer):
        try:  # the NamedTuple takes anything; adam() holds the rules (α > 0, 0 < β < 1, ε > 0)
            adam(*optimizer)
        except (TypeError, ValueError) as e:
            raise type(e)(f"optimizer: {e}") from None
    check_choice(mode, "mode", MODES)
    return steps


# ---------------------------------------------------------------------------------------
# forward dynamics shared by the modes


def _grad_fn(apply, loss, stochastic):
    """∇_θ L(θ; data), with ``apply(θ, inputs, key)`` when the model is stochastic."""

    def objective(theta, data, key_data):
        inputs, targets = data
        if not stochastic:
            return loss(apply(theta, inputs), targets)
        return loss(apply(theta, inputs, jax.random.wrap_key_data(key_data)), targets)

    return jax.grad(objective)


def _step_key(key_data, t):
    """Raw key data of fold_in(key, t): step t's dropout masks, replayable in the reverse pass."""
    return jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(key_data), t))


def _step_fn(grad_fn, opt, remat=False):
    def step(state, t, data):
        g = grad_fn(state.params, data, t)
        return adam_step(opt, state, g, t)

    return jax.checkpoint(step) if remat else step


def _scan(step, state, data, t0, n):
    def body(s, t):
        return step(s, t, data), None

    ts = t0 + jnp.arange(n, dtype=jnp.int32)
    return jax.lax.scan(body, state, ts)[0]


def _train_unrolled(grad_fn, opt, theta0, data, steps):
    return _scan(_step_fn(grad_fn, opt), adam_init(theta0), data, 1, steps)


def _train_checkpointed(grad_fn, opt, theta0, data, steps):
    k = max(1, math.isqrt(steps - 1) + 1)  # ⌈√T⌉
    n_seg, rest = divmod(steps, k)
    step = _step_fn(grad_fn, opt, remat=True)

    @jax.checkpoint
    def segment(state, t0, data):
        return _scan(step, state, data, t0, k)

    def body(s, t0):
        return segment(s, t0, data), None

    state = adam_init(theta0)
    t0s = 1 + k * jnp.arange(n_seg, dtype=jnp.int32)
    state = jax.lax.scan(body, state, t0s)[0]
    if rest:
        state = _scan(step, state, data, 1 + n_seg * k, rest)
    return state


def _forward_with_states(grad_fn, opt, theta0, data, steps, every):
    """Run T steps, storing the exact state at t = 0, every, 2·every, … (< T)."""
    n_seg = -(-steps // every)
    step = _step_fn(grad_fn, opt)

    def seg(state, j):
        n = jnp.minimum(every, steps - j * every)

        def body(i, s):
            t = j * every + 1 + i
            return step(s, t, data)

        return jax.lax.fori_loop(0, n, body, state), state

    final, stored = jax.lax.scan(seg, adam_init(theta0), jnp.arange(n_seg, dtype=jnp.int32))
    return final, stored


def _reverse_pass(grad_fn, opt, final, stored, every, data, steps, dtheta, dm=None, dv=None):
    """Walk the trajectory back from ``final``; returns (recovered θ₀, dθ₀, d data)."""
    b1, b2, lr, eps = opt.b1, opt.b2, opt.learning_rate, opt.eps
    zeros = lambda tree: tree_map(jnp.zeros_like, tree)
    dm = zeros(final.params) if dm is None else dm
    dv = zeros(final.params) if dv is None else dv
    ddata = tree_map(_zero_cotangent, data)

    def body(i, carry):
        theta, m, v, dth, dm, dv, ddata = carry
        t = steps - i
        s = t - 1
        on_ck = (s % every) == 0
        j = s // every
        take = lambda tree: tree_map(lambda a: a[j], tree)
        pick = lambda stored_tree, rec: tree_map(lambda a, b: jnp.where(on_ck, a, b), stored_tree, rec)

        def undo_update(p, m_, v_):
            bc1, bc2 = _bias(b1, t, p.dtype), _bias(b2, t, p.dtype)
            return p + lr * (m_ / bc1) / (jnp.sqrt(v_ / bc2) + eps)

        theta_prev = pick(take(stored.params), tree_map(undo_update, theta, m, v))
        g, vjp = jax.vjp(lambda th, d: grad_fn(th, d, t), theta_prev, data)

        def moment_adjoints(p, m_, v_, dth_, dm_, dv_):
            bc1, bc2 = _bias(b1, t, p.dtype), _bias(b2, t, p.dtype)
            mh, vh = m_ / bc1, v_ / bc2
            sq = jnp.sqrt(vh)
            den = sq + eps
            dm_tot = dm_ - dth_ * lr / (bc1 * den)
            safe = jnp.where(sq > 0, sq, 1.0)
            dv_tot = dv_ + jnp.where(sq > 0, dth_ * lr * mh / (den * den * 2.0 * safe * bc2), 0.0)
            return dm_tot, dv_tot

        adj = tree_map(moment_adjoints, theta, m, v, dth, dm, dv)
        treedef = jax.tree_util.tree_structure(theta)
        dm_tot, dv_tot = (jax.tree_util.tree_unflatten(treedef, x) for x in zip(*treedef.flatten_up_to(adj), strict=True))
        dg = tree_map(lambda a, b, gg: (1 - b1) * a + 2 * (1 - b2) * gg * b, dm_tot, dv_tot, g)
        h_theta, h_data = vjp(dg)
        dth = tree_map(jnp.add, dth, h_theta)
        ddata = tree_map(_add_cotangent, ddata, h_data)
        dm = tree_map(lambda a: b1 * a, dm_tot)
        dv = tree_map(lambda a: b2 * a, dv_tot)
        m_prev = tree_map(lambda m_, gg: (m_ - (1 - b1) * gg) / b1, m, g)
        v_prev = tree_map(lambda v_, gg: jnp.maximum((v_ - (1 - b2) * gg * gg) / b2, 0.0), v, g)
        m_prev = pick(take(stored.m), m_prev)
        v_prev = pick(take(stored.v), v_prev)
        return theta_prev, m_prev, v_prev, dth, dm, dv, ddata

    carry = (final.params, final.m, final.v, dtheta, dm, dv, ddata)
    theta0, _, _, dth, _, _, ddata = jax.lax.fori_loop(0, steps, body, carry)
    return theta0, dth, ddata


def _zero_cotangent(x):
    if jnp.issubdtype(jnp.result_type(x), jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(np.shape(x), jax.dtypes.float0)


def _add_cotangent(a, b):
    if getattr(a, "dtype", None) == jax.dtypes.float0:
        return a
    return a + b


def _make_reverse(grad_fn, opt, steps, every):
    @jax.custom_vjp
    def run(theta0, data):
        return _train_unrolled(grad_fn, opt, theta0, data, steps)

    def fwd(theta0, data):
        final, stored = _forward_with_states(grad_fn, opt, theta0, data, steps, every)
        return final, (final, stored, data)

    def bwd(res, ct):
        final, stored, data = res
        _, dth, ddata = _reverse_pass(grad_fn, opt, final, stored, every, data, steps, ct.params, ct.m, ct.v)
        return dth, ddata

    run.defvjp(fwd, bwd)
    return run


def _resolve_every(reverse_every, theta0, steps):
    if reverse_every is None:
        return steps
    if isinstance(reverse_every, str):
        check_choice(reverse_every, "reverse_every", ("auto",))
        dtype = jax.tree_util.tree_leaves(theta0)[0].dtype
        return min(steps, default_reverse_every(dtype))
    return min(steps, check_int(reverse_every, "reverse_every", min_value=1))


def train_state(
    apply: Callable[..., Any],
    loss: Callable[[Any, Any], jax.Array],
    theta0: Any,
    data: tuple[Any, Any],
    *,
    steps: int,
    optimizer: Adam = Adam(),
    mode: str = "reverse_adam",
    reverse_every: int | str | None = "auto",
    key: jax.Array | None = None,
) -> AdamState:
    """Like :func:`train` but returns the final :class:`AdamState` (θ_T, m_T, v_T)."""
    steps = _check_common(apply, loss, theta0, data, steps, optimizer, mode)
    every = _resolve_every(reverse_every, theta0, steps)
    data = tuple(data)
    grad_fn0 = _grad_fn(apply, loss, key is not None)
    # The key travels as raw uint32 key data inside the (non-differentiated) data pytree,
    # so every mode — and the custom VJP — sees it as an ordinary int constant.
    key_data = jnp.zeros((2,), jnp.uint32) if key is None else _key_data(key)
    # Hoist arrays that apply/loss close over into explicit arguments so that the
    # custom VJP sees (and differentiates) them like the data.
    converted, consts = jax.closure_convert(grad_fn0, theta0, data, key_data)
    grad_fn = lambda theta, d, t: converted(theta, d[0], _step_key(d[2], t), *d[1])
    full = (data, tuple(consts), key_data)
    if mode == "unrolled":
        return _train_unrolled(grad_fn, optimizer, theta0, full, steps)
    if mode == "checkpointed":
        return _train_checkpointed(grad_fn, optimizer, theta0, full, steps)
    return _make_reverse(grad_fn, optimizer, steps, every)(theta0, full)


def train(
    apply: Callable[..., Any],
    loss: Callable[[Any, Any], jax.Array],
    theta0: Any,
    data: tuple[Any, Any],
    *,
    steps: int,
    optimizer: Adam = Adam(),
    mode: str = "reverse_adam",
    reverse_every: int | str | None = "auto",
    key: jax.Array | None = None,
) -> Any:
    """Train ``apply`` on ``data`` for ``steps`` full-batch Adam steps; differentiable.

    Args:
      apply: ``apply(params, inputs) -> outputs`` (e.g. ``ModelFns.apply``).
      loss: ``loss(outputs, targets) -> scalar``, the inner training loss.
      theta0: initial parameters θ₀ (pytree of float arrays; e.g. a pretrained checkpoint
        sampled from Ω).
      data: ``(inputs, targets)`` pytrees — the (synthetic) training set. Float leaves
        receive gradients; int leaves are treated as constants.
      steps: T, number of Adam steps.
      optimizer: :class:`Adam` settings.
      mode: ``'unrolled'``, ``'checkpointed'`` or ``'reverse_adam'`` (see module docstring).
      reverse_every: K for ``'reverse_adam'``: exact states are stored every K steps and
        the reversal restarts from them; ``'auto'`` picks :func:`default_reverse_every`
        for the parameter dtype; ``None`` stores nothing (pure reversal, memory
        independent of T, drifts for long T).
      key: PRNG key of a stochastic model (dropout). With a key, ``apply`` is called as
        ``apply(θ, inputs, k_t)`` with ``k_t = fold_in(key, t)`` at step t = 1..T; the
        reverse pass of ``'reverse_adam'`` and the rematerialised steps of
        ``'checkpointed'`` call it with the same k_t, so all three modes differentiate the
        same stochastic trajectory (the same masks) and give the same meta-gradient.
        ``None``: ``apply(θ, inputs)``, deterministic.

    Returns:
      θ_T, a pytree like ``theta0``.

    Raises:
      TypeError / ValueError naming the bad argument.

    Source: dissertation Ch. 4, Eq. 4.2 (inner loop) and Algorithm 6.
    """
    return train_state(
        apply, loss, theta0, data, steps=steps, optimizer=optimizer, mode=mode, reverse_every=reverse_every,
        key=key,
    ).params


def _key_data(key: Any) -> jax.Array:
    """uint32 key data of a typed (``jax.random.key``) or raw (``PRNGKey``) key."""
    if jnp.issubdtype(jnp.result_type(key), jax.dtypes.prng_key):
        return jax.random.key_data(key)
    key = jnp.asarray(key)
    if key.dtype != jnp.uint32 or key.shape != (2,):
        raise TypeError(f"key: expected a PRNG key, got dtype {key.dtype} shape {tuple(key.shape)}")
    return key


def reverse(
    apply: Callable[..., Any],
    loss: Callable[[Any, Any], jax.Array],
    final: AdamState,
    data: tuple[Any, Any],
    *,
    steps: int,
    optimizer: Adam = Adam(),
) -> Any:
    """Recover θ₀ from (θ_T, m_T, v_T) by pure reversal (no stored states).

    A diagnostic for the numerical drift of the reversal: compare the result with the
    true θ₀ (``benchmarks/farzi_inner.py``).
    """
    if not isinstance(final, AdamState):
        raise TypeError(f"final: expected an inner.AdamState, got {type(final).__name__}")
    steps = _check_common(apply, loss, final.params, data, steps, optimizer, "reverse_adam")
    grad_fn0 = _grad_fn(apply, loss, False)
    data = tuple(data)
    key_data = jnp.zeros((2,), jnp.uint32)
    converted, consts = jax.closure_convert(grad_fn0, final.params, data, key_data)
    grad_fn = lambda theta, d, t: converted(theta, d[0], d[2], *d[1])
    full = (data, tuple(consts), key_data)
    return _pure_reverse(grad_fn, optimizer, final, full, steps)


def _pure_reverse(grad_fn, opt, final, data, steps):
    b1, b2, lr, eps = opt.b1, opt.b2, opt.learning_rate, opt.eps

    def body(i, st):
        theta, m, v = st
        t = steps - i

        def undo(p, m_, v_):
            bc1, bc2 = _bias(b1, t, p.dtype), _bias(b2, t, p.dtype)
            return p + lr * (m_ / bc1) / (jnp.sqrt(v_ / bc2) + eps)

        theta = tree_map(undo, theta, m, v)
        g = grad_fn(theta, data, t)
        m = tree_map(lambda m_, gg: (m_ - (1 - b1) * gg) / b1, m, g)
        v = tree_map(lambda v_, gg: jnp.maximum((v_ - (1 - b2) * gg * gg) / b2, 0.0), v, g)
        return AdamState(theta, m, v)

    return jax.lax.fori_loop(0, steps, body, AdamState(*final)).params
