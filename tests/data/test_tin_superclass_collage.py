"""TIN-SuperCollage builder: on a synthetic Tiny-ImageNet-like DatasetDict, and (slow) on the real parquet; the
three splits as one DatasetDict and the script that saves it as a training folder."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

from gsp_hub.data import (
    TIN_NUISANCE_SUPERCLASSES,
    TIN_SUPERCLASS_NAMES,
    TIN_TARGET_SUPERCLASSES,
    build_tin_superclass_collage,
    build_tin_superclass_collage_dict,
    load_image_dataset,
    make_splits,
)
from gsp_hub.data.tin_superclasses import TIN_NUISANCE_CLASSES, TIN_TEST_FINE_CLASSES, TIN_TRAIN_FINE_CLASSES

REPO = Path(__file__).resolve().parents[2]
TIN = REPO.parent / "shared" / "data" / "tiny-imagenet-200"  # <project>/shared/data
TRAIN_PER_CLASS, VALID_PER_CLASS = 5, 3  # the synthetic source; the real one has 250 and 50
SPLITS = ("train", "validation", "test")
TARGET_CLASSES = {c for group in TIN_TARGET_SUPERCLASSES for c in group.classes}
SUPERCLASS_OF = {c: label for label, group in enumerate(TIN_TARGET_SUPERCLASSES) for c in group.classes}


def _png(pixels: np.ndarray) -> dict:
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _tin_like(seed: int = 0) -> DatasetDict:
    """200 classes of 64x64 noise images: ``train`` class-major (5 per class), ``valid`` shuffled (3 per class)."""
    rng = np.random.default_rng(seed)
    features = Features({"image": Image(), "label": ClassLabel(names=[f"n{index:08d}" for index in range(200)])})
    labels = {"train": np.repeat(np.arange(200), TRAIN_PER_CLASS),
              "valid": rng.permutation(np.repeat(np.arange(200), VALID_PER_CLASS))}
    return DatasetDict({
        split: Dataset.from_dict({
            "image": [_png(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)) for _ in split_labels],
            "label": split_labels.tolist(),
        }, features=features)
        for split, split_labels in labels.items()
    })


@pytest.fixture(scope="module")
def tin() -> DatasetDict:
    return _tin_like()


@pytest.fixture(scope="module")
def collages(tin: DatasetDict) -> dict[str, Dataset]:
    return {split: build_tin_superclass_collage(tin, split=split, seed=1) for split in SPLITS}


def _source_labels(tin: DatasetDict) -> np.ndarray:
    """Labels of the rows ``tile_rows`` index: ``train`` followed by ``valid``."""
    return np.concatenate([np.asarray(tin["train"]["label"]), np.asarray(tin["valid"]["label"])])


def _source_pixels(tin: DatasetDict, row: int) -> PIL.Image.Image:
    split, index = ("train", row) if row < len(tin["train"]) else ("valid", row - len(tin["train"]))
    return tin[split][index]["image"].convert("RGB")


def _tile(image: PIL.Image.Image, cell: int, size: int) -> np.ndarray:
    row, col = divmod(cell, 2)
    return np.asarray(image)[size * row : size * (row + 1), size * col : size * (col + 1)]


def _is_target(collage: Dataset) -> np.ndarray:
    return np.arange(4)[None, :] == np.asarray(collage["target_cell"])[:, None]  # (M, 4)


def test_columns_sizes_and_labels(tin: DatasetDict, collages: dict[str, Dataset]) -> None:
    expected = {"train": (TIN_TRAIN_FINE_CLASSES, TRAIN_PER_CLASS),
                "validation": (TIN_TRAIN_FINE_CLASSES, VALID_PER_CLASS),
                "test": (TIN_TEST_FINE_CLASSES, TRAIN_PER_CLASS + VALID_PER_CLASS)}
    for split, collage in collages.items():
        fine_classes, per_class = expected[split]
        assert collage.column_names == ["image", "label", "target_cell", "fine_label", "tile_rows"]
        assert collage.features["label"].names == list(TIN_SUPERCLASS_NAMES)
        assert collage.features["fine_label"] == tin["train"].features["label"]
        assert collage["fine_label"] == np.repeat(fine_classes, per_class).tolist()  # class-major, by super-class
        assert collage["label"] == [SUPERCLASS_OF[c] for c in collage["fine_label"]]
        assert set(collage["target_cell"]) == {0, 1, 2, 3}
        assert collage[0]["image"].size == (64, 64) and collage[0]["image"].mode == "RGB"
    assert set(collages["train"]["label"]) == set(collages["test"]["label"]) == set(range(16))  # shared label space


def test_label_tiles_come_from_the_splits_fine_classes_and_source_splits(
    tin: DatasetDict, collages: dict[str, Dataset]
) -> None:
    labels, train_rows = _source_labels(tin), len(tin["train"])
    for split, collage in collages.items():
        targets = np.asarray(collage["tile_rows"])[_is_target(collage)]
        assert (labels[targets] == np.asarray(collage["fine_label"])).all()
        assert len(set(targets.tolist())) == len(collage)  # every collage has its own label image
        from_train = targets < train_rows
        assert {"train": from_train.all(), "validation": not from_train.any(),
                "test": from_train.any() and not from_train.all()}[split], split
    assert set(collages["validation"]["fine_label"]) == set(collages["train"]["fine_label"])
    assert not set(collages["test"]["fine_label"]) & set(collages["train"]["fine_label"])  # unseen test classes


def test_nuisance_tiles_only_from_the_nuisance_superclasses(tin: DatasetDict, collages: dict[str, Dataset]) -> None:
    labels = _source_labels(tin)
    nuisance_classes = {c for group in TIN_NUISANCE_SUPERCLASSES for c in group.classes}
    for collage in collages.values():
        tile_rows = np.asarray(collage["tile_rows"])
        nuisance = set(labels[tile_rows[~_is_target(collage)]].tolist())
        assert nuisance <= nuisance_classes and not nuisance & TARGET_CLASSES
        assert len(nuisance) > 10  # drawn from all four groups, not a few classes
        assert all(len(set(row)) == 4 for row in tile_rows.tolist())  # no tile twice in a collage


def test_splits_share_no_source_image_and_nuisance_is_cut_in_fifths(
    tin: DatasetDict, collages: dict[str, Dataset]
) -> None:
    used = {split: set(np.asarray(c["tile_rows"]).reshape(-1).tolist()) for split, c in collages.items()}
    assert not used["train"] & used["validation"] and not used["train"] & used["test"]
    assert not used["validation"] & used["test"]
    train_rows = len(tin["train"])
    for split, fifths in (("train", {0, 1, 2}), ("test", {3, 4})):  # train rows are class-major, 5 per class
        nuisance = np.asarray(collages[split]["tile_rows"])[~_is_target(collages[split])]
        assert (nuisance < train_rows).all() and set((nuisance % TRAIN_PER_CLASS).tolist()) == fifths
    assert (np.asarray(collages["validation"]["tile_rows"]) >= train_rows).all()


@pytest.mark.parametrize("tile_size", [32, 64])
def test_tiles_are_the_area_reduced_source_pixels(tin: DatasetDict, tile_size: int) -> None:
    collage = build_tin_superclass_collage(tin, split="test", tile_size=tile_size, images_per_class=1, seed=2)
    for item in collage.select([0, 7, len(collage) - 1]):
        assert item["image"].size == (2 * tile_size, 2 * tile_size)
        for cell, row in enumerate(item["tile_rows"]):
            source = _source_pixels(tin, row)
            expected = source.reduce(64 // tile_size) if tile_size < 64 else source  # PIL's 2x2 box mean
            np.testing.assert_array_equal(_tile(item["image"], cell, tile_size), np.asarray(expected))


def test_same_seed_same_bytes_other_seed_differs(tin: DatasetDict, collages: dict[str, Dataset]) -> None:
    first = collages["validation"]
    again = build_tin_superclass_collage(tin, split="validation", seed=1)
    raw, raw_again = (d.cast_column("image", Image(decode=False)) for d in (first, again))
    assert [v["bytes"] for v in raw["image"]] == [v["bytes"] for v in raw_again["image"]]
    assert raw["tile_rows"] == raw_again["tile_rows"] and first._fingerprint == again._fingerprint
    other = build_tin_superclass_collage(tin, split="validation", seed=2)
    assert other["tile_rows"] != first["tile_rows"] and other._fingerprint != first._fingerprint
    larger = build_tin_superclass_collage(tin, split="validation", tile_size=64, seed=1)
    assert larger["tile_rows"] == first["tile_rows"] and larger._fingerprint != first._fingerprint


def test_images_per_class_takes_distinct_label_images(tin: DatasetDict) -> None:
    collage = build_tin_superclass_collage(tin, split="train", images_per_class=2, seed=0)
    assert len(collage) == 48 * 2
    assert collage["fine_label"] == np.repeat(TIN_TRAIN_FINE_CLASSES, 2).tolist()
    targets = np.asarray(collage["tile_rows"])[_is_target(collage)]
    assert len(set(targets.tolist())) == 48 * 2


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "valid"}, r"split='valid': expected 'train' .*'validation' .*'test'.*pass e.g. split='train'"),
    ({"tile_size": 48}, r"tile_size must be 32 .* or 64 .*got 48; pass tile_size=32 or tile_size=64"),
    ({"tile_size": 32.0}, r"tile_size must be 32 .*got 32\.0"),
    ({"tile_size": True}, r"tile_size must be 32 .*got True"),
    ({"images_per_class": 0}, r"images_per_class must be an int in \[1, 5\] .*split='train'.*got 0"),
    ({"images_per_class": 4, "split": "validation"}, r"images_per_class must be an int in \[1, 3\].*got 4"),
    ({"images_per_class": 9, "split": "test"}, r"images_per_class must be an int in \[1, 8\].*train \+ valid.*got 9"),
    ({"seed": -1}, r"seed must be an int >= 0 .*got -1"),
])
def test_errors_name_argument_expected_and_given(tin: DatasetDict, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_tin_superclass_collage(tin, **kwargs)


def test_source_errors(tin: DatasetDict) -> None:
    with pytest.raises(ValueError, match="'valid' split"):
        build_tin_superclass_collage(DatasetDict({"train": tin["train"]}), split="train")
    few = DatasetDict({"train": tin["train"], "valid": Dataset.from_dict({"image": [None], "label": [0]})})
    with pytest.raises(ValueError, match="200-class ClassLabel"):
        build_tin_superclass_collage(few, split="validation")


def test_dict_holds_the_three_single_split_builds(tin: DatasetDict) -> None:
    splits = build_tin_superclass_collage_dict(tin, images_per_class={"train": 2, "validation": 1}, seed=1)
    assert list(splits) == list(SPLITS)
    for split, per_class in (("train", 2), ("validation", 1), ("test", None)):  # a split left out takes every image
        alone = build_tin_superclass_collage(tin, split=split, images_per_class=per_class, seed=1)
        assert splits[split]["tile_rows"] == alone["tile_rows"] and splits[split]._fingerprint == alone._fingerprint
    assert [len(splits[split]) for split in SPLITS] == [48 * 2, 48 * 1, 32 * (TRAIN_PER_CLASS + VALID_PER_CLASS)]
    every_split = build_tin_superclass_collage_dict(tin, tile_size=64, images_per_class=1, seed=1)
    assert [len(every_split[split]) for split in SPLITS] == [48, 48, 32]
    assert every_split["test"][0]["image"].size == (128, 128)


@pytest.mark.parametrize("kwargs, match", [
    ({"images_per_class": {"valid": 1}},
     r"images_per_class has unknown split\(s\) \['valid'\]: expected keys among \['train', 'validation', 'test'\]"),
    ({"images_per_class": 4}, r"images_per_class must be an int in \[1, 3\] .*split='validation'.*got 4"),
    ({"images_per_class": {"test": 9}}, r"images_per_class must be an int in \[1, 8\] .*split='test'.*got 9"),
    ({"tile_size": 48}, r"tile_size must be 32 .*got 48"),
    ({"seed": -1}, r"seed must be an int >= 0 .*got -1"),
])
def test_dict_checks_every_split_before_building(tin: DatasetDict, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_tin_superclass_collage_dict(tin, **kwargs)


def _save_script(source: Path, output: Path, *options: str) -> str:
    """Run scripts/build_tin_superclass_collage.py (this checkout's gsp_hub) and return what it printed."""
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    completed = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_tin_superclass_collage.py"), "--source", str(source),
         "--output", str(output), *options], check=True, capture_output=True, text=True, env=environment)
    return completed.stdout


def test_script_saves_a_folder_that_trains_on_its_own_splits(tin: DatasetDict, tmp_path: Path) -> None:
    source, output = tmp_path / "tin", tmp_path / "supercollage"
    tin.save_to_disk(source)
    _save_script(source, output, "--train-per-class", "1", "--validation-per-class", "1", "--test-per-class", "1")
    printed = _save_script(source, output, "--train-per-class", "2", "--test-per-class", "1", "--seed", "3")
    assert "train 96, validation 144, test 32" in printed  # the second run replaced the first folder
    assert sorted(path.name for path in tmp_path.iterdir()) == ["supercollage", "tin"]  # no temp folder left
    expected = build_tin_superclass_collage_dict(
        tin, images_per_class={"train": 2, "test": 1}, seed=3)
    saved = load_image_dataset(output, verify_images=False, progress=False)
    splits = make_splits(saved, "own")
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (96, 144, 32)
    assert splits.num_classes == splits.num_validation_classes == splits.num_test_classes == 16
    for split in SPLITS:
        assert saved[split]["target_cell"] == expected[split]["target_cell"]
        assert saved[split]["label"] == expected[split]["label"]
    np.testing.assert_array_equal(np.asarray(saved["test"][5]["image"]), np.asarray(expected["test"][5]["image"]))


@pytest.mark.slow
@pytest.mark.skipif(not TIN.is_dir(), reason="Tiny-ImageNet-200 (shared/data) not available")
def test_script_on_real_tiny_imagenet(tmp_path: Path) -> None:
    printed = _save_script(TIN, tmp_path / "supercollage", "--train-per-class", "2", "--validation-per-class", "1",
                           "--test-per-class", "1")
    assert "train 96, validation 48, test 32" in printed
    saved = load_image_dataset(tmp_path / "supercollage", verify_images=False, progress=False)
    assert saved["validation"].features["label"].names == list(TIN_SUPERCLASS_NAMES)
    assert saved["train"][0]["image"].size == (64, 64)


@pytest.mark.slow
@pytest.mark.skipif(not TIN.is_dir(), reason="Tiny-ImageNet-200 (shared/data) not available")
def test_real_tiny_imagenet() -> None:
    source = load_image_dataset(TIN, verify_images=False, progress=False)
    labels = _source_labels(source)
    position = np.empty(len(labels), dtype=np.int64)  # each train row's place among the train rows of its class
    train_labels = labels[: len(source["train"])]
    for fine in TIN_NUISANCE_CLASSES:
        rows = np.flatnonzero(train_labels == fine)
        position[rows] = np.arange(len(rows))
    for split, limit in (("train", 250), ("validation", 50), ("test", 300)):
        with pytest.raises(ValueError, match=rf"\[1, {limit}\]"):
            build_tin_superclass_collage(source, split=split, images_per_class=limit + 1)
        collage = build_tin_superclass_collage(source, split=split, images_per_class=2, seed=0)
        tile_rows, is_target = np.asarray(collage["tile_rows"]), _is_target(collage)
        assert (labels[tile_rows[is_target]] == np.asarray(collage["fine_label"])).all()
        assert set(labels[tile_rows[~is_target]].tolist()) <= set(TIN_NUISANCE_CLASSES)
        if split != "validation":
            nuisance = position[tile_rows[~is_target]]
            assert ((nuisance < 150) if split == "train" else (nuisance >= 150)).all()
        item = collage[len(collage) // 2]
        for cell, row in enumerate(item["tile_rows"]):
            expected = np.asarray(_source_pixels(source, row).reduce(2))
            np.testing.assert_array_equal(_tile(item["image"], cell, 32), expected)
