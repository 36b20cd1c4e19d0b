"""Export round trip, loadable with numpy alone, and corruption detection."""

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from distill import export


def test_round_trip_and_numpy_only_loading(tmp_path):
    arrays = {"x": jnp.arange(6.0).reshape(2, 3), "ids": np.array([5, 9], np.int32)}
    settings = {"method": "test", "tau": np.float32(0.5), "grid": (1, 2), "m": np.eye(2)}
    npz = export.save(tmp_path / "syn", arrays, settings)
    assert npz.name == "syn.npz" and (tmp_path / "syn.json").exists()
    got, s = export.load(tmp_path / "syn.npz")
    np.testing.assert_array_equal(got["x"], np.arange(6.0).reshape(2, 3))
    assert got["ids"].dtype == np.int32
    assert s == {"method": "test", "tau": 0.5, "grid": [1, 2], "m": [[1.0, 0.0], [0.0, 1.0]]}
    # A fresh interpreter that only has numpy + json reads the files without the library.
    code = (
        "import sys, json, numpy as np; sys.modules['jax'] = None; "
        f"z = np.load({str(npz)!r}); m = json.load(open({str(tmp_path / 'syn.json')!r})); "
        "assert z['x'].shape == (2, 3) and m['settings']['method'] == 'test'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_mismatch_detected(tmp_path):
    export.save(tmp_path / "a", {"x": np.ones((2, 2))}, {})
    meta = json.loads((tmp_path / "a.json").read_text())
    meta["arrays"]["x"]["shape"] = [4]
    (tmp_path / "a.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="'x'"):
        export.load(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="path"):
        export.load(tmp_path / "missing")


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="arrays"):
        export.save(tmp_path / "b", {}, {})
    with pytest.raises(TypeError, match="arrays"):
        export.save(tmp_path / "b", {"x": [1, 2]}, {})
    with pytest.raises(TypeError, match="path"):
        export.save(3, {"x": np.ones(2)})
