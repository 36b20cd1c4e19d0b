"""Datasets and preprocessing (numpy in, numpy out; convert with ``jnp.asarray``).

* Recommendation (dissertation Ch. 3): :mod:`~distill.data.interactions`,
  :mod:`~distill.data.movielens`, :mod:`~distill.data.splits`.
* Sequential data (dissertation Ch. 4, Farzi): :mod:`~distill.data.sequences`
  (SASRec-style item sequences), :mod:`~distill.data.ptb` (Penn Treebank).
* Images: :mod:`~distill.data.images`, :mod:`~distill.data.idx` (MNIST-format files,
  Fashion-MNIST).
"""

from distill.data.images import (
    TFDS_IMAGE_DATASETS,
    ImageData,
    class_balanced_subset,
    load_digits,
    load_tfds_images,
    standardize,
)
from distill.data.idx import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ROOT,
    load_fashion_mnist,
    load_idx,
    load_idx_dataset,
    load_idx_images,
    load_idx_labels,
)
from distill.data.interactions import (
    Interactions,
    filter_min_interactions,
    from_arrays,
    latest_per_pair,
    to_dense,
    to_implicit,
)
from distill.data.movielens import (
    TFDS_MOVIELENS_CONFIGS,
    load,
    load_ml1m,
    load_ml100k,
    load_movielens_small,
    load_tfds_movielens,
)
from distill.data.ptb import EOS, UNK, Corpus, lm_windows, load_ptb, tokenize
from distill.data.sequences import Sequences, leave_last_out, next_token_pairs, user_sequences
from distill.data.splits import Split, iterate_batches, random_split, temporal_split

__all__ = [
    # idx (MNIST-format files)
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ROOT",
    "load_fashion_mnist",
    "load_idx",
    "load_idx_dataset",
    "load_idx_images",
    "load_idx_labels",
    # interactions
    "Interactions",
    "from_arrays",
    "to_implicit",
    "filter_min_interactions",
    "to_dense",
    "latest_per_pair",
    # movielens
    "load_movielens_small",
    "load_ml100k",
    "load_ml1m",
    "load_tfds_movielens",
    "load",
    "TFDS_MOVIELENS_CONFIGS",
    # splits
    "Split",
    "random_split",
    "temporal_split",
    "iterate_batches",
    # sequences
    "Sequences",
    "user_sequences",
    "leave_last_out",
    "next_token_pairs",
    # ptb
    "Corpus",
    "load_ptb",
    "tokenize",
    "lm_windows",
    "UNK",
    "EOS",
    # images
    "ImageData",
    "load_digits",
    "load_tfds_images",
    "standardize",
    "class_balanced_subset",
    "TFDS_IMAGE_DATASETS",
]
