"""MTT on 2 classes of 4×4 images: one expert of 2 epochs (trained by the method), 3 outer steps."""


from distill.matching import mtt
from tiny_images import tiny_images
from models.mlp import mlp


def case():
    settings = mtt.Settings(ipc=2, steps=3, model=mlp(2, hidden=(8,)), student_lr=1e-2, syn_steps=2, expert_epochs=1,
                            n_experts=1, expert_train_epochs=2, expert_batch_size=4, expert_lr=1e-2,
                            mode="unrolled")
    x, y, n_classes = tiny_images()
    return mtt, mtt.Data(x, y, n_classes), settings
