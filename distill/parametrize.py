"""How synthetic data is represented: one small interface, several parametrizations.

A parametrization is ``Parametrization(init, materialize)``:

* ``init(key, ...) -> syn_params`` — the learnable pytree (the outer loop's variables);
* ``materialize(syn_params, key) -> data`` — the data arrays a model trains on,
  differentiable in ``syn_params``.

Objectives (Distill-CF, Farzi, DC/DM/MTT/KIP) only ever see ``materialize``'s output,
so any objective composes with any parametrization:

* :func:`identity` — the data itself is learned (raw pixels, soft interactions).
* :func:`latent_factorization` — Farzi's ``softmax(Z · M / τ)`` (dissertation Ch. 4,
  Eq. 4.1): ``μ`` sequences of length ``ξ`` over a vocabulary of ``V`` tokens from a
  per-token latent ``Z ∈ R^{μ×ξ×d}`` and a shared decoder ``M ∈ R^{d×V}``.
* ``gumbel_multisample`` — Distill-CF's multi-sample Gumbel-softmax summary
  (dissertation Ch. 3, §3.4), defined with its memory-constant custom VJP.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jax.sharding import Mesh

from distill import parallel
from distill.checks import check_array, check_choice, check_float, check_int, check_key, is_concrete

__all__ = [
    "Parametrization",
    "identity",
    "LatentFactors",
    "latent_factorization",
    "latent_logits",
    "gumbel_multisample",
    "multisample_gumbel_sum",
    "GUMBEL_NOISE",
]


class Parametrization(NamedTuple):
    """``init(key, ...) -> syn_params`` and ``materialize(syn_params, key) -> data``."""

    init: Callable[..., Any]
    materialize: Callable[[Any, jax.Array], Any]


def identity() -> Parametrization:
    """The synthetic data are the parameters (e.g. pixels initialised from real images).

    ``init(key, data)`` returns ``data`` as floating arrays (a pytree is fine, e.g.
    ``(images, soft_labels)``); ``materialize(params, key)`` returns them unchanged.
    """

    def init(key: jax.Array, data: Any) -> Any:
        check_key(key, allow_none=True)  # unused (the data is the parameter), still validated

        def to_float(a):
            check_array(a, "data", finite=True)
            a = jnp.asarray(a)
            return a if jnp.issubdtype(a.dtype, jnp.floating) else a.astype(jnp.result_type(float))

        return jax.tree_util.tree_map(to_float, data)

    def materialize(params: Any, key: jax.Array) -> Any:
        del key
        return params

    return Parametrization(init, materialize)


class LatentFactors(NamedTuple):
    """Farzi's latent summary: ``z`` ``(μ, ξ, d)`` and the shared decoder ``m`` ``(d, V)``."""

    z: jax.Array
    m: jax.Array


def latent_factorization(
    n_seqs: int,
    seq_len: int,
    latent_dim: int,
    vocab_size: int,
    *,
    tau: float = 1.0,
    init_scale: float = 1.0,
) -> Parametrization:
    """Farzi's low-rank data parametrization ``D_syn = softmax(Z · M / τ)``.

    Storing ``μ·ξ·d + d·V`` numbers instead of ``μ·ξ·V`` makes the summary cheap to
    optimise and to store, and the softmax keeps every synthetic token a proper
    distribution over the vocabulary (models embed it as ``probs @ E``).

    Args:
      n_seqs: μ, number of synthetic sequences.
      seq_len: ξ, tokens per sequence.
      latent_dim: d, latent size per token.
      vocab_size: V.
      tau: softmax temperature τ > 0 (lower → sharper, more token-like).
      init_scale: standard deviation of the Gaussian initialisation of Z and M
        (both scaled by ``1/√d`` on the product so logits start at ~``init_scale²``).

    Returns:
      ``Parametrization`` with ``init(key) -> LatentFactors`` and
      ``materialize(params, key) -> (μ, ξ, V)`` probabilities.

    Source: dissertation Ch. 4, Eq. 4.1 (Farzi).
    """
    n_seqs = check_int(n_seqs, "n_seqs", min_value=1)
    seq_len = check_int(seq_len, "seq_len", min_value=1)
    latent_dim = check_int(latent_dim, "latent_dim", min_value=1)
    vocab_size = check_int(vocab_size, "vocab_size", min_value=2)
    tau = check_float(tau, "tau", min_value=0.0, strict_min=True)
    init_scale = check_float(init_scale, "init_scale", min_value=0.0, strict_min=True)

    def init(key: jax.Array) -> LatentFactors:
        check_key(key)
        kz, km = jax.random.split(key)
        scale = init_scale / latent_dim**0.25
        z = scale * jax.random.normal(kz, (n_seqs, seq_len, latent_dim))
        m = scale * jax.random.normal(km, (latent_dim, vocab_size))
        return LatentFactors(z, m)

    def materialize(params: LatentFactors, key: jax.Array) -> jax.Array:
        del key
        return jax.nn.softmax(latent_logits(params, tau), axis=-1)

    return Parametrization(init, materialize)


def latent_logits(params: LatentFactors, tau: float = 1.0) -> jax.Array:
    """The logits ``Z · M / τ`` ``(μ, ξ, V)`` whose softmax is :func:`latent_factorization`'s data."""
    return jnp.einsum("sld,dv->slv", params.z, params.m) / tau


# --------------------------------------------------------------------------------------
# Distill-CF: multi-sample Gumbel-softmax with a memory-constant custom VJP
# --------------------------------------------------------------------------------------


#: Noise generators for the Gumbel samples: ``'hash'`` (default) — a counter-based
#: integer hash of (per-sample key, element index), ~18× faster than threefry on CPU;
#: ``'threefry'`` — ``jax.random.gumbel`` with the key's own PRNG.
GUMBEL_NOISE = ("hash", "threefry")


def _fmix32(x: jax.Array) -> jax.Array:
    # MurmurHash3's 32-bit finaliser: a bijection with full avalanche.
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _hash_gumbel(key: jax.Array, rows: jax.Array, n_cols: int, dtype) -> jax.Array:
    """``(μ, I)`` Gumbel(0, 1) noise from a counter-based hash of (key words, element index).

    Each element's 32 random bits are ``fmix32(fmix32(j ⊕ k₀) + k₁)`` for its index
    ``j = row · I + column`` and the key's first two words; the top 23 bits give
    ``u ∈ (0, 1)`` (half-ulp offset, never 0 or 1) and ``g = −log(−log u)``. ``rows``
    (``(μ,)`` global row ids) makes a row's noise independent of which shard of a device
    mesh computes it. Not cryptographic; independent streams per key, cheap enough that
    the γ-sample loop is not PRNG-bound.
    """
    words = jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
    j = rows.astype(jnp.uint32)[:, None] * jnp.uint32(n_cols) + jax.lax.iota(jnp.uint32, n_cols)
    bits = _fmix32(_fmix32(j ^ words[0]) + words[1])
    u = ((bits >> 9).astype(dtype) + 0.5) * (2.0**-23)
    return -jnp.log(-jnp.log(u))


def _gumbel_softmax(logits: jax.Array, key: jax.Array, rows: jax.Array, tau: float, noise: str) -> jax.Array:
    """One Gumbel-softmax sample per row: ``softmax((Γ + g) / τ)``, ``g ~ Gumbel(0, 1)``.

    ``rows``: global ids of ``logits``' rows; the noise of a row depends only on
    (key, row id), so sharding rows over devices does not change the samples.
    """
    if noise == "hash":
        g = _hash_gumbel(key, rows, logits.shape[1], logits.dtype)
    else:
        g = jax.vmap(lambda r: jax.random.gumbel(jax.random.fold_in(key, r), logits.shape[1:], logits.dtype))(rows)
    return jax.nn.softmax((logits + g) / tau, axis=-1)


#: Rows per block of the γ-sample loop: ~2 MiB of logits, so a block's logits, noise,
#: sample and running sum stay cache-resident through all γ samples instead of
#: streaming the whole (μ, I) matrices from memory γ times (benchmarks.distill_cf_perf: the
#: forward 0.64 vs 0.80 s, backward 0.81 vs 0.94 s at μ = 500, I = 3,706, γ = 200 on 2 CPU cores).
_BLOCK_BYTES = 2**21


def _row_block(logits: jax.Array) -> int:
    return max(1, _BLOCK_BYTES // (logits.shape[1] * logits.dtype.itemsize))


def _sample_sum_rows(xs, key, n_samples, tau, noise):
    logits, rows = xs

    def body(s, acc):
        return acc + _gumbel_softmax(logits, jax.random.fold_in(key, s), rows, tau, noise)

    return jax.lax.fori_loop(0, n_samples, body, jnp.zeros_like(logits))


def _sample_vjp_rows(xs, key, n_samples, tau, noise):
    logits, rows, ct = xs

    # For y = softmax(z), z = (Γ + g)/τ:  ∂L/∂Γ = y ⊙ (ct − ⟨ct, y⟩) / τ  (row-wise).
    def body(s, acc):
        y = _gumbel_softmax(logits, jax.random.fold_in(key, s), rows, tau, noise)
        return acc + y * (ct - jnp.sum(ct * y, axis=-1, keepdims=True))

    return jax.lax.fori_loop(0, n_samples, body, jnp.zeros_like(logits)) / tau


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _multisample_sum(
    logits: jax.Array, key: jax.Array, rows: jax.Array, n_samples: int, tau: float, noise: str
) -> jax.Array:
    # Forward: accumulate the γ samples one at a time (only the running sum is live),
    # one cache-sized block of rows at a time.
    return parallel.map_row_blocks(
        _sample_sum_rows, (logits, rows), key, n_samples, tau, noise, block_size=_row_block(logits)
    )


def _multisample_fwd(logits, key, rows, n_samples, tau, noise):
    # Residuals are the inputs only: O(μ·I), independent of γ.
    return _multisample_sum(logits, key, rows, n_samples, tau, noise), (logits, key, rows)


def _multisample_bwd(n_samples, tau, noise, res, ct):
    logits, key, rows = res
    # Backward: regenerate sample s from fold_in(key, s) and add its VJP.
    grad = parallel.map_row_blocks(
        _sample_vjp_rows, (logits, rows, ct), key, n_samples, tau, noise, block_size=_row_block(logits)
    )
    return grad, None, None  # no cotangents for the key and the row ids


_multisample_sum.defvjp(_multisample_fwd, _multisample_bwd)


def multisample_gumbel_sum(
    logits: jax.Array,
    key: jax.Array,
    *,
    n_samples: int,
    tau: float,
    custom_vjp: bool = True,
    noise: str = "hash",
    mesh: Mesh | None = None,
) -> jax.Array:
    """Sum of ``γ`` independent Gumbel-softmax samples of every row of ``logits``.

    ``S = Σ_{s<γ} softmax((Γ + g_s) / τ)`` row-wise, with ``g_s ~ Gumbel(0, 1)``
    drawn from ``fold_in(key, s)`` and the row's index (before the hard-tanh of Eq. 3.4).

    With ``custom_vjp=True`` (default) the forward pass accumulates the samples in a
    ``fori_loop`` and the backward pass regenerates each sample from its key and
    accumulates its VJP, so memory is ``O(μ·I)`` whatever ``γ`` (dissertation §3.4.4);
    ``custom_vjp=False`` is the naive version whose autodiff stores ``γ`` samples
    (``O(γ·μ·I)``), kept for tests and the memory benchmark. Both give the same
    values and gradients.

    The γ·μ·I noise draws dominate a Distill-CF step; rows are independent, so with a
    ``mesh`` each device samples only its ``μ / n_devices`` rows (and their VJP) and
    the sums are gathered — the same values as on one device, since a row's noise
    depends on its global index, not on its shard.

    Args:
      logits: ``(μ, I)`` float logits Γ (the sampling prior, unnormalised log-probs).
      key: PRNG key.
      n_samples: γ ≥ 1.
      tau: temperature τ > 0.
      custom_vjp: use the memory-constant VJP.
      noise: ``'hash'`` (fast counter-based hash, default) or ``'threefry'``
        (``jax.random.gumbel`` of ``fold_in(key_s, row)``); see :data:`GUMBEL_NOISE`.
      mesh: shard the rows over this device mesh (``None``: one device).

    Returns:
      ``(μ, I)`` sums, entries in ``[0, γ]``, rows summing to ``γ``.

    Source: dissertation Ch. 3, Eq. 3.4 and §3.4.4 (Distill-CF).
    """
    check_key(key)
    check_array(logits, "logits", ndim=2, kind="float")
    n_samples = check_int(n_samples, "n_samples", min_value=1)
    if not is_concrete(tau):  # τ is a static (non-differentiable) argument of the custom VJP
        raise TypeError("tau: expected a concrete number, got a traced value (close over it, do not jit over it)")
    tau = check_float(tau, "tau", min_value=0.0, strict_min=True)
    check_choice(noise, "noise", GUMBEL_NOISE)
    if logits.shape[0] * logits.shape[1] >= 2**32:
        raise ValueError(f"logits: expected fewer than 2**32 entries (32-bit noise counter), got shape {logits.shape}")

    def local(xs, k):
        g, rows = xs
        if custom_vjp:
            return _multisample_sum(g, k, rows, n_samples, tau, noise)
        keys = jax.vmap(lambda s: jax.random.fold_in(k, s))(jnp.arange(n_samples))
        samples = jax.vmap(lambda ks: _gumbel_softmax(g, ks, rows, tau, noise))(keys)
        return jnp.sum(samples, axis=0)

    rows = jnp.arange(logits.shape[0], dtype=jnp.int32)
    return parallel.map_rows(local, (logits, rows), key, mesh=mesh)


def gumbel_multisample(
    n_syn_users: int,
    n_items: int,
    *,
    n_samples: int,
    tau: float,
    init_scale: float = 1.0,
    custom_vjp: bool = True,
    noise: str = "hash",
    mesh: Mesh | None = None,
) -> Parametrization:
    """Distill-CF's summary: the hard-tanh of a sum of γ Gumbel-softmax samples per row.

    The learnable parameters are logits ``Γ ∈ R^{μ×I}`` (a continuous sampling prior
    per synthetic-user × item pair); a synthetic user's interactions are::

        X̂ˢ = hardtanh( Σ_{s=1..γ} softmax((Γ + g_s) / τ) ),   g_s ~ Gumbel(0, 1)   (Eq. 3.4)

    i.e. a differentiable union of γ draws with replacement from ``softmax(Γ_u)``:
    entries in ``[0, 1]``, and at low τ each row has at most γ non-negligible entries
    (sparser for smaller τ and smaller γ). The number of distinct items per row varies
    with the entropy of ``softmax(Γ_u)``, which is how the summary matches the
    long-tailed activity of real users. (``softmax`` of Eq. 3.4 inside the Gumbel step
    is omitted: ``log softmax(Γ)`` differs from Γ by a per-row constant, which the
    outer softmax cancels.)

    Args:
      n_syn_users: μ, number of synthetic users.
      n_items: I.
      n_samples: γ, Gumbel samples per synthetic user.
      tau: Gumbel-softmax temperature τ > 0.
      init_scale: ``init`` sets ``Γ = init_scale · real_rows``.
      custom_vjp: use the memory-constant custom VJP (see
        :func:`multisample_gumbel_sum`); ``False`` is the naive autodiff version.
      noise: Gumbel noise generator, ``'hash'`` or ``'threefry'`` (:data:`GUMBEL_NOISE`).
      mesh: sample the rows on this device mesh, each device its share of the μ rows
        (see :func:`multisample_gumbel_sum`); same summary as on one device.

    Returns:
      ``Parametrization`` with ``init(key, real_rows) -> Γ`` (``real_rows``: ``(μ, I)``
      rows of μ real users, e.g. a random sample; ``key`` unused) and
      ``materialize(Γ, key) -> (μ, I)`` summary in ``[0, 1]``.

    Source: dissertation Ch. 3, §3.4.3, Eq. 3.4, Algorithm 5 (line 8); §3.4.4 (memory).
    """
    n_syn_users = check_int(n_syn_users, "n_syn_users", min_value=1)
    n_items = check_int(n_items, "n_items", min_value=1)
    n_samples = check_int(n_samples, "n_samples", min_value=1)
    tau = check_float(tau, "tau", min_value=0.0, strict_min=True)
    init_scale = check_float(init_scale, "init_scale")
    check_choice(noise, "noise", GUMBEL_NOISE)

    def init(key: jax.Array, real_rows: Any) -> jax.Array:
        check_key(key, allow_none=True)  # unused (the init is deterministic), still validated
        check_array(real_rows, "real_rows", ndim=2, kind="numeric", shape=(n_syn_users, n_items), finite=True)
        rows = jnp.asarray(real_rows)
        if not jnp.issubdtype(rows.dtype, jnp.floating):
            rows = rows.astype(jnp.result_type(float))
        return init_scale * rows

    def materialize(logits: jax.Array, key: jax.Array) -> jax.Array:
        check_array(logits, "logits", ndim=2, kind="float", shape=(n_syn_users, n_items))
        total = multisample_gumbel_sum(
            logits, key, n_samples=n_samples, tau=tau, custom_vjp=custom_vjp, noise=noise, mesh=mesh
        )
        return jax.nn.hard_tanh(total)

    return Parametrization(init, materialize)
