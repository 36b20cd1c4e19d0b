"""Which checkpoints each |Ω| setting of the Farzi ablation uses (Fig. 4.6b)."""

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.farzi_ablation import CHECKPOINTS_PER_RUN, select_omega


def _omega5():
    # entry 5 r + s/100 holds (run r, step s), as load_or_pretrain_omega orders Ω
    ids = jnp.arange(5 * CHECKPOINTS_PER_RUN)
    return {"run": ids // CHECKPOINTS_PER_RUN, "step": 100 * (ids % CHECKPOINTS_PER_RUN)}


@pytest.mark.parametrize("k", [1, 2, 5])
def test_k_trajectories_are_whole_runs(k):
    om = select_omega(_omega5(), k)
    np.testing.assert_array_equal(om["run"], np.repeat(np.arange(k), CHECKPOINTS_PER_RUN))
    np.testing.assert_array_equal(om["step"], np.tile(100 * np.arange(CHECKPOINTS_PER_RUN), k))


def test_zero_trajectories_are_the_random_inits():
    om = select_omega(_omega5(), 0)
    np.testing.assert_array_equal(om["run"], np.arange(5))
    np.testing.assert_array_equal(om["step"], np.zeros(5))
