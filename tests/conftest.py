"""Shared test helpers.

``multidevice`` runs a module-level test function in a fresh interpreter with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``: the flag must be set before
jax is imported, which the pytest process has already done. The function does its
own assertions (typically: sharded result == single-device result); a failure in the
child fails the calling test with the child's traceback.
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

# One persistent compilation cache per test run, shared by the xdist workers and the
# multi-device child processes: many tests compile the same computations (the same
# objective at the same shapes), and a cache hit loads the executable XLA built the
# first time, so results are those of a fresh compilation. The folder is removed at the
# end of the run; a user's own JAX_COMPILATION_CACHE_DIR is left alone.
_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_OWN_CACHE = "DISTILL_TESTS_OWN_COMPILATION_CACHE"


# Test programs are small and each is compiled once, so compilation is most of the run.
# Three flags shorten it: skipping LLVM's expensive passes, LLVM optimisation level 1, and
# XLA's older loop emitters instead of the MLIR fusion emitters (the last alone takes a
# third off the compilation of a small program). ∞-AE's float64 NTK predictions stay
# bit-identical; float32 gradient programs (DC's objective through an MLP or a ConvNet)
# move in the last bits, at most 3e-7 relative, inside every tolerance used here. Level 0
# would save more, but it computes the float64 NTK 4e-9 (relative) away from numpy,
# enough to fail a finite-difference test. Flags a user sets are kept.
_FAST_COMPILE = ("--xla_llvm_disable_expensive_passes=true", "--xla_backend_optimization_level=1",
                 "--xla_cpu_use_fusion_emitters=false")


def _fast_compile_flags(flags: str) -> str:
    have = {f.split("=")[0] for f in flags.split()}
    return " ".join([flags, *(f for f in _FAST_COMPILE if f.split("=")[0] not in have)]).strip()


def pytest_configure(config):
    os.environ["XLA_FLAGS"] = _fast_compile_flags(os.environ.get("XLA_FLAGS", ""))
    if _CACHE_ENV not in os.environ:  # the controller (or a run without xdist) creates it
        os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="distill-tests-jax-cache-")
        os.environ[_OWN_CACHE] = os.environ[_CACHE_ENV]
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    own = os.environ.get(_OWN_CACHE)
    if own and not hasattr(config, "workerinput"):  # the controller removes what it created
        shutil.rmtree(own, ignore_errors=True)

_CHILD = textwrap.dedent(
    """
    import importlib.util, sys
    import jax
    assert jax.device_count() == {n}, jax.devices()
    spec = importlib.util.spec_from_file_location("_multidevice_test", {path!r})
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    getattr(mod, {name!r})()
    print("MULTIDEVICE_OK")
    """
)


def run_multidevice(func, n_devices: int = 8, timeout: float = 900) -> str:
    """Run ``func()`` (defined at module level in a test file) on ``n_devices`` fake CPUs."""
    path = inspect.getsourcefile(func)
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n_devices}"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD.format(n=n_devices, path=path, name=func.__name__)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0 or "MULTIDEVICE_OK" not in proc.stdout:
        pytest.fail(
            f"{func.__name__} failed on {n_devices} devices (rc={proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc.stdout


@pytest.fixture
def multidevice():
    """The :func:`run_multidevice` runner, as a fixture."""
    return run_multidevice


def _precision_fixture(enabled: bool):
    def fixture():
        import jax

        previous = jax.config.jax_enable_x64
        jax.config.update("jax_enable_x64", enabled)
        yield
        jax.config.update("jax_enable_x64", previous)

    return fixture


# Precision is set per test, before any of its fixtures are built: float64 for tests
# marked ``x64`` (modules comparing to 1e-6 and tighter carry ``pytestmark =
# pytest.mark.x64``), float32 (what users run) for all others. Setting it at module
# import instead would switch float64 on for the whole run, because pytest imports
# every module before running the first test.
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    import jax

    jax.config.update("jax_enable_x64", item.get_closest_marker("x64") is not None)


# A test that asks for the ``multidevice`` fixture starts its own interpreter on 8 fake
# devices (a few seconds each for the start and the 8-device compilations). It is marked
# ``multidevice`` and, like ``slow``, left out of the default run: ``-m multidevice`` runs
# these tests (the CI script does, after the default run).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "multidevice" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.multidevice)


# These fixtures switch the precision for one test of a module marked otherwise.
x64 = pytest.fixture(_precision_fixture(True))
x32 = pytest.fixture(_precision_fixture(False))
