"""Honest splits in a run: validation chooses the exported model, the test split is only reported; the checks that
need only the labels and the output folder fail before any work, with nothing written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from train_fixtures import WITH_VALIDATION, tiny_config

from gsp_hub.data import load_fashion_mnist_subset
from gsp_hub.hub import from_pretrained
from gsp_hub.train import MetricLearningTask, TrainConfig, Trainer, train

# Scripted evaluations after epochs 1, 2, 3: the test metric peaks at epoch 3, the validation metric at epoch 2.
VALIDATION_MAP = [0.20, 0.50, 0.30]
TEST_MAP = [0.60, 0.10, 0.90]


class ScriptedMetricsTask(MetricLearningTask):
    """A real run whose evaluations return the scripted MAP@R of the split they are asked about (the selection
    logic under test sees only these numbers): the k-th evaluation of a split reads its k-th value."""

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self.evaluations = {"validation": 0, "test": 0}

    def evaluate(self, network: torch.nn.Module, loader: torch.utils.data.DataLoader, accelerator: Any
                 ) -> dict[str, float]:
        split = "validation" if loader.dataset is self.validation_data else "test"
        value = (VALIDATION_MAP if split == "validation" else TEST_MAP)[self.evaluations[split]]
        self.evaluations[split] += 1
        return {"recall@1": value, "map@r": value}


def test_the_validation_best_epoch_is_exported_not_the_test_best(tmp_path, tiny_dataset):
    config = tiny_config(tmp_path / "run", tiny_dataset, epochs=3, checkpoints_total_limit=3, augment=False,
                         **WITH_VALIDATION)
    summary = Trainer(ScriptedMetricsTask(config)).run()
    assert [row["map@r"] for row in summary["history"]] == TEST_MAP
    assert [row["validation/map@r"] for row in summary["history"]] == VALIDATION_MAP
    assert summary["best"]["epoch"] == 2.0 and summary["best"]["map@r"] == 0.10  # the test value is reported as is
    assert summary["selected_by"].startswith("the best validation map@r (classes 3-4")
    assert summary["splits"] == {"train": "classes 0-2 (T-shirt/top, Trouser, Pullover)",
                                 "validation": "classes 3-4 (Dress, Coat)",
                                 "test": "classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot)"}
    # the exported weights are the model after epoch 2: those of the checkpoint saved at the end of epoch 2
    run = Path(config.output_dir)
    saved = safetensors.torch.load_file(str(run / "checkpoints" / "checkpoint_1" / "model.safetensors"))
    exported = from_pretrained(str(run / "model")).state_dict()
    for name, value in exported.items():
        torch.testing.assert_close(value, saved[f"model.{name}"], rtol=0, atol=0, msg=name)
    written = json.loads((run / "metrics.json").read_text())
    assert written["selected_by"] == summary["selected_by"] and written["best"]["epoch"] == 2.0
    card = (run / "model" / "README.md").read_text()
    assert f"Model selection: this checkpoint was chosen by {summary['selected_by']}" in " ".join(card.split())


def test_without_validation_the_last_evaluation_is_exported(tmp_path, tiny_dataset):
    summary = train(tiny_config(tmp_path / "run", tiny_dataset, epochs=1, max_steps=2))
    assert summary["best"] == summary["last"] and summary["best"]["step"] == 2
    assert summary["selected_by"].startswith("the last evaluation") and summary["splits"]["validation"] == "none"
    assert not any(key.startswith("validation/") for key in summary["best"])


def test_a_real_run_reports_validation_and_test_metrics(tmp_path, tiny_dataset):
    summary = train(tiny_config(tmp_path / "run", tiny_dataset, epochs=2, **WITH_VALIDATION))
    trained = [row for row in summary["history"] if row["step"] > 0]  # (tiny_config does not evaluate at start)
    best = max(trained, key=lambda row: row["validation/map@r"])
    assert summary["best"] == best
    assert all(0 < row["map@r"] <= 1 and 0 < row["validation/map@r"] <= 1 for row in summary["history"])


def test_too_few_classes_per_batch_fails_before_any_work(tmp_path, tiny_dataset):
    output = tmp_path / "run"
    with pytest.raises(ValueError, match=r"batch_size=16 / m_per_class=4 = 4 classes per batch, but the train split "
                                         r"has classes 0-2 \(T-shirt/top, Trouser, Pullover\); lower --batch-size to 12"):
        train(tiny_config(output, tiny_dataset, batch_size=16, validation_fraction=0.1))
    assert not output.exists()


def test_a_singleton_class_in_the_test_split_is_named(tmp_path):
    subset = load_fashion_mnist_subset()["train"]
    labels = np.asarray(subset["label"])
    rows = np.concatenate([np.flatnonzero(labels == c)[: 1 if c == 7 else 12] for c in range(10)])
    path = tmp_path / "data.parquet"
    subset.select(rows).to_parquet(str(path))
    output = tmp_path / "run"
    with pytest.raises(ValueError, match=r"test split has 1 class\(es\) with a single image.*class 7 \(Sneaker\)"):
        train(tiny_config(output, path, **WITH_VALIDATION))
    assert not output.exists()


def test_an_output_folder_with_foreign_files_or_under_a_file_is_refused(tmp_path, tiny_dataset):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"holds files that are not part of a gsp_hub run \(\['notes.txt'\]\)"):
        train(tiny_config(foreign, tiny_dataset))
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        train(tiny_config(a_file / "run", tiny_dataset))
