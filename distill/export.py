"""The one export format for distilled data: ``<path>.npz`` arrays + ``<path>.json`` settings.

Loading needs numpy and the standard library only (this module imports no jax), so a
distilled dataset can be used by any framework::

    arrays, settings = export.load("summary")      # dict of np.ndarray, dict

``save`` accepts numpy or jax arrays (converted with ``np.asarray``) and any
JSON-serialisable settings (numpy scalars and arrays are converted). The JSON also
records the array names, shapes, dtypes and the SHA-256 of the ``.npz`` bytes, and
``load`` checks them, so a truncated, corrupt or mismatched pair of files is reported
(with its path) instead of silently used.

Writing is atomic per file and validated first: everything that could fail (array
dtypes, JSON serialisation) is checked before any byte is written; both files are
written to temporary names in the destination folder and moved into place with
``os.replace``, the ``.npz`` first. A failed or interrupted save therefore leaves the
previous pair intact, and a pair whose two files come from different saves fails the
hash check on load.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import tempfile
import zipfile
from typing import Any, Mapping

import numpy as np

__all__ = ["save", "load", "jsonable", "FORMAT_VERSION"]

FORMAT_VERSION = 1


def _paths(path) -> tuple[pathlib.Path, pathlib.Path]:
    if not isinstance(path, (str, pathlib.PurePath)):
        raise TypeError(f"path: expected a str or path, got {type(path).__name__}")
    p = pathlib.Path(path)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".npz"), p.with_name(p.name + ".json")


def jsonable(v: Any) -> Any:
    """``v`` with numpy/jax scalars and arrays turned into Python numbers and lists (recursively)."""
    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        return np.asarray(v).tolist()
    return v


def _validated(arrays: Any) -> dict[str, np.ndarray]:
    if not isinstance(arrays, Mapping) or not arrays:
        raise ValueError("arrays: expected a non-empty mapping of name -> array")
    out = {}
    for name, a in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"arrays: expected non-empty string names, got {name!r}")
        if not (hasattr(a, "shape") and hasattr(a, "dtype")):
            raise TypeError(f"arrays[{name!r}]: expected an array, got {type(a).__name__}")
        out[name] = np.asarray(a)
        if out[name].dtype.hasobject or out[name].dtype.kind == "V":
            # np.load(allow_pickle=False) could never read these back.
            raise TypeError(f"arrays[{name!r}]: dtype {out[name].dtype} cannot be loaded without pickle")
    return out


def _atomic_write(dest: pathlib.Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


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
    out = _validated(arrays)
    if settings is not None and not isinstance(settings, Mapping):
        raise TypeError(f"settings: expected a mapping, got {type(settings).__name__}")
    buf = io.BytesIO()
    np.savez_compressed(buf, **out)
    blob = buf.getvalue()
    meta = {
        "format_version": FORMAT_VERSION,
        "arrays": {n: {"shape": list(a.shape), "dtype": str(a.dtype)} for n, a in out.items()},
        "npz_sha256": hashlib.sha256(blob).hexdigest(),
        "settings": jsonable(dict(settings or {})),
    }
    try:
        text = json.dumps(meta, indent=2, allow_nan=True) + "\n"
    except (TypeError, ValueError) as e:
        raise TypeError(f"settings: not JSON-serialisable ({e})") from None
    npz.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(npz, blob)
    _atomic_write(js, text.encode())
    return npz


def load(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read what :func:`save` wrote: ``(arrays, settings)`` with numpy arrays.

    Raises:
      FileNotFoundError: either file is missing.
      ValueError: a file is truncated or corrupt, written by an unknown format version, or
        the arrays do not match the names/shapes/dtypes/hash the JSON records.
    """
    npz, js = _paths(path)
    for f in (npz, js):
        if not f.exists():
            raise FileNotFoundError(f"path: {f} does not exist")
    meta = _read_meta(js)
    blob = npz.read_bytes()
    digest = meta.get("npz_sha256")
    if digest is not None and hashlib.sha256(blob).hexdigest() != digest:
        raise ValueError(f"path: {npz} does not match {js.name} (truncated, corrupt, or from another save)")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {n: z[n] for n in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise ValueError(f"path: {npz} is not a readable .npz ({type(e).__name__}: {e})") from None
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


def _read_meta(js: pathlib.Path) -> dict:
    try:
        meta = json.loads(js.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"path: {js} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("arrays", {}), dict):
        raise ValueError(f"path: {js} is not an export settings file")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"path: {js} has format_version {version!r}; this library reads version {FORMAT_VERSION}")
    return meta
