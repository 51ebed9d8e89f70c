"""The data shipped inside the package: a class-balanced subset of Fashion-MNIST, and the embedded data sets' names.

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, https://github.com/zalandoresearch/fashion-mnist) is
(c) 2017 Zalando SE and released under the MIT licence. 28x28 greyscale photos of clothing in 10 classes:
0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot.

The shipped subset (``fashion_mnist_subset.npz``, about 3 MB) holds the first 600 images of each class of the
original train file and the first 100 of each class of the original test file (6,000 + 1,000 images);
``scripts/build_fmnist_subset.py`` rebuilds identical arrays from the Debian package
``dataset-fashion-mnist``. Zero-shot metric-learning split: classes 0-4 train, 5-9 test (3,500 images each).

Two data sets load by name without any file of the user's (:data:`gsp_hub.data.loading.EMBEDDED_DATASETS`):
``"fashion-collage"`` (:mod:`gsp_hub.data.fashion_collage`, built from this subset and MNIST digits; the default
of ``gsp-hub train``) and ``"fashion-mnist-subset"`` (this subset, :func:`load_fashion_mnist_subset`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, Image

__all__ = [
    "DEFAULT_DATASET_NAME",
    "FASHION_COLLAGE_NAME",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SUBSET_NAME",
    "FASHION_MNIST_SUBSET_PATH",
    "load_fashion_mnist_subset",
]

FASHION_MNIST_SUBSET_NAME = "fashion-mnist-subset"
FASHION_COLLAGE_NAME = "fashion-collage"
DEFAULT_DATASET_NAME = FASHION_COLLAGE_NAME  # what load_image_dataset(None) and `gsp-hub train` load
FASHION_MNIST_SUBSET_PATH = Path(__file__).with_name("fashion_mnist_subset.npz")
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

_INFO = dict(
    description=(
        "Class-balanced subset of Fashion-MNIST shipped with gsp_hub: 600 train-file and 100 test-file images "
        "per class, 28x28 greyscale, 10 classes. Zero-shot split: classes 0-4 train, 5-9 test."
    ),
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    license="MIT (c) 2017 Zalando SE",
    citation=(
        "@article{xiao2017fashion, title={Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning "
        "Algorithms}, author={Xiao, Han and Rasul, Kashif and Vollgraf, Roland}, journal={arXiv:1708.07747}, "
        "year={2017}}"
    ),
)


def load_fashion_mnist_subset() -> DatasetDict:
    """The embedded subset as ``DatasetDict(train=6000 rows, test=1000 rows)``.

    Features: ``image`` (``datasets.Image``, 28x28 mode ``L``) and ``label`` (``ClassLabel`` with the 10
    Fashion-MNIST names). Kept in memory, nothing is written to disk.
    """
    features = Features({"image": Image(), "label": ClassLabel(names=list(FASHION_MNIST_CLASSES))})
    with np.load(FASHION_MNIST_SUBSET_PATH) as arrays:
        splits = {
            split: Dataset.from_dict(
                {
                    "image": [{"bytes": pgm_bytes(image), "path": None} for image in arrays[f"{split}_images"]],
                    "label": arrays[f"{split}_labels"].astype(np.int64),
                },
                features=features,
                info=DatasetInfo(features=features, **_INFO),
                split=split,
            )
            for split in ("train", "test")
        }
    return DatasetDict(splits)


def pgm_bytes(image: np.ndarray) -> bytes:
    """A uint8 (H, W) array as a binary PGM file: an image format PIL reads, written with no encoder (fast)."""
    height, width = image.shape
    return b"P5 %d %d 255\n" % (width, height) + image.tobytes()
