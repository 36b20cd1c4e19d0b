"""Multi-controller runs (2 processes × 4 CPU devices = one 8-device mesh) equal one process.

Every scenario of ``mh_scenarios`` runs on a global mesh spanning two processes that
talk through ``jax.distributed`` (gloo collectives), as hosts of a TPU pod slice or a
GPU cluster do. The checks: both processes hold the same (gathered) result, and it
equals the same quantity without a mesh (computed in the worker, keys ``*_plain``),
analytically known values, or, for the slow scenarios, a fresh single-process run on
8 devices. The default run starts one job for all fast scenarios.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Each job starts real processes (~30 s): run by `.ci/run` as its own step, and with `-m slow`.
pytestmark = pytest.mark.slow

import mh_harness  # noqa: E402
import mh_scenarios  # noqa: E402

# x64 throughout; a sharded sum adds per-device partial sums in another order.
RTOL = 1e-10


@pytest.fixture(scope="module")
def fast():
    return mh_harness.launch(mh_scenarios.FAST, n_processes=2, devices_per_process=4, timeout=300)["results"]


def _one(per_process: list) -> dict:
    """The result of process 0, after checking every process wrote the same arrays."""
    assert len(per_process) == 2
    first = per_process[0]
    for other in per_process[1:]:
        assert sorted(other) == sorted(first)
        for k in first:
            np.testing.assert_array_equal(other[k], first[k], err_msg=k)
    return first


def _close_to_plain(r: dict, rtol: float = RTOL, atol: float = 0.0) -> None:
    plain = [k for k in r if k.endswith("_plain")]
    assert plain
    for k in plain:
        np.testing.assert_allclose(r[k[: -len("_plain")]], r[k], rtol=rtol, atol=atol, err_msg=k)


@pytest.mark.slow
def test_harness_kills_a_job_that_outlives_its_timeout(tmp_path):
    job = mh_harness.start(["hang"], n_processes=2, devices_per_process=1, out_dir=str(tmp_path))
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="timed out and was killed"):
        mh_harness.finish(job, t0 + 8.0)
    assert time.perf_counter() - t0 < 20.0
    assert [p.returncode for p in job.procs] == [-9, -9]  # SIGKILL, both reaped


def test_two_processes_form_one_mesh_and_shard_rows(fast):
    per = fast["shard_rows"]
    assert [p["process"].tolist() for p in per] == [[0, 2, 4, 8], [1, 2, 4, 8]]
    # 16 rows: 2 per device, process 0 owns devices 0-3. 13 rows: ⌈13/8⌉ = 2 per device,
    # so process 1 holds rows 8..12 (its last device only padding).
    assert [p["range_16"].tolist() for p in per] == [[0, 8], [8, 16]]
    assert [p["range_13"].tolist() for p in per] == [[0, 8], [8, 13]]
    r = _one([{k: v for k, v in p.items() if not k.startswith(("range", "process"))} for p in per])
    assert bool(r["sharded_16"]) and not bool(r["sharded_13"])  # ragged: replicated
    w = np.random.default_rng(2).normal(size=(5, 3))
    for n in (16, 13):
        x = mh_scenarios.matrix(n)
        np.testing.assert_array_equal(r[f"x_{n}"], x)
        np.testing.assert_allclose(r[f"map_{n}"], np.tanh(x @ w), rtol=1e-13)
        t = np.tanh(x @ w)
        np.testing.assert_allclose(r[f"loss_{n}"], np.sum(t**2), rtol=1e-12)
        np.testing.assert_allclose(r[f"grad_{n}"], x.T @ (2 * t * (1 - t**2)), rtol=1e-11)


def _check_gram(r: dict) -> None:
    # On the diagonal cos θ = 1, where arccos has infinite slope: a last-bit difference in
    # cos θ (another summation order) moves K by ~√ε; elsewhere the kernels agree to ε.
    off = ~np.eye(r["ntk"].shape[0], dtype=bool)
    for k in ("ntk", "nngp"):
        if k in r:
            np.testing.assert_allclose(r[k][off], r[k + "_plain"][off], rtol=1e-12, err_msg=k)
            np.testing.assert_allclose(np.diag(r[k]), np.diag(r[k + "_plain"]), rtol=1e-7, err_msg=k)


def test_ntk_gram_and_apply(fast):
    r = _one(fast["ntk"])
    assert r["ntk"].shape == (24, 24) and r["apply"].shape == (11, 4)
    _check_gram(r)
    # x[:11] are support rows too: their diagonal terms carry the ~√ε above (entries are O(1))
    np.testing.assert_allclose(r["apply"], r["apply_plain"], rtol=1e-7, atol=1e-7)


def test_ntk_of_rows_no_process_holds(fast):
    r = _one(fast["ntk_sharded_input"])
    # Value checks skip arrays sharded over processes (no process can read them whole).
    assert "error" not in r, r.get("error")
    _check_gram(r)


def test_dm_objective_and_gradient(fast):
    r = _one(fast["dm"])
    assert r["value"] > 0 and np.abs(r["grad"]).max() > 0
    _close_to_plain(r, rtol=1e-10, atol=1e-14)


def test_el2n_scores(fast):
    r = _one(fast["el2n"])
    assert r["el2n"].shape == (21,) and np.all((r["el2n"] >= 0) & (r["el2n"] <= np.sqrt(2)))
    _close_to_plain(r, rtol=1e-12)


def test_inverse_auc(fast):
    r = _one(fast["inverse_auc"])
    assert r["iauc"].shape == (29,)
    np.testing.assert_array_equal(r["iauc"], r["iauc_plain"])  # counts: exact


def test_checkpoint_resume_over_processes(fast):
    r = {k: v for k, v in _one(fast["checkpoint_resume"]).items() if not k.startswith("host_init")}
    assert int(r["saved_step"]) == 4
    np.testing.assert_array_equal(r["resumed"], r["full"])
    np.testing.assert_array_equal(r["losses"], r["full_losses"])  # the history is checkpointed too
    np.testing.assert_allclose(r["full"], r["full_plain"], rtol=1e-12)
    # 8 Adam steps of size 0.1 from 0 towards the column means, all moving the same way
    mean = mh_scenarios.matrix(16, 3, seed=7).mean(axis=0)
    assert np.all(np.sign(r["full"]) == np.sign(mean)) and np.all(np.abs(r["full"]) <= 0.8 + 1e-12)


def test_checkpoint_of_host_initial_parameters(fast):
    r = _one(fast["checkpoint_resume"])
    # loop.run replicates host-local parameters over the global mesh before checkpointing.
    assert "host_init_error" not in r, r.get("host_init_error")
    np.testing.assert_allclose(r["host_init"], r["full_plain"], rtol=1e-12)


@pytest.fixture(scope="module")
def slow():
    jobs = {
        "multi": dict(scenarios=mh_scenarios.SLOW, n_processes=2, devices_per_process=4),
        "single": dict(scenarios=mh_scenarios.SLOW, n_processes=1, devices_per_process=8),
    }
    out = mh_harness.launch_many(jobs, timeout=600)
    return out["multi"]["results"], out["single"]["results"]


def _equal_to_single(multi: dict, single: dict, name: str) -> dict:
    r, ref = _one(multi[name]), single[name][0]
    assert sorted(r) == sorted(ref)
    for k in r:
        # The same programs on the same 8-device mesh; only the collectives' summation
        # order may differ. Adam's first steps divide by |g|, so a gradient entry near 0
        # turns a last-bit difference into ~1e-9 of the learning rate in Γ.
        np.testing.assert_allclose(r[k], ref[k], rtol=1e-9, atol=1e-8, err_msg=f"{name}.{k}")
    return r


@pytest.mark.slow
def test_select_lambda_equals_single_process(slow):
    r = _equal_to_single(*slow, "select_lambda")
    np.testing.assert_allclose(r["values"], r["values_plain"], rtol=1e-12)
    np.testing.assert_allclose(r["alpha"], r["alpha_plain"], rtol=1e-7, atol=1e-10)
    assert float(r["best_lam"]) in (0.3, 3.0, 30.0)


@pytest.mark.slow
def test_distill_cf_steps_equal_single_process(slow):
    r = _equal_to_single(*slow, "distill_cf")
    assert r["losses"].shape == (3,) and np.all(np.isfinite(r["losses"])) and r["eval_values"].shape == (1,)


@pytest.mark.slow
def test_distill_cf_resumes_from_a_shared_checkpoint(slow):
    multi, single = slow
    ref = single["distill_cf_resume"][0]
    np.testing.assert_array_equal(ref["logits"], ref["full_logits"])  # one process: resume is exact
    r = _one(multi["distill_cf_resume"])
    assert "error" not in r, r.get("error")
    _equal_to_single(multi, single, "distill_cf_resume")
    np.testing.assert_array_equal(r["logits"], r["full_logits"])
