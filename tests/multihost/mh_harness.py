"""Launch scenario functions on JAX's multi-controller runtime, on one machine.

``launch`` starts ``n_processes`` copies of ``mh_worker.py`` on 127.0.0.1 (a free
port, found by binding port 0), each with ``devices_per_process`` fake CPU devices,
so together they form one global mesh of ``n_processes · devices_per_process``
devices, exactly as hosts of a TPU pod slice or a GPU cluster do. Every worker runs
the named scenarios of ``mh_scenarios`` in order and writes each result (a dict of
numpy arrays, gathered to the full global value) to ``<scenario>.p<process>.npz``.
``n_processes=1`` is the single-controller reference on the same device count.

Every launch has a wall-clock ``timeout``: on expiry all of its workers (their
process groups) are killed and the temporary directory is removed either way.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(HERE, "mh_worker.py")


def free_port() -> int:
    """A TCP port that was free a moment ago (the OS picks it when binding port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Launch:
    """A group of worker processes forming one multi-controller job."""

    n_processes: int
    devices_per_process: int
    scenarios: tuple[str, ...]
    out_dir: str
    procs: list = field(default_factory=list)
    logs: list = field(default_factory=list)
    started: float = 0.0


def start(scenarios, *, n_processes: int, devices_per_process: int, out_dir: str,
          extra_env: dict | None = None) -> Launch:
    """Start the workers of one job (non-blocking); see :func:`finish`."""
    port = free_port()
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the worker sets its own device count
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra_env or {})
    job = Launch(n_processes, devices_per_process, tuple(scenarios), out_dir, started=time.perf_counter())
    os.makedirs(os.path.join(out_dir, "shared"), exist_ok=True)
    for pid in range(n_processes):
        log = open(os.path.join(out_dir, f"log.p{pid}.txt"), "w")
        cmd = [sys.executable, WORKER, "--process-id", str(pid), "--num-processes", str(n_processes),
               "--devices", str(devices_per_process), "--port", str(port), "--out", out_dir,
               "--scenarios", ",".join(scenarios)]
        # A new session per worker, so a timeout kills the worker and anything it started.
        job.procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True, cwd=ROOT))
        job.logs.append(log)
    return job


def _kill(job: Launch) -> None:
    for p in job.procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait()


def _tail(job: Launch, n_chars: int = 3000) -> str:
    parts = []
    for pid in range(job.n_processes):
        with open(os.path.join(job.out_dir, f"log.p{pid}.txt"), errors="replace") as f:
            text = "".join(line for line in f if "Gloo" not in line)  # gloo's connection chatter
        parts.append(f"--- process {pid} ---\n{text[-n_chars:]}")
    return "\n".join(parts)


def finish(job: Launch, deadline: float) -> dict:
    """Wait for the job until ``deadline`` (``time.perf_counter()``); kill it on expiry.

    Returns:
      ``{"results": {scenario: [dict per process]}, "wall": seconds, "times": {scenario: s}}``.

    Raises:
      RuntimeError: a worker failed or the deadline passed (with the workers' logs).
    """
    try:
        # Poll rather than wait on one worker: when one fails, the others may block in a
        # collective forever, so the job ends at the first failure.
        while any(p.poll() is None for p in job.procs) and not any(p.poll() for p in job.procs):
            if time.perf_counter() > deadline:
                _kill(job)
                raise RuntimeError(f"multihost job {job.scenarios} timed out and was killed\n{_tail(job)}")
            time.sleep(0.05)
        _kill(job)
    finally:
        for log in job.logs:
            log.close()
    wall = time.perf_counter() - job.started
    codes = [p.returncode for p in job.procs]
    if any(codes):
        raise RuntimeError(f"multihost job failed (exit codes {codes})\n{_tail(job)}")
    results, times = {}, {}
    for name in job.scenarios:
        per = []
        for pid in range(job.n_processes):
            with np.load(os.path.join(job.out_dir, f"{name}.p{pid}.npz")) as z:
                per.append({k: z[k] for k in z.files if k != "_seconds"})
                times[name] = float(z["_seconds"])
        results[name] = per
    return {"results": results, "wall": wall, "times": times}


def launch(scenarios, *, n_processes: int = 2, devices_per_process: int = 4, timeout: float = 120.0,
           extra_env: dict | None = None) -> dict:
    """Run ``scenarios`` on one multi-controller job and return its results (see :func:`finish`)."""
    with tempfile.TemporaryDirectory(prefix="multihost-") as d:
        job = start(scenarios, n_processes=n_processes, devices_per_process=devices_per_process,
                    out_dir=d, extra_env=extra_env)
        return finish(job, time.perf_counter() + timeout)


def launch_many(jobs: dict, *, timeout: float = 120.0) -> dict:
    """Run several jobs at once (e.g. the 2-process run and its 1-process reference).

    Args:
      jobs: ``{label: dict(scenarios=..., n_processes=..., devices_per_process=...)}``.
      timeout: one wall-clock limit for all of them together.

    Returns:
      ``{label: finish(...)}``.
    """
    deadline = time.perf_counter() + timeout
    with tempfile.TemporaryDirectory(prefix="multihost-") as d:
        started = {}
        try:
            for label, kw in jobs.items():
                started[label] = start(out_dir=os.path.join(d, label), **kw)
            return {label: finish(job, deadline) for label, job in started.items()}
        finally:
            for job in started.values():
                _kill(job)
