"""Fashion-Collage, the embedded default data set: deterministic, label tiles only from label classes, digits as the
only nuisance, class-disjoint splits that the zero-shot protocol keeps as they are (checked on the pixels)."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image
import pytest
from datasets import DatasetDict, Image

from gsp_hub.data import (
    DEFAULT_DATASET_NAME,
    FASHION_COLLAGE_SPLITS,
    FASHION_MNIST_SUBSET_PATH,
    TARGET_CELL_COLUMN,
    is_embedded_source,
    load_fashion_collage,
    load_image_dataset,
    make_splits,
)
from gsp_hub.data.fashion_collage import FASHION_COLLAGE_CELL_SIZE, MNIST_DIGITS_PATH

TILE = 28
MARGIN = (FASHION_COLLAGE_CELL_SIZE - TILE) // 2


@pytest.fixture(scope="module")
def collages() -> DatasetDict:
    return load_fashion_collage()


def raw_split(collages: DatasetDict, split: str) -> dict[str, list]:
    """A split's columns with the images as encoded bytes."""
    return collages[split].cast_column("image", Image(decode=False)).to_dict()


def cells_of(encoded: bytes) -> list[np.ndarray]:
    """The four (32, 32) cells of a 64x64 collage, row-major."""
    pixels = np.asarray(PIL.Image.open(io.BytesIO(encoded)))
    assert pixels.shape == (2 * FASHION_COLLAGE_CELL_SIZE, 2 * FASHION_COLLAGE_CELL_SIZE)
    size = FASHION_COLLAGE_CELL_SIZE
    return [pixels[size * row: size * (row + 1), size * col: size * (col + 1)] for row in (0, 1) for col in (0, 1)]


def test_the_same_bytes_on_every_build_and_another_seed_differs(collages: DatasetDict) -> None:
    again = load_fashion_collage()
    for split in collages:
        assert raw_split(collages, split) == raw_split(again, split), split
    other = raw_split(load_fashion_collage(seed=1), "test")
    assert other["label"] == raw_split(collages, "test")["label"]  # the same label tiles, in class order ...
    assert other["image"] != raw_split(collages, "test")["image"]  # ... in other cells, with other digits


def test_sizes_columns_and_class_disjoint_splits(collages: DatasetDict) -> None:
    assert {name: len(rows) for name, rows in collages.items()} == {"train": 7200, "validation": 1800, "test": 900}
    classes = {name: set(rows["label"]) for name, rows in collages.items()}
    assert classes == {"train": {0, 1, 2, 3}, "validation": {4, 5, 6}, "test": {7, 8, 9}}
    assert not classes["test"] & (classes["train"] | classes["validation"])
    for rows in collages.values():
        assert rows.column_names == ["image", "label", TARGET_CELL_COLUMN]
        assert np.bincount(rows[TARGET_CELL_COLUMN], minlength=4).min() > 0.15 * len(rows)  # every cell is used
    assert (FASHION_MNIST_SUBSET_PATH.stat().st_size + MNIST_DIGITS_PATH.stat().st_size) < 10 * 1024 * 1024


def test_label_tiles_are_label_class_images_and_every_other_tile_an_mnist_digit(collages: DatasetDict) -> None:
    with np.load(FASHION_MNIST_SUBSET_PATH) as fashion, np.load(MNIST_DIGITS_PATH) as mnist:
        fashion_images, fashion_labels = fashion["train_images"], fashion["train_labels"]
        digits, digit_labels = mnist["images"], mnist["labels"]
    fashion_tiles = {tile.tobytes() for tile in fashion_images}
    used_digits = {}
    for name, spec in FASHION_COLLAGE_SPLITS.items():
        rows = raw_split(collages, name)
        # the split's digit rows: rows spec.digit_rows of each digit's images, in file order
        allowed = {digits[np.flatnonzero(digit_labels == d)[r]].tobytes() for d in range(10) for r in spec.digit_rows}
        seen_labels = {label: [] for label in spec.label_classes}
        used_digits[name] = set()
        for image, label, target in zip(rows["image"], rows["label"], rows[TARGET_CELL_COLUMN], strict=True):
            for cell, pixels in enumerate(cells_of(image["bytes"])):
                centre = pixels[MARGIN: MARGIN + TILE, MARGIN: MARGIN + TILE]
                assert pixels.sum() == centre.sum()  # the 2-px border of every cell is black
                if cell == target:
                    seen_labels[label].append(centre)
                else:
                    assert centre.tobytes() in allowed and centre.tobytes() not in fashion_tiles, (name, cell)
                    used_digits[name].add(centre.tobytes())
        for label, tiles in seen_labels.items():  # the first images of the label class, in order, copies times
            expected = np.tile(fashion_images[fashion_labels == label][: spec.per_class], (spec.copies, 1, 1))
            np.testing.assert_array_equal(np.stack(tiles), expected)
    assert not used_digits["test"] & (used_digits["train"] | used_digits["validation"])
    assert not used_digits["train"] & used_digits["validation"]


def test_it_is_the_default_and_the_zero_shot_protocol_keeps_its_splits() -> None:
    assert DEFAULT_DATASET_NAME == "fashion-collage"
    assert all(is_embedded_source(name) for name in (None, "fashion-collage", "fashion-mnist-subset"))
    assert not is_embedded_source("fashion-collage/")
    dataset = load_image_dataset()
    assert list(dataset) == ["train", "validation", "test"] and TARGET_CELL_COLUMN in dataset["test"].column_names
    splits = make_splits(dataset, "zero-shot", validation_fraction=0.1)
    assert [sorted(set(getattr(splits, name)["label"])) for name in ("train", "validation", "test")] == [
        [0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert (splits.num_classes, splits.num_validation_classes, splits.num_test_classes) == (4, 3, 3)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (7200, 1800, 900)
    assert splits.test[TARGET_CELL_COLUMN] == dataset["test"][TARGET_CELL_COLUMN]  # the column follows the rows
    unselected = make_splits(dataset, "zero-shot")  # validation_fraction 0 (gsp-hub eval): the same test classes
    assert unselected.validation is None and unselected.test["label"] == splits.test["label"]
    own = make_splits(dataset, "own")
    assert (len(own.train), len(own.validation), len(own.test)) == (7200, 1800, 900)
