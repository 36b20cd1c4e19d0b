"""distill.data.interactions.add_false_positives: exact counts, existing entries untouched, determinism."""

import numpy as np
import pytest

from distill.data.interactions import add_false_positives


def _matrix(seed=0, n=20, items=50, density=0.2):
    return (np.random.default_rng(seed).random((n, items)) < density).astype(np.float32)


def test_adds_exactly_round_fraction_items_per_user_and_keeps_every_existing_one():
    x = _matrix()
    out = add_false_positives(x, 0.1, seed=3)
    added = out - x
    assert out.dtype == x.dtype and set(np.unique(out)) <= {0.0, 1.0}
    assert np.all(added >= 0)                                   # nothing removed
    np.testing.assert_array_equal(added.sum(1), np.full(20, 5.0))  # round(0.1 · 50) = 5 per user
    np.testing.assert_array_equal(out[x == 1], 1.0)             # existing entries untouched


def test_exclude_mask_is_never_touched_and_the_count_caps_at_the_free_items():
    x = _matrix(1)
    exclude = _matrix(2, density=0.3) * (1 - x)
    out = add_false_positives(x, 0.2, seed=0, exclude=exclude)
    assert not np.any((out - x)[exclude == 1])
    np.testing.assert_array_equal((out - x).sum(1), np.full(20, 10.0))
    x = np.zeros((2, 6), np.float32)
    x[0, :4] = 1
    out = add_false_positives(x, 1.0, seed=0)                   # asks for 6; user 0 has only 2 free
    np.testing.assert_array_equal(out, np.ones((2, 6)))


def test_zero_fraction_is_identity_same_seed_same_noise_other_seed_other_noise():
    x = _matrix()
    np.testing.assert_array_equal(add_false_positives(x, 0.0), x)
    a, b, c = (add_false_positives(x, 0.1, seed=s) for s in (4, 4, 5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_noise_is_uniform_over_the_free_items():
    x = np.zeros((4000, 10), np.float32)
    x[:, 0] = 1
    freq = (add_false_positives(x, 0.2, seed=0) - x).mean(0)   # 2 of the 9 free items per user
    np.testing.assert_allclose(freq[1:], 2 / 9, atol=0.02)
    assert freq[0] == 0


@pytest.mark.parametrize("kwargs, err", [
    (dict(fraction=1.5), "fraction"), (dict(fraction=-0.1), "fraction"), (dict(fraction=0.1, seed=-1), "seed"),
])
def test_bad_arguments_name_themselves(kwargs, err):
    with pytest.raises(ValueError, match=err):
        add_false_positives(_matrix(), **kwargs)


def test_non_binary_inputs_are_refused():
    x = _matrix()
    with pytest.raises(ValueError, match="x: expected a binary"):
        add_false_positives(x * 2, 0.1)
    with pytest.raises(ValueError, match="exclude: expected a binary"):
        add_false_positives(x, 0.1, exclude=x * 3)
    with pytest.raises(ValueError, match="exclude: expected shape"):
        add_false_positives(x, 0.1, exclude=x[:3])
    with pytest.raises(ValueError, match="x: expected a 2-d"):
        add_false_positives(x[0], 0.1)
