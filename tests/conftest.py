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
import subprocess
import sys
import textwrap

import pytest

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


# Some test modules switch float64 on at import; these fixtures set the precision for
# one test and restore whatever was there before, so tests never leak it to others.
x64 = pytest.fixture(_precision_fixture(True))
x32 = pytest.fixture(_precision_fixture(False))
