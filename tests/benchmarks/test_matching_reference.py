"""benchmarks.matching_reference: the reference checkout is imported with its two PyTorch ≥ 2 mends, unchanged on disk."""

import sys

import pytest

from benchmarks import matching_reference as bench

NETWORKS = """\
class ConvNet:
    def embed(self, out):
        out = out.view(out.size(0), -1)
        return out
"""
UTILS = """\
from networks import ConvNet

def siamese(theta):
    theta[:] = theta[0]
    return theta
"""


def test_load_reference_mends_a_copy(tmp_path):
    (tmp_path / "networks.py").write_text(NETWORKS)
    (tmp_path / "utils.py").write_text(UTILS)
    networks, utils = bench.load_reference(tmp_path)
    assert "out.reshape(out.size(0), -1)" in open(networks.__file__).read()
    assert "theta[:] = theta[0].clone()" in open(utils.__file__).read()
    assert utils.ConvNet is networks.ConvNet  # utils imported the mended networks
    assert "networks" not in sys.modules and "utils" not in sys.modules  # nothing left registered
    assert (tmp_path / "utils.py").read_text() == UTILS and (tmp_path / "networks.py").read_text() == NETWORKS


def test_load_reference_refuses_another_version(tmp_path):
    (tmp_path / "networks.py").write_text("class ConvNet:\n    pass\n")
    (tmp_path / "utils.py").write_text(UTILS)
    with pytest.raises(ValueError, match="--reference"):
        bench.load_reference(tmp_path)


def test_flags_are_checked():
    args = bench.parse_args(["--reference", "ref"])
    assert (args.ipc, args.iters, args.batch_real, args.lr_img, args.name) == (
        1, 2000, 256, 1.0, "matching_reference_dm_digits_ipc1")  # main_DM.py's batch and lr; 2,000 iterations
    for flag in ("--iters", "--num-eval", "--ipc"):
        with pytest.raises(ValueError, match=flag):
            bench.parse_args(["--reference", "ref", flag, "-1"])
