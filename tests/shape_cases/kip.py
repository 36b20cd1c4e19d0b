"""KIP (learned labels, depth-1 NTK) on 2 classes of 4×4 images, 3 outer steps."""


from distill.matching import Data, kip
from tiny_images import tiny_images
from models.kernels import KernelSpec


def case():
    settings = kip.Settings(ipc=2, steps=3, kernel=KernelSpec(depth=1), lam=1e-3, real_batch=8)
    return kip, Data(*tiny_images()), settings
