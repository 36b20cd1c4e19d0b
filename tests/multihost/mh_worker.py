"""One process of a multi-controller job (started by ``mh_harness``).

Sets the fake device count before jax is imported, joins the job with
``jax.distributed.initialize`` (gloo CPU collectives), builds the global 1-d mesh
with ``distill.parallel.make_mesh`` and runs the requested scenarios. A result leaf
that spans other processes' devices is gathered with ``process_allgather`` before it
is written, so every process writes the full global value.
"""

import argparse
import os
import sys
import time
import traceback


def _args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--process-id", type=int, required=True, help="this process's index")
    p.add_argument("--num-processes", type=int, required=True, help="processes in the job")
    p.add_argument("--devices", type=int, required=True, help="fake CPU devices of this process")
    p.add_argument("--port", type=int, required=True, help="coordinator port on 127.0.0.1")
    p.add_argument("--out", required=True, help="folder for results (shared/ inside is common to all)")
    p.add_argument("--scenarios", required=True, help="comma-separated names from mh_scenarios")
    return p.parse_args()


def main() -> None:
    args = _args()
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}".strip()
    import jax

    if args.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{args.port}", num_processes=args.num_processes,
                                   process_id=args.process_id, initialization_timeout=60)
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    from jax.experimental import multihost_utils

    import mh_scenarios
    from distill import parallel

    mesh = parallel.make_mesh()
    assert mesh.size == args.num_processes * args.devices, mesh
    ctx = mh_scenarios.Context(mesh=mesh, shared_dir=os.path.join(args.out, "shared"))

    def to_numpy(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    for name in args.scenarios.split(","):
        t0 = time.perf_counter()
        try:
            out = getattr(mh_scenarios, name)(ctx)
            out = {k: to_numpy(v) for k, v in out.items()}
        except Exception:
            traceback.print_exc()
            sys.stdout.flush()
            # The other processes may now wait forever in a collective: exit at once and
            # let the harness's timeout end them.
            os._exit(1)
        np.savez(os.path.join(args.out, f"{name}.p{args.process_id}.npz"),
                 _seconds=time.perf_counter() - t0, **out)
        print(f"{name}: {time.perf_counter() - t0:.2f}s", flush=True)
    if args.num_processes > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
