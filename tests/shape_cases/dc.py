"""DC on 2 classes of 4×4 images, a one-layer MLP, 3 outer steps."""


from distill.matching import Data, dc
from tiny_images import tiny_images
from models.mlp import mlp


def case():
    settings = dc.Settings(ipc=2, steps=3, model=mlp(2, hidden=(8,)), inner_steps=1, real_batch=4)
    return dc, Data(*tiny_images()), settings
