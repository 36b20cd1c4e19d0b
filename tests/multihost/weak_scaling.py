"""Weak scaling of the row-sharded patterns over 1 → 2 processes on this machine.

Runs ``mh_scenarios.weak_scaling`` (a ``sum_rows`` value-and-gradient and ∞-AE's
``NTK(Q, S) α`` prediction, a fixed number of rows per process) once with one
process and once with two, each process with one CPU device and XLA limited to one
thread, so that two processes could in principle use two cores without sharing.
Reports wall time and, since this machine's cores are shared, CPU time per process
(what a step costs regardless of the other work). Writes
``<out>/multihost_weak_scaling.json`` (hardware, versions, wall time) and
prints a table. Run from the repository root::

    python tests/multihost/weak_scaling.py --rows 4096
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import mh_harness  # noqa: E402

from benchmarks._common import output_dir, parser, write_result  # noqa: E402

SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
WORKLOADS = ("sum_rows_grad", "ntk_predict")


def main() -> None:
    p = parser("multihost_weak_scaling", __doc__)
    p.prog = "python tests/multihost/weak_scaling.py"
    p.add_argument("--rows", type=int, default=4096, help="rows per process (the same at 1 and 2 processes)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per workload (best is kept)")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="process counts to run")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per job before it is killed")
    args = p.parse_args()
    t0 = time.perf_counter()
    rows = []
    for n_proc in args.processes:
        env = {"XLA_FLAGS": SINGLE_THREAD, "MH_ROWS": str(args.rows), "MH_REPEATS": str(args.repeats)}
        res = mh_harness.launch(["weak_scaling"], n_processes=n_proc, devices_per_process=1,
                                timeout=args.timeout, extra_env=env)["results"]["weak_scaling"]
        row = {"processes": n_proc, "global_rows": args.rows * n_proc}
        for k in WORKLOADS:
            # a step ends when its slowest process does; CPU time is per process
            row[k + "_wall_s"] = max(float(r[k + "_s"][0]) for r in res)
            row[k + "_cpu_s"] = max(float(r[k + "_s"][1]) for r in res)
        rows.append(row)
    for r in rows:
        for k in WORKLOADS:
            for t in ("wall", "cpu"):
                r[f"{k}_{t}_efficiency"] = rows[0][f"{k}_{t}_s"] / r[f"{k}_{t}_s"]
    print("| processes | global rows | sum_rows value+grad wall / CPU (ms) | efficiency wall / CPU "
          "| NTK predict wall / CPU (ms) | efficiency wall / CPU |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r['processes']}", f"{r['global_rows']}"]
        for k in WORKLOADS:
            cells.append(f"{1e3 * r[k + '_wall_s']:.1f} / {1e3 * r[k + '_cpu_s']:.1f}")
            cells.append(f"{r[k + '_wall_efficiency']:.2f} / {r[k + '_cpu_efficiency']:.2f}")
        print("| " + " | ".join(cells) + " |")
    config = {"rows_per_process": args.rows, "repeats": args.repeats, "devices_per_process": 1,
              "xla_flags": SINGLE_THREAD, "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}
    path = write_result("multihost_weak_scaling", config, rows, time.perf_counter() - t0, out_dir=output_dir(args))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
