"""What every benchmark shares: environment capture, result JSON, tables, timing."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import resource
import time
from importlib import metadata
from typing import Any, Callable, Sequence

import jax

RESULTS = pathlib.Path(__file__).resolve().parent / "results"

__all__ = ["RESULTS", "environment", "write_result", "format_table", "timed", "peak_rss_mb"]


def environment() -> tuple[dict[str, Any], dict[str, str]]:
    """``(hardware, versions)`` of this run, for the result JSON."""
    dev = jax.devices()
    hardware = {
        "platform": dev[0].platform,
        "device_kind": dev[0].device_kind,
        "device_count": len(dev),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
    versions = {"python": platform.python_version()}
    for pkg in ("jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return hardware, versions


def write_result(name: str, config: dict, results: Any, wall_time_s: float, out_dir=None) -> pathlib.Path:
    """Write ``<out_dir>/<name>.json`` with the keys fixed by DESIGN.md."""
    hardware, versions = environment()
    out = pathlib.Path(out_dir) if out_dir else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    payload = {
        "benchmark": name,
        "config": config,
        "results": results,
        "hardware": hardware,
        "versions": versions,
        "wall_time_s": round(wall_time_s, 3),
    }
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return path


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A plain fixed-width table (floats with 2 decimals)."""
    def cell(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    widths = [max(len(c), *(len(cell(r.get(c, ""))) for r in rows)) for c in columns]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))
    out = [line(columns), line(["-" * w for w in widths])]
    out += [line([cell(r.get(c, "")) for c in columns]) for r in rows]
    return "\n".join(out)


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[Any, float]:
    """Run ``fn`` (already warmed up by the caller if it compiles) and return (result, best s)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return out, best


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
