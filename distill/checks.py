"""Input validation shared by every public function of the library.

One place for the checks so that every error message has the same shape:
``"<argument>: expected <what>, got <actual>"``. Checks on *values* (NaN, binary,
ranges of entries) only run on concrete arrays; under ``jax.jit`` tracing the
values are unknown, and the shape/dtype checks still run because they are static.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import os

import jax
import numpy as np

__all__ = [
    "is_concrete",
    "check_array",
    "check_int",
    "check_float",
    "check_binary",
    "check_finite",
    "check_same_leading",
    "check_choice",
    "check_path",
    "check_key",
    "check_index_range",
]


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values this process can read: a numpy array or scalar, or a
    non-traced jax array that is fully on this process or replicated on every process (a
    global array sharded over several processes is checked like a traced one: static
    checks only)."""
    if isinstance(x, jax.core.Tracer):
        return False
    # A replicated global array is readable on every process; a sharded one is not.
    return not (isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated)


_KINDS = {
    "float": "f",
    "int": "iu",
    "bool": "b",
    "numeric": "fiub",
}


def check_array(
    x: Any,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    kind: str | None = None,
    shape: Sequence[int | None] | None = None,
    nonempty: bool = True,
    finite: bool = False,
):
    """Validate an array argument and return it unchanged.

    Args:
      x: the argument (numpy or jax array; python lists are rejected so that shapes
        are never guessed).
      name: the argument's name, used in the error message.
      ndim: required rank, or a sequence of allowed ranks.
      kind: ``'float'``, ``'int'``, ``'bool'`` or ``'numeric'`` (dtype family).
      shape: required shape; ``None`` entries are free.
      nonempty: reject arrays with a zero-sized dimension.
      finite: reject NaN/inf entries (only checked on concrete values).

    Raises:
      TypeError: not an array, or wrong dtype family.
      ValueError: wrong rank, shape, empty, or non-finite entries.
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name}: expected a {want}-d array, got shape {tuple(x.shape)}")
    if kind is not None:
        if np.dtype(x.dtype).kind not in _KINDS[kind]:
            raise TypeError(f"{name}: expected a {kind} dtype, got {x.dtype}")
    if shape is not None:
        if len(shape) != x.ndim or any(s is not None and s != d for s, d in zip(shape, x.shape, strict=False)):
            want = tuple("*" if s is None else s for s in shape)
            raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    if nonempty and any(d == 0 for d in x.shape):
        raise ValueError(f"{name}: expected a non-empty array, got shape {tuple(x.shape)}")
    if finite:
        check_finite(x, name)
    return x


def check_finite(x: Any, name: str) -> None:
    """Reject NaN/inf entries of a concrete floating array (no-op under tracing)."""
    if is_concrete(x) and np.dtype(x.dtype).kind == "f":
        if not bool(np.all(np.isfinite(np.asarray(x)))):
            raise ValueError(f"{name}: expected finite values, got NaN or inf")


def check_binary(x: Any, name: str) -> None:
    """Reject a concrete array whose entries are not all 0 or 1 (no-op under tracing)."""
    if is_concrete(x):
        a = np.asarray(x)
        if a.size and not bool(np.all((a == 0) | (a == 1))):
            bad = a[(a != 0) & (a != 1)].ravel()[0]
            raise ValueError(f"{name}: expected a binary 0/1 matrix, found entry {bad!r}")


def check_index_range(x: Any, name: str, n: int, item: str = "id", *, allowed: int | None = None,
                      of: str = "") -> None:
    """Reject a concrete int array with entries outside ``[0, n)`` (no-op under tracing).

    The message names the first offending entry and where it is, e.g. ``"tokens: token 25
    at [1, 4] is outside [0, 10) (the model's vocabulary)"``. ``allowed`` is one extra
    value that passes (a padding id); ``of`` says what ``[0, n)`` indexes. Under ``jit``
    the caller masks the affected outputs to NaN instead (a gather would clamp an
    out-of-range label/id to a real one and return a plausible number).
    """
    if not is_concrete(x) or not np.size(x):
        return
    a = np.asarray(x)
    bad = ((a < 0) | (a >= n)) & (a != allowed if allowed is not None else True)
    if bad.any():
        pos = tuple(int(v) for v in np.argwhere(bad)[0])
        where = f"index {pos[0]}" if a.ndim == 1 else f"[{', '.join(map(str, pos))}]"
        raise ValueError(f"{name}: {item} {int(a[pos])} at {where} is outside [0, {n})"
                         + (f" ({of})" if of else "") + ("" if allowed is None else f" and is not {allowed}"))


def check_int(
    v: Any,
    name: str,
    *,
    min_value: int | None = None,
    max_value: int | None = None,
) -> int:
    """Validate a python/numpy integer hyper-parameter and return it as ``int``."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
    v = int(v)
    if min_value is not None and v < min_value:
        raise ValueError(f"{name}: expected an int >= {min_value}, got {v}")
    if max_value is not None and v > max_value:
        raise ValueError(f"{name}: expected an int <= {max_value}, got {v}")
    return v


def check_float(
    v: Any,
    name: str,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    strict_min: bool = False,
) -> float:
    """Validate a real hyper-parameter (finite) and return it as ``float``.

    Traced scalars (e.g. a jitted λ) are returned unchanged without value checks.
    """
    if not is_concrete(v):
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) and not (
        hasattr(v, "shape") and v.shape == ()
    ):
        raise TypeError(f"{name}: expected a real number, got {type(v).__name__}")
    f = float(v)
    if not np.isfinite(f):
        raise ValueError(f"{name}: expected a finite number, got {f}")
    if min_value is not None and (f <= min_value if strict_min else f < min_value):
        op = ">" if strict_min else ">="
        raise ValueError(f"{name}: expected a number {op} {min_value}, got {f}")
    if max_value is not None and f > max_value:
        raise ValueError(f"{name}: expected a number <= {max_value}, got {f}")
    return f


def check_same_leading(arrays: Iterable[tuple[str, Any]], axis: int = 0) -> None:
    """Require the named arrays to agree on dimension ``axis``."""
    arrays = list(arrays)
    sizes = {n: a.shape[axis] for n, a in arrays}
    if len(set(sizes.values())) > 1:
        desc = ", ".join(f"{n}: {s}" for n, s in sizes.items())
        raise ValueError(f"expected equal sizes along axis {axis}, got {desc}")


def check_choice(v: Any, name: str, choices: Sequence[Any]) -> Any:
    """Require ``v`` to be one of ``choices``."""
    if v not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {v!r}")
    return v


def check_path(path: Any, name: str = "path") -> str:
    """Require a ``str`` or ``os.PathLike`` and return it as a ``str``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a str or os.PathLike, got {type(path).__name__}")
    return os.fspath(path)


def check_key(key: Any, name: str = "key", *, allow_none: bool = False) -> Any:
    """A JAX PRNG key: a typed key (``jax.random.key``) or a raw ``uint32[2]`` one (``PRNGKey``).

    Returns it unchanged; raises ``TypeError`` naming the argument for anything else
    (a Python int seed is the common mistake: pass ``jax.random.key(seed)``).
    ``allow_none`` accepts ``None`` for optional keys (the caller decides what a
    missing key means). Works on traced keys too: only the dtype and shape are read.
    """
    if key is None and allow_none:
        return None
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return key
    if dtype is not None and np.dtype(dtype) == np.uint32 and getattr(key, "shape", None) and key.shape[-1] == 2:
        return key
    raise TypeError(
        f"{name}: expected a JAX PRNG key (jax.random.key(seed)), got "
        f"{type(key).__name__}{'' if dtype is None else f' of dtype {dtype}'}"
    )
