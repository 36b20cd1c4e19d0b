"""MTT on 2 classes of 4×4 images: one expert of 2 epochs, 3 outer steps."""

import jax

from distill.matching import mtt
from tiny_images import tiny_images
from models.mlp import mlp


def case():
    settings = mtt.Settings(ipc=2, steps=3, model=mlp(2, hidden=(8,)), student_lr=1e-2, syn_steps=2, expert_epochs=1,
                            n_experts=1, expert_train_epochs=2, expert_batch_size=4, expert_lr=1e-2,
                            mode="unrolled")
    data = mtt.Data(*tiny_images())
    # Experts trained once here (distill would train them itself when data.experts is None).
    return mtt, data._replace(experts=mtt.expert_trajectories(jax.random.key(1), data, settings)), settings
