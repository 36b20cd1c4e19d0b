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


def test_failed_overwrite_keeps_the_previous_pair(tmp_path):
    export.save(tmp_path / "s", {"x": np.ones(3)}, {"v": 1})
    with pytest.raises(TypeError, match="settings"):
        export.save(tmp_path / "s", {"x": np.zeros(5)}, {"v": object()})
    with pytest.raises(TypeError, match=r"arrays\['o'\]"):
        export.save(tmp_path / "s", {"o": np.array([{}, 1], dtype=object)})
    arrays, settings = export.load(tmp_path / "s")
    np.testing.assert_array_equal(arrays["x"], np.ones(3))
    assert settings == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.npz"]  # no temporaries left


def test_corrupt_truncated_and_mixed_files_name_the_path(tmp_path):
    export.save(tmp_path / "a", {"x": np.arange(100.0)}, {})
    export.save(tmp_path / "b", {"x": np.arange(100.0) + 1}, {})
    npz = tmp_path / "a.npz"
    blob = npz.read_bytes()
    npz.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="a.npz"):
        export.load(tmp_path / "a")
    npz.write_bytes((tmp_path / "b.npz").read_bytes())  # an .npz from another save
    with pytest.raises(ValueError, match="another save"):
        export.load(tmp_path / "a")
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(ValueError, match="b.json"):
        export.load(tmp_path / "b")
    export.save(tmp_path / "c", {"x": np.ones(2)})
    meta = json.loads((tmp_path / "c.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "c.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format_version 99"):
        export.load(tmp_path / "c")
