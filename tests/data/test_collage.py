"""TIN-Collage builder on the real Tiny-ImageNet-200 parquet (skipped when the shared data is absent)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from datasets import Dataset, DatasetDict

from gsp_hub.data import (
    COLLAGE_BACKGROUND_CLASSES,
    build_tin_collage,
    collage_location_cells,
    decode_image,
    load_image_dataset,
)

TIN = Path(__file__).resolve().parents[3] / "shared" / "data" / "tiny-imagenet-200"  # <project>/shared/data
pytestmark = pytest.mark.skipif(not TIN.is_dir(), reason="Tiny-ImageNet-200 (shared/data) not available")


@pytest.fixture(scope="module")
def source() -> DatasetDict:
    return load_image_dataset(TIN, verify_images=False, progress=False)


@pytest.fixture(scope="module")
def train(source: DatasetDict) -> Dataset:
    return build_tin_collage(source, split="train", images_per_class=2, seed=3)


@pytest.fixture(scope="module")
def test(source: DatasetDict) -> Dataset:
    return build_tin_collage(source, split="test", images_per_class=2, seed=3)


def _pixels(value: dict) -> np.ndarray:
    """(128, 128, 3) uint8 of an undecoded collage image."""
    return np.asarray(PIL.Image.open(io.BytesIO(value["bytes"])).convert("RGB"))


def _tile(pixels: np.ndarray, cell: int) -> np.ndarray:
    row, col = divmod(cell, 2)
    return pixels[64 * row : 64 * (row + 1), 64 * col : 64 * (col + 1)]


def test_columns_sizes_and_label_ranges(train: Dataset, test: Dataset) -> None:
    assert isinstance(train, Dataset) and set(train.column_names) == {"image", "label", "target_cell", "tile_rows"}
    assert len(train) == 80 * 2 and len(test) == 80 * 2
    assert sorted(set(train["label"])) == list(range(0, 80))
    assert sorted(set(test["label"])) == list(range(80, 160))
    assert set(train["target_cell"]) <= {0, 1, 2, 3} and set(test["target_cell"]) <= {0, 1, 2, 3}
    assert train[0]["image"].size == (128, 128) and train[0]["image"].mode == "RGB"


def test_same_seed_same_bytes_other_seed_differs(source: DatasetDict, test: Dataset) -> None:
    again = build_tin_collage(source, split="test", images_per_class=2, seed=3)
    raw, raw_again = (d.cast_column("image", type(d.features["image"])(decode=False)) for d in (test, again))
    assert [v["bytes"] for v in raw["image"]] == [v["bytes"] for v in raw_again["image"]]
    assert raw["target_cell"] == raw_again["target_cell"] and raw["tile_rows"] == raw_again["tile_rows"]
    assert test._fingerprint == again._fingerprint
    other = build_tin_collage(source, split="test", images_per_class=2, seed=4)
    assert other["tile_rows"] != test["tile_rows"] and other._fingerprint != test._fingerprint


@pytest.mark.parametrize("split, source_split", [("train", "train"), ("test", "valid")])
def test_tiles_are_exact_source_pixels(
    source: DatasetDict, train: Dataset, test: Dataset, split: str, source_split: str
) -> None:
    collage = train if split == "train" else test
    rows = source[source_split]
    raw_source = rows.cast_column("image", type(rows.features["image"])(decode=False))
    raw = collage.cast_column("image", type(collage.features["image"])(decode=False))
    source_labels = np.asarray(rows["label"])
    for index in (0, 1, len(raw) // 2, len(raw) - 1):
        item = raw[index]
        pixels = _pixels(item["image"])
        target = item["tile_rows"][item["target_cell"]]
        assert source_labels[target] == item["label"]  # the target tile is an image of the label class
        for cell, source_row in enumerate(item["tile_rows"]):
            expected = np.asarray(decode_image(raw_source[source_row]["image"]))
            np.testing.assert_array_equal(_tile(pixels, cell), expected)
            if cell != item["target_cell"]:
                assert source_labels[source_row] in COLLAGE_BACKGROUND_CLASSES


def test_backgrounds_and_targets(source: DatasetDict, train: Dataset) -> None:
    labels = np.asarray(source["train"]["label"])
    tile_rows = np.asarray(train["tile_rows"])  # (M, 4)
    cells = np.asarray(train["target_cell"])
    is_target = np.arange(4)[None, :] == cells[:, None]
    assert (labels[tile_rows[is_target]] == np.asarray(train["label"])).all()
    background = labels[tile_rows[~is_target]]
    assert ((background >= 160) & (background < 200)).all()
    assert all(len(set(r)) == 4 for r in tile_rows.tolist())  # no tile repeated within a collage
    assert len(set(tile_rows[is_target].tolist())) == len(train)  # every collage has its own label image


def test_location_cells() -> None:
    np.testing.assert_array_equal(collage_location_cells(4).reshape(4, 4),
                                  [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    assert np.bincount(collage_location_cells(8)).tolist() == [16, 16, 16, 16]
    with pytest.raises(ValueError, match="map_size must be an even int .*got 3"):
        collage_location_cells(3)


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "valid"}, r"split='valid'.*'train'.*'test'"),
    ({"images_per_class": 0}, r"images_per_class must be an int in \[1, 250\].*got 0"),
    ({"images_per_class": 51, "split": "test"}, r"images_per_class must be an int in \[1, 50\].*got 51"),
    ({"images_per_class": 2.5}, r"images_per_class must be an int .*got 2\.5"),
    ({"seed": -1}, r"seed must be an int >= 0 .*got -1"),
])
def test_errors_name_argument_expected_and_given(source: DatasetDict, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_tin_collage(source, **kwargs)


def test_source_errors(source: DatasetDict) -> None:
    with pytest.raises(ValueError, match="'valid' split"):
        build_tin_collage(DatasetDict({"train": source["train"]}), split="test")
    few = DatasetDict({"train": Dataset.from_dict({"image": [None], "label": [0]})})
    with pytest.raises(ValueError, match="200-class ClassLabel"):
        build_tin_collage(few, split="train")
