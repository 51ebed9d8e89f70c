"""load_image_dataset from data set objects, save_to_disk folders and CSV / JSON-lines tables of image paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Image, IterableDatasetDict

from gsp_hub.data import load_image_dataset

# (file name, label, grey level): the grey level tells which file a loaded row came from
ROWS = [("owl_0.png", "owl", 10), ("ant_0.png", "ant", 20), ("owl_1.png", "owl", 30), ("bee_0.png", "bee", 40),
        ("ant_1.png", "ant", 50)]
NAMES = ["ant", "bee", "owl"]  # sorted: ids 0, 1, 2
IDS = [2, 0, 2, 1, 0]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """tmp_path/images/<file> for every row of ROWS: 6x5 PNGs of one grey level."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name, _, grey in ROWS:
        PIL.Image.new("L", (6, 5), grey).save(folder / name)
    return folder


def as_dataset(images: Path) -> Dataset:
    return Dataset.from_dict({"image": [str(images / name) for name, _, _ in ROWS],
                              "label": [label for _, label, _ in ROWS]}).cast_column("image", Image())


def grey_levels(split: Dataset) -> list[int]:
    return [image.convert("L").getpixel((0, 0)) for image in split["image"]]


def test_dataset_object_is_one_train_split_with_string_labels_named(images):
    dataset = load_image_dataset(as_dataset(images), progress=False)
    train = dataset["train"]
    assert list(dataset) == ["train"] and train.column_names == ["image", "label"]
    assert train.features["label"] == ClassLabel(names=NAMES)
    assert np.asarray(train["label"]).tolist() == IDS
    assert grey_levels(train) == [grey for _, _, grey in ROWS]


def test_datasetdict_object_keeps_its_splits_and_other_column_names(images):
    rows = as_dataset(images).rename_columns({"image": "photo", "label": "category"})
    source = DatasetDict({"train": rows.select([0, 1, 2]), "test": rows.select([3, 4])})
    dataset = load_image_dataset(source, progress=False)
    assert {name: len(split) for name, split in dataset.items()} == {"train": 3, "test": 2}
    assert dataset["test"].features["label"].names == NAMES
    assert np.asarray(dataset["test"]["label"]).tolist() == IDS[3:]
    assert source["train"].column_names == ["photo", "category"]  # the caller's object is not changed


def test_iterable_dataset_is_read_whole_with_a_warning(images):
    stream = IterableDatasetDict({"train": as_dataset(images).to_iterable_dataset()})
    with pytest.warns(UserWarning, match=r"IterableDatasetDict: .* every row is read now .*\.take\(n\)"):
        dataset = load_image_dataset(stream, progress=False)
    assert dataset["train"].features["label"].names == NAMES
    assert np.asarray(dataset["train"]["label"]).tolist() == IDS
    assert grey_levels(dataset["train"]) == [grey for _, _, grey in ROWS]


def test_unsupported_object_names_the_accepted_kinds():
    with pytest.raises(TypeError, match=r"got a list; expected a path or Hub id \(str\), a datasets\.Dataset"):
        load_image_dataset([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("saved", ["Dataset", "DatasetDict"])
def test_save_to_disk_folder(images, tmp_path, saved):
    rows = as_dataset(images)
    folder = tmp_path / "saved"
    (rows if saved == "Dataset" else DatasetDict({"train": rows.select([0, 1, 2]), "test": rows.select([3, 4])})
     ).save_to_disk(str(folder))
    dataset = load_image_dataset(folder, progress=False)
    expected = {"train": 5} if saved == "Dataset" else {"train": 3, "test": 2}
    assert {name: len(split) for name, split in dataset.items()} == expected
    assert np.concatenate([np.asarray(split["label"]) for split in dataset.values()]).tolist() == IDS
    assert dataset["train"].features["label"].names == NAMES


def test_csv_of_relative_and_absolute_paths_with_string_labels(images, tmp_path, monkeypatch):
    lines = [f"images/{name},{label}" for name, label, _ in ROWS]
    lines[3] = f"{images / ROWS[3][0]},{ROWS[3][1]}"  # an absolute path is used as it is
    table = tmp_path / "labels.csv"
    table.write_text("path,label\n" + "\n".join(lines) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths are read from the CSV's folder, not the working directory
    dataset = load_image_dataset(table, progress=False)
    train = dataset["train"]
    assert list(dataset) == ["train"] and train.features["label"].names == NAMES
    assert np.asarray(train["label"]).tolist() == IDS
    assert grey_levels(train) == [grey for _, _, grey in ROWS]


def test_jsonl_with_a_split_column(images, tmp_path):
    splits = ["train", "train", "test", "train", "test"]
    table = tmp_path / "labels.jsonl"
    table.write_text("".join(json.dumps({"filename": f"images/{name}", "class": label, "split": split}) + "\n"
                             for (name, label, _), split in zip(ROWS, splits, strict=True)))
    dataset = load_image_dataset(table, progress=False)
    assert {name: len(split) for name, split in dataset.items()} == {"train": 3, "test": 2}
    assert np.asarray(dataset["train"]["label"]).tolist() == [2, 0, 1]
    assert grey_levels(dataset["test"]) == [30, 50]
    assert dataset["test"].features["label"].names == NAMES


def test_json_list_of_records_with_integer_labels(images, tmp_path):
    table = tmp_path / "labels.json"
    table.write_text(json.dumps([{"image_path": f"images/{name}", "target": 7 * (i % 2)}
                                 for i, (name, _, _) in enumerate(ROWS)]))
    train = load_image_dataset(table, progress=False)["train"]
    assert train.features["label"].names == ["0", "7"]
    assert np.asarray(train["label"]).tolist() == [0, 1, 0, 1, 0]


def test_csv_with_a_missing_file_names_the_file_the_row_and_the_csv(images, tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("file,label\nimages/owl_0.png,owl\nimages/gone.png,ant\nimages/bee_0.png,bee\n")
    with pytest.raises(FileNotFoundError, match=r"labels\.csv: 1 of 3 image files of the column 'file' do not "
                                                 r"exist: row 1 \(.*images/gone\.png\).*read from the table's folder"):
        load_image_dataset(table)


def test_table_without_a_path_column_lists_the_names_it_tried(tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("picture_name,label\na.png,x\nb.png,y\n")
    with pytest.raises(ValueError, match=r"no image column found .*image_path / path / file / filename.*"
                                         r"--image-column"):
        load_image_dataset(table)

