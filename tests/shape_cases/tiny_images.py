"""Tiny labelled images shared by the matching methods' shape cases."""

import numpy as np


def tiny_images(n_per=6, seed=0):
    """2 classes of 4×4×1 images: a class pattern plus noise."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(2, 4, 4, 1))
    x = np.concatenate([protos[c] + 0.5 * rng.normal(size=(n_per, 4, 4, 1)) for c in range(2)]).astype(np.float32)
    return x, np.repeat(np.arange(2), n_per).astype(np.int32), 2
