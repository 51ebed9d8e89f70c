"""Cards and config.json never name a local absolute path: a local dataset is its folder name, "(local data)"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from gsp_hub.cli import main
from gsp_hub.data import load_fashion_mnist_subset
from gsp_hub.hub import save_pretrained
from gsp_hub.hub.card import DatasetRef
from gsp_hub.hub.local_paths import find_local_paths, local_paths_in_folder, public_dataset, without_local_paths


@pytest.mark.parametrize(
    ("text", "paths"),
    [
        ("/home/me/data/cub", ["/home/me/data/cub"]),
        ("--cache-dir /work/cache/zoo --out-dir zoo", ["/work/cache/zoo"]),
        ("cub200:/data/CUB_200_2011", ["/data/CUB_200_2011"]),
        ("~/runs/a and C:\\data\\cub", ["~/runs/a", "C:\\data\\cub"]),
        ("https://huggingface.co/org/name, hf-hub:org/name, org/name, 1/N, a / b, </details>", []),
    ],
)
def test_absolute_paths_are_found_and_urls_hub_ids_and_prose_are_not(text: str, paths: list[str]) -> None:
    assert find_local_paths(text) == paths


def test_paths_are_reduced_to_their_last_part_in_nested_metadata() -> None:
    recipe = {"dataset": "/home/me/data/cub", "output_dir": "/tmp/runs/a/", "lr": 0.1,
              "flags": ["--resume", "~/runs/b"], "note": "see https://example.org/x"}
    assert without_local_paths(recipe) == {"dataset": ".../cub", "output_dir": ".../a", "lr": 0.1,
                                           "flags": ["--resume", ".../b"], "note": "see https://example.org/x"}


def test_a_local_dataset_becomes_its_folder_name_marked_local_data(tmp_path: Path, monkeypatch) -> None:
    absolute = public_dataset(DatasetRef(id="/home/me/data/cub", name="/home/me/data/cub (test classes 100-199)"))
    assert (absolute.id, absolute.name) == ("cub", "cub (local data) (test classes 100-199)")
    prefixed = public_dataset(DatasetRef(id="cub200:/data/CUB_200_2011"))
    assert (prefixed.id, prefixed.name) == ("cub200:CUB_200_2011", "cub200:CUB_200_2011 (local data)")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shots").mkdir()
    relative = public_dataset(DatasetRef(id="shots", split="valid"))
    assert (relative.id, relative.split, relative.name) == ("shots", "valid", "shots (local data)")
    hub_id = DatasetRef(id="Donghyun99/CUB-200-2011", name="CUB-200-2011 (test classes 101-200)")
    assert public_dataset(hub_id) == hub_id


def test_save_pretrained_writes_no_local_path(trained_model, tmp_path: Path) -> None:
    folder = save_pretrained(
        trained_model, tmp_path / "export", metrics={"recall@1": 0.5},
        dataset={"id": str(tmp_path / "my-images"), "name": f"{tmp_path / 'my-images'} (test classes 5-9)"},
        card_extra={"recipe": {"dataset": str(tmp_path / "my-images"), "output_dir": str(tmp_path / "runs" / "a")},
                    "description": f"Trained with `--cache-dir {tmp_path / 'cache'}`."},
    )
    assert local_paths_in_folder(folder) == {}
    card = ModelCard.load(folder / "README.md")
    assert card.data.datasets == ["my-images"] and "| my-images (local data) (test classes 5-9) |" in card.text
    assert 'gsp_hub.from_pretrained("export")' in card.text  # a local card names its folder, not its location
    assert "--cache-dir .../cache" in card.text and "output_dir: '.../a'" in card.text


def test_a_training_run_on_a_local_file_has_a_card_without_local_paths(tmp_path: Path) -> None:
    train = load_fashion_mnist_subset()["train"]
    data = tmp_path / "data" / "fmnist.parquet"
    data.parent.mkdir()
    train.select(range(0, len(train), 20)).to_parquet(str(data))
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(data), "--output-dir", str(run), "--max-steps", "2", "--backbone",
                 "test_resnet", "--embed-dim", "16", "--pool-kwargs", "num_prototypes=4", "memory_size=16",
                 "--batch-size", "12", "--m-per-class", "4", "--eval-batch-size", "64", "--no-eval-at-start"]) == 0
    export = run / "model"
    assert local_paths_in_folder(export) == {}
    config = json.loads((export / "config.json").read_text())
    assert config["gsp_hub"]["dataset"]["id"] == "fmnist.parquet"
    assert "(local data)" in config["gsp_hub"]["dataset"]["name"]
    assert ModelCard.load(export / "README.md").data.datasets == ["fmnist.parquet"]
