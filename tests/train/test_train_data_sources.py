"""Training from a DatasetDict object, a save_to_disk folder and a CSV of image paths (2 steps each), and the
saved config of an in-memory run: readable, and reloadable only with the object passed again."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from datasets import Dataset, DatasetDict, Image
from train_fixtures import tiny_config, write_labelled_images

from gsp_hub.cli import main
from gsp_hub.train import TrainConfig, train

# 4 classes x 8 images; zero-shot: 2 classes (16 images) train in 2 steps of 2 classes x 4 images, 2 classes test
SMALL_RUN = dict(batch_size=8, m_per_class=4, epochs=1, max_steps=2)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, str]]]:
    folder = tmp_path_factory.mktemp("labelled") / "images"
    return folder, write_labelled_images(folder)


def as_dataset_dict(folder: Path, rows: list[tuple[str, str]]) -> DatasetDict:
    train_rows = Dataset.from_dict({"image": [str(folder / name) for name, _ in rows],
                                    "label": [label for _, label in rows]}).cast_column("image", Image())
    return DatasetDict({"train": train_rows})


def test_train_on_a_datasetdict_object_and_its_saved_config(images, tmp_path, capsys):
    dataset = as_dataset_dict(*images)
    output = tmp_path / "run"
    config = tiny_config(output, dataset, **SMALL_RUN)
    summary = train(config)
    assert summary["steps"] == 2 and summary["best"]["step"] == 2
    assert (output / "model" / "model.safetensors").is_file()

    saved = output / "train_config.yaml"
    assert yaml.safe_load(saved.read_text())["dataset"] == "<in-memory DatasetDict: splits train (32 rows)>"
    with pytest.raises(ValueError, match=r"records a data set object passed in Python \(<in-memory DatasetDict: "
                                         r"splits train \(32 rows\)>\).*pass it again.*dataset=<the Dataset"):
        TrainConfig.from_yaml(saved)
    assert TrainConfig.from_yaml(saved, dataset=dataset) == config
    assert main(["train", "--output-dir", str(output), "--resume"]) == 2  # the CLI cannot resume it without --dataset
    assert "records a data set object passed in Python" in capsys.readouterr().err


def test_train_on_a_save_to_disk_folder(images, tmp_path):
    folder = tmp_path / "saved"
    as_dataset_dict(*images).save_to_disk(str(folder))
    summary = train(tiny_config(tmp_path / "run", folder, **SMALL_RUN))
    assert summary["steps"] == 2


def test_train_on_a_csv_of_relative_image_paths(images, tmp_path):
    folder, rows = images
    table = folder.parent / "labels.csv"
    table.write_text("path,label\n" + "".join(f"images/{name},{label}\n" for name, label in rows))
    summary = train(tiny_config(tmp_path / "run", table, **SMALL_RUN))
    assert summary["steps"] == 2
    recorded = yaml.safe_load((tmp_path / "run" / "train_config.yaml").read_text())["dataset"]
    assert recorded == str(table)
