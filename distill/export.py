"""The one export format for distilled data: ``<path>.npz`` arrays + ``<path>.json`` settings.

Loading needs numpy and the standard library only (this module imports no jax), so a
distilled dataset can be used by any framework::

    arrays, settings = export.load("summary")      # dict of np.ndarray, dict

``save`` accepts numpy or jax arrays (converted with ``np.asarray``) and any
JSON-serialisable settings (numpy scalars and arrays are converted). The JSON also
records the array names, shapes and dtypes, and ``load`` checks them, so a truncated
or mismatched pair of files is reported instead of silently used.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping

import numpy as np

__all__ = ["save", "load", "FORMAT_VERSION"]

FORMAT_VERSION = 1


def _paths(path) -> tuple[pathlib.Path, pathlib.Path]:
    if not isinstance(path, (str, pathlib.PurePath)):
        raise TypeError(f"path: expected a str or path, got {type(path).__name__}")
    p = pathlib.Path(path)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".npz"), p.with_name(p.name + ".json")


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        return np.asarray(v).tolist()
    return v


def save(path, arrays: Mapping[str, Any], settings: Mapping[str, Any] | None = None) -> pathlib.Path:
    """Write ``arrays`` to ``<path>.npz`` and ``settings`` to ``<path>.json``.

    Args:
      path: destination without extension (an ``.npz``/``.json`` suffix is dropped).
      arrays: name → array (numpy or jax); names must be non-empty strings.
      settings: JSON-serialisable description (method, hyper-parameters, id maps...).

    Returns:
      The ``.npz`` path.
    """
    npz, js = _paths(path)
    if not isinstance(arrays, Mapping) or not arrays:
        raise ValueError("arrays: expected a non-empty mapping of name -> array")
    out = {}
    for name, a in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"arrays: expected non-empty string names, got {name!r}")
        if not (hasattr(a, "shape") and hasattr(a, "dtype")):
            raise TypeError(f"arrays[{name!r}]: expected an array, got {type(a).__name__}")
        out[name] = np.asarray(a)
    if settings is not None and not isinstance(settings, Mapping):
        raise TypeError(f"settings: expected a mapping, got {type(settings).__name__}")
    meta = {
        "format_version": FORMAT_VERSION,
        "arrays": {n: {"shape": list(a.shape), "dtype": str(a.dtype)} for n, a in out.items()},
        "settings": _jsonable(dict(settings or {})),
    }
    npz.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(npz, **out)
    js.write_text(json.dumps(meta, indent=2) + "\n")
    return npz


def load(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read what :func:`save` wrote: ``(arrays, settings)`` with numpy arrays.

    Raises:
      FileNotFoundError: either file is missing.
      ValueError: the arrays do not match the names/shapes/dtypes the JSON records.
    """
    npz, js = _paths(path)
    for f in (npz, js):
        if not f.exists():
            raise FileNotFoundError(f"path: {f} does not exist")
    meta = json.loads(js.read_text())
    with np.load(npz, allow_pickle=False) as z:
        arrays = {n: z[n] for n in z.files}
    expected = meta.get("arrays", {})
    if set(expected) != set(arrays):
        raise ValueError(f"path: {npz} holds arrays {sorted(arrays)}, the JSON lists {sorted(expected)}")
    for n, spec in expected.items():
        if list(arrays[n].shape) != spec["shape"] or str(arrays[n].dtype) != spec["dtype"]:
            raise ValueError(
                f"path: array {n!r} is {arrays[n].dtype}{list(arrays[n].shape)}, "
                f"the JSON records {spec['dtype']}{spec['shape']}"
            )
    return arrays, meta.get("settings", {})
