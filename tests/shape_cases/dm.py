"""DM on 2 classes of 4×4 images with a small random MLP embedding, 3 outer steps."""


from distill.matching import Data, dm
from tiny_images import tiny_images
from models.mlp import mlp


def case():
    settings = dm.Settings(ipc=2, steps=3, embed=mlp(2, hidden=(8,), features_only=True), real_batch=4)
    return dm, Data(*tiny_images()), settings
